"""(audit) Point-in-time answers and evidence bundles on a big ledger, against a full scan.

The history of tests/audit/conftest.World (two images through the real gate, deployments, drift,
chaos, an override) is made through the real CLI; then FILLER events (default 200,000) of other
services' blue-green deployments in other environments are appended in batches, and twenty more
prod deployments after the audited moment. On that ledger, for `audit at`, `audit trace` and
`audit changes`: the query, the evidence bundle (size, build time) and its offline verification.

Baselines, measured in the same run on the same SQLite file:

* a full scan: every entry's bytes read from SQLite and parsed with orjson, which is what an
  answer costs without the ledger's type and subject indexes (query time / scan time);
* hashlib SHA-256 over the bundle's bytes (verification time / hashing time): what remains is
  the signature, proof and re-derivation work.

    .venv/bin/python bench/bench_audit.py [--quick]      # --quick: 20,000 filler events
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from _common import ROOT, header, machine_info, print_table, scratch_dir, write_json

sys.path.insert(0, str(ROOT / "tests"))

from audit.conftest import make_world
from audit.fleet import Fleet
from immutrail.artifacts.store import Store
from immutrail.audit.bundle import build_bundle
from immutrail.audit.queries import (
    Query,
    at_query,
    changes_query,
    run_query,
    trace_query,
)
from immutrail.audit.reading import LedgerSource
from immutrail.audit.verify import verify_bundle
from immutrail.ledger.event import Event, new_event_id
from immutrail.ledger.home import open_ledger

REPEAT = 3


def filler(count: int) -> list[Event]:
    """Blue-green deployments of 50 services in staging and dev: 8 events each."""
    events: list[Event] = []
    running: dict[str, list[str]] = {}
    number = 0
    while len(events) < count:
        environment = ("staging", "dev")[number % 2]
        service = f"svc-{number % 50}"
        where = f"{environment}/{service}"
        digest = "sha256:" + f"{number:064x}"
        deployment = new_event_id()
        base = {"environment": environment, "service": service}
        events.append(
            Event.create(
                "deployment.started",
                "user:ci",
                where,
                {
                    **base,
                    "deployment": deployment,
                    "digest": digest,
                    "strategy": "blue-green",
                    "replicas": 2,
                    "runtime": "local",
                    "config_digest": digest,
                    "promotion_index": 0,
                    "previous_digests": [],
                },
                id=deployment,
            )
        )
        new = [f"local-{number:08x}{k}" for k in range(2)]
        for instance in new:
            events.append(
                Event.create(
                    "instance.created",
                    "user:ci",
                    instance,
                    {
                        **base,
                        "deployment": deployment,
                        "digest": digest,
                        "runtime": "local",
                        "port": 20000,
                        "config_digest": digest,
                    },
                )
            )
        events.append(
            Event.create(
                "traffic.switched",
                "user:ci",
                where,
                {
                    **base,
                    "deployment": deployment,
                    "endpoint_port": 1,
                    "backends": [{"instance": i, "weight": 1} for i in new],
                },
            )
        )
        for instance in running.get(where, []):
            events.append(
                Event.create(
                    "instance.destroyed",
                    "user:ci",
                    instance,
                    {
                        **base,
                        "deployment": deployment,
                        "digest": digest,
                        "runtime": "local",
                        "reason": "replaced",
                    },
                )
            )
        events.append(
            Event.create(
                "deployment.completed",
                "user:ci",
                where,
                {**base, "deployment": deployment, "digest": digest},
            )
        )
        running[where] = new
        number += 1
    return events[:count]


def median_time(action: Callable[[], Any]) -> tuple[float, Any]:
    """Median wall time of REPEAT runs, and the last result."""
    times: list[float] = []
    result: Any = None
    for _ in range(REPEAT):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def full_scan(db_file: Path) -> int:
    """Read and parse every entry: the cost of answering without an index."""
    with sqlite3.connect(db_file) as conn:
        count = 0
        for (data,) in conn.execute("SELECT data FROM entries ORDER BY idx"):
            orjson.loads(data)
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 20_000 if args.quick else 200_000
    header("audit", f"queries and evidence bundles over {count:,} filler events", args.quick)
    with scratch_dir("audit") as root:
        os.environ.update(
            GIT_CONFIG_GLOBAL=str(root / "no-gitconfig"),
            GIT_CONFIG_NOSYSTEM="1",
            GIT_AUTHOR_NAME="Bench",
            GIT_AUTHOR_EMAIL="bench@example.org",
            GIT_COMMITTER_NAME="Bench",
            GIT_COMMITTER_EMAIL="bench@example.org",
            IMMUTRAIL_ACTOR="user:bench",
        )
        world = make_world(root)
        with open_ledger(world.home) as ledger:
            events = filler(count)
            for start in range(0, len(events), 20_000):
                ledger.append_batch(events[start : start + 20_000])
            fleet = Fleet(ledger, Store.for_home(world.home))
            fleet.running["prod/hello"] = [(i, world.v2) for i in world.heal.created]
            for _ in range(20):  # later prod deployments: the audited instances are long gone
                fleet.deploy("prod", "hello", "user:deployer-2")
            ledger.checkpoint()
            size = ledger.head().size
            store = Store.for_home(world.home)
            scan_s, scanned = median_time(lambda: full_scan(world.home / "ledger.db"))
            assert scanned == size, (scanned, size)
            rows: list[tuple[Any, ...]] = []
            results: dict[str, Any] = {}
            queries: list[tuple[str, Query]] = [
                ("at", at_query(world.between, "prod")),
                ("trace", trace_query(world.v1)),
                ("changes", changes_query("prod", world.before_any, world.end)),
            ]
            for label, query in queries:
                query_s, answer = median_time(
                    lambda q=query: run_query(q, LedgerSource(ledger, store))
                )
                build_s, built = median_time(lambda q=query: build_bundle(ledger, store, q))
                verify_s, _ = median_time(
                    lambda b=built: verify_bundle(b.data, vkey=ledger.vkey).raise_for_problems()
                )
                hash_s, _ = median_time(lambda b=built: hashlib.sha256(b.data).digest())
                results[label] = {
                    "query_s": query_s,
                    "query_over_full_scan": query_s / scan_s,
                    "cited_events": len(answer.cited),
                    "bundle_bytes": len(built.data),
                    "bundle_events": built.events,
                    "bundle_attestations": built.attestations,
                    "build_s": build_s,
                    "verify_s": verify_s,
                    "verify_over_sha256": verify_s / hash_s,
                }
                rows.append(
                    (
                        label,
                        f"{query_s:.3f}",
                        f"{query_s / scan_s:.3f}",
                        f"{len(built.data):,}",
                        f"{build_s:.3f}",
                        f"{verify_s:.4f}",
                        f"{verify_s / hash_s:,.0f}",
                    )
                )
            print_table(
                f"ledger of {size:,} entries; full scan {scan_s:.2f} s",
                (
                    "query",
                    "answer s",
                    "/ full scan",
                    "bundle bytes",
                    "bundle s",
                    "verify s",
                    "verify / sha256",
                ),
                rows,
            )
            write_json(
                "audit",
                {
                    "machine": machine_info(),
                    "ledger_entries": size,
                    "full_scan_s": scan_s,
                    "queries": results,
                },
            )


if __name__ == "__main__":
    main()
