"""Errors of the drift part, grouped by what the user must do about them.

The CLI maps each family to an exit code, as for every other part:

* :class:`DriftInputError` (exit 2): the request is wrong: a root that is not a folder, an
  unknown image digest, a container the engine does not have, a malformed ignore pattern. Nothing
  was checked and nothing was written.
* :class:`ImageVerificationError` (exit 1): the image the instance must be compared with does not
  match its own digests in the store (tampering or disk damage), so there is nothing trustworthy to
  compare with.
* :class:`DriftError` (exit 3), the rest: the store or the Docker engine failed or is unreachable.

Drift itself is never an exception: findings are data, in an
:class:`~immutrail.drift.findings.IntegrityReport`.
"""

from __future__ import annotations


class DriftError(Exception):
    """Base of every drift error; ``diagnostics()`` is written for the person reading it."""

    def diagnostics(self) -> str:
        return str(self)


class DriftInputError(DriftError, ValueError):
    """The request or its input is wrong (bad root, unknown digest, unknown container)."""


class ImageVerificationError(DriftError):
    """The image's blobs in the store do not match their digests: nothing to compare with."""


class EngineError(DriftError):
    """The Docker engine failed while a container was being checked."""


class SealError(DriftError):
    """A cached document (expected tree, check state) whose seal does not match its content.

    Raised only inside this package: callers recompute instead of trusting the document.
    """
