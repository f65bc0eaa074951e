"""The auditor's answers over a real deployment history (engine, endpoint, local runtime).

v1 deployed, then replaced by v2 blue/green: `audit at` a moment between the two gives the v1
instances with who approved and deployed them; an evidence bundle of that answer verifies
offline in a process without home or database, and fails when one byte changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from artifacts.conftest import _isolated_git, home  # noqa: F401
from deploy.test_admission import cli
from deploy.test_deploy_e2e import Env
from immutrail.artifacts.store import Store
from immutrail.deploy.endpoint import Endpoint, list_endpoints
from immutrail.deploy.local import LocalRuntime


@pytest.fixture
def env(home: Path, tmp_path: Path) -> Iterator[Env]:
    made = Env(home, tmp_path)
    try:
        yield made
    finally:
        runtime = LocalRuntime(home, Store.for_home(home))
        for instance in runtime.list():
            runtime.destroy(instance.id)
        for info in list_endpoints(home):
            Endpoint(home, info.environment, info.service).stop()


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_what_ran_between_two_deployments_is_answered_and_proven(env: Env, tmp_path: Path) -> None:
    env.declare(replicas=2)
    env.promote(env.v1)
    first = env.deploy()["services"][0]["created"]
    time.sleep(0.05)
    between = now()
    time.sleep(0.05)
    env.promote(env.v2)
    second = env.deploy()["services"][0]["created"]

    answer = cli(env.home, "audit", "at", between, "--env", "prod")
    rows = answer["instances"]
    assert sorted(r["instance"] for r in rows) == sorted(first)
    assert {r["digest"] for r in rows} == {env.v1}
    later = cli(env.home, "audit", "at", now(), "--env", "prod")["instances"]
    assert sorted(r["instance"] for r in later) == sorted(second)

    bundle = tmp_path / "evidence.json"
    cli(env.home, "audit", "evidence", "--at", between, "--env", "prod", "-o", str(bundle))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IMMUTRAIL_")}
    command = [sys.executable, "-m", "immutrail.cli.main", "audit", "verify", str(bundle)]
    verified = subprocess.run(
        [*command, "--format", "json"], capture_output=True, text=True, env=clean, cwd=tmp_path
    )
    assert verified.returncode == 0, verified.stderr
    assert json.loads(verified.stdout)["ok"] is True

    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    bundle.write_bytes(bytes(data))
    broken = subprocess.run(command, capture_output=True, text=True, env=clean, cwd=tmp_path)
    assert broken.returncode in (1, 2), broken.stderr
