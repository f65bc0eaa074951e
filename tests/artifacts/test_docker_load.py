"""Our images in a real Docker engine: ``docker load`` of the export, and ``docker pull`` of a push.

A private ``dockerd`` (Debian ``docker.io``, engine 20.10) is started for this module by
``services/dockerd.py``: own data root and socket, no bridge, no iptables; containers run with
``--network host`` and ``--read-only``. Our images are built from scratch and repository files,
so the test repository carries a static busybox (Debian ``busybox-static``) as its only program.

Skipped when dockerd, the docker CLI, root or a static busybox is missing, or when the engine
cannot start in this sandbox, except under CI=true, where each of those is a failure.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from immutrail.artifacts import oci
from immutrail.artifacts.builder import BuildResult, build
from immutrail.artifacts.export import export_image
from immutrail.artifacts.registry import push
from immutrail.artifacts.store import Store

from .conftest import in_ci, make_repo
from .services.dockerd import Engine, running_dockerd
from .services.registry import ServiceError, find_binary, running_registry

pytestmark = [pytest.mark.timeout(300), pytest.mark.docker]

BUSYBOX = Path("/bin/busybox")
GREETING = "hello from immutrail"
DEFINITION = f"""\
base: scratch
layers:
  - source: bin/busybox
    destination: /bin/busybox
    mode: "0755"
env: {{GREETING: "{GREETING}"}}
entrypoint: ["/bin/busybox"]
cmd: ["echo", "{GREETING}"]
"""


def skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} and CI=true", pytrace=False)
    pytest.skip(reason)


def is_static_elf(path: Path) -> bool:
    """An ELF executable without a PT_INTERP header needs no dynamic loader (nothing in scratch)."""
    with path.open("rb") as stream:
        header = stream.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit only
            return False
        (phoff,) = struct.unpack_from("<Q", header, 32)
        phentsize, phnum = struct.unpack_from("<HH", header, 54)
        stream.seek(phoff)
        table = stream.read(phentsize * phnum)
    return all(
        struct.unpack_from("<I", table, i * phentsize)[0] != 3
        for i in range(phnum)  # PT_INTERP
    )


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    try:
        with running_dockerd() as started:
            yield started
    except ServiceError as exc:
        skip_or_fail(f"no Docker engine: {exc}")


@pytest.fixture(params=["gzip", "none"])
def busybox_image(tmp_path: Path, home: Path, request: pytest.FixtureRequest) -> BuildResult:
    """The image with gzip layers, and again with uncompressed ones (``compression: none``)."""
    if not BUSYBOX.is_file() or not is_static_elf(BUSYBOX):
        skip_or_fail(f"{BUSYBOX} is not a static binary (apt-get install busybox-static)")
    definition = f"{DEFINITION}compression: {request.param}\n"
    repo = make_repo(
        tmp_path / "hello",
        {"image.yaml": definition, "bin/busybox": (BUSYBOX.read_bytes(), 0o755)},
    )
    built = build(repo / "image.yaml", home, tag="hello:1")
    expected = oci.LAYER_TAR if request.param == "none" else oci.LAYER_GZIP
    assert [layer.media_type for layer in built.layers] == [expected]
    return built


def run(engine: Engine, image: str, *command: str) -> str:
    done = engine.docker(
        "run",
        "--rm",
        "--network",
        "host",
        "--read-only",
        "--pull",
        "never",
        image,
        *command,
        timeout=60,
    )
    return done.stdout


def test_docker_loads_the_export_and_runs_it(
    engine: Engine, busybox_image: BuildResult, home: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "hello.tar"
    export_image(Store.for_home(home), "hello:1", archive)
    loaded = engine.docker("load", "-i", str(archive))
    assert "hello:1" in loaded.stdout

    [inspected] = json.loads(engine.docker("image", "inspect", "hello:1").stdout)
    assert inspected["Id"] == busybox_image.config.digest  # Docker's image id is the config digest
    assert inspected["RootFS"]["Layers"] == [layer.diff_id for layer in busybox_image.built]
    assert inspected["Config"]["Entrypoint"] == ["/bin/busybox"]

    assert run(engine, "hello:1") == f"{GREETING}\n"
    assert f"GREETING={GREETING}" in run(engine, "hello:1", "env").splitlines()
    digest = hashlib.sha256(BUSYBOX.read_bytes()).hexdigest()
    assert run(engine, "hello:1", "sha256sum", "/bin/busybox").split()[0] == digest
    # --read-only: the container cannot change its image.
    done = engine.docker(
        "run", "--rm", "--network", "host", "--read-only", "hello:1", "touch", "/x", check=False
    )
    assert done.returncode != 0 and "Read-only file system" in done.stderr


@pytest.mark.registry
def test_docker_pulls_what_we_pushed(
    engine: Engine, busybox_image: BuildResult, home: Path, tmp_path: Path
) -> None:
    binary = find_binary()
    if binary is None:
        skip_or_fail("docker-registry is not installed (apt-get install docker-registry)")
    with running_registry(tmp_path / "registry", binary) as registry:
        push(Store.for_home(home), "hello:1", f"{registry.host}/hello/app:1")
        reference = f"{registry.host}/hello/app@{busybox_image.digest}"
        engine.docker("pull", reference)  # loopback registries are insecure-allowed by default
        [inspected] = json.loads(engine.docker("image", "inspect", reference).stdout)
        assert f"{registry.host}/hello/app@{busybox_image.digest}" in inspected["RepoDigests"]
        assert run(engine, reference) == f"{GREETING}\n"
