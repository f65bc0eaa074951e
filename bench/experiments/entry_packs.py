"""Experiment (not a standing benchmark): would packing entries into fewer rows close (a)?

Appends the same events three ways, each in a fresh SQLite file with the benchmark's pragmas
(WAL, synchronous=FULL), 1,000 events a durable transaction:

* raw: the baseline of ``bench_ledger_append.py``, one ``(idx, data)`` row per event;
* packs: the ledger's per-event work (canonical JSON, leaf hash, time, frontier and tiles) with
  the entries stored ``--pack`` to a row (length-prefixed, as a tlog-tiles entry bundle, leaf
  hashes beside them), grown in place while the pack is partial, plus one ``(id, idx)`` row per
  event in a WITHOUT ROWID table (an event ledger refuses repeated ids);
* the packs' storage alone, with and without the id rows, from precomputed bytes.

Prints microseconds per event and the ratio to raw. Run from the repository root:

    .venv/bin/python bench/experiments/entry_packs.py [--pack 256] [--events 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import RESULTS, make_events, sqlite_connect

from immutrail.ledger import merkle, tiles
from immutrail.ledger.event import event_time_us

BATCH = 1000
PACK_UPSERT = (
    "INSERT INTO packs VALUES (?, ?, ?) ON CONFLICT (k) DO UPDATE SET "
    "data = CAST(data || excluded.data AS BLOB), leaves = CAST(leaves || excluded.leaves AS BLOB)"
)


def raw(path: Path, datas: Sequence[bytes]) -> float:
    conn = sqlite_connect(path)
    conn.execute("CREATE TABLE entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    t0 = time.perf_counter()
    for start in range(0, len(datas), BATCH):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO entries VALUES (?, ?)",
            [(start + i, d) for i, d in enumerate(datas[start : start + BATCH])],
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def pack_rows(
    start: int, datas: Sequence[bytes], leaves: Sequence[bytes], pack: int
) -> list[tuple[int, bytes, bytes]]:
    """The pack rows (key, length-prefixed entries, leaf hashes) of entries from ``start``."""
    rows, i = [], 0
    while i < len(datas):
        key = (start + i) // pack
        end = min(len(datas), (key + 1) * pack - start)
        body = b"".join([len(d).to_bytes(2, "big") + d for d in datas[i:end]])
        rows.append((key, body, b"".join(leaves[i:end])))
        i = end
    return rows


def open_packs(path: Path) -> sqlite3.Connection:
    conn = sqlite_connect(path)
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("CREATE TABLE packs (k INTEGER PRIMARY KEY, data BLOB NOT NULL, leaves BLOB)")
    conn.execute("CREATE TABLE ids (id BLOB PRIMARY KEY, idx INTEGER NOT NULL) WITHOUT ROWID")
    conn.execute("CREATE TABLE tiles (k INTEGER PRIMARY KEY, hashes BLOB NOT NULL)")
    conn.execute("CREATE TABLE head (one INTEGER PRIMARY KEY, size INT, root BLOB, frontier BLOB)")
    conn.execute("INSERT INTO head VALUES (1, 0, x'', x'')")
    return conn


def packed_ledger(path: Path, events: Sequence[Any], pack: int) -> float:
    """The ledger's per-event work, stored in packs: everything append_batch does but the
    indexed columns."""
    conn = open_packs(path)
    frontier = merkle.Frontier.empty()
    sha256, prefix = hashlib.sha256, merkle.LEAF_PREFIX
    t0 = time.perf_counter()
    for start in range(0, len(events), BATCH):
        batch = events[start : start + BATCH]
        datas = [e.entry_bytes() for e in batch]
        leaves = [sha256(prefix + d).digest() for d in datas]
        ids = [bytes.fromhex(e.id.replace("-", "")) for e in batch]
        [event_time_us(e.time) for e in batch]  # the time index
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("SELECT size, root, frontier FROM head").fetchone()
        appends = tiles.pack(frontier.extend(leaves))
        conn.executemany(PACK_UPSERT, pack_rows(start, datas, leaves, pack))
        conn.executemany(
            "INSERT INTO ids VALUES (?, ?)", zip(ids, range(start, start + len(ids)), strict=True)
        )
        conn.executemany(
            "INSERT INTO tiles VALUES (?, ?) ON CONFLICT (k) DO UPDATE "
            "SET hashes = CAST(hashes || excluded.hashes AS BLOB)",
            appends,
        )
        conn.execute(
            "UPDATE head SET size = ?, root = ?, frontier = ? WHERE one = 1",
            (frontier.size, frontier.root(), frontier.to_bytes()),
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def packed_storage(
    path: Path,
    datas: Sequence[bytes],
    leaves: Sequence[bytes],
    ids: Sequence[bytes],
    pack: int,
    *,
    with_ids: bool,
) -> float:
    conn = open_packs(path)
    t0 = time.perf_counter()
    for start in range(0, len(datas), BATCH):
        end = start + BATCH
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(PACK_UPSERT, pack_rows(start, datas[start:end], leaves[start:end], pack))
        if with_ids:
            conn.executemany(
                "INSERT INTO ids VALUES (?, ?)", zip(ids[start:end], range(start, end), strict=True)
            )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pack", type=int, default=256, help="entries a row (default 256)")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    events = make_events(args.events)
    datas = [e.entry_bytes() for e in events]
    leaves = [hashlib.sha256(merkle.LEAF_PREFIX + d).digest() for d in datas]
    ids = [bytes.fromhex(e.id.replace("-", "")) for e in events]
    n = len(events)
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"{n:,} events of {sum(map(len, datas)) / n:.0f} bytes, {args.pack} a pack, us/event")
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(dir=RESULTS) as scratch:
            d = Path(scratch)
            base = raw(d / "raw.db", datas)
            full = packed_ledger(d / "ledger.db", events, args.pack)
            both = packed_storage(d / "s1.db", datas, leaves, ids, args.pack, with_ids=True)
            only = packed_storage(d / "s2.db", datas, leaves, ids, args.pack, with_ids=False)
        us = 1e6 / n
        print(
            f"raw {base * us:.2f}  packed ledger {full * us:.2f} (ratio {base / full:.3f})  "
            f"storage: packs + ids {both * us:.2f}, packs alone {only * us:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
