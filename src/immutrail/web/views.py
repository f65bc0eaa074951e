"""What the pages show, computed from the audit answers and the ledger's events (no HTML here)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from immutrail import names
from immutrail.audit import vocabulary as v
from immutrail.audit.errors import AuditInputError
from immutrail.audit.queries import (
    DIGEST,
    AtQuery,
    Query,
    TraceQuery,
    at_query,
    changes_query,
    normalize_moment,
    trace_query,
)
from immutrail.audit.source import EventSource, Indexed, member
from immutrail.ledger.event import format_time

PER_PAGE = 50
MAX_PER_PAGE = 500
DEFAULT_WINDOW = timedelta(days=30)
_PICKER = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?")
_INSTANCE_EVENTS = (
    v.INSTANCE_CREATED,
    v.INSTANCE_DESTROYED,
    v.INSTANCE_LOST,
    v.CHAOS_TERMINATED,
    v.DRIFT_DETECTED,
    v.DRIFT_REMEDIATED,
    v.LOGS_KEPT,
)
ATTENTION = frozenset(
    {"override", "promotion-refused", "deployment-failed", "refused", "drift", "incident"}
)
"""Timeline categories an auditor looks at first (drawn highlighted)."""


# --- times --------------------------------------------------------------------------------------


def parse_moment(text: str, what: str) -> str:
    """A time from a form: a ``datetime-local`` value (read as UTC) or any RFC 3339 time."""
    text = text.strip()
    if _PICKER.fullmatch(text):
        text += (":00" if len(text) == 16 else "") + "Z"
    return normalize_moment(text, what)


def picker_value(moment: str) -> str:
    """An RFC 3339 UTC time as a ``datetime-local`` value (milliseconds at most)."""
    text = moment.removesuffix("Z")
    if "." in text:
        whole, fraction = text.split(".", 1)
        text = f"{whole}.{fraction[:3]}"
    return text


def moment_or(text: str | None, default: datetime, what: str) -> str:
    if text is None or not text.strip():
        return format_time(default)
    return parse_moment(text, what)


def default_window(now: datetime) -> tuple[datetime, datetime]:
    return now - DEFAULT_WINDOW, now


# --- paging -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paged:
    rows: Sequence[Any]
    page: int
    pages: int
    per: int
    total: int

    @property
    def first(self) -> int:
        """The 1-based position of the first row shown (0 when there is none)."""
        return 0 if not self.rows else (self.page - 1) * self.per + 1


def _positive(text: str | None, default: int, what: str, most: int) -> int:
    if text is None or text == "":
        return default
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise AuditInputError(f"{what} must be a whole number from 1 to {most}")
    return int(text)


def paginate(rows: Sequence[Any], page: str | None, per: str | None) -> Paged:
    size = _positive(per, PER_PAGE, "per", MAX_PER_PAGE)
    pages = max(1, -(-len(rows) // size))
    number = _positive(page, 1, "page", 10**9)
    number = min(number, pages)
    start = (number - 1) * size
    return Paged(rows[start : start + size], number, pages, size, len(rows))


# --- environments -------------------------------------------------------------------------------


def environments(source: EventSource) -> list[str]:
    """Every environment the ledger names in a declaration, a policy or a gate decision."""
    found: set[str] = set()
    for kind in (v.DECLARED, v.PROMOTION):
        for item in source.of_type(kind):
            name = item.text("environment")
            if name is not None:
                found.add(name)
    for item in source.of_type(v.POLICY_CHANGED):
        found.add(item.event.subject.removeprefix("env:"))
    return sorted(name for name in found if names.ENVIRONMENT_NAME.fullmatch(name))


def check_environment_name(name: str) -> str:
    return names.check_environment(name, AuditInputError)


# --- links --------------------------------------------------------------------------------------


def traceable(kind: str, subject: str) -> bool:
    """Whether an event's subject is something a trace answers for (an image or an instance)."""
    return bool(DIGEST.fullmatch(subject)) or kind in _INSTANCE_EVENTS


def details_text(details: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A change's details as (name, text) pairs; structured values as compact JSON."""
    shown = []
    for name, value in details.items():
        if value is None or value == [] or value == {}:
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
        shown.append((name, text))
    return shown


# --- drift --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftReport:
    index: int
    time: str
    actor: str
    instance: str
    service: str | None
    digest: str | None
    findings: list[Mapping[str, Any]]
    remediated: Mapping[str, Any] | None
    """The ``drift.remediated`` that closed it: index, time, actor, replaced_by."""

    @property
    def open(self) -> bool:
        return self.remediated is None


def drift_reports(source: EventSource, environment: str) -> list[DriftReport]:
    """Every ``drift.detected`` in ``environment``, newest first, with its remediation if any."""
    mentions = member("environment", environment)
    fixes: dict[str, list[Indexed]] = {}
    for item in source.of_type(v.DRIFT_REMEDIATED, mentions):
        if item.text("environment") == environment:
            fixes.setdefault(item.event.subject, []).append(item)
    reports = []
    for item in source.of_type(v.DRIFT_DETECTED, mentions):
        if item.text("environment") != environment:
            continue
        closing = next((f for f in fixes.get(item.event.subject, []) if f.index > item.index), None)
        findings = item.payload.get("findings")
        reports.append(
            DriftReport(
                index=item.index,
                time=item.event.time,
                actor=item.event.actor,
                instance=item.event.subject,
                service=item.text("service"),
                digest=item.text("digest"),
                findings=[f for f in findings if isinstance(f, Mapping)]
                if isinstance(findings, list)
                else [],
                remediated=None
                if closing is None
                else {
                    "index": closing.index,
                    "time": closing.event.time,
                    "actor": closing.event.actor,
                    "replaced_by": closing.text("replaced_by"),
                },
            )
        )
    return sorted(reports, key=lambda r: r.index, reverse=True)


# --- evidence bundles ---------------------------------------------------------------------------


def bundle_query(form: Mapping[str, str]) -> Query:
    """The query a bundle form asks to prove (``kind`` at, trace or changes)."""
    kind = form.get("kind", "")
    if kind == "at":
        return at_query(parse_moment(form.get("at", ""), "the time"), form.get("env", ""))
    if kind == "trace":
        return trace_query(form.get("ref", ""))
    if kind == "changes":
        return changes_query(
            form.get("env", ""),
            parse_moment(form.get("from", ""), "from"),
            parse_moment(form.get("to", ""), "to"),
        )
    raise AuditInputError("the form names no evidence to build (at, trace or changes)")


def bundle_filename(query: Query) -> str:
    """A file name that says what the bundle proves, in characters every system accepts."""
    if isinstance(query, AtQuery):
        words = ["at", query.environment, query.at]
    elif isinstance(query, TraceQuery):
        words = ["trace", query.ref.removeprefix("sha256:")[:16]]
    else:
        words = ["changes", query.environment, query.since, query.until]
    return safe_filename("-".join(["evidence", *words])) + ".json"


def safe_filename(name: str) -> str:
    """``name`` in characters every file system and every Content-Disposition parser accepts."""
    return re.sub(r"[^A-Za-z0-9._-]", "", name.replace(":", ""))[:200]
