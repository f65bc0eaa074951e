"""Signed in-toto statements about an image: how every gate step states its result.

A scan, a baseline check, a test run, an approval and a signature are each an in-toto Statement
v1 whose subject is the image manifest, wrapped in a DSSE envelope, attached to the image as an
OCI referrer (annotated with its predicate type) and recorded as ``artifact.attached``.

Verification trusts only keys announced in the ledger (``key.created``) and not revoked since
(``key.revoked``): a verifier needs the ledger and the store, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutrail.crypto.canonical import canonical_json, parse_strict_json
from immutrail.crypto.dsse import sign_envelope
from immutrail.crypto.errors import CryptoError
from immutrail.crypto.keys import PrivateKey, PublicKey
from immutrail.ledger.ledger import Ledger

from .attach import attach_and_record
from .attestations import DSSE_MEDIA_TYPE, builder_key
from .oci import Descriptor
from .provenance import (
    IN_TOTO_PAYLOAD_TYPE,
    STATEMENT_V1,
    ProvenanceError,
    verify_attestation,
)
from .store import Store

PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
EVENT_KEY_CREATED = "key.created"
EVENT_KEY_REVOKED = "key.revoked"


@dataclass(frozen=True)
class LedgerKey:
    """A public key as the ledger announced it, and whether it was revoked since."""

    keyid: str
    public: PublicKey
    principal: str
    purpose: str
    created_index: int
    revoked_index: int | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_index is not None


def ledger_keys(ledger: Ledger) -> dict[str, LedgerKey]:
    """Every key the ledger announced and whose announcement counts, by key id, with its
    revocation (if any).

    The principal is the payload's ``principal`` when present (keys generated for a person), else
    the announcing actor (the builder key is announced by whoever first built). Once access
    control is set up, an announcement counts only when its actor was entitled to make it
    (:func:`immutrail.access.registry.counting_keys`): a key planted for someone else by
    whoever could append an event signs nothing that counts.
    """
    # Imported here: the access package builds on this module (its keys, its statements).
    from immutrail.access.registry import counting_keys

    return {
        keyid: LedgerKey(keyid, k.public, k.principal, k.purpose, k.created_index, k.revoked_index)
        for keyid, k in counting_keys(ledger).items()
    }


def make_statement(
    subject_digest: str, subject_name: str, predicate_type: str, predicate: Mapping[str, Any]
) -> dict[str, Any]:
    """An in-toto Statement v1 about one image manifest."""
    return {
        "_type": STATEMENT_V1,
        "subject": [
            {"name": subject_name, "digest": {"sha256": subject_digest.removeprefix("sha256:")}}
        ],
        "predicateType": predicate_type,
        "predicate": dict(predicate),
    }


def attest(
    store: Store,
    ledger: Ledger,
    home: Path,
    actor: str,
    subject_digest: str,
    predicate_type: str,
    predicate: Mapping[str, Any],
    *,
    key: PrivateKey | None = None,
    subject_name: str | None = None,
) -> Descriptor:
    """Sign a statement (with ``key``, else the home's builder key) and attach it to the image."""
    signer = key if key is not None else builder_key(home, ledger, actor)
    record = store.resolve(subject_digest)
    name = subject_name or (record.tags[0] if record.tags else record.digest)
    statement = make_statement(record.digest, name, predicate_type, predicate)
    envelope = sign_envelope(signer, IN_TOTO_PAYLOAD_TYPE, canonical_json(statement))
    return attach_and_record(
        store,
        ledger,
        actor,
        record.digest,
        IN_TOTO_PAYLOAD_TYPE,
        canonical_json(envelope),
        DSSE_MEDIA_TYPE,
        {PREDICATE_ANNOTATION: predicate_type},
    )


@dataclass(frozen=True)
class Attestation:
    """A statement attached to an image whose signature verified against a ledger key."""

    manifest: str
    predicate_type: str
    statement: Mapping[str, Any]
    signer: LedgerKey

    @property
    def predicate(self) -> Mapping[str, Any]:
        value = self.statement.get("predicate", {})
        return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class RejectedAttestation:
    """An attached statement that does not count, and why."""

    manifest: str
    predicate_type: str
    reason: str


def read_attestations(
    store: Store,
    subject_digest: str,
    keys: Mapping[str, LedgerKey],
    predicate_type: str | None = None,
) -> tuple[list[Attestation], list[RejectedAttestation]]:
    """The image's DSSE statements that verify, and those that do not with the reason.

    A statement counts only when it is signed by a ledger key that is not revoked and covers
    ``subject_digest``; everything else is returned as rejected so a gate can say why.
    """
    digest = store.resolve(subject_digest).digest
    trusted = {k.keyid: k.public for k in keys.values() if not k.revoked}
    revoked = {k.keyid for k in keys.values() if k.revoked}
    good: list[Attestation] = []
    bad: list[RejectedAttestation] = []
    for descriptor in store.referrers(digest, IN_TOTO_PAYLOAD_TYPE):
        kind = descriptor.annotations.get(PREDICATE_ANNOTATION, "")
        if predicate_type is not None and kind != predicate_type:
            continue
        manifest = store.get_manifest(descriptor.digest)
        layers = manifest.get("layers") or []
        if not layers or not isinstance(layers[0], Mapping):
            bad.append(RejectedAttestation(descriptor.digest, kind, "artifact has no layer"))
            continue
        blob = Descriptor.from_dict(layers[0], f"layer of {descriptor.digest}")
        try:
            envelope = parse_strict_json(store.read_blob(blob.digest))
        except CryptoError as exc:  # not JSON at all: it can vouch for nothing
            bad.append(RejectedAttestation(descriptor.digest, kind, f"not a DSSE envelope: {exc}"))
            continue
        signer = _signer_of(envelope, keys)
        if signer is None:
            bad.append(RejectedAttestation(descriptor.digest, kind, "signed by no ledger key"))
            continue
        if signer in revoked:
            bad.append(
                RejectedAttestation(descriptor.digest, kind, f"signed by revoked key {signer}")
            )
            continue
        try:
            statement = verify_attestation(envelope, trusted, expected_subject_digest=digest)
        except ProvenanceError as exc:
            bad.append(RejectedAttestation(descriptor.digest, kind, str(exc)))
            continue
        if statement.get("predicateType") != kind:
            bad.append(
                RejectedAttestation(
                    descriptor.digest, kind, "annotation and signed predicateType differ"
                )
            )
            continue
        good.append(Attestation(descriptor.digest, kind, statement, keys[signer]))
    return good, bad


def _signer_of(envelope: object, keys: Mapping[str, LedgerKey]) -> str | None:
    """The first signature keyid that names a ledger key (keyids are hints; DSSE checks)."""
    if not isinstance(envelope, Mapping):
        return None
    for signature in envelope.get("signatures") or []:
        if isinstance(signature, Mapping) and signature.get("keyid") in keys:
            return str(signature["keyid"])
    return None
