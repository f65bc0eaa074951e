"""`immutrail drift check` on the real Docker engine: exec sessions, containers recreated or
started behind immutrail's back, found with evidence and healed by replacement."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker  # type: ignore[import-untyped]
import pytest

from artifacts.services.dockerd import Engine
from deploy.conftest import free_port
from deploy.test_admission import PERMISSIVE, cli
from deploy.test_deploy_docker import SERVE, engine, web_image  # noqa: F401
from immutrail.deploy.endpoint import Endpoint, list_endpoints

pytestmark = [pytest.mark.timeout(300), pytest.mark.docker]


@pytest.fixture
def deployed(home: Path, tmp_path: Path, engine: Engine) -> Iterator[tuple[Any, list[str], str]]:
    client = docker.DockerClient(base_url=engine.host)
    for principal in ("ops", "rel"):
        cli(home, "keys", "generate", "--principal", principal, "--no-passphrase")
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE)
    cli(home, "policy", "set", "prod", str(policy), "--principal", "ops")
    digest = web_image(home, tmp_path, "1")
    declaration = tmp_path / "web.yaml"
    declaration.write_text(
        f"replicas: 2\nruntime: docker\nport: {free_port()}\ncommand: {SERVE}\n"
        "env: {MODE: strict}\n"
    )
    cli(home, "env", "declare", "prod", "web", str(declaration))
    cli(home, "promote", digest, "--to", "prod")
    host = ["--docker-host", engine.host]
    cli(home, "deploy", "prod", *host)
    try:
        yield client, host, digest
    finally:
        for info in list_endpoints(home):
            Endpoint(home, info.environment, info.service).stop()
        for container in client.containers.list(all=True):
            container.remove(force=True, v=True)
        client.close()


def by_kind(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for finding in report["findings"]:
        out.setdefault(finding["kind"], []).append(finding)
    return out


def test_clean_then_exec_recreate_and_stranger_are_found_and_healed(
    home: Path, deployed: tuple[Any, list[str], str]
) -> None:
    client, host, digest = deployed
    assert cli(home, "drift", "check", "prod", *host)["clean"]
    first, second = sorted(c.name for c in client.containers.list())

    # 1. Someone opens a shell in a running container.
    client.containers.get(first).exec_run(["/bin/busybox", "sh", "-c", "id"])
    # 2. Someone recreates a container with another environment, keeping the name and labels.
    old = client.containers.get(second)
    attrs = old.attrs
    old.remove(force=True)
    env = [e for e in attrs["Config"]["Env"] if not e.startswith("MODE=")] + ["MODE=debug"]
    client.containers.run(
        attrs["Image"],
        command=attrs["Config"]["Cmd"],
        entrypoint=attrs["Config"]["Entrypoint"],
        environment=env,
        labels=attrs["Config"]["Labels"],
        name=second,
        network_mode="host",
        read_only=True,
        detach=True,
    )
    # 3. A container of an image immutrail does not know, wearing immutrail's labels.
    stranger = client.containers.run(
        attrs["Image"],
        command=["/bin/busybox", "sleep", "600"],
        entrypoint=[],
        labels={**attrs["Config"]["Labels"], "immutrail.digest": "sha256:" + "0" * 64},
        name="immutrail-prod-web-deadbeef",
        network_mode="host",
        detach=True,
    )
    del stranger

    report = cli(home, "drift", "check", "prod", *host, code=1)
    found = by_kind(report)
    [session] = found["exec-session"]
    assert session["instance"] == first and session["evidence"]["sessions"]
    config = [f for f in found["config"] if f["instance"] == second]
    assert config and config[0]["evidence"]["observed"]["MODE"] == "debug"
    assert config[0]["evidence"]["expected"]["MODE"] == "strict"
    lockdown = [f for f in found["lockdown"] if f["instance"] == second]
    assert lockdown and not lockdown[0]["evidence"]["settings"]["capabilities_dropped"]
    assert any(f["instance"] == "immutrail-prod-web-deadbeef" for f in found["unrecorded"])

    healed = cli(home, "drift", "check", "prod", "--remediate", *host)
    assert healed["after_remediation"]["clean"], healed["after_remediation"]["findings"]
    names = {c.name for c in client.containers.list(all=True)}
    assert not names & {first, second, "immutrail-prod-web-deadbeef"} and len(names) == 2
    for container in client.containers.list():
        assert container.labels["immutrail.digest"] == digest
