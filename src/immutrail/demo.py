"""The story `immutrail demo` tells, on the embedded defaults (SQLite ledger in a demo folder).

Today it is the ledger's story: record a pipeline's steps, sign and witness a checkpoint, prove an
entry offline, then show that a tampered copy and a rolled-back copy are both caught. Each step
returns facts (not prose) so a test can check the outcomes rather than the wording.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .ledger import merkle
from .ledger.event import Event
from .ledger.home import DB_FILE, init_ledger, open_ledger
from .ledger.proofs import b64

MARKER = ".immutrail-demo"

Narrator = Callable[[str, str], None]
"""Called with (step title, detail) as the story goes."""


@dataclass
class DemoResult:
    home: Path
    witness: Path
    entries: int = 0
    checkpoint_note: str = ""
    inclusion_verified: bool = False
    clean_verify_ok: bool = False
    tampered_index: int = -1
    tamper_detected_at: int | None = None
    rollback_detected: bool = False
    facts: dict[str, object] = field(default_factory=dict)


PIPELINE: list[tuple[str, str, str, dict[str, object]]] = [
    (
        "source.committed",
        "builder:ci",
        "git:examples/hello@4f2a9c1",
        {"repository": "examples/hello", "commit": "4f2a9c1e0b7d", "branch": "main"},
    ),
    (
        "artifact.built",
        "builder:ci",
        "sha256:5b0f9d1c2a3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e",
        {"definition": "image.yaml", "commit": "4f2a9c1e0b7d", "reproducible": True},
    ),
    (
        "scan.completed",
        "scanner:osv",
        "sha256:5b0f9d1c2a3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e",
        {"critical": 0, "high": 0, "database": "sha256:0c1d2e3f"},
    ),
    (
        "approval.granted",
        "user:alice",
        "sha256:5b0f9d1c2a3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e",
        {"environment": "prod", "comment": "reviewed the diff"},
    ),
    (
        "approval.granted",
        "user:bob",
        "sha256:5b0f9d1c2a3e4f5061728394a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e",
        {"environment": "prod"},
    ),
    ("deploy.completed", "user:carol", "env:prod", {"strategy": "blue-green", "replicas": 3}),
]


def prepare(directory: Path) -> None:
    """Start clean: remove a previous demo folder, but only one this command made."""
    if directory.exists():
        if not (directory / MARKER).exists():
            raise FileExistsError(f"{directory} exists and was not made by `immutrail demo`")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("made by immutrail demo; removed by the next run\n")


def run(directory: Path, say: Narrator) -> DemoResult:
    prepare(directory)
    home, witness_dir = directory / "home", directory / "witness"
    result = DemoResult(home=home, witness=witness_dir)

    ledger, _ = init_ledger(home, origin="demo.immutrail.local/ledger")
    say("1. A new ledger", f"origin {ledger.origin}\nverifier key {ledger.vkey}")

    appended = ledger.append_batch([Event.create(t, a, s, p) for t, a, s, p in PIPELINE])
    for item, (kind, actor, subject, _) in zip(appended, PIPELINE, strict=True):
        say("2. The pipeline writes every step", f"#{item.index} {kind} by {actor} on {subject}")
    result.entries = len(appended)

    stored = ledger.checkpoint(publish=witness_dir)
    result.checkpoint_note = stored.note
    say("3. A signed checkpoint, published to an outside witness folder", stored.note.rstrip())

    proof = ledger.inclusion_proof(3, stored.size)
    merkle.verify_inclusion(
        proof.index, proof.size, proof.leaf_hash, list(proof.proof), stored.root
    )
    result.inclusion_verified = True
    say(
        "4. Entry 3 (the first approval) is proven in the signed tree",
        f"leaf {b64(proof.leaf_hash)}\n" + "\n".join(f"  {b64(h)}" for h in proof.proof),
    )

    report = ledger.verify([witness_dir])
    result.clean_verify_ok = report.ok
    say(
        "5. Full verification of the real ledger",
        f"ok={report.ok}: {report.entries} entries, {report.nodes} nodes, root {b64(report.root)}",
    )
    ledger.close()

    tampered = directory / "tampered"
    shutil.copytree(home, tampered)
    result.tampered_index = 4
    _flip_payload_byte(tampered / DB_FILE, result.tampered_index)
    copy = open_ledger(tampered)
    bad = copy.verify([witness_dir])
    copy.close()
    result.tamper_detected_at = bad.first_bad_index
    say(
        "6. Someone edits a copy: bob's approval now says 'bib'",
        "\n".join(f"{p.where}: {p.message}" for p in bad.problems),
    )

    backup = directory / "backup"
    shutil.copytree(home, backup)  # an honest copy of the ledger as it is now
    ledger = open_ledger(home)
    ledger.append(Event.create("drift.detected", "reconciler", "env:prod", {"files": 1}))
    ledger.checkpoint(publish=witness_dir)
    ledger.close()
    copy = open_ledger(backup)  # restoring the old copy hides the drift finding...
    behind = copy.verify([witness_dir])
    copy.close()
    result.rollback_detected = not behind.ok
    say(
        "7. Someone restores an older copy to hide the drift finding",
        "\n".join(f"{p.where}: {p.message}" for p in behind.problems),
    )
    return result


def _flip_payload_byte(db: Path, index: int) -> None:
    """Edit an entry the way an attacker with database access would: triggers dropped first."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("DROP TRIGGER entries_no_update")
        data = conn.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()[0]
        conn.execute(
            "UPDATE entries SET data = ? WHERE idx = ?",
            (bytes(data).replace(b"user:bob", b"user:bib"), index),
        )
        conn.commit()
    finally:
        conn.close()
