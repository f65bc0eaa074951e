"""Compare a Docker container's filesystem with its image, through the Engine API.

Two views are combined:

* the **content**: ``GET /containers/{id}/archive?path=/`` (docker-py ``get_archive("/")``) is
  read as a stream; every regular file is hashed as it passes and every path compared with the
  expected tree by the ``image`` rules (modes, setuid bits and owners exactly as the image says).
  Nothing is written to disk and memory stays flat whatever the size of the container.
* the **engine's own changes**: ``GET /containers/{id}/changes`` (``container.diff()``), the
  paths written to the container's writable layer. A path the engine reports while its content,
  mode and owner still match (written and restored, or touched) is a ``modified`` finding with a
  ``layer`` difference; a path both views report carries ``engine`` in its finding.

Paths the runtime owns are ignored with everything below them: the mount points the engine lists
(the ``/tmp`` tmpfs scratch, configuration files bound read-only), the files Docker manages in
every container (``/.dockerenv``, ``/etc/hostname``, ``/etc/hosts``, ``/etc/resolv.conf``,
``/etc/mtab``, ``/dev``, ``/proc``, ``/sys``) and Docker's init (``/sbin/docker-init``) when the
container runs with ``--init``; plus the caller's ``ignore``. A folder the engine created only to
hold such a mount point is ignored too.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, cast

from .compare import (
    IgnoreSet,
    Observed,
    Profile,
    Rules,
    added,
    compare,
    display,
    removed,
)
from .errors import DriftInputError, EngineError
from .expected import ExpectedTree, Kind
from .findings import Change, Difference, Finding, IntegrityReport

__all__ = ["DOCKER_MANAGED", "check_container"]

DOCKER_MANAGED = (
    ".dockerenv",
    "dev",
    "proc",
    "sys",
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/mtab",
)
"""Paths Docker creates or binds in every container (its "init layer")."""
DOCKER_INIT = "sbin/docker-init"
READ_CHUNK = 1024 * 1024
_ENGINE_CHANGES = {0: "changed", 1: "added", 2: "deleted"}


class _ChunkReader(io.RawIOBase):
    """A file object over the byte chunks docker-py yields, for tarfile's stream mode."""

    def __init__(self, chunks: Iterable[bytes]):
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        count = min(len(target), len(self._pending))
        target[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count


@contextmanager
def _engine(action: str) -> Iterator[None]:
    import docker.errors  # type: ignore[import-untyped]  # docker-py ships no types
    import requests

    try:
        yield
    except docker.errors.NotFound as exc:
        raise DriftInputError(f"{action}: the engine has no such container ({exc})") from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise EngineError(f"{action}: the Docker engine failed: {exc}") from exc


def check_container(
    client: Any,
    container_id: str,
    expected: ExpectedTree,
    *,
    ignore: Sequence[str] = (),
    engine_changes: bool = True,
) -> IntegrityReport:
    """Compare container ``container_id`` (name or ID) of the engine ``client`` (a
    ``docker.DockerClient``) with ``expected``, the tree of the image it was created from.

    Raises DriftInputError when the engine has no such container or when it runs another image
    than ``expected`` describes, EngineError when the engine fails.
    """
    started = time.perf_counter()
    with _engine(f"container {container_id}"):
        container = client.containers.get(container_id)
        attrs: dict[str, Any] = container.attrs
    image_id = attrs.get("Image")
    if image_id != expected.config:
        raise DriftInputError(
            f"container {container_id} runs the image {image_id}, but the expected tree is of "
            f"{expected.image} (image ID {expected.config}): compare it with its own image"
        )
    ignored = IgnoreSet([*runtime_paths(attrs), *ignore])
    notes: list[str] = []
    if not (attrs.get("HostConfig") or {}).get("ReadonlyRootfs"):
        notes.append("the container's root filesystem is writable (not started by immutrail)")
    if expected.cache_problem:
        notes.append(f"expected tree rebuilt: {expected.cache_problem}")
    changes: list[dict[str, Any]] = []
    if engine_changes:
        with _engine(f"the changes of container {container_id}"):
            changes = container.diff() or []
    reader = _ArchiveCheck(expected, ignored)
    with _engine(f"the filesystem of container {container_id}"):
        chunks, _ = container.get_archive("/", chunk_size=READ_CHUNK)
        reader.run(chunks)
    findings = reader.findings
    findings.extend(
        removed(display(entry.path), entry)
        for entry in expected
        if entry.path not in reader.seen and not ignored.covers(entry.path)
    )
    findings = _merge_engine(findings, changes, ignored, expected, reader.directories)
    return IntegrityReport.build(
        findings,
        image=expected.image,
        target=str(container.name),
        runtime="docker",
        entries_checked=reader.entries,
        files_checked=reader.files,
        files_hashed=reader.files_hashed,
        files_trusted=0,
        bytes_hashed=reader.bytes_hashed,
        duration_seconds=time.perf_counter() - started,
        full=True,
        expected_source=expected.source,
        notes=tuple(notes),
    )


def runtime_paths(attrs: dict[str, Any]) -> list[str]:
    """The paths of a container that belong to the runtime, not to the image."""
    host = attrs.get("HostConfig") or {}
    paths = list(DOCKER_MANAGED)
    paths.extend(
        str(m.get("Destination")) for m in attrs.get("Mounts") or [] if m.get("Destination")
    )
    paths.extend(str(point) for point in (host.get("Tmpfs") or {}))
    if host.get("Init"):
        paths.append(DOCKER_INIT)
    return [p for p in paths if p.strip("/")]


def _relative(name: str) -> str:
    return "/".join(part for part in name.split("/") if part not in ("", "."))


class _ArchiveCheck:
    """Reads the container's archive once, comparing each member as it passes."""

    def __init__(self, expected: ExpectedTree, ignored: IgnoreSet):
        self.expected = expected
        self.ignored = ignored
        self.rules = Rules(Profile.IMAGE)
        self.findings: list[Finding] = []
        self.seen: set[str] = set()
        self.directories: set[str] = set()
        self.contents: dict[str, tuple[str, int]] = {}
        self.entries = 0
        self.files = 0
        self.files_hashed = 0
        self.bytes_hashed = 0

    def run(self, chunks: Iterable[bytes]) -> None:
        stream = io.BufferedReader(_ChunkReader(chunks), READ_CHUNK)
        try:
            with tarfile.open(fileobj=stream, mode="r|") as archive:
                for member in archive:
                    self._member(archive, member)
                    # a stream needs no index (getmembers() would read to the end): flat memory
                    cast(Any, archive).members.clear()
        except (tarfile.TarError, EOFError) as exc:
            raise EngineError(f"the engine sent an unreadable archive: {exc}") from exc

    def _member(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        path = _relative(member.name)
        if not path or self.ignored.covers(path):
            return
        self.seen.add(path)
        self.entries += 1
        sha256: str | None = None
        size = 0
        link: str | None = None
        if member.isreg():
            sha256, size = self._hash(archive, member)
            self.contents[path] = (sha256, size)
            kind = str(Kind.FILE)
        elif member.islnk():
            sha256, size = self.contents.get(_relative(member.linkname), (None, 0))
            kind = str(Kind.FILE)
        elif member.isdir():
            kind = str(Kind.DIRECTORY)
            self.directories.add(path)
        elif member.issym():
            kind, link = str(Kind.SYMLINK), member.linkname
        elif member.isfifo():
            kind = str(Kind.FIFO)
        elif member.ischr():
            kind = "char-device"
        elif member.isblk():
            kind = "block-device"
        else:
            kind = "unknown"
        if kind == Kind.FILE:
            self.files += 1
        observed = Observed(kind, member.mode & 0o7777, member.uid, member.gid, size, sha256, link)
        want = self.expected.get(path)
        if want is None:
            if not (kind == Kind.DIRECTORY and self.ignored.holds(path)):
                self.findings.append(added(display(path), observed))
            return
        finding = compare(display(path), want, observed, self.rules)
        if finding is not None:
            self.findings.append(finding)

    def _hash(self, archive: tarfile.TarFile, member: tarfile.TarInfo) -> tuple[str, int]:
        source = archive.extractfile(member)
        digest = hashlib.sha256()
        size = 0
        if source is not None:
            while chunk := source.read(READ_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        self.files_hashed += 1
        self.bytes_hashed += size
        return digest.hexdigest(), size


def _merge_engine(
    findings: list[Finding],
    changes: Sequence[dict[str, Any]],
    ignored: IgnoreSet,
    expected: ExpectedTree,
    directories: set[str],
) -> list[Finding]:
    """Add what the engine says it changed to the findings of the content check."""
    by_path = {f.path: f for f in findings}
    for change in changes:
        path = _relative(str(change.get("Path", "")))
        what = _ENGINE_CHANGES.get(change.get("Kind", -1), "changed")
        if not path or ignored.covers(path):
            continue
        if ignored.holds(path) and expected.get(path) is None:
            continue  # a folder the engine made to hold a mount point
        shown = display(path)
        known = by_path.get(shown)
        if known is not None:
            by_path[shown] = replace(known, engine=what)
            continue
        if path in directories and any(p.startswith(shown + "/") for p in by_path):
            continue  # a folder changes when something below it does: that is reported
        if what == "deleted":
            by_path[shown] = Finding(
                shown, Change.REMOVED, detail="reported deleted by the engine", engine=what
            )
            continue
        want = expected.get(path)
        by_path[shown] = Finding(
            shown,
            Change.MODIFIED,
            "directory" if path in directories else (str(want.kind) if want else None),
            (Difference("layer", "image", "container's writable layer"),),
            detail="written in the container's writable layer; content, mode and owner still "
            "match the image",
            engine=what,
        )
    return list(by_path.values())
