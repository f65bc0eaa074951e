"""API tokens: ``imt_<id>_<secret>``, shown once, kept only as the SHA-256 of the secret.

``id`` is 16 hex digits (64 random bits) that name the token in events and listings; ``secret``
is 64 hex digits (256 random bits from :mod:`secrets`). The ledger's ``token.created`` event
keeps ``sha256(secret)``; the token itself is printed once and never stored. A presented token
is checked by recomputing the hash and comparing in constant time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from .errors import INVALID_TOKEN, AccessInputError, AuthenticationError

__all__ = [
    "MAX_LIFETIME",
    "TOKEN_PREFIX",
    "NewToken",
    "hash_secret",
    "new_token",
    "parse_duration",
    "secret_matches",
    "split_token",
]

TOKEN_PREFIX = "imt_"  # noqa: S105 - the format's prefix, not a secret
ID_HEX = 16
SECRET_BYTES = 32
MAX_LIFETIME = timedelta(days=366)
"""The longest a token may live: long-lived credentials are keys, not tokens."""

_TOKEN_RE = re.compile(rf"imt_([0-9a-f]{{{ID_HEX}}})_([0-9a-f]{{{2 * SECRET_BYTES}}})")
TOKEN_ID_RE = re.compile(rf"[0-9a-f]{{{ID_HEX}}}")
_DURATION_RE = re.compile(r"([1-9][0-9]{0,5})([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class NewToken:
    token_id: str
    secret_sha256: str
    token: str
    """The whole token, to be shown once and forgotten."""


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def new_token() -> NewToken:
    token_id = secrets.token_hex(ID_HEX // 2)
    secret = secrets.token_hex(SECRET_BYTES)
    return NewToken(token_id, hash_secret(secret), f"{TOKEN_PREFIX}{token_id}_{secret}")


def split_token(token: str) -> tuple[str, str]:
    """(id, secret) of a well-formed token; AuthenticationError with the one message otherwise."""
    match = _TOKEN_RE.fullmatch(token.strip()) if isinstance(token, str) else None
    if match is None:
        raise AuthenticationError(INVALID_TOKEN)
    return match.group(1), match.group(2)


def secret_matches(secret: str, secret_sha256: str) -> bool:
    """Whether ``secret`` hashes to ``secret_sha256``, compared in constant time."""
    return hmac.compare_digest(hash_secret(secret), secret_sha256)


def check_token_id(token_id: str) -> str:
    text = token_id.strip().removeprefix(TOKEN_PREFIX)
    if not TOKEN_ID_RE.fullmatch(text):
        raise AccessInputError(
            f"{token_id!r} is not a token id",
            hint="A token id is 16 hex digits (`immutrail token list` shows them).",
        )
    return text


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``, ``45s``: a positive whole number and a unit."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None:
        raise AccessInputError(
            f"{text!r} is not a duration", hint="Write a number and a unit: 45s, 90m, 12h, 30d, 2w."
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def check_expiry(expires: datetime, now: datetime) -> datetime:
    """A new token's expiry: timezone-aware, in the future, within :data:`MAX_LIFETIME`."""
    if expires.tzinfo is None:
        raise AccessInputError("the expiry needs a time zone (write Z for UTC)")
    if expires <= now:
        raise AccessInputError("the token would already have expired: give a future expiry")
    if expires - now > MAX_LIFETIME:
        raise AccessInputError(
            f"a token lives at most {MAX_LIFETIME.days} days; use a key for longer-lived access"
        )
    return expires.replace(microsecond=0)
