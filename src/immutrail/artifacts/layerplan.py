"""From a layer of the definition and the files of the source tree to the entries of one tar layer.

This is where the definition's policy becomes entries: which files are selected, where they land,
their normalized modes and owner, and the checks that must pass before a single byte is written
(a symlink that leaves the layer, a submodule whose content is not in the repository, a source
that does not exist). Planning reads metadata only, so every layer is planned, and every error
found, before the store is touched.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from .definition import LayerSpec
from .errors import SourceError
from .globs import Excluder
from .layers import (
    DIR_MODE,
    EXEC_MODE,
    FILE_MODE,
    LINK_MODE,
    CompleteEntries,
    Entry,
    Kind,
    complete,
)
from .sources import SourceFile, SourceKind


@dataclass(frozen=True)
class LayerPlan:
    index: int
    spec: LayerSpec
    entries: CompleteEntries
    """Every entry, parent directories included, in the order the layer holds them."""

    @property
    def description(self) -> str:
        return f"{self.spec.source} -> {self.spec.destination}"


def plan_layer(index: int, spec: LayerSpec, files: Sequence[SourceFile], where: str) -> LayerPlan:
    """The entries of layer ``index``; ``where`` names the tree in errors (``commit 4f2a…``)."""
    label = f"layers[{index}]"
    uid, gid = spec.owner or (0, 0)
    dest = spec.destination.lstrip("/")
    exact = [f for f in files if f.path == spec.source]
    if exact:
        single = exact[0]
        if single.kind is not SourceKind.FILE:
            raise SourceError(
                f"{label}.source {spec.source!r} is a {single.kind} in {where}; "
                "name a regular file or a folder"
            )
        if not dest:
            raise SourceError(f"{label}: a single file cannot be the image root /")
        return LayerPlan(index, spec, complete([_file_entry(single, dest, spec, uid, gid)]))

    prefix = "" if spec.source == "." else spec.source + "/"
    excluder = Excluder(spec.exclude)
    entries: list[Entry] = []
    dirs: set[str] = set()
    found_any = False
    for source in files:
        if not source.path.startswith(prefix):
            continue
        found_any = True
        relative = source.path[len(prefix) :]
        if excluder and excluder.excluded(relative):
            continue
        target = f"{dest}/{relative}" if dest else relative
        if source.kind is SourceKind.SUBMODULE:
            raise SourceError(
                f"{label}: {source.path} is a git submodule or nested repository in {where}; "
                "its files are not part of this repository"
            )
        if source.kind is SourceKind.SYMLINK:
            _check_link(label, source, relative)
            entries.append(
                Entry(target, Kind.SYMLINK, LINK_MODE, uid, gid, linkname=source.linkname)
            )
        else:
            entries.append(_file_entry(source, target, spec, uid, gid))
        parent = relative.rpartition("/")[0]
        while parent and parent not in dirs:  # a known folder's own parents are known too
            dirs.add(parent)
            parent = parent.rpartition("/")[0]
    if not found_any:
        raise SourceError(f"{label}.source {spec.source!r} does not exist in {where}")
    if not entries:
        raise SourceError(f"{label}: every file of {spec.source!r} is excluded")
    for relative in sorted(dirs):
        target = f"{dest}/{relative}" if dest else relative
        entries.append(Entry(target, Kind.DIRECTORY, DIR_MODE, uid, gid))
    if dest:
        entries.append(Entry(dest, Kind.DIRECTORY, DIR_MODE, uid, gid))
    return LayerPlan(index, spec, complete(entries))


def _file_entry(source: SourceFile, target: str, spec: LayerSpec, uid: int, gid: int) -> Entry:
    """Modes come from the definition or from one bit of git's: executable or not. Never more."""
    default = EXEC_MODE if source.executable else FILE_MODE
    mode = default if spec.mode is None else spec.mode
    return Entry(
        target, Kind.FILE, mode, uid, gid, size=source.size, open=source.open, source=source.path
    )


def _check_link(label: str, source: SourceFile, relative: str) -> None:
    """A symlink must resolve, lexically, to a path inside the layer's source folder."""
    target = source.linkname
    if not target or "\0" in target:
        raise SourceError(f"{label}: symbolic link {source.path} has an empty or invalid target")
    if target.startswith("/"):
        raise SourceError(
            f"{label}: symbolic link {source.path} -> {target} is absolute; "
            "only relative links that stay inside the layer are kept"
        )
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(relative), target))
    if resolved == ".." or resolved.startswith("../"):
        raise SourceError(
            f"{label}: symbolic link {source.path} -> {target} leaves the layer's source folder"
        )
