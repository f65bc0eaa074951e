"""Content digests (``sha256:<hex>``) and the streams that compute them while bytes pass through.

Only SHA-256 is accepted: it is the one algorithm every OCI implementation must support, and a
store that accepted several would have to decide which of two names for one blob is the truth.
"""

from __future__ import annotations

import hashlib
import re
from typing import Protocol

from .errors import ArtifactInputError

ALGORITHM = "sha256"
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


def is_digest(value: object) -> bool:
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None


def check_digest(value: object, what: str = "digest") -> str:
    """Return ``value`` if it is a lower-case ``sha256:`` digest, else raise a clear error."""
    if not is_digest(value):
        raise ArtifactInputError(
            f"{what} {value!r} is not a digest of the form sha256:<64 lower-case hex digits>"
        )
    assert isinstance(value, str)
    return value


def sha256_digest(data: bytes) -> str:
    return f"{ALGORITHM}:{hashlib.sha256(data).hexdigest()}"


def hex_of(digest: str) -> str:
    """The hex part of a checked digest (the blob's file name in an OCI layout)."""
    return check_digest(digest).split(":", 1)[1]


class Writable(Protocol):
    def write(self, data: bytes | bytearray, /) -> object: ...

    def flush(self) -> object: ...


class HashingWriter:
    """A write-only stream that hashes and counts what it forwards to ``target``.

    A gzip layer is hashed twice on its way to disk (uncompressed for the diff_id, compressed for
    the blob digest); chaining two of these keeps a layer out of memory whatever its size. An
    uncompressed layer passes through one: its blob digest is its diff_id.
    """

    def __init__(self, target: Writable | None = None):
        self._target = target
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray, /) -> int:
        self._hash.update(data)
        self.size += len(data)
        if self._target is not None:
            self._target.write(data)
        return len(data)

    def flush(self) -> None:
        if self._target is not None:
            self._target.flush()

    @property
    def digest(self) -> str:
        return f"{ALGORITHM}:{self._hash.hexdigest()}"
