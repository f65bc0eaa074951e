"""Attestations given beside an imported image: read, matched to the image, verified if we can.

Three forms are read, told apart by their fields:

* a Sigstore bundle (``mediaType`` ``application/vnd.dev.sigstore.bundle…``) holding a DSSE
  envelope, verified offline with sigstore-python against immutrail's shipped trusted root
  (:mod:`immutrail.signing.sigstore_bundles`): certificate chain, SCT, Rekor entry and signature.
  A bundle that fails is refused like a bad DSSE signature. With an identity policy it is
  recorded as verified; without one (``artifact import`` takes none yet) as **unverified
  identity**, naming who signed, and ``immutrail verify --certificate-identity …`` checks it
  later. A bundle that needs the network (no inclusion proof, or logs newer than our trusted
  root) or that sigstore-python cannot verify is attached as unverified, with the reason;
* a DSSE envelope (``payloadType`` + ``payload``) carrying an in-toto statement. With ``--key``
  it must be signed by one of the keys, otherwise the import is refused; without, it is recorded
  as unverified;
* a bare in-toto statement (``_type``): unsigned, recorded as such.

The statement (v1 or v0.1) must name the imported image among its subjects: the image manifest,
the index it was given as, or one of that index's manifests (the real slsa-github-generator
provenance names the index). SLSA provenance (v1, v0.2) is also summarised with
``provenance.read_provenance`` (builder, source); other predicates are attached as they are.
Each attestation is stored byte for byte, as the single layer of an OCI 1.1 artifact manifest
whose ``subject`` is the digest it names.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from immutrail.crypto.canonical import parse_strict_json
from immutrail.crypto.errors import CanonicalizationError, CryptoError, DuplicateKeyError
from immutrail.crypto.keys import MAX_KEY_FILE_BYTES, PublicKey, key_id, load_public_key_pem
from immutrail.files import read_capped

from . import oci
from .digests import sha256_digest
from .errors import ArtifactInputError
from .import_errors import (
    AttestationError,
    AttestationSignatureError,
    AttestationSubjectError,
    ImportLimits,
)
from .oci import Descriptor
from .provenance import (
    IN_TOTO_PAYLOAD_TYPE,
    SLSA_PROVENANCE_V02,
    SLSA_PROVENANCE_V1,
    ProvenanceError,
    read_provenance,
    validate_statement,
    verify_attestation,
)

if TYPE_CHECKING:  # sigstore is slow to import: loaded only when a bundle is given
    from immutrail.signing.sigstore_bundles import IdentityPolicy

__all__ = [
    "DSSE_MEDIA_TYPE",
    "Attestation",
    "ParsedAttestation",
    "load_keys",
    "match_attestation",
    "parse_attestation",
    "referrer_manifest",
]

DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
SIGSTORE_BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"

KIND_DSSE = "dsse"
KIND_STATEMENT = "statement"
KIND_BUNDLE = "sigstore-bundle"


@dataclass(frozen=True)
class ParsedAttestation:
    """An attestation file, read but not yet matched to an image."""

    source: str
    kind: str
    data: bytes
    media_type: str
    """The stored layer's media type: the DSSE, in-toto or Sigstore bundle type."""
    artifact_type: str
    predicate_type: str
    subjects: tuple[str, ...]
    """The SHA-256 subject digests, as ``sha256:<hex>``."""
    envelope: Mapping[str, Any] | None
    builder: str | None
    source_commit: str | None

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)


@dataclass(frozen=True)
class Attestation:
    """An attestation matched to the image, with what we could verify about it."""

    parsed: ParsedAttestation
    subject: Descriptor
    verified: bool
    verification: str
    """Why it is (not) verified, for people: ``signed by key …``, ``unverified: …``."""
    key: str | None
    manifest: bytes
    """The referrer manifest to store."""

    @property
    def manifest_digest(self) -> str:
        return sha256_digest(self.manifest)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "file": Path(self.parsed.source).name,
            "kind": self.parsed.kind,
            "blob": self.parsed.digest,
            "manifest": self.manifest_digest,
            "subject": self.subject.digest,
            "predicate_type": self.parsed.predicate_type,
            "verified": self.verified,
            "verification": self.verification,
        }
        if self.key is not None:
            out["key"] = self.key
        if self.parsed.builder is not None:
            out["builder"] = self.parsed.builder
        if self.parsed.source_commit is not None:
            out["source_commit"] = self.parsed.source_commit
        return out


def load_keys(paths: Sequence[Path]) -> dict[str, PublicKey]:
    """Public keys (PEM) to verify DSSE envelopes with, by key id."""
    keys: dict[str, PublicKey] = {}
    for path in paths:
        try:
            key = load_public_key_pem(read_capped(path, MAX_KEY_FILE_BYTES))
        except OSError as exc:
            raise AttestationError(str(path), f"cannot read the key: {exc.strerror}") from exc
        except CryptoError as exc:
            raise AttestationError(str(path), f"not a usable public key: {exc}") from exc
        keys[key_id(key)] = key
    return keys


def _json(data: bytes, source: str, where: str) -> dict[str, Any]:
    try:
        value = parse_strict_json(data)
    except DuplicateKeyError as exc:
        raise AttestationError(source, f"{where}: duplicate JSON key {exc.key!r}") from exc
    except CanonicalizationError as exc:
        raise AttestationError(source, f"{where}: {exc}") from exc
    if not isinstance(value, dict):
        raise AttestationError(source, f"{where} is not a JSON object")
    return value


def _payload_statement(envelope: Mapping[str, Any], source: str) -> dict[str, Any]:
    if envelope.get("payloadType") != IN_TOTO_PAYLOAD_TYPE:
        raise AttestationError(
            source,
            f"the envelope's payloadType is {envelope.get('payloadType')!r}, not an in-toto "
            f"statement ({IN_TOTO_PAYLOAD_TYPE})",
        )
    payload = envelope.get("payload")
    if not isinstance(payload, str):
        raise AttestationError(source, "the envelope has no payload")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise AttestationError(source, "the envelope's payload is not base64") from exc
    return _json(raw, source, "the payload")


def parse_attestation(path: Path, limits: ImportLimits) -> ParsedAttestation:
    """Read one attestation file; AttestationError naming the file when it is not one."""
    source = str(path)
    try:
        with path.open("rb") as stream:
            data = stream.read(limits.max_attestation_bytes + 1)
    except OSError as exc:
        raise AttestationError(source, f"cannot read: {exc.strerror or exc}") from exc
    if len(data) > limits.max_attestation_bytes:
        raise AttestationError(source, f"larger than the {limits.max_attestation_bytes}-byte limit")
    document = _json(data.strip(), source, "the file")
    envelope: Mapping[str, Any] | None = None
    media_type = document.get("mediaType")
    if isinstance(media_type, str) and media_type.startswith(SIGSTORE_BUNDLE_PREFIX):
        kind, artifact_type = KIND_BUNDLE, media_type
        inner = document.get("dsseEnvelope")
        if not isinstance(inner, dict):
            raise AttestationError(
                source,
                "this Sigstore bundle signs a file (messageSignature), not an in-toto "
                "statement: it is not an attestation",
            )
        statement = _payload_statement(inner, source)
        envelope = inner
    elif "payloadType" in document or "payload" in document:
        kind, media_type, artifact_type = KIND_DSSE, DSSE_MEDIA_TYPE, IN_TOTO_PAYLOAD_TYPE
        statement = _payload_statement(document, source)
        envelope = document
    elif "_type" in document:
        kind, media_type, artifact_type = KIND_STATEMENT, IN_TOTO_PAYLOAD_TYPE, IN_TOTO_PAYLOAD_TYPE
        statement = document
    else:
        raise AttestationError(
            source,
            "neither a DSSE envelope, an in-toto statement nor a Sigstore bundle "
            "(no payloadType, _type or mediaType)",
        )
    try:
        validate_statement(statement)
    except ProvenanceError as exc:
        raise AttestationError(source, f"not a valid in-toto statement: {exc}") from exc
    subjects = tuple(
        f"sha256:{item['digest']['sha256']}"
        for item in statement["subject"]
        if isinstance(item["digest"].get("sha256"), str)
    )
    predicate_type = str(statement["predicateType"])
    builder = commit = None
    if predicate_type in (SLSA_PROVENANCE_V1, SLSA_PROVENANCE_V02):
        try:
            summary = read_provenance(statement)
        except (ProvenanceError, ArtifactInputError) as exc:
            raise AttestationError(source, f"not valid SLSA provenance: {exc}") from exc
        builder, commit = summary.builder_id, summary.source_commit
    return ParsedAttestation(
        source,
        kind,
        data,
        str(media_type),
        artifact_type,
        predicate_type,
        subjects,
        envelope,
        builder,
        commit,
    )


def referrer_manifest(parsed: ParsedAttestation, subject: Descriptor) -> bytes:
    """The OCI 1.1 artifact manifest that attaches ``parsed`` to ``subject`` (deterministic)."""
    layer = Descriptor(parsed.media_type, parsed.digest, len(parsed.data))
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "artifactType": parsed.artifact_type,
        "config": oci.empty_config().to_dict(),
        "layers": [layer.to_dict()],
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest,
            "size": subject.size,
        },
        "annotations": {PREDICATE_ANNOTATION: parsed.predicate_type},
    }
    return oci.encode(manifest)


def match_attestation(
    parsed: ParsedAttestation,
    image: Descriptor,
    manifests: Sequence[Descriptor],
    keys: Mapping[str, PublicKey],
    *,
    sigstore_identity: IdentityPolicy | None = None,
) -> Attestation:
    """Match ``parsed`` to the image (or one of its manifests) and verify what we can.

    ``sigstore_identity`` is who must have signed Sigstore bundles; without it a bundle that
    verifies is recorded as verified except for its identity, which is named but unchecked.
    """
    candidates = {image.digest: image}
    for descriptor in manifests:
        candidates.setdefault(descriptor.digest, descriptor)
    named = next((d for d in parsed.subjects if d == image.digest), None) or next(
        (d for d in parsed.subjects if d in candidates), None
    )
    if named is None:
        raise AttestationSubjectError(
            parsed.source,
            "its subjects ("
            + (", ".join(parsed.subjects) or "no sha256 digests")
            + f") do not include the imported image {image.digest}"
            + (
                f" or its manifests ({', '.join(d for d in candidates if d != image.digest)})"
                if len(candidates) > 1
                else ""
            ),
        )
    subject = candidates[named]
    verified, key = False, None
    if parsed.kind == KIND_BUNDLE:
        verified, how = _check_sigstore_bundle(parsed, sigstore_identity)
    elif parsed.kind == KIND_STATEMENT:
        how = "unverified: a bare in-toto statement carries no signature"
    elif not keys:
        how = "unverified: no --key given"
    else:
        assert parsed.envelope is not None
        try:
            verify_attestation(parsed.envelope, keys, expected_subject_digest=named)
        except (ProvenanceError, ArtifactInputError) as exc:
            raise AttestationSignatureError(
                parsed.source, f"the DSSE signature does not verify with the given keys: {exc}"
            ) from exc
        key = _signing_key(parsed.envelope, keys)
        verified, how = True, f"verified: signed by key {key}"
    return Attestation(parsed, subject, verified, how, key, referrer_manifest(parsed, subject))


def _check_sigstore_bundle(
    parsed: ParsedAttestation, identity: IdentityPolicy | None
) -> tuple[bool, str]:
    """(verified, why) for a Sigstore bundle; AttestationSignatureError when it fails."""
    from immutrail.signing.sigstore_bundles import BundleStatus, check_bundle, load_trust_root

    result = check_bundle(parsed.data, load_trust_root(), identity)
    if result.status is BundleStatus.FAILED:
        raise AttestationSignatureError(
            parsed.source, f"the Sigstore bundle does not verify: {result.detail}"
        )
    if result.status is BundleStatus.VERIFIED:
        return True, f"verified: Sigstore bundle {result.detail}"
    if result.status is BundleStatus.IDENTITY_NOT_CHECKED:
        return False, (
            f"unverified identity: {result.detail}; check who signed with `immutrail verify "
            "DIGEST --certificate-identity ID --certificate-oidc-issuer URL`"
        )
    if result.status is BundleStatus.NEEDS_NETWORK:
        return False, f"unverified: needs the network: {result.detail}"
    return False, f"unverified: {result.detail}"


def _signing_key(envelope: Mapping[str, Any], keys: Mapping[str, PublicKey]) -> str:
    """The id of a given key that signed (the envelope verified, so at least one did)."""
    for name, key in keys.items():
        try:
            verify_attestation(envelope, {name: key})
        except (ProvenanceError, ArtifactInputError):
            continue
        return name
    return next(iter(keys))  # pragma: no cover - the envelope verified with these keys
