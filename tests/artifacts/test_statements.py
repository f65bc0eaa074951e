"""Signed statements: attached, verified against ledger keys, refused when revoked or forged."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from immutrail.artifacts.attestations import DSSE_MEDIA_TYPE
from immutrail.artifacts.builder import build
from immutrail.artifacts.provenance import IN_TOTO_PAYLOAD_TYPE
from immutrail.artifacts.statements import (
    PREDICATE_ANNOTATION,
    attest,
    ledger_keys,
    read_attestations,
)
from immutrail.artifacts.store import Store
from immutrail.crypto.canonical import canonical_json
from immutrail.crypto.keys import generate_ed25519, key_id
from immutrail.ledger.event import Event
from immutrail.ledger.home import open_ledger

KIND = "https://example.test/predicate/v1"


def test_attest_verify_revoke_and_forgery(repo: Path, home: Path) -> None:
    digest = build(repo / "image.yaml", home, tag="app").digest
    store = Store.for_home(home)
    ledger = open_ledger(home)
    try:
        attest(store, ledger, home, "ci", digest, KIND, {"ok": True})
        keys = ledger_keys(ledger)
        good, bad = read_attestations(store, digest, keys, KIND)
        assert [a.predicate for a in good] == [{"ok": True}] and bad == []
        assert good[0].signer.purpose == "builder"
        assert good[0].statement["subject"][0]["name"] == "app"

        # A statement signed by a key the ledger never announced does not count.
        stranger = generate_ed25519()
        attest(store, ledger, home, "mallory", digest, KIND, {"ok": False}, key=stranger)
        good, bad = read_attestations(store, digest, ledger_keys(ledger), KIND)
        assert len(good) == 1 and [b.reason for b in bad] == ["signed by no ledger key"]

        # A forged envelope (payload changed after signing) is rejected with the reason.
        envelope = json.loads(
            store.read_blob(store.image_blobs(good[0].manifest)[0]["layers"][0]["digest"])
        )
        statement = json.loads(base64.b64decode(envelope["payload"]))
        statement["predicate"] = {"ok": "forged"}
        envelope["payload"] = base64.b64encode(canonical_json(statement)).decode()
        store.attach(
            digest,
            IN_TOTO_PAYLOAD_TYPE,
            canonical_json(envelope),
            DSSE_MEDIA_TYPE,
            {PREDICATE_ANNOTATION: KIND},
        )
        good, bad = read_attestations(store, digest, ledger_keys(ledger), KIND)
        assert len(good) == 1
        assert any("does not verify" in b.reason or "valid signature" in b.reason for b in bad)

        # After revocation the builder key's statements stop counting.
        keyid = good[0].signer.keyid
        ledger.append(Event.create("key.revoked", "admin", f"key:{keyid}", {"reason": "test"}))
        good, bad = read_attestations(store, digest, ledger_keys(ledger), KIND)
        assert good == [] and any(f"revoked key {keyid}" in b.reason for b in bad)
        assert key_id(stranger.public_key()) not in ledger_keys(ledger)
    finally:
        ledger.close()
