"""Measure evidence bundles on a realistic ledger: size, build time, verification time.

    .venv/bin/python tests/audit/measure.py [FILLER_EVENTS]

The history of conftest.World (two images through the real gate, deployments, drift, chaos,
an override), then FILLER_EVENTS (default 200,000) of other services' deployments in other
environments, appended in batches as the engine would record them, and more prod deployments
of v2 after the audited moment. Prints one line per measurement.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

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


def timed(label: str, action):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = action()
    print(f"{label}: {time.perf_counter() - started:.3f} s")
    return result


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        os.environ.update(
            GIT_CONFIG_GLOBAL=str(root / "no-gitconfig"),
            GIT_CONFIG_NOSYSTEM="1",
            GIT_AUTHOR_NAME="Test",
            GIT_AUTHOR_EMAIL="test@example.org",
            GIT_COMMITTER_NAME="Test",
            GIT_COMMITTER_EMAIL="test@example.org",
            IMMUTRAIL_ACTOR="user:test",
        )
        world = timed("the World history through the real CLI", lambda: make_world(root))
        with open_ledger(world.home) as ledger:
            events = filler(count)
            for start in range(0, len(events), 20_000):
                ledger.append_batch(events[start : start + 20_000])
            fleet = Fleet(ledger, Store.for_home(world.home))
            fleet.running["prod/hello"] = [(i, world.v2) for i in world.heal.created]
            for _ in range(20):  # later prod deployments: the audited instances are long gone
                fleet.deploy("prod", "hello", "user:deployer-2")
            size = ledger.head().size
            print(f"ledger: {size} entries")
            store = Store.for_home(world.home)
            timed("checkpoint", ledger.checkpoint)
            queries: list[tuple[str, Query]] = [
                ("at (prod, between)", at_query(world.between, "prod")),
                ("trace (v1 digest)", trace_query(world.v1)),
                ("changes (prod, whole test)", changes_query("prod", world.before_any, world.end)),
            ]
            for label, query in queries:
                answer = timed(
                    f"query {label}", lambda q=query: run_query(q, LedgerSource(ledger, store))
                )
                built = timed(
                    f"build bundle {label}", lambda q=query: build_bundle(ledger, store, q)
                )
                print(
                    f"  answer cites {len(answer.cited)} events; bundle {len(built.data)} "
                    f"bytes, {built.events} events, {built.attestations} attestations"
                )
                timed(
                    f"verify bundle {label}",
                    lambda b=built: verify_bundle(b.data, vkey=ledger.vkey).raise_for_problems(),
                )


if __name__ == "__main__":
    main()
