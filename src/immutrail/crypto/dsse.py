"""DSSE v1 signatures (github.com/secure-systems-lab/dsse): envelopes and detached signatures.

Every signature covers ``PAE(payloadType, payload)``, so a signature over one payload type can
never be replayed as another. Ledger events carry the detached form ``{"keyid", "sig"}``;
attestations travel as standard JSON envelopes. ``keyid`` is ``keys.key_id`` of the public key.

Signing goes through securesystemslib's ``CryptoSigner`` (Ed25519; ECDSA P-256 with SHA-256,
ASN.1 DER signatures). Verification uses ``cryptography`` directly, because securesystemslib's
``Envelope`` does not fit an untrusted input: ``Envelope.from_dict`` empties the signature objects
of the dict it is given, raises bare ``KeyError``/``ValueError`` on bad shapes, and
``SSlibKey`` only accepts DER ECDSA signatures, while real envelopes (Google's VSAs, KMS
signers) carry the fixed-size IEEE P1363 ``r || s`` form; we accept both for P-256.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from securesystemslib.dsse import Envelope

# securesystemslib.signer re-exports these without __all__, which mypy --strict flags; the names
# are its documented public API and keep their real types under this ignore.
from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]

from .errors import EnvelopeError, SignatureError
from .keys import PrivateKey, PublicKey, check_private_key, check_public_key, key_id, spki_der

__all__ = [
    "MAX_ENVELOPE_SIGNATURES",
    "pae",
    "sign_detached",
    "sign_envelope",
    "verify_detached",
    "verify_envelope",
]

MAX_ENVELOPE_SIGNATURES = 100
"""Most signatures an envelope may carry; bounds the work an untrusted envelope can cause."""

_STD_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URL_B64 = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_P256_RAW_SIG = 64


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is actually signed.

    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`` with byte lengths in decimal.
    """
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def _signer(key: PrivateKey) -> CryptoSigner:
    private = check_private_key(key)
    public = private.public_key()
    return CryptoSigner(private, SSlibKey.from_crypto(public, keyid=key_id(public)))


def sign_envelope(key: PrivateKey, payload_type: str, payload: bytes) -> dict[str, Any]:
    """A standard DSSE JSON envelope: ``payload`` (base64), ``payloadType``, one signature."""
    envelope = Envelope(payload, payload_type, {})
    envelope.sign(_signer(key))
    return envelope.to_dict()


def sign_detached(key: PrivateKey, payload_type: str, payload: bytes) -> dict[str, str]:
    """A detached DSSE signature ``{"keyid": <key_id>, "sig": <base64>}``, as events carry."""
    signature = _signer(key).sign(pae(payload_type, payload))
    return {"keyid": signature.keyid, "sig": _b64(bytes.fromhex(signature.signature))}


def verify_detached(
    signature: Mapping[str, Any], payload_type: str, payload: bytes, public_key: PublicKey
) -> None:
    """Check a detached signature by ``public_key``; SignatureError unless it verifies.

    EnvelopeError when ``signature`` is not ``{"keyid": str, "sig": base64}``. A ``keyid`` that
    names another key is refused before any cryptography, with a message that says so.
    """
    public = check_public_key(public_key)
    if not isinstance(signature, Mapping):
        raise EnvelopeError("a detached signature must be an object with keyid and sig")
    keyid = signature.get("keyid")
    if not isinstance(keyid, str):
        raise EnvelopeError("a detached signature needs a string keyid")
    sig = _b64decode(signature.get("sig"), "sig")
    expected = key_id(public)
    if keyid != expected:
        raise SignatureError(
            f"signed by key {keyid}, not by the expected key {expected}",
            hint="Check that the actor's registered public key is the one it signs with.",
        )
    if not _verify(public, sig, pae(payload_type, payload)):
        raise SignatureError(
            f"signature by key {keyid} does not verify",
            hint="The payload was altered after signing, or signed as another payload type.",
        )


def verify_envelope(
    envelope: Mapping[str, Any],
    public_keys: Mapping[str, PublicKey],
    *,
    payload_type: str | None = None,
    threshold: int = 1,
) -> bytes:
    """Verify a DSSE JSON envelope and return its payload.

    ``public_keys`` maps keyids to trusted keys. A signature whose ``keyid`` is in the mapping
    is checked against that key only; one without a ``keyid`` is tried against every key;
    one with an unknown ``keyid`` is ignored (the keyid is a hint, never trust). The envelope
    verifies when at least ``threshold`` distinct trusted keys signed it. With ``payload_type``
    given, an envelope of another type is refused (EnvelopeError) before any signature check.
    SignatureError when too few trusted keys signed; EnvelopeError when it is malformed.
    """
    if threshold < 1:
        raise ValueError("threshold must be at least 1")
    trusted = {name: check_public_key(key) for name, key in public_keys.items()}
    kind, payload, signatures = _parse_envelope(envelope)
    if payload_type is not None and kind != payload_type:
        raise EnvelopeError(f"envelope payload type is {kind!r}, expected {payload_type!r}")
    message = pae(kind, payload)
    accepted: set[bytes] = set()
    for keyid, sig in signatures:
        if keyid:
            candidates = [trusted[keyid]] if keyid in trusted else []
        else:
            candidates = list(trusted.values())
        for public in candidates:
            identity = spki_der(public)
            if identity not in accepted and _verify(public, sig, message):
                accepted.add(identity)
                break
        if len(accepted) >= threshold:
            return payload
    found = ", ".join(keyid or "(no keyid)" for keyid, _ in signatures)
    raise SignatureError(
        f"envelope has {len(accepted)} valid signature(s) from trusted keys, {threshold} needed",
        hint=f"Signature keyids: {found}. Trusted keyids: {', '.join(trusted) or 'none'}.",
    )


def _parse_envelope(envelope: object) -> tuple[str, bytes, list[tuple[str, bytes]]]:
    if not isinstance(envelope, Mapping):
        raise EnvelopeError("a DSSE envelope must be a JSON object")
    kind = envelope.get("payloadType")
    if not isinstance(kind, str):
        raise EnvelopeError("envelope payloadType must be a string")
    payload = _b64decode(envelope.get("payload"), "payload")
    entries = envelope.get("signatures")
    if not isinstance(entries, list) or not entries:
        raise EnvelopeError("envelope signatures must be a non-empty list")
    if len(entries) > MAX_ENVELOPE_SIGNATURES:
        raise EnvelopeError(f"envelope has more than {MAX_ENVELOPE_SIGNATURES} signatures")
    signatures = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise EnvelopeError(f"envelope signature {index} must be an object")
        keyid = entry.get("keyid", "")
        if not isinstance(keyid, str):
            raise EnvelopeError(f"envelope signature {index}: keyid must be a string")
        signatures.append((keyid, _b64decode(entry.get("sig"), f"signature {index} sig")))
    return kind, payload, signatures


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64decode(value: object, what: str) -> bytes:
    """Standard or URL-safe base64 with padding, as DSSE verifiers must accept either."""
    if isinstance(value, str):
        if _STD_B64.fullmatch(value):
            text = value
        elif _URL_B64.fullmatch(value):
            text = value.replace("-", "+").replace("_", "/")
        else:
            text = None
        if text is not None:
            try:
                return base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                pass
    raise EnvelopeError(f"{what} is not base64")


def _verify(public_key: PublicKey, sig: bytes, message: bytes) -> bool:
    """Whether ``sig`` is ``public_key``'s signature of ``message``; never raises on bad input."""
    try:
        if isinstance(public_key, Ed25519PublicKey):
            public_key.verify(sig, message)
            return True
        try:
            public_key.verify(sig, message, ec.ECDSA(hashes.SHA256()))
            return True
        except (InvalidSignature, ValueError):
            if len(sig) != _P256_RAW_SIG:
                raise
        r = int.from_bytes(sig[:32], "big")
        s = int.from_bytes(sig[32:], "big")
        public_key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError):
        return False
