"""Errors of the artifacts part, grouped by what the user must do about them.

The CLI maps each family to an exit code: :class:`ArtifactInputError` (a bad definition, a dirty
tree, a re-pointed tag, an unknown digest) exits 2 and guarantees that nothing was written to the
store or the ledger; :class:`BlobVerificationError` (stored bytes that do not match their digest)
exits 1; :class:`StoreError` (the store itself is damaged or unwritable) exits 3.
"""

from __future__ import annotations


class ArtifactError(Exception):
    """Base of every artifacts error; ``diagnostics()`` is written for the person reading it."""

    def diagnostics(self) -> str:
        return str(self)


class ArtifactInputError(ArtifactError, ValueError):
    """The request or its input is wrong; nothing was written."""


class DefinitionError(ArtifactInputError):
    """An image definition that does not follow the schema or the semantic rules.

    ``problems`` holds one line per problem, each naming the file, the line when known and the key,
    so that a user fixes all of them in one round instead of one per run.
    """

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))

    def diagnostics(self) -> str:
        lines = [f"invalid image definition {self.path}:"]
        lines.extend(f"  {problem}" for problem in self.problems)
        return "\n".join(lines)


class SourceError(ArtifactInputError):
    """The source tree cannot be built as asked (dirty tree, escaping symlink, device node…)."""


class TagConflictError(ArtifactInputError):
    """A tag already names another image: tags are immutable, build under a new tag instead."""


class NotFoundError(ArtifactInputError):
    """A digest or tag the store does not hold."""


class BlobVerificationError(ArtifactError):
    """Stored bytes do not match the digest they are stored under (tampering or disk damage)."""

    def __init__(self, digest: str, path: str, detail: str):
        self.digest = digest
        self.path = path
        super().__init__(f"blob {digest} at {path} {detail}")


class StoreError(ArtifactError):
    """The store is damaged or cannot be written (not an OCI layout, unreadable index.json…)."""
