"""Sealed JSON documents: the caches of this package are checked before they are believed.

A cache (the expected tree of an image, the state of the last integrity check) is a shortcut: a
wrong one would make a check report "clean" for a changed instance. So each is written as

    {"seal": {"algorithm": "hmac-sha256", "value": "<hex>"}, "body": {...}}

where the value is HMAC-SHA256 of the body's canonical bytes (sorted keys, no whitespace, UTF-8)
under a 32-byte key kept in a file only its owner can read (``algorithm: sha256``, a plain digest,
when no key is given). Reading recomputes it; any difference (an edited byte, a truncated write, a
document of another image renamed into place, a keyed document read without the key or the other
way round) raises :class:`SealError`, and the caller throws the cache away and recomputes.

What the seal does not do: stop someone who can read the key (the home's owner, or root) from
forging a document. Such a person can also rebuild the instance; ``full`` checks and rebuilding
the expected tree without the cache (``use_cache=False``) need no cache at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from .errors import DriftError, SealError

KEY_BYTES = 32
HMAC = "hmac-sha256"
DIGEST = "sha256"


def canonical(body: Mapping[str, Any]) -> bytes:
    """The bytes a seal covers (integers, strings, lists, objects and null only)."""
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _value(body_bytes: bytes, key: bytes | None) -> tuple[str, str]:
    if key is None:
        return DIGEST, hashlib.sha256(body_bytes).hexdigest()
    return HMAC, hmac.new(key, body_bytes, hashlib.sha256).hexdigest()


def seal(body: Mapping[str, Any], key: bytes | None) -> bytes:
    algorithm, value = _value(canonical(body), key)
    return orjson.dumps({"seal": {"algorithm": algorithm, "value": value}, "body": body})


def unseal(data: bytes, key: bytes | None, what: str) -> dict[str, Any]:
    """The body of a sealed document; SealError naming ``what`` if it is not intact."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SealError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise SealError(f"{what} is not a sealed document")
    found, body = document.get("seal"), document.get("body")
    if not isinstance(found, dict) or not isinstance(body, dict):
        raise SealError(f"{what} is not a sealed document")
    algorithm, value = _value(canonical(body), key)
    if found.get("algorithm") != algorithm:
        raise SealError(f"{what} is sealed with {found.get('algorithm')!r}, expected {algorithm}")
    if not isinstance(found.get("value"), str) or not hmac.compare_digest(found["value"], value):
        raise SealError(f"{what} does not match its seal (changed since it was written)")
    return body


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path``: temp file, fsync, rename; a reader sees the old or the new bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_key(path: Path) -> bytes:
    """The key in ``path``, created (mode 0600) the first time.

    A new key is written to a temp file and hard-linked into place, which fails if the name
    exists: two processes creating it at once agree on one key, and none reads half a key.
    """
    if not path.exists():
        try:
            _create_key(path)
        except OSError as exc:
            raise DriftError(f"cannot create the drift key {path}: {exc}") from exc
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise DriftError(f"cannot read the drift key {path}: {exc}") from exc
    if len(key) != KEY_BYTES:
        raise DriftError(
            f"the drift key {path} holds {len(key)} bytes, not {KEY_BYTES}: remove it and the "
            "caches it sealed (they are rebuilt)"
        )
    return key


def _create_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        try:
            os.write(fd, secrets.token_bytes(KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
