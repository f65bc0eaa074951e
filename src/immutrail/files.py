"""Files a user names: reading one under a size limit, and writing one without surprises.

The size ``stat`` reports says nothing about devices, pipes and ``/proc`` files (``/dev/zero``
reports 0 bytes and never ends) and may change before the read, so the limit is enforced on the
read itself; ``stat`` only refuses an oversized regular file before any of it is read.

An output file is written to a temporary file beside it and renamed into place, so the rename
would replace whatever the name holds: :func:`check_output` allows only a new name, or a regular
file when the user said ``--overwrite``, and :func:`atomic_output` checks again just before the
rename.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

# The temporary file is ".<name>.<random>": a name near NAME_MAX would make it too long.
_TEMP_NAME_CHARS = 64


class FileTooLargeError(OSError):
    """A file over its limit. An OSError (EFBIG), so callers' ``except OSError`` report it."""

    def __init__(self, path: Path | str, limit: int):
        super().__init__(errno.EFBIG, f"larger than the {limit}-byte limit", str(path))
        self.limit = limit


def read_capped(path: Path | str, limit: int) -> bytes:
    """All of ``path``'s bytes, or FileTooLargeError once more than ``limit`` could be read.

    Opening a folder raises IsADirectoryError; a FIFO blocks until a writer opens it, as
    ``cat`` would.
    """
    with open(path, "rb") as stream:
        info = os.fstat(stream.fileno())
        if stat.S_ISREG(info.st_mode) and info.st_size > limit:
            raise FileTooLargeError(path, limit)
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise FileTooLargeError(path, limit)
    return data


def read_capped_text(path: Path | str, limit: int) -> str:
    """:func:`read_capped`, decoded as UTF-8 (UnicodeDecodeError, a ValueError, if it is not)."""
    return read_capped(path, limit).decode("utf-8")


class OutputPathError(ValueError):
    """An output path that may not be written: each part maps it to its own input error."""

    def diagnostics(self) -> str:
        return str(self)


def check_output(path: Path, overwrite: bool) -> Path:
    """The folder ``path`` would be written in; OutputPathError unless ``path`` is absent, or a
    regular file and ``overwrite`` is given.

    Never follows a symbolic link: a link, a folder, a device, a FIFO or a socket is refused
    whatever ``overwrite`` says, since the rename that writes the file would replace it.
    """
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:  # a name too long, a file used as a folder, a loop of links
        raise OutputPathError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # an embedded NUL byte
        raise OutputPathError(f"cannot write {path!r}: {exc}") from exc
    if mode is not None:
        if stat.S_ISLNK(mode):
            raise OutputPathError(
                f"{path} is a symbolic link; name a regular file (a link is never replaced)"
            )
        if stat.S_ISDIR(mode):
            raise OutputPathError(f"{path} is a folder; name a file to write")
        if not stat.S_ISREG(mode):
            raise OutputPathError(
                f"{path} is not a regular file (a device, a FIFO or a socket); nothing is written"
            )
        if not overwrite:
            raise OutputPathError(f"{path} exists; add --overwrite to replace it")
    folder = path.parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise OutputPathError(f"cannot write {path}: the folder {folder} {what}")
    return folder


@contextmanager
def atomic_output(path: Path, *, overwrite: bool, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A stream whose bytes become ``path`` (with ``mode``) only if the block ends normally.

    :func:`check_output` runs before the temporary file is made and again just before the
    rename, since something may have appeared at ``path`` while the data was written. The
    temporary file is removed on any error.
    """
    folder = check_output(path, overwrite)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name[:_TEMP_NAME_CHARS]}.")
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, mode)
        check_output(path, overwrite)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_folder(folder)  # the rename itself survives a crash only once the folder is synced


def fsync_folder(folder: Path) -> None:
    """Make the names in ``folder`` (a rename, a new file) durable, as fsync makes bytes."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
