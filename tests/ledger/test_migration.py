"""Schema v3 (tiles, derived type and time indexes): a v2 ledger written the v2 way migrates.

The v2 database is built here with the v2 DDL (migrations 1 and 2, kept verbatim) and the v2
writer's statements: one ``nodes`` row per interior node under ``level << 50 | index``, and a
checkpoint signed before the upgrade. After ``init_ledger`` migrates it, everything must verify,
the old checkpoint must still match, proofs must lead to it, and filters must work. A v2 ledger
with a damaged node is refused (and left as it was), never silently repaired.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from immutrail.crypto.keys import load_private_key
from immutrail.crypto.note import NoteSigner
from immutrail.ledger import merkle, tiles
from immutrail.ledger.errors import StorageError
from immutrail.ledger.event import Event, time_us
from immutrail.ledger.home import KEY_FILE, init_ledger, open_ledger
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import LEVEL_SHIFT, EntryFilter
from immutrail.ledger.storage.sqlite import MIGRATIONS, SqliteStore, _statements

SIZE = 700
TYPES = ("artifact.built", "scan.completed", "deploy.completed")


def events(n: int) -> list[Event]:
    return [
        Event.create(
            TYPES[i % 3],
            "builder:ci",
            f"sha256:{i % 50:064x}",
            {"n": i},
            time=f"2026-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}Z",
        )
        for i in range(n)
    ]


def build_v2(home: Path, db: Path, evs: list[Event]) -> tuple[str, str, bytes]:
    """A v2 SQLite ledger for ``home``'s key, written with the v2 statements."""
    led, _ = init_ledger(home)  # only for the home's key (its own scratch ledger.db)
    origin, vkey = led.origin, led.vkey
    led.close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
    )
    for version, script in MIGRATIONS[:2]:
        for statement in _statements(script):
            conn.execute(statement)
        conn.execute("INSERT INTO schema_migrations VALUES (?, '2026-11-23T00:00:00Z')", (version,))
    conn.execute("INSERT INTO meta VALUES ('origin', ?), ('vkey', ?)", (origin, vkey))
    frontier = merkle.Frontier.empty()
    for i, e in enumerate(evs):  # the v2 writer: entries, one row per completed node, head
        data = e.entry_bytes()
        leaf = merkle.leaf_hash(data)
        conn.execute(
            "INSERT INTO entries (idx, id, type, actor, subject, time_us, data, leaf_hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (i, e.id, e.type, e.actor, e.subject, time_us(e.time), data, leaf),
        )
        for level, index, h in frontier.append(leaf):
            conn.execute(
                "INSERT INTO nodes (k, hash) VALUES (?, ?)", (level << LEVEL_SHIFT | index, h)
            )
    conn.execute(
        "UPDATE tree_head SET size = ?, root = ?, frontier = ? WHERE one = 1",
        (frontier.size, frontier.root(), frontier.to_bytes()),
    )
    # The v2 subject index was caught up to 600 entries; 100 more were appended since.
    conn.execute(
        "INSERT INTO subject_index SELECT subject, idx FROM entries WHERE idx < 600 "
        "ORDER BY subject, idx"
    )
    conn.execute("UPDATE meta SET value = '600' WHERE key = 'subject_indexed'")
    conn.execute("COMMIT")
    conn.close()
    # A checkpoint signed before the upgrade (the v2 tables it touches are unchanged).
    store = SqliteStore(db)
    key = load_private_key(home / KEY_FILE, None)
    v2 = Ledger(store, origin, vkey, lambda: NoteSigner(origin, key))  # type: ignore[arg-type]
    stored = v2.checkpoint()
    v2.close()
    return origin, vkey, stored.root


def test_a_v2_ledger_migrates_and_keeps_its_tree_and_checkpoint(tmp_path: Path) -> None:
    home, db = tmp_path / "home", tmp_path / "v2.db"
    evs = events(SIZE)
    origin, _, root = build_v2(home, db, evs)
    url = f"sqlite:///{db}"
    with pytest.raises(StorageError, match="schema version 2"):
        open_ledger(home, url)
    led, created = init_ledger(home, url)
    try:
        assert not created and led.origin == origin
        report = led.verify()
        assert report.ok, report.problems
        assert (report.entries, report.checkpoints, report.nodes) == (
            SIZE,
            1,
            SIZE - SIZE.bit_count(),
        )
        assert led.root() == root == led.checkpoints()[0].root
        proof = led.inclusion_proof(123)
        merkle.verify_inclusion(123, SIZE, proof.leaf_hash, proof.proof, root)
        stored = led.store.tiles(0, 1 << 62)
        assert {k: len(v) for k, v in stored.items()} == tiles.tile_lengths(SIZE)
        assert [r.index for r in led.entries(EntryFilter(subject=f"sha256:{7:064x}"))] == [
            i for i in range(SIZE) if i % 50 == 7
        ]
        assert [r.index for r in led.entries(EntryFilter(type=TYPES[1], start=600))] == [
            i for i in range(600, SIZE) if i % 3 == 1
        ]
        t = time_us("2026-01-01T00:10:00Z")
        assert [r.index for r in led.entries(EntryFilter(since_us=t, until_us=t))] == [600]
        led.append_batch(events(3))  # and it grows as a v3 ledger
        led.checkpoint()
        assert led.verify().ok
    finally:
        led.close()
    conn = sqlite3.connect(db)
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert "nodes" not in tables and {"tiles", "type_index", "time_index"} <= tables
    assert "entries_type" not in tables and "entries_time" not in tables


def test_a_v2_ledger_with_a_damaged_node_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    home, db = tmp_path / "home", tmp_path / "v2.db"
    build_v2(home, db, events(300))
    key = 3 << LEVEL_SHIFT | 17
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TRIGGER nodes_no_update")
    conn.execute("UPDATE nodes SET hash = zeroblob(32) WHERE k = ?", (key,))
    conn.close()
    with pytest.raises(StorageError, match="tree node level 3 index 17"):
        init_ledger(home, f"sqlite:///{db}")
    conn = sqlite3.connect(db)
    (version,) = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
    (nodes,) = conn.execute("SELECT count(*) FROM nodes").fetchone()
    conn.close()
    assert (version, nodes) == (2, 300 - 4)
