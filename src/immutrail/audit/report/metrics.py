"""The report's metrics besides time to patch: deployments, the gate, instance ages and drift.

Every figure is computed from the window's events (docs/reports.md, "Metrics", defines each);
durations are in seconds, computed from the events' microsecond times.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from .. import vocabulary as v
from ..source import Indexed
from .patching import quantile
from .window import Window, drift_findings, failed_rules, moment, week_of, weeks

_US = 1_000_000
_DAY = 86_400 * _US
AGE_BUCKETS: tuple[tuple[str, int], ...] = (
    ("under 1 day", _DAY),
    ("1-7 days", 7 * _DAY),
    ("7-30 days", 30 * _DAY),
    ("30-90 days", 90 * _DAY),
    ("90 days or more", 0),
)
"""(label, upper bound in microseconds, exclusive; 0: no bound)."""


def _counts(keys: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def deployments(window: Window) -> dict[str, Any]:
    started = window.of(v.DEPLOYMENT_STARTED)
    ends = window.of(*v.DEPLOYMENT_ENDS)
    starts = weeks(window.start_us, window.end_us)
    per_week = dict.fromkeys((name for name, _ in starts), 0)
    for item in started:
        week = week_of(item.us, starts)
        if week is not None:
            per_week[week] += 1
    return {
        "started": len(started),
        "completed": sum(1 for e in ends if e.type == v.DEPLOYMENT_COMPLETED),
        "failed": sum(1 for e in ends if e.type != v.DEPLOYMENT_COMPLETED),
        "by_principal": _counts([e.event.actor for e in started]),
        "per_week": [{"week": name, "deployments": n} for name, n in per_week.items()],
    }


def gate(window: Window) -> dict[str, Any]:
    decisions = window.of(v.PROMOTION)
    overrides = [e for e in decisions if e.payload.get("override") is True]
    refused = [e for e in decisions if e.payload.get("allowed") is not True]
    return {
        "decisions": len(decisions),
        "allowed": len(decisions) - len(refused) - len(overrides),
        "refused": len(refused),
        "overrides": len(overrides),
        "by_environment": _counts([e.text("environment") or "-" for e in decisions]),
        "refusals_by_check": _counts([r for e in refused for r in failed_rules(e)]),
    }


def instance_ages(window: Window) -> dict[str, Any]:
    """Instances running at the end of the window and how old they were then."""
    running = [i for i in window.instances(window.environment) if i.running_at(window.end_us)]
    ages = sorted((window.end_us - i.created.us, i.id, i.created.index) for i in running)
    buckets = dict.fromkeys((label for label, _ in AGE_BUCKETS), 0)
    for age, _, _ in ages:
        label = next(name for name, bound in AGE_BUCKETS if bound == 0 or age < bound)
        buckets[label] += 1
    values = [age for age, _, _ in ages]
    return {
        "at": moment(window.end_us),
        "running": len(ages),
        "buckets": [{"label": k, "instances": n} for k, n in buckets.items()],
        "median_seconds": None if not values else statistics.median(values) / _US,
        "oldest_seconds": None if not values else values[-1] / _US,
        "instances": [
            {"instance": name, "index": index, "age_seconds": age / _US}
            for age, name, index in sorted(ages, key=lambda a: (-a[0], a[1]))
        ],
    }


def drift(window: Window) -> dict[str, Any]:
    """Findings reported in the window and how long until their instance was replaced."""
    detected = window.of(v.DRIFT_DETECTED)
    findings = [f for e in detected for f in drift_findings(e)]
    durations = []
    still_open = 0
    for item in detected:
        fix = remediation(window, item)
        if fix is None or fix.us > window.end_us:
            still_open += 1
        else:
            durations.append(fix.us - item.us)
    durations.sort()
    return {
        "reports": len(detected),
        "findings": len(findings),
        "by_kind": _counts([str(f.get("kind")) for f in findings]),
        "by_severity": _counts([str(f.get("severity")) for f in findings]),
        "remediated": len(durations),
        "open": still_open,
        "median_seconds_to_remediate": quantile(durations, 50),
        "p90_seconds_to_remediate": quantile(durations, 90),
        "max_seconds_to_remediate": durations[-1] / _US if durations else None,
    }


def remediation(window: Window, detected: Indexed) -> Indexed | None:
    """The first ``drift.remediated`` of the instance after the report (in the whole source)."""
    return next(
        (
            e
            for e in window.source.about(detected.event.subject)
            if e.type == v.DRIFT_REMEDIATED and e.index > detected.index
        ),
        None,
    )
