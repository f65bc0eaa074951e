"""Errors of the crypto package, one family so callers can catch ``CryptoError`` at a boundary.

Every error carries ``diagnostics()``: a text for the person at the terminal that says what went
wrong and, where we know it, what to do about it (sigstore-python's convention).
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base of every error raised by ``immutrail.crypto``."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def diagnostics(self) -> str:
        """The message for the user, followed by the hint on what to do, when there is one."""
        return str(self) if self.hint is None else f"{self}\n{self.hint}"


class CanonicalizationError(CryptoError, ValueError):
    """A value has no RFC 8785 (JCS) form, or bytes are not the JCS form of what they encode."""


class DuplicateKeyError(CanonicalizationError):
    """A JSON object names one key twice: which value is meant is ambiguous."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


class NoteError(CryptoError):
    """Malformed signed-note, verifier-key or checkpoint text (or a checkpoint for another log)."""


class EnvelopeError(CryptoError):
    """A malformed DSSE envelope or detached signature (bad shape, bad base64, wrong type)."""


class SignatureError(CryptoError):
    """A signature by a trusted key does not verify, or no trusted key signed at all."""


class KeyFileError(CryptoError):
    """A key cannot be loaded or saved: wrong passphrase, not a key, unsupported type, exists."""
