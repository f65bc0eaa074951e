"""Version ordering, one comparator per ecosystem, as OSV ranges need them.

* ``PyPI``: PEP 440 through ``packaging.version`` (post, dev, local, epochs).
* ``npm``: SemVer 2.0 precedence (prereleases sort before their release; numeric identifiers
  below alphanumeric ones); a leading ``v`` or ``=`` is accepted as npm's ``semver.clean`` does.
* ``Go``: SemVer with the ``v`` prefix optional (OSV writes ``1.2.3``, go.mod ``v1.2.3``);
  pseudo-versions are SemVer prereleases and sort as Go sorts them; ``+incompatible`` is build
  metadata and ignored; ``go1.21.3``-style toolchain versions of ``stdlib`` are converted.
* ``Debian`` (and ``Ubuntu``): dpkg's ``epoch:upstream-revision`` with ``~`` before everything,
  letters before other punctuation, digit runs compared as numbers (deb-version(7)).
* ``Maven``: Maven 3's ``ComparableVersion`` (qualifier order alpha < beta < milestone < rc <
  snapshot < release < sp, then unknown qualifiers alphabetically).
* ``SEMVER`` ranges in any other ecosystem use strict SemVer 2.0.

The SemVer, dpkg and Maven orderings are written out here: no maintained Python package covers
them with the exact rules of their ecosystems (python-semver rejects a ``v`` prefix and has no
Go rules; python-debian is a large dependency for one function; there is no Maven one), and
each is a few dozen lines checked by property tests and the ecosystems' own example lists.
"""

from __future__ import annotations

import functools
import re
from abc import ABC, abstractmethod
from typing import Any, Protocol

from packaging.version import InvalidVersion
from packaging.version import Version as Pep440Version

from .errors import VersionError

MAX_VERSION_LENGTH = 256


class ParsedVersion(Protocol):
    """What a scheme's ``parse`` returns: totally ordered within its scheme."""

    def __lt__(self, other: Any, /) -> bool: ...
    def __le__(self, other: Any, /) -> bool: ...
    def __gt__(self, other: Any, /) -> bool: ...
    def __ge__(self, other: Any, /) -> bool: ...


class VersionScheme(ABC):
    """One ecosystem's version syntax and order."""

    name: str

    def parse(self, text: str) -> ParsedVersion:
        if not isinstance(text, str) or not text.strip():
            raise VersionError(self.name, str(text), "empty version")
        if len(text) > MAX_VERSION_LENGTH:
            raise VersionError(self.name, text[:40] + "…", "longer than 256 characters")
        return self._parse(text.strip())

    @abstractmethod
    def _parse(self, text: str) -> ParsedVersion: ...

    def compare(self, a: str, b: str) -> int:
        """-1, 0 or 1 as ``a`` sorts before, with or after ``b``."""
        left, right = self.parse(a), self.parse(b)
        return -1 if left < right else (1 if left > right else 0)


@functools.total_ordering
class _Keyed:
    """A version ordered by a precomputed tuple key (SemVer, Go)."""

    __slots__ = ("key", "text")

    def __init__(self, text: str, key: tuple[Any, ...]):
        self.text = text
        self.key = key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Keyed) and self.key == other.key

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, _Keyed):
            return NotImplemented
        return self.key < other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"<version {self.text}>"


# -- PEP 440 ---------------------------------------------------------------------------------


class PyPIScheme(VersionScheme):
    name = "PyPI"

    def _parse(self, text: str) -> ParsedVersion:
        try:
            return Pep440Version(text)
        except InvalidVersion:
            raise VersionError(self.name, text, "not a PEP 440 version") from None


# -- SemVer 2.0 and Go -----------------------------------------------------------------------

_IDENT = r"(?:0|[1-9]\d*|\d*[A-Za-z-][0-9A-Za-z-]*)"
_SEMVER_RE = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    rf"(?:-({_IDENT}(?:\.{_IDENT})*))?"
    r"(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
)
_RELEASE = (1,)  # a release sorts after every prerelease of the same major.minor.patch


def semver_key(core: str) -> tuple[Any, ...] | None:
    """The precedence key of a strict SemVer 2.0 string (§11), or None if it is not one."""
    match = _SEMVER_RE.fullmatch(core)
    if match is None:
        return None
    major, minor, patch, pre, _build = match.groups()
    if pre is None:
        pre_key: tuple[Any, ...] = _RELEASE
    else:
        # Numeric identifiers compare numerically and sort before alphanumeric ones; a shorter
        # list of equal leading identifiers sorts first: exactly tuple order on these pairs.
        pre_key = (
            0,
            tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")),
        )
    return (int(major), int(minor), int(patch), pre_key)


class SemVerScheme(VersionScheme):
    """Strict SemVer 2.0, the OSV ``SEMVER`` range type."""

    name = "SemVer"

    def _parse(self, text: str) -> ParsedVersion:
        key = semver_key(text)
        if key is None:
            raise VersionError(self.name, text, "not a SemVer 2.0 version (MAJOR.MINOR.PATCH)")
        return _Keyed(text, key)


class NpmScheme(VersionScheme):
    name = "npm"

    def _parse(self, text: str) -> ParsedVersion:
        core = text.lstrip("=v").strip() if text[0] in "=v" else text
        key = semver_key(core)
        if key is None:
            raise VersionError(self.name, text, "not a SemVer 2.0 version (MAJOR.MINOR.PATCH)")
        return _Keyed(text, key)


_GO_TOOLCHAIN_RE = re.compile(r"go(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:(beta|rc)(\d+))?")


class GoScheme(VersionScheme):
    name = "Go"

    def _parse(self, text: str) -> ParsedVersion:
        core = text[1:] if text.startswith("v") else text
        toolchain = _GO_TOOLCHAIN_RE.fullmatch(text)
        if toolchain is not None:
            # The Go toolchain's own spelling (go1.21rc2) as the vulndb writes it (1.21.0-rc.2).
            major, minor, patch, kind, number = toolchain.groups()
            core = f"{major}.{minor or 0}.{patch or 0}" + (f"-{kind}.{number}" if kind else "")
        key = semver_key(core)
        if key is None:
            raise VersionError(self.name, text, "not a Go module version (vMAJOR.MINOR.PATCH)")
        return _Keyed(text, key)


# -- dpkg ------------------------------------------------------------------------------------

_DEB_UPSTREAM_RE = re.compile(r"[0-9][A-Za-z0-9.+~:-]*")
_DEB_REVISION_RE = re.compile(r"[A-Za-z0-9.+~]+")
_DIGITS = frozenset("0123456789")


def _deb_order(char: str) -> int:
    """dpkg's weight of one non-digit character: ~ first, then end, letters, other symbols."""
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _verrevcmp(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternate non-digit runs (by weight) and digit runs (by value)."""
    i = j = 0
    while i < len(a) or j < len(b):
        while (i < len(a) and a[i] not in _DIGITS) or (j < len(b) and b[j] not in _DIGITS):
            ac = _deb_order(a[i]) if i < len(a) and a[i] not in _DIGITS else 0
            bc = _deb_order(b[j]) if j < len(b) and b[j] not in _DIGITS else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i, j = i + 1, j + 1
        start_i = i
        while i < len(a) and a[i] in _DIGITS:
            i += 1
        start_j = j
        while j < len(b) and b[j] in _DIGITS:
            j += 1
        left = int(a[start_i:i] or "0")
        right = int(b[start_j:j] or "0")
        if left != right:
            return -1 if left < right else 1
    return 0


@functools.total_ordering
class DebianVersion:
    __slots__ = ("epoch", "revision", "text", "upstream")

    def __init__(self, text: str, epoch: int, upstream: str, revision: str):
        self.text = text
        self.epoch = epoch
        self.upstream = upstream
        self.revision = revision

    def compare(self, other: DebianVersion) -> int:
        if self.epoch != other.epoch:
            return -1 if self.epoch < other.epoch else 1
        return _verrevcmp(self.upstream, other.upstream) or _verrevcmp(
            self.revision, other.revision
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DebianVersion) and self.compare(other) == 0

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, DebianVersion):
            return NotImplemented
        return self.compare(other) < 0

    def __hash__(self) -> int:
        return hash(self.epoch)  # equal versions may be spelled differently (1.0 and 1.00)

    def __repr__(self) -> str:
        return f"<deb {self.text}>"


class DebianScheme(VersionScheme):
    name = "Debian"

    def _parse(self, text: str) -> ParsedVersion:
        epoch_text, colon, rest = text.partition(":")
        if not colon:
            epoch_text, rest = "0", text
        if not epoch_text.isdigit() or not epoch_text.isascii():
            raise VersionError(self.name, text, "the epoch (before ':') must be a number")
        upstream, dash, revision = rest.rpartition("-")
        if not dash:
            upstream, revision = rest, ""
        if not _DEB_UPSTREAM_RE.fullmatch(upstream) or not upstream.isascii():
            raise VersionError(
                self.name,
                text,
                "the upstream version must start with a digit and use only "
                "letters, digits and . + ~ - :",
            )
        if dash and not (_DEB_REVISION_RE.fullmatch(revision) and revision.isascii()):
            raise VersionError(
                self.name, text, "the revision (after the last '-') must use letters, digits, . + ~"
            )
        return DebianVersion(text, int(epoch_text), upstream, revision)


# -- Maven -----------------------------------------------------------------------------------

_QUALIFIERS = ("alpha", "beta", "milestone", "rc", "snapshot", "", "sp")
_QUALIFIER_ALIASES = {"ga": "", "final": "", "release": "", "cr": "rc"}
_RELEASE_INDEX = str(_QUALIFIERS.index(""))

# Items of a parsed Maven version: ("i", int) numbers, ("s", str) qualifiers, ("l", list) lists.
_MavenItem = tuple[str, Any]


def _qualifier_rank(value: str) -> str:
    """Known qualifiers by their index; unknown ones after all of them, alphabetically."""
    if value in _QUALIFIERS:
        return str(_QUALIFIERS.index(value))
    return f"{len(_QUALIFIERS)}-{value}"


def _string_item(value: str, followed_by_digit: bool) -> _MavenItem:
    if followed_by_digit and len(value) == 1:
        value = {"a": "alpha", "b": "beta", "m": "milestone"}.get(value, value)
    return ("s", _QUALIFIER_ALIASES.get(value, value))


def _is_null(item: _MavenItem) -> bool:
    kind, value = item
    if kind == "i":
        return bool(value == 0)
    if kind == "s":
        return bool(value == "")
    return not value


def _normalize(items: list[_MavenItem]) -> None:
    """Drop trailing null items (0, release qualifiers, empty lists) as Maven does."""
    for index in range(len(items) - 1, -1, -1):
        if _is_null(items[index]):
            del items[index]
        elif items[index][0] != "l":
            break


def _maven_cmp(a: _MavenItem | None, b: _MavenItem | None) -> int:
    """Maven's Item.compareTo: ``a`` is never None except through the list branch."""
    assert a is not None
    kind, value = a
    if kind == "i":
        if b is None:
            return 0 if value == 0 else 1
        if b[0] == "i":
            return int(value > b[1]) - int(value < b[1])
        return 1  # 1.1 > 1-sp and 1.1 > 1-1
    if kind == "s":
        if b is None:
            left, right = _qualifier_rank(value), _RELEASE_INDEX
        elif b[0] == "s":
            left, right = _qualifier_rank(value), _qualifier_rank(b[1])
        else:
            return -1
        return (left > right) - (left < right)
    if b is None:
        return _maven_cmp(value[0], None) if value else 0
    if b[0] == "i":
        return -1
    if b[0] == "s":
        return 1
    return _maven_list_cmp(value, b[1])


def _maven_list_cmp(left: list[_MavenItem], right: list[_MavenItem]) -> int:
    for index in range(max(len(left), len(right))):
        a = left[index] if index < len(left) else None
        b = right[index] if index < len(right) else None
        result = (0 if b is None else -_maven_cmp(b, None)) if a is None else _maven_cmp(a, b)
        if result:
            return result
    return 0


def _int_item(text: str) -> _MavenItem:
    return ("i", int(text))


def parse_maven(version: str) -> list[_MavenItem]:
    """Maven 3 ComparableVersion.parseVersion, items as tagged tuples."""
    text = version.lower()
    root: list[_MavenItem] = []
    current = root
    stack = [root]
    is_digit = False
    start = 0

    def item(is_num: bool, chunk: str) -> _MavenItem:
        return _int_item(chunk) if is_num else _string_item(chunk, False)

    def push() -> None:
        nonlocal current
        child: list[_MavenItem] = []
        current.append(("l", child))
        current = child
        stack.append(child)

    for index, char in enumerate(text):
        if char == ".":
            current.append(("i", 0) if index == start else item(is_digit, text[start:index]))
            start = index + 1
        elif char == "-":
            current.append(("i", 0) if index == start else item(is_digit, text[start:index]))
            start = index + 1
            push()
        elif char in _DIGITS:
            if not is_digit and index > start:
                current.append(_string_item(text[start:index], True))
                start = index
                push()
            is_digit = True
        else:
            if is_digit and index > start:
                current.append(_int_item(text[start:index]))
                start = index
                push()
            is_digit = False
    if len(text) > start:
        current.append(item(is_digit, text[start:]))
    while stack:
        _normalize(stack.pop())
    return root


@functools.total_ordering
class MavenVersion:
    __slots__ = ("items", "text")

    def __init__(self, text: str):
        self.text = text
        self.items = parse_maven(text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MavenVersion) and _maven_list_cmp(self.items, other.items) == 0

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, MavenVersion):
            return NotImplemented
        return _maven_list_cmp(self.items, other.items) < 0

    def __hash__(self) -> int:
        return 0  # equality is Maven's (1 == 1.0 == 1-ga), not textual

    def __repr__(self) -> str:
        return f"<maven {self.text}>"


class MavenScheme(VersionScheme):
    name = "Maven"

    def _parse(self, text: str) -> ParsedVersion:
        if any(char.isspace() for char in text):
            raise VersionError(self.name, text, "a Maven version has no white space")
        return MavenVersion(text)


# -- registry --------------------------------------------------------------------------------

SEMVER = SemVerScheme()
SCHEMES: dict[str, VersionScheme] = {
    "PyPI": PyPIScheme(),
    "npm": NpmScheme(),
    "Go": GoScheme(),
    "Debian": DebianScheme(),
    "Ubuntu": DebianScheme(),
    "Maven": MavenScheme(),
}
"""Comparators by OSV ecosystem name (the part before any ``:release`` suffix)."""


def ecosystem_base(ecosystem: str) -> str:
    """``Debian:12`` -> ``Debian``; ``Maven:https://…`` -> ``Maven``."""
    return ecosystem.split(":", 1)[0]


def scheme_for(ecosystem: str, range_type: str = "ECOSYSTEM") -> VersionScheme | None:
    """The comparator for a range of ``range_type`` in ``ecosystem``; None when there is none.

    ``SEMVER`` ranges use the ecosystem's own comparator where it is SemVer-based (npm, Go: both
    accept their prefixes), else strict SemVer. ``GIT`` ranges have none: they need the
    repository's commit graph.
    """
    if range_type == "GIT":
        return None
    scheme = SCHEMES.get(ecosystem_base(ecosystem))
    if range_type == "SEMVER":
        return scheme if isinstance(scheme, NpmScheme | GoScheme) else SEMVER
    return scheme
