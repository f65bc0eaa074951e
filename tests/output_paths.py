"""Paths an output option must never write through, shared by the tests of every command that
writes a user-named file (``immutrail.files.check_output``)."""

from __future__ import annotations

import os
from pathlib import Path


def not_outputs(folder: Path, suffix: str = "") -> dict[str, tuple[Path, str]]:
    """A FIFO, a dangling link, a link to a regular file, a folder and a device, each with what
    the error calls it; made in ``folder``, names ending in ``suffix``."""
    fifo = folder / f"fifo{suffix}"
    os.mkfifo(fifo)
    dangling = folder / f"dangling{suffix}"
    dangling.symlink_to(folder / f"nowhere{suffix}")
    kept = folder / f"kept{suffix}"
    kept.write_text("keep me")
    linked = folder / f"linked{suffix}"
    linked.symlink_to(kept)
    made = folder / f"folder{suffix}"
    made.mkdir()
    return {
        "fifo": (fifo, "is not a regular file"),
        "dangling": (dangling, "is a symbolic link"),
        "linked": (linked, "is a symbolic link"),
        "folder": (made, "is a folder"),
        "device": (Path("/dev/null"), "is not a regular file"),
    }
