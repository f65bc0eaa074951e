"""The values a compliance report is made of; each renders itself as JSON (docs/reports.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..source import Indexed

MAX_CITATIONS = 5
"""Representative events cited per fact: the first three and the last two, in ledger order."""


@dataclass(frozen=True)
class Citation:
    """One event a fact rests on: ``immutrail ledger entry INDEX`` shows it."""

    index: int
    id: str

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id}


def cite(items: Sequence[Indexed]) -> tuple[Citation, ...]:
    ordered = sorted({i.index: i for i in items}.values(), key=lambda i: i.index)
    if len(ordered) > MAX_CITATIONS:
        ordered = [*ordered[:3], *ordered[-2:]]
    return tuple(Citation(i.index, i.event.id) for i in ordered)


def citations_json(citations: Sequence[Citation]) -> list[dict[str, Any]]:
    return [c.to_json() for c in citations]


@dataclass(frozen=True)
class Evidence:
    kind: str
    description: str
    count: int
    citations: tuple[Citation, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "description": self.description,
            "count": self.count,
            "citations": citations_json(self.citations),
        }


@dataclass(frozen=True)
class ControlResult:
    id: str
    title: str
    text: str
    status: str
    """``satisfied``, ``partial`` or ``no evidence``."""
    required: tuple[Evidence, ...]
    supporting: tuple[Evidence, ...]
    missing: tuple[str, ...]
    """The required evidence kinds the window holds none of."""
    exceptions: tuple[tuple[str, int], ...]
    """(exception kind, how many) for the kinds that bear on this control and occurred."""
    note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "text": self.text,
            "status": self.status,
            "required": [e.to_json() for e in self.required],
            "supporting": [e.to_json() for e in self.supporting],
            "missing": list(self.missing),
            "exceptions": dict(self.exceptions),
            "note": self.note,
        }


@dataclass(frozen=True)
class Finding:
    """An exception: something an auditor must look at (an override, drift, a late patch…)."""

    kind: str
    index: int
    """The ledger index of the event the exception is about (its first one, for a group)."""
    time: str
    subject: str
    actor: str
    environment: str | None
    message: str
    citations: tuple[Citation, ...]
    controls: tuple[str, ...]
    """The framework's controls this kind of exception bears on."""

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "index": self.index,
            "time": self.time,
            "subject": self.subject,
            "actor": self.actor,
            "environment": self.environment,
            "message": self.message,
            "citations": citations_json(self.citations),
            "controls": list(self.controls),
        }


@dataclass(frozen=True)
class Basis:
    """What the report was computed from: the ledger, up to one tree size and its root."""

    origin: str
    tree_size: int
    root_hash: str
    """Base64, as in the checkpoint's body."""
    signed: bool
    """Whether a signed checkpoint of exactly this size is stored."""
    checkpoint: str | None
    """The signed note, when there is one."""

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "signed": self.signed,
            "checkpoint": self.checkpoint,
        }


@dataclass(frozen=True)
class Report:
    framework: str
    framework_title: str
    start: str
    end: str
    environment: str | None
    """The environment the report is limited to (None: every environment)."""
    patch_environment: str
    """Where time to patch is measured (the report's environment, else ``prod``)."""
    patch_days: int
    basis: Basis
    controls: tuple[ControlResult, ...]
    exceptions: tuple[Finding, ...]
    metrics: Mapping[str, Any]
    """JSON-ready metrics (docs/reports.md, "Metrics")."""

    def status_counts(self) -> dict[str, int]:
        counts = {"satisfied": 0, "partial": 0, "no evidence": 0}
        for control in self.controls:
            counts[control.status] += 1
        return counts

    def exception_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.exceptions:
            counts[item.kind] = counts.get(item.kind, 0) + 1
        return dict(sorted(counts.items()))
