"""Deploy by replacement, end to end on the local runtime, through the CLI.

Real images (the example hello service) promoted through the gate and signed; real instances
(host processes); the real endpoint process; continuous HTTP load on the endpoint while
instances are replaced, with every request checked.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from artifacts.conftest import git, make_repo
from immutrail import demo
from immutrail.artifacts.builder import build
from immutrail.artifacts.store import Store
from immutrail.deploy.endpoint import Endpoint, list_endpoints
from immutrail.deploy.local import LocalRuntime
from immutrail.ledger.event import parse_entry
from immutrail.ledger.home import open_ledger
from immutrail.ledger.storage.interface import EntryFilter

from .conftest import HELLO_DEFINITION, build_hello, free_port
from .test_admission import PERMISSIVE, cli

DECLARATION = """\
replicas: {replicas}
strategy: {strategy}
runtime: local
port: {port}
env: {{GREETING: {greeting}}}
health_timeout: 30s
canary: {{steps: [25, 100], step_seconds: 0.5, max_error_rate: 0.05}}
"""


@dataclass
class Load(demo.Load):
    """The demo's steady load, with the longer bounds a test under heavy load needs."""

    seconds: float = 120.0
    requests: int = 100_000
    pause: float = 0.002


class Env:
    """A home with keys, a permissive prod policy, hello v1 and v2 built and signed."""

    def __init__(self, home: Path, tmp_path: Path) -> None:
        self.home, self.tmp = home, tmp_path
        for principal in ("ops", "rel"):
            cli(home, "keys", "generate", "--principal", principal, "--no-passphrase")
        policy = tmp_path / "policy.yaml"
        policy.write_text(PERMISSIVE)
        cli(home, "policy", "set", "prod", str(policy), "--principal", "ops")
        self.v1 = self.build("1")
        self.v2 = self.build("2")
        self.port = free_port()

    def build(self, version: str) -> str:
        digest = build_hello(self.home, self.tmp, version)
        cli(self.home, "sign", digest, "--principal", "rel")
        return digest

    def build_broken(self) -> str:
        """The hello service's image whose program exits at once: it never becomes healthy."""
        repo = make_repo(
            self.tmp / "broken",
            {"image.yaml": HELLO_DEFINITION, "app/server.py": "raise SystemExit(3)\n"},
        )
        digest = build(repo / "image.yaml", self.home, tag="hello:broken").digest
        cli(self.home, "sign", digest, "--principal", "rel")
        return digest

    def declare(
        self, replicas: int = 2, strategy: str = "blue-green", greeting: str = "hi", **extra: str
    ) -> dict[str, Any]:
        path = self.tmp / "hello.yaml"
        text = DECLARATION.format(
            replicas=replicas, strategy=strategy, port=self.port, greeting=greeting
        )
        path.write_text(text + "".join(f"{k}: {v}\n" for k, v in extra.items()))
        return cli(self.home, "env", "declare", "prod", "hello", str(path))

    def promote(self, digest: str) -> None:
        assert cli(self.home, "promote", digest, "--to", "prod")["allowed"]

    def deploy(self, *args: str, code: int = 0) -> dict[str, Any]:
        return cli(self.home, "deploy", "prod", *args, code=code)

    def instances(self) -> list[Any]:
        return LocalRuntime(self.home, Store.for_home(self.home)).list("prod")

    def events(self, kind: str) -> list[dict[str, Any]]:
        with open_ledger(self.home) as ledger:
            rows = list(ledger.entries(EntryFilter(type=kind)))
        return [
            {"subject": e.subject, "actor": e.actor, **e.payload}
            for e in (parse_entry(r.data) for r in rows)
        ]

    def of(self, kind: str, deployment: str) -> list[dict[str, Any]]:
        return [e for e in self.events(kind) if e.get("deployment") == deployment]

    def answer(self) -> str:
        return Load.get(self.port)


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


def test_blue_green_deploy_and_rollback_under_load_lose_no_request(env: Env) -> None:
    env.declare(replicas=2)
    env.promote(env.v1)
    first = env.deploy()["services"][0]
    assert first["status"] == "completed" and first["strategy"] == "blue-green"
    assert len(first["created"]) == 2 and first["destroyed"] == []
    assert env.answer() == "hello v1 greeting=hi"
    assert env.deploy()["services"][0]["status"] == "unchanged"

    env.promote(env.v2)
    with Load(env.port) as load:
        time.sleep(0.3)
        second = env.deploy()["services"][0]
        time.sleep(0.3)
    assert load.failures == [] and load.answers["v1"] > 0 and load.answers["v2"] > 0
    assert sorted(second["destroyed"]) == sorted(first["created"])
    running = env.instances()
    assert {i.id for i in running} == set(second["created"])
    assert {i.digest for i in running} == {env.v2}
    assert env.answer() == "hello v2 greeting=hi"

    # Rollback: a deployment of the previous digest, new instances, under load.
    with Load(env.port) as load:
        time.sleep(0.3)
        back = cli(env.home, "rollback", "prod", "--service", "hello", "--reason", "INC-7")
        time.sleep(0.3)
    assert load.failures == [] and load.answers["v1"] > 0
    rolled = back["services"][0]
    assert rolled["digest"] == env.v1 and len(rolled["created"]) == 2
    assert not set(rolled["created"]) & set(first["created"])  # new instances, never reused
    assert {i.digest for i in env.instances()} == {env.v1}
    assert env.answer() == "hello v1 greeting=hi"

    # The ledger tells the story; every destroyed instance's logs were kept first.
    rollback_event = env.events("desired.rolled-back")[-1]
    assert rollback_event["to"] == env.v1 and rollback_event["from"] == env.v2
    assert rollback_event["automatic"] is False and rollback_event["reason"] == "INC-7"
    destroyed = env.events("instance.destroyed")
    assert {e["subject"] for e in destroyed} == set(first["created"]) | set(second["created"])
    assert {e["subject"] for e in env.events("instance.logs.kept")} >= {
        e["subject"] for e in destroyed
    }
    started = env.events("deployment.started")
    assert [e["digest"] for e in started] == [env.v1, env.v2, env.v1]
    assert len(env.events("deployment.completed")) == 3
    # ...and so does the desired-state repository: declaration, promotions, rollback.
    repository = env.home / "desired-state"
    subjects = git(repository, "log", "--format=%s").splitlines()
    assert subjects[0].startswith("roll back prod/hello to hello:1")
    assert subjects[-1].startswith("declare prod/hello: 2 x blue-green on local")
    state = json.loads((repository / "prod" / "hello.json").read_text())
    assert state["image"]["digest"] == env.v1 and state["declaration"]["replicas"] == 2


def test_rolling_update_of_configuration_loses_no_request(env: Env) -> None:
    env.declare(replicas=3, strategy="rolling")
    env.promote(env.v1)
    first = env.deploy()["services"][0]
    assert env.answer() == "hello v1 greeting=hi"
    # A configuration change is a new deployment: every instance is replaced.
    env.declare(replicas=3, strategy="rolling", greeting="salut")
    with Load(env.port) as load:
        time.sleep(0.3)
        second = env.deploy()["services"][0]
        time.sleep(0.3)
    assert load.failures == [], load.failures[:5]
    assert second["strategy"] == "rolling" and len(second["created"]) == 3
    assert sorted(second["destroyed"]) == sorted(first["created"])
    assert env.answer() == "hello v1 greeting=salut"
    # Never more than replicas + max_surge (1) instances in the endpoint at once.
    switches = [
        e for e in env.events("traffic.switched") if e["deployment"] == second["deployment"]
    ]
    assert switches and max(len(e["backends"]) for e in switches) <= 4


def test_canary_steps_then_completes(env: Env) -> None:
    env.declare(replicas=2, strategy="canary")
    env.promote(env.v1)
    env.deploy()
    env.promote(env.v2)
    with Load(env.port) as load:
        outcome = env.deploy()["services"][0]
    assert load.failures == []
    assert outcome["strategy"] == "canary" and outcome["status"] == "completed"
    steps = [
        e for e in env.events("deployment.canary.step") if e["deployment"] == outcome["deployment"]
    ]
    assert [s["percent"] for s in steps] == [25] and steps[0]["error_rate"] <= 0.05
    weights = [
        e["backends"]
        for e in env.events("traffic.switched")
        if e["deployment"] == outcome["deployment"]
    ]
    assert any(len(b) == 4 for b in weights)  # old and new served together at 25 %
    assert env.answer() == "hello v2 greeting=hi"


def test_failed_canary_is_undone_and_the_desired_state_rolled_back(env: Env) -> None:
    env.declare(replicas=2, strategy="canary")
    env.promote(env.v1)
    env.deploy()
    before = {i.id for i in env.instances()}
    broken = env.build_broken()
    env.promote(broken)
    result = env.deploy(code=1)
    assert result == {}
    assert {i.id for i in env.instances()} == before  # the old set never stopped serving
    assert env.answer() == "hello v1 greeting=hi"
    failed = env.events("deployment.failed")[-1]
    assert failed["digest"] == broken
    automatic = env.events("desired.rolled-back")[-1]
    assert automatic["automatic"] is True and automatic["to"] == env.v1
    assert env.deploy()["services"][0]["status"] == "unchanged"


def test_privacy_relevant_change_refuses_canary(env: Env, tmp_path: Path) -> None:
    env.declare(replicas=1, strategy="canary")
    env.promote(env.v1)
    env.deploy()
    # GREETING is privacy-relevant in this image: a new value must not be canaried.
    env.declare(replicas=1, strategy="canary", greeting="bonjour")
    result = env.deploy(code=1)
    assert result == {}
    refused = env.events("deployment.refused")[-1]
    assert refused["strategy"] == "canary" and "key GREETING" in refused["reason"]
    assert env.answer() == "hello v1 greeting=hi"
    outcome = env.deploy("--strategy", "blue-green")["services"][0]
    assert outcome["status"] == "completed"
    assert env.answer() == "hello v1 greeting=bonjour"


def test_chaos_kill_is_healed_by_the_reconciler(env: Env) -> None:
    env.declare(replicas=2)
    env.promote(env.v1)
    env.deploy()
    killed = cli(env.home, "chaos", "prod", "--terminate", "1", "--seed", "7")["terminated"]
    assert len(killed) == 1
    victim = killed[0]["id"]
    status = cli(env.home, "status", "prod")["services"][0]
    assert not status["converged"]
    assert {i["id"]: i["health"] for i in status["instances"]}[victim] == "exited"
    with Load(env.port) as load:
        healed = cli(env.home, "reconcile", "prod")
    assert load.failures == []
    outcome = healed["services"][0]
    assert outcome["status"] == "healed" and victim in outcome["destroyed"]
    assert len(outcome["created"]) == 1
    assert cli(env.home, "status", "prod")["services"][0]["converged"]
    # The ledger shows the kill, the detection and the replacement, in that order.
    chaos = env.events("chaos.terminated")[-1]
    lost = env.events("instance.lost")[-1]
    assert chaos["subject"] == lost["subject"] == victim
    assert lost["actor"] == "immutrail:reconciler"
    created = env.events("instance.created")[-1]
    assert (
        created["subject"] == outcome["created"][0] and created["actor"] == "immutrail:reconciler"
    )
    assert cli(env.home, "reconcile", "prod")["changed"] is False


def test_reconciler_removes_unknown_and_replaces_expired(env: Env) -> None:
    env.declare(replicas=1, max_lifetime="3s")
    env.promote(env.v1)
    original = env.deploy()["services"][0]["created"][0]
    # An instance with immutrail's labels that immutrail never recorded (someone else's).
    runtime = LocalRuntime(env.home, Store.for_home(env.home))
    from immutrail.deploy.runtime import InstanceSpec

    stranger = runtime.create(InstanceSpec("prod", "hello", env.v1, port=free_port()))
    time.sleep(3.2)
    outcome = cli(env.home, "reconcile", "prod")["services"][0]
    assert stranger.id in outcome["destroyed"] and original in outcome["destroyed"]
    reasons = {e["subject"]: e["reason"] for e in env.events("instance.destroyed")}
    assert "not in the ledger" in reasons[stranger.id]
    assert reasons[original] == "past its maximum lifetime"
    assert [i.id for i in env.instances()] == outcome["created"]


def test_killed_deploy_converges_on_rerun_without_orphans(env: Env) -> None:
    env.declare(replicas=3, strategy="rolling")
    env.promote(env.v1)
    env.deploy()
    env.promote(env.v2)
    command = [
        sys.executable,
        "-m",
        "immutrail.cli.main",
        "deploy",
        "prod",
        "--home",
        str(env.home),
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            started = [e for e in env.events("deployment.started") if e["digest"] == env.v2]
            if started and any(
                e["deployment"] == started[0]["deployment"] for e in env.events("instance.created")
            ):
                break
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)  # in the middle of the rolling update
    finally:
        process.wait(30)
    interrupted_run = started[0]["deployment"]
    assert not [e for e in env.events("deployment.completed") if e["deployment"] == interrupted_run]

    with Load(env.port) as load:
        rerun = env.deploy()["services"][0]
    assert load.failures == []
    assert rerun["status"] == "completed"
    interrupted = env.events("deployment.interrupted")
    assert [e["deployment"] for e in interrupted] == [interrupted_run]
    running = env.instances()
    assert len(running) == 3 and {i.digest for i in running} == {env.v2}
    # No orphan: every instance ever created is either running or recorded as destroyed.
    created = {e["subject"] for e in env.events("instance.created")}
    destroyed = {e["subject"] for e in env.events("instance.destroyed")}
    assert {i.id for i in running} <= created
    assert created - destroyed == {i.id for i in running}
    assert env.answer() == "hello v2 greeting=hi"
