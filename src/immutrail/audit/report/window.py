"""The slice of the ledger a report reads: the window's events, the environment, the instances.

Everything here reads through an :class:`~immutrail.audit.source.EventSource`, so a report sees
exactly the first ``size`` entries of the ledger and nothing appended after them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

import orjson

from immutrail.artifacts.store import Store
from immutrail.ledger.event import format_time, time_us
from immutrail.ledger.storage.interface import EntryFilter

from .. import vocabulary as v
from ..errors import AuditInputError
from ..queries import environment_of
from ..reading import LedgerSource
from ..source import EventSource, Indexed, member

VULNDB_IMPORTED = "vulndb.imported"
"""Written by :mod:`immutrail.scan.scanner` on every database import (pinned by the tests)."""
ACCESS_EVENTS = (
    "principal.created",
    "principal.disabled",
    "role.granted",
    "role.revoked",
    "token.created",
    "token.revoked",
)
"""Written by :mod:`immutrail.access` (pinned by the tests)."""
RECOVERY_REASONS = ("reconcile", "rollback", "automatic rollback", "drift remediation")

MAX_WINDOW_DAYS = 3653
"""The widest window a report covers: ten years (3,653 days, leap days included).

Audit periods are a year at most (SOC 2 type II, PCI DSS), and ten years is beyond the usual
retention of audit records (PCI DSS one year, SOX seven); the bound keeps a report to at most 523
weekly rows (a window to year 9999 would ask for 417,000 of them) and its build to seconds.
"""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY_US = 86_400_000_000
_PER_INSTANCE = 200


def check_span(start_us: int, end_us: int) -> None:
    """AuditInputError (exit 2) when ``[start_us, end_us]`` is wider than MAX_WINDOW_DAYS."""
    if end_us - start_us > MAX_WINDOW_DAYS * _DAY_US:
        raise AuditInputError(
            f"the window from {moment(start_us)} to {moment(end_us)} is longer than "
            f"{MAX_WINDOW_DAYS} days (ten years), the most one report covers: split it"
        )


def moment(us: int) -> str:
    """Microseconds since the epoch in the ledger's one spelling of a time."""
    return format_time(_EPOCH + timedelta(microseconds=us))


@dataclass(frozen=True)
class Instance:
    """One instance's life in an environment, as its events tell it."""

    created: Indexed
    ended: Indexed | None
    """The first ``instance.destroyed``, ``chaos.terminated`` or ``instance.lost`` after it."""

    @property
    def id(self) -> str:
        return self.created.event.subject

    @property
    def digest(self) -> str:
        return self.created.text("digest") or ""

    @property
    def service(self) -> str:
        return self.created.text("service") or ""

    def running_at(self, us: int) -> bool:
        return self.created.us <= us and (self.ended is None or self.ended.us > us)


class Window:
    """The events of ``[start_us, end_us]`` (both included) that concern ``environment``.

    An event concerns an environment when its payload (or its ``env:`` subject) names it, or when
    it names none at all: images, keys and access are shared by every environment.
    """

    def __init__(
        self,
        source: EventSource,
        start_us: int,
        end_us: int,
        environment: str | None,
        store: Store | None = None,
    ) -> None:
        check_span(start_us, end_us)
        self.source = source
        self.store = store
        self.start_us = start_us
        self.end_us = end_us
        self.environment = environment

    def concerns(self, item: Indexed, environment: str | None = None) -> bool:
        wanted = environment if environment is not None else self.environment
        if wanted is None:
            return True
        named = environment_of(item)
        return named is None or named == wanted

    def in_environment(self, item: Indexed, environment: str | None) -> bool:
        """Strictly in ``environment`` (any, when None): the event names it."""
        return environment is None or environment_of(item) == environment

    @cached_property
    def events(self) -> list[Indexed]:
        source = self.source
        if self.environment is None or not isinstance(source, LedgerSource):
            found = source.window(self.start_us, self.end_us)
        else:
            # Most of a busy ledger's window is other environments' deployments: a glance at
            # each entry's top-level fields (orjson, no validation) skips them before the full,
            # checked parse, which only the entries kept get.
            flt = EntryFilter(since_us=self.start_us, until_us=self.end_us)
            wanted = [
                row.index
                for row in source.ledger.entries(flt)
                if row.index < source.size and _may_concern(row.data, self.environment)
            ]
            found = [item for i in sorted(wanted) if (item := source.at_index(i)) is not None]
        return [e for e in found if self.concerns(e)]

    @cached_property
    def _by_type(self) -> dict[str, list[Indexed]]:
        found: dict[str, list[Indexed]] = {}
        for item in self.events:
            found.setdefault(item.type, []).append(item)
        return found

    def of(self, *kinds: str) -> list[Indexed]:
        """The window's events of these types, in ledger order."""
        items = [e for kind in kinds for e in self._by_type.get(kind, [])]
        return items if len(kinds) == 1 else sorted(items, key=lambda e: e.index)

    def inside(self, us: int) -> bool:
        return self.start_us <= us <= self.end_us

    def instances(self, environment: str | None) -> list[Instance]:
        """Every instance ever created in ``environment`` (every one, when None)."""
        hint = None if environment is None else member("environment", environment)
        created = [
            e
            for e in self.source.of_type(v.INSTANCE_CREATED, hint)
            if self.in_environment(e, environment)
        ]
        # Few instances: ask for each one's events; many: read every end once.
        ends: dict[str, list[Indexed]] = {}
        if len(created) > _PER_INSTANCE:
            for kind in v.INSTANCE_ENDS:
                for item in self.source.of_type(kind):
                    ends.setdefault(item.event.subject, []).append(item)
        found: dict[str, Instance] = {}
        for item in created:
            name = item.event.subject
            if name in found:
                continue
            mine = ends.get(name, []) if len(created) > _PER_INSTANCE else self.source.about(name)
            ended = min(
                (e for e in mine if e.type in v.INSTANCE_ENDS and e.index > item.index),
                key=lambda e: e.index,
                default=None,
            )
            found[name] = Instance(item, ended)
        return list(found.values())

    def deployment_end(self, item: Indexed) -> Indexed | None:
        """The ``deployment.completed`` of the deployment an ``instance.destroyed`` names."""
        deployment = item.text("deployment")
        if deployment is None:
            return None
        where = f"{item.text('environment')}/{item.text('service')}"
        return next(
            (
                e
                for e in self.source.about(where)
                if e.type == v.DEPLOYMENT_COMPLETED and e.text("deployment") == deployment
            ),
            None,
        )


def _may_concern(data: bytes, environment: str) -> bool:
    try:
        entry = orjson.loads(data)
        named = entry["payload"].get("environment")
        subject = entry["subject"]
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return True  # let the checked parse say what is wrong with it
    if isinstance(subject, str) and subject.startswith("env:") and named is None:
        named = subject.removeprefix("env:")
    return named is None or named == environment


def weeks(start_us: int, end_us: int) -> list[tuple[str, int]]:
    """The ISO weeks the window touches: (``2026-W41``, the Monday's start in microseconds).

    The window must be at most MAX_WINDOW_DAYS wide; the last week may be the calendar's
    (9999-12-27), whose next Monday does not exist.
    """
    check_span(start_us, end_us)
    first = (_EPOCH + timedelta(microseconds=start_us)).date()
    last = (_EPOCH + timedelta(microseconds=end_us)).date()
    monday = first - timedelta(days=first.weekday())
    found = []
    for n in range((last - monday).days // 7 + 1):
        start = monday + timedelta(days=7 * n)
        year, week, _ = start.isocalendar()
        found.append((f"{year}-W{week:02d}", time_us(f"{start.isoformat()}T00:00:00Z")))
    return found


def week_of(us: int, starts: Sequence[tuple[str, int]]) -> str | None:
    label = None
    for name, start in starts:
        if start <= us:
            label = name
    return label


def failed_rules(item: Indexed) -> list[str]:
    """The rules a ``promotion.decided`` recorded as failed."""
    checks = item.payload.get("checks")
    return [
        str(c["rule"])
        for c in (checks if isinstance(checks, list) else [])
        if isinstance(c, Mapping) and c.get("passed") is False and isinstance(c.get("rule"), str)
    ]


def drift_findings(item: Indexed) -> list[Mapping[str, Any]]:
    """The findings a ``drift.detected`` lists."""
    findings = item.payload.get("findings")
    return [f for f in (findings if isinstance(findings, list) else []) if isinstance(f, Mapping)]
