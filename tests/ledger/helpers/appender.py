"""Append events to a ledger from a separate process and acknowledge each one on stdout.

Run by the crash and concurrency tests (never collected by pytest)::

    python appender.py --home H --db URL --tag T [--count N] [--seed S] [--batch-size B]
                       [--batch-prob P] [--checkpoint-every C] [--wait-go]

Protocol on stdout, one line each, flushed at once:

    ready                         the ledger is open (after ``go`` on stdin when --wait-go)
    ack INDEX ID BATCH            printed only AFTER ``append``/``append_batch`` returned
    ckpt SIZE                     a checkpoint of that size was stored
    done                          --count events were appended; exit 0

BATCH numbers the append call that wrote the event, so the test can check that one batch
occupies consecutive indices. Without --count the loop runs until the process is killed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

from immutrail.ledger.event import Event
from immutrail.ledger.home import open_ledger


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--db", default=None)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--batch-prob", type=float, default=0.3)
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--wait-go", action="store_true")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    out = sys.stdout
    ledger = open_ledger(args.home, args.db)
    try:
        if args.wait_go:
            out.write("waiting\n")
            out.flush()
            if sys.stdin.readline().strip() != "go":
                return 2
        out.write("ready\n")
        out.flush()
        n = calls = 0
        since_checkpoint = 0
        while args.count is None or n < args.count:
            left = None if args.count is None else args.count - n
            size = 1
            if rng.random() < args.batch_prob:
                size = args.batch_size if left is None else min(args.batch_size, left)
            events = [
                Event.create(
                    "test.appended",
                    f"proc:{args.tag}",
                    f"item:{args.tag}:{n + i}",
                    {"tag": args.tag, "n": n + i, "note": "é✓" * rng.randint(0, 3)},
                )
                for i in range(size)
            ]
            if size == 1 and rng.random() < 0.5:
                appended = [ledger.append(events[0])]
            else:
                appended = ledger.append_batch(events)
            # Acknowledge only now: the append call has returned, so it is durable.
            out.write("".join(f"ack {a.index} {a.id} {calls}\n" for a in appended))
            out.flush()
            # Give the others a turn: appends are fast enough that, on a loaded machine, one
            # process could otherwise finish before the rest start and prove nothing about locks.
            time.sleep(0.001)
            n += size
            calls += 1
            since_checkpoint += size
            if args.checkpoint_every and since_checkpoint >= args.checkpoint_every:
                stored = ledger.checkpoint()
                out.write(f"ckpt {stored.size}\n")
                out.flush()
                since_checkpoint = 0
        out.write("done\n")
        out.flush()
    finally:
        ledger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
