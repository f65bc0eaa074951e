"""Start a private Docker engine for a test, and stop it (and clean its mounts) afterwards.

    with running_dockerd() as engine:
        engine.docker("load", "-i", archive)   # the docker CLI, pointed at this engine only

The engine has its own data root, exec root, pid file and socket in a short temp folder (unix
socket paths are limited to 108 bytes), no bridge and no iptables rules (containers use
``--network host``), so it neither needs nor touches the machine's own Docker. The storage driver
is the default (overlay2); when that cannot start in a sandbox, vfs is tried.
``IMMUTRAIL_TEST_DOCKER_STORAGE_DRIVER`` forces one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .registry import ServiceError, log_tail

START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 120.0
DRIVER_ENV = "IMMUTRAIL_TEST_DOCKER_STORAGE_DRIVER"


@dataclass(frozen=True)
class Engine:
    socket: Path
    root: Path
    driver: str
    client: str

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def docker(
        self, *args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.client, "-H", self.host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "DOCKER_CONFIG": str(self.root / "client-config")},
        )
        if check and done.returncode != 0:
            raise ServiceError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
        return done


def find_tools() -> tuple[str, str] | None:
    """(dockerd, docker) paths, or None when either is missing."""
    daemon = shutil.which("dockerd")
    client = shutil.which("docker", path="/usr/bin:/bin") or shutil.which("docker")
    return (daemon, client) if daemon and client else None


def _mounts_under(root: Path) -> list[str]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    points = [line.split()[1].replace("\\040", " ") for line in lines if len(line.split()) > 1]
    return sorted((p for p in points if p.startswith(f"{root}/")), key=len, reverse=True)


def _cleanup(root: Path) -> None:
    for point in _mounts_under(root):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)  # dockerd stops its containers and its containerd
    try:
        process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the session we created for it
        process.wait(STOP_TIMEOUT)


def _start(
    daemon: str, client: str, root: Path, driver: str | None
) -> tuple[subprocess.Popen[bytes], Engine]:
    socket = root / "docker.sock"
    log = root / "dockerd.log"
    args = [
        daemon,
        "--bridge=none",
        "--iptables=false",
        "--data-root",
        str(root / "data"),
        "--exec-root",
        str(root / "exec"),
        "--pidfile",
        str(root / "dockerd.pid"),
        "--host",
        f"unix://{socket}",
    ]
    if driver:
        args += ["--storage-driver", driver]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    engine = Engine(socket, root, driver or "default", client)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        if socket.exists():
            with contextlib.suppress(subprocess.TimeoutExpired):
                info = engine.docker("info", "--format", "{{.Driver}}", timeout=10, check=False)
                if info.returncode == 0:
                    return process, Engine(socket, root, info.stdout.strip(), client)
        time.sleep(0.2)
    _stop(process)
    raise ServiceError(f"dockerd ({driver or 'default driver'}) did not start:\n{log_tail(log)}")


@contextlib.contextmanager
def running_dockerd(drivers: Sequence[str | None] | None = None) -> Iterator[Engine]:
    tools = find_tools()
    if tools is None:
        raise ServiceError("dockerd or docker is not installed (apt-get install docker.io)")
    if os.geteuid() != 0:
        raise ServiceError("dockerd needs root")
    forced = os.environ.get(DRIVER_ENV)
    choices: Sequence[str | None] = drivers or ([forced] if forced else [None, "vfs"])
    problems: list[str] = []
    for driver in choices:
        root = Path(tempfile.mkdtemp(prefix="itd-", dir="/tmp"))
        try:
            process, engine = _start(*tools, root, driver)
        except ServiceError as exc:
            problems.append(str(exc))
            _cleanup(root)
            continue
        try:
            yield engine
        finally:
            _stop(process)
            _cleanup(root)
        return
    raise ServiceError("\n\n".join(problems))
