"""Errors of the baseline check, grouped by what the user must do about them.

:class:`BaselineInputError` (an unknown image, a user rule that does not compile or breaks the
rule contract) exits 2 and guarantees that nothing was attached or recorded. A *failed* rule is
not an error: it is a result (exit 1), attested and recorded like a passing one.
"""

from __future__ import annotations


class BaselineError(Exception):
    """Base of every baseline error; ``diagnostics()`` is written for the person reading it."""

    def diagnostics(self) -> str:
        return str(self)


class BaselineInputError(BaselineError, ValueError):
    """The request or its input is wrong; nothing was written."""


class RuleFileError(BaselineInputError):
    """A user rule file that cannot be used: syntax error, broken contract, failed evaluation.

    ``path`` is the file as the user named it (relative to the rules folder) and ``detail`` the
    interpreter's message or the contract clause that was broken.
    """

    def __init__(self, path: str, detail: str):
        self.path = path
        self.detail = detail
        super().__init__(f"{path}: {detail}")

    def diagnostics(self) -> str:
        return f"rule file {self.path}:\n  " + self.detail.strip().replace("\n", "\n  ")


class PredicateFormatError(BaselineError, ValueError):
    """A baseline predicate that does not follow the documented format (see docs/baseline.md)."""
