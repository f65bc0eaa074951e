"""The scan result as an in-toto vulnerability predicate, and reading it back.

Predicate type ``https://in-toto.io/attestation/vulns/v0.1``::

    {
      "scanner": {
        "uri": "pkg:pypi/immutrail" | "pkg:github/aquasecurity/trivy" | "pkg:github/anchore/grype",
        "version": "…",
        "db": {"uri": "…", "version": "sha256:<snapshot or report digest>", "lastUpdate": "…Z"},
        "result": [
          {
            "id": "GHSA-…",
            "aliases": ["CVE-…", "PYSEC-…"],
            "severity": [
              {"method": "level", "score": "critical"},
              {"method": "cvss_score", "score": "9.8"},            # when a score is known
              {"method": "CVSS_V3", "score": "CVSS:3.1/AV:N/…"}    # the vector it came from
            ],
            "annotations": [
              {"package": "requests", "version": "2.19.0", "purl": "pkg:pypi/requests@2.19.0",
               "ecosystem": "PyPI", "fixed": ["2.20.0"], "level": "critical"}
            ]
          }
        ]
      },
      "metadata": {"scanStartedOn": "…Z", "scanFinishedOn": "…Z"},
      "immutrail": {"source": "immutrail" | "trivy" | "grype", "packages": 123,
                    "withdrawn": ["…"], "not_evaluated": [{"purl", "reason", "id"?}], …}
    }

The spec's ``severity[].score`` is a string, so scores are written as strings; annotations are
objects, one per affected package (a vulnerability in two packages is one result with two
annotations). ``immutrail`` holds what the spec has no place for. :func:`findings_from_predicate`
flattens results into one :class:`Finding` per (vulnerability, package).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import PredicateError
from .results import ScanOutcome, VulnResult
from .severity import ALL_LEVELS, LEVELS, UNKNOWN, level_rank

VULNS_PREDICATE = "https://in-toto.io/attestation/vulns/v0.1"
SCANNER_URIS = {
    "immutrail": "pkg:pypi/immutrail",
    "trivy": "pkg:github/aquasecurity/trivy",
    "grype": "pkg:github/anchore/grype",
}
LEVEL_METHOD = "level"
SCORE_METHOD = "cvss_score"


@dataclass(frozen=True, slots=True)
class Finding:
    """One vulnerability in one installed package, as a gate reads it."""

    id: str
    aliases: tuple[str, ...]
    package: str
    version: str
    purl: str
    ecosystem: str
    level: str
    score: float | None
    fixed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DbInfo:
    uri: str
    version: str
    last_update: str


def _result(result: VulnResult) -> dict[str, Any]:
    severity: list[dict[str, str]] = [{"method": LEVEL_METHOD, "score": result.severity.level}]
    if result.severity.score is not None:
        severity.append({"method": SCORE_METHOD, "score": f"{result.severity.score:.1f}"})
    if result.severity.vector and result.severity.method:
        severity.append({"method": result.severity.method, "score": result.severity.vector})
    return {
        "id": result.id,
        "aliases": list(result.aliases),
        "severity": severity,
        "annotations": [
            {
                "package": hit.package,
                "version": hit.version,
                "purl": hit.purl,
                "ecosystem": hit.ecosystem,
                "fixed": list(hit.fixed),
                "level": hit.level,
            }
            for hit in result.hits
        ],
    }


def build_predicate(
    outcome: ScanOutcome,
    *,
    scanner_version: str,
    db: DbInfo,
    started: str,
    finished: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The vulns predicate for ``outcome`` (see the module docs for the shape)."""
    details: dict[str, Any] = {
        "source": outcome.source,
        "packages": outcome.packages,
        "withdrawn": list(outcome.withdrawn),
        "not_evaluated": [
            {"purl": n.purl, "reason": n.reason, **({"id": n.id} if n.id else {})}
            for n in outcome.not_evaluated
        ],
    }
    details.update(extra or {})
    return {
        "scanner": {
            "uri": SCANNER_URIS[outcome.source],
            "version": scanner_version,
            "db": {"uri": db.uri, "version": db.version, "lastUpdate": db.last_update},
            "result": [_result(result) for result in outcome.results],
        },
        "metadata": {"scanStartedOn": started, "scanFinishedOn": finished},
        "immutrail": details,
    }


# -- reading back ------------------------------------------------------------------------------


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PredicateError(f"vulns predicate: {where} must be an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise PredicateError(f"vulns predicate: {where} must be a list")
    return value


def _text(value: object, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str) or (not empty and not value):
        raise PredicateError(f"vulns predicate: {where} must be a non-empty string")
    return value


def _level(value: object, where: str) -> str:
    if value not in ALL_LEVELS:
        raise PredicateError(f"vulns predicate: {where} must be one of {', '.join(ALL_LEVELS)}")
    return str(value)


def _results(predicate: object) -> list[Any]:
    scanner = _object(_object(predicate, "the predicate").get("scanner"), "scanner")
    _text(scanner.get("uri"), "scanner.uri")
    db = _object(scanner.get("db"), "scanner.db")
    _text(db.get("version"), "scanner.db.version")
    _text(db.get("lastUpdate"), "scanner.db.lastUpdate")
    return _list(scanner.get("result"), "scanner.result")


def _severity(entries: list[Any], where: str) -> tuple[str, float | None]:
    level: str | None = None
    score: float | None = None
    for index, entry in enumerate(entries):
        entry = _object(entry, f"{where}.severity[{index}]")
        method = _text(entry.get("method"), f"{where}.severity[{index}].method")
        value = _text(entry.get("score"), f"{where}.severity[{index}].score")
        if method == LEVEL_METHOD:
            level = _level(value, f"{where}.severity[{index}].score")
        elif method == SCORE_METHOD:
            try:
                score = float(value)
            except ValueError:
                score = math.nan
            if not 0.0 <= score <= 10.0:
                raise PredicateError(
                    f"vulns predicate: {where}.severity[{index}]: {value!r} is not a score 0-10"
                )
    if level is None:
        raise PredicateError(f"vulns predicate: {where} has no severity of method 'level'")
    return level, score


def findings_from_predicate(predicate: object) -> list[Finding]:
    """One Finding per (vulnerability, package) of a vulns predicate; PredicateError if the
    predicate does not have the documented shape (nothing is guessed)."""
    findings: list[Finding] = []
    for index, result in enumerate(_results(predicate)):
        where = f"scanner.result[{index}]"
        result = _object(result, where)
        vuln_id = _text(result.get("id"), f"{where}.id")
        aliases = tuple(
            _text(alias, f"{where}.aliases[]") for alias in _list(result.get("aliases", []), where)
        )
        _, score = _severity(_list(result.get("severity"), f"{where}.severity"), where)
        annotations = _list(result.get("annotations"), f"{where}.annotations")
        if not annotations:
            raise PredicateError(f"vulns predicate: {where} names no affected package")
        for number, annotation in enumerate(annotations):
            at = f"{where}.annotations[{number}]"
            annotation = _object(annotation, at)
            fixed = tuple(
                _text(item, f"{at}.fixed[]") for item in _list(annotation.get("fixed", []), at)
            )
            findings.append(
                Finding(
                    id=vuln_id,
                    aliases=aliases,
                    package=_text(annotation.get("package"), f"{at}.package"),
                    version=_text(annotation.get("version"), f"{at}.version"),
                    purl=_text(annotation.get("purl"), f"{at}.purl", empty=True),
                    ecosystem=_text(annotation.get("ecosystem"), f"{at}.ecosystem", empty=True),
                    level=_level(annotation.get("level"), f"{at}.level"),
                    score=score,
                    fixed=fixed,
                )
            )
    return findings


def scan_summary(predicate: object) -> dict[str, Any]:
    """Counts by level (of vulnerabilities, each at its worst package level), the number of
    findings (vulnerability x package), the database digest and what was not evaluated."""
    findings = findings_from_predicate(predicate)
    worst: dict[str, str] = {}
    for finding in findings:
        known = worst.get(finding.id)
        if known is None or _more_severe(finding.level, known):
            worst[finding.id] = finding.level
    counts = dict.fromkeys((*reversed(LEVELS), UNKNOWN), 0)
    for level in worst.values():
        counts[level] += 1
    top = _object(predicate, "the predicate")
    scanner = _object(top.get("scanner"), "scanner")
    details = top.get("immutrail")
    details = details if isinstance(details, Mapping) else {}
    withdrawn = details.get("withdrawn")
    not_evaluated = details.get("not_evaluated")
    return {
        "counts": counts,
        "vulnerabilities": len(worst),
        "findings": len(findings),
        "db": _object(scanner.get("db"), "scanner.db")["version"],
        "source": details.get("source"),
        "withdrawn": len(withdrawn) if isinstance(withdrawn, list) else 0,
        "not_evaluated": len(not_evaluated) if isinstance(not_evaluated, list) else 0,
    }


def _more_severe(a: str, b: str) -> bool:
    """Known levels beat unknown (a scored package says more than an unscored one)."""
    if b == UNKNOWN:
        return a != UNKNOWN
    return a != UNKNOWN and level_rank(a) > level_rank(b)
