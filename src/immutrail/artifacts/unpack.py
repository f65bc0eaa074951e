"""Unpack an image from the store into a folder: its root filesystem, as a runtime would see it.

Layers are applied in order with the OCI whiteout rules (``.wh.NAME`` removes NAME from the
layers below, ``.wh..wh..opq`` empties a directory). Every blob is verified against its digest
as it is read, and the whole image is first read through :class:`RootFS`, which refuses unsafe
entries (``..``, absolute names, escaping links, device nodes) before anything is written.
Extraction then uses tarfile's ``data`` filter as a second line of defence: it also strips
setuid/setgid bits and never writes outside the root.

With ``read_only`` every file and folder loses its write bits afterwards: an instance started
from the root cannot be patched in place by accident.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path, PurePosixPath

from .errors import ArtifactError
from .rootfs import RootFS
from .store import Store

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"


class UnpackError(ArtifactError):
    """The image cannot be unpacked into the given folder."""


def unpack_image(store: Store, digest: str, target: Path, *, read_only: bool = True) -> Path:
    """Write the root filesystem of image ``digest`` into ``target`` (a new or empty folder)."""
    if target.exists() and any(target.iterdir()):
        raise UnpackError(f"{target} is not empty: unpack into a new folder")
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    _, blobs = store.image_blobs(store.resolve(digest).digest)
    layers = blobs[1:]
    for layer in layers:
        store.verify_blob(layer.digest, layer.size)
    RootFS.from_layers([store.blob_path(layer.digest) for layer in layers])  # validates
    for layer in layers:
        with store.open_blob(layer.digest, layer.size) as stream:
            with tarfile.open(fileobj=stream, mode="r|*") as archive:  # type: ignore[call-overload]
                for member in archive:
                    _apply(archive, member, root)
            stream.drain()
    if read_only:
        make_read_only(root)
    return root


def _apply(archive: tarfile.TarFile, member: tarfile.TarInfo, root: Path) -> None:
    path = PurePosixPath(member.name.strip("/"))  # "./a/" -> "a"; RootFS refused ".." already
    if path.name == OPAQUE_WHITEOUT:
        folder = _inside(root, path.parent)
        if folder.is_dir() and not folder.is_symlink():
            for child in folder.iterdir():
                _remove(child)
        return
    if path.name.startswith(WHITEOUT_PREFIX):
        _remove(_inside(root, path.parent / path.name.removeprefix(WHITEOUT_PREFIX)))
        return
    destination = _inside(root, path)
    # An upper layer replaces what a lower one put at the same path (a file over a symlink,
    # say); removing first also means the write below can never follow an old link.
    if os.path.lexists(destination) and not (member.isdir() and destination.is_dir()):
        _remove(destination)
    archive.extract(member, root, filter="data")


def _inside(root: Path, relative: PurePosixPath) -> Path:
    """``root/relative`` after checking that no existing parent is a link out of ``root``."""
    candidate = root.joinpath(*relative.parts)
    parent = candidate.parent.resolve()
    if parent != root and root not in parent.parents:
        raise UnpackError(f"{relative} would be written outside the image root")
    return parent / candidate.name


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def make_read_only(root: Path) -> None:
    """Clear every write bit below ``root`` (links are left alone: their mode means nothing)."""
    for folder, dirs, files in os.walk(root, topdown=False):
        for name in files + dirs:
            _clear_write(Path(folder, name))
    _clear_write(root)


def make_writable(root: Path) -> None:
    """Give the owner write access again, so that the unpacked root can be deleted."""
    for folder, dirs, _ in os.walk(root):
        for name in dirs:
            path = Path(folder, name)
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)
    root.chmod(root.stat().st_mode | stat.S_IWUSR | stat.S_IXUSR)


def _clear_write(path: Path) -> None:
    info = path.lstat()
    if not stat.S_ISLNK(info.st_mode):
        path.chmod(stat.S_IMODE(info.st_mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
