"""`immutrail drift watch` as users run it (its own process), and the ledger read while it runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from immutrail.ledger.event import parse_entry
from immutrail.ledger.home import open_ledger
from immutrail.ledger.storage.interface import EntryFilter

Event = dict[str, Any]


class Watching:
    """``drift watch ENV --format json`` in a child process; its reports collected as they come."""

    def __init__(self, home: Path, *args: str, duration: float = 90.0) -> None:
        command = [
            sys.executable,
            "-m",
            "immutrail.cli.main",
            "drift",
            "watch",
            *args,
            "--duration",
            str(duration),
            "--home",
            str(home),
            "--format",
            "json",
        ]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.reports: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.reports.append(json.loads(line))

    def wait_for(
        self, condition: Callable[[dict[str, Any]], bool], timeout: float = 60.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for report in self.reports:
                    if condition(report):
                        return report
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no such report; got {self.reports}; stderr: {self.stop()}")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._reader.join(10)
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")

    def __enter__(self) -> Watching:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def events(home: Path, kind: str) -> list[Event]:
    with open_ledger(home) as ledger:
        rows = list(ledger.entries(EntryFilter(type=kind)))
    return [
        {"subject": e.subject, "actor": e.actor, "time": e.time, "index": r.index, **e.payload}
        for r, e in ((r, parse_entry(r.data)) for r in rows)
    ]


def wait_event(
    home: Path,
    kind: str,
    condition: Callable[[Event], bool],
    timeout: float = 30.0,
    watching: Watching | None = None,
) -> tuple[Event, float]:
    """The first ``kind`` event that meets ``condition``, and when it was seen (monotonic)."""
    deadline = time.monotonic() + timeout
    with open_ledger(home) as ledger:
        start = 0
        while time.monotonic() < deadline:
            for row in ledger.entries(EntryFilter(type=kind, start=start)):
                start = row.index + 1
                event = parse_entry(row.data)
                found = {"subject": event.subject, "time": event.time, **event.payload}
                if condition(found):
                    return found, time.monotonic()
            time.sleep(0.01)
    log = watching.stop() if watching is not None else ""
    raise AssertionError(f"no {kind} as wanted within {timeout} s: {events(home, kind)}; {log}")


def kinds(findings: Sequence[dict[str, Any]]) -> set[str]:
    return {f["kind"] for f in findings}
