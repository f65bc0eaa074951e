"""Experiment (not a standing benchmark): where PostgreSQL append time goes, client or server.

Appends the same events three ways, each into a fresh database on the server of
``$IMMUTRAIL_TEST_PG_URL``, 1,000 events a durable transaction, and reports the wall clock with
the client's CPU (``time.thread_time``) and its backend's (utime + stime from ``/proc``, so the
server must run on this machine):

* committed: ``Ledger.append_batch`` as shipped (every row computed, then one binary COPY);
* streamed: the same rows computed ``--chunk`` at a time while the COPY is open, so that the
  backend can insert one chunk while the client computes the next (psycopg flushes every 32 KiB);
* packs: entries stored 256 to a row, grown in place, plus a binary COPY of ``(id, idx)`` rows.

If the wall clock is the sum of the two CPU times, client and server never ran at once.

    scripts/with-postgres.sh .venv/bin/python bench/experiments/pg_cpu_split.py [--events N]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from _common import make_events, new_ledger, pg_database, pg_url, scratch_dir
from entry_packs import pack_rows

from immutrail.ledger import merkle, tiles
from immutrail.ledger.event import event_time_us
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import ENTRY_COLUMNS
from immutrail.ledger.storage.postgres import ENTRY_TYPES, TILES_AND_HEAD

BATCH = 1000
PACK = 256
PACK_SCHEMA = [
    "CREATE TABLE packs (k BIGINT PRIMARY KEY, data BYTEA NOT NULL, leaves BYTEA NOT NULL)",
    "ALTER TABLE packs ALTER COLUMN data SET STORAGE EXTERNAL",
    "ALTER TABLE packs ALTER COLUMN leaves SET STORAGE EXTERNAL",
    "CREATE TABLE ids (id BYTEA PRIMARY KEY, idx BIGINT NOT NULL)",
    "CREATE TABLE tiles (k BIGINT PRIMARY KEY, hashes BYTEA NOT NULL)",
    "CREATE TABLE head (one INT PRIMARY KEY, size BIGINT, root BYTEA, frontier BYTEA)",
    "INSERT INTO head VALUES (1, 0, '', '')",
]
PACKS_TILES_HEAD = """
    WITH p AS (
        INSERT INTO packs (k, data, leaves)
        SELECT * FROM unnest(%s::bigint[], %s::bytea[], %s::bytea[])
        ON CONFLICT (k) DO UPDATE
        SET data = packs.data || excluded.data, leaves = packs.leaves || excluded.leaves
    ), t AS (
        INSERT INTO tiles (k, hashes) SELECT * FROM unnest(%s::bigint[], %s::bytea[])
        ON CONFLICT (k) DO UPDATE SET hashes = tiles.hashes || excluded.hashes
    )
    UPDATE head SET size = %s, root = %s, frontier = %s WHERE one = 1
"""


def tiles_and_head(
    appends: Sequence[tuple[int, bytes]], frontier: merkle.Frontier
) -> tuple[list[int], list[bytes], int, bytes, bytes]:
    """The bound values of the tile appends and the new tree head, as both statements take them."""
    return (
        [k for k, _ in appends],
        [h for _, h in appends],
        frontier.size,
        frontier.root(),
        frontier.to_bytes(),
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(conn: psycopg.Connection[Any], run: Callable[[], None]) -> tuple[float, float, float]:
    """(wall, client CPU, backend CPU) seconds of ``run``."""
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    backend = cpu_seconds(row[0])
    client, t0 = time.thread_time(), time.perf_counter()
    run()
    return (
        time.perf_counter() - t0,
        time.thread_time() - client,
        cpu_seconds(row[0]) - backend,
    )


def committed(ledger: Ledger, events: Sequence[Any], chunk: int) -> None:
    for start in range(0, len(events), BATCH):
        ledger.append_batch(events[start : start + BATCH])


def streamed(ledger: Ledger, events: Sequence[Any], chunk: int) -> None:
    sha256, prefix = hashlib.sha256, merkle.LEAF_PREFIX
    for start in range(0, len(events), BATCH):
        batch = events[start : start + BATCH]
        with ledger.store.writer() as writer:
            head = writer.head()
            frontier = merkle.Frontier.from_bytes(head.size, head.frontier)
            completed: list[tuple[int, int, bytes]] = []
            conn = ledger.store._conn  # type: ignore[attr-defined]
            with conn.cursor() as cur:
                sql = f"COPY entries ({ENTRY_COLUMNS}) FROM STDIN (FORMAT BINARY)"
                with cur.copy(sql) as copy:
                    copy.set_types(ENTRY_TYPES)
                    for c in range(0, len(batch), chunk):
                        part = batch[c : c + chunk]
                        datas = [e.entry_bytes() for e in part]
                        leaves = [sha256(prefix + d).digest() for d in datas]
                        completed.extend(frontier.extend(leaves))
                        for i, (e, data, leaf) in enumerate(zip(part, datas, leaves, strict=True)):
                            stamp = event_time_us(e.time)
                            copy.write_row(
                                (
                                    head.size + c + i,
                                    e.id,
                                    e.type,
                                    e.actor,
                                    e.subject,
                                    stamp,
                                    data,
                                    leaf,
                                )
                            )
                cur.execute(TILES_AND_HEAD, tiles_and_head(tiles.pack(completed), frontier))


def packed(conn: psycopg.Connection[Any], events: Sequence[Any]) -> None:
    frontier = merkle.Frontier.empty()
    sha256, prefix = hashlib.sha256, merkle.LEAF_PREFIX
    for start in range(0, len(events), BATCH):
        batch = events[start : start + BATCH]
        datas = [e.entry_bytes() for e in batch]
        leaves = [sha256(prefix + d).digest() for d in datas]
        ids = [bytes.fromhex(e.id.replace("-", "")) for e in batch]
        [event_time_us(e.time) for e in batch]  # the time index, as the ledger computes it
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT size, root, frontier FROM head WHERE one = 1 FOR UPDATE")
            appends = tiles.pack(frontier.extend(leaves))
            keys, bodies, hashes = zip(*pack_rows(start, datas, leaves, PACK), strict=True)
            with cur.copy("COPY ids (id, idx) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["bytea", "int8"])
                for j, event_id in enumerate(ids):
                    copy.write_row((event_id, start + j))
            cur.execute(
                PACKS_TILES_HEAD,
                (list(keys), list(bodies), list(hashes), *tiles_and_head(appends, frontier)),
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=100, help="rows a streamed chunk")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = pg_url()
    if base is None:
        sys.exit("needs $IMMUTRAIL_TEST_PG_URL: run under scripts/with-postgres.sh")
    events = make_events(args.events)
    n = len(events)
    for _ in range(args.repeat):
        for name in ("committed", "streamed", "packs"):
            with pg_database(base, "split") as url, scratch_dir("split") as scratch:
                if name == "packs":
                    with psycopg.connect(url, autocommit=True) as conn:
                        for statement in PACK_SCHEMA:
                            conn.execute(statement)
                        wall, client, server = measure(conn, lambda: packed(conn, events))
                else:
                    ledger = new_ledger(scratch / "home", url)
                    way = committed if name == "committed" else streamed
                    try:
                        wall, client, server = measure(
                            ledger.store._conn,
                            lambda: way(ledger, events, args.chunk),  # noqa: B023
                        )
                        assert ledger.head().size == n
                    finally:
                        ledger.close()
            print(
                f"{name:9s} {n / wall:8,.0f}/s  wall {wall:.2f} s  client CPU {client:.2f} s  "
                f"server CPU {server:.2f} s  load {os.getloadavg()[0]:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
