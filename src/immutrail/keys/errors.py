"""Errors of key management, grouped by what the user must do about them.

:class:`KeyInputError` (an unknown or revoked key, a bad principal id, a missing passphrase)
exits 2 and guarantees that nothing was written: no key file, no ledger event.
"""

from __future__ import annotations


class KeysError(Exception):
    """Base of every key-management error; ``diagnostics()`` is written for the user."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def diagnostics(self) -> str:
        return str(self) if self.hint is None else f"{self}\n{self.hint}"


class KeyInputError(KeysError, ValueError):
    """The request is wrong (unknown key, bad name, no passphrase); nothing was written."""


class UnknownKeyError(KeyInputError):
    """A key the ledger never announced, or one whose private half is not here."""


class RevokedKeyError(KeyInputError):
    """A key the ledger has revoked: it can no longer sign anything that counts."""
