"""The files of an import's input, read safely: an OCI layout folder, or a tar (optionally gzip).

An archive is read once, as a stream, and every regular file is copied into a private temporary
folder under a *numbered* name: nothing the archive says about paths ever reaches the file
system, so a hostile name cannot write anywhere. While reading, each entry is checked and the
first bad one is refused naming the archive and the entry:

* names with a NUL byte, not valid UTF-8, longer than the limit, absolute, or with a ``..``;
* the same path twice (extractors disagree on which copy wins);
* device nodes, FIFOs and any type other than file, directory, symbolic and hard link;
* a symbolic link whose target leaves the archive root, or leads nowhere or to a directory;
* a hard link to anything but an earlier regular file;
* more entries, or larger files, than :class:`ImportLimits` allow;
* a stream that ends inside an entry or before the end-of-archive marker, or a gzip stream
  that is cut or corrupt.

Only gzip compression is read (the OCI archive form and what ``docker save | gzip`` gives); bzip2,
xz and zstd archives are refused by their magic bytes. A folder is walked without following
links; its links are checked by the same rules. Internal links are resolved, so the layout
reader sees one mapping: path inside the input -> a regular file on disk.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .import_errors import (
    ArchiveFormatError,
    ImportLimitError,
    ImportLimits,
    UnsafeArchiveError,
)

__all__ = ["SourceFiles", "open_source"]

_CHUNK = 1024 * 1024
_BLOCK = tarfile.BLOCKSIZE
_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_COMPRESSION = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}


@dataclass(frozen=True)
class SourceFiles:
    """The regular files of the input, by their path inside it (links already resolved)."""

    kind: str
    """``directory`` or ``archive``."""
    label: str
    """The input as the user named it, for messages."""
    files: Mapping[str, Path]
    """Path inside the input (``blobs/sha256/…``, no leading ``./``) -> a file on disk."""
    digest: str | None
    """SHA-256 of the archive file as given (None for a folder)."""
    compression: str | None
    """``gzip`` or ``none`` for an archive."""

    def has(self, name: str) -> bool:
        return name in self.files

    def size(self, name: str) -> int:
        return self.files[name].stat().st_size


class _CountingReader:
    """Counts the bytes of the tar stream, to tell a complete archive from a cut one."""

    def __init__(self, stream: gzip.GzipFile | _HashingReader):
        self._stream = stream
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.count += len(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


class _HashingReader:
    """Reads from ``stream`` and hashes every byte read, so the archive's digest is known."""

    def __init__(self, stream: IO[bytes]):
        self._stream = stream
        self.hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._stream.read(size)
        self.hash.update(data)
        return data

    def seek(self, offset: int, whence: int = 0, /) -> int:
        raise io.UnsupportedOperation("an archive is read as a stream")

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def normalise(label: str, entry: str, name: str, limits: ImportLimits) -> str:
    """The root-relative form of a path inside the input; UnsafeArchiveError if it could escape."""
    if "\x00" in name:
        raise UnsafeArchiveError(label, "the path contains a NUL byte", entry)
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeArchiveError(label, "the path is not valid UTF-8", repr(entry)) from None
    if len(encoded) > limits.max_name_bytes:
        raise ImportLimitError(
            label,
            f"the path is {len(encoded)} bytes long, over the {limits.max_name_bytes}-byte limit",
            entry[:200],
        )
    if name.startswith("/"):
        raise UnsafeArchiveError(label, "absolute paths are not allowed", entry)
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(label, "a '..' component could write outside the root", entry)
    return "/".join(parts)


def _link_target(label: str, entry: str, name: str, target: str, limits: ImportLimits) -> str:
    """A symbolic link's target as a root-relative path; refuses targets that leave the root."""
    if not target or "\x00" in target:
        raise UnsafeArchiveError(label, "empty or invalid symbolic link target", entry)
    if target.startswith("/"):
        raise UnsafeArchiveError(
            label, f"symbolic link to the absolute path {target!r} leaves the archive root", entry
        )
    resolved: list[str] = name.split("/")[:-1]
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                raise UnsafeArchiveError(
                    label, f"symbolic link target {target!r} points outside the archive", entry
                )
            resolved.pop()
        else:
            resolved.append(part)
    return normalise(label, entry, "/".join(resolved), limits)


class _Collector:
    """Entries seen so far; checks duplicates and counts; resolves links at the end."""

    def __init__(self, label: str, limits: ImportLimits):
        self.label = label
        self.limits = limits
        self.files: dict[str, Path] = {}
        self.dirs: set[str] = set()
        self.symlinks: dict[str, tuple[str, str]] = {}
        """path -> (resolved target path, the entry's name as written)"""
        self.count = 0
        self.total = 0

    def claim(self, entry: str, path: str) -> None:
        self.count += 1
        if self.count > self.limits.max_members:
            raise ImportLimitError(
                self.label, f"more than {self.limits.max_members} entries", entry[:200]
            )
        if path in self.files or path in self.dirs or path in self.symlinks:
            raise UnsafeArchiveError(self.label, "the path appears twice", entry)

    def account(self, entry: str, size: int) -> None:
        if size > self.limits.max_blob_bytes:
            raise ImportLimitError(
                self.label,
                f"{size} bytes, over the {self.limits.max_blob_bytes}-byte limit for one file",
                entry,
            )
        self.total += size
        if self.total > self.limits.max_total_bytes:
            raise ImportLimitError(
                self.label,
                f"the files add up to more than {self.limits.max_total_bytes} bytes",
                entry,
            )

    def resolved(self) -> dict[str, Path]:
        """Every path that is a regular file, through links; refuses dangling and looping ones."""
        out = dict(self.files)
        folders = set(self.dirs)
        for name in self.files:
            parts = name.split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
        for path, (target, entry) in sorted(self.symlinks.items()):
            seen = 0
            current = target
            while current in self.symlinks:
                seen += 1
                if seen > self.limits.max_link_hops:
                    raise UnsafeArchiveError(self.label, "too many levels of symbolic links", entry)
                current = self.symlinks[current][0]
            # a link below a linked directory is not followed: only whole-path links are.
            if current in self.files:
                out[path] = self.files[current]
            elif current in folders or not current:
                continue  # a link to a folder: harmless, nothing below it is looked up
            else:
                raise UnsafeArchiveError(
                    self.label, f"symbolic link to {target!r}, which is not in the archive", entry
                )
        return out


def _read_archive(path: Path, label: str, workdir: Path, limits: ImportLimits) -> SourceFiles:
    collector = _Collector(label, limits)
    try:
        raw = path.open("rb")
    except OSError as exc:
        raise ArchiveFormatError(label, f"cannot open: {exc.strerror or exc}") from exc
    last = "(start of archive)"
    with raw:
        magic = raw.read(6)
        raw.seek(0)
        for prefix, name in _OTHER_COMPRESSION.items():
            if magic.startswith(prefix):
                raise ArchiveFormatError(
                    label, f"{name}-compressed archives are not supported (use tar or tar+gzip)"
                )
        compression = "gzip" if magic.startswith(_GZIP_MAGIC) else "none"
        hashing = _HashingReader(raw)
        stream: gzip.GzipFile | _HashingReader = hashing
        if compression == "gzip":
            stream = gzip.GzipFile(fileobj=hashing, mode="rb")
        counting = _CountingReader(stream)
        try:
            with tarfile.open(fileobj=counting, mode="r|") as tar:  # type: ignore[call-overload]
                for member in tar:
                    last = member.name
                    _take_member(collector, tar, member, workdir, label)
                    tar.members.clear()  # a stream needs no index; keeps memory flat
                end = tar.offset
            counting.drain()  # to the end, so a cut or corrupt gzip tail is found
            hashing.drain()
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            where = "" if last == "(start of archive)" else f" in or after entry {last!r}"
            raise ArchiveFormatError(
                label, f"not a readable tar archive{where} (truncated or corrupt?): {exc}"
            ) from exc
        except UnicodeError as exc:  # pragma: no cover - tarfile decodes with surrogateescape
            raise ArchiveFormatError(label, f"undecodable header after {last!r}: {exc}") from exc
        if counting.count < end + _BLOCK:
            # tarfile takes a stream that stops at (or inside) a header for the end of the archive
            raise ArchiveFormatError(
                label, f"the archive stops after entry {last!r} without its end marker: truncated"
            )
    if collector.count == 0:
        raise ArchiveFormatError(label, "the archive holds no entries")
    return SourceFiles(
        "archive",
        label,
        collector.resolved(),
        f"sha256:{hashing.hash.hexdigest()}",
        compression,
    )


def _take_member(
    collector: _Collector,
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    workdir: Path,
    label: str,
) -> None:
    limits = collector.limits
    entry = member.name
    path = normalise(label, entry, entry, limits)
    if not path:
        if not member.isdir():
            raise UnsafeArchiveError(label, "an entry for the root that is not a directory", entry)
        return
    collector.claim(entry, path)
    if member.ischr() or member.isblk():
        raise UnsafeArchiveError(label, "device nodes are not allowed", entry)
    if member.isfifo():
        raise UnsafeArchiveError(label, "FIFOs are not allowed", entry)
    if member.isdir():
        collector.dirs.add(path)
    elif member.issym():
        target = _link_target(label, entry, path, member.linkname, limits)
        collector.symlinks[path] = (target, entry)
    elif member.islnk():
        target = normalise(label, entry, member.linkname, limits)
        linked = collector.files.get(target)
        if linked is None:
            raise UnsafeArchiveError(
                label,
                f"hard link to {member.linkname!r}, which is not an earlier regular file",
                entry,
            )
        collector.files[path] = linked
    elif member.isreg():
        collector.account(entry, member.size)
        source = tar.extractfile(member)
        if source is None:  # pragma: no cover - isreg() members always have a file object
            raise ArchiveFormatError(label, "no content", entry)
        target_file = workdir / f"{len(collector.files):08d}"
        written = 0
        with target_file.open("xb") as out:
            while chunk := source.read(_CHUNK):
                written += len(chunk)
                out.write(chunk)
        if written != member.size:  # pragma: no cover - tarfile raises on a short read first
            raise ArchiveFormatError(label, "the archive ends inside this entry", entry)
        collector.files[path] = target_file
    else:
        raise UnsafeArchiveError(label, f"unsupported tar entry type {member.type!r}", entry)


def _read_folder(root: Path, label: str, limits: ImportLimits) -> SourceFiles:
    collector = _Collector(label, limits)
    pending = [""]
    while pending:
        relative = pending.pop()
        folder = root / relative if relative else root
        try:
            with os.scandir(folder) as listing:
                children = sorted(listing, key=lambda item: item.name)
        except OSError as exc:
            detail = f"cannot list: {exc.strerror or exc}"
            raise ArchiveFormatError(label, detail, relative) from exc
        for child in children:
            name = f"{relative}/{child.name}" if relative else child.name
            path = normalise(label, name, name, limits)
            collector.claim(name, path)
            info = child.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                collector.dirs.add(path)
                pending.append(path)
            elif stat.S_ISLNK(info.st_mode):
                target = _link_target(label, name, path, os.readlink(child.path), limits)
                collector.symlinks[path] = (target, name)
            elif stat.S_ISREG(info.st_mode):
                collector.account(name, info.st_size)
                collector.files[path] = Path(child.path)
            elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
                raise UnsafeArchiveError(label, "device nodes are not allowed", name)
            else:
                raise UnsafeArchiveError(label, "only files, folders and links are allowed", name)
    return SourceFiles("directory", label, collector.resolved(), None, None)


@contextlib.contextmanager
def open_source(path: Path, limits: ImportLimits) -> Iterator[SourceFiles]:
    """The input's files; an archive is unpacked into a temporary folder removed at the end."""
    label = str(path)
    if path.is_dir():
        yield _read_folder(path, label, limits)
        return
    if not path.is_file():
        raise ArchiveFormatError(label, "no such file or folder")
    with tempfile.TemporaryDirectory(prefix="immutrail-import-") as tmp:
        yield _read_archive(path, label, Path(tmp), limits)
