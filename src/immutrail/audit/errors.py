"""Errors of the audit package, in the ledger's families so the CLI's shared map applies.

``AuditInputError`` (a bad query, a bundle file that cannot be read, a malformed ``--vkey``) exits
2; ``BundleVerificationError`` (a bundle that does not verify) exits 1; ``AuditError`` itself
(the ledger or the image store cannot give what a bundle needs) exits 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from immutrail.ledger.errors import LedgerError, LedgerInputError, VerificationError


@dataclass(frozen=True)
class Problem:
    """One thing that does not verify: where (a JSON path in the bundle, with the ledger index
    when there is one) and why."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"where": self.where, "message": self.message}


class AuditError(LedgerError):
    """The ledger or the image store cannot give what the query or the bundle needs."""


class AuditInputError(LedgerInputError, AuditError):
    """The request is wrong (a malformed time, digest or environment; an unreadable file)."""


class BundleVerificationError(VerificationError, AuditError):
    """An evidence bundle does not verify; ``problems`` says every place that failed."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        first = self.problems[0] if self.problems else Problem("bundle", "does not verify")
        super().__init__(str(first))

    def diagnostics(self) -> str:
        lines = [f"the evidence bundle does not verify ({len(self.problems)} problem(s)):"]
        lines.extend(f"  {p}" for p in self.problems)
        return "\n".join(lines)
