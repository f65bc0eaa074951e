"""Invariant 1: an acknowledged event is never lost, even on kill -9.

A separate process (helpers/appender.py) appends single events and small batches in a loop, and
signs a checkpoint now and then; it prints each event's index and id only after ``append``
returned. The test kills it with SIGKILL at random moments, several rounds on the same ledger.
After every kill: each acknowledged id is stored at its acknowledged index, indices have no gaps,
nothing but the one append in flight was added unacknowledged, ``verify()`` is ok, and the next
round can append again. Power loss is the storage engine's promise (SQLite ``synchronous=FULL``,
PostgreSQL ``synchronous_commit=on``); a process kill is what a test can do for real.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from immutrail.ledger.event import Event, parse_entry
from immutrail.ledger.home import init_ledger, open_ledger
from immutrail.ledger.storage.interface import EntryFilter

HELPER = Path(__file__).parent / "helpers" / "appender.py"
BATCH = 5


@dataclass
class Round:
    tag: str
    acked: list[tuple[int, str]] = field(default_factory=list)  # (index, id), in ack order
    checkpoints: list[int] = field(default_factory=list)
    returncode: int | None = None


def kill_after(home: Path, db: str, tag: str, seed: int, delay_s: float, logs: Path) -> Round:
    """Start an appender, SIGKILL it ``delay_s`` after it is ready, return what it acknowledged."""
    err_path = logs / f"{tag}.stderr"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
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
                str(seed),
                "--batch-size",
                str(BATCH),
                "--batch-prob",
                "0.4",
                "--checkpoint-every",
                "20",
            ],
            stdout=subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdout is not None
    try:
        first = proc.stdout.readline()
        if first != b"ready\n":
            proc.wait(timeout=30)
            pytest.fail(f"appender {tag} did not start: {first!r} {err_path.read_text()}")
        time.sleep(delay_s)
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    result = Round(tag, returncode=proc.returncode)
    # Only complete lines count: a line cut short by the kill was never acknowledged.
    for line in rest.split(b"\n")[:-1]:
        word, *args = line.decode().split()
        if word == "ack":
            result.acked.append((int(args[0]), args[1]))
        elif word == "ckpt":
            result.checkpoints.append(int(args[0]))
    return result


def check_after_kill(home: Path, db: str, rounds: list[Round]) -> int:
    led = open_ledger(home, db)
    try:
        size = led.head().size
        rows = list(led.entries(EntryFilter()))
        assert [r.index for r in rows] == list(range(size)), "the stored indices have gaps"
        by_index = {r.index: r for r in rows}
        stored_checkpoints = {c.size for c in led.checkpoints()}
        for rnd in rounds:
            for index, event_id in rnd.acked:
                assert index in by_index, f"acknowledged entry {index} ({rnd.tag}) is lost"
                assert by_index[index].id == event_id, (
                    f"entry {index} holds {by_index[index].id}, but {event_id} was acknowledged"
                )
            # Unacknowledged but stored: at most the events of the one append in flight.
            mine = sorted(
                parse_entry(r.data).payload["n"] for r in rows if r.actor == f"proc:{rnd.tag}"
            )
            assert mine == list(range(len(mine))), f"{rnd.tag}: its events are not a prefix"
            assert len(rnd.acked) <= len(mine) <= len(rnd.acked) + BATCH, (rnd.tag, len(mine))
            assert set(rnd.checkpoints) <= stored_checkpoints, rnd.tag
        report = led.verify()
        assert report.ok, "\n".join(f"{p.where}: {p.message}" for p in report.problems)
        return size
    finally:
        led.close()


def kill_rounds(home: Path, db: str, logs: Path, seed: int, rounds: int) -> list[Round]:
    rng = random.Random(seed)
    done: list[Round] = []
    for number in range(rounds):
        delay = rng.uniform(0.02, 0.3)
        rnd = kill_after(home, db, f"r{number}", rng.randrange(1 << 30), delay, logs)
        assert rnd.returncode == -signal.SIGKILL, (
            f"round {number}: the appender exited by itself ({rnd.returncode}): "
            + (logs / f"r{number}.stderr").read_text()
        )
        done.append(rnd)
        check_after_kill(home, db, done)
    # The kills must have landed while appending, else this proved nothing.
    assert sum(len(r.acked) for r in done) >= rounds, [len(r.acked) for r in done]
    assert sum(1 for r in done if r.acked) >= rounds // 2
    # And the ledger still takes appends after the last kill.
    led = open_ledger(home, db)
    try:
        before = led.head().size
        assert led.append(Event.create("test.after", "user:tester", "x", {})).index == before
        assert led.verify().ok
    finally:
        led.close()
    return done


@pytest.mark.slow
def test_acknowledged_appends_survive_sigkill_sqlite(tmp_path: Path) -> None:
    home = tmp_path / "home"
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    init_ledger(home, db)[0].close()
    kill_rounds(home, db, tmp_path, seed=20260314, rounds=10)


@pytest.mark.slow
@pytest.mark.postgres
def test_acknowledged_appends_survive_sigkill_postgres(tmp_path: Path, pg_db: str) -> None:
    home = tmp_path / "home"
    init_ledger(home, pg_db)[0].close()
    kill_rounds(home, pg_db, tmp_path, seed=1402, rounds=8)
