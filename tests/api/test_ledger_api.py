"""The ledger over HTTP: appends record the authenticated actor and how it authenticated;
entries, proofs and checkpoints agree with the ledger and verify with the RFC 6962 math."""

from __future__ import annotations

import base64
import uuid

from fastapi.testclient import TestClient

from immutrail.crypto.checkpoint import open_checkpoint
from immutrail.crypto.note import Ed25519NoteVerifier
from immutrail.ledger.home import open_ledger
from immutrail.ledger.merkle import leaf_hash, verify_consistency, verify_inclusion

from .conftest import World, auth


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def test_append_records_the_authenticated_actor(client: TestClient, world: World) -> None:
    token = world.tokens["admin"]
    whoami = client.get("/api/v1/whoami", headers=auth(token)).json()
    body = {"type": "release.noted", "subject": "hello:1", "payload": {"ticket": "CHG-7"}}
    response = client.post("/api/v1/ledger/entries", headers=auth(token), json=body)
    assert response.status_code == 201, response.text
    appended = response.json()
    assert response.headers["location"] == f"/api/v1/ledger/entries/{appended['index']}"
    event = appended["event"]
    assert event["actor"] == "p-admin" == whoami["principal"]
    assert event["payload"] == {
        "ticket": "CHG-7",
        "auth": {"method": "token", "token_id": whoami["token_id"]},
    }
    with open_ledger(world.home) as ledger:
        row = ledger.entry(appended["index"])
    assert row.id == appended["id"] and row.actor == "p-admin"
    assert leaf_hash(row.data) == _b64(appended["leaf_hash"])
    read = client.get(f"/api/v1/ledger/entries/{appended['id']}", headers=auth(token)).json()
    assert read == {k: appended[k] for k in ("index", "leaf_hash", "event")}


def test_the_body_cannot_name_the_actor_or_forge_auth(client: TestClient, world: World) -> None:
    token = world.tokens["admin"]
    for body, status in [
        ({"type": "x.y", "subject": "s", "actor": "root"}, 422),
        ({"type": "x.y", "subject": "s", "time": "2020-01-01T00:00:00Z"}, 422),
        ({"type": "x.y", "subject": "s", "payload": {"auth": {"method": "key"}}}, 400),
    ]:
        response = client.post("/api/v1/ledger/entries", headers=auth(token), json=body)
        assert response.status_code == status, (body, response.text)


def test_strict_json_and_limits(client: TestClient, world: World) -> None:
    token = world.tokens["admin"]
    headers = {**auth(token), "content-type": "application/json"}
    size = client.get("/api/v1/ledger/checkpoint", headers=auth(token)).json()["size"]
    duplicate = b'{"type": "x.y", "subject": "s", "subject": "t"}'
    assert (
        client.post("/api/v1/ledger/entries", headers=headers, content=duplicate).status_code == 400
    )
    nan = b'{"type": "x.y", "subject": "s", "payload": {"n": NaN}}'
    assert client.post("/api/v1/ledger/entries", headers=headers, content=nan).status_code == 400
    big = {"type": "x.y", "subject": "s", "payload": {"blob": "a" * 70_000}}
    too_big = client.post("/api/v1/ledger/entries", headers=auth(token), json=big)
    assert too_big.status_code == 400 and "65535-byte limit" in too_big.json()["detail"]
    huge = b'{"type": "x.y", "subject": "s", "payload": {"b": "' + b"a" * 300_000 + b'"}}'
    assert client.post("/api/v1/ledger/entries", headers=headers, content=huge).status_code == 413
    # None of these wrote anything.
    with open_ledger(world.home) as ledger:
        assert ledger.head().size == size


def test_a_retried_append_is_a_conflict(client: TestClient, world: World) -> None:
    token = world.tokens["admin"]
    body = {"type": "x.retried", "subject": "s", "id": str(uuid.uuid4())}
    assert client.post("/api/v1/ledger/entries", headers=auth(token), json=body).status_code == 201
    again = client.post("/api/v1/ledger/entries", headers=auth(token), json=body)
    assert again.status_code == 409
    assert again.json()["type"] == "urn:immutrail:problem:conflict"


def test_pages_and_filters(client: TestClient, world: World) -> None:
    token = world.tokens["auditor"]
    seen: list[int] = []
    start: int | None = 0
    for _ in range(100):
        page = client.get(
            f"/api/v1/ledger/entries?start={start}&limit=7", headers=auth(token)
        ).json()
        seen += [e["index"] for e in page["entries"]]
        start = page["next_start"]
        if start is None:
            break
    assert seen == list(range(page["size"]))
    built = client.get("/api/v1/ledger/entries?type=artifact.built", headers=auth(token)).json()[
        "entries"
    ]
    assert [e["event"]["subject"] for e in built] == [world.digest]
    by_actor = client.get("/api/v1/ledger/entries?actor=p-deployer", headers=auth(token)).json()
    assert by_actor["entries"] and {e["event"]["actor"] for e in by_actor["entries"]} == {
        "p-deployer"
    }
    bad_time = client.get("/api/v1/ledger/entries?since=2026-13-01T00:00:00Z", headers=auth(token))
    assert bad_time.status_code == 400


def test_proofs_verify_against_the_signed_checkpoint(client: TestClient, world: World) -> None:
    token = world.tokens["auditor"]
    checkpoint = client.get("/api/v1/ledger/checkpoint", headers=auth(token)).json()
    verifier = Ed25519NoteVerifier.from_vkey(checkpoint["vkey"])
    opened = open_checkpoint(checkpoint["note"], verifier)
    size, root = checkpoint["size"], _b64(checkpoint["root"])
    assert (opened.size, opened.root_hash) == (size, root)
    for index in (0, 3, size - 1):
        proof = client.get(
            f"/api/v1/ledger/entries/{index}/inclusion?size={size}", headers=auth(token)
        ).json()
        entry = client.get(f"/api/v1/ledger/entries/{index}", headers=auth(token)).json()
        assert proof["leaf_hash"] == entry["leaf_hash"]
        verify_inclusion(
            index, size, _b64(proof["leaf_hash"]), [_b64(h) for h in proof["proof"]], root
        )
    consistency = client.get(f"/api/v1/ledger/consistency?old=5&new={size}", headers=auth(token))
    data = consistency.json()
    verify_consistency(5, size, _b64(data["old_root"]), root, [_b64(h) for h in data["proof"]])
    beyond = client.get(f"/api/v1/ledger/consistency?old=1&new={size + 10**6}", headers=auth(token))
    assert beyond.status_code == 400
