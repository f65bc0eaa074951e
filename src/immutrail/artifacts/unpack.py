"""Unpack an image from the store into a folder: its root filesystem, as a runtime would see it.

Layers are applied in order with the OCI whiteout rules (``.wh.NAME`` removes NAME from the
layers below, ``.wh..wh..opq`` empties a directory). Every blob is verified against its digest
as it is read, and the whole image is first read through :class:`RootFS`, which refuses unsafe
entries (``..``, absolute names, escaping links, device nodes) before anything is written.
Extraction then uses tarfile's ``data`` filter as a second line of defence: it also strips
setuid/setgid bits and never writes outside the root.

Symbolic links are written as the image has them, absolute targets included (``/bin/sh ->
/bin/busybox`` is normal in an image): an absolute target means the image's root, which only a
runtime that chroots into the tree resolves correctly. Nothing here ever follows a link (no
layer writes through one, :class:`RootFS` refuses that), and whoever reads the tree must not
either: ``lstat``, never ``stat``, and a link's target read with ``readlink``.

Walking and deleting the tree is iterative: an image's depth must not be Python's recursion
depth.

With ``read_only`` every file and folder loses its write bits afterwards: an instance started
from the root cannot be patched in place by accident.
"""

from __future__ import annotations

import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from .errors import ArtifactError
from .rootfs import RootFS
from .store import Store

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
PATH_MAX = 4096
"""Linux's limit on a path given to a system call, its final NUL included."""


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
    if len(os.fsencode(root.joinpath(*path.parts))) >= PATH_MAX:
        raise UnpackError(
            f"{member.name[:80]!r}…: the path is too long to unpack below {root} "
            f"(at most {PATH_MAX - 1} bytes in all)"
        )
    if path.name == OPAQUE_WHITEOUT:
        folder = _inside(root, path.parent)
        if _is_folder(folder):
            for child in folder.iterdir():
                _remove(child)
        return
    if path.name.startswith(WHITEOUT_PREFIX):
        _remove(_inside(root, path.parent / path.name.removeprefix(WHITEOUT_PREFIX)))
        return
    destination = _inside(root, path)
    # An upper layer replaces what a lower one put at the same path (a file over a symlink,
    # say); removing first also means the write below can never follow an old link.
    if os.path.lexists(destination) and not (member.isdir() and _is_folder(destination)):
        _remove(destination)
    try:
        _make_parents(root, path.parent)
        if member.issym():
            # Written as is: the data filter refuses absolute targets, which images have.
            os.symlink(member.linkname, destination)
        else:
            archive.extract(member, root, filter="data")
    except OSError as exc:
        raise UnpackError(f"cannot unpack {member.name!r}: {exc.strerror or exc}") from exc
    except tarfile.FilterError as exc:  # RootFS refuses all of these first
        raise UnpackError(f"cannot unpack {member.name!r}: {exc}") from exc


def _inside(root: Path, relative: PurePosixPath) -> Path:
    """``root/relative`` after checking that no existing parent is a link out of ``root``."""
    candidate = root.joinpath(*relative.parts)
    parent = candidate.parent.resolve()
    if parent != root and root not in parent.parents:
        raise UnpackError(f"{relative} would be written outside the image root")
    return parent / candidate.name


def _make_parents(root: Path, relative: PurePosixPath) -> None:
    """The folders a layer implies without listing them, as tarfile would make them, but one
    at a time: its ``os.makedirs`` recurses once per missing level."""
    folder = root
    for part in relative.parts:
        folder = folder / part
        if not os.path.lexists(folder):
            folder.mkdir()


def _is_folder(path: Path) -> bool:
    """A real folder, not a link to one (which may lead anywhere)."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except FileNotFoundError:
        return False


def _remove(path: Path) -> None:
    if _is_folder(path):
        remove_tree(path)
    elif os.path.lexists(path):
        path.unlink()


def _walk_up(top: Path) -> Iterator[tuple[Path, bool]]:
    """Every path below ``top`` and whether it is a folder, children before their folder;
    links are not followed."""
    pending: list[tuple[Path, bool]] = [(top, False)]
    while pending:
        folder, listed = pending.pop()
        if listed:
            yield folder, True
            continue
        pending.append((folder, True))
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((Path(entry.path), False))
                else:
                    yield Path(entry.path), False


def remove_tree(top: Path) -> None:
    """Delete ``top`` and everything below it, however deep (``shutil.rmtree`` recurses)."""
    if not _is_folder(top):
        if os.path.lexists(top):
            top.unlink()
        return
    for path, is_folder in _walk_up(top):
        if is_folder:
            path.rmdir()
        else:
            path.unlink()


def make_read_only(root: Path) -> None:
    """Clear every write bit below ``root`` (links are left alone: their mode means nothing)."""
    for path, _ in _walk_up(root):  # the root comes last
        _clear_write(path)


def make_writable(root: Path) -> None:
    """Give the owner write access again, so that the unpacked root can be deleted."""
    pending = [root]
    while pending:  # parents first: a folder's entries can only be listed once it is readable
        folder = pending.pop()
        folder.chmod(folder.lstat().st_mode | stat.S_IRUSR | stat.S_IWUSR | stat.S_IXUSR)
        with os.scandir(folder) as entries:
            pending.extend(Path(e.path) for e in entries if e.is_dir(follow_symlinks=False))


def _clear_write(path: Path) -> None:
    info = path.lstat()
    if not stat.S_ISLNK(info.st_mode):
        path.chmod(stat.S_IMODE(info.st_mode) & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
