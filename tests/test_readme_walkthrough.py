"""The README's by-hand walkthrough of the demo runs as it stands, command by command.

The ```sh block under "The demo's story, by hand" is run with bash (-e: a step that fails
stops it) from a scratch folder holding a link to examples/, with the virtualenv's bin on PATH,
free loopback ports and an isolated git identity. Its outcomes are then checked in the home it
made: v1 refused, v2 running and approved by both reviewers, the drift healed, the bundle
verified, the report written, every actor a principal of the cast.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from immutrail.ledger.event import parse_entry
from immutrail.ledger.home import open_ledger
from immutrail.ledger.storage.interface import EntryFilter

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
CAST = {"admin", "ci", "alice", "bob", "release", "dana", "ops", "audra"}


def walkthrough() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("## The demo's story, by hand", 1)[1]
    found = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert found, "the README lost its walkthrough block"
    return found.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stop_instances(home: Path) -> None:
    from immutrail.demo import stop_everything

    if home.exists():
        stop_everything(home)


@pytest.mark.timeout(900)
def test_the_readme_walkthrough_runs_step_by_step(tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    script = tmp_path / "walkthrough.sh"
    script.write_text("set -euo pipefail\n" + walkthrough(), encoding="utf-8")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("IMMUTRAIL_") and key != "SOURCE_DATE_EPOCH"
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}",
        PORT=str(free_port()),
        API_PORT=str(free_port()),
        GIT_CONFIG_GLOBAL=str(tmp_path / "no-gitconfig"),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Walker",
        GIT_AUTHOR_EMAIL="walker@example.org",
        GIT_COMMITTER_NAME="Walker",
        GIT_COMMITTER_EMAIL="walker@example.org",
    )
    home = tmp_path / "my-demo" / "home"
    try:
        done = subprocess.run(
            ["bash", str(script)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=840,
            check=False,
        )
    finally:
        stop_instances(home)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "refused (exit 1), as it should be" in out
    assert "hello v2 greeting=hi" in out
    assert out.count("identical (2 instance(s) in prod at") == 2  # both bundles re-derived
    assert (tmp_path / "my-demo" / "soc2-report.html").stat().st_size > 10_000
    with open_ledger(home) as ledger:
        events = [parse_entry(row.data) for row in ledger.entries(EntryFilter())]
    assert {e.actor for e in events} <= CAST
    decided = [e for e in events if e.type == "promotion.decided"]
    assert [e.payload.get("allowed") for e in decided] == [False, True]
    approvals = {e.actor for e in events if e.type == "image.approved"}
    assert approvals == {"alice", "bob"}
    detected = [e for e in events if e.type == "drift.detected"]
    assert detected and any(e.type == "drift.remediated" for e in events)
