"""Concurrent appenders: many processes, one ledger, one gap-free sequence.

Eight processes (helpers/appender.py) open the same ledger, wait for a common start signal, then
each appends 200 events as a random mix of single appends and batches of 10, signing a checkpoint
every 50 events. Afterwards the ledger holds exactly the 1600 events at indices 0..1599, each
process's ids exactly once and at the index it was told, every batch on consecutive indices, and
``verify()`` is ok (tree, head and every concurrently signed checkpoint).
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict
from itertools import pairwise
from pathlib import Path

import pytest

from immutrail.ledger.home import init_ledger, open_ledger
from immutrail.ledger.storage.interface import EntryFilter

HELPER = Path(__file__).parent / "helpers" / "appender.py"
PROCESSES = 8
PER_PROCESS = 200
BATCH = 10


def run_concurrently(home: Path, db: str, logs: Path) -> dict[str, list[tuple[int, str, int]]]:
    """Start all appenders, release them together, return each one's (index, id, call) acks."""
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for number in range(PROCESSES):
            tag = f"p{number}"
            with (logs / f"{tag}.stderr").open("wb") as err:
                procs[tag] = subprocess.Popen(
                    [
                        sys.executable,
                        str(HELPER),
                        "--home",
                        str(home),
                        "--db",
                        db,
                        "--tag",
                        tag,
                        "--seed",
                        str(1000 + number),
                        "--count",
                        str(PER_PROCESS),
                        "--batch-size",
                        str(BATCH),
                        "--batch-prob",
                        "0.1",
                        "--checkpoint-every",
                        "50",
                        "--wait-go",
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                )
        for tag, proc in procs.items():
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line == b"waiting\n", (tag, line, (logs / f"{tag}.stderr").read_text())
        for proc in procs.values():  # all are open and waiting: release them together
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        acks: dict[str, list[tuple[int, str, int]]] = {}
        for tag, proc in procs.items():
            out, _ = proc.communicate(timeout=240)
            assert proc.returncode == 0, (tag, (logs / f"{tag}.stderr").read_text())
            lines = out.decode().splitlines()
            assert lines[0] == "ready" and lines[-1] == "done", (tag, lines[:2], lines[-2:])
            acks[tag] = [
                (int(parts[1]), parts[2], int(parts[3]))
                for parts in (line.split() for line in lines)
                if parts[0] == "ack"
            ]
        return acks
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def check_ledger(home: Path, db: str, acks: dict[str, list[tuple[int, str, int]]]) -> None:
    total = PROCESSES * PER_PROCESS
    for tag, mine in acks.items():
        assert len(mine) == PER_PROCESS, (tag, len(mine))
        batches: dict[int, list[int]] = defaultdict(list)
        for index, _, call in mine:
            batches[call].append(index)
        assert any(len(b) == BATCH for b in batches.values()), f"{tag} appended no batch"
        assert any(len(b) == 1 for b in batches.values()), f"{tag} appended no single event"
        for call, indices in batches.items():  # a batch is one transaction: no one cuts in
            assert indices == list(range(indices[0], indices[0] + len(indices))), (tag, call)
    acked = {event_id: (tag, index) for tag, mine in acks.items() for index, event_id, _ in mine}
    assert len(acked) == total, "two appenders were acknowledged the same event id"
    acked_indices = Counter(index for mine in acks.values() for index, _, _ in mine)
    assert sorted(acked_indices) == list(range(total)), "an index was handed out twice or skipped"

    led = open_ledger(home, db)
    try:
        assert led.head().size == total
        rows = list(led.entries(EntryFilter()))
        assert [r.index for r in rows] == list(range(total))
        stored = Counter(r.id for r in rows)
        assert set(stored) == set(acked) and max(stored.values()) == 1
        for r in rows:
            tag, index = acked[r.id]
            assert r.index == index, f"{r.id} was acknowledged at {index}, stored at {r.index}"
            assert r.actor == f"proc:{tag}"
        # The appenders really ran at the same time (else this proved nothing about locking).
        switches = sum(1 for a, b in pairwise(rows) if a.actor != b.actor)
        assert switches > 2 * PROCESSES, f"appends barely interleaved ({switches} switches)"
        assert len(led.checkpoints()) >= 1
        report = led.verify()
        assert report.ok, "\n".join(f"{p.where}: {p.message}" for p in report.problems)
        assert (report.entries, report.checkpoints) == (total, len(led.checkpoints()))
    finally:
        led.close()


@pytest.mark.slow
def test_concurrent_appenders_sqlite(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    init_ledger(home, db)[0].close()
    check_ledger(home, db, run_concurrently(home, db, tmp_path))


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_appenders_postgres(tmp_path: Path, pg_db: str) -> None:
    home = tmp_path / "home"
    init_ledger(home, pg_db)[0].close()
    check_ledger(home, pg_db, run_concurrently(home, pg_db, tmp_path))
