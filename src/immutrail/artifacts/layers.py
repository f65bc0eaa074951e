"""The deterministic, streaming tar layer writer.

The same entries give the same bytes on any machine, on any day and under any umask:

* entries are sorted by path components, and every parent directory is emitted (0755, 0:0);
* one mtime for every entry (the commit time or ``SOURCE_DATE_EPOCH``, chosen by the caller);
* owner names are empty and ids are those of the entry (0:0 unless the definition says otherwise);
* only directories, regular files and symbolic links exist; nothing else can be expressed;
* the GNU tar format, so no PAX header (which would carry times and host details) is ever written;
* gzip with mtime 0, no file name and a fixed level.

Bytes stream from the source through two hashes (the uncompressed ``diff_id``, and the compressed
blob digest computed by the store's writer) to disk; a layer is never held in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO

from .digests import HashingWriter, Writable
from .errors import SourceError

GZIP_LEVEL = 6
"""Changing the level changes every layer digest: it is part of the reproducibility contract."""

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
COPY_BUFFER = 1024 * 1024
DIR_MODE = 0o755
FILE_MODE = 0o644
EXEC_MODE = 0o755
LINK_MODE = 0o777


class Kind(StrEnum):
    DIRECTORY = "directory"
    FILE = "file"
    SYMLINK = "symlink"


Opener = Callable[[], AbstractContextManager[BinaryIO]]


@dataclass(frozen=True)
class Entry:
    """One tar entry. ``path`` is relative to the image root, ``/``-separated, without ``./``."""

    path: str
    kind: Kind
    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    linkname: str = ""
    open: Opener | None = None
    """For files: returns a stream of exactly ``size`` bytes."""
    source: str = ""
    """For files: the repository path it came from; its SHA-256 is reported (for provenance)."""


@dataclass(frozen=True)
class LayerResult:
    diff_id: str
    """SHA-256 of the uncompressed tar: what the image config's ``rootfs.diff_ids`` lists."""
    uncompressed_size: int
    entries: int
    inputs: Mapping[str, str]
    """Repository path -> SHA-256 hex of every file read, hashed as it streamed past."""


def check_path(path: str) -> None:
    """Refuse a path that is not a plain relative path below the image root."""
    parts = path.split("/")
    if not path or path.startswith("/") or "\0" in path or any(p in ("", ".", "..") for p in parts):
        raise SourceError(f"{path!r} is not a normalized relative path inside the image")


def _key(path: str) -> tuple[bytes, ...]:
    return tuple(part.encode("utf-8", "surrogateescape") for part in path.split("/"))


def complete(entries: Iterable[Entry]) -> list[Entry]:
    """Add missing parent directories, refuse duplicates and files used as directories, sort."""
    by_path: dict[str, Entry] = {}
    for entry in entries:
        check_path(entry.path)
        if entry.path in by_path:
            raise SourceError(f"the layer has two entries for {entry.path!r}")
        by_path[entry.path] = entry
    for path in list(by_path):
        parts = path.split("/")
        for end in range(1, len(parts)):
            parent = "/".join(parts[:end])
            existing = by_path.get(parent)
            if existing is None:
                by_path[parent] = Entry(parent, Kind.DIRECTORY, DIR_MODE)
            elif existing.kind is not Kind.DIRECTORY:
                raise SourceError(f"{parent!r} is a {existing.kind} but {path!r} is below it")
    return sorted(by_path.values(), key=lambda e: _key(e.path))


def _tarinfo(entry: Entry, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mtime = mtime
    info.mode = entry.mode & 0o7777
    info.uid, info.gid = entry.uid, entry.gid
    info.uname = info.gname = ""
    if entry.kind is Kind.DIRECTORY:
        info.type = tarfile.DIRTYPE
    elif entry.kind is Kind.SYMLINK:
        info.type = tarfile.SYMTYPE
        info.linkname = entry.linkname
    else:
        info.type = tarfile.REGTYPE
        info.size = entry.size
    return info


class _HashingReader:
    """Hashes what tarfile reads from a source file, so input digests cost no second pass."""

    def __init__(self, stream: BinaryIO):
        self._stream = stream
        self.hash = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self.hash.update(data)
        return data


class _TarTarget(HashingWriter):
    """What tarfile writes into: it asks ``tell()`` once (the byte count answers), never reads."""

    def tell(self) -> int:
        return self.size

    def read(self, size: int, /) -> bytes:
        raise OSError("a layer being written cannot be read")

    def seek(self, pos: int, /) -> int:
        raise OSError("a layer is written as a stream")

    def close(self) -> None:
        """The gzip stream below is closed by :func:`write_layer`, after the tar trailer."""


def write_layer(entries: Iterable[Entry], sink: Writable, mtime: int) -> LayerResult:
    """Write the gzip-compressed tar of ``entries`` to ``sink``; return the diff_id.

    ``sink`` receives the compressed bytes in order and nothing else; the caller hashes them.
    """
    if mtime < 0:
        raise SourceError(f"the layer time {mtime} is before 1970")
    ordered = complete(entries)
    inputs: dict[str, str] = {}
    compressed = gzip.GzipFile(
        filename="", mode="wb", compresslevel=GZIP_LEVEL, fileobj=sink, mtime=0
    )
    uncompressed = _TarTarget(compressed)
    with compressed:
        tar = tarfile.TarFile(
            fileobj=uncompressed,
            mode="w",
            format=tarfile.GNU_FORMAT,
            encoding="utf-8",
            errors="surrogateescape",
            copybufsize=COPY_BUFFER,
        )
        try:
            for entry in ordered:
                info = _tarinfo(entry, mtime)
                if entry.kind is Kind.FILE:
                    if entry.open is None:
                        raise SourceError(f"no content for {entry.path!r}")
                    with entry.open() as stream:
                        reader = _HashingReader(stream)
                        try:
                            tar.addfile(info, reader)
                        except OSError as exc:
                            raise SourceError(
                                f"{entry.path!r} changed while it was read: {exc}"
                            ) from exc
                    if entry.source:
                        inputs[entry.source] = reader.hash.hexdigest()
                else:
                    tar.addfile(info)
        finally:
            tar.close()
    return LayerResult(uncompressed.digest, uncompressed.size, len(ordered), inputs)
