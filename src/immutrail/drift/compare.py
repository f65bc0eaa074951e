"""One path of an instance against the same path of its image, by the rules of its runtime.

What an instance shows is not byte for byte what its image's tar headers say; each runtime
transforms it in a known way, and a clean instance must show no finding:

* ``unpacked`` (the local runtime, :func:`immutrail.artifacts.unpack.unpack_image` with
  ``read_only=True``): tarfile's ``data`` filter keeps only ``mode & 0o755`` of a regular file,
  clears the execute bits of a file its owner cannot execute, adds ``0o600``, and the read-only
  pass then clears every write bit. Directory modes are not taken from the image at all (they are
  created with the process umask, then made read-only), so every directory must have the mode of
  the root folder the image was unpacked into, and that root must have no write or special bit.
  Owners are not taken from the image either: every path belongs to whoever unpacked it, the
  root folder's owner.
* ``image`` (Docker): modes (setuid bits included) and owners are exactly the image's.

Symbolic links have no mode of their own on Linux; only their target is compared. A hard link
is compared as the regular file it is (which of two linked names a tar calls the link is the
writer's choice, not the image's meaning).
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from .errors import DriftInputError
from .expected import ExpectedEntry, Kind
from .findings import Change, Difference, Finding, fmt_mode, fmt_sha

__all__ = ["IgnoreSet", "Observed", "Profile", "Rules", "added", "compare", "kind_of", "removed"]


class Profile(StrEnum):
    UNPACKED = "unpacked"
    IMAGE = "image"


@dataclass(frozen=True, slots=True)
class Observed:
    """A path as found in the instance. ``kind`` uses :class:`Kind`'s words plus ``socket``,
    ``char-device``, ``block-device``; ``sha256`` is hex, None when not hashed."""

    kind: str
    mode: int
    uid: int
    gid: int
    size: int = 0
    sha256: str | None = None
    link_target: str | None = None


def kind_of(st_mode: int) -> str:
    if stat.S_ISREG(st_mode):
        return Kind.FILE
    if stat.S_ISDIR(st_mode):
        return Kind.DIRECTORY
    if stat.S_ISLNK(st_mode):
        return Kind.SYMLINK
    if stat.S_ISFIFO(st_mode):
        return Kind.FIFO
    if stat.S_ISSOCK(st_mode):
        return "socket"
    if stat.S_ISCHR(st_mode):
        return "char-device"
    if stat.S_ISBLK(st_mode):
        return "block-device"
    return "unknown"


_WRITE = 0o222
_SPECIAL = 0o7000


@dataclass(frozen=True)
class Rules:
    """How image modes and owners appear in an instance of one runtime."""

    profile: Profile
    directory_mode: int | None = None
    """``unpacked``: the mode every directory must have (the root folder's, write bits off)."""
    owner: tuple[int, int] | None = None
    """``unpacked``: the owner every path must have (the root folder's)."""

    @classmethod
    def unpacked(cls, root_mode: int, root_uid: int, root_gid: int) -> Rules:
        return cls(
            Profile.UNPACKED, stat.S_IMODE(root_mode) & ~(_WRITE | _SPECIAL), (root_uid, root_gid)
        )

    def mode(self, entry: ExpectedEntry) -> int | None:
        if entry.kind is Kind.SYMLINK:
            return None
        if self.profile is Profile.IMAGE:
            return entry.mode & 0o7777
        if entry.kind is Kind.DIRECTORY:
            return self.directory_mode
        if entry.is_file:
            return unpacked_file_mode(entry.mode)
        return None  # the unpacker refuses anything else: a FIFO never gets this far

    def expected_owner(self, entry: ExpectedEntry) -> tuple[int, int] | None:
        if self.profile is Profile.IMAGE:
            return None if entry.kind is Kind.SYMLINK else (entry.uid, entry.gid)
        return self.owner


def unpacked_file_mode(mode: int) -> int:
    """The mode tarfile's ``data`` filter and the read-only pass give a regular file."""
    kept = mode & 0o755
    if not kept & 0o100:
        kept &= ~0o111
    return (kept | 0o600) & ~_WRITE


def _plain(kind: Kind) -> str:
    return str(Kind.FILE if kind is Kind.HARDLINK else kind)


def _owner(uid: int, gid: int) -> str:
    return f"{uid}:{gid}"


def compare(path: str, expected: ExpectedEntry, observed: Observed, rules: Rules) -> Finding | None:
    """The finding for a path present in both, or None when it is as the image says."""
    want = _plain(expected.kind)
    differences: list[Difference] = []
    if observed.kind != want:
        differences.append(Difference("type", want, observed.kind))
        if expected.is_file or observed.kind == Kind.FILE:
            differences.append(
                Difference("content", fmt_sha(expected.sha256), fmt_sha(observed.sha256))
            )
        if Kind.SYMLINK in (expected.kind, observed.kind):
            differences.append(
                Difference("link_target", expected.link_target, observed.link_target)
            )
    else:
        if expected.is_file and observed.sha256 != expected.sha256:
            differences.append(
                Difference("content", fmt_sha(expected.sha256), fmt_sha(observed.sha256))
            )
            if observed.size != expected.size:
                differences.append(Difference("size", expected.size, observed.size))
        if expected.kind is Kind.SYMLINK and observed.link_target != expected.link_target:
            differences.append(
                Difference("link_target", expected.link_target, observed.link_target)
            )
        mode = rules.mode(expected)
        if mode is not None and stat.S_IMODE(observed.mode) != mode:
            differences.append(Difference("mode", fmt_mode(mode), fmt_mode(observed.mode)))
    owner = rules.expected_owner(expected)
    if (
        owner is not None
        and observed.kind != Kind.SYMLINK
        and (observed.uid, observed.gid) != owner
    ):
        differences.append(Difference("owner", _owner(*owner), _owner(observed.uid, observed.gid)))
    if not differences:
        return None
    return Finding(
        path,
        Change.MODIFIED,
        observed.kind,
        tuple(differences),
        sha256=fmt_sha(observed.sha256),
        size=observed.size if observed.kind == Kind.FILE else None,
        link_target=observed.link_target,
    )


def added(path: str, observed: Observed) -> Finding:
    is_file = observed.kind == Kind.FILE
    return Finding(
        path,
        Change.ADDED,
        observed.kind,
        sha256=fmt_sha(observed.sha256),
        size=observed.size if is_file else None,
        link_target=observed.link_target,
        detail=f"mode {fmt_mode(observed.mode)}, owner {_owner(observed.uid, observed.gid)}",
    )


def removed(path: str, expected: ExpectedEntry) -> Finding:
    return Finding(
        path,
        Change.REMOVED,
        _plain(expected.kind),
        sha256=fmt_sha(expected.sha256),
        size=expected.size if expected.is_file else None,
        link_target=expected.link_target if expected.kind is Kind.SYMLINK else None,
    )


def unreadable(path: str, kind: str | None, why: str) -> Finding:
    return Finding(path, Change.UNREADABLE, kind, detail=why)


def display(path: str) -> str:
    """The path as findings name it: absolute inside the instance."""
    return "/" + path


class IgnoreSet:
    """Paths a runtime owns (mount points: scratch, config binds): each, and all below it.

    A directory that is not in the image but only holds such a path (the runtime created it to
    mount something there) is left alone too; what else it holds is still checked.
    """

    def __init__(self, paths: Iterable[str]):
        self.paths: frozenset[str] = frozenset(normalise(p) for p in paths)
        self._holders = frozenset(
            "/".join(parts[:end])
            for parts in (p.split("/") for p in self.paths)
            for end in range(1, len(parts))
        )

    def covers(self, path: str) -> bool:
        """Whether ``path`` (relative) is ignored."""
        if not self.paths:
            return False
        if path in self.paths:
            return True
        parts = path.split("/")
        return any("/".join(parts[:end]) in self.paths for end in range(1, len(parts)))

    def holds(self, path: str) -> bool:
        """Whether ``path`` is a folder above an ignored path."""
        return path in self._holders


def normalise(path: str) -> str:
    """``/tmp/``, ``tmp`` and ``./tmp`` alike become ``tmp``; ``..`` and the root are refused."""
    if not isinstance(path, str) or "\x00" in path:
        raise DriftInputError(f"ignore path {path!r} is not a path")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise DriftInputError(
            f"ignore path {path!r} must name a folder or file inside the root, without '..'"
        )
    return "/".join(parts)
