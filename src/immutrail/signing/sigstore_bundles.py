"""Sigstore bundles, verified offline with sigstore-python against a trusted root we ship.

The trusted root (``data/trusted_root.json``) is Sigstore's public-good production root: the
Fulcio CAs, the Rekor logs (v1 and the 2025 v2 shard), the CT logs and the timestamp authority.
It is passed to sigstore-python explicitly, so verification never refreshes it over the network
and never depends on the aging copy inside the sigstore wheel; ``--trusted-root`` takes a newer
one (from Sigstore's TUF repository) when a bundle was signed with keys ours does not know.

A check ends in one of five states, and only one of them is "verified":

* ``verified``: certificate chain, SCT, transparency log entry (inclusion proof and checkpoint),
  signature and the identity policy (``--certificate-identity`` and ``--certificate-oidc-issuer``)
  all check out;
* ``identity-not-checked``: everything but the identity checks out; the identity is reported so a
  person can see who signed, but anyone with an OIDC account can make such a bundle;
* ``needs-network``: what is missing can only be fetched: an inclusion proof the bundle lacks (old
  v0.1 bundles carry only a promise), or log/CT keys newer than our trusted root;
* ``unsupported``: a valid-looking bundle sigstore-python cannot verify (an ``intoto`` log entry);
* ``failed``: malformed, forged, tampered, wrong identity, or inconsistent with its log entry.

This module imports nothing else of immutrail's, so the artifacts importer can use it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat import asn1
from sigstore.errors import Error as SigstoreError
from sigstore.hashes import Hashed
from sigstore.models import Bundle, TrustedRoot
from sigstore.verify import Verifier
from sigstore.verify.policy import Identity
from sigstore_models.common.v1 import HashAlgorithm

from immutrail.files import read_capped

__all__ = [
    "BUNDLE_MEDIA_TYPE_PREFIX",
    "BundleCheck",
    "BundleStatus",
    "IdentityPolicy",
    "TrustRoot",
    "TrustRootError",
    "check_bundle",
    "load_trust_root",
]

log = logging.getLogger(__name__)

BUNDLE_MEDIA_TYPE_PREFIX = "application/vnd.dev.sigstore.bundle"
SHIPPED_ROOT = "trusted_root.json"
MAX_TRUST_ROOT_BYTES = 4 * 1024 * 1024
"""Sigstore's public-good trusted_root.json is about 10 KiB."""
TUF_REPOSITORY = "https://tuf-repo-cdn.sigstore.dev"

_OIDC_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
_OIDC_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
_OTHERNAME_SAN = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.7")
# The log entry kinds sigstore-python 4 can check a bundle against (Verifier.verify_dsse and
# verify_artifact); anything else is refused by it with a message that hides the reason.
_DSSE_ENTRIES = frozenset({("dsse", "0.0.1"), ("hashedrekord", "0.0.2")})
_MESSAGE_ENTRIES = frozenset({("hashedrekord", "0.0.1"), ("hashedrekord", "0.0.2")})


class TrustRootError(ValueError):
    """A trusted root file that cannot be read or is not a Sigstore trusted root."""

    def diagnostics(self) -> str:
        return str(self)


class BundleStatus(StrEnum):
    VERIFIED = "verified"
    IDENTITY_NOT_CHECKED = "identity-not-checked"
    NEEDS_NETWORK = "needs-network"
    UNSUPPORTED = "unsupported"
    FAILED = "failed"


@dataclass(frozen=True)
class IdentityPolicy:
    """Who must have signed: the certificate's SAN and the OIDC issuer that vouched for it."""

    identity: str
    issuer: str

    def describe(self) -> str:
        return f"{self.identity} (issuer {self.issuer})"


@dataclass(frozen=True)
class TrustRoot:
    root: TrustedRoot
    source: str
    tlogs: Mapping[bytes, str]
    """Transparency log key ids -> the log's base URL."""
    ctlogs: frozenset[bytes]


@dataclass(frozen=True)
class BundleCheck:
    status: BundleStatus
    detail: str
    kind: str | None = None
    """``dsse`` (an envelope, usually an in-toto statement) or ``message`` (a signed digest)."""
    identity: str | None = None
    issuer: str | None = None
    log_index: int | None = None
    payload_type: str | None = None
    payload: bytes | None = None
    """The DSSE payload, once its signature verified (``verified``/``identity-not-checked``)."""

    @property
    def signature_verified(self) -> bool:
        return self.status in (BundleStatus.VERIFIED, BundleStatus.IDENTITY_NOT_CHECKED)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status.value,
            "detail": self.detail,
            "kind": self.kind,
            "identity": self.identity,
            "issuer": self.issuer,
            "log_index": self.log_index,
        }


def load_trust_root(path: Path | None = None) -> TrustRoot:
    """The trusted root in ``path``, or the one shipped with immutrail."""
    if path is None:
        return _shipped_root()
    return _parse_root(path, str(path))


@cache
def _shipped_root() -> TrustRoot:
    with resources.as_file(resources.files(__package__).joinpath("data", SHIPPED_ROOT)) as path:
        return _parse_root(path, f"immutrail's shipped {SHIPPED_ROOT}")


def _parse_root(path: Path, source: str) -> TrustRoot:
    try:
        document = json.loads(read_capped(path, MAX_TRUST_ROOT_BYTES))
        root = TrustedRoot.from_file(str(path))  # reads it again; the size was checked above
        tlogs = {
            base64.b64decode(item["logId"]["keyId"]): str(item.get("baseUrl", ""))
            for item in document.get("tlogs", [])
        }
        ctlogs = frozenset(
            base64.b64decode(item["logId"]["keyId"]) for item in document.get("ctlogs", [])
        )
    except OSError as exc:
        raise TrustRootError(f"cannot read the trusted root {source}: {exc.strerror}") from exc
    except RecursionError as exc:  # Python's json recurses once per nesting level
        raise TrustRootError(f"{source} is not a Sigstore trusted root: nested too deeply") from exc
    except (SigstoreError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise TrustRootError(f"{source} is not a Sigstore trusted root: {exc}") from exc
    return TrustRoot(root, source, tlogs, ctlogs)


class _IdentityNotChecked:
    """A policy that accepts any certificate: the caller reports the identity as unchecked.

    sigstore's own ``UnsafeNoOp`` does the same but logs a warning to whoever runs us; here the
    state is reported as data (``identity-not-checked``) and never as verified.
    """

    def verify(self, cert: x509.Certificate) -> None:
        del cert


def check_bundle(
    data: bytes,
    trust: TrustRoot,
    policy: IdentityPolicy | None,
    *,
    artifact_digest: str | None = None,
) -> BundleCheck:
    """Verify one Sigstore bundle offline; never raises for a bad bundle, reports it instead.

    A DSSE bundle verifies its envelope (the payload is returned); a message-signature bundle
    verifies against ``artifact_digest`` (``sha256:<hex>``), the digest it must have signed.
    """
    document = _json_object(data)
    if document is None:
        return BundleCheck(BundleStatus.FAILED, "not a JSON object, so not a Sigstore bundle")
    entry = _single_entry(document)
    log_index = _int(entry.get("logIndex")) if entry is not None else None
    try:
        bundle = Bundle.from_json(data)
    except SigstoreError as exc:
        # sigstore-python 4 refuses a log entry without an inclusion proof as malformed; older
        # clients fetched the proof from Rekor, so such a bundle is incomplete, not forged.
        lacking = _proof_missing(entry, trust, log_index) if entry is not None else None
        if lacking is not None and _media_type_known(document):
            return BundleCheck(BundleStatus.NEEDS_NETWORK, lacking, log_index=log_index)
        return BundleCheck(BundleStatus.FAILED, f"not a valid Sigstore bundle: {_short(exc)}")
    unknown_log = _unknown_log(entry, trust) if entry is not None else None
    if unknown_log is not None:
        return BundleCheck(BundleStatus.NEEDS_NETWORK, unknown_log, log_index=log_index)
    certificate = bundle.signing_certificate
    identity, issuer = _identity(certificate), _issuer(certificate)
    kind = "dsse" if "dsseEnvelope" in document else "message"

    def result(status: BundleStatus, detail: str, **extra: Any) -> BundleCheck:
        return BundleCheck(status, detail, kind, identity, issuer, log_index, **extra)

    if not _sct_log_known(certificate, trust):
        return result(
            BundleStatus.NEEDS_NETWORK,
            f"its certificate was logged in a CT log that {trust.source} does not know: a "
            f"newer trusted root from {TUF_REPOSITORY} is needed (pass it with --trusted-root)",
        )
    entry_kind = _entry_kind(entry)
    supported = _DSSE_ENTRIES if kind == "dsse" else _MESSAGE_ENTRIES
    if entry_kind not in supported:
        return result(
            BundleStatus.UNSUPPORTED,
            f"its transparency log entry is {'/'.join(entry_kind)}, which sigstore-python "
            f"cannot verify (it checks {', '.join(sorted('/'.join(k) for k in supported))})",
        )
    verifier = Verifier(trusted_root=trust.root)
    checked_policy = (
        Identity(identity=policy.identity, issuer=policy.issuer)
        if policy is not None
        else _IdentityNotChecked()
    )
    payload_type = payload = None
    try:
        if kind == "dsse":
            payload_type, payload = verifier.verify_dsse(bundle, checked_policy)
        elif artifact_digest is None:
            return result(
                BundleStatus.FAILED, "a message-signature bundle needs the digest it signed"
            )
        else:
            hashed = Hashed(
                algorithm=HashAlgorithm.SHA2_256,
                digest=bytes.fromhex(artifact_digest.removeprefix("sha256:")),
            )
            verifier.verify_artifact(hashed, bundle, checked_policy)
    # sigstore-python raises more than its own errors on hostile input (ValueError from
    # pydantic and the ASN.1 parsers, KeyError, TypeError): any of them means "does not verify",
    # and one attached bundle must not stop the report on the rest of the image.
    except Exception as exc:
        return result(BundleStatus.FAILED, f"does not verify: {_short(exc)}")
    signer = f"signed by {identity or '(no identity)'} (issuer {issuer or 'unknown'})"
    where = f", Rekor log index {log_index}" if log_index is not None else ""
    if policy is None:
        return result(
            BundleStatus.IDENTITY_NOT_CHECKED,
            f"certificate chain, transparency log entry and signature verify offline{where}; "
            f"{signer}; the identity was NOT checked (give --certificate-identity and "
            "--certificate-oidc-issuer)",
            payload_type=payload_type,
            payload=payload,
        )
    return result(
        BundleStatus.VERIFIED,
        f"{signer}, as required{where}; certificate chain, transparency log entry and "
        "signature verify offline",
        payload_type=payload_type,
        payload=payload,
    )


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply for Python's json
        return None
    return value if isinstance(value, dict) else None


def _single_entry(document: Mapping[str, Any]) -> dict[str, Any] | None:
    material = document.get("verificationMaterial")
    entries = material.get("tlogEntries") if isinstance(material, dict) else None
    if isinstance(entries, list) and len(entries) == 1 and isinstance(entries[0], dict):
        return entries[0]
    return None  # Bundle.from_json says precisely what is wrong


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def _media_type_known(document: Mapping[str, Any]) -> bool:
    media_type = document.get("mediaType")
    return isinstance(media_type, str) and media_type in {t.value for t in Bundle.BundleType}


def _log_key(entry: Mapping[str, Any]) -> bytes | None:
    log_id = entry.get("logId")
    key = log_id.get("keyId") if isinstance(log_id, dict) else None
    try:
        return base64.b64decode(str(key), validate=True) if key is not None else None
    except (binascii.Error, ValueError):
        return None


def _unknown_log(entry: Mapping[str, Any], trust: TrustRoot) -> str | None:
    keyid = _log_key(entry)
    if keyid is None or keyid in trust.tlogs:
        return None  # a missing key id is sigstore-python's to report, as a failure
    return (
        f"it was logged in transparency log {keyid.hex()[:16]}…, which {trust.source} does "
        f"not know: a newer trusted root from {TUF_REPOSITORY} is needed (pass it with "
        "--trusted-root)"
    )


def _proof_missing(entry: Mapping[str, Any], trust: TrustRoot, log_index: int | None) -> str | None:
    proof = entry.get("inclusionProof")
    if isinstance(proof, dict) and proof.get("checkpoint"):
        return None
    url = trust.tlogs.get(_log_key(entry) or b"") or "its Rekor log"
    return (
        "it carries no inclusion proof of its log entry (only a promise), and sigstore-python "
        f"needs one: fetch entry {log_index if log_index is not None else '?'} from {url} "
        "(`sigstore verify` online, or get the bundle again with its proof)"
    )


def _entry_kind(entry: Mapping[str, Any] | None) -> tuple[str, str]:
    kind = entry.get("kindVersion") if entry is not None else None
    if not isinstance(kind, dict):
        return ("?", "?")
    return (str(kind.get("kind", "?")), str(kind.get("version", "?")))


def _sct_log_known(certificate: x509.Certificate, trust: TrustRoot) -> bool:
    try:
        scts = certificate.extensions.get_extension_for_class(
            x509.PrecertificateSignedCertificateTimestamps
        ).value
    except x509.ExtensionNotFound:
        return True  # sigstore-python reports the missing SCT itself, as a failure
    return any(sct.log_id in trust.ctlogs for sct in scts)


def _identity(certificate: x509.Certificate) -> str | None:
    """The certificate's identities: e-mail, URI and Sigstore other-name SANs."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    found = [
        *names.get_values_for_type(x509.RFC822Name),
        *names.get_values_for_type(x509.UniformResourceIdentifier),
        *(
            other.value.decode("utf-8", "replace")
            for other in names.get_values_for_type(x509.OtherName)
            if other.type_id == _OTHERNAME_SAN
        ),
    ]
    return ", ".join(found) or None


def _issuer(certificate: x509.Certificate) -> str | None:
    """The OIDC issuer Fulcio recorded: the DER UTF8String v2 extension, else the raw v1 one."""
    for oid, der in ((_OIDC_ISSUER_V2, True), (_OIDC_ISSUER_V1, False)):
        try:
            value = certificate.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        raw = value.value if isinstance(value, x509.UnrecognizedExtension) else b""
        try:
            return str(asn1.decode_der(str, raw)) if der else raw.decode("utf-8")
        except ValueError:
            continue
    return None


def _short(exc: BaseException) -> str:
    """The first line of an error: pydantic's multi-line messages are noise to a person."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
