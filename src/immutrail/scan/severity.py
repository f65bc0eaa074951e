"""Severity of a vulnerability: CVSS base scores computed from vectors, mapped to levels.

* CVSS v3.0 and v3.1 base scores are computed from the vector exactly as the FIRST
  specifications define them (v3.1 changed only the rounding function, ``Roundup``).
* CVSS v2 base scores likewise (FIRST CVSS v2 guide, section 3.2.1).
* CVSS v4 scores need the specification's 270-entry macro-vector table and its interpolation;
  we do not compute them. A v4 vector is validated, and the level then comes from the
  publisher's label (GHSA's ``database_specific.severity``) when the record has one, else the
  level is ``unknown``.

Levels follow the CVSS v3 qualitative scale: none 0.0, low 0.1-3.9, medium 4.0-6.9,
high 7.0-8.9, critical 9.0-10.0; ``unknown`` when nothing says how severe it is.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .errors import ScanInputError

LEVELS = ("none", "low", "medium", "high", "critical")
UNKNOWN = "unknown"
ALL_LEVELS = (*LEVELS, UNKNOWN)

_V3_BASE = {
    "AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2},
    "AC": {"L": 0.77, "H": 0.44},
    "PR": {"N": 0.85, "L": 0.62, "H": 0.27},
    "UI": {"N": 0.85, "R": 0.62},
    "S": {"U": 0.0, "C": 0.0},
    "C": {"H": 0.56, "L": 0.22, "N": 0.0},
    "I": {"H": 0.56, "L": 0.22, "N": 0.0},
    "A": {"H": 0.56, "L": 0.22, "N": 0.0},
}
_V3_CHANGED_PR = {"N": 0.85, "L": 0.68, "H": 0.5}
_CIA = ("X", "H", "L", "N")
_V3_OTHER = {
    "E": ("X", "H", "F", "P", "U"),
    "RL": ("X", "U", "W", "T", "O"),
    "RC": ("X", "C", "R", "U"),
    "CR": ("X", "H", "M", "L"),
    "IR": ("X", "H", "M", "L"),
    "AR": ("X", "H", "M", "L"),
    "MAV": ("X", "N", "A", "L", "P"),
    "MAC": ("X", "L", "H"),
    "MPR": ("X", "N", "L", "H"),
    "MUI": ("X", "N", "R"),
    "MS": ("X", "U", "C"),
    "MC": _CIA,
    "MI": _CIA,
    "MA": _CIA,
}
_V2_BASE = {
    "AV": {"L": 0.395, "A": 0.646, "N": 1.0},
    "AC": {"H": 0.35, "M": 0.61, "L": 0.71},
    "Au": {"M": 0.45, "S": 0.56, "N": 0.704},
    "C": {"N": 0.0, "P": 0.275, "C": 0.660},
    "I": {"N": 0.0, "P": 0.275, "C": 0.660},
    "A": {"N": 0.0, "P": 0.275, "C": 0.660},
}
_V2_OTHER = {
    "E": ("U", "POC", "F", "H", "ND"),
    "RL": ("OF", "TF", "W", "U", "ND"),
    "RC": ("UC", "UR", "C", "ND"),
    "CDP": ("N", "L", "LM", "MH", "H", "ND"),
    "TD": ("N", "L", "M", "H", "ND"),
    "CR": ("L", "M", "H", "ND"),
    "IR": ("L", "M", "H", "ND"),
    "AR": ("L", "M", "H", "ND"),
}
_V4_BASE = {
    "AV": ("N", "A", "L", "P"),
    "AC": ("L", "H"),
    "AT": ("N", "P"),
    "PR": ("N", "L", "H"),
    "UI": ("N", "P", "A"),
    "VC": ("H", "L", "N"),
    "VI": ("H", "L", "N"),
    "VA": ("H", "L", "N"),
    "SC": ("H", "L", "N"),
    "SI": ("H", "L", "N"),
    "SA": ("H", "L", "N"),
}
_UBUNTU_PRIORITIES = {
    "negligible": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "critical": "critical",
}
_GHSA_LABELS = {"CRITICAL": "critical", "HIGH": "high", "MODERATE": "medium", "LOW": "low"}


class CvssError(ScanInputError):
    """A CVSS vector that does not follow its specification."""


@dataclass(frozen=True, slots=True)
class Severity:
    """How severe a vulnerability is: the level, the base score and the vector it came from."""

    level: str
    score: float | None = None
    method: str | None = None
    """``CVSS_V3``, ``CVSS_V2``, ``CVSS_V4`` or ``label`` (a publisher's own word)."""
    vector: str | None = None

    @property
    def rank(self) -> int:
        return level_rank(self.level)


def level_rank(level: str) -> int:
    """Order of levels for comparisons: none < low < medium < high < critical < unknown.

    ``unknown`` ranks highest so that a threshold (``--fail-on``, a gate) is never passed by a
    vulnerability merely because nobody scored it.
    """
    if level == UNKNOWN:
        return len(LEVELS)
    return LEVELS.index(level)


def level_for_score(score: float) -> str:
    if score == 0:
        return "none"
    if score < 4.0:
        return "low"
    if score < 7.0:
        return "medium"
    if score < 9.0:
        return "high"
    return "critical"


def _metrics(vector: str, parts: list[str], allowed: Mapping[str, Iterable[str]]) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in parts:
        key, colon, value = part.partition(":")
        if not colon or key not in allowed:
            raise CvssError(f"CVSS vector {vector!r}: unknown metric {part!r}")
        if key in found:
            raise CvssError(f"CVSS vector {vector!r}: metric {key} appears twice")
        if value not in allowed[key]:
            raise CvssError(f"CVSS vector {vector!r}: {value!r} is not a value of {key}")
        found[key] = value
    return found


def _roundup_v31(value: float) -> float:
    """CVSS v3.1 Roundup: the smallest one-decimal number >= value, robust to float error."""
    integer = round(value * 100_000)
    if integer % 10_000 == 0:
        return integer / 100_000.0
    return (math.floor(integer / 10_000) + 1) / 10.0


def _roundup_v30(value: float) -> float:
    return math.ceil(value * 10) / 10


@functools.lru_cache(maxsize=4096)  # vectors repeat across records
def cvss3_base_score(vector: str) -> float:
    """The CVSS v3.0/v3.1 base score of ``vector`` (temporal/environmental metrics ignored)."""
    prefix, _, rest = vector.partition("/")
    if prefix not in ("CVSS:3.0", "CVSS:3.1") or not rest:
        raise CvssError(f"CVSS vector {vector!r}: must start with CVSS:3.0/ or CVSS:3.1/")
    allowed: dict[str, Iterable[str]] = {k: tuple(v) for k, v in _V3_BASE.items()}
    allowed.update(_V3_OTHER)
    metrics = _metrics(vector, rest.split("/"), allowed)
    missing = [key for key in _V3_BASE if key not in metrics]
    if missing:
        raise CvssError(f"CVSS vector {vector!r}: base metric {missing[0]} is missing")
    changed = metrics["S"] == "C"
    iss = 1 - (
        (1 - _V3_BASE["C"][metrics["C"]])
        * (1 - _V3_BASE["I"][metrics["I"]])
        * (1 - _V3_BASE["A"][metrics["A"]])
    )
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    privileges = (_V3_CHANGED_PR if changed else _V3_BASE["PR"])[metrics["PR"]]
    exploitability = (
        8.22
        * _V3_BASE["AV"][metrics["AV"]]
        * _V3_BASE["AC"][metrics["AC"]]
        * privileges
        * _V3_BASE["UI"][metrics["UI"]]
    )
    if impact <= 0:
        return 0.0
    roundup = _roundup_v31 if prefix == "CVSS:3.1" else _roundup_v30
    total = 1.08 * (impact + exploitability) if changed else impact + exploitability
    return roundup(min(total, 10.0))


@functools.lru_cache(maxsize=4096)  # vectors repeat across records
def cvss2_base_score(vector: str) -> float:
    """The CVSS v2 base score of ``vector`` (``AV:N/AC:L/Au:N/C:P/I:P/A:P``)."""
    text = vector.removeprefix("(").removesuffix(")")
    allowed: dict[str, Iterable[str]] = {k: tuple(v) for k, v in _V2_BASE.items()}
    allowed.update(_V2_OTHER)
    metrics = _metrics(vector, text.split("/"), allowed)
    missing = [key for key in _V2_BASE if key not in metrics]
    if missing:
        raise CvssError(f"CVSS vector {vector!r}: base metric {missing[0]} is missing")
    impact = 10.41 * (
        1
        - (1 - _V2_BASE["C"][metrics["C"]])
        * (1 - _V2_BASE["I"][metrics["I"]])
        * (1 - _V2_BASE["A"][metrics["A"]])
    )
    exploitability = (
        20
        * _V2_BASE["AV"][metrics["AV"]]
        * _V2_BASE["AC"][metrics["AC"]]
        * _V2_BASE["Au"][metrics["Au"]]
    )
    factor = 0.0 if impact == 0 else 1.176
    score = ((0.6 * impact) + (0.4 * exploitability) - 1.5) * factor
    return float(Decimal(repr(score)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


@functools.lru_cache(maxsize=4096)  # vectors repeat across records
def check_cvss4(vector: str) -> None:
    """Validate a CVSS v4.0 vector's syntax and base metrics (its score is not computed)."""
    prefix, _, rest = vector.partition("/")
    if prefix != "CVSS:4.0" or not rest:
        raise CvssError(f"CVSS vector {vector!r}: must start with CVSS:4.0/")
    parts = rest.split("/")
    base_keys = [part.partition(":")[0] for part in parts if part.partition(":")[0] in _V4_BASE]
    allowed: dict[str, Iterable[str]] = dict(_V4_BASE)
    for part in parts:  # supplemental and environmental metrics: checked for shape only
        key, colon, value = part.partition(":")
        if key not in _V4_BASE and colon and key.isalpha() and value.isalnum():
            allowed[key] = (value,)
    _metrics(vector, parts, allowed)
    missing = [key for key in _V4_BASE if key not in base_keys]
    if missing:
        raise CvssError(f"CVSS vector {vector!r}: base metric {missing[0]} is missing")


def severity_of(
    severities: Iterable[Mapping[str, Any]], database_specific: Mapping[str, Any] | None = None
) -> Severity:
    """The severity an OSV ``severity`` list (plus GHSA's label) gives.

    Preference: a computed CVSS v3 score, then a v2 score, then a v4 vector with the publisher's
    label, then the label alone. CvssError for a vector that does not parse: a record whose
    stated severity is garbage is reported, not silently treated as unknown.
    """
    by_type: dict[str, str] = {}
    for item in severities:
        kind, score = item.get("type"), item.get("score")
        if isinstance(kind, str) and isinstance(score, str):
            by_type.setdefault(kind, score)
    label = _label(database_specific)
    if "CVSS_V3" in by_type:
        vector = by_type["CVSS_V3"]
        score = cvss3_base_score(vector)
        return Severity(level_for_score(score), score, "CVSS_V3", vector)
    if "CVSS_V2" in by_type:
        vector = by_type["CVSS_V2"]
        score = cvss2_base_score(vector)
        v2_level = "low" if score < 4.0 else ("medium" if score < 7.0 else "high")
        return Severity(label or v2_level, score, "CVSS_V2", vector)
    if "CVSS_V4" in by_type:
        vector = by_type["CVSS_V4"]
        check_cvss4(vector)
        return Severity(label or UNKNOWN, None, "CVSS_V4", vector)
    if "Ubuntu" in by_type:
        priority = _UBUNTU_PRIORITIES.get(by_type["Ubuntu"].lower(), UNKNOWN)
        return Severity(label or priority, None, "label")
    if label:
        return Severity(label, None, "label")
    return Severity(UNKNOWN)


def _label(database_specific: Mapping[str, Any] | None) -> str | None:
    if not isinstance(database_specific, Mapping):
        return None
    value = database_specific.get("severity")
    return _GHSA_LABELS.get(value.upper()) if isinstance(value, str) else None


def worst(severities: Iterable[Severity]) -> Severity:
    """The most severe of several (known levels by score; unknown only if nothing is known)."""
    known = [s for s in severities if s.level != UNKNOWN]
    if not known:
        return Severity(UNKNOWN)
    return max(known, key=lambda s: (level_rank(s.level), s.score or 0.0))
