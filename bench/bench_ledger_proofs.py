"""(b) Inclusion and consistency proof latency on a big ledger (default 1,000,000 entries).

The SQLite ledger is built once with ``append_batch`` and cached in
``bench/results/cache/ledger-sqlite-<size>/``, shared with bench_ledger_verify.py (``--rebuild`` to
rebuild it). Then, warm, on one connection: ``--proofs`` random inclusion proofs
(``Ledger.inclusion_proof(index)`` against the current size) and as many random consistency proofs
(``Ledger.consistency_proof(old, new)``, ``1<=old<new<=size``), each timed alone: median, p90, p99.

Baseline in the same run: a primary-key lookup of one entry row by ``idx`` in the same database
(raw ``sqlite3``, ``SELECT … FROM entries WHERE idx = ?``), since a proof is a handful of such
lookups; the ratio proof latency / point lookup latency is printed. The number of SQL statements
and stored hashes each proof reads is counted in a separate, untimed pass. A sample of proofs is
verified with ``merkle.verify_*`` (untimed) so a fast wrong answer cannot pass.

PostgreSQL (under ``scripts/with-postgres.sh``) builds its own ledger (``--pg-size``, default
1,000,000; a fresh server each run, so no cache) and does the same with ``psycopg``.

    .venv/bin/python bench/bench_ledger_proofs.py [--quick] [--size N] [--rebuild]
    scripts/with-postgres.sh .venv/bin/python bench/bench_ledger_proofs.py [--pg-size N]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from _common import (
    CACHE,
    event_specs,
    header,
    latency_summary,
    machine_info,
    new_ledger,
    pg_database,
    pg_notice,
    pg_url,
    phase_peak_rss_mb,
    print_table,
    print_targets,
    reset_peak_rss,
    scratch_dir,
    target,
    write_json,
)

NAME = "ledger_proofs"
TARGET_MS = 1.0
BUILD_CHUNK = 10_000


def build(ledger: Any, size: int) -> dict[str, Any]:
    """Append ``size`` events in chunks; event construction is timed apart from appending."""
    from immutrail.ledger.event import Event

    t_create = t_append = 0.0
    done = ledger.head().size
    specs = event_specs(size, seed=7)
    for _ in range(done):  # resume an interrupted build deterministically
        next(specs)
    last_report = time.perf_counter()
    while done < size:
        take = min(BUILD_CHUNK, size - done)
        t0 = time.perf_counter()
        events = [Event.create(*next(specs)) for _ in range(take)]
        t1 = time.perf_counter()
        ledger.append_batch(events)
        t2 = time.perf_counter()
        t_create += t1 - t0
        t_append += t2 - t1
        done += take
        if t2 - last_report > 15:
            print(f"   ... {done:,}/{size:,} appended", flush=True)
            last_report = t2
    return {
        "entries": size,
        "create_seconds": t_create,
        "append_seconds": t_append,
        "append_per_s": size / t_append if t_append else None,
        "batch": BUILD_CHUNK,
    }


def cached_sqlite_ledger(size: int, rebuild: bool) -> tuple[Any, Path, dict[str, Any] | None]:
    from immutrail.ledger.home import open_ledger

    home = CACHE / f"ledger-sqlite-{size}"
    db = home / "ledger.db"
    url = f"sqlite:///{db}"
    if home.exists() and not rebuild:
        try:
            ledger = open_ledger(home, url)
            if ledger.head().size == size:
                print(f"   reusing the cached {size:,}-entry ledger in {home}", flush=True)
                return ledger, db, None
            ledger.close()
        except Exception as exc:
            print(f"   cached ledger unusable ({exc}); rebuilding", flush=True)
    shutil.rmtree(home, ignore_errors=True)
    print(f"   building a {size:,}-entry SQLite ledger in {home} ...", flush=True)
    ledger = new_ledger(home, url)
    reset_peak_rss()
    info = build(ledger, size)
    info["peak_rss_mb"] = phase_peak_rss_mb()
    ledger.checkpoint()  # one signed checkpoint, so verification checks a signature and a root
    return ledger, db, info


def instrument(
    ledger: Any, index_pairs: Sequence[int], cons_pairs: Sequence[tuple[int, int]]
) -> dict[str, Any]:
    """Count storage calls (a separate head() read, and head_and_nodes(): one statement, i.e.
    one round trip, each) and hashes read per proof."""
    store = ledger.store
    orig_both, orig_head = store.head_and_nodes, store.head
    counts = {"nodes_calls": 0, "keys": 0, "leaf_keys": 0, "head_calls": 0}

    def head_and_nodes(keys: Any) -> Any:
        counts["nodes_calls"] += 1
        counts["keys"] += len(keys)
        counts["leaf_keys"] += sum(1 for lv, _ in keys if lv == 0)
        return orig_both(keys)

    def head() -> Any:
        counts["head_calls"] += 1
        return orig_head()

    def measure(calls: Callable[[], None], n: int) -> dict[str, float]:
        for k in counts:
            counts[k] = 0
        calls()
        return {k: v / n for k, v in counts.items()}

    store.head_and_nodes, store.head = head_and_nodes, head
    try:
        inc = measure(lambda: [ledger.inclusion_proof(i) for i in index_pairs], len(index_pairs))
        con = measure(
            lambda: [ledger.consistency_proof(a, b) for a, b in cons_pairs], len(cons_pairs)
        )
    finally:
        store.head_and_nodes, store.head = orig_both, orig_head
    return {"inclusion": inc, "consistency": con}


def check_sample(ledger: Any, size: int, rnd: random.Random) -> int:
    from immutrail.ledger import merkle

    checked = 0
    for _ in range(50):
        i = rnd.randrange(size)
        p = ledger.inclusion_proof(i)
        merkle.verify_inclusion(p.index, p.size, p.leaf_hash, p.proof, p.root)
        a = rnd.randrange(1, size)
        b = rnd.randrange(a + 1, size + 1)
        c = ledger.consistency_proof(a, b)
        merkle.verify_consistency(c.old_size, c.new_size, c.old_root, c.new_root, c.proof)
        checked += 2
    return checked


def time_each(fn: Callable[[Any], Any], args: Sequence[Any]) -> list[float]:
    out = []
    for a in args:
        t0 = time.perf_counter()
        fn(a)
        out.append(time.perf_counter() - t0)
    return out


def measure(
    backend: str, ledger: Any, point_lookup: Callable[[int], Any], size: int, proofs: int, seed: int
) -> dict[str, Any]:
    rnd = random.Random(seed)
    checked = check_sample(ledger, size, rnd)
    indices = [rnd.randrange(size) for _ in range(proofs)]
    pairs = []
    for _ in range(proofs):
        a = rnd.randrange(1, size)
        pairs.append((a, rnd.randrange(a + 1, size + 1)))
    lookups = [rnd.randrange(size) for _ in range(proofs)]
    # warm up: page cache, statement cache
    for i in range(min(200, proofs)):
        ledger.inclusion_proof(indices[i])
        ledger.consistency_proof(*pairs[i])
        point_lookup(lookups[i])

    reset_peak_rss()
    lat_lookup = time_each(point_lookup, lookups)
    lat_inc = time_each(ledger.inclusion_proof, indices)
    lat_con = time_each(lambda ab: ledger.consistency_proof(*ab), pairs)
    peak = phase_peak_rss_mb()
    counts = instrument(ledger, indices[:200], pairs[:200])

    res = {
        "size": size,
        "point_lookup": latency_summary(lat_lookup),
        "inclusion": latency_summary(lat_inc),
        "consistency": latency_summary(lat_con),
        "reads_per_proof": counts,
        "verified_sample": checked,
        "peak_rss_mb": peak,
    }
    base = res["point_lookup"]["median_ms"]
    rows = []
    for label, key in (
        ("point lookup of one entry row (baseline)", "point_lookup"),
        ("Ledger.inclusion_proof(index)", "inclusion"),
        ("Ledger.consistency_proof(old, new)", "consistency"),
    ):
        r = res[key]
        rows.append(
            (label, r["median_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"], r["median_ms"] / base)
        )
    print_table(
        f"{backend}: latency at {size:,} entries, {proofs:,} random requests each (warm)",
        ("request", "median ms", "p90 ms", "p99 ms", "max ms", "x lookup"),
        rows,
    )
    print_table(
        f"{backend}: reads per proof (untimed pass over 200 requests)",
        (
            "proof",
            "separate head() reads",
            "head_and_nodes() statements",
            "hashes fetched",
            "of them leaves",
        ),
        [
            (k, v["head_calls"], v["nodes_calls"], v["keys"], v["leaf_keys"])
            for k, v in counts.items()
        ],
    )
    res["targets"] = [
        target(
            f"{backend}: inclusion proof median at {size:,}",
            res["inclusion"]["median_ms"],
            TARGET_MS,
            higher_is_better=False,
            unit="ms",
        ),
        target(
            f"{backend}: consistency proof median at {size:,}",
            res["consistency"]["median_ms"],
            TARGET_MS,
            higher_is_better=False,
            unit="ms",
        ),
    ]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--size", type=int, help="SQLite ledger size (default 1,000,000)")
    ap.add_argument("--pg-size", type=int, help="PostgreSQL ledger size (default 1,000,000)")
    ap.add_argument("--proofs", type=int, help="random proofs of each kind (default 2,000)")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the cached SQLite ledger")
    ap.add_argument("--no-pg", action="store_true", help="skip PostgreSQL even if available")
    args = ap.parse_args(argv)
    size = args.size or (20_000 if args.quick else 1_000_000)
    pg_size = args.pg_size or (20_000 if args.quick else 1_000_000)
    proofs = args.proofs or (300 if args.quick else 2_000)
    header("bench_ledger_proofs", "inclusion / consistency proof latency", args.quick)
    url_pg = None if args.no_pg else pg_url()

    results: dict[str, Any] = {
        "name": NAME,
        "quick": args.quick,
        "machine": machine_info(url_pg),
        "params": {"size": size, "pg_size": pg_size, "proofs": proofs},
    }
    ledger, db, built = cached_sqlite_ledger(size, args.rebuild)
    if built:
        print(
            f"   built in {built['create_seconds'] + built['append_seconds']:.1f} s: "
            f"Event.create {built['create_seconds']:.1f} s, append_batch "
            f"{built['append_seconds']:.1f} s ({built['append_per_s']:,.0f} events/s in "
            f"batches of {built['batch']:,}), peak RSS {built['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    results["sqlite_build"] = built or {"cached": True}
    results["sqlite_db_mb"] = db.stat().st_size / 1e6
    raw = sqlite3.connect(f"file:{db}?mode=ro", uri=True)

    def sqlite_lookup(i: int) -> Any:
        return raw.execute(
            "SELECT idx, id, type, actor, subject, time_us, data, leaf_hash "
            "FROM entries WHERE idx = ?",
            (i,),
        ).fetchone()

    try:
        results["sqlite"] = measure("sqlite", ledger, sqlite_lookup, size, proofs, seed=11)
    finally:
        raw.close()
        ledger.close()
    targets = list(results["sqlite"]["targets"])

    if url_pg:
        import psycopg

        with scratch_dir("proofs-pg") as d, pg_database(url_pg, "proofs") as url:
            print(f"   building a {pg_size:,}-entry PostgreSQL ledger ...", flush=True)
            ledger = new_ledger(d / "home", url)
            reset_peak_rss()
            info = build(ledger, pg_size)
            info["peak_rss_mb"] = phase_peak_rss_mb()
            print(
                f"   built in {info['create_seconds'] + info['append_seconds']:.1f} s: "
                f"append_batch {info['append_seconds']:.1f} s "
                f"({info['append_per_s']:,.0f} events/s)",
                flush=True,
            )
            results["postgres_build"] = info
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")

                def pg_lookup(i: int) -> Any:
                    return conn.execute(
                        "SELECT idx, id, type, actor, subject, time_us, data, leaf_hash "
                        "FROM entries WHERE idx = %s",
                        (i,),
                    ).fetchone()

                try:
                    results["postgres"] = measure(
                        "postgres", ledger, pg_lookup, pg_size, proofs, seed=13
                    )
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
