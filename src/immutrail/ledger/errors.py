"""Errors of the ledger, grouped by what the user must do about them.

Every error carries ``diagnostics()``: a text written for the person at the terminal. The CLI maps
the family to an exit code: input errors exit 2, verification failures exit 1, storage faults 3.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every ledger error."""

    def diagnostics(self) -> str:
        return str(self)


class LedgerInputError(LedgerError, ValueError):
    """The request itself is wrong (malformed event, index out of range): nothing was written."""


class EventFormatError(LedgerInputError):
    """An event does not follow the documented event format."""

    def __init__(self, message: str, *, field: str | None = None, line: int | None = None):
        self.field = field
        self.line = line
        where = []
        if line is not None:
            where.append(f"line {line}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class DuplicateEventError(LedgerInputError):
    """An event id that the ledger already holds (a replay or a retried append)."""


class NotInitializedError(LedgerError):
    """The home or the database has no ledger yet."""

    def diagnostics(self) -> str:
        return f"{self}\nRun `immutrail init` first (see `immutrail init --help`)."


class StorageError(LedgerError):
    """The storage backend failed (unreachable, locked, schema from a newer immutrail)."""


class VerificationError(LedgerError):
    """The ledger, a proof or a checkpoint does not verify."""
