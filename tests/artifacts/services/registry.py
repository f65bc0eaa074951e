"""Start Debian's ``docker-registry`` (distribution 2.8) on a free loopback port, stop it after.

    with running_registry(tmp_path) as registry:
        registry.host         # "127.0.0.1:PORT"
        registry.blob_data(d) # the file the registry keeps blob d in (tests corrupt it)

The configuration is the smallest that works: filesystem storage in a temp folder, deletes
enabled, no auth, no TLS, listening on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BINARY = "/usr/bin/docker-registry"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0

CONFIG = """\
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: immutrail-tests-only
"""


class ServiceError(RuntimeError):
    """The service did not start; the message carries the end of its log."""


def find_binary() -> str | None:
    if os.access(BINARY, os.X_OK):
        return BINARY
    return shutil.which("docker-registry")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass(frozen=True)
class Registry:
    host: str
    root: Path
    log: Path
    pid: int

    def blob_data(self, digest: str) -> Path:
        """Where distribution's filesystem driver keeps a blob (manifests are blobs too)."""
        hex_ = digest.split(":", 1)[1]
        return self.root / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """End the process we started (by its id), politely first."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


@contextlib.contextmanager
def running_registry(
    workdir: Path, binary: str | None = None, timeout: float = START_TIMEOUT
) -> Iterator[Registry]:
    binary = binary or find_binary()
    if binary is None:
        raise ServiceError("docker-registry is not installed (apt-get install docker-registry)")
    workdir.mkdir(parents=True, exist_ok=True)
    root, log = workdir / "storage", workdir / "registry.log"
    for _attempt in range(3):  # another process may take the free port before the registry does
        port = free_port()
        config = workdir / "config.yml"
        config.write_text(CONFIG.format(root=root, port=port))
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [binary, "serve", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            if _answers(f"http://127.0.0.1:{port}/v2/"):
                break
            time.sleep(0.05)
        if process.poll() is None and _answers(f"http://127.0.0.1:{port}/v2/"):
            break
        stop(process)
    else:
        raise ServiceError(f"docker-registry did not start:\n{log_tail(log)}")
    try:
        yield Registry(f"127.0.0.1:{port}", root, log, process.pid)
    finally:
        stop(process)
