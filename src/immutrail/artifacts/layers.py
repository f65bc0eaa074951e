"""The deterministic, streaming tar layer writer.

The same entries give the same bytes on any machine, on any day and under any umask:

* entries are sorted by path components, and every parent directory is emitted (0755, 0:0);
* one mtime for every entry (the commit time or ``SOURCE_DATE_EPOCH``, chosen by the caller);
* owner names are empty and ids are those of the entry (0:0 unless the definition says otherwise);
* only directories, regular files and symbolic links exist; nothing else can be expressed;
* the GNU tar format, so no PAX header (which would carry times and host details) is ever written;
* gzip with mtime 0, no file name and a fixed level; or (``compression: none``) no compression.

Bytes stream from the source to disk; a layer is never held in memory. A gzip layer passes
through two hashes (the uncompressed ``diff_id``, and the compressed blob digest computed by the
store's writer). Compression, the largest cost of a gzip build, runs in a second thread fed with
1 MiB chunks: zlib releases the GIL, so it overlaps with reading, tar headers and hashing. Deflate
without flushes gives the same bytes however its input is cut into calls, so the thread changes
no digest. An uncompressed layer is the tar itself: it passes through the store writer's one hash,
which is both its blob digest and its ``diff_id``.
"""

from __future__ import annotations

import gzip
import hashlib
import queue
import struct
import tarfile
import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from enum import StrEnum
from typing import BinaryIO, NamedTuple, Protocol

from .digests import HashingWriter, Writable
from .errors import SourceError
from .oci import LAYER_GZIP, LAYER_TAR

GZIP_LEVEL = 6
"""Changing the level changes every layer digest: it is part of the reproducibility contract."""

COMPRESSION_GZIP = "gzip"
COMPRESSION_NONE = "none"
"""The definition's ``compression``: gzip (the default) or uncompressed tar layers."""
MEDIA_TYPES = {COMPRESSION_GZIP: LAYER_GZIP, COMPRESSION_NONE: LAYER_TAR}
"""The media type of a layer written with each ``compression``."""
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


class WrittenMember(NamedTuple):
    """The header of one written entry as the tree is told it: the fields of a
    :class:`tarfile.TarInfo` that describe it, without building one (a tuple is made several
    times faster, for every entry of a layer)."""

    name: str
    type: bytes
    mode: int
    uid: int
    gid: int
    size: int
    linkname: str


class WrittenTree(Protocol):
    """Told every header as it is written (``rootfs.TreeMerger`` merges them into a RootFS)."""

    def keeps_content(self, path: str, size: int) -> bool: ...

    def apply_written(
        self, member: WrittenMember, sha256: str | None, content: bytes | None
    ) -> None: ...


@dataclass(frozen=True)
class LayerResult:
    diff_id: str
    """SHA-256 of the uncompressed tar: what the image config's ``rootfs.diff_ids`` lists."""
    uncompressed_size: int
    entries: int
    inputs: Mapping[str, str]
    """Repository path -> SHA-256 hex of every file read, hashed as it streamed past."""
    media_type: str = LAYER_GZIP
    """The layer's OCI media type: ``…tar+gzip``, or ``…tar`` when written uncompressed."""


def check_path(path: str) -> None:
    """Refuse a path that is not a plain relative path below the image root."""
    # "/" around it: an empty, absolute or trailing-slash path, or an empty, "." or ".."
    # component, shows as "//", "/./" or "/../" (no split: this runs for every entry)
    wrapped = f"/{path}/"
    if "//" in wrapped or "/./" in wrapped or "/../" in wrapped or "\0" in path:
        raise SourceError(f"{path!r} is not a normalized relative path inside the image")


def _key(entry: Entry) -> list[bytes]:
    """Layer order: by path components, as bytes."""
    return entry.path.encode("utf-8", "surrogateescape").split(b"/")


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
        parent = path.rpartition("/")[0]
        while parent:  # up to the first directory already there: its own walk checked above it
            existing = by_path.get(parent)
            if existing is None:
                by_path[parent] = Entry(parent, Kind.DIRECTORY, DIR_MODE)
            elif existing.kind is not Kind.DIRECTORY:
                raise SourceError(f"{parent!r} is a {existing.kind} but {path!r} is below it")
            else:
                break
            parent = parent.rpartition("/")[0]
    return CompleteEntries(sorted(by_path.values(), key=_key))


_TAR_TYPES = {
    Kind.DIRECTORY: tarfile.DIRTYPE,
    Kind.SYMLINK: tarfile.SYMTYPE,
    Kind.FILE: tarfile.REGTYPE,
}


def _member(entry: Entry) -> WrittenMember:
    """The header fields of ``entry``: mode without file-type bits, size for files only."""
    return WrittenMember(
        entry.path,
        _TAR_TYPES[entry.kind],
        entry.mode & 0o7777,
        entry.uid,
        entry.gid,
        entry.size if entry.kind is Kind.FILE else 0,
        entry.linkname if entry.kind is Kind.SYMLINK else "",
    )


def _tarinfo(member: WrittenMember, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(member.name)
    info.mtime = mtime
    info.mode = member.mode
    info.uid, info.gid = member.uid, member.gid
    info.uname = info.gname = ""
    info.type = member.type
    info.linkname = member.linkname
    info.size = member.size
    return info


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
        self._queue: queue.Queue[bytes | bytearray | None] = queue.Queue(maxsize=COMPRESS_QUEUE)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="layer-gzip", daemon=True
        )
        self._thread.start()

    def write(self, data: bytes | bytearray, /) -> int:
        if not self._pending and len(data) >= COMPRESS_CHUNK:
            self._queue_chunk(data)  # a whole chunk already: no copy
        else:
            self._pending += data
            if len(self._pending) >= COMPRESS_CHUNK:
                self._hand_over()
        return len(data)

    def flush(self) -> None:
        """Nothing to do: bytes reach the sink when :meth:`finish` has run."""

    def _hand_over(self) -> None:
        chunk, self._pending = self._pending, bytearray()
        self._queue_chunk(chunk)

    def _queue_chunk(self, chunk: bytes | bytearray) -> None:
        """Queue ``chunk``, which the caller never changes afterwards."""
        if self._error is not None:
            raise self._error
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


# The GNU tar header, as tarfile writes it (create_gnu_header): name, mode, uid, gid, size,
# mtime, checksum, type, linkname, magic, uname, gname, devmajor, devminor, prefix, padding.
_GNU_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8s32s32s8s8s155s12x")
_MAX_NAME = 100
_MAX_ID = 8**7
_MAX_NUMBER = 8**11
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_ZEROS = bytes(_RECORD)


def tar_header(member: WrittenMember, mtime: int) -> bytes:
    """The GNU-format header block(s) of a written entry (empty owner names), byte for byte
    what ``TarInfo.tobuf(GNU_FORMAT, "utf-8", "surrogateescape")`` gives.

    A layer's entries mostly fit one block with small octal numbers; those are packed here
    directly, several times faster than tarfile's general code (which took a tenth of a build of
    20,000 small files). Anything else (a name or link over 100 bytes, a large id, size or time)
    is left to tarfile; the tests compare both on generated entries.
    """
    block = _pack_header(member, mtime)
    if block is not None:
        return block
    return _tarinfo(member, mtime).tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def _pack_header(member: WrittenMember, when: int) -> bytes | None:
    """One GNU header block with empty owner names, or None when the entry needs more than
    :data:`_GNU_HEADER` can hold (tarfile then writes it)."""
    name = member.name.encode("utf-8", "surrogateescape")
    kind = member.type
    if kind == tarfile.DIRTYPE and not name.endswith(b"/"):
        name += b"/"
    link = member.linkname.encode("utf-8", "surrogateescape")
    size, uid, gid = member.size, member.uid, member.gid
    if (
        len(name) > _MAX_NAME
        or len(link) > _MAX_NAME
        or not (0 <= uid < _MAX_ID and 0 <= gid < _MAX_ID)
        or not (0 <= size < _MAX_NUMBER and 0 <= when < _MAX_NUMBER)
        or kind not in _FAST_TYPES
    ):
        return None
    numbers = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (member.mode & 0o7777, uid, gid, size, when)
    # the checksum is the sum of the block's bytes with its own field as spaces, as tarfile
    # does: the fixed fields' part is known, so only the variable bytes are summed (summing the
    # whole 512-byte block was a tenth of the header's cost)
    checksum = _FIXED_SUM + sum(name) + sum(numbers) + kind[0] + sum(link)
    return _GNU_HEADER.pack(
        name,
        numbers[0:8],
        numbers[8:16],
        numbers[16:24],
        numbers[24:36],
        numbers[36:48],
        b"%06o\0 " % checksum,
        kind,
        link,
        tarfile.GNU_MAGIC,
        b"",
        b"",
        b"",
        b"",
        b"",
    )


_FAST_TYPES = frozenset({tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE})
_FIXED_SUM = sum(b" " * 8) + sum(tarfile.GNU_MAGIC)
"""The checksum's part from the fixed fields: its own field as spaces and the magic."""


class _Pending:
    """Tar bytes gathered into :data:`COMPRESS_CHUNK` pieces before they go to the hash (and the
    compressor or the file): one call per MiB instead of three per entry."""

    __slots__ = ("_buffer", "_out")

    def __init__(self, out: HashingWriter):
        self._out = out
        self._buffer = bytearray()

    def add(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= COMPRESS_CHUNK:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            # handed over, never touched again: the gzip thread may still hold it
            buffer, self._buffer = self._buffer, bytearray()
            self._out.write(buffer)

    @property
    def size(self) -> int:
        """Every byte added so far, written or still gathered."""
        return self._out.size + len(self._buffer)

    def write_through(self, data: bytes) -> None:
        """A large piece: written as it is (after what was gathered), not copied."""
        self.flush()
        self._out.write(data)


def write_layer(
    entries: Iterable[Entry],
    sink: Writable,
    mtime: int,
    tree: WrittenTree | None = None,
    compression: str = COMPRESSION_GZIP,
) -> LayerResult:
    """Write the tar of ``entries`` to ``sink``, gzip-compressed or (``none``) as it is; return
    the diff_id.

    The tar is what :class:`tarfile.TarFile` in GNU format writes for the same members, byte for
    byte (headers, content padded to 512 bytes, two zero blocks, zeros to a 10240-byte record).
    ``sink`` receives the layer's bytes in order and nothing else; the caller hashes them. With
    ``none`` and a ``sink`` that is a fresh :class:`HashingWriter` (the store's blob writer),
    that one hash is the diff_id: the bytes are hashed once.
    ``tree``, when given, is told each header as it is written, with each file's digest.
    """
    if mtime < 0:
        raise SourceError(f"the layer time {mtime} is before 1970")
    if compression not in MEDIA_TYPES:
        raise SourceError(f"unknown layer compression {compression!r} (gzip or none)")
    ordered = complete(entries)
    inputs: dict[str, str] = {}
    compressed: _ThreadedGzip | None = None
    if compression == COMPRESSION_NONE:
        fresh = isinstance(sink, HashingWriter) and sink.size == 0
        uncompressed = sink if isinstance(sink, HashingWriter) and fresh else HashingWriter(sink)
    else:
        compressed = _ThreadedGzip(sink, GZIP_LEVEL)
        uncompressed = HashingWriter(compressed)
    try:
        out = _Pending(uncompressed)
        for entry in ordered:
            member = _member(entry)
            if entry.kind is Kind.FILE:
                digest = _add_file(out, entry, member, mtime, tree)
                if entry.source:
                    inputs[entry.source] = digest
            else:
                out.add(tar_header(member, mtime))
                if tree is not None:
                    tree.apply_written(member, None, None)
        end = out.size + 2 * _BLOCK
        out.add(_ZEROS[: 2 * _BLOCK + (-end % _RECORD)])  # end of archive, whole records
        out.flush()
        if compressed is not None:
            compressed.finish()
    finally:
        if compressed is not None:
            compressed.abort()
    return LayerResult(
        uncompressed.digest, uncompressed.size, len(ordered), inputs, MEDIA_TYPES[compression]
    )


def _add_file(
    out: _Pending, entry: Entry, member: WrittenMember, mtime: int, tree: WrittenTree | None
) -> str:
    """Header, content and padding of one regular file; the content's SHA-256 hex."""
    if entry.open is None:
        raise SourceError(f"no content for {entry.path!r}")
    size = entry.size
    keep = tree is not None and tree.keeps_content(entry.path, size)
    out.add(tar_header(member, mtime))
    with entry.open() as stream:
        if size <= COPY_BUFFER:  # most files: one read, hashed at once
            data = stream.read(size) if size else b""
            if len(data) != size:
                raise SourceError(f"{entry.path!r} changed while it was read: unexpected end")
            digest = hashlib.sha256(data).hexdigest()
            out.add(data)
            kept = data if keep else None
        else:
            hashed = hashlib.sha256()
            pieces: list[bytes] | None = [] if keep else None
            left = size
            while left:
                chunk = stream.read(min(left, COPY_BUFFER))
                if not chunk:
                    raise SourceError(f"{entry.path!r} changed while it was read: unexpected end")
                hashed.update(chunk)
                out.write_through(chunk)
                if pieces is not None:
                    pieces.append(chunk)
                left -= len(chunk)
            digest = hashed.hexdigest()
            kept = b"".join(pieces) if pieces is not None else None
    if size % _BLOCK:
        out.add(_ZEROS[: _BLOCK - size % _BLOCK])
    if tree is not None:
        tree.apply_written(member, digest, kept)
    return digest
