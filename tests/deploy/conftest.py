"""Fixtures of the deploy tests: the artifacts tests' git repositories and homes, a hello image."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from artifacts.conftest import _isolated_git, home, make_repo, repo  # noqa: F401
from immutrail.artifacts.builder import build
from immutrail.deploy.local import LocalRuntime
from immutrail.deploy.runtime import Health

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "hello" / "app" / "server.py"

HELLO_DEFINITION = """\
base: scratch
layers:
  - source: app
    destination: /opt/hello
env: {GREETING: hi, PORT: "8080"}
entrypoint: ["python3", "/opt/hello/server.py"]
workdir: /opt/hello
ports: ["8080/tcp"]
privacy_relevant: [env:GREETING]
"""


def hello_repo(root: Path, version: str = "1") -> Path:
    """A repository with the example service; ``version`` changes what it answers."""
    server = EXAMPLE.read_text().replace('VERSION = "1"', f'VERSION = "{version}"')
    return make_repo(root, {"image.yaml": HELLO_DEFINITION, "app/server.py": server})


def build_hello(home: Path, tmp_path: Path, version: str = "1") -> str:
    repo = hello_repo(tmp_path / f"hello-{version}", version)
    return build(repo / "image.yaml", home, tag=f"hello:{version}").digest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(runtime: LocalRuntime, instance_id: str, wanted: Health, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    seen = runtime.health(instance_id)
    while seen != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = runtime.health(instance_id)
    assert seen == wanted, (instance_id, seen, runtime.logs(instance_id))


@pytest.fixture
def hello(home: Path, tmp_path: Path) -> str:
    return build_hello(home, tmp_path)
