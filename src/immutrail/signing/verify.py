"""`immutrail verify DIGEST`: check an image and everything attached to it, offline.

One :class:`Check` per thing, each ending in a :class:`Status` with the reason:

* ``blobs``: the manifest, config and every layer hash to their digests (each manifest of an
  index too);
* ``ledger``: the ledger records how the image came to be (built, imported or pulled);
* ``sbom``: a CycloneDX SBOM is attached, intact, and recorded in the ledger (it is unsigned, so
  the ledger's record of its digest is what vouches for it); ``missing`` when there is none;
* every DSSE statement (provenance, scan, baseline, test, approval, signature…): signed by a key
  the ledger announces and has not revoked (or a ``--key`` given), about this image, its
  annotation matching its signed predicate type; approvals and signatures must also name the
  key's principal;
* every Sigstore bundle: verified offline by :mod:`.sigstore_bundles`, and its statement about
  this image.

Only ``verified`` and ``ignored`` (an artifact type verify does not know) leave the report ok.
Verification reads and never writes: an auditor can run it on a copy with nothing at stake.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from immutrail.artifacts import oci
from immutrail.artifacts.attestations import DSSE_MEDIA_TYPE, SBOM_TYPE, SLSA_PROVENANCE_V1
from immutrail.artifacts.errors import ArtifactError
from immutrail.artifacts.provenance import (
    IN_TOTO_PAYLOAD_TYPE,
    SLSA_PROVENANCE_V02,
    ProvenanceError,
    ProvenanceSignatureError,
    validate_statement,
    verify_attestation,
)
from immutrail.artifacts.statements import (
    PREDICATE_ANNOTATION,
    Attestation,
    LedgerKey,
    ledger_keys,
)
from immutrail.artifacts.store import Store
from immutrail.crypto.canonical import parse_strict_json
from immutrail.crypto.errors import CryptoError
from immutrail.crypto.keys import PublicKey
from immutrail.ledger.event import parse_entry
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter

from .approve import APPROVAL_PREDICATE, approval_problem
from .errors import SigningInputError
from .sign import SIGNATURE_PREDICATE, signature_problem

if TYPE_CHECKING:  # sigstore (slow to import) is imported only when a bundle is met
    from .sigstore_bundles import IdentityPolicy, TrustRoot

__all__ = ["Check", "Status", "VerifyOptions", "VerifyReport", "verify_image"]

MAX_ATTESTATION_BYTES = 16 * 1024 * 1024
SIGSTORE_PREFIX = "application/vnd.dev.sigstore.bundle"
RECORDING_EVENTS = ("artifact.built", "artifact.imported", "artifact.pulled")
EVENT_ATTACHED = "artifact.attached"

Observer = Callable[[int, int], None]
"""Called with (checks done, checks in all) as verification goes."""


class Status(StrEnum):
    VERIFIED = "verified"
    FAILED = "failed"
    NEEDS_NETWORK = "needs-network"
    IDENTITY_NOT_CHECKED = "identity-not-checked"
    UNVERIFIED = "unverified"
    MISSING = "missing"
    IGNORED = "ignored"


PASSING = frozenset({Status.VERIFIED, Status.IGNORED})


@dataclass(frozen=True)
class Check:
    kind: str
    """blobs, ledger, sbom, provenance, approval, signature, test, attestation, sigstore-bundle,
    or artifact (a referrer verify does not know)."""
    subject: str
    """What was checked: an image manifest digest, or the referrer manifest digest."""
    status: Status
    detail: str
    predicate_type: str | None = None
    signer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "status": self.status.value,
            "detail": self.detail,
            "predicate_type": self.predicate_type,
            "signer": self.signer,
        }


@dataclass(frozen=True)
class VerifyReport:
    digest: str
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(check.status in PASSING for check in self.checks)

    def counts(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for check in self.checks:
            counted[check.status.value] = counted.get(check.status.value, 0) + 1
        return counted


@dataclass(frozen=True)
class VerifyOptions:
    identity: IdentityPolicy | None = None
    """Who must have signed Sigstore bundles; without it their identity is reported unchecked."""
    trusted_root: Path | None = None
    """A Sigstore trusted root to use instead of the shipped one."""
    keys: Mapping[str, PublicKey] = field(default_factory=dict)
    """Outside public keys (by key id) that DSSE statements may also be signed by."""


def verify_image(
    store: Store,
    ledger: Ledger,
    ref: str,
    options: VerifyOptions | None = None,
    observer: Observer | None = None,
) -> VerifyReport:
    """Check the image ``ref`` (digest or tag) and everything attached to it."""
    options = options or VerifyOptions()
    record = store.resolve(ref)
    if record.descriptor.artifact_type is not None:
        raise SigningInputError(
            f"{record.digest} is an attached {record.descriptor.artifact_type}, not an image",
            hint="Verify the image it is attached to.",
        )
    context = _Context(store, ledger, options)
    if options.trusted_root is not None:
        context.trust()  # a bad --trusted-root is a usage error even when no bundle needs it
    images = _image_manifests(store, record.digest, record.descriptor.media_type)
    subjects = [record.digest, *(d for d in images if d != record.digest)]
    referrers = [(subject, store.referrers(subject)) for subject in subjects]
    total = len(images) + 1 + sum(len(found) for _, found in referrers)
    checks: list[Check] = []

    def done(check: Check) -> None:
        checks.append(check)
        if observer is not None:
            observer(len(checks), total)

    for digest in images:
        done(_blobs_check(store, digest))
    done(_ledger_check(ledger, record.digest))
    recorded = _recorded_artifacts(ledger, subjects)
    for subject, found in referrers:
        for descriptor in found:
            done(_referrer_check(context, subject, descriptor, recorded))
    if not any(check.kind == "sbom" for check in checks):
        checks.append(Check("sbom", record.digest, Status.MISSING, "no CycloneDX SBOM is attached"))
    return VerifyReport(record.digest, tuple(checks))


class _Context:
    """What every referrer check needs, read once: ledger keys, and the trust root if any."""

    def __init__(self, store: Store, ledger: Ledger, options: VerifyOptions):
        self.store = store
        self.options = options
        self.keys: dict[str, LedgerKey] = ledger_keys(ledger)
        self._trust: TrustRoot | None = None

    def trust(self) -> TrustRoot:
        if self._trust is None:
            from .sigstore_bundles import TrustRootError, load_trust_root

            try:
                self._trust = load_trust_root(self.options.trusted_root)
            except TrustRootError as exc:
                raise SigningInputError(str(exc)) from exc
        return self._trust


def _image_manifests(store: Store, digest: str, media_type: str) -> list[str]:
    """The image manifests to hash: the image itself, or the manifests of an index."""
    if media_type != oci.INDEX:
        return [digest]
    index = store.get_manifest(digest)
    found = []
    for item in index.get("manifests") or []:
        if isinstance(item, dict) and item.get("mediaType") in oci.IMAGE_MANIFESTS:
            child = item.get("digest")
            if isinstance(child, str) and store.has_blob(child):
                found.append(child)
    return found


def _blobs_check(store: Store, digest: str) -> Check:
    try:
        blobs = store.verify(digest)
    except ArtifactError as exc:
        return Check("blobs", digest, Status.FAILED, exc.diagnostics())
    size = sum(blob.size for blob in blobs)
    return Check(
        "blobs",
        digest,
        Status.VERIFIED,
        f"manifest, config and {len(blobs) - 1} layer(s) match their digests ({size} bytes)",
    )


def _ledger_check(ledger: Ledger, digest: str) -> Check:
    for row in ledger.entries(EntryFilter(subject=digest)):
        if row.type in RECORDING_EVENTS:
            return Check(
                "ledger",
                digest,
                Status.VERIFIED,
                f"recorded as {row.type} by {row.actor} at ledger entry {row.index}",
            )
    return Check(
        "ledger",
        digest,
        Status.FAILED,
        "the ledger does not record this image being built, imported or pulled",
    )


def _recorded_artifacts(ledger: Ledger, subjects: Iterable[str]) -> dict[str, int]:
    """Referrer manifest digests the ledger records, with the entry that records each."""
    recorded: dict[str, int] = {}
    for subject in subjects:
        for row in ledger.entries(EntryFilter(subject=subject)):
            payload = parse_entry(row.data).payload
            named: list[object] = []
            if row.type == EVENT_ATTACHED:
                named.append(payload.get("artifact"))
            elif row.type == "artifact.imported":
                for key in ("attachments", "attestations"):
                    items = payload.get(key) or []
                    named.extend(i.get("manifest") for i in items if isinstance(i, dict))
            elif row.type == "artifact.pulled":
                named.extend(payload.get("referrers") or [])
            for digest in named:
                if isinstance(digest, str):
                    recorded.setdefault(digest, row.index)
    return recorded


def _referrer_check(
    context: _Context, subject: str, descriptor: oci.Descriptor, recorded: Mapping[str, int]
) -> Check:
    annotated = descriptor.annotations.get(PREDICATE_ANNOTATION)
    try:
        manifest = context.store.get_manifest(descriptor.digest)
        layers = manifest.get("layers") or []
        if not layers or not isinstance(layers[0], dict):
            return Check("artifact", descriptor.digest, Status.FAILED, "the artifact has no layer")
        layer = oci.Descriptor.from_dict(layers[0], f"layer of {descriptor.digest}")
        if layer.media_type not in (SBOM_TYPE, DSSE_MEDIA_TYPE) and not (
            layer.media_type.startswith(SIGSTORE_PREFIX)
        ):
            return Check(
                "artifact",
                descriptor.digest,
                Status.IGNORED,
                f"a {descriptor.artifact_type or layer.media_type} artifact: verify does not "
                "check this type",
                annotated,
            )
        data = context.store.read_blob(layer.digest, MAX_ATTESTATION_BYTES)
    except ArtifactError as exc:
        kind = "sbom" if descriptor.artifact_type == SBOM_TYPE else "artifact"
        return Check(kind, descriptor.digest, Status.FAILED, exc.diagnostics(), annotated)
    if layer.media_type == SBOM_TYPE:
        return _sbom_check(descriptor.digest, data, recorded)
    if layer.media_type == DSSE_MEDIA_TYPE:
        return _dsse_check(context, subject, descriptor.digest, data, annotated)
    return _bundle_check(context, subject, descriptor.digest, data, annotated)


def _sbom_check(digest: str, data: bytes, recorded: Mapping[str, int]) -> Check:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):  # json recurses once per level: 2 KB of "[" is enough
        document = None
    if not isinstance(document, dict) or document.get("bomFormat") != "CycloneDX":
        return Check("sbom", digest, Status.FAILED, "not a CycloneDX JSON document")
    components = document.get("components")
    count = len(components) if isinstance(components, list) else 0
    what = f"CycloneDX {document.get('specVersion', '?')} SBOM, {count} component(s), intact"
    if digest not in recorded:
        return Check(
            "sbom",
            digest,
            Status.UNVERIFIED,
            f"{what}, but no ledger event records it, and it is unsigned",
        )
    return Check("sbom", digest, Status.VERIFIED, f"{what}; recorded at entry {recorded[digest]}")


def _kind_of(predicate_type: str | None) -> str:
    if predicate_type in (SLSA_PROVENANCE_V1, SLSA_PROVENANCE_V02):
        return "provenance"
    if predicate_type == APPROVAL_PREDICATE:
        return "approval"
    if predicate_type == SIGNATURE_PREDICATE:
        return "signature"
    if predicate_type is not None and "/test-result/" in predicate_type:
        return "test"
    return "attestation"


def _dsse_check(
    context: _Context, subject: str, digest: str, data: bytes, annotated: str | None
) -> Check:
    kind = _kind_of(annotated)

    def check(status: Status, detail: str, signer: str | None = None) -> Check:
        return Check(kind, digest, status, detail, annotated, signer)

    try:
        envelope = parse_strict_json(data)
    except CryptoError as exc:
        return check(Status.FAILED, f"not a JSON DSSE envelope: {exc}")
    keyids = _keyids(envelope)
    trusted: dict[str, PublicKey] = {
        keyid: key.public for keyid, key in context.keys.items() if not key.revoked
    }
    trusted.update(context.options.keys)
    try:
        statement = verify_attestation(envelope, trusted, expected_subject_digest=subject)
    except ProvenanceSignatureError as exc:
        revoked = [context.keys[k] for k in keyids if k in context.keys and context.keys[k].revoked]
        if revoked:
            key = revoked[0]
            return check(
                Status.FAILED,
                f"signed by key {key.keyid[:16]}… of {key.principal}, revoked at ledger entry "
                f"{key.revoked_index}",
                key.principal,
            )
        if not any(k in trusted for k in keyids):
            named = ", ".join(k[:16] + "…" for k in keyids) or "none named"
            return check(
                Status.UNVERIFIED,
                f"signed by no key the ledger announces (key ids: {named}); give the signer's "
                "public key with --key to check it",
            )
        return check(Status.FAILED, f"the signature does not verify: {exc}")
    except ProvenanceError as exc:
        return check(Status.FAILED, str(exc))
    signed_type = statement.get("predicateType")
    if annotated is not None and signed_type != annotated:
        return check(
            Status.FAILED,
            f"annotated as {annotated} but the signed statement is {signed_type}",
        )
    signer_id = _signer(envelope, keyids, trusted)
    ledger_key = context.keys.get(signer_id or "")
    who = (
        f"key {signer_id[:16]}… of {ledger_key.principal} ({ledger_key.purpose or 'no purpose'})"
        if ledger_key is not None and signer_id is not None
        else f"the given key {(signer_id or '?')[:16]}…"
    )
    principal = ledger_key.principal if ledger_key is not None else None
    if signed_type in (APPROVAL_PREDICATE, SIGNATURE_PREDICATE):
        if ledger_key is None:
            return check(Status.FAILED, f"signed by {who}: only ledger keys can approve or sign")
        attestation = Attestation(digest, str(signed_type), statement, ledger_key)
        rule = approval_problem if signed_type == APPROVAL_PREDICATE else signature_problem
        problem = rule(attestation.predicate, attestation)
        if problem is not None:
            return check(Status.FAILED, problem, principal)
        if signed_type == APPROVAL_PREDICATE:
            env = attestation.predicate["environment"]
            return check(Status.VERIFIED, f"approval for {env}, signed by {who}", principal)
    return check(Status.VERIFIED, f"{signed_type}, signed by {who}", principal)


def _keyids(envelope: object) -> list[str]:
    if not isinstance(envelope, dict):
        return []
    found = []
    for signature in envelope.get("signatures") or []:
        if isinstance(signature, dict) and isinstance(signature.get("keyid"), str):
            found.append(signature["keyid"])
    return found


def _signer(envelope: object, keyids: list[str], trusted: Mapping[str, PublicKey]) -> str | None:
    """Which trusted key signed (the envelope verified, so one did); keyids are only hints."""
    for keyid in [k for k in keyids if k in trusted] + list(trusted):
        try:
            verify_attestation(envelope, {keyid: trusted[keyid]})
        except ProvenanceError:
            continue
        return keyid
    return None


def _bundle_check(
    context: _Context, subject: str, digest: str, data: bytes, annotated: str | None
) -> Check:
    from .sigstore_bundles import BundleStatus, check_bundle

    result = check_bundle(data, context.trust(), context.options.identity, artifact_digest=subject)
    status = {
        BundleStatus.VERIFIED: Status.VERIFIED,
        BundleStatus.IDENTITY_NOT_CHECKED: Status.IDENTITY_NOT_CHECKED,
        BundleStatus.NEEDS_NETWORK: Status.NEEDS_NETWORK,
        BundleStatus.UNSUPPORTED: Status.UNVERIFIED,
        BundleStatus.FAILED: Status.FAILED,
    }[result.status]
    detail = result.detail
    if result.signature_verified and result.kind == "dsse":
        problem = _statement_problem(result.payload_type, result.payload, subject, annotated)
        if problem is not None:
            status, detail = Status.FAILED, f"{problem} ({detail})"
    return Check("sigstore-bundle", digest, status, detail, annotated, result.identity)


def _statement_problem(
    payload_type: str | None, payload: bytes | None, subject: str, annotated: str | None
) -> str | None:
    """Why a bundle's verified DSSE payload is not an in-toto statement about ``subject``."""
    if payload_type != IN_TOTO_PAYLOAD_TYPE or payload is None:
        return f"its payload is {payload_type!r}, not an in-toto statement"
    try:
        statement = validate_statement(parse_strict_json(payload))
    except (CryptoError, ProvenanceError) as exc:
        return f"its payload is not a valid in-toto statement: {exc}"
    named = [
        f"sha256:{item['digest']['sha256']}"
        for item in statement["subject"]
        if isinstance(item.get("digest", {}).get("sha256"), str)
    ]
    if subject not in named:
        return f"its statement is about {', '.join(named) or 'no sha256 digest'}, not {subject}"
    if annotated is not None and statement.get("predicateType") != annotated:
        return f"annotated as {annotated} but the signed statement is {statement['predicateType']}"
    return None
