"""The ``local`` runtime: instances are host processes started from a read-only unpacked image.

This driver is for development and the embedded demo. It is NOT an isolation boundary: the
process runs as the calling user, sees the host's filesystem, network and programs (the image's
``python3 /opt/hello/server.py`` runs the image's server.py with the host's python3). What it does
guarantee is the immutrail part of the contract: the code comes from the digest-verified image,
unpacked read-only, and nothing of an instance outlives it except its kept logs.

Layout of one instance, ``$IMMUTRAIL_HOME/runtime/local/<instance-id>/``::

    instance.json   the spec, pid, the process start time (from /proc), created_at
    image.digest    the digest the root was unpacked from (read-only, re-checked by ``list``)
    rootfs/         the image's root filesystem, every blob verified, write bits cleared
    config/         ``spec.files`` (read-only), given to the process as IMMUTRAIL_CONFIG_DIR
    scratch/        empty private folder, the process's TMPDIR and HOME
    stdout, stderr  the process's output
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from immutrail.artifacts.digests import sha256_digest
from immutrail.artifacts.errors import ArtifactError
from immutrail.artifacts.store import Store
from immutrail.artifacts.unpack import make_read_only, make_writable, remove_tree, unpack_image
from immutrail.ledger.event import format_time, parse_time

from .runtime import Health, Instance, InstanceSpec, Logs, RuntimeDriverError

logger = logging.getLogger(__name__)

RUNTIME_DIR = Path("runtime") / "local"
RECORD = "instance.json"
DIGEST_FILE = "image.digest"
UNKNOWN_DIGEST = "unknown"
"""The observed digest of an instance whose unpacked image no longer says what it was."""

_ID_RE = re.compile(r"local-[0-9a-f]{16}")
_DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class _Record:
    """What ``instance.json`` holds."""

    id: str
    spec: dict[str, Any]
    pid: int | None
    start_time: int | None
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "spec": self.spec,
            "pid": self.pid,
            "start_time": self.start_time,
            "created_at": self.created_at,
        }


class LocalRuntime:
    """Instances as host processes under ``$IMMUTRAIL_HOME/runtime/local``.

    ``grace_seconds``: how long ``destroy`` waits after SIGTERM before SIGKILL.
    ``start_period``: how long a process that does not accept connections yet counts as
    ``starting`` rather than ``unhealthy``.
    """

    name = "local"

    def __init__(
        self,
        home: Path,
        store: Store,
        *,
        grace_seconds: float = 5.0,
        start_period: float = 30.0,
    ) -> None:
        self.root = home / RUNTIME_DIR
        self.store = store
        self.grace_seconds = grace_seconds
        self.start_period = start_period
        # Children this object started: polled so that they are reaped, not left as zombies.
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # --- create -------------------------------------------------------------------------------

    def create(self, spec: InstanceSpec) -> Instance:
        """Unpack, verify and start one instance of ``spec.digest`` (admission comes first)."""
        files = _config_files(spec.files)
        _check_port(spec.port)
        _check_env(spec.env)
        try:
            self.store.verify(spec.digest)
            config = self.store.image_config(spec.digest)
        except ArtifactError as exc:
            raise RuntimeDriverError(f"image {spec.digest} cannot be started: {exc}") from exc
        argv = list(spec.command) if spec.command is not None else _image_argv(config)
        if not argv:
            raise RuntimeDriverError(
                f"image {spec.digest} has no entrypoint or cmd and the spec gives no command"
            )
        instance_id = f"local-{secrets.token_hex(8)}"
        folder = self.root / instance_id
        self.root.mkdir(parents=True, exist_ok=True)
        folder.mkdir()
        try:
            return self._start(instance_id, folder, spec, files, config, argv)
        except BaseException:
            _remove_folder(folder)
            raise

    def _start(
        self,
        instance_id: str,
        folder: Path,
        spec: InstanceSpec,
        files: Mapping[PurePosixPath, bytes],
        config: Mapping[str, Any],
        argv: Sequence[str],
    ) -> Instance:
        created_at = format_time(datetime.now(UTC))
        record = _Record(instance_id, _spec_json(spec), None, None, created_at)
        # Written before anything else, so that a crash mid-create leaves a folder that
        # ``list`` shows (as exited) and ``destroy`` removes.
        _write_record(folder, record)
        try:
            rootfs = unpack_image(self.store, spec.digest, folder / "rootfs", read_only=True)
        except ArtifactError as exc:
            raise RuntimeDriverError(f"image {spec.digest} cannot be unpacked: {exc}") from exc
        digest_file = folder / DIGEST_FILE
        digest_file.write_text(spec.digest + "\n")
        digest_file.chmod(0o444)
        config_dir = folder / "config"
        config_dir.mkdir()
        for path, content in files.items():
            target = config_dir.joinpath(*path.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        make_read_only(config_dir)
        scratch = folder / "scratch"
        scratch.mkdir(mode=0o700)
        env = _environment(config, spec, rootfs, instance_id, config_dir, scratch)
        cwd = _inside_root(rootfs, str(config.get("WorkingDir") or "/"))
        mapped = [_map_argument(rootfs, arg) for arg in argv]
        with (folder / "stdout").open("wb") as out, (folder / "stderr").open("wb") as err:
            try:
                process = subprocess.Popen(  # noqa: S603 - argv is the admitted image's command
                    mapped,
                    cwd=cwd if cwd is not None and cwd.is_dir() else rootfs,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # its own process group: destroy signals all of it
                )
            except OSError as exc:
                raise RuntimeDriverError(f"cannot start {mapped[0]!r}: {exc}") from exc
        self._children[instance_id] = process
        start_time = _start_time(process.pid)
        record = _Record(instance_id, record.spec, process.pid, start_time, created_at)
        _write_record(folder, record)
        logger.info("started %s (pid %d) from %s", instance_id, process.pid, spec.digest)
        return self._instance(folder, record)

    # --- observe ------------------------------------------------------------------------------

    def health(self, instance_id: str) -> Health:
        """``exited`` when the process is gone; with a port, healthy when it accepts TCP."""
        record = _read_record(self._folder(instance_id))
        if record is None:
            return Health.exited
        return self._health(record)

    def list(self, environment: str | None = None) -> builtins.list[Instance]:
        """Every instance folder, with the digest its unpacked image still records."""
        if not self.root.is_dir():
            return []
        found: builtins.list[Instance] = []
        for folder in sorted(self.root.iterdir()):
            if not _ID_RE.fullmatch(folder.name) or not folder.is_dir():
                continue
            record = _read_record(folder)
            if record is None:
                # A folder without a readable record: a crash before create wrote it, or
                # someone else's. Shown as unmanaged so that it can be destroyed.
                if environment is None:
                    found.append(_unmanaged(folder))
                continue
            if environment is not None and record.spec.get("environment") != environment:
                continue
            found.append(self._instance(folder, record))
        return found

    def logs(self, instance_id: str) -> Logs:
        folder = self._folder(instance_id)
        return Logs(_read_or_empty(folder / "stdout"), _read_or_empty(folder / "stderr"))

    # --- destroy ------------------------------------------------------------------------------

    def destroy(self, instance_id: str) -> None:
        """SIGTERM to the process group, SIGKILL after the grace period, remove the folder."""
        folder = self._folder(instance_id)
        record = _read_record(folder)
        if record is not None and record.pid is not None:
            self._stop(instance_id, record.pid, record.start_time)
        self._children.pop(instance_id, None)
        _remove_folder(folder)
        logger.info("destroyed %s", instance_id)

    def kill(self, instance_id: str) -> None:
        """SIGKILL to the instance's process group; the folder stays (the instance is exited)."""
        record = _read_record(self._folder(instance_id))
        if record is None or record.pid is None or _reused(record.pid, record.start_time):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGKILL)
        child = self._children.get(instance_id)
        if child is not None:
            child.wait()
        logger.info("killed %s", instance_id)

    def _stop(self, instance_id: str, pid: int, start_time: int | None) -> None:
        if _reused(pid, start_time):
            logger.warning(
                "pid %d of %s now belongs to another process: not signalled", pid, instance_id
            )
            return
        if not _alive(pid, start_time, self._children.get(instance_id)):
            _kill_group_members(pid)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        while time.monotonic() < deadline:
            if not _alive(pid, start_time, self._children.get(instance_id)):
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        child = self._children.get(instance_id)
        if child is not None:
            child.wait()
        _kill_group_members(pid)

    # --- helpers ------------------------------------------------------------------------------

    def _folder(self, instance_id: str) -> Path:
        if not _ID_RE.fullmatch(instance_id):
            raise RuntimeDriverError(f"{instance_id!r} is not a local instance id")
        folder = self.root / instance_id
        if not folder.is_dir():
            raise RuntimeDriverError(f"no local instance {instance_id}")
        return folder

    def _health(self, record: _Record) -> Health:
        if record.pid is None or not _alive(
            record.pid, record.start_time, self._children.get(record.id)
        ):
            return Health.exited
        port = record.spec.get("port")
        if not isinstance(port, int):
            return Health.healthy
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return Health.healthy
        except OSError:
            age = datetime.now(UTC) - parse_time(record.created_at)
            return Health.starting if age.total_seconds() < self.start_period else Health.unhealthy

    def _instance(self, folder: Path, record: _Record) -> Instance:
        spec = record.spec
        port = spec.get("port")
        return Instance(
            id=record.id,
            environment=str(spec.get("environment", "")),
            service=str(spec.get("service", "")),
            digest=_observed_digest(folder, str(spec.get("digest", ""))),
            created_at=record.created_at,
            port=port if isinstance(port, int) else None,
            labels=dict(spec.get("labels") or {}),
            health=self._health(record),
        )


# --- the process ------------------------------------------------------------------------------


def _image_argv(config: Mapping[str, Any]) -> builtins.list[str]:
    entrypoint = config.get("Entrypoint") or []
    cmd = config.get("Cmd") or []
    return [str(word) for word in [*entrypoint, *cmd]]


def _environment(
    config: Mapping[str, Any],
    spec: InstanceSpec,
    rootfs: Path,
    instance_id: str,
    config_dir: Path,
    scratch: Path,
) -> dict[str, str]:
    """The host's PATH (a host process needs host programs), then image, spec, immutrail's."""
    env = {"PATH": os.environ.get("PATH", _DEFAULT_PATH)}
    for item in config.get("Env") or []:
        name, _, value = str(item).partition("=")
        env[name] = value
    env.update(spec.env)
    if spec.port is not None:
        env["PORT"] = str(spec.port)
    env.update(
        IMMUTRAIL_ROOTFS=str(rootfs),
        IMMUTRAIL_INSTANCE=instance_id,
        IMMUTRAIL_CONFIG_DIR=str(config_dir),
        TMPDIR=str(scratch),
        HOME=str(scratch),
    )
    return env


def _inside_root(rootfs: Path, path: str) -> Path | None:
    """``rootfs/path`` if it exists and stays inside the root once links are followed."""
    candidate = rootfs.joinpath(*PurePosixPath(path).parts[1:]).resolve()
    if candidate != rootfs and rootfs not in candidate.parents:
        return None
    return candidate if candidate.exists() else None


def _map_argument(rootfs: Path, argument: str) -> str:
    """An absolute argument naming a file of the image becomes that file's host path."""
    if not argument.startswith("/"):
        return argument
    target = _inside_root(rootfs, argument)
    return str(target) if target is not None and target.is_file() else argument


def _start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks after boot."""
    stat = _proc_stat(pid)
    return None if stat is None else int(stat[19])


def _proc_stat(pid: int) -> builtins.list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state is the first)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces and parentheses.
    return text[text.rindex(")") + 2 :].split()


def _alive(pid: int, start_time: int | None, child: subprocess.Popen[bytes] | None) -> bool:
    """Whether ``pid`` is still our process: same start time, and not a zombie."""
    if child is not None and child.poll() is not None:
        return False
    stat = _proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_time is not None and int(stat[19]) == start_time


def _reused(pid: int, start_time: int | None) -> bool:
    """Whether ``pid`` now names a live process other than the one recorded."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X") and int(stat[19]) != start_time


def _kill_group_members(pgid: int) -> None:
    """SIGKILL what is left of the instance's process group after its leader is gone.

    Only called when the leader's pid is not in use by another process. Linux does not hand out
    a pid while a process group of that id exists, so a group that still has members is then
    still the instance's (background children it started and did not stop).
    """
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None and stat[0] not in ("Z", "X") and int(stat[2]) == pgid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            return


# --- the instance folder ----------------------------------------------------------------------


def _config_files(files: Mapping[str, bytes]) -> dict[PurePosixPath, bytes]:
    """``spec.files`` as relative paths, refusing anything that would leave the config folder."""
    checked: dict[PurePosixPath, bytes] = {}
    for name, content in files.items():
        path = PurePosixPath(name)
        relative = PurePosixPath(*path.parts[1:]) if path.is_absolute() else path
        if not relative.parts or any(part in ("", ".", "..") for part in relative.parts):
            raise RuntimeDriverError(f"config file path {name!r} must name a file, without '..'")
        if not isinstance(content, bytes):
            raise RuntimeDriverError(f"config file {name!r} must be bytes")
        checked[relative] = content
    names = set(checked)
    for path in checked:
        if any(parent in names for parent in path.parents):
            raise RuntimeDriverError(f"config file {path} is inside another config file")
    return checked


def _check_env(env: Mapping[str, str]) -> None:
    for name, value in env.items():
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise RuntimeDriverError(f"environment variable {name!r} cannot be set to {value!r}")


def _check_port(port: int | None) -> None:
    if port is not None and (isinstance(port, bool) or not 1 <= port <= 65535):
        raise RuntimeDriverError(f"port {port!r} is not between 1 and 65535")


def _spec_json(spec: InstanceSpec) -> dict[str, Any]:
    """The spec as recorded: files by their SHA-256 (their content is in ``config/``)."""
    return {
        "environment": spec.environment,
        "service": spec.service,
        "digest": spec.digest,
        "env": dict(spec.env),
        "files": {name: sha256_digest(data) for name, data in spec.files.items()},
        "port": spec.port,
        "labels": dict(spec.labels),
        "command": None if spec.command is None else list(spec.command),
    }


def _write_record(folder: Path, record: _Record) -> None:
    """Replace instance.json atomically: a reader sees the old record or the new one."""
    temporary = folder / f".{RECORD}.tmp"
    with temporary.open("w") as stream:
        json.dump(record.to_json(), stream, indent=2, sort_keys=True)
        stream.flush()
        os.fsync(stream.fileno())
    temporary.replace(folder / RECORD)


def _read_record(folder: Path) -> _Record | None:
    try:
        data = json.loads((folder / RECORD).read_text())
        spec = data["spec"]
        pid, start_time = data["pid"], data["start_time"]
        if not isinstance(spec, dict) or data["id"] != folder.name:
            return None
        return _Record(
            folder.name,
            spec,
            pid if isinstance(pid, int) else None,
            start_time if isinstance(start_time, int) else None,
            str(data["created_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _observed_digest(folder: Path, recorded: str) -> str:
    """The recorded digest if the unpacked image's digest file still says it, else unknown."""
    try:
        on_disk = (folder / DIGEST_FILE).read_text().strip()
    except OSError:
        return UNKNOWN_DIGEST
    return recorded if on_disk == recorded else UNKNOWN_DIGEST


def _unmanaged(folder: Path) -> Instance:
    created = datetime.fromtimestamp(folder.stat().st_mtime, UTC)
    return Instance(
        id=folder.name,
        environment="",
        service="",
        digest=UNKNOWN_DIGEST,
        created_at=format_time(created),
        port=None,
        labels={},
        health=Health.exited,
        managed=False,
    )


def _read_or_empty(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _remove_folder(folder: Path) -> None:
    """Delete an instance folder, read-only image root included."""
    if not folder.exists():
        return
    make_writable(folder)
    remove_tree(folder)  # not shutil.rmtree: it recurses once per level of an image's tree
