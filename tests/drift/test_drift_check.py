"""`immutrail drift check`: real local instances, tampered with for real, found and healed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.conftest import free_port
from deploy.test_admission import cli
from deploy.test_deploy_e2e import Env, Load
from immutrail.artifacts.store import Store
from immutrail.deploy.endpoint import Endpoint, list_endpoints
from immutrail.deploy.local import LocalRuntime
from immutrail.deploy.runtime import InstanceSpec


@pytest.fixture
def env(home: Path, tmp_path: Path) -> Iterator[Env]:
    made = Env(home, tmp_path)
    made.declare(replicas=2)
    made.promote(made.v1)
    made.deploy()
    try:
        yield made
    finally:
        runtime = LocalRuntime(home, Store.for_home(home))
        for instance in runtime.list():
            runtime.destroy(instance.id)
        for info in list_endpoints(home):
            Endpoint(home, info.environment, info.service).stop()


def kinds(report: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for finding in report["findings"]:
        out.setdefault(finding["kind"], set()).add(finding["instance"])
    return out


def test_clean_environment_has_no_findings_even_with_logs_in_scratch(env: Env) -> None:
    for instance in env.instances():
        scratch = env.home / "runtime" / "local" / instance.id / "scratch"
        (scratch / "app.log").write_text("written by the service\n")
    for _ in range(2):  # the second check takes the cheap path
        report = cli(env.home, "drift", "check", "prod")
        assert report["clean"] and report["instances_checked"] == 2
    assert env.events("drift.detected") == []
    # clean comparisons leave their trace too: regular change detection shows in the ledger
    checked = env.events("drift.checked")[-2:]
    assert [(c["subject"], c["instances_checked"], c["findings"], c["kinds"]) for c in checked] == [
        ("prod", 2, 0, [])
    ] * 2


def test_a_file_written_into_a_running_root_is_found_and_healed_by_replacement(env: Env) -> None:
    victim, other = env.instances()
    root = env.home / "runtime" / "local" / victim.id / "rootfs" / "opt" / "hello"
    root.chmod(0o755)
    (root / "backdoor.py").write_text("print('owned')\n")
    server = root / "server.py"
    server.chmod(0o644)
    server.write_text(server.read_text() + "# patched in place\n")

    found = cli(env.home, "drift", "check", "prod", code=1)
    filesystem = [f for f in found["findings"] if f["kind"] == "filesystem"]
    assert [f["instance"] for f in filesystem] == [victim.id]
    files = {f["path"]: f for f in filesystem[0]["evidence"]["files"]}
    assert files["/opt/hello/backdoor.py"]["change"] == "added"
    assert files["/opt/hello/backdoor.py"]["sha256"].startswith("sha256:")
    assert files["/opt/hello/server.py"]["change"] == "modified"
    assert filesystem[0]["severity"] == "critical" and "800-190" in filesystem[0]["control"]
    detected = env.events("drift.detected")[-1]
    assert detected["subject"] == victim.id and detected["findings"][0]["kind"] == "filesystem"
    checked = env.events("drift.checked")[-1]
    assert (checked["findings"], checked["kinds"]) == (len(found["findings"]), ["filesystem"])

    with Load(env.port) as load:
        healed = cli(env.home, "drift", "check", "prod", "--remediate")
    assert load.failures == []
    assert healed["remediated"]["hello"] == [victim.id]
    assert healed["after_remediation"]["clean"]
    running = {i.id for i in env.instances()}
    assert victim.id not in running and other.id in running and len(running) == 2
    remediated = env.events("drift.remediated")[-1]
    assert remediated["subject"] == victim.id and remediated["replaced_by"]
    # The evidence was kept before the instance was destroyed: findings and its logs.
    attached = [e for e in env.events("artifact.attached") if "drift-evidence" in str(e)]
    assert attached
    kept = {e["subject"] for e in env.events("instance.logs.kept")}
    assert victim.id in kept
    reasons = {e["subject"]: e["reason"] for e in env.events("instance.destroyed")}
    assert reasons[victim.id] == "drift: filesystem"


def test_changed_configuration_file_and_record_are_config_drift(env: Env, tmp_path: Path) -> None:
    (tmp_path / "app.toml").write_text("colour = 'blue'\n")
    env.declare(replicas=1, files="{/etc/hello/app.toml: app.toml}")
    env.deploy()
    [instance] = env.instances()
    config = env.home / "runtime" / "local" / instance.id / "config" / "etc" / "hello" / "app.toml"
    config.chmod(0o644)
    config.write_text("colour = 'red'\n")
    report = cli(env.home, "drift", "check", "prod", code=1)
    [finding] = [f for f in report["findings"] if f["kind"] == "config"]
    assert finding["evidence"]["path"] == "/etc/hello/app.toml"
    assert finding["evidence"]["expected"] != finding["evidence"]["observed"]


def test_unknown_instance_and_one_past_its_lifetime_are_found(env: Env) -> None:
    env.declare(replicas=2, max_lifetime="2s")
    runtime = LocalRuntime(env.home, Store.for_home(env.home))
    stranger = runtime.create(InstanceSpec("prod", "hello", env.v1, port=free_port()))
    time.sleep(2.2)
    report = cli(env.home, "drift", "check", "prod", code=1)
    found = kinds(report)
    assert found["unrecorded"] == {stranger.id}
    assert found["lifetime-exceeded"] >= {i.id for i in env.instances()} - {stranger.id}
    assert "replicas-surplus" in found  # three run, two are declared


def test_exited_instance_and_missing_replica(env: Env) -> None:
    killed = cli(env.home, "chaos", "prod", "--terminate", "1", "--seed", "1")["terminated"]
    report = cli(env.home, "drift", "check", "prod", code=1)
    found = kinds(report)
    assert found["exited"] == {killed[0]["id"]} and "replicas-missing" in found
