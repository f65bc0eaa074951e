"""The baseline predicate: what ``immutrail check`` states about an image, and how to read it back.

The statement's ``predicateType`` is :data:`BASELINE_PREDICATE`; the predicate is::

    {"passed": bool, "fail_on": "low|medium|high|critical",
     "rule_pack": {"name", "version", "digest"},
     "user_rules": [{"path", "digest"}],
     "allow_setuid": ["/path", ...],
     "results": [{"id", "title", "severity", "status": "pass"|"fail", "controls": [...],
                  "evidence": [{...}], "source": "builtin"|"user", ...}]}

``passed`` is false exactly when a rule whose severity is ``fail_on`` or above fails (default
``high``: a failing high or critical rule fails the image; medium and low ones are reported).
:func:`baseline_outcome` parses a predicate strictly and checks that ``passed`` agrees with the
results, so a gate never trusts a predicate that contradicts itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import PredicateFormatError
from .rules import Severity

BASELINE_PREDICATE = "https://immutrail.dev/attestation/baseline/v1"
STATUSES = ("pass", "fail")


@dataclass(frozen=True)
class Outcome:
    passed: bool
    failed: list[str]
    """Every failed rule as ``"<id> (<severity>)"``, in the order of the results."""
    fail_on: Severity


def passes(results: Sequence[Mapping[str, Any]], fail_on: Severity) -> bool:
    """No result of severity ``fail_on`` or above has status ``fail``."""
    return not any(
        r["status"] == "fail" and Severity(r["severity"]).at_least(fail_on) for r in results
    )


def _field(value: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in value:
        raise PredicateFormatError(f"{where}: missing {key!r}")
    item = value[key]
    if not isinstance(item, kind) or (kind is not bool and isinstance(item, bool)):
        raise PredicateFormatError(f"{where}.{key}: wrong type {type(item).__name__}")
    return item


def baseline_outcome(predicate: Mapping[str, Any]) -> Outcome:
    """Read a baseline predicate; PredicateFormatError if it is malformed or inconsistent."""
    if not isinstance(predicate, Mapping):
        raise PredicateFormatError("the baseline predicate is not a JSON object")
    passed = _field(predicate, "passed", bool, "predicate")
    try:
        fail_on = Severity(_field(predicate, "fail_on", str, "predicate"))
    except ValueError as exc:
        raise PredicateFormatError(f"predicate.fail_on: {predicate['fail_on']!r}") from exc
    pack = _field(predicate, "rule_pack", Mapping, "predicate")
    for key in ("name", "version", "digest"):
        _field(pack, key, str, "predicate.rule_pack")
    for index, item in enumerate(_field(predicate, "user_rules", list, "predicate")):
        if not isinstance(item, Mapping):
            raise PredicateFormatError(f"predicate.user_rules[{index}] is not an object")
        _field(item, "path", str, f"predicate.user_rules[{index}]")
        _field(item, "digest", str, f"predicate.user_rules[{index}]")
    results = _field(predicate, "results", list, "predicate")
    if not results:
        raise PredicateFormatError("predicate.results is empty: no rule was evaluated")
    seen: set[str] = set()
    failed: list[str] = []
    for index, result in enumerate(results):
        where = f"predicate.results[{index}]"
        if not isinstance(result, Mapping):
            raise PredicateFormatError(f"{where} is not an object")
        rule_id = _field(result, "id", str, where)
        if rule_id in seen:
            raise PredicateFormatError(f"{where}: rule {rule_id} appears twice")
        seen.add(rule_id)
        _field(result, "title", str, where)
        try:
            severity = Severity(_field(result, "severity", str, where))
        except ValueError as exc:
            raise PredicateFormatError(f"{where}.severity: {result['severity']!r}") from exc
        status = _field(result, "status", str, where)
        if status not in STATUSES:
            raise PredicateFormatError(f"{where}.status: {status!r} is not pass or fail")
        controls = _field(result, "controls", list, where)
        if not all(isinstance(c, str) for c in controls):
            raise PredicateFormatError(f"{where}.controls: not a list of strings")
        evidence = _field(result, "evidence", list, where)
        if not all(isinstance(e, Mapping) for e in evidence):
            raise PredicateFormatError(f"{where}.evidence: not a list of objects")
        if status == "fail":
            failed.append(f"{rule_id} ({severity})")
    if passes(results, fail_on) != passed:
        raise PredicateFormatError(
            f"predicate.passed is {str(passed).lower()} but the results say otherwise "
            f"(fail_on {fail_on})"
        )
    return Outcome(passed, failed, fail_on)
