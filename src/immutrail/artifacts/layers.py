"""The deterministic, streaming tar layer writer.

The same entries give the same bytes on any machine, on any day and under any umask:

* entries are sorted by path components, and every parent directory is emitted (0755, 0:0);
* one mtime for every entry (the commit time or ``SOURCE_DATE_EPOCH``, chosen by the caller);
* owner names are empty and ids are those of the entry (0:0 unless the definition says otherwise);
* only directories, regular files and symbolic links exist; nothing else can be expressed;
* the GNU tar format, so no PAX header (which would carry times and host details) is ever written;
* gzip with mtime 0, no file name and a fixed level.

Bytes stream from the source through two hashes (the uncompressed ``diff_id``, and the compressed
blob digest computed by the store's writer) to disk; a layer is never held in memory. Compression,
the largest cost of a build, runs in a second thread fed with 1 MiB chunks: zlib releases the GIL,
so it overlaps with reading, tar headers and hashing. Deflate without flushes gives the same bytes
however its input is cut into calls, so the thread changes no digest.
"""

from __future__ import annotations

import gzip
import hashlib
import queue
import tarfile
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO, Protocol

from .digests import HashingWriter, Writable
from .errors import SourceError

GZIP_LEVEL = 6
"""Changing the level changes every layer digest: it is part of the reproducibility contract."""

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
COPY_BUFFER = 1024 * 1024
COMPRESS_CHUNK = 1024 * 1024
"""Uncompressed bytes handed to the compressing thread at a time."""
COMPRESS_QUEUE = 4
"""Chunks waiting for the compressing thread at most: memory stays bounded (4 MiB)."""
DIR_MODE = 0o755
FILE_MODE = 0o644
EXEC_MODE = 0o755
LINK_MODE = 0o777


class Kind(StrEnum):
    DIRECTORY = "directory"
    FILE = "file"
    SYMLINK = "symlink"


Opener = Callable[[], AbstractContextManager[BinaryIO]]


@dataclass(frozen=True, slots=True)
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


class WrittenTree(Protocol):
    """Told every header as it is written (``rootfs.TreeMerger`` merges them into a RootFS)."""

    def keeps_content(self, path: str, size: int) -> bool: ...

    def apply_written(
        self, member: tarfile.TarInfo, sha256: str | None, content: bytes | None
    ) -> None: ...


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


class CompleteEntries(tuple[Entry, ...]):
    """Entries as :func:`complete` returns them: checked, parents added, in layer order."""

    __slots__ = ()


def complete(entries: Iterable[Entry]) -> CompleteEntries:
    """Add missing parent directories, refuse duplicates and files used as directories, sort."""
    if isinstance(entries, CompleteEntries):
        return entries
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
    return CompleteEntries(sorted(by_path.values(), key=lambda e: _key(e.path)))


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
    """Hashes what tarfile reads from a source file, so input digests cost no second pass; keeps
    the bytes too when ``keep`` (a package database the SBOM will read)."""

    def __init__(self, stream: BinaryIO, keep: bool):
        self._stream = stream
        self.hash = hashlib.sha256()
        self.kept: list[bytes] | None = [] if keep else None

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self.hash.update(data)
        if self.kept is not None:
            self.kept.append(data)
        return data


class _ThreadedGzip:
    """A gzip stream whose compression runs in its own thread (see the module's docstring).

    Writes are gathered into :data:`COMPRESS_CHUNK` pieces and queued; the thread writes them
    through :class:`gzip.GzipFile` (fixed header: no name, mtime 0) into ``sink``, which only
    that thread touches until :meth:`finish` has joined it.
    """

    def __init__(self, sink: Writable, level: int):
        self._gzip = gzip.GzipFile(
            filename="", mode="wb", compresslevel=level, fileobj=sink, mtime=0
        )
        self._pending = bytearray()
        self._queue: queue.Queue[bytearray | None] = queue.Queue(maxsize=COMPRESS_QUEUE)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="layer-gzip", daemon=True
        )
        self._thread.start()

    def write(self, data: bytes, /) -> int:
        self._pending += data
        if len(self._pending) >= COMPRESS_CHUNK:
            self._hand_over()
        return len(data)

    def flush(self) -> None:
        """Nothing to do: bytes reach the sink when :meth:`finish` has run."""

    def _hand_over(self) -> None:
        if self._error is not None:
            raise self._error
        chunk, self._pending = self._pending, bytearray()
        self._queue.put(chunk)

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:  # after an error, only drain so the writer never blocks
                try:
                    self._gzip.write(chunk)
                except BaseException as exc:  # re-raised in the writing thread
                    self._error = exc

    def _stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def finish(self) -> None:
        """Compress what is left, write the gzip trailer; raise what the thread met."""
        if self._pending:
            self._hand_over()
        self._stop()
        if self._error is not None:
            raise self._error
        self._gzip.close()

    def abort(self) -> None:
        """Stop the thread without finishing the stream (the caller discards the sink)."""
        self._stop()


class _TarTarget(HashingWriter):
    """What tarfile writes into: it asks ``tell()`` once (the byte count answers), never reads."""

    def tell(self) -> int:
        return self.size

    def read(self, size: int, /) -> bytes:
        raise OSError("a layer being written cannot be read")

    def seek(self, pos: int, /) -> int:
        raise OSError("a layer is written as a stream")

    def close(self) -> None:
        """The gzip stream below is finished by :func:`write_layer`, after the tar trailer."""


def write_layer(
    entries: Iterable[Entry], sink: Writable, mtime: int, tree: WrittenTree | None = None
) -> LayerResult:
    """Write the gzip-compressed tar of ``entries`` to ``sink``; return the diff_id.

    ``sink`` receives the compressed bytes in order and nothing else; the caller hashes them.
    ``tree``, when given, is told each header as it is written, with each file's digest.
    """
    if mtime < 0:
        raise SourceError(f"the layer time {mtime} is before 1970")
    ordered = complete(entries)
    inputs: dict[str, str] = {}
    compressed = _ThreadedGzip(sink, GZIP_LEVEL)
    uncompressed = _TarTarget(compressed)
    try:
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
                _add(tar, entry, _tarinfo(entry, mtime), inputs, tree)
                # in write mode this is the list tarfile keeps of every member written, which
                # nothing reads: emptied, memory stays flat whatever the number of files
                tar.getmembers().clear()
        finally:
            tar.close()
        compressed.finish()
    finally:
        compressed.abort()
    return LayerResult(uncompressed.digest, uncompressed.size, len(ordered), inputs)


def _add(
    tar: tarfile.TarFile,
    entry: Entry,
    info: tarfile.TarInfo,
    inputs: dict[str, str],
    tree: WrittenTree | None,
) -> None:
    if entry.kind is not Kind.FILE:
        tar.addfile(info)
        if tree is not None:
            tree.apply_written(info, None, None)
        return
    if entry.open is None:
        raise SourceError(f"no content for {entry.path!r}")
    keep = tree is not None and tree.keeps_content(entry.path, entry.size)
    with entry.open() as stream:
        reader = _HashingReader(stream, keep)
        try:
            tar.addfile(info, reader)
        except OSError as exc:
            raise SourceError(f"{entry.path!r} changed while it was read: {exc}") from exc
    digest = reader.hash.hexdigest()
    if entry.source:
        inputs[entry.source] = digest
    if tree is not None:
        tree.apply_written(info, digest, b"".join(reader.kept) if reader.kept is not None else None)
