"""What a scan found, whoever scanned: the matcher, a Trivy report or a Grype report.

One :class:`VulnResult` per vulnerability, not per alias: :func:`merge_aliases` joins every
match whose ids and aliases overlap (transitively) into one, named by one of the matched ids,
listing all the others as aliases, with the worst severity any of them states and every
affected package once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from .severity import UNKNOWN, Severity, worst

_DISPLAY = ("critical", "high", "medium", "low", "none", UNKNOWN)


@dataclass(frozen=True, slots=True)
class Hit:
    """One installed package that a vulnerability affects."""

    package: str
    version: str
    purl: str
    ecosystem: str
    fixed: tuple[str, ...] = ()
    level: str = UNKNOWN


@dataclass(frozen=True, slots=True)
class Match:
    """One record (or report entry) that matched one package, before aliases are merged."""

    id: str
    aliases: tuple[str, ...]
    severity: Severity
    hit: Hit


@dataclass(frozen=True, slots=True)
class VulnResult:
    id: str
    aliases: tuple[str, ...]
    severity: Severity
    hits: tuple[Hit, ...]


@dataclass(frozen=True, slots=True)
class NotEvaluated:
    """A package (or a package against one record) that could not be checked, and why."""

    purl: str
    reason: str
    id: str | None = None


@dataclass
class ScanOutcome:
    source: str
    """``immutrail``, ``trivy`` or ``grype``."""
    results: list[VulnResult] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)
    """Ids of withdrawn records that matched an installed package (no finding; counted)."""
    not_evaluated: list[NotEvaluated] = field(default_factory=list)
    packages: int = 0


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, item: str) -> str:
        self.parent.setdefault(item, item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def merge_aliases(matches: Iterable[Match]) -> list[VulnResult]:
    """One result per vulnerability: matches sharing an id or alias are one vulnerability.

    The result is named by the smallest matched id (an id of a record the database or report
    holds, never a bare alias), so the same inputs always give the same name.
    """
    matches = list(matches)
    groups = _UnionFind()
    for match in matches:
        groups.find(match.id)
        for alias in match.aliases:
            groups.union(match.id, alias)
    by_root: dict[str, list[Match]] = {}
    for match in matches:
        by_root.setdefault(groups.find(match.id), []).append(match)
    results = []
    for members in by_root.values():
        primary = min(m.id for m in members)
        names = {m.id for m in members} | {a for m in members for a in m.aliases}
        hits: dict[tuple[str, str, str], Hit] = {}
        for member in members:
            key = (member.hit.purl, member.hit.package, member.hit.version)
            previous = hits.get(key)
            hits[key] = member.hit if previous is None else _merge_hit(previous, member.hit)
        severity = worst(m.severity for m in members)
        # A package matched only through a record that states no severity gets the level its
        # aliases state: it is the same vulnerability.
        ordered = [
            replace(hit, level=severity.level) if hit.level == UNKNOWN else hit
            for hit in sorted(hits.values(), key=lambda h: (h.purl, h.package, h.version))
        ]
        results.append(
            VulnResult(
                id=primary,
                aliases=tuple(sorted(names - {primary})),
                severity=severity,
                hits=tuple(ordered),
            )
        )
    return sorted(results, key=display_order)


def display_order(result: VulnResult) -> tuple[int, float, str]:
    """Most severe first (critical … none), unknown last, then by score and id."""
    return (_DISPLAY.index(result.severity.level), -(result.severity.score or 0), result.id)


def _merge_hit(a: Hit, b: Hit) -> Hit:
    fixed = tuple(dict.fromkeys((*a.fixed, *b.fixed)))
    level = worst([Severity(a.level), Severity(b.level)]).level
    return Hit(a.package, a.version, a.purl, a.ecosystem, fixed, level)
