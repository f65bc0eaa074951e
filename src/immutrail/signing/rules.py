"""What a signed statement must also satisfy to count, beyond a valid signature.

A signature only proves which key signed; the ledger says whose key it is. So the principal a
statement names (``approver``, ``signer``) must be the key's principal in the ledger, a build key
never counts as a person, and the predicate must have the documented shape. Each rule returns the
reason it fails, or None, so callers report why a statement does not count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from immutrail.artifacts.statements import LedgerKey
from immutrail.keys.names import PURPOSE_BUILDER
from immutrail.ledger.errors import EventFormatError
from immutrail.ledger.event import parse_time


@dataclass(frozen=True)
class Rejected:
    """An attached statement that does not count, and why."""

    attestation: str
    """The referrer manifest digest of the statement."""
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"attestation": self.attestation, "reason": self.reason}


def shape_problem(
    predicate: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()
) -> str | None:
    """Why the predicate lacks a required string field or has a non-string optional one."""
    for name in required:
        value = predicate.get(name)
        if not isinstance(value, str) or not value:
            return f"the predicate has no {name}"
    for name in optional:
        if name in predicate and not isinstance(predicate[name], str):
            return f"the predicate's {name} is not a string"
    return None


def time_problem(value: str, name: str) -> str | None:
    try:
        parse_time(value, field=name)
    except EventFormatError:
        return f"the predicate's {name} {value!r} is not an RFC 3339 time"
    return None


def principal_problem(claimed: str, signer: LedgerKey, role: str) -> str | None:
    """The statement must name as ``role`` exactly the principal the ledger gave the key to."""
    if signer.purpose == PURPOSE_BUILDER:
        return f"signed by the build key {signer.keyid}, which cannot be the {role}"
    if claimed != signer.principal:
        return (
            f"names {claimed!r} as {role} but is signed by key {signer.keyid}, which the "
            f"ledger gave to {signer.principal!r}"
        )
    return None
