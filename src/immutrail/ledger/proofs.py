"""Proof values, their JSON form, and the C2SP ``tlog-proof`` text format.

A ``tlog-proof`` is the standard offline proof of one entry: index, RFC 6962 audit path, and the
signed checkpoint it leads to (https://c2sp.org/tlog-proof).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from .errors import LedgerInputError
from .merkle import HASH_SIZE

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64_hash(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LedgerInputError(f"{what} is not base64: {text!r}") from exc
    if len(raw) != HASH_SIZE:
        raise LedgerInputError(f"{what} must be a {HASH_SIZE}-byte hash, got {len(raw)} bytes")
    return raw


@dataclass(frozen=True)
class InclusionProof:
    index: int
    size: int
    leaf_hash: bytes
    root: bytes
    proof: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "size": self.size,
            "leaf_hash": b64(self.leaf_hash),
            "root": b64(self.root),
            "proof": [b64(h) for h in self.proof],
        }


@dataclass(frozen=True)
class ConsistencyProof:
    old_size: int
    new_size: int
    old_root: bytes
    new_root: bytes
    proof: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "old_root": b64(self.old_root),
            "new_root": b64(self.new_root),
            "proof": [b64(h) for h in self.proof],
        }


@dataclass(frozen=True)
class TlogProof:
    index: int
    proof: tuple[bytes, ...]
    checkpoint: str
    """The signed checkpoint note, verbatim."""
    extra: bytes | None = None

    def format(self) -> str:
        lines = [TLOG_PROOF_HEADER]
        if self.extra is not None:
            lines.append(f"extra {b64(self.extra)}")
        lines.append(f"index {self.index}")
        lines.extend(b64(h) for h in self.proof)
        return "\n".join(lines) + "\n\n" + self.checkpoint

    @classmethod
    def parse(cls, text: str) -> TlogProof:
        head, sep, checkpoint = text.partition("\n\n")
        if not sep or not checkpoint:
            raise LedgerInputError("tlog-proof: no empty line before the checkpoint")
        lines = head.split("\n")
        if lines[0] != TLOG_PROOF_HEADER:
            raise LedgerInputError(f"tlog-proof: first line must be {TLOG_PROOF_HEADER}")
        pos, extra = 1, None
        if pos < len(lines) and lines[pos].startswith("extra "):
            try:
                extra = base64.b64decode(lines[pos][6:], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise LedgerInputError("tlog-proof: extra data is not base64") from exc
            pos += 1
        if pos >= len(lines) or not lines[pos].startswith("index "):
            raise LedgerInputError("tlog-proof: missing the index line")
        digits = lines[pos][6:]
        if not digits.isdigit() or not digits.isascii() or (digits != "0" and digits[0] == "0"):
            raise LedgerInputError(f"tlog-proof: bad index {digits!r}")
        hashes = tuple(unb64_hash(line, "tlog-proof hash") for line in lines[pos + 1 :])
        return cls(int(digits), hashes, checkpoint, extra)
