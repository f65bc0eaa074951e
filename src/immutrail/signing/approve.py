"""`immutrail approve DIGEST --env ENV`: a principal's approval of one image for one environment.

The approval is an in-toto Statement v1 about the image manifest (predicate type
:data:`APPROVAL_PREDICATE`, predicate ``{"environment", "approver", "comment"?, "approved_at",
"nonce"}``) signed with the approver's key, attached as a referrer and recorded as
``image.approved`` (an event the approver also signs). Because the digest is the statement's
subject and the environment is inside the signed predicate, an approval cannot be replayed for
another image or another environment; the random nonce makes every approval a distinct statement.

:func:`valid_approvals` is what the policy gate counts: approvals that verify against a
non-revoked ledger key, name exactly this digest and environment, and whose approver is the key's
principal, one per principal. Everything else comes back as :class:`Rejected` with the reason.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutrail import names
from immutrail.artifacts.statements import (
    Attestation,
    RejectedAttestation,
    attest,
    ledger_keys,
    read_attestations,
)
from immutrail.artifacts.store import Store
from immutrail.keys.keystore import SigningKey, check_current
from immutrail.ledger.event import Event, now, sign_event
from immutrail.ledger.ledger import Ledger

from .errors import ReplayError, SigningInputError
from .rules import Rejected, principal_problem, shape_problem, time_problem
from .sign import image_record

__all__ = [
    "APPROVAL_PREDICATE",
    "EVENT_APPROVED",
    "Approval",
    "Approved",
    "approval_problem",
    "approve_image",
    "check_environment",
    "count_approvals",
    "valid_approvals",
]

APPROVAL_PREDICATE = "https://immutrail.dev/attestation/approval/v1"
EVENT_APPROVED = "image.approved"
MAX_COMMENT = 1000

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Approval:
    """An approval that counts for ``environment``."""

    principal: str
    keyid: str
    environment: str
    approved_at: str
    attestation: str
    """The referrer manifest digest of the signed statement."""
    comment: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "principal": self.principal,
            "keyid": self.keyid,
            "environment": self.environment,
            "approved_at": self.approved_at,
            "attestation": self.attestation,
            "comment": self.comment,
        }


@dataclass(frozen=True)
class Approved:
    digest: str
    approval: Approval
    ledger_index: int


def check_environment(name: str) -> str:
    return names.check_environment(name, SigningInputError)


def _check_comment(comment: str | None) -> str | None:
    if comment is None:
        return None
    if len(comment) > MAX_COMMENT or _CONTROL_RE.search(comment):
        raise SigningInputError(
            f"a comment is at most {MAX_COMMENT} characters, without control characters"
        )
    return comment


def approval_problem(predicate: Any, attestation: Attestation) -> str | None:
    """Why a verified approval statement does not count for any environment, or None."""
    problem = shape_problem(
        predicate, ("environment", "approver", "approved_at", "nonce"), ("comment",)
    )
    if problem is None:
        problem = time_problem(predicate["approved_at"], "approved_at")
    if problem is None:
        problem = principal_problem(predicate["approver"], attestation.signer, "approver")
    return problem


def valid_approvals(
    store: Store, ledger: Ledger, digest: str, env: str
) -> tuple[list[Approval], list[Rejected]]:
    """Approvals of ``digest`` for ``env`` that count (one per principal), and the rest with why.

    Statements whose signature does not verify, by unknown or revoked keys, about another digest,
    for another environment, naming someone other than the key's principal, or repeating an
    approval by the same principal, are returned as rejected with the reason.
    """
    check_environment(env)
    good, bad = read_attestations(store, digest, ledger_keys(ledger), APPROVAL_PREDICATE)
    return count_approvals(good, bad, env)


def count_approvals(
    good: Sequence[Attestation], bad: Sequence[RejectedAttestation], env: str
) -> tuple[list[Approval], list[Rejected]]:
    """:func:`valid_approvals` over approval statements already read and verified."""
    rejected = [Rejected(item.manifest, item.reason) for item in bad]
    counted: list[Approval] = []
    for attestation in good:
        predicate = attestation.predicate
        problem = approval_problem(predicate, attestation)
        if problem is None and predicate["environment"] != env:
            problem = f"approves environment {predicate['environment']!r}, not {env!r}"
        if problem is None and any(a.principal == attestation.signer.principal for a in counted):
            problem = f"{attestation.signer.principal} already approved this image for {env}"
        if problem is not None:
            rejected.append(Rejected(attestation.manifest, problem))
            continue
        comment = predicate.get("comment")
        counted.append(
            Approval(
                attestation.signer.principal,
                attestation.signer.keyid,
                env,
                str(predicate["approved_at"]),
                attestation.manifest,
                comment if isinstance(comment, str) else None,
            )
        )
    return counted, rejected


def approve_image(
    store: Store,
    ledger: Ledger,
    home: Path,
    ref: str,
    env: str,
    key: SigningKey,
    *,
    comment: str | None = None,
) -> Approved:
    """Approve the image for ``env`` with ``key``; refused if its principal already did."""
    check_environment(env)
    comment = _check_comment(comment)
    digest = image_record(store, ref)
    check_current(ledger, key)
    rule = principal_problem(key.principal, key.key, "approver")
    if rule is not None:
        raise SigningInputError(f"key {key.keyid} cannot approve: {rule}")
    counted, _ = valid_approvals(store, ledger, digest, env)
    earlier = next((a for a in counted if a.principal == key.principal), None)
    if earlier is not None:
        raise ReplayError(
            f"{key.principal} already approved {digest} for {env} at {earlier.approved_at} "
            f"(attestation {earlier.attestation})",
            hint="An approval counts once per principal; ask another approver.",
        )
    predicate: dict[str, str] = {
        "environment": env,
        "approver": key.principal,
        "approved_at": now(),
        "nonce": secrets.token_hex(16),
    }
    if comment is not None:
        predicate["comment"] = comment
    descriptor = attest(
        store, ledger, home, key.principal, digest, APPROVAL_PREDICATE, predicate, key=key.private
    )
    payload: dict[str, str] = {
        "environment": env,
        "approver": key.principal,
        "keyid": key.keyid,
        "attestation": descriptor.digest,
    }
    event = Event.create(EVENT_APPROVED, key.principal, digest, payload)
    index = ledger.append(sign_event(event, key.private)).index
    approval = Approval(
        key.principal, key.keyid, env, predicate["approved_at"], descriptor.digest, comment
    )
    return Approved(digest, approval, index)
