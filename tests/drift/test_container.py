"""Docker containers against their image, on a private engine (``artifacts/services/dockerd.py``).

Images are built from scratch with a static busybox (as ``deploy/test_docker_driver.py`` does).
A container started by immutrail's driver (read-only root, tmpfs scratch at /tmp, a config file
bound read-only) must come out clean while it writes logs to /tmp; one started by hand with a
writable root, changed through ``docker exec`` and ``docker cp``, must show every change.
Skipped without dockerd, root or a static busybox, except under CI=true, where each of those is
a failure.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from artifacts.conftest import make_repo
from artifacts.services.dockerd import Engine
from artifacts.test_docker_load import BUSYBOX, is_static_elf, skip_or_fail
from deploy.test_docker_driver import client, engine  # noqa: F401  # one private dockerd per module
from immutrail.artifacts.builder import BuildResult, build
from immutrail.artifacts.store import Store
from immutrail.deploy.docker_driver import DockerRuntime
from immutrail.deploy.runtime import InstanceSpec
from immutrail.drift import DriftInputError, check_container, expected_files

pytestmark = [pytest.mark.timeout(300), pytest.mark.docker]

DEFINITION = """\
base: scratch
layers:
  - source: bin/busybox
    destination: /bin/busybox
    mode: "0755"
  - source: etc
    destination: /etc/app
  - source: secret.conf
    destination: /etc/app/secret.conf
    mode: "0600"
    owner: "1000:1000"
entrypoint: ["/bin/busybox"]
cmd: ["sleep", "3600"]
"""
FILES = {
    "a.conf": b"a=1\n",
    "b.conf": b"b=1\n",
    "c.conf": b"c=1\n",
    "d.conf": b"d=1\n",
}
LOGGER = [
    "/bin/busybox",
    "sh",
    "-c",
    "echo started > /tmp/app.log; mkdir -p /tmp/cache; echo x > /tmp/cache/blob; "
    "exec /bin/busybox sleep 3600",
]
WAIT = 60.0


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def image(home: Path, tmp_path: Path) -> BuildResult:
    if not BUSYBOX.is_file() or not is_static_elf(BUSYBOX):
        skip_or_fail(f"{BUSYBOX} is not a static binary (apt-get install busybox-static)")
    files: dict[str, str | bytes | tuple[str | bytes, int]] = {
        "image.yaml": DEFINITION,
        "bin/busybox": (BUSYBOX.read_bytes(), 0o755),
        "secret.conf": b"token=1\n",
    }
    files.update({f"etc/{name}": content for name, content in FILES.items()})
    repo = make_repo(tmp_path / "repo", files)
    return build(repo / "image.yaml", home, tag="box:1")


@pytest.fixture
def runtime(home: Path, client: Any) -> DockerRuntime:
    return DockerRuntime(Store.for_home(home, create=True), client)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {WAIT:.0f}s")
        time.sleep(0.2)


def run(container: Any, script: str) -> None:
    code, output = container.exec_run(["/bin/busybox", "sh", "-c", script])
    assert code == 0, output


def test_a_clean_container_has_no_finding_while_it_writes_to_its_scratch(
    runtime: DockerRuntime, client: Any, engine: Engine, home: Path, image: BuildResult
) -> None:
    instance = runtime.create(
        InstanceSpec(
            "prod", "box", image.digest, files={"/www/index.html": b"<p>x</p>\n"}, command=LOGGER
        )
    )
    container = client.containers.get(instance.id)
    wait_for(
        lambda: container.exec_run(["/bin/busybox", "test", "-f", "/tmp/cache/blob"])[0] == 0,
        "the instance's log",
    )
    expected = expected_files(Store.for_home(home), image.digest)

    report = check_container(client, instance.id, expected)
    assert report.clean, report.summary()
    assert report.runtime == "docker" and report.target == instance.id and report.full
    assert report.notes == ()  # its root is read-only
    assert report.files_checked == expected.file_count == 6
    assert report.bytes_hashed == expected.content_bytes

    # the engine refuses to write into a read-only root, even for root on the host
    copied = engine.docker("cp", str(BUSYBOX), f"{instance.id}:/etc/app/busybox", check=False)
    assert copied.returncode != 0 and "read-only" in copied.stderr
    assert check_container(client, instance.id, expected).clean


def test_changes_in_a_writable_container_are_detected(
    runtime: DockerRuntime,
    client: Any,
    engine: Engine,
    home: Path,
    image: BuildResult,
    tmp_path: Path,
) -> None:
    runtime.create(InstanceSpec("prod", "box", image.digest))  # loads the image
    # started by hand, as an operator bypassing immutrail would: a writable root
    container = client.containers.run(image.config.digest, name="handmade", detach=True)
    run(
        container,
        "echo a=2 > /etc/app/a.conf; "  # content
        "chmod 4755 /etc/app/b.conf; "  # mode (setuid)
        "rm /etc/app/c.conf; "  # removed
        "echo d=1 > /etc/app/d.conf; "  # written back as it was: only the engine can tell
        "chown 0:0 /etc/app/secret.conf",  # owner
    )
    tool = tmp_path / "tool"
    tool.write_bytes(b"#!/bin/sh\necho pwned\n")
    engine.docker("cp", str(tool), "handmade:/bin/tool")  # added from the host
    expected = expected_files(Store.for_home(home), image.digest)

    report = check_container(client, "handmade", expected)
    found = {f["path"]: f for f in report.to_json()["findings"]}
    assert set(found) == {
        "/etc/app/a.conf",
        "/etc/app/b.conf",
        "/etc/app/c.conf",
        "/etc/app/d.conf",
        "/etc/app/secret.conf",
        "/bin/tool",
    }
    assert found["/etc/app/a.conf"]["differences"] == [
        {"aspect": "content", "expected": sha(b"a=1\n"), "observed": sha(b"a=2\n")}
    ]
    assert found["/etc/app/a.conf"]["engine"] == "changed"
    assert found["/etc/app/b.conf"]["differences"] == [
        {"aspect": "mode", "expected": "0644", "observed": "4755"}
    ]
    assert found["/etc/app/c.conf"] == {
        "path": "/etc/app/c.conf",
        "change": "removed",
        "type": "file",
        "sha256": sha(b"c=1\n"),
        "size": 4,
        "engine": "deleted",
    }
    assert found["/etc/app/d.conf"]["change"] == "modified"
    assert found["/etc/app/d.conf"]["differences"] == [
        {"aspect": "layer", "expected": "image", "observed": "container's writable layer"}
    ]
    assert found["/etc/app/secret.conf"]["differences"] == [
        {"aspect": "owner", "expected": "1000:1000", "observed": "0:0"}
    ]
    assert found["/bin/tool"]["change"] == "added"
    assert found["/bin/tool"]["sha256"] == sha(b"#!/bin/sh\necho pwned\n")
    assert found["/bin/tool"]["engine"] == "added"
    assert report.counts() == {"added": 1, "removed": 1, "modified": 4, "unreadable": 0}
    assert any("writable" in note for note in report.notes)

    # without the engine's change list, the rewritten-but-equal file is invisible
    content_only = check_container(client, "handmade", expected, engine_changes=False)
    assert "/etc/app/d.conf" not in {f.path for f in content_only.findings}
    assert len(content_only.findings) == 5


def test_an_unknown_container_or_another_image_is_an_input_error(
    runtime: DockerRuntime, client: Any, home: Path, image: BuildResult, tmp_path: Path
) -> None:
    store = Store.for_home(home)
    expected = expected_files(store, image.digest)
    with pytest.raises(DriftInputError, match="no such container"):
        check_container(client, "nobody-here", expected)
    instance = runtime.create(InstanceSpec("prod", "box", image.digest))
    other_repo = make_repo(
        tmp_path / "other",
        {
            "image.yaml": DEFINITION.replace('cmd: ["sleep", "3600"]', 'cmd: ["sleep", "60"]'),
            "bin/busybox": (BUSYBOX.read_bytes(), 0o755),
            "secret.conf": b"token=1\n",
            **{f"etc/{name}": content for name, content in FILES.items()},
        },
    )
    other = build(other_repo / "image.yaml", home, tag="box:2")
    with pytest.raises(DriftInputError, match="compare it with its own image"):
        check_container(client, instance.id, expected_files(store, other.digest))
