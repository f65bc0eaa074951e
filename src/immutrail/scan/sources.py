"""Where OSV records come from: JSON files, folders of them, and OSV's per-ecosystem zip archives.

Archives are read, never extracted: only ``*.json`` members are read, into memory, one at a
time, each checked against a size cap before it is read. Members with absolute names, ``..``
components, backslashes or NUL bytes are refused (an OSV archive never has them; a crafted one
that does is not an OSV archive), as are archives over the caps below, encrypted members and
members whose stored size lies (zipfile checks the CRC and the sizes while reading).
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from immutrail.files import FileTooLargeError, read_capped

from .errors import ArchiveError, OsvRecordError, ScanInputError
from .osv import MAX_RECORD_BYTES

MAX_ARCHIVE_BYTES = 2 * 1024 * 1024 * 1024
"""The largest archive accepted (OSV's largest, Debian's all.zip, is a few hundred MiB)."""
MAX_ARCHIVE_MEMBERS = 2_000_000
MAX_UNCOMPRESSED_BYTES = 16 * 1024 * 1024 * 1024
"""Sum of the members' stated sizes: a zip bomb is refused before anything is inflated."""
MAX_FOLDER_FILES = 2_000_000


@dataclass(frozen=True, slots=True)
class RecordBytes:
    """The bytes of one candidate record and where they came from (for messages)."""

    source: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One path given to the import, with the SHA-256 of its bytes (files and archives)."""

    path: str
    kind: str
    """``json``, ``zip`` or ``folder``."""
    sha256: str | None


def describe(path: Path) -> SourceFile:
    """Check that ``path`` is something we import and say what it is; nothing is read yet."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ScanInputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(mode):
        return SourceFile(str(path), "folder", None)
    if not stat.S_ISREG(mode):
        raise ScanInputError(f"{path}: not a file or folder")
    if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
        return SourceFile(str(path), "zip", _file_sha256(path))
    if path.suffix.lower() == ".json":
        return SourceFile(str(path), "json", _file_sha256(path))
    raise ScanInputError(f"{path}: neither an OSV .json file, a folder nor a .zip archive")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def read_source(source: SourceFile) -> Iterator[RecordBytes]:
    """Every candidate record of one source, in a stable order (sorted names)."""
    path = Path(source.path)
    if source.kind == "folder":
        yield from _read_folder(path)
    elif source.kind == "zip":
        yield from read_zip(path)
    else:
        yield RecordBytes(str(path), _read_file(path))


def _read_file(path: Path) -> bytes:
    try:
        return read_capped(path, MAX_RECORD_BYTES)
    except FileTooLargeError as exc:
        raise OsvRecordError(str(path), f"record is over {MAX_RECORD_BYTES} bytes") from exc
    except OSError as exc:
        raise ScanInputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def _read_folder(root: Path) -> Iterator[RecordBytes]:
    """``*.json`` files under ``root`` (recursively, symbolic links not followed)."""
    found: list[Path] = []
    for directory, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in files:
            if name.lower().endswith(".json"):
                candidate = Path(directory) / name
                if candidate.is_symlink() or not candidate.is_file():
                    continue
                found.append(candidate)
                if len(found) > MAX_FOLDER_FILES:
                    raise ScanInputError(f"{root}: more than {MAX_FOLDER_FILES} JSON files")
    for path in sorted(found):
        yield RecordBytes(str(path), _read_file(path))


def _check_member_name(archive: Path, name: str) -> None:
    parts = PurePosixPath(name).parts
    if (
        not name
        or name.startswith("/")
        or "\\" in name
        or "\x00" in name
        or ".." in parts
        or (len(name) > 1 and name[1] == ":")
    ):
        raise ArchiveError(f"{archive}: member {name!r} has an unsafe name (absolute or '..')")


def read_zip(path: Path) -> Iterator[RecordBytes]:
    """The ``.json`` members of an OSV archive, checked as described in the module docs."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ScanInputError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if size > MAX_ARCHIVE_BYTES:
        raise ArchiveError(f"{path}: {size} bytes, over the {MAX_ARCHIVE_BYTES}-byte limit")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError(f"{path}: not a readable zip archive ({exc})") from exc
    with archive:
        members = archive.infolist()
        if len(members) > MAX_ARCHIVE_MEMBERS:
            raise ArchiveError(f"{path}: more than {MAX_ARCHIVE_MEMBERS} members")
        total = 0
        wanted: list[zipfile.ZipInfo] = []
        for member in members:
            _check_member_name(path, member.filename)
            if member.is_dir() or not member.filename.lower().endswith(".json"):
                continue
            if member.flag_bits & 0x1:
                raise ArchiveError(f"{path}!{member.filename}: encrypted members are refused")
            if member.file_size > MAX_RECORD_BYTES:
                raise OsvRecordError(
                    f"{path}!{member.filename}",
                    f"record is {member.file_size} bytes, over {MAX_RECORD_BYTES}",
                )
            total += member.file_size
            wanted.append(member)
        if total > MAX_UNCOMPRESSED_BYTES:
            raise ArchiveError(f"{path}: members inflate to {total} bytes, over the limit")
        for member in sorted(wanted, key=lambda m: m.filename):
            source = f"{path}!{member.filename}"
            try:
                with archive.open(member) as stream:
                    data = stream.read(MAX_RECORD_BYTES + 1)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                raise ArchiveError(f"{source}: corrupt archive member ({exc})") from exc
            if len(data) > MAX_RECORD_BYTES:
                raise OsvRecordError(source, f"record is over {MAX_RECORD_BYTES} bytes")
            yield RecordBytes(source, data)
