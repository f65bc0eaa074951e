"""Errors of signing and approving. A statement that does not count is not an error: it is data
(:class:`~immutrail.signing.rules.Rejected`, with its reason).

:class:`SigningInputError` (an unknown image, a bad environment name, a repeated approval) exits 2
and guarantees that nothing was attached and nothing was recorded.
"""

from __future__ import annotations


class SigningError(Exception):
    """Base of the signing errors; ``diagnostics()`` is written for the user."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def diagnostics(self) -> str:
        return str(self) if self.hint is None else f"{self}\n{self.hint}"


class SigningInputError(SigningError, ValueError):
    """The request is wrong; nothing was attached or recorded."""


class ReplayError(SigningInputError):
    """A principal would sign or approve what it already signed or approved."""
