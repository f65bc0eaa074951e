"""(c) Full verification throughput against hashlib SHA-256 over the same entry bytes.

``Ledger.verify()`` of a SQLite ledger of ``--size`` entries, twice: with
``entry_format=False`` (``ledger verify --integrity-only``: every entry hash, the whole tree,
every checkpoint and actor signature, what the issue calls full verification) and by default
(also every entry re-validated as a canonical event against its indexed columns, and the derived
indexes). The ledger has 200,000 entries by default; it is built once with
``append_batch`` plus one signed checkpoint and cached in
``bench/results/cache/ledger-sqlite-<size>/``, shared with bench_ledger_proofs.py). Reported:
entries/s and MB/s of entry bytes (best of ``--repeat``), and peak RSS during verification.

Baseline in the same run: ``hashlib.sha256(entry).digest()`` once per entry over the same bytes,
held in memory (verification must hash every entry at least once); for context also one ``sha256``
over all the bytes as a single buffer, and reading the bytes from SQLite plus hashing them. Ratio =
verify rate / per-entry hash rate.

The ledger's per-entry hashing loops run in C when the extension is built
(``immutrail.ledger.hashing``); the integrity check is then also run with the Python loops, for
comparison in the same run.

Then where the time goes: per-step costs measured without a profiler on the same rows (read, leaf
hash, canonical parse, event validation, time parse, tree), and a cProfile of verify().

    .venv/bin/python bench/bench_ledger_verify.py [--quick] [--size N] [--rebuild]
    scripts/with-postgres.sh .venv/bin/python bench/bench_ledger_verify.py   # + PostgreSQL
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from _common import (
    components,
    current_rss_mb,
    header,
    machine_info,
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
    target,
    timed,
    top_functions,
    write_json,
)
from bench_ledger_proofs import build, cached_sqlite_ledger

from immutrail.ledger import hashing

NAME = "ledger_verify"
TARGET_RATIO = 0.5

VERIFY_PARTS = [
    (
        "DB reads: store.entries() (SELECT + EntryRow)",
        [("storage/sqlite.py", "query"), ("storage/postgres.py", "query")],
    ),
    (
        "leaf hashes (entry bytes against the stored leaf hashes)",
        [
            ("ledger/merkle.py", "leaf_hash"),
            ("ledger/hashing.py", "leaf_hashes_py"),
            ("~", "<built-in method immutrail.ledger._native.leaf_hashes>"),
        ],
    ),
    (
        "parse_canonical (JSON parse + canonical check)",
        [("crypto/canonical.py", "parse_canonical")],
    ),
    ("Event.from_dict (field validation)", [("ledger/event.py", "from_dict")]),
    ("time_us (indexed time re-check)", [("ledger/verify.py", "time_us")]),
    (
        "tile_from_base (every tile recomputed)",
        [
            ("ledger/hashing.py", "tile_from_base_py"),
            ("~", "<built-in method immutrail.ledger._native.tile_from_base>"),
        ],
    ),
    (
        "find_marked (entries that carry or announce a key)",
        [
            ("ledger/hashing.py", "find_marked_py"),
            ("~", "<built-in method immutrail.ledger._native.find_marked>"),
        ],
    ),
    ("Frontier.extend (leaf-by-leaf rebuild, on a mismatch)", [("ledger/merkle.py", "extend")]),
    (
        "derived index checks (SQL joins)",
        [
            ("storage/sqlite.py", "check_derived_indexes"),
            ("storage/postgres.py", "check_derived_indexes"),
        ],
    ),
    ("checkpoint signatures", [("ledger/verify.py", "open_note")]),
]


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best_t, out = float("inf"), None
    for _ in range(repeat):
        t, out = timed(fn)
        best_t = min(best_t, t)
    return best_t, out


def verify_runs(
    ledger: Any, repeat: int, workers: int | None = None, *, entry_format: bool = True
) -> dict[str, Any]:
    runs = []
    report = None
    for _ in range(repeat):
        reset_peak_rss()
        before = current_rss_mb()
        t, report = timed(lambda: ledger.verify(workers=workers, entry_format=entry_format))
        runs.append({"seconds": t, "peak_rss_mb": phase_peak_rss_mb(), "rss_before_mb": before})
    assert report is not None
    if not report.ok:
        raise SystemExit(f"verification FAILED: {report.problems[:3]}")
    best = min(runs, key=lambda r: r["seconds"])
    return {
        **best,
        "runs_seconds": [r["seconds"] for r in runs],
        "entries": report.entries,
        "nodes": report.nodes,
        "checkpoints": report.checkpoints,
    }


def hash_baselines(datas: Sequence[bytes], repeat: int) -> dict[str, float]:
    sha256 = hashlib.sha256

    def per_entry() -> None:
        for d in datas:
            sha256(d).digest()

    t_each, _ = best_of(repeat, per_entry)
    blob = b"".join(datas)
    t_one, _ = best_of(repeat, lambda: sha256(blob).digest())
    return {"per_entry_seconds": t_each, "single_buffer_seconds": t_one}


def step_costs(ledger: Any) -> list[tuple[str, float]]:
    """Each step of verification over every row, timed alone (no profiler, results dropped)."""
    import gc
    import json

    from immutrail.crypto.canonical import parse_canonical
    from immutrail.ledger import hashing, tiles
    from immutrail.ledger.event import Event, parse_entry
    from immutrail.ledger.merkle import Frontier, leaf_hash
    from immutrail.ledger.verify import check_row, time_us

    store = ledger.store
    t_read, rows = timed(lambda: list(store.entries()))
    datas = [r.data for r in rows]
    values = [json.loads(d) for d in datas]

    def each(fn: Callable[[Any], Any], items: Sequence[Any]) -> float:
        gc.collect()
        t0 = time.perf_counter()
        for x in items:
            fn(x)
        return time.perf_counter() - t0

    def tree(_: Any) -> None:
        f = Frontier.empty()
        f.extend([r.leaf_hash for r in rows])

    def tiled(_: Any) -> None:
        leaves = [r.leaf_hash for r in rows]
        for n in range(0, len(leaves), tiles.TILE_WIDTH):
            if len(leaves) - n >= 2:
                hashing.tile_from_base(b"".join(leaves[n : n + tiles.TILE_WIDTH]))

    def dumps_check(d: bytes) -> bool:
        v = json.loads(d)
        return (
            json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() == d
        )

    return [
        ("read rows: store.entries() (SELECT + EntryRow)", t_read),
        ("leaf_hash(row.data) + compare", each(lambda r: leaf_hash(r.data) == r.leaf_hash, rows)),
        (
            f"hashing.leaf_hashes(all entries) + compare ({hashing.implementation()})",
            each(lambda _: hashing.leaf_hashes(datas) == b"".join(r.leaf_hash for r in rows), [0]),
        ),
        ("check_row(row) (parse_entry + column/time compare)", each(check_row, rows)),
        ("  parse_entry(row.data)", each(parse_entry, datas)),
        ("    parse_canonical(row.data)", each(parse_canonical, datas)),
        ("    Event.from_dict(value)", each(Event.from_dict, values)),
        ("  time_us(event.time)", each(lambda v: time_us(v["time"]), values)),
        (
            f"hashing.tile_from_base per level-0 tile ({hashing.implementation()})",
            each(tiled, [None]),
        ),
        ("  for comparison: Frontier.extend(leaves), leaf by leaf", each(tree, [None])),
        ("for comparison: json.loads(row.data) (stdlib C parser)", each(json.loads, datas)),
        ("for comparison: json.loads + json.dumps(sort_keys) == bytes", each(dumps_check, datas)),
    ]


def profile_verify(ledger: Any) -> dict[str, Any]:
    # One process: cProfile cannot see into worker processes.
    _, stats = profile_call(lambda: ledger.verify(workers=1))
    total = stats.total_tt
    comps = [
        c
        for c in components(stats, total, VERIFY_PARTS)
        if c["seconds"] > 0 or c["part"].startswith("other")
    ]
    return {"total_s": total, "components": comps, "top": top_functions(stats, total, 15)}


def run(
    backend: str,
    ledger: Any,
    datas_loader: Callable[[], list[bytes]],
    repeat: int,
    read_and_hash: Callable[[], int] | None,
) -> dict[str, Any]:
    # The integrity check (what the issue calls full verification: every entry hash, the tree,
    # every checkpoint and signature) and the default check, which also re-validates every
    # entry's event format and the indexes. Range checks in one worker process per core, then
    # everything in this process.
    integ = verify_runs(ledger, repeat, entry_format=False)
    integ1 = verify_runs(ledger, repeat, workers=1, entry_format=False)
    integ_py = None
    if hashing.NATIVE:
        with hashing.python_loops():
            integ_py = verify_runs(ledger, repeat, entry_format=False)
    ver = verify_runs(ledger, repeat)
    ver1 = verify_runs(ledger, repeat, workers=1)
    n = ver["entries"]
    datas = datas_loader()
    assert len(datas) == n
    nbytes = sum(len(d) for d in datas)
    hb = hash_baselines(datas, max(repeat, 3))
    del datas
    res: dict[str, Any] = {
        "entries": n,
        "entry_bytes": nbytes,
        "verify": ver,
        "integrity": integ,
        "integrity_per_s": n / integ["seconds"],
        "integrity_one_process_per_s": n / integ1["seconds"],
        "verify_per_s": n / ver["seconds"],
        "verify_mb_s": nbytes / ver["seconds"] / 1e6,
        "hash_per_entry_per_s": n / hb["per_entry_seconds"],
        "hash_per_entry_mb_s": nbytes / hb["per_entry_seconds"] / 1e6,
        "hash_single_buffer_mb_s": nbytes / hb["single_buffer_seconds"] / 1e6,
    }
    rows = [
        (
            "hashlib.sha256 per entry, bytes in memory (baseline)",
            res["hash_per_entry_per_s"],
            res["hash_per_entry_mb_s"],
            1.0,
        ),
        (
            "hashlib.sha256 over one buffer (context)",
            float("nan"),
            res["hash_single_buffer_mb_s"],
            float("nan"),
        ),
    ]
    if read_and_hash is not None:
        t_rh, _ = best_of(repeat, read_and_hash)
        res["read_and_hash_per_s"] = n / t_rh
        rows.append(
            (
                "read entry bytes from the DB + sha256 each (context)",
                n / t_rh,
                nbytes / t_rh / 1e6,
                (n / t_rh) / res["hash_per_entry_per_s"],
            )
        )
    res["ratio"] = res["verify_per_s"] / res["hash_per_entry_per_s"]
    res["ratio_integrity"] = res["integrity_per_s"] / res["hash_per_entry_per_s"]
    res["ratio_integrity_one_process"] = (
        res["integrity_one_process_per_s"] / res["hash_per_entry_per_s"]
    )
    rows.append(
        (
            "Ledger.verify(entry_format=False, workers=1), one process",
            res["integrity_one_process_per_s"],
            nbytes / integ1["seconds"] / 1e6,
            res["ratio_integrity_one_process"],
        )
    )
    rows.append(
        (
            f"Ledger.verify(entry_format=False), {os.cpu_count()} workers (--integrity-only)",
            res["integrity_per_s"],
            nbytes / integ["seconds"] / 1e6,
            res["ratio_integrity"],
        )
    )
    if integ_py is not None:
        res["integrity_python_loops_per_s"] = n / integ_py["seconds"]
        res["ratio_integrity_python_loops"] = (
            res["integrity_python_loops_per_s"] / res["hash_per_entry_per_s"]
        )
        rows.append(
            (
                "  the same with the hashing loops in Python (context)",
                res["integrity_python_loops_per_s"],
                nbytes / integ_py["seconds"] / 1e6,
                res["ratio_integrity_python_loops"],
            )
        )
    res["verify_one_process_per_s"] = n / ver1["seconds"]
    res["ratio_one_process"] = res["verify_one_process_per_s"] / res["hash_per_entry_per_s"]
    rows.append(
        (
            "Ledger.verify(workers=1), one process",
            res["verify_one_process_per_s"],
            nbytes / ver1["seconds"] / 1e6,
            res["ratio_one_process"],
        )
    )
    rows.append(
        (
            f"Ledger.verify(), {os.cpu_count()} workers (default: + entry format, indexes)",
            res["verify_per_s"],
            res["verify_mb_s"],
            res["ratio"],
        )
    )
    if read_and_hash is not None:
        res["ratio_vs_read_and_hash"] = res["verify_per_s"] / res["read_and_hash_per_s"]
        print(
            f"   verify / (read + sha256): {res['ratio_vs_read_and_hash']:.3f}; "
            f"one process: {res['verify_one_process_per_s'] / res['read_and_hash_per_s']:.3f}",
            flush=True,
        )
    print_table(
        f"{backend}: full verification of {n:,} entries ({nbytes / 1e6:.1f} MB of entry bytes), "
        f"best of {repeat}",
        ("what", "entries/s", "MB/s", "vs per-entry hash"),
        rows,
    )
    print(
        f"   verify peak RSS {ver['peak_rss_mb']:.0f} MB "
        f"(RSS before {ver['rss_before_mb']:.0f} MB), "
        f"{ver['nodes']:,} stored nodes compared, {ver['checkpoints']} checkpoint(s)",
        flush=True,
    )

    steps = step_costs(ledger)
    res["steps"] = [{"step": s, "seconds": t, "us_per_entry": 1e6 * t / n} for s, t in steps]
    print_table(
        f"{backend}: cost of each verification step over all {n:,} rows (no profiler)",
        ("step", "seconds", "us/entry", "% of verify"),
        [(s, t, 1e6 * t / n, 100 * t / ver["seconds"]) for s, t in steps],
    )
    print(
        "   (indented steps are parts of the step above them; 'for comparison' rows are not"
        " part of verify)"
    )
    res["profile"] = profile_verify(ledger)
    print_profile(
        f"{backend}: cProfile of verify()", res["profile"]["components"], res["profile"]["top"]
    )
    res["targets"] = [
        target(
            f"{backend}: verify --integrity-only / sha256-per-entry",
            res["ratio_integrity"],
            TARGET_RATIO,
            unit="x",
        ),
        target(
            f"{backend}: verify (with entry format) / sha256-per-entry",
            res["ratio"],
            TARGET_RATIO,
            unit="x",
        ),
    ]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--size", type=int, help="ledger size (default 200,000)")
    ap.add_argument("--repeat", type=int, help="verify runs; the best is kept (default 2)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached SQLite ledger")
    ap.add_argument("--no-pg", action="store_true", help="skip PostgreSQL even if available")
    args = ap.parse_args(argv)
    size = args.size or (20_000 if args.quick else 200_000)
    repeat = args.repeat or (1 if args.quick else 2)
    header("bench_ledger_verify", "full verification vs hashlib SHA-256", args.quick)
    print(f"   ledger hashing loops: {hashing.implementation()}", flush=True)
    url_pg = None if args.no_pg else pg_url()
    results: dict[str, Any] = {
        "name": NAME,
        "quick": args.quick,
        "machine": machine_info(url_pg),
        "params": {"size": size, "repeat": repeat},
        "hashing": hashing.implementation(),
    }
    ledger, db, built = cached_sqlite_ledger(size, args.rebuild)
    results["sqlite_build"] = built or {"cached": True}
    # Derived indexes up to date, as after any filtered query: verify then checks all of them.
    ledger.store.catch_up_indexes()

    def sqlite_datas() -> list[bytes]:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return [r[0] for r in conn.execute("SELECT data FROM entries ORDER BY idx")]

    def sqlite_read_and_hash() -> int:
        sha256 = hashlib.sha256
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            n = 0
            for (d,) in conn.execute("SELECT data FROM entries ORDER BY idx"):
                sha256(d).digest()
                n += 1
            return n
        finally:
            conn.close()

    try:
        results["sqlite"] = run("sqlite", ledger, sqlite_datas, repeat, sqlite_read_and_hash)
    finally:
        ledger.close()
    targets = list(results["sqlite"]["targets"])

    if url_pg:
        import psycopg

        with scratch_dir("verify-pg") as d, pg_database(url_pg, "verify") as url:
            print(f"   building a {size:,}-entry PostgreSQL ledger ...", flush=True)
            ledger = new_ledger(d / "home", url)
            results["postgres_build"] = build(ledger, size)
            ledger.checkpoint()
            ledger.store.catch_up_indexes()
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")

            def pg_datas() -> list[bytes]:
                with psycopg.connect(url) as conn:
                    return [
                        bytes(r[0]) for r in conn.execute("SELECT data FROM entries ORDER BY idx")
                    ]

            try:
                results["postgres"] = run("postgres", ledger, pg_datas, repeat, None)
            finally:
                ledger.close()
        targets += results["postgres"]["targets"]
    else:
        pg_notice()

    results["targets"] = targets
    print_targets(targets)
    write_json(NAME, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
