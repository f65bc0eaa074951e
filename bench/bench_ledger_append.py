"""(a) Append throughput: the ledger against raw inserts of the same bytes, SQLite and PostgreSQL.

Measured, each in a fresh database:

* batched: ``Ledger.append_batch`` of pre-built ``Event`` objects in batches (default 200,000 events
  in batches of 1,000). The timing includes everything ``append_batch`` does: canonical JSON,
  leaf hashes, time parsing, the Merkle frontier and tiles, the inserts (entries with their id
  index, tiles, tree head) and one durable commit per batch. The derived subject, type and time
  indexes are caught up by the first filtered query, not by appends: that cost is measured
  separately ("derived index catch-up") and shown next to the append rate. It does NOT include
  building the events (``Event.create``), which is measured separately.
* baseline: raw inserts of the same canonical bytes into ``(idx INTEGER PRIMARY KEY, data BLOB)``
  in a separate file, same batching, same pragmas (WAL, synchronous=FULL), one commit per batch;
  on PostgreSQL a binary COPY (as the ledger's) into ``(idx BIGINT PRIMARY KEY, data BYTEA)`` per
  batch. Also, for the record, the same with an ``id`` column and its unique index (the ledger
  needs one to refuse repeated events; the issue allows it in the baseline).
* storage floor (diagnostic): the ledger's own rows, tile appends and tree-head update,
  precomputed, written into the ledger's real schema by the ledger's own writer: what storage
  costs alone.
* single durable appends: ``append()`` calls, each its own transaction, against a raw single-row
  INSERT + COMMIT.
* stage costs (diagnostic, unprofiled): Event.create, entry_bytes, leaf_hash, time parsing and the
  frontier per event, to see where the ledger's time goes; then a cProfile of append_batch.

    .venv/bin/python bench/bench_ledger_append.py [--quick]
    scripts/with-postgres.sh .venv/bin/python bench/bench_ledger_append.py   # + PostgreSQL
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import (
    components,
    current_rss_mb,
    header,
    latency_summary,
    machine_info,
    make_events,
    new_ledger,
    pg_database,
    pg_notice,
    pg_url,
    phase_peak_rss_mb,
    print_profile,
    print_table,
    print_targets,
    profile_call,
    reset_peak_rss,
    scratch_dir,
    sqlite_connect,
    target,
    timed,
    top_functions,
    write_json,
)

NAME = "ledger_append"
TARGET_RATIO = 0.5
TARGET_EPS = 50_000


def phase(label: str, fn: Callable[[], float], count: int) -> dict[str, Any]:
    """Run one timed phase (fn returns its own elapsed seconds) and record rate and memory."""
    reset_peak_rss()
    before = current_rss_mb()
    seconds = fn()
    return {
        "phase": label,
        "count": count,
        "seconds": seconds,
        "per_s": count / seconds,
        "us_each": 1e6 * seconds / count,
        "rss_before_mb": before,
        "peak_rss_mb": phase_peak_rss_mb(),
    }


def best(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    out = dict(min(runs, key=lambda r: r["seconds"]))
    out["runs_per_s"] = [r["per_s"] for r in runs]
    return out


# -- SQLite ------------------------------------------------------------------------------------


def sqlite_raw_batched(
    path: Path, datas: Sequence[bytes], batch: int, ids: Sequence[str] | None = None
) -> float:
    """Raw inserts of the bytes; with ``ids``, also an id column under a unique index."""
    conn = sqlite_connect(path)
    if ids is None:
        conn.execute("CREATE TABLE entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    else:
        conn.execute(
            "CREATE TABLE entries (idx INTEGER PRIMARY KEY, id TEXT NOT NULL, data BLOB NOT NULL)"
        )
        conn.execute("CREATE UNIQUE INDEX entries_id ON entries (id)")
    t0 = time.perf_counter()
    for start in range(0, len(datas), batch):
        conn.execute("BEGIN IMMEDIATE")
        if ids is None:
            conn.executemany(
                "INSERT INTO entries (idx, data) VALUES (?, ?)",
                [(start + i, d) for i, d in enumerate(datas[start : start + batch])],
            )
        else:
            conn.executemany(
                "INSERT INTO entries (idx, id, data) VALUES (?, ?, ?)",
                [
                    (start + i, ids[start + i], d)
                    for i, d in enumerate(datas[start : start + batch])
                ],
            )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def sqlite_raw_single(path: Path, datas: Sequence[bytes]) -> tuple[float, list[float]]:
    conn = sqlite_connect(path)
    conn.execute("CREATE TABLE entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    lat = []
    t0 = time.perf_counter()
    for i, d in enumerate(datas):
        s = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO entries (idx, data) VALUES (?, ?)", (i, d))
        conn.execute("COMMIT")
        lat.append(time.perf_counter() - s)
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed, lat


def ledger_batched(url: str, home: Path, events: Sequence[Any], batch: int) -> float:
    ledger = new_ledger(home, url)
    try:
        t0 = time.perf_counter()
        for start in range(0, len(events), batch):
            ledger.append_batch(events[start : start + batch])
        elapsed = time.perf_counter() - t0
        assert ledger.head().size == len(events)
        # The derived subject/type/time indexes, caught up by the first filtered query.
        t1 = time.perf_counter()
        ledger.store.catch_up_indexes()
        CATCH_UP.append(time.perf_counter() - t1)
    finally:
        ledger.close()
    return elapsed


CATCH_UP: list[float] = []
"""Seconds of each ledger_batched run's derived-index catch-up, in run order."""


def ledger_single(url: str, home: Path, events: Sequence[Any]) -> tuple[float, list[float]]:
    ledger = new_ledger(home, url)
    lat = []
    try:
        t0 = time.perf_counter()
        for e in events:
            s = time.perf_counter()
            ledger.append(e)
            lat.append(time.perf_counter() - s)
        elapsed = time.perf_counter() - t0
    finally:
        ledger.close()
    return elapsed, lat


def precomputed_rows(events: Sequence[Any], batch: int) -> tuple[Any, Any, Any, Any]:
    """The exact rows append_batch writes: entry rows per event; per batch, the tile appends and
    the tree head; and (for the schema breakdown) the v2 layout's node rows per event."""
    from immutrail.ledger import merkle, tiles
    from immutrail.ledger.event import time_us

    frontier = merkle.Frontier.empty()
    rows, tile_batches, heads, v2_nodes = [], [], [], []
    for start in range(0, len(events), batch):
        leaves = []
        for i, e in enumerate(events[start : start + batch], start):
            data = e.entry_bytes()
            leaf = merkle.leaf_hash(data)
            leaves.append(leaf)
            rows.append((i, e.id, e.type, e.actor, e.subject, time_us(e.time), data, leaf))
        completed = frontier.extend(leaves)
        v2_nodes.append([(lv << 50 | ix, h) for lv, ix, h in completed])
        tile_batches.append(tiles.pack(completed))
        heads.append((frontier.size, frontier.root(), frontier.to_bytes()))
    return rows, tile_batches, heads, v2_nodes


def sqlite_floor(path: Path, rows: Any, tile_batches: Any, heads: Any, batch: int) -> float:
    """The ledger's own precomputed rows into the ledger's real schema with the ledger's own
    statements: storage cost alone."""
    from immutrail.ledger.storage.interface import TreeHead
    from immutrail.ledger.storage.sqlite import SqliteStore, SqliteWriter

    store = SqliteStore(path, create=True)
    store.migrate()
    store.close()
    store = SqliteStore(path)
    conn = store._conn
    t0 = time.perf_counter()
    for b, start in enumerate(range(0, len(rows), batch)):
        end = min(start + batch, len(rows))
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("SELECT size, root, frontier FROM tree_head WHERE one = 1").fetchone()
        SqliteWriter(conn).insert(rows[start:end], tile_batches[b], TreeHead(*heads[b]))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    store.close()
    return elapsed


_INDEXES = {
    "entries_id": "CREATE UNIQUE INDEX entries_id ON entries (id)",
    "entries_type": "CREATE INDEX entries_type ON entries (type, idx)",
    "entries_time": "CREATE INDEX entries_time ON entries (time_us)",
}


def sqlite_schema_variant(
    path: Path,
    rows: Any,
    extra: Any,
    batch: int,
    indexes: Sequence[str],
    extra_kind: str,
) -> float:
    """The ledger's entry rows with some indexes, plus v2 node rows or v3 tiles (or nothing)."""
    conn = sqlite_connect(path)
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA wal_autocheckpoint=10000")
    conn.execute(
        "CREATE TABLE entries (idx INTEGER PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL, "
        "actor TEXT NOT NULL, subject TEXT NOT NULL, time_us INTEGER NOT NULL, "
        "data BLOB NOT NULL, leaf_hash BLOB NOT NULL)"
    )
    conn.execute("CREATE TABLE nodes (k INTEGER PRIMARY KEY, hash BLOB NOT NULL)")
    conn.execute("CREATE TABLE tiles (k INTEGER PRIMARY KEY, hashes BLOB NOT NULL)")
    for name in indexes:
        conn.execute(_INDEXES[name])
    t0 = time.perf_counter()
    for b, start in enumerate(range(0, len(rows), batch)):
        end = min(start + batch, len(rows))
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows[start:end])
        if extra_kind == "nodes":
            conn.executemany("INSERT INTO nodes (k, hash) VALUES (?, ?)", extra[b])
        elif extra_kind == "tiles":
            conn.executemany(
                "INSERT INTO tiles (k, hashes) VALUES (?, ?) ON CONFLICT (k) DO UPDATE "
                "SET hashes = CAST(hashes || excluded.hashes AS BLOB)",
                extra[b],
            )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return elapsed


def schema_breakdown(
    rows: Any, tile_batches: Any, v2_nodes: Any, batch: int
) -> list[dict[str, Any]]:
    """What each part of the SQLite schema costs, with precomputed rows (diagnostic): the v2
    layout (node rows, type and time indexes) against v3 (tiles, derived indexes)."""
    variants: list[tuple[str, list[str], Any, str]] = [
        ("8 columns, no secondary index", [], None, ""),
        ("+ entries_id", ["entries_id"], None, ""),
        ("+ entries_id + tiles (v3 layout, executemany)", ["entries_id"], tile_batches, "tiles"),
        ("+ entries_id + node rows", ["entries_id"], v2_nodes, "nodes"),
        ("+ all 3 indexes + node rows (v2 layout)", list(_INDEXES), v2_nodes, "nodes"),
    ]
    out = []
    for label, idx, extra, kind in variants:
        with scratch_dir("schema") as d:
            t = sqlite_schema_variant(d / "s.db", rows, extra, batch, idx, kind)
        out.append({"variant": label, "per_s": len(rows) / t, "us_each": 1e6 * t / len(rows)})
        print(f"   schema breakdown: {label}: {len(rows) / t:,.0f} rows/s", flush=True)
    return out


# -- PostgreSQL --------------------------------------------------------------------------------


def pg_raw_batched(
    url: str, datas: Sequence[bytes], batch: int, ids: Sequence[str] | None = None
) -> float:
    """Raw binary COPY of the bytes; with ``ids``, also an id column under a unique index."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        if ids is None:
            conn.execute("CREATE TABLE raw_entries (idx BIGINT PRIMARY KEY, data BYTEA NOT NULL)")
            sql, types = (
                "COPY raw_entries (idx, data) FROM STDIN (FORMAT BINARY)",
                ["int8", "bytea"],
            )
        else:
            conn.execute(
                "CREATE TABLE raw_entries "
                "(idx BIGINT PRIMARY KEY, id TEXT NOT NULL, data BYTEA NOT NULL)"
            )
            conn.execute("CREATE UNIQUE INDEX raw_entries_id ON raw_entries (id)")
            sql = "COPY raw_entries (idx, id, data) FROM STDIN (FORMAT BINARY)"
            types = ["int8", "text", "bytea"]
        t0 = time.perf_counter()
        for start in range(0, len(datas), batch):
            with conn.transaction(), conn.cursor() as cur, cur.copy(sql) as copy:
                copy.set_types(types)  # binary, as the ledger's own COPY
                for i, d in enumerate(datas[start : start + batch]):
                    if ids is None:
                        copy.write_row((start + i, d))
                    else:
                        copy.write_row((start + i, ids[start + i], d))
        return time.perf_counter() - t0


def pg_raw_single(url: str, datas: Sequence[bytes]) -> tuple[float, list[float]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE raw_single (idx BIGINT PRIMARY KEY, data BYTEA NOT NULL)")
        lat = []
        t0 = time.perf_counter()
        for i, d in enumerate(datas):
            s = time.perf_counter()
            with conn.transaction():
                conn.execute("INSERT INTO raw_single (idx, data) VALUES (%s, %s)", (i, d))
            lat.append(time.perf_counter() - s)
        return time.perf_counter() - t0, lat


def pg_floor(url: str, rows: Any, tile_batches: Any, heads: Any, batch: int) -> float:
    from immutrail.ledger.storage.interface import TreeHead
    from immutrail.ledger.storage.postgres import PostgresStore, PostgresWriter

    store = PostgresStore(url)
    store.migrate()
    store.close()
    store = PostgresStore(url)
    conn = store._conn
    t0 = time.perf_counter()
    for b, start in enumerate(range(0, len(rows), batch)):
        end = min(start + batch, len(rows))
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SELECT size, root, frontier FROM tree_head WHERE one = 1 FOR UPDATE")
            row = cur.fetchone()
            assert row is not None
            writer = PostgresWriter(conn, TreeHead(row[0], bytes(row[1]), bytes(row[2])))
            writer.insert(rows[start:end], tile_batches[b], TreeHead(*heads[b]))
    elapsed = time.perf_counter() - t0
    store.close()
    return elapsed


# -- stage costs and profile -------------------------------------------------------------------


def stage_costs(events: Sequence[Any]) -> list[dict[str, Any]]:
    """Per-event cost of each pure-Python step of append_batch, unprofiled."""
    from immutrail.ledger import merkle
    from immutrail.ledger.event import event_time_us

    n = len(events)
    out = []
    t, datas = timed(lambda: [e.entry_bytes() for e in events])
    out.append(("Event.entry_bytes() (canonical JSON + size check)", t))
    t, leaves = timed(lambda: [merkle.leaf_hash(d) for d in datas])
    out.append(("merkle.leaf_hash()", t))
    t, _ = timed(lambda: [event_time_us(e.time) for e in events])
    out.append(("event.event_time_us() (normalized RFC 3339)", t))

    def tree() -> None:
        from immutrail.ledger import tiles

        f = merkle.Frontier.empty()
        for start in range(0, len(leaves), 1000):
            tiles.pack(f.extend(leaves[start : start + 1000]))

    t, _ = timed(tree)
    out.append(("Frontier.extend() + tiles.pack() (node hashes, batches of 1,000)", t))
    return [{"stage": s, "seconds": sec, "us_per_event": 1e6 * sec / n} for s, sec in out]


APPEND_PARTS_SQLITE = [
    ("Event.entry_bytes (canonical JSON)", [("ledger/event.py", "entry_bytes")]),
    ("merkle.leaf_hash", [("ledger/merkle.py", "leaf_hash")]),
    ("event_time_us (normalized RFC 3339)", [("ledger/event.py", "event_time_us")]),
    ("tiles.pack (group nodes by tile)", [("ledger/tiles.py", "pack")]),
    (
        "Frontier.extend / root / from_bytes",
        [
            ("ledger/merkle.py", "extend"),
            ("ledger/merkle.py", "root"),
            ("ledger/merkle.py", "from_bytes"),
            ("ledger/merkle.py", "to_bytes"),
        ],
    ),
    (
        "writer.insert (entries + tiles + head SQL)",
        [("storage/sqlite.py", "insert"), ("storage/postgres.py", "insert")],
    ),
    ("BEGIN IMMEDIATE + COMMIT (fsync)", [("storage/sqlite.py", "_transaction")]),
    ("lock head row + COMMIT (PostgreSQL)", [("storage/postgres.py", "writer")]),
]


def profile_append(url: str, home: Path, events: Sequence[Any], batch: int) -> dict[str, Any]:
    ledger = new_ledger(home, url)
    try:

        def run() -> None:
            for start in range(0, len(events), batch):
                ledger.append_batch(events[start : start + batch])

        _, stats = profile_call(run)
    finally:
        ledger.close()
    total = stats.total_tt
    comps = components(stats, total, APPEND_PARTS_SQLITE)
    comps = [c for c in comps if c["seconds"] > 0 or c["part"].startswith("other")]
    top = top_functions(stats, total, 15)
    return {"events": len(events), "total_s": total, "components": comps, "top": top}


# -- driver ------------------------------------------------------------------------------------


def run_backend(
    backend: str,
    make_url: Callable[[str], Any],
    events: Sequence[Any],
    datas: Sequence[bytes],
    single_events: Sequence[Any],
    single_datas: Sequence[bytes],
    floor_rows: Any,
    batch: int,
    repeat: int,
    profile_n: int,
) -> dict[str, Any]:
    """make_url(label) is a context manager giving (url, home) for a fresh database."""
    n = len(events)
    ids = [e.id for e in events]
    raw_runs, raw_id_runs, ledger_runs, floor_runs = [], [], [], []
    rows, tile_batches, heads, _ = floor_rows
    for r in range(repeat):
        with make_url(f"raw{r}") as (url, home):
            raw_runs.append(
                phase(
                    f"raw {backend} batched",
                    lambda: (
                        sqlite_raw_batched(home / "raw.db", datas, batch)
                        if backend == "sqlite"
                        else pg_raw_batched(url, datas, batch)
                    ),
                    n,
                )
            )
        with make_url(f"rawid{r}") as (url, home):
            raw_id_runs.append(
                phase(
                    f"raw {backend} batched, with id column",
                    lambda: (
                        sqlite_raw_batched(home / "rawid.db", datas, batch, ids)
                        if backend == "sqlite"
                        else pg_raw_batched(url, datas, batch, ids)
                    ),
                    n,
                )
            )
        with make_url(f"ledger{r}") as (url, home):
            ledger_runs.append(
                phase(
                    f"ledger {backend} append_batch",
                    lambda: ledger_batched(url, home / "home", events, batch),
                    n,
                )
            )
        with make_url(f"floor{r}") as (url, home):
            floor_runs.append(
                phase(
                    f"ledger schema, precomputed rows ({backend})",
                    lambda: (
                        sqlite_floor(home / "floor.db", rows, tile_batches, heads, batch)
                        if backend == "sqlite"
                        else pg_floor(url, rows, tile_batches, heads, batch)
                    ),
                    n,
                )
            )
        print(
            f"   [{backend}] round {r + 1}/{repeat}: raw {raw_runs[-1]['per_s']:,.0f}/s, "
            f"ledger {ledger_runs[-1]['per_s']:,.0f}/s, floor {floor_runs[-1]['per_s']:,.0f}/s",
            flush=True,
        )
    raw, led, floor = best(raw_runs), best(ledger_runs), best(floor_runs)
    raw_id = best(raw_id_runs)
    catch_up = CATCH_UP[-repeat:]
    best_run = min(range(repeat), key=lambda r: ledger_runs[r]["seconds"])
    led["catch_up_seconds"] = catch_up[best_run]
    led["with_catch_up_per_s"] = n / (led["seconds"] + catch_up[best_run])

    s = len(single_events)
    with make_url("rawsingle") as (url, home):
        if backend == "sqlite":
            t_raw1, lat_raw1 = sqlite_raw_single(home / "raw1.db", single_datas)
        else:
            t_raw1, lat_raw1 = pg_raw_single(url, single_datas)
    with make_url("ledgersingle") as (url, home):
        t_led1, lat_led1 = ledger_single(url, home / "home", single_events)
    single = {
        "raw": {"count": s, "seconds": t_raw1, "per_s": s / t_raw1, **latency_summary(lat_raw1)},
        "ledger": {"count": s, "seconds": t_led1, "per_s": s / t_led1, **latency_summary(lat_led1)},
    }
    single["ratio"] = single["ledger"]["per_s"] / single["raw"]["per_s"]

    with make_url("profile") as (url, home):
        prof = profile_append(url, home / "home", events[:profile_n], batch)

    ratio = led["per_s"] / raw["per_s"]
    ratio_id = led["per_s"] / raw_id["per_s"]
    print_table(
        f"{backend}: batched append, {n:,} events in batches of {batch:,} (best of {repeat})",
        ("what", "events/s", "us/event", "vs raw", "peak RSS MB", "RSS growth MB"),
        [
            (
                "raw insert of the same bytes (baseline)",
                raw["per_s"],
                raw["us_each"],
                1.0,
                raw["peak_rss_mb"],
                raw["peak_rss_mb"] - raw["rss_before_mb"],
            ),
            (
                "raw insert with an id column + unique index (baseline 2)",
                raw_id["per_s"],
                raw_id["us_each"],
                raw_id["per_s"] / raw["per_s"],
                raw_id["peak_rss_mb"],
                raw_id["peak_rss_mb"] - raw_id["rss_before_mb"],
            ),
            (
                "ledger schema, precomputed rows (floor)",
                floor["per_s"],
                floor["us_each"],
                floor["per_s"] / raw["per_s"],
                floor["peak_rss_mb"],
                floor["peak_rss_mb"] - floor["rss_before_mb"],
            ),
            (
                "Ledger.append_batch (pre-built Events)",
                led["per_s"],
                led["us_each"],
                ratio,
                led["peak_rss_mb"],
                led["peak_rss_mb"] - led["rss_before_mb"],
            ),
            (
                "  + derived index catch-up (first filtered query)",
                led["with_catch_up_per_s"],
                1e6 * (led["seconds"] + led["catch_up_seconds"]) / n,
                led["with_catch_up_per_s"] / raw["per_s"],
                "",
                "",
            ),
        ],
    )
    print(
        f"   [{backend}] append_batch / raw with id column: {ratio_id:.3f}; per-round rates: raw "
        f"{[round(x) for x in raw['runs_per_s']]}, ledger {[round(x) for x in led['runs_per_s']]}",
        flush=True,
    )
    print_table(
        f"{backend}: single durable appends ({s} transactions each)",
        ("what", "appends/s", "median ms", "p90 ms", "p99 ms", "vs raw"),
        [
            (
                "raw single-row insert + commit",
                single["raw"]["per_s"],
                single["raw"]["median_ms"],
                single["raw"]["p90_ms"],
                single["raw"]["p99_ms"],
                1.0,
            ),
            (
                "Ledger.append()",
                single["ledger"]["per_s"],
                single["ledger"]["median_ms"],
                single["ledger"]["p90_ms"],
                single["ledger"]["p99_ms"],
                single["ratio"],
            ),
        ],
    )
    print_profile(
        f"{backend}: cProfile of append_batch ({prof['events']:,} events)",
        prof["components"],
        prof["top"],
    )
    targets = [
        target(f"{backend}: batched append / raw insert", ratio, TARGET_RATIO, unit="x"),
        target(f"{backend}: batched append events/s", led["per_s"], TARGET_EPS, unit="events/s"),
    ]
    return {
        "batched": {
            "raw": raw,
            "ledger": led,
            "floor": floor,
            "raw_with_id": raw_id,
            "ratio": ratio,
            "ratio_vs_raw_with_id": ratio_id,
            "ratio_with_catch_up": led["with_catch_up_per_s"] / raw["per_s"],
            "floor_ratio": floor["per_s"] / raw["per_s"],
        },
        "single": single,
        "profile": prof,
        "targets": targets,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--events", type=int, help="events per batched run (default 200,000)")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--single", type=int, help="single durable appends (default 500)")
    ap.add_argument(
        "--repeat", type=int, help="rounds of the batched runs; best is kept (default 2)"
    )
    ap.add_argument("--no-pg", action="store_true", help="skip PostgreSQL even if available")
    ap.add_argument(
        "--schema-breakdown",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time the SQLite schema index by index (diagnostic, ~1-2 min; default: on unless "
        "--quick)",
    )
    args = ap.parse_args(argv)
    n = args.events or (20_000 if args.quick else 200_000)
    s = args.single or (100 if args.quick else 500)
    repeat = args.repeat or (1 if args.quick else 2)
    profile_n = min(n, 20_000 if args.quick else 50_000)
    header("bench_ledger_append", "batched and single durable appends vs raw inserts", args.quick)
    url_pg = None if args.no_pg else pg_url()

    reset_peak_rss()
    t_create, events = timed(lambda: make_events(n, seed=1))
    create_peak = phase_peak_rss_mb()
    single_events = make_events(s, seed=2)
    t_bytes, datas = timed(lambda: [e.entry_bytes() for e in events])
    single_datas = [e.entry_bytes() for e in single_events]
    sizes = [len(d) for d in datas]
    print(
        f"   {n:,} events built in {t_create:.2f} s ({n / t_create:,.0f} Event.create/s, "
        f"not inside the append timing); canonical size {min(sizes)}-{max(sizes)} bytes, "
        f"mean {sum(sizes) / n:.0f}",
        flush=True,
    )
    stages = stage_costs(events)
    floor_rows = precomputed_rows(events, args.batch)

    from contextlib import contextmanager

    @contextmanager
    def sqlite_target(label: str):  # type: ignore[no-untyped-def]
        with scratch_dir(f"append-{label}") as d:
            yield f"sqlite:///{d / 'home' / 'ledger.db'}", d

    results: dict[str, Any] = {
        "name": NAME,
        "quick": args.quick,
        "machine": machine_info(url_pg),
        "params": {
            "events": n,
            "batch": args.batch,
            "single": s,
            "repeat": repeat,
            "profile_events": profile_n,
        },
        "events": {
            "create_seconds": t_create,
            "create_per_s": n / t_create,
            "create_us_each": 1e6 * t_create / n,
            "create_peak_rss_mb": create_peak,
            "entry_bytes_min": min(sizes),
            "entry_bytes_max": max(sizes),
            "entry_bytes_mean": sum(sizes) / n,
        },
        "stages": stages,
    }
    results["sqlite"] = run_backend(
        "sqlite",
        sqlite_target,
        events,
        datas,
        single_events,
        single_datas,
        floor_rows,
        args.batch,
        repeat,
        profile_n,
    )
    targets = list(results["sqlite"]["targets"])

    if url_pg:

        @contextmanager
        def pg_target(label: str):  # type: ignore[no-untyped-def]
            with scratch_dir(f"append-pg-{label}") as d, pg_database(url_pg, label) as url:
                yield url, d

        results["postgres"] = run_backend(
            "postgres",
            pg_target,
            events,
            datas,
            single_events,
            single_datas,
            floor_rows,
            args.batch,
            repeat,
            profile_n,
        )
        targets += results["postgres"]["targets"]
    else:
        pg_notice()

    creation = n / t_create
    print_table(
        "Per-event cost of the steps (unprofiled, same events)",
        ("step", "us/event", "events/s alone"),
        [
            (
                "Event.create() (validation, UUIDv7, time) - outside append timing",
                1e6 * t_create / n,
                creation,
            )
        ]
        + [(st["stage"], st["us_per_event"], 1e6 / st["us_per_event"]) for st in stages],
    )
    results["entry_bytes_seconds"] = t_bytes
    if args.schema_breakdown or (args.schema_breakdown is None and not args.quick):
        rows, tile_batches, _, v2_nodes = floor_rows
        breakdown = schema_breakdown(rows, tile_batches, v2_nodes, args.batch)
        results["sqlite_schema_breakdown"] = breakdown
        raw_rate = results["sqlite"]["batched"]["raw"]["per_s"]
        print_table(
            f"sqlite: cost of the ledger schema, {n:,} precomputed rows, batches of "
            f"{args.batch:,} (diagnostic)",
            ("variant", "rows/s", "us/row", "vs raw (idx, data)"),
            [(b["variant"], b["per_s"], b["us_each"], b["per_s"] / raw_rate) for b in breakdown],
        )
    results["targets"] = targets
    print_targets(targets)
    write_json(NAME, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
