"""Errors of access control, grouped by what the user must do about them.

- :class:`AccessInputError`: the request is malformed or impossible (a bad name, a role already
  granted, the last admin disabled). Exit 2; nothing was written.
- :class:`AuthenticationError` and :class:`AccessDenied`: the caller is not who they claim, or may
  not do this. Exit 1; nothing was written. Their messages are fixed texts that name only what
  the caller asked for, so they never tell whether another principal, token or environment exists.
- :class:`AccessError` otherwise (a concurrent change made an appended event not count): exit 3.
"""

from __future__ import annotations


class AccessError(Exception):
    """Base of every access-control error; ``diagnostics()`` is written for the user."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def diagnostics(self) -> str:
        return str(self) if self.hint is None else f"{self}\n{self.hint}"


class AccessInputError(AccessError, ValueError):
    """The request is wrong (bad name, unknown role, nothing to revoke); nothing was written."""


class AuthenticationError(AccessError):
    """The caller could not be authenticated; the message never says why in more detail."""


class AccessDenied(AccessError):  # noqa: N818 - the name callers know
    """The authenticated caller may not perform the action (in that environment)."""

    def __init__(
        self, principal: str, action: str, environment: str | None, *, scoped: bool = True
    ) -> None:
        if not scoped:
            where = ""
        elif environment is None:
            where = " in every environment"
        else:
            where = f" in environment {environment}"
        self.principal = principal
        self.action = action
        self.environment = environment
        super().__init__(f"access denied: {principal} may not {action}{where}")


INVALID_TOKEN = "invalid or expired token"  # noqa: S105 - a message, not a secret
"""The one message for a token that is malformed, unknown, forged, revoked, expired or whose
principal is disabled: a caller learns nothing about which tokens exist."""


def cannot_authenticate(principal: str) -> str:
    """The one message for an unknown, disabled or key-less principal."""
    return (
        f"cannot authenticate as {principal}: no enabled principal of that name has a usable "
        "key here"
    )
