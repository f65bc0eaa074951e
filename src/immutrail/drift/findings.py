"""Findings of an integrity check and the report that carries them.

A finding names one path (absolute inside the instance, ``/etc/app.toml``) and what happened to
it: ``added`` (not in the image), ``removed`` (in the image, not in the instance), ``modified``
(present in both, with one :class:`Difference` per aspect that differs: ``type``, ``content``,
``size``, ``mode``, ``owner``, ``link_target``, ``layer``) or ``unreadable`` (the check could not
read it: a finding, never a crash). Content is named by ``sha256:<hex>``; modes as four octal
digits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Change", "Difference", "Finding", "IntegrityReport", "fmt_mode", "fmt_sha"]

SCHEMA_VERSION = 1
SUMMARY_LIMIT = 50
"""Findings listed in :meth:`IntegrityReport.summary`; the JSON form lists all of them."""


class Change(StrEnum):
    ADDED = "added"
    REMOVED = "removed"
    MODIFIED = "modified"
    UNREADABLE = "unreadable"


def fmt_mode(mode: int) -> str:
    return f"{mode & 0o7777:04o}"


def fmt_sha(hex_digest: str | None) -> str | None:
    return None if hex_digest is None else f"sha256:{hex_digest}"


@dataclass(frozen=True, slots=True)
class Difference:
    """One aspect of a path that is not as the image says: ``expected`` against ``observed``."""

    aspect: str
    expected: str | int | None
    observed: str | int | None

    def to_json(self) -> dict[str, Any]:
        return {"aspect": self.aspect, "expected": self.expected, "observed": self.observed}

    def __str__(self) -> str:
        return f"{self.aspect}: {self.expected} -> {self.observed}"


@dataclass(frozen=True, slots=True)
class Finding:
    """``type`` is what is there now (what was there, for ``removed``); ``sha256``/``size``
    describe that file's content; ``engine`` is how the Docker engine reported the path
    (``added``/``changed``/``deleted``), when it did."""

    path: str
    change: Change
    type: str | None = None
    differences: tuple[Difference, ...] = ()
    sha256: str | None = None
    size: int | None = None
    link_target: str | None = None
    detail: str | None = None
    engine: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "change": str(self.change), "type": self.type}
        if self.differences:
            out["differences"] = [d.to_json() for d in self.differences]
        for name in ("sha256", "size", "link_target", "detail", "engine"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out

    def __str__(self) -> str:
        parts = [f"{self.change:<10} {self.path}"]
        if self.type is not None:
            parts.append(f"({self.type})")
        if self.differences:
            parts.append("; ".join(str(d) for d in self.differences))
        elif self.sha256 is not None:
            parts.append(self.sha256)
        if self.link_target is not None and not self.differences:
            parts.append(f"-> {self.link_target}")
        if self.detail:
            parts.append(f"[{self.detail}]")
        if self.engine:
            parts.append(f"[engine: {self.engine}]")
        return " ".join(parts)


@dataclass(frozen=True)
class IntegrityReport:
    """The result of one check of one instance against the image it was created from.

    ``entries_checked`` counts every path compared; ``files_checked`` the regular files among
    them; ``files_hashed``/``bytes_hashed`` what was read this time; ``files_trusted`` the files
    whose content was taken from the saved state (their inode, size, mtime and ctime unchanged
    since they were last hashed and found equal). ``full`` says whether every file was hashed.
    """

    image: str
    target: str
    runtime: str
    findings: tuple[Finding, ...]
    entries_checked: int
    files_checked: int
    files_hashed: int
    files_trusted: int
    bytes_hashed: int
    duration_seconds: float
    full: bool
    expected_source: str
    notes: tuple[str, ...] = field(default=())

    @classmethod
    def build(cls, findings: Sequence[Finding], **fields: Any) -> IntegrityReport:
        return cls(findings=tuple(sorted(findings, key=lambda f: f.path)), **fields)

    @property
    def clean(self) -> bool:
        return not self.findings

    def counts(self) -> dict[str, int]:
        seen = Counter(f.change for f in self.findings)
        return {str(change): seen.get(change, 0) for change in Change}

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "image": self.image,
            "target": self.target,
            "runtime": self.runtime,
            "clean": self.clean,
            "counts": self.counts(),
            "entries_checked": self.entries_checked,
            "files_checked": self.files_checked,
            "files_hashed": self.files_hashed,
            "files_trusted": self.files_trusted,
            "bytes_hashed": self.bytes_hashed,
            "duration_seconds": round(self.duration_seconds, 6),
            "full": self.full,
            "expected_source": self.expected_source,
            "notes": list(self.notes),
            "findings": [f.to_json() for f in self.findings],
        }

    def summary(self, limit: int = SUMMARY_LIMIT) -> str:
        """A few lines for people: the verdict, the figures, the first ``limit`` findings."""
        counts = self.counts()
        verdict = (
            "clean: the filesystem is exactly the image's"
            if self.clean
            else "DRIFT: " + ", ".join(f"{n} {change}" for change, n in counts.items() if n)
        )
        how = "every file hashed" if self.full else f"{self.files_trusted} files unchanged since"
        if not self.full:
            how += " their last hash"
        lines = [
            f"{self.runtime} {self.target} against {self.image}",
            verdict,
            f"{self.entries_checked} paths, {self.files_checked} files "
            f"({self.files_hashed} hashed, {self.bytes_hashed:,} bytes; {how}) "
            f"in {self.duration_seconds:.2f}s",
        ]
        lines.extend(f"note: {note}" for note in self.notes)
        lines.extend(f"  {finding}" for finding in self.findings[:limit])
        if len(self.findings) > limit:
            lines.append(f"  … and {len(self.findings) - limit} more (use the JSON output)")
        return "\n".join(lines)
