"""Deploy by replacement on the real Docker engine: blue/green under load, chaos healed.

A private dockerd (host network, loopback only) runs busybox httpd images built from scratch;
the deployment goes through the CLI, the endpoint process and admission, as for users.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker  # type: ignore[import-untyped]
import pytest

from artifacts.conftest import make_repo
from artifacts.services.dockerd import Engine
from artifacts.test_docker_load import BUSYBOX, is_static_elf, skip_or_fail
from immutrail.artifacts.builder import build
from immutrail.deploy.endpoint import Endpoint, list_endpoints

from .conftest import free_port
from .test_admission import PERMISSIVE, cli
from .test_deploy_e2e import Load
from .test_docker_driver import engine  # noqa: F401  # one private dockerd per module

pytestmark = [pytest.mark.timeout(300), pytest.mark.docker]

DEFINITION = """\
base: scratch
layers:
  - source: bin/busybox
    destination: /bin/busybox
    mode: "0755"
  - source: www
    destination: /www
entrypoint: ["/bin/busybox"]
cmd: ["sleep", "3600"]
"""
SERVE = '["/bin/busybox", "sh", "-c", "exec /bin/busybox httpd -f -p 127.0.0.1:$PORT -h /www"]'


@pytest.fixture
def client(engine: Engine, home: Path) -> Iterator[Any]:
    client = docker.DockerClient(base_url=engine.host)
    yield client
    for info in list_endpoints(home):
        Endpoint(home, info.environment, info.service).stop()
    for container in client.containers.list(all=True):
        container.remove(force=True, v=True)
    client.close()


def web_image(home: Path, tmp_path: Path, version: str) -> str:
    if not BUSYBOX.is_file() or not is_static_elf(BUSYBOX):
        skip_or_fail(f"{BUSYBOX} is not a static binary (apt-get install busybox-static)")
    repo = make_repo(
        tmp_path / f"web-{version}",
        {
            "image.yaml": DEFINITION,
            "bin/busybox": (BUSYBOX.read_bytes(), 0o755),
            "www/index.html": f"web v{version}\n",
        },
    )
    digest = build(repo / "image.yaml", home, tag=f"web:{version}").digest
    cli(home, "sign", digest, "--principal", "rel")
    return digest


def test_blue_green_on_docker_under_load_then_chaos_is_healed(
    home: Path, tmp_path: Path, engine: Engine, client: Any
) -> None:
    for principal in ("ops", "rel"):
        cli(home, "keys", "generate", "--principal", principal, "--no-passphrase")
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE)
    cli(home, "policy", "set", "prod", str(policy), "--principal", "ops")
    v1, v2 = web_image(home, tmp_path, "1"), web_image(home, tmp_path, "2")
    port = free_port()
    declaration = tmp_path / "web.yaml"
    declaration.write_text(
        f"replicas: 2\nstrategy: blue-green\nruntime: docker\nport: {port}\n"
        f"command: {SERVE}\nhealth_timeout: 60s\n"
    )
    cli(home, "env", "declare", "prod", "web", str(declaration))
    docker_host = ["--docker-host", engine.host]

    cli(home, "promote", v1, "--to", "prod")
    first = cli(home, "deploy", "prod", *docker_host)["services"][0]
    assert first["status"] == "completed" and len(first["created"]) == 2
    assert Load.get(port) == "web v1"

    cli(home, "promote", v2, "--to", "prod")
    with Load(port) as load:
        time.sleep(0.5)
        second = cli(home, "deploy", "prod", *docker_host)["services"][0]
        time.sleep(0.5)
    assert load.failures == [], load.failures[:5]
    assert load.answers["v1"] > 0 and load.answers["v2"] > 0
    containers = client.containers.list(all=True)
    assert sorted(c.name for c in containers) == sorted(second["created"])  # old ones are gone
    for container in containers:
        labels = container.labels
        assert labels["immutrail.digest"] == v2
        assert labels["immutrail.deployment"] == second["deployment"]
        assert labels["immutrail.config-digest"].startswith("sha256:")
        host_config = container.attrs["HostConfig"]
        assert host_config["ReadonlyRootfs"] is True and host_config["CapDrop"] == ["ALL"]

    killed = cli(home, "chaos", "prod", "--terminate", "1", *docker_host)["terminated"][0]["id"]
    assert client.containers.get(killed).status == "exited"
    with Load(port) as load:
        healed = cli(home, "reconcile", "prod", *docker_host)["services"][0]
    assert load.failures == []
    assert healed["status"] == "healed" and killed in healed["destroyed"]
    status = cli(home, "status", "prod", *docker_host)["services"][0]
    assert status["converged"] and len(status["instances"]) == 2
    assert Load.get(port) == "web v2"
