"""Evidence bundles: built from the real ledger, verified offline, refused when touched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from immutrail.artifacts.store import Store
from immutrail.audit.bundle import build_bundle
from immutrail.audit.queries import at_query, changes_query, trace_query
from immutrail.audit.verify import BundleReport, verify_bundle
from immutrail.audit.wire import path_at
from immutrail.crypto.canonical import canonical_json, parse_canonical
from immutrail.crypto.checkpoint import Checkpoint, sign_checkpoint
from immutrail.crypto.keys import generate_ed25519, load_private_key
from immutrail.crypto.note import NoteSigner
from immutrail.ledger.home import open_ledger

from .conftest import World, audit, cli

SRC = Path(__file__).parent.parent.parent / "src"


@pytest.fixture(scope="module")
def bundles(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One bundle of each kind, written by `audit evidence`."""
    folder = tmp_path_factory.mktemp("bundles")
    made = {
        "at": ["--at", world.between, "--env", "prod"],
        "trace": [world.v1],
        "instance": [world.drifted],
        "changes": ["--env", "prod", "--from", world.before_any, "--to", world.end],
    }
    paths = {}
    for name, args in made.items():
        path = folder / f"{name}.json"
        summary = audit(world.home, "evidence", *args, "-o", str(path))
        assert summary["bytes"] == path.stat().st_size and summary["events"] > 0
        paths[name] = path
    return paths


def doc(path: Path) -> dict[str, Any]:
    value = parse_canonical(path.read_bytes())
    assert isinstance(value, dict)
    return value


def failed(data: bytes, vkey: str) -> BundleReport:
    report = verify_bundle(data, vkey=vkey)
    assert not report.ok, "a changed bundle verified"
    return report


def places(report: BundleReport) -> str:
    return " | ".join(f"{p.where}: {p.message}" for p in report.problems)


@pytest.mark.parametrize("kind", ["at", "trace", "instance", "changes"])
def test_each_kind_verifies_with_the_ledger_key(
    world: World, bundles: dict[str, Path], kind: str
) -> None:
    report = audit(None, "verify", str(bundles[kind]), "--vkey", world.vkey)
    assert report["ok"] is True and report["problems"] == []
    assert report["trust"] == "vkey" and report["events"] > 0
    assert report["answer"]["kind"] == ("trace" if kind == "instance" else kind)
    assert report["attestations"] >= (0 if kind == "changes" else 6)


def test_the_at_bundle_holds_what_an_auditor_needs(world: World, bundles: dict[str, Path]) -> None:
    bundle = doc(bundles["at"])
    answer = audit(world.home, "at", world.between, "--env", "prod")
    assert answer.pop("schema_version") == 1
    size = int(bundle["checkpoint"].split("\n")[1])
    assert answer.pop("as_of_size") >= size == bundle["answer"].pop("as_of_size")
    assert bundle["answer"] == answer  # the bundle states what `audit at` answers
    assert bundle["query"] == {"kind": "at", "environment": "prod", "at": world.between}
    assert bundle["ledger"]["vkey"] == world.vkey
    kinds = {e["event"]["type"] for e in bundle["events"]}
    assert {
        "instance.created",
        "deployment.started",
        "promotion.decided",
        "image.approved",
        "key.created",
        "artifact.attached",
        "drift.detected",
    } <= kinds
    # every key that signed something is there, with the event that announced it
    principals = {
        e["event"]["payload"].get("principal") or "builder"
        for e in bundle["events"]
        if e["event"]["type"] == "key.created"
    }
    assert principals == {"builder", "rel", "alice", "bob"}
    assert len(bundle["keys"]) == 4


def test_verifies_offline_in_a_subprocess_without_home_or_database(
    world: World, bundles: dict[str, Path], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMMUTRAIL_")}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(SRC))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from immutrail.cli.audit import audit_app; audit_app()",
            "verify",
            str(bundles["at"]),
            "--vkey",
            world.vkey,
            "--format",
            "json",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["ok"] is True
    assert list(tmp_path.iterdir()) == []  # nothing created: no home, no database
    # the verifier itself loads no storage or network code
    probe = (
        "import sys, immutrail.audit.verify as v\n"
        f"r = v.verify_bundle(open({str(bundles['at'])!r}, 'rb').read(), vkey={world.vkey!r})\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('sqlite3', 'sqlalchemy', 'psycopg', 'httpx', 'docker', 'urllib3')"
        " or m.startswith(('immutrail.ledger.storage', 'immutrail.ledger.ledger',"
        " 'immutrail.artifacts', 'immutrail.deploy'))]\n"
        "print(r.ok, bad)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout.strip() == "True []", done.stdout + done.stderr


def test_without_vkey_the_report_says_trust_on_first_use(bundles: dict[str, Path]) -> None:
    assert audit(None, "verify", str(bundles["at"]))["trust"] == "trust-on-first-use"
    assert "trust on first use" in audit(None, "verify", str(bundles["at"]), fmt="text")


def test_a_wrong_vkey_is_refused(world: World, bundles: dict[str, Path]) -> None:
    origin = world.vkey.split("+", 1)[0]
    stranger = NoteSigner(origin, generate_ed25519()).vkey
    report = audit(None, "verify", str(bundles["at"]), "--vkey", stranger, code=1)
    where = {p["where"] for p in report["problems"]}
    assert {"ledger.vkey", "checkpoint", "latest.checkpoint"} <= where
    text = audit(None, "verify", str(bundles["at"]), "--vkey", stranger, code=1, fmt="text")
    assert "FAILED" in text and "not from that ledger" in text
    assert "not a verifier key" in audit(
        None, "verify", str(bundles["at"]), "--vkey", "nonsense", code=2, fmt="text"
    ) or "malformed verifier key" in audit(
        None, "verify", str(bundles["at"]), "--vkey", "nonsense", code=2, fmt="text"
    )


def section_of(data: bytes, position: int) -> str:
    """The top-level field (and item) a byte of the original bundle belongs to."""
    text = data.decode("utf-8")
    path = path_at(text, len(data[:position].decode("utf-8", "ignore")))
    parts = path.removeprefix("bundle.").split(" ")[0].replace("[", ".[").split(".")
    top = parts[0]
    if top in ("events", "attestations", "keys") and len(parts) > 1 and parts[1].startswith("["):
        return top + parts[1]
    return top


@pytest.mark.parametrize("kind", ["at", "trace"])
def test_every_97th_byte_changed_fails_and_says_where(
    world: World, bundles: dict[str, Path], kind: str
) -> None:
    data = bundles[kind].read_bytes()
    step = 97 if kind == "at" else 389
    for number, position in enumerate(range(0, len(data), step)):
        flip = 0x20 if number % 2 else 0x01  # a low bit, or the ASCII case bit
        changed = data[:position] + bytes([data[position] ^ flip]) + data[position + 1 :]
        report = failed(changed, world.vkey)
        section = section_of(data, position)
        assert any(
            section in p.where or (section == "answer" and p.where.startswith("query"))
            for p in report.problems
        ), (position, flip, section, places(report))


def item_ranges(data: bytes) -> Iterator[tuple[str, int, int]]:
    """(path, start, end) of every top-level field's value and of every list item."""
    value = parse_canonical(data)
    assert isinstance(value, dict)
    position = 1
    for key in sorted(value):
        position += len(canonical_json(key)) + 1
        size = len(canonical_json(value[key]))
        yield key, position, position + size
        if isinstance(value[key], list):
            inner = position + 1
            for number, item in enumerate(value[key]):
                length = len(canonical_json(item))
                yield f"{key}[{number}]", inner, inner + length
                inner += length + 1
        position += size + 1


def test_a_change_in_each_section_and_item_fails_naming_it(
    world: World, bundles: dict[str, Path]
) -> None:
    data = bundles["at"].read_bytes()
    seen = set()
    for path, start, end in item_ranges(data):
        for position in {start + 1, (start + end) // 2, end - 2}:
            changed = data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]
            report = failed(changed, world.vkey)
            top = path.split("[")[0]
            assert any(
                path in p.where or top in p.where or p.where.startswith("query")
                for p in report.problems
            ), (path, position, places(report))
            seen.add(top)
    assert seen == {
        "answer",
        "attestations",
        "checkpoint",
        "events",
        "format",
        "keys",
        "latest",
        "ledger",
        "query",
    }


def rewritten(bundle: dict[str, Any]) -> bytes:
    return canonical_json(bundle)


def test_a_dropped_event_is_refused(world: World, bundles: dict[str, Path]) -> None:
    original = doc(bundles["at"])
    for number, entry in enumerate(original["events"]):
        bundle = doc(bundles["at"])
        del bundle["events"][number]
        report = failed(rewritten(bundle), world.vkey)
        index = entry["index"]
        assert any(
            f"index {index}" in p.message
            or f"ledger index {index}" in p.where
            or f"index {index}" in p.where
            for p in report.problems
        ), (index, places(report))


def test_a_dropped_attestation_or_key_is_refused(world: World, bundles: dict[str, Path]) -> None:
    bundle = doc(bundles["at"])
    dropped = bundle["attestations"].pop(0)
    report = failed(rewritten(bundle), world.vkey)
    assert f"attached at ledger index {dropped['index']}" in places(report)
    bundle = doc(bundles["at"])
    key = bundle["keys"].pop(0)
    report = failed(rewritten(bundle), world.vkey)
    assert key["keyid"] in places(report)


def test_a_consistent_lie_in_the_answer_is_refused(world: World, bundles: dict[str, Path]) -> None:
    bundle = doc(bundles["at"])
    bundle["answer"]["instances"][0]["image"]["approvals"][0]["approver"] = "mallory"
    report = failed(rewritten(bundle), world.vkey)
    assert report.problems[0].where == "answer.instances[0].image.approvals[0].approver"
    assert "mallory" in report.problems[0].message
    bundle = doc(bundles["at"])
    bundle["answer"]["instances"].pop()
    assert "answer.instances" in places(failed(rewritten(bundle), world.vkey))


def test_padding_with_an_uncited_proven_event_is_refused(
    world: World, bundles: dict[str, Path]
) -> None:
    bundle = doc(bundles["at"])
    listed = {e["index"] for e in bundle["events"]}
    size = int(bundle["checkpoint"].split("\n")[1])
    extra = next(i for i in range(size) if i not in listed)
    with open_ledger(world.home) as ledger:
        row = ledger.entry(extra)
        proof = ledger.inclusion_proof(extra, size)
    entry = {
        "index": extra,
        "event": json.loads(row.data),
        "inclusion": [__import__("base64").b64encode(h).decode() for h in proof.proof],
    }
    bundle["events"] = sorted([*bundle["events"], entry], key=lambda e: e["index"])
    report = failed(rewritten(bundle), world.vkey)
    assert f"ledger index {extra}" in places(report) and "neither cited" in places(report)


def test_not_canonical_and_not_json_say_the_byte(world: World, bundles: dict[str, Path]) -> None:
    data = bundles["at"].read_bytes()
    report = failed(data + b"\n", world.vkey)
    assert report.problems[0].where.startswith("byte ")
    report = failed(b"{" + data[1:].replace(b'"events":', b'"events" :', 1), world.vkey)
    assert "in bundle.events" in report.problems[0].where or "byte" in report.problems[0].where
    report = failed(data[: len(data) // 2], world.vkey)
    assert report.problems[0].where.startswith("byte ")
    assert "not valid JSON" in report.problems[0].message


def test_same_ledger_same_query_same_bytes(world: World, bundles: dict[str, Path]) -> None:
    size = int(doc(bundles["at"])["checkpoint"].split("\n")[1])
    with open_ledger(world.home) as ledger:
        store = Store.for_home(world.home)
        first = build_bundle(ledger, store, at_query(world.between, "prod"), as_of=size)
        second = build_bundle(ledger, store, at_query(world.between, "prod"), as_of=size)
    assert first.data == second.data


def test_an_older_checkpoint_is_proven_consistent_with_the_latest(
    world: World, bundles: dict[str, Path], tmp_path: Path
) -> None:
    old = int(doc(bundles["changes"])["checkpoint"].split("\n")[1])
    cli(
        world.home,
        "ledger",
        "append",
        "--type",
        "audit.test",
        "--subject",
        "noise",
        "--actor",
        "user:test",
    )
    cli(world.home, "ledger", "checkpoint")
    out = tmp_path / "old.json"
    summary = audit(
        world.home,
        "evidence",
        "--env",
        "prod",
        "--from",
        world.before_any,
        "--to",
        world.end,
        "--as-of",
        str(old),
        "-o",
        str(out),
    )
    assert summary["checkpoint_size"] == old < summary["latest_size"]
    assert not summary["signed_checkpoint"]
    bundle = doc(out)
    assert bundle["latest"]["consistency"] != []
    assert bundle["answer"] == doc(bundles["changes"])["answer"]
    report = audit(None, "verify", str(out), "--vkey", world.vkey)
    assert report["ok"] and report["latest_size"] > report["checkpoint_size"]
    # a consistency proof that does not hold is named
    bundle["latest"]["consistency"][0] = bundle["latest"]["consistency"][-1][::-1]
    assert "latest.consistency" in places(failed(rewritten(bundle), world.vkey))


def test_witness_folder(world: World, tmp_path: Path) -> None:
    witness = tmp_path / "witness"
    cli(
        world.home,
        "ledger",
        "append",
        "--type",
        "audit.test",
        "--subject",
        "w",
        "--actor",
        "user:test",
    )
    cli(world.home, "ledger", "checkpoint", "--publish", str(witness))
    out = tmp_path / "b.json"
    audit(world.home, "evidence", world.v2, "-o", str(out))
    report = audit(None, "verify", str(out), "--witness", str(witness))
    assert report["ok"] and report["trust"] == "witness" and report["witnessed"] == 1
    # a witness that holds another root for the same size: the ledger forked
    bundle = doc(out)
    size = int(bundle["checkpoint"].split("\n")[1])
    key = load_private_key(world.home / "ledger.key")
    origin = bundle["ledger"]["origin"]
    forked = tmp_path / "forked"
    forked.mkdir()
    (forked / "vkey").write_text(world.vkey + "\n")
    fake = sign_checkpoint(Checkpoint(origin, size, b"\x07" * 32), NoteSigner(origin, key))  # type: ignore[arg-type]
    (forked / f"checkpoint-{size:020d}").write_text(fake)
    report = audit(None, "verify", str(out), "--witness", str(forked), code=1)
    assert any("forked" in p["message"] for p in report["problems"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sha256:" + "1" * 64, "--at", "2026-01-01T00:00:00Z"], "either"),
        (["--env", "prod"], "--at TIME"),
        ([], "name what to prove"),
        (
            ["--at", "2026-01-01T00:00:00Z", "--env", "prod", "--as-of", "999999"],
            "no checkpoint of size 999999",
        ),
    ],
)
def test_evidence_bad_input_exits_2_and_writes_nothing(
    world: World, tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "b.json"
    text = audit(world.home, "evidence", *args, "-o", str(out), code=2, fmt="text")
    assert message in text and not out.exists()


def test_evidence_never_overwrites_unasked(world: World, tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    out.write_text("keep me")
    text = audit(world.home, "evidence", world.v1, "-o", str(out), code=2, fmt="text")
    assert "--overwrite" in text and out.read_text() == "keep me"
    audit(world.home, "evidence", world.v1, "-o", str(out), "--overwrite")
    assert verify_bundle(out.read_bytes(), vkey=world.vkey).ok


def test_verify_bad_input_exits_2(tmp_path: Path) -> None:
    assert "cannot read" in audit(
        None, "verify", str(tmp_path / "missing.json"), code=2, fmt="text"
    )


def test_trace_and_changes_bundles_through_the_library(world: World) -> None:
    with open_ledger(world.home) as ledger:
        store = Store.for_home(world.home)
        for query in (
            trace_query(world.killed),
            changes_query("prod", world.before_any, world.after),
        ):
            built = build_bundle(ledger, store, query)
            assert built.report.ok and verify_bundle(built.data, vkey=world.vkey).ok


def test_hostile_shapes_are_refused_without_crashing(
    world: World, bundles: dict[str, Path]
) -> None:
    deep: Any = []
    for _ in range(200):
        deep = [deep]
    bundle = doc(bundles["at"])
    bundle["answer"]["deep"] = deep
    assert "nested deeper" in places(failed(json.dumps(bundle).encode(), world.vkey))
    bundle = doc(bundles["at"])
    bundle["keys"].reverse()
    assert "keys[1].index" in places(failed(rewritten(bundle), world.vkey))
    assert "must be a JSON object" in places(failed(b"[]", world.vkey))
    assert "twice" in places(failed(b'{"format":1,"format":2}', world.vkey))
    bundle = doc(bundles["at"])
    bundle["events"][0]["event"]["payload"] = {"x": 1.5e300}
    assert "events[0]" in places(failed(rewritten(bundle), world.vkey))
