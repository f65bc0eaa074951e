"""Reading a file a user names, under a size limit that holds whatever the file turns out to be.

The size ``stat`` reports says nothing about devices, pipes and ``/proc`` files (``/dev/zero``
reports 0 bytes and never ends) and may change before the read, so the limit is enforced on the
read itself; ``stat`` only refuses an oversized regular file before any of it is read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


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
