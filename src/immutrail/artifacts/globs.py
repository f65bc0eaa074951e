"""The ``exclude`` globs of a layer, with the semantics people know from ``.gitignore``.

A pattern without ``/`` (``*.pyc``, ``__pycache__``) matches a name at any depth; a pattern with
``/`` (``tests/data``, ``docs/**/*.png``) is anchored at the layer's source. ``*``, ``?`` and
``[…]`` stay inside one path component, ``**`` spans any number of them. A match on a directory
excludes everything below it. Matching is case-sensitive on every platform, so that a definition
selects the same files wherever it is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from functools import cache

MAX_DOUBLE_STARS = 4


class GlobError(ValueError):
    pass


def check_pattern(pattern: str) -> None:
    """Refuse patterns that could never match a path below the source, or cost too much."""
    if pattern.startswith("/"):
        raise GlobError(f"exclude pattern {pattern!r} must be relative to the layer's source")
    segments = pattern.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise GlobError(f"exclude pattern {pattern!r} has an empty, '.' or '..' component")
    if segments.count("**") > MAX_DOUBLE_STARS:
        raise GlobError(f"exclude pattern {pattern!r} has more than {MAX_DOUBLE_STARS} '**'")


class Excluder:
    """Decides whether a path (relative to the layer's source, ``/``-separated) is excluded."""

    def __init__(self, patterns: Sequence[str]):
        for pattern in patterns:
            check_pattern(pattern)
        self._names = tuple(p for p in patterns if "/" not in p)
        self._anchored = tuple(tuple(p.split("/")) for p in patterns if "/" in p)

    def __bool__(self) -> bool:
        return bool(self._names or self._anchored)

    def excluded(self, relative: str) -> bool:
        parts = tuple(relative.split("/"))
        if any(fnmatchcase(part, name) for part in parts for name in self._names):
            return True
        return any(
            _matches(pattern, parts[:end])
            for pattern in self._anchored
            for end in range(1, len(parts) + 1)
        )


def _matches(pattern: tuple[str, ...], parts: tuple[str, ...]) -> bool:
    @cache
    def match(p: int, q: int) -> bool:
        if p == len(pattern):
            return q == len(parts)
        if pattern[p] == "**":
            return any(match(p + 1, r) for r in range(q, len(parts) + 1))
        return q < len(parts) and fnmatchcase(parts[q], pattern[p]) and match(p + 1, q + 1)

    return match(0, 0)
