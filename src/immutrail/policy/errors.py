"""Errors of the policy gate. A refused promotion is not an error: it is a decision, recorded.

:class:`PolicyInputError` (a malformed policy file, an unknown environment name, a missing
reason for an override) exits 2 and nothing is recorded; :class:`PolicyError` otherwise exits 3.
"""

from __future__ import annotations


class PolicyError(Exception):
    """Base of the policy gate's errors."""

    def diagnostics(self) -> str:
        return str(self)


class PolicyInputError(PolicyError, ValueError):
    """The request or a file it names is wrong; nothing was recorded."""


class PolicyFormatError(PolicyInputError):
    """A policy file that does not follow the documented YAML form, or Rego that does not parse."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))

    def diagnostics(self) -> str:
        return "\n".join([f"invalid policy {self.path}:", *(f"  {p}" for p in self.problems)])
