"""A read-only view of an image's root filesystem, merged from its OCI layer tarballs.

``RootFS.from_layers`` reads the layers bottom to top, each exactly once and as a stream (gzip or
plain tar, told apart by the magic bytes), and applies them the way the OCI image spec's
"applying changesets" section says: a later entry replaces an earlier one, ``dir/.wh.NAME``
removes ``dir/NAME`` (and everything below it) from the *lower* layers, ``dir/.wh..wh..opq``
empties ``dir`` of everything the lower layers put there. Entries of the same layer are never
hidden by that layer's own whiteouts, whatever their order in the tar.

What is kept for each path that survives: type, mode, owner, size, the SHA-256 of a regular
file's content (hashed while it streams past) and a link's target. The *content* is kept only for
files matching ``content_patterns`` (package databases and metadata the SBOM needs), each up to
``max_content_bytes``, all together up to ``max_total_content_bytes``: memory stays bounded by
those figures and the number of entries, never by the size of a layer.

A file a lower layer put there and an upper layer removed or replaced is not forgotten: it is a
``ShadowedEntry`` with its digest, because a secret deleted in a later layer is still in the
image for anyone who pulls the lower layer.

Entries that could not be extracted safely are refused with ``UnsafeEntryError`` naming the layer
and the entry: absolute paths, ``..`` components, device nodes, hard links to nothing, symbolic
links whose relative target climbs out of the root, entries written through a symbolic link or
below a non-directory, and a path that appears twice in one layer (extractors disagree on which
copy wins, which is exactly what someone hiding a file from a scanner wants).

A builder that has just written a layer need not read it back: :class:`TreeMerger` takes the tar
headers it wrote, with each file's digest and (when :meth:`TreeMerger.keeps_content` says so) its
content, and applies them by the same rules: :meth:`TreeMerger.result` is the tree that
``RootFS.from_layers`` of the written files would give.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Protocol

from .errors import ArtifactError, ArtifactInputError

__all__ = [
    "DEFAULT_CONTENT_PATTERNS",
    "ContentNotRetainedError",
    "EntryType",
    "FileEntry",
    "LayerFormatError",
    "LayerInfo",
    "PathNotFoundError",
    "RootFS",
    "RootFSError",
    "RootFSLimitError",
    "ShadowReason",
    "ShadowedEntry",
    "TreeMerger",
    "UnsafeEntryError",
    "glob_to_regex",
]

logger = logging.getLogger(__name__)

DEFAULT_CONTENT_PATTERNS: tuple[str, ...] = (
    "**/*.dist-info/METADATA",
    "**/*.egg-info/PKG-INFO",
    "**/*.egg-info",
    "var/lib/dpkg/status",
    "var/lib/dpkg/status.d/*",
    "**/package-lock.json",
    "**/node_modules/*/package.json",
    "**/node_modules/@*/*/package.json",
    "lib/apk/db/installed",
    "etc/os-release",
    "usr/lib/os-release",
)
"""Files whose content is kept by default: everything ``sbom.generate_sbom`` reads."""

DEFAULT_MAX_CONTENT_BYTES = 32 * 1024 * 1024
"""Largest single file whose content is kept (a big dpkg status is a few MiB)."""

DEFAULT_MAX_TOTAL_CONTENT_BYTES = 512 * 1024 * 1024
"""Most content kept in memory for one image, all files together."""

DEFAULT_MAX_ENTRIES = 2_000_000
"""Most tar entries read over all layers; far above real images, it bounds hostile ones."""

DEFAULT_READ_LIMIT = 16 * 1024 * 1024

MAX_SYMLINK_HOPS = 40
"""As Linux's ELOOP limit."""

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1024 * 1024
_IMPLICIT_DIR_MODE = 0o755
_WRITTEN = Path("(a layer being written)")


class RootFSError(ArtifactError):
    """Base of the errors of this module."""


class LayerFormatError(RootFSError, ArtifactInputError):
    """A layer is not a readable tar (truncated, corrupt, or compressed in a way we do not read)."""

    def __init__(self, layer: Path, detail: str):
        self.layer = layer
        super().__init__(f"layer {layer}: {detail}")


class UnsafeEntryError(RootFSError, ArtifactInputError):
    """An entry that no safe extractor would write; names the layer and the entry."""

    def __init__(self, layer: Path, entry: str, reason: str):
        self.layer = layer
        self.entry = entry
        self.reason = reason
        super().__init__(f"layer {layer}: entry {entry!r}: {reason}")


class RootFSLimitError(RootFSError, ArtifactInputError):
    """The layers exceed a configured limit (number of entries)."""


class PathNotFoundError(RootFSError, FileNotFoundError):
    """``read``/``entry`` of a path the image does not have."""


class ContentNotRetainedError(RootFSError):
    """``read`` of a file whose content was not kept, or is larger than the caller allows."""


class EntryType(StrEnum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    FIFO = "fifo"


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One path of the merged filesystem, as the top-most layer that wrote it left it.

    ``path`` is relative to the root, without a leading ``/`` (``usr/bin/python3``). ``sha256``
    and ``size`` describe the content of regular files and hard links (a hard link shares its
    target's content); they are ``None``/0 for the other types. ``link_target`` is the target of a
    symbolic link as written in the tar, or the root-relative path a hard link points to.
    ``layer`` is the index of the layer that wrote the entry; a parent directory that a layer
    implies without listing it is created as 0755 root:root, as extractors do, in that layer.
    """

    path: str
    type: EntryType
    mode: int
    uid: int
    gid: int
    size: int
    sha256: str | None
    link_target: str | None
    layer: int

    @property
    def is_file(self) -> bool:
        """A regular file, directly or through a hard link."""
        return self.type in (EntryType.FILE, EntryType.HARDLINK)


class ShadowReason(StrEnum):
    WHITEOUT = "whiteout"
    OPAQUE = "opaque"
    OVERWRITTEN = "overwritten"


@dataclass(frozen=True, slots=True)
class ShadowedEntry:
    """A non-directory entry of a lower layer that an upper layer removed or replaced."""

    entry: FileEntry
    hidden_by_layer: int
    reason: ShadowReason


@dataclass(frozen=True, slots=True)
class LayerInfo:
    """What was read: ``digest`` of the bytes as stored, ``diff_id`` of the uncompressed tar."""

    path: Path
    digest: str
    diff_id: str
    compression: str
    entries: int


class RootFS:
    """The merged, read-only file tree of an image. Build it with :meth:`from_layers`."""

    def __init__(
        self,
        entries: Mapping[str, FileEntry],
        contents: Mapping[str, bytes],
        unretained: Mapping[str, str],
        shadowed: Sequence[ShadowedEntry],
        layers: Sequence[LayerInfo],
    ):
        self._entries = dict(sorted(entries.items()))
        self._contents = dict(contents)
        self.unretained: Mapping[str, str] = MappingProxyType(dict(sorted(unretained.items())))
        """Paths that matched a content pattern but whose content was not kept, with why."""
        self.shadowed: tuple[ShadowedEntry, ...] = tuple(shadowed)
        self.layers: tuple[LayerInfo, ...] = tuple(layers)

    @classmethod
    def from_layers(
        cls,
        layer_paths: Sequence[Path | str],
        *,
        content_patterns: Sequence[str] = DEFAULT_CONTENT_PATTERNS,
        max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES,
        max_total_content_bytes: int = DEFAULT_MAX_TOTAL_CONTENT_BYTES,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> RootFS:
        """Merge the layer tarballs at ``layer_paths``, bottom layer first."""
        paths = tuple(Path(p) for p in layer_paths)
        merger = TreeMerger(
            content_patterns=content_patterns,
            max_content_bytes=max_content_bytes,
            max_total_content_bytes=max_total_content_bytes,
            max_entries=max_entries,
        )
        for layer_path in paths:
            merger.apply_layer(layer_path)
        return merger.result()

    # -- lookups ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and _lookup_key(path) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def get(self, path: str) -> FileEntry | None:
        """The entry at ``path`` itself (a symbolic link is not followed), or None."""
        return self._entries.get(_lookup_key(path))

    def entry(self, path: str) -> FileEntry:
        found = self.get(path)
        if found is None:
            raise PathNotFoundError(f"{path!r} is not in the image")
        return found

    def entries(self) -> Iterator[FileEntry]:
        """Every entry, sorted by path."""
        return iter(self._entries.values())

    def glob(self, pattern: str) -> list[str]:
        """Sorted paths matching ``pattern`` (``*``/``?`` within a component, ``**/`` across)."""
        regex = glob_to_regex(pattern)
        # what follows the last wildcard is literal, so every match ends with it: a cheap test
        # that spares the regex most of a big image's paths (the SBOM globs each of them often)
        tail = re.split(r"[*?\[\]]", pattern)[-1]
        return [path for path in self._entries if path.endswith(tail) and regex.fullmatch(path)]

    def resolve(self, path: str) -> str:
        """``path`` with every symbolic link followed, inside the root as a chroot would."""
        pending = [part for part in reversed(path.split("/")) if part]
        resolved: list[str] = []
        hops = 0
        while pending:
            part = pending.pop()
            if part == ".":
                continue
            if part == "..":
                if resolved:
                    resolved.pop()
                continue
            candidate = "/".join([*resolved, part])
            found = self._entries.get(candidate)
            if found is not None and found.type is EntryType.SYMLINK:
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise RootFSError(f"{path!r}: too many levels of symbolic links")
                target = found.link_target or ""
                if target.startswith("/"):
                    resolved = []
                pending.extend(p for p in reversed(target.split("/")) if p)
                continue
            resolved.append(part)
        return "/".join(resolved)

    def read(self, path: str, max_bytes: int = DEFAULT_READ_LIMIT) -> bytes:
        """The content of the regular file at ``path`` (symbolic links followed).

        PathNotFoundError if there is no such file; ContentNotRetainedError if its content was
        not kept while reading the layers, or is larger than ``max_bytes``.
        """
        real = self.resolve(path)
        found = self._entries.get(real)
        if found is None or not found.is_file:
            raise PathNotFoundError(f"{path!r} is not a regular file in the image")
        if found.size > max_bytes:
            raise ContentNotRetainedError(
                f"{path!r} is {found.size} bytes, more than the {max_bytes} allowed"
            )
        content = self._contents.get(real)
        if content is None:
            reason = self.unretained.get(real, "it matches no content pattern")
            raise ContentNotRetainedError(f"content of {path!r} was not kept: {reason}")
        return content


def _lookup_key(path: str) -> str:
    return "/".join(part for part in path.split("/") if part and part != ".")


@lru_cache(maxsize=256)
def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path glob: ``*``, ``?`` and ``[...]`` stay within a component, ``**`` spans."""
    out: list[str] = []
    parts = pattern.split("/")
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
            continue
        out.append(_component_regex(part))
        if not last:
            out.append("/")
    return re.compile("".join(out))


def _component_regex(part: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(part):
        char = part[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and (end := _class_end(part, i)) > 0:
            body = part[i + 1 : end].replace("\\", "\\\\")
            if body.startswith("!"):
                body = "^" + body[1:]
            elif body.startswith("^"):
                body = "\\" + body
            out.append(f"[{body}]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out)


def _class_end(part: str, start: int) -> int:
    """Index of the ``]`` closing the class opened at ``start``, or -1 (then ``[`` is literal)."""
    j = start + 1
    if j < len(part) and part[j] == "!":
        j += 1
    if j < len(part) and part[j] == "]":
        j += 1
    return part.find("]", j)


class _Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _HashingReader:
    """A read-only stream that hashes what passes through it."""

    def __init__(self, source: _Readable):
        self._source = source
        self._hash = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._hash.update(data)
        return data

    def seek(self, offset: int, whence: int = 0, /) -> int:
        raise io.UnsupportedOperation("a layer is read as a stream")

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass

    @property
    def digest(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


class TarMember(Protocol):
    """What the merger reads of a tar header: a :class:`tarfile.TarInfo`, or the lighter record
    a builder makes of each entry it writes (``layers.WrittenMember``)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> bytes: ...
    @property
    def mode(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def gid(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def linkname(self) -> str: ...


ContentReader = Callable[[bool], tuple[str, bytes | None]]
"""Given whether the content is to be kept: the file's SHA-256 hex and its content (or None)."""


class TreeMerger:
    """Applies layers, bottom first, to a merged tree; :meth:`result` is the :class:`RootFS`.

    A layer comes from a tar file (:meth:`apply_layer`) or, while a builder writes it, from the
    headers it writes (:meth:`begin_layer`, :meth:`apply_written`, :meth:`end_layer`): both go
    through the same rules, so both give the same tree.
    """

    def __init__(
        self,
        *,
        content_patterns: Sequence[str] = DEFAULT_CONTENT_PATTERNS,
        max_content_bytes: int = DEFAULT_MAX_CONTENT_BYTES,
        max_total_content_bytes: int = DEFAULT_MAX_TOTAL_CONTENT_BYTES,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ):
        # one alternation instead of a loop over patterns: asked once or twice for every entry
        self._wanted_re = (
            re.compile("|".join(f"(?:{glob_to_regex(p).pattern})" for p in content_patterns))
            if content_patterns
            else None
        )
        self._max_content = max_content_bytes
        self._max_total = max_total_content_bytes
        self._max_entries = max_entries
        self._total_content = 0
        self._entries_read = 0
        self._explicit: set[str] = set()
        self._written: tuple[int, Path, int] | None = None
        self._asked: tuple[str, int, tuple[bool, str | None]] | None = None
        """The last :meth:`keeps_content` answer, which :meth:`apply_written` then reuses."""
        self._parent_ok: tuple[str, FileEntry] | None = None
        """The last parent directory found sound with all its ancestors, and its entry."""
        self.entries: dict[str, FileEntry] = {}
        self.children: dict[str, set[str]] = {}
        self.contents: dict[str, bytes] = {}
        self.unretained: dict[str, str] = {}
        self.shadowed: list[ShadowedEntry] = []
        self.layers: list[LayerInfo] = []

    def result(self) -> RootFS:
        return RootFS(self.entries, self.contents, self.unretained, self.shadowed, self.layers)

    # -- reading ---------------------------------------------------------------------------

    def apply_layer(self, path: Path) -> None:
        """Read the layer tarball at ``path`` (gzip or plain) as the next layer up."""
        index = len(self.layers)
        try:
            raw = path.open("rb")
        except OSError as exc:
            raise LayerFormatError(path, f"cannot open: {exc.strerror or exc}") from exc
        self._explicit = set()
        self._asked = None
        with raw:
            magic = raw.read(4)
            raw.seek(0)
            if magic.startswith(_ZSTD_MAGIC):
                raise LayerFormatError(path, "zstd-compressed layers are not supported")
            blob = _HashingReader(raw)
            compression = "gzip" if magic.startswith(_GZIP_MAGIC) else "none"
            stream: _Readable = (
                gzip.GzipFile(fileobj=blob, mode="rb") if compression == "gzip" else blob
            )
            tar_stream = _HashingReader(stream)
            last = "(start of layer)"
            count = 0
            try:
                with tarfile.open(fileobj=tar_stream, mode="r|") as tar:  # type: ignore[call-overload]
                    for member in tar:
                        count += 1
                        self._count_entry(path)
                        last = member.name
                        self._apply_member(index, path, member, _tar_content(tar, member))
                        tar.members.clear()  # a stream needs no index; keeps memory flat
                tar_stream.drain()
                blob.drain()
            except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
                raise LayerFormatError(
                    path, f"not a readable tar after entry {last!r}: {exc}"
                ) from exc
        self.layers.append(LayerInfo(path, blob.digest, tar_stream.digest, compression, count))

    def begin_layer(self, name: Path) -> None:
        """Start the next layer from written headers; ``name`` stands for it in errors."""
        if self._written is not None:
            raise RuntimeError("the previous written layer was not ended")
        self._explicit = set()
        self._asked = None
        self._written = (len(self.layers), name, 0)

    def keeps_content(self, path: str, size: int) -> bool:
        """Whether :meth:`apply_written` of a regular file ``path`` of ``size`` bytes will want
        its content (ask just before, so that the budget is the one it will see)."""
        decision = self._content_decision(_normalise(_WRITTEN, path, path), size)
        self._asked = (path, size, decision)
        return decision[0]

    def apply_written(self, member: TarMember, sha256: str | None, content: bytes | None) -> None:
        """Apply one header just written; a regular file comes with its SHA-256 hex and, when
        :meth:`keeps_content` said so, its content."""
        if self._written is None:
            raise RuntimeError("begin_layer() first")
        index, name, count = self._written
        self._written = (index, name, count + 1)
        self._count_entry(name)

        def known(keep: bool) -> tuple[str, bytes | None]:
            if sha256 is None or (keep and content is None):
                raise ValueError(f"{member.name!r}: the written content was not reported")
            return sha256, content if keep else None

        self._apply_member(index, name, member, known)

    def end_layer(self, path: Path, digest: str, diff_id: str, compression: str = "gzip") -> None:
        """The written layer is complete: ``path``, ``digest``, ``diff_id`` and ``compression``
        (``gzip`` or ``none``) are the blob's."""
        if self._written is None:
            raise RuntimeError("begin_layer() first")
        _, _, count = self._written
        self._written = None
        self.layers.append(LayerInfo(path, digest, diff_id, compression, count))

    def _count_entry(self, layer_path: Path) -> None:
        self._entries_read += 1
        if self._entries_read > self._max_entries:
            raise RootFSLimitError(
                f"layer {layer_path}: more than {self._max_entries} entries in the image"
            )

    def _apply_member(
        self, layer: int, layer_path: Path, member: TarMember, read: ContentReader
    ) -> None:
        name = member.name
        path = _normalise(layer_path, name, name)
        if not path:
            return  # the root directory itself
        parent, _, base = path.rpartition("/")
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(layer, layer_path, name, parent, base)
            return
        # the type compared once, as TarInfo's is*() methods do (seven calls for a file
        # otherwise, for every entry)
        kind = member.type
        if kind == tarfile.CHRTYPE or kind == tarfile.BLKTYPE:
            raise UnsafeEntryError(layer_path, name, "device nodes are not allowed in an image")
        self._check_parents(layer, layer_path, name, path, parent)
        if path in self._explicit:
            raise UnsafeEntryError(layer_path, name, "the path appears twice in this layer")
        self._explicit.add(path)
        existing = self.entries.get(path)
        mode = member.mode & 0o7777
        content: bytes | None = None
        why_not: str | None = None
        if kind in tarfile.REGULAR_TYPES:
            asked, self._asked = self._asked, None
            if asked is not None and asked[:2] == (path, member.size):
                keep, why_not = asked[2]  # nothing changed the budget since the question
            else:
                keep, why_not = self._content_decision(path, member.size)
            sha256, content = read(keep)
            entry = FileEntry(
                path,
                EntryType.FILE,
                mode,
                member.uid,
                member.gid,
                member.size,
                sha256,
                None,
                layer,
            )
        elif kind == tarfile.DIRTYPE:
            entry = FileEntry(
                path, EntryType.DIRECTORY, mode, member.uid, member.gid, 0, None, None, layer
            )
        elif kind == tarfile.SYMTYPE:
            target = member.linkname
            if "\x00" in target or not target:
                raise UnsafeEntryError(layer_path, name, "empty or invalid symbolic link target")
            if not target.startswith("/") and _climbs_out(parent, target):
                raise UnsafeEntryError(
                    layer_path, name, f"symbolic link target {target!r} points outside the root"
                )
            entry = FileEntry(
                path, EntryType.SYMLINK, mode, member.uid, member.gid, 0, None, target, layer
            )
        elif kind == tarfile.LNKTYPE:
            target_path = _normalise(layer_path, name, member.linkname)
            linked = self.entries.get(target_path)
            if linked is None or not linked.is_file:
                raise UnsafeEntryError(
                    layer_path,
                    name,
                    f"hard link to {member.linkname!r}, which is not a regular file of the image",
                )
            entry = FileEntry(
                path,
                EntryType.HARDLINK,
                linked.mode,
                linked.uid,
                linked.gid,
                linked.size,
                linked.sha256,
                target_path,
                layer,
            )
        elif kind == tarfile.FIFOTYPE:
            entry = FileEntry(
                path, EntryType.FIFO, mode, member.uid, member.gid, 0, None, None, layer
            )
        else:
            raise UnsafeEntryError(layer_path, name, f"unsupported tar entry type {member.type!r}")
        if existing is not None:
            if existing.type is EntryType.DIRECTORY and entry.type is EntryType.DIRECTORY:
                self.entries[path] = entry  # new metadata; the lower layers' content stays
                return
            if self._remove_lower(path, layer, ShadowReason.OVERWRITTEN):
                raise UnsafeEntryError(
                    layer_path, name, "replaces a directory that this layer also writes into"
                )
        self._add(entry)
        if entry.type is EntryType.HARDLINK and self._wanted(path):
            content = self.contents.get(entry.link_target or "")
            if content is None:
                why_not = "a hard link whose target's content was not kept"
        if content is not None:
            self._keep(path, content)
        elif why_not is not None:
            self.unretained[path] = why_not

    def _content_decision(self, path: str, size: int) -> tuple[bool, str | None]:
        """Whether a regular file's content is kept, or why wanted content is not."""
        wanted = self._wanted(path)
        keep = wanted and size <= self._max_content
        why_not: str | None = None
        if keep and self._total_content + size > self._max_total:
            keep = False
            why_not = f"the content budget of {self._max_total} bytes for all kept files is spent"
        elif wanted and not keep:
            why_not = f"larger than {self._max_content} bytes"
        return keep, why_not

    def _wanted(self, path: str) -> bool:
        return self._wanted_re is not None and self._wanted_re.fullmatch(path) is not None

    def _keep(self, path: str, content: bytes) -> None:
        self.contents[path] = content
        self._total_content += len(content)

    # -- tree changes ----------------------------------------------------------------------

    def _check_parents(
        self, layer: int, layer_path: Path, name: str, path: str, parent: str
    ) -> None:
        last = self._parent_ok
        # siblings come one after the other: the same parent, still the same directory entry
        # (anything that replaced it or an ancestor would have replaced or removed that entry)
        if last is not None and last[0] == parent and self.entries.get(parent) is last[1]:
            return
        parts = path.split("/")
        for depth in range(1, len(parts)):
            ancestor = "/".join(parts[:depth])
            found = self.entries.get(ancestor)
            if found is None:
                self._add(
                    FileEntry(
                        ancestor,
                        EntryType.DIRECTORY,
                        _IMPLICIT_DIR_MODE,
                        0,
                        0,
                        0,
                        None,
                        None,
                        layer,
                    )
                )
            elif found.type is EntryType.SYMLINK:
                raise UnsafeEntryError(
                    layer_path, name, f"written through the symbolic link {ancestor!r}"
                )
            elif found.type is not EntryType.DIRECTORY:
                raise UnsafeEntryError(layer_path, name, f"{ancestor!r} is not a directory")
        if parent:
            self._parent_ok = (parent, self.entries[parent])

    def _add(self, entry: FileEntry) -> None:
        self.entries[entry.path] = entry
        parent = entry.path.rpartition("/")[0]
        self.children.setdefault(parent, set()).add(entry.path)

    def _whiteout(self, layer: int, layer_path: Path, name: str, parent: str, base: str) -> None:
        if base == OPAQUE_WHITEOUT:
            for child in sorted(self.children.get(parent, ())):
                self._remove_lower(child, layer, ShadowReason.OPAQUE)
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            logger.debug("layer %s: ignoring whiteout metadata entry %r", layer_path, name)
            return
        hidden = base[len(WHITEOUT_PREFIX) :]
        if hidden in ("", ".", ".."):
            raise UnsafeEntryError(layer_path, name, "whiteout of an invalid name")
        target = f"{parent}/{hidden}" if parent else hidden
        if target in self.entries:
            self._remove_lower(target, layer, ShadowReason.WHITEOUT)

    def _remove_lower(self, path: str, layer: int, reason: ShadowReason) -> bool:
        """Remove ``path`` and what is below it, as far as lower layers wrote it.

        Returns whether ``path`` survives: an entry of ``layer`` itself does, and so does a
        lower directory that still holds something ``layer`` wrote. Children go first, in name
        order, with a stack rather than recursion: a layer's tree can be thousands deep.
        """
        stack = [(path, False)]
        while stack:
            current, children_done = stack.pop()
            if children_done:
                self._remove_if_lower(current, layer, reason)
                continue
            stack.append((current, True))
            below = sorted(self.children.get(current, ()), reverse=True)
            stack.extend((child, False) for child in below)
        return path in self.entries

    def _remove_if_lower(self, path: str, layer: int, reason: ShadowReason) -> None:
        """Remove one entry a lower layer wrote, unless something below it survived."""
        entry = self.entries[path]
        if entry.layer == layer or self.children.get(path):
            return
        del self.entries[path]
        self.children.pop(path, None)
        siblings = self.children.get(path.rpartition("/")[0])
        if siblings is not None:
            siblings.discard(path)
        content = self.contents.pop(path, None)
        if content is not None:
            self._total_content -= len(content)
        self.unretained.pop(path, None)
        if entry.type is not EntryType.DIRECTORY:
            self.shadowed.append(ShadowedEntry(entry, layer, reason))


def _tar_content(tar: tarfile.TarFile, member: tarfile.TarInfo) -> ContentReader:
    def read(keep: bool) -> tuple[str, bytes | None]:
        digest = hashlib.sha256()
        buffer = bytearray() if keep else None
        source = tar.extractfile(member)
        if source is None:  # pragma: no cover - isreg() members always have a file object
            raise tarfile.ReadError(f"no content for {member.name!r}")
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            if buffer is not None:
                buffer += chunk
        return digest.hexdigest(), (bytes(buffer) if buffer is not None else None)

    return read


def _normalise(layer_path: Path, entry: str, name: str) -> str:
    """The root-relative form of a tar path; UnsafeEntryError for anything that could escape."""
    if "\x00" in name:
        raise UnsafeEntryError(layer_path, entry, "the path contains a NUL byte")
    if name.startswith("/"):
        raise UnsafeEntryError(layer_path, entry, f"absolute path {name!r}")
    # already normal (no empty, "." or ".." component, the common case): the name itself, with
    # no split; this runs for every entry, twice for each file a build writes
    wrapped = f"/{name}/"
    if "//" not in wrapped and "/./" not in wrapped and "/../" not in wrapped:
        return name
    split = name.split("/")
    parts = [part for part in split if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeEntryError(layer_path, entry, f"path {name!r} has a '..' component")
    # the name itself when it is already normal: one string per path, not two, in big trees
    return name if len(parts) == len(split) else "/".join(parts)


def _climbs_out(parent: str, target: str) -> bool:
    depth = len([p for p in parent.split("/") if p])
    for part in target.split("/"):
        if part in ("", "."):
            continue
        depth = depth - 1 if part == ".." else depth + 1
        if depth < 0:
            return True
    return False
