"""The ``docker`` runtime driver against a real, private Docker engine (engine 20.10, host network).

The engine is started for this module by ``artifacts/services/dockerd.py``; images are built from
scratch with a static busybox as their only program (see ``artifacts/test_docker_load.py``), and
every server listens on 127.0.0.1. Skipped without dockerd, root or a static busybox, except under
CI=true, where each of those is a failure.
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker  # type: ignore[import-untyped]
import pytest

from artifacts.conftest import make_repo
from artifacts.services.dockerd import Engine, running_dockerd
from artifacts.services.registry import ServiceError
from artifacts.test_docker_load import BUSYBOX, is_static_elf, skip_or_fail
from immutrail.artifacts.builder import BuildResult, build
from immutrail.artifacts.export import export_image
from immutrail.artifacts.store import Store
from immutrail.deploy.docker_driver import DockerRuntime, DockerSpecError, InstanceGoneError
from immutrail.deploy.runtime import Health, InstanceSpec, Runtime, RuntimeDriverError
from immutrail.ledger.home import init_ledger

pytestmark = [pytest.mark.timeout(300), pytest.mark.docker]

WAIT = 60.0
PAGE = b"<p>served from a read-only bind</p>\n"


def definition(healthcheck: str | None = None) -> str:
    text = """\
base: scratch
layers:
  - source: bin/busybox
    destination: /bin/busybox
    mode: "0755"
entrypoint: ["/bin/busybox"]
cmd: ["sleep", "3600"]
"""
    return text + (f"healthcheck: {healthcheck}\n" if healthcheck else "")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def httpd(port: int) -> list[str]:
    """A shell that greets on both streams, then serves /www on the loopback port."""
    script = (
        "echo started on $PORT; echo a warning >&2; "
        "exec /bin/busybox httpd -f -p 127.0.0.1:$PORT -h /www"
    )
    return ["/bin/busybox", "sh", "-c", script]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {WAIT:.0f}s")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    try:
        with running_dockerd() as started:
            yield started
    except ServiceError as exc:
        skip_or_fail(f"no Docker engine: {exc}")


@pytest.fixture
def client(engine: Engine) -> Iterator[Any]:
    client = docker.DockerClient(base_url=engine.host)
    yield client
    for container in client.containers.list(all=True):  # nothing leaks into the next test
        container.remove(force=True, v=True)
    for image in client.images.list(all=True):
        client.images.remove(image.id, force=True)
    client.close()


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., BuildResult]:
    if not BUSYBOX.is_file() or not is_static_elf(BUSYBOX):
        skip_or_fail(f"{BUSYBOX} is not a static binary (apt-get install busybox-static)")

    def make(home: Path, name: str = "app", healthcheck: str | None = None) -> BuildResult:
        repo = make_repo(
            tmp_path / f"repo-{name}",
            {"image.yaml": definition(healthcheck), "bin/busybox": (BUSYBOX.read_bytes(), 0o755)},
        )
        return build(repo / "image.yaml", home, tag=f"{name}:1")

    return make


@pytest.fixture
def runtime(home: Path, client: Any) -> DockerRuntime:
    return DockerRuntime(Store.for_home(home, create=True), client)


def spec(image: BuildResult, port: int | None = None, **fields: Any) -> InstanceSpec:
    return InstanceSpec(environment="prod", service="web", digest=image.digest, port=port, **fields)


def test_create_runs_a_locked_down_container_and_destroy_removes_it(
    runtime: DockerRuntime, client: Any, home: Path, make_image: Callable[..., BuildResult]
) -> None:
    assert isinstance(runtime, Runtime)
    image = make_image(home)
    port = free_port()
    instance = runtime.create(
        spec(
            image,
            port,
            env={"GREETING": "hi"},
            files={"/www/index.html": PAGE},
            labels={"immutrail.ledger-index": "7"},
            command=httpd(port),
        )
    )

    assert instance.digest == image.digest and instance.managed
    assert (instance.environment, instance.service, instance.port) == ("prod", "web", port)
    assert instance.created_at.endswith("Z")
    inspected = client.api.inspect_container(instance.id)
    assert inspected["Image"] == image.config.digest  # by ID, never by a tag
    assert inspected["Config"]["Image"] == image.config.digest
    host = inspected["HostConfig"]
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["NetworkMode"] == "host"
    assert host["Init"] is True
    assert list(host["Tmpfs"]) == ["/tmp"]
    assert {"GREETING=hi", f"PORT={port}"} <= set(inspected["Config"]["Env"])
    ours = {k: v for k, v in inspected["Config"]["Labels"].items() if k.startswith("immutrail.")}
    assert ours == {
        "immutrail.environment": "prod",
        "immutrail.service": "web",
        "immutrail.digest": image.digest,
        "immutrail.ledger-index": "7",
        "immutrail.managed": "true",
        "immutrail.port": str(port),
    }
    [bind] = inspected["Mounts"]
    assert (bind["Destination"], bind["RW"]) == ("/www/index.html", False)
    config = home / "runtime" / "docker" / instance.id / "config"
    assert (config / "www" / "index.html").read_bytes() == PAGE

    wait_for(lambda: runtime.health(instance.id) is Health.healthy, "a healthy instance")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as response:
        assert response.read() == PAGE

    [listed] = runtime.list("prod")
    assert (listed.id, listed.digest, listed.health) == (instance.id, image.digest, Health.healthy)
    assert listed.labels["immutrail.ledger-index"] == "7"
    assert runtime.list("staging") == []

    logs = runtime.logs(instance.id)
    assert logs.stdout == f"started on {port}\n".encode()
    assert logs.stderr == b"a warning\n"

    runtime.destroy(instance.id)
    assert runtime.list() == []
    assert not config.parent.exists()
    with pytest.raises(InstanceGoneError):
        runtime.health(instance.id)
    with pytest.raises(InstanceGoneError):
        runtime.destroy(instance.id)


def test_the_root_and_the_config_are_read_only_and_the_scratch_is_not(
    runtime: DockerRuntime, home: Path, make_image: Callable[..., BuildResult]
) -> None:
    script = (
        "touch /written 2>/dev/null && echo root-writable; "
        "echo x 2>/dev/null > /etc/app.conf && echo config-writable; "
        "echo kept > /tmp/scratch && cat /tmp/scratch /etc/app.conf"
    )
    instance = runtime.create(
        spec(
            make_image(home),
            files={"/etc/app.conf": b"setting=1\n"},
            command=["/bin/busybox", "sh", "-c", script],
        )
    )
    wait_for(lambda: runtime.health(instance.id) is Health.exited, "the instance's exit")
    assert runtime.logs(instance.id).stdout == b"kept\nsetting=1\n"
    runtime.destroy(instance.id)


def test_a_docker_healthcheck_wins_over_the_port(
    runtime: DockerRuntime, home: Path, make_image: Callable[..., BuildResult]
) -> None:
    failing = make_image(
        home, "failing", '{test: ["CMD", "/bin/busybox", "false"], interval: 1s, retries: 1}'
    )
    passing = make_image(home, "passing", '{test: ["CMD", "/bin/busybox", "true"], interval: 1s}')
    ports = free_port(), free_port()
    sick = runtime.create(spec(failing, ports[0], files={"/www/x": b""}, command=httpd(ports[0])))
    well = runtime.create(spec(passing, ports[1], files={"/www/x": b""}, command=httpd(ports[1])))
    wait_for(lambda: runtime.health(well.id) is Health.healthy, "a passing healthcheck")
    wait_for(lambda: runtime.health(sick.id) is Health.unhealthy, "a failing healthcheck")
    with socket.create_connection(("127.0.0.1", ports[0]), timeout=10):
        pass  # its port answers, yet Docker's healthcheck says unhealthy, and that is reported


def test_a_closed_port_is_unhealthy_after_the_start_period(
    home: Path, engine: Engine, client: Any, make_image: Callable[..., BuildResult]
) -> None:
    store = Store.for_home(home, create=True)
    runtime = DockerRuntime.connect(store, engine.host, start_period=0.0)
    instance = runtime.create(spec(make_image(home), free_port()))  # sleeps, listens nowhere
    assert runtime.health(instance.id) is Health.unhealthy


def test_a_killed_instance_is_seen_exited_and_can_still_be_destroyed(
    runtime: DockerRuntime, client: Any, home: Path, make_image: Callable[..., BuildResult]
) -> None:
    instance = runtime.create(spec(make_image(home)))
    assert runtime.health(instance.id) is Health.healthy  # running, no port, no healthcheck
    client.containers.get(instance.id).kill()  # what a chaos monkey does
    wait_for(lambda: runtime.health(instance.id) is Health.exited, "the instance's death")
    [listed] = runtime.list("prod")
    assert (listed.id, listed.health) == (instance.id, Health.exited)
    runtime.destroy(instance.id)
    assert client.containers.list(all=True) == []


def test_list_reports_foreign_and_unknown_containers(
    runtime: DockerRuntime,
    client: Any,
    engine: Engine,
    home: Path,
    tmp_path: Path,
    make_image: Callable[..., BuildResult],
) -> None:
    known = make_image(home)
    other_home = tmp_path / "other-home"
    init_ledger(other_home)[0].close()
    # A different image (the healthcheck differs), in the engine but not in our store.
    stranger = make_image(other_home, "stranger", '{test: ["NONE"]}')
    archive = tmp_path / "stranger.tar"
    export_image(Store.for_home(other_home), stranger.digest, archive)
    engine.docker("load", "-i", str(archive))

    labels = {
        "immutrail.environment": "prod",
        "immutrail.service": "web",
        "immutrail.digest": stranger.digest,
        "immutrail.managed": "true",
    }
    # Started by hand, as an operator would: no network at all, none of the driver's lock-down.
    run = {"detach": True, "network_mode": "none"}
    client.containers.run(stranger.config.digest, name="smuggled", labels=labels, **run)
    ours = runtime.create(spec(known))  # loads `known` into the engine
    client.containers.run(known.config.digest, name="handmade", **run)

    found = {instance.id: instance for instance in runtime.list()}
    assert found["smuggled"].managed  # its labels say so…
    assert found["smuggled"].digest == f"unknown:{stranger.config.digest}"  # …its image does not
    assert not found["handmade"].managed
    assert found["handmade"].digest == known.digest
    assert (found["handmade"].environment, found["handmade"].service) == ("", "")
    assert found[ours.id].digest == known.digest and found[ours.id].managed
    assert {i.id for i in runtime.list("prod")} == {"smuggled", ours.id}


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"environment": "prod/x"}, "environment name"),
        ({"files": {"etc/app.conf": b""}}, "absolute and normalised"),
        ({"files": {"/etc/../x": b""}}, "absolute and normalised"),
        ({"files": {"/tmp/x": b""}}, "scratch"),
        ({"labels": {"immutrail.digest": "sha256:00"}}, "sets these labels itself"),
        ({"env": {"PORT": "1"}, "port": 8080}, "contradicts"),
        ({"command": []}, "empty command"),
    ],
)
def test_a_bad_spec_is_refused_and_changes_nothing(
    runtime: DockerRuntime,
    client: Any,
    home: Path,
    make_image: Callable[..., BuildResult],
    fields: dict[str, Any],
    problem: str,
) -> None:
    image = make_image(home)
    values: dict[str, Any] = {"environment": "prod", "service": "web", "digest": image.digest}
    with pytest.raises(DockerSpecError, match=problem):
        runtime.create(InstanceSpec(**{**values, **fields}))
    assert client.containers.list(all=True) == []
    assert client.images.list(all=True) == []  # checked before the image was loaded
    assert not (home / "runtime").exists()


def test_a_container_that_cannot_start_leaves_nothing_behind(
    runtime: DockerRuntime, client: Any, home: Path, make_image: Callable[..., BuildResult]
) -> None:
    image = make_image(home)
    # A file cannot be mounted below /bin/busybox, which is a file: the engine refuses to start.
    broken = spec(image, files={"/etc/app.conf": b"x", "/bin/busybox/app.conf": b"x"})
    with pytest.raises(RuntimeDriverError, match="Docker engine failed"):
        runtime.create(broken)
    assert client.containers.list(all=True) == []
    assert list((home / "runtime" / "docker").iterdir()) == []

    # A missing program is started by Docker's init, which then exits: an exited instance.
    instance = runtime.create(spec(image, command=["/no/such/program"]))
    wait_for(lambda: runtime.health(instance.id) is Health.exited, "the instance's exit")
    assert b"/no/such/program" in runtime.logs(instance.id).stderr


def test_an_image_missing_from_the_store_is_a_driver_error(
    runtime: DockerRuntime, client: Any
) -> None:
    missing = InstanceSpec(environment="prod", service="web", digest="sha256:" + "0" * 64)
    with pytest.raises(RuntimeDriverError, match="cannot be read"):
        runtime.create(missing)
    assert client.containers.list(all=True) == []


def test_an_unreachable_engine_is_a_driver_error(tmp_path: Path, home: Path) -> None:
    store = Store.for_home(home, create=True)
    with pytest.raises(RuntimeDriverError, match="Docker engine failed"):
        DockerRuntime.connect(store, f"unix://{tmp_path}/no.sock")
    # An engine that goes away after the client was made (a pinned API version asks nothing).
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/no.sock", version="1.41")
    with pytest.raises(RuntimeDriverError, match="Docker engine failed"):
        DockerRuntime(store, client).list()
