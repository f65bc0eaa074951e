"""`immutrail sign DIGEST`: a principal's release signature over an image manifest digest.

The signature is an in-toto Statement v1 (predicate type :data:`SIGNATURE_PREDICATE`, predicate
``{"signer", "purpose": "release", "signed_at"}``) about the manifest, in a DSSE envelope signed
with the principal's key, attached to the image as a referrer (``artifact.attached``) and recorded
as ``image.signed``, an event the signer also signs, so ``ledger verify`` checks it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

__all__ = [
    "EVENT_SIGNED",
    "SIGNATURE_PREDICATE",
    "Signature",
    "Signed",
    "count_signatures",
    "image_record",
    "sign_image",
    "signature_problem",
    "valid_signatures",
]

SIGNATURE_PREDICATE = "https://immutrail.dev/attestation/signature/v1"
EVENT_SIGNED = "image.signed"
PURPOSE_RELEASE = "release"


@dataclass(frozen=True)
class Signature:
    """A release signature that counts: verified, about this digest, by the key's principal."""

    principal: str
    keyid: str
    signed_at: str
    attestation: str
    purpose: str

    def to_dict(self) -> dict[str, str]:
        return {
            "principal": self.principal,
            "keyid": self.keyid,
            "signed_at": self.signed_at,
            "attestation": self.attestation,
            "purpose": self.purpose,
        }


@dataclass(frozen=True)
class Signed:
    digest: str
    signature: Signature
    ledger_index: int


def image_record(store: Store, ref: str) -> str:
    """The manifest digest of an image (by digest or tag); attached artifacts are refused."""
    record = store.resolve(ref)
    if record.descriptor.artifact_type is not None:
        raise SigningInputError(
            f"{record.digest} is an attached {record.descriptor.artifact_type}, not an image"
        )
    return record.digest


def signature_problem(predicate: Any, attestation: Attestation) -> str | None:
    """Why a verified signature statement does not count, or None."""
    problem = shape_problem(predicate, ("signer", "purpose", "signed_at"))
    if problem is None:
        problem = time_problem(predicate["signed_at"], "signed_at")
    if problem is None:
        problem = principal_problem(predicate["signer"], attestation.signer, "signer")
    return problem


def valid_signatures(
    store: Store, ledger: Ledger, digest: str
) -> tuple[list[Signature], list[Rejected]]:
    """The image's release signatures that count (one per principal), and the others with why."""
    good, bad = read_attestations(store, digest, ledger_keys(ledger), SIGNATURE_PREDICATE)
    return count_signatures(good, bad)


def count_signatures(
    good: Sequence[Attestation], bad: Sequence[RejectedAttestation]
) -> tuple[list[Signature], list[Rejected]]:
    """:func:`valid_signatures` over signature statements already read and verified."""
    rejected = [Rejected(item.manifest, item.reason) for item in bad]
    counted: list[Signature] = []
    seen: set[str] = set()
    for attestation in good:
        predicate = attestation.predicate
        problem = signature_problem(predicate, attestation)
        if problem is None and attestation.signer.principal in seen:
            problem = f"{attestation.signer.principal} already signed this image; one counts"
        if problem is not None:
            rejected.append(Rejected(attestation.manifest, problem))
            continue
        seen.add(attestation.signer.principal)
        counted.append(
            Signature(
                attestation.signer.principal,
                attestation.signer.keyid,
                str(predicate["signed_at"]),
                attestation.manifest,
                str(predicate["purpose"]),
            )
        )
    return counted, rejected


def sign_image(store: Store, ledger: Ledger, home: Path, ref: str, key: SigningKey) -> Signed:
    """Sign the image's manifest digest with ``key``; attach the statement and record it."""
    digest = image_record(store, ref)
    check_current(ledger, key)
    counted, _ = valid_signatures(store, ledger, digest)
    earlier = next((s for s in counted if s.principal == key.principal), None)
    if earlier is not None:
        raise ReplayError(
            f"{key.principal} already signed {digest} (attestation {earlier.attestation})"
        )
    predicate = {"signer": key.principal, "purpose": PURPOSE_RELEASE, "signed_at": now()}
    descriptor = attest(
        store, ledger, home, key.principal, digest, SIGNATURE_PREDICATE, predicate, key=key.private
    )
    event = Event.create(
        EVENT_SIGNED,
        key.principal,
        digest,
        {
            "signer": key.principal,
            "keyid": key.keyid,
            "purpose": PURPOSE_RELEASE,
            "attestation": descriptor.digest,
        },
    )
    index = ledger.append(sign_event(event, key.private)).index
    signature = Signature(
        key.principal, key.keyid, predicate["signed_at"], descriptor.digest, PURPOSE_RELEASE
    )
    return Signed(digest, signature, index)
