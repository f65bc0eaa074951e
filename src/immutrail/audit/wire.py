"""The evidence bundle's wire format: constants, strict base64, and where a byte sits.

A bundle is one JSON document in RFC 8785 (JCS) canonical form; docs/evidence-bundle.md is its
specification. Only this module, ``bundle.py`` and ``verify.py`` know the layout.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

FORMAT = "https://immutrail.dev/evidence-bundle/v1"
"""The value of the bundle's ``format`` field; a new layout gets a new URI."""

MAX_BUNDLE_BYTES = 512 * 1024 * 1024
"""The largest bundle written or read (SBOMs of big images make bundles of a few MiB)."""

MAX_ATTESTATION_BYTES = 64 * 1024 * 1024
"""The largest attested document (an SBOM, a statement) copied into a bundle."""

MAX_DEPTH = 64
"""The deepest nesting a bundle may have (events nest at most 32 levels, answers about 10)."""

MAX_PROOF_HASHES = 64
"""An RFC 6962 proof of a tree below 2**63 entries has fewer hashes than this."""

TOP_FIELDS = (
    "answer",
    "attestations",
    "checkpoint",
    "events",
    "format",
    "keys",
    "latest",
    "ledger",
    "query",
)


class WireError(ValueError):
    """A field does not have the bundle format's shape; ``where`` is its JSON path."""

    def __init__(self, where: str, message: str):
        super().__init__(message)
        self.where = where


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: object, where: str) -> bytes:
    """Standard base64 with padding, in its one canonical spelling (zero padding bits):
    re-spelling a value that decodes the same is a changed byte, and must not go unnoticed."""
    if not isinstance(value, str):
        raise WireError(where, "must be a base64 string")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireError(where, f"is not base64 ({exc})") from exc
    if b64(data) != value:
        raise WireError(where, "is not in canonical base64 (its padding bits are not zero)")
    return data


def obj(value: object, where: str, fields: tuple[str, ...]) -> dict[str, Any]:
    """``value`` as an object with exactly ``fields``: a missing or an extra field is named."""
    if not isinstance(value, dict):
        raise WireError(where, "must be a JSON object")
    missing = [f for f in fields if f not in value]
    extra = sorted(set(value) - set(fields))
    if missing:
        instead = f" (the object holds the unknown field {extra[0]!r} instead)" if extra else ""
        raise WireError(f"{where}.{missing[0]}", f"is missing{instead}")
    if extra:
        raise WireError(f"{where}.{extra[0]}", "is not a field of the bundle format here")
    return value


def integer(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise WireError(where, "must be a non-negative integer")
    return value


def text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise WireError(where, "must be a string")
    return value


def array(value: object, where: str, limit: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise WireError(where, "must be a JSON array")
    if limit is not None and len(value) > limit:
        raise WireError(where, f"holds more than {limit} items")
    return value


def hashes(value: object, where: str) -> list[bytes]:
    found = []
    for number, item in enumerate(array(value, where, MAX_PROOF_HASHES)):
        data = unb64(item, f"{where}[{number}]")
        if len(data) != 32:
            raise WireError(f"{where}[{number}]", f"must be a 32-byte hash, not {len(data)} bytes")
        found.append(data)
    return found


def path_at(text: str, offset: int) -> str:
    """The JSON path of what sits at character ``offset`` of ``text``.

    The text before ``offset`` must be well-formed JSON up to there (it is where a parser, or the
    comparison with the canonical form, stopped), so a small scanner suffices: it tracks the open
    objects and arrays, the current member name and the array positions. An offset inside a
    member's name gives that member's path, marked ``(its name)``.
    """
    stack: list[list[Any]] = []  # ["obj", member name or None] | ["arr", position]
    expect_name = False
    position = 0
    suffix = ""
    while position < min(offset, len(text)):
        char = text[position]
        if char == '"':
            end = position + 1
            while end < len(text) and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            naming = bool(stack) and stack[-1][0] == "obj" and expect_name
            if naming:
                try:
                    stack[-1][1] = json.loads(text[position : end + 1])
                except ValueError:
                    stack[-1][1] = text[position + 1 : end]
                expect_name = False
            if end >= offset:
                suffix = " (its name)" if naming else ""
                break
            position = end + 1
            continue
        if char == "{":
            stack.append(["obj", None])
            expect_name = True
        elif char == "[":
            stack.append(["arr", 0])
        elif char in "}]" and stack:
            stack.pop()
        elif char == "," and stack:
            if stack[-1][0] == "arr":
                stack[-1][1] += 1
            else:
                expect_name = True
        position += 1
    path = "bundle"
    for kind, where in stack:
        if kind == "arr":
            path += f"[{where}]"
        elif where is not None:
            path += f".{where}"
    return path + suffix
