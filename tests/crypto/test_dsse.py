"""DSSE v1: PAE, envelopes and detached signatures; spec vectors, a real VSA, securesystemslib."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from securesystemslib.dsse import Envelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from immutrail.crypto.dsse import (
    MAX_ENVELOPE_SIGNATURES,
    pae,
    sign_detached,
    sign_envelope,
    verify_detached,
    verify_envelope,
)
from immutrail.crypto.errors import EnvelopeError, KeyFileError, SignatureError
from immutrail.crypto.keys import (
    PrivateKey,
    PublicKey,
    generate_ecdsa_p256,
    generate_ed25519,
    key_id,
    load_public_key_pem,
)

IN_TOTO = "application/vnd.in-toto+json"
EVENT = "application/vnd.immutrail.event.v1+json"
GENERATORS: list[Callable[[], PrivateKey]] = [generate_ed25519, generate_ecdsa_p256]


def keys_of(key: PrivateKey) -> dict[str, PublicKey]:
    public = key.public_key()
    return {key_id(public): public}


# --- PAE --------------------------------------------------------------------------------------


def test_pae_spec_example() -> None:
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("t\u00e9", b"") == b"DSSEv1 3 t\xc3\xa9 0 "
    assert pae("x", "\u00e9".encode()) == b"DSSEv1 1 x 2 \xc3\xa9"
    assert pae("t\u00e9", b"body") == Envelope(b"body", "t\u00e9", {}).pae()


# --- spec vectors -----------------------------------------------------------------------------


def load_vectors(data_dir: Path) -> dict[str, Any]:
    vectors: dict[str, Any] = json.loads((data_dir / "dsse-vectors.json").read_text("utf-8"))
    return vectors


@pytest.fixture(scope="module")
def vectors(data_dir: Path) -> dict[str, Any]:
    return load_vectors(data_dir)


def vector_keys(vectors: dict[str, Any]) -> dict[str, Ed25519PrivateKey]:
    return {
        name: Ed25519PrivateKey.from_private_bytes(bytes.fromhex(spec["seed"]))
        for name, spec in vectors["keys"].items()
    }


VECTOR_IDS = [
    "single-signature",
    "url-safe-base64",
    "payload-type-swapped",
    "non-ascii-payload-type",
    "empty-payload",
    "empty-payload-type",
    "threshold-two-distinct-keys",
    "threshold-two-one-key-twice",
    "threshold-two-without-keyids",
]


@pytest.mark.parametrize("vector_id", VECTOR_IDS)
def test_dsse_vectors(vectors: dict[str, Any], vector_id: str) -> None:
    """Each vector, with the verifier accepting only the vector's first supported type."""
    (vector,) = [v for v in vectors["vectors"] if v["id"] == vector_id]
    keys = vector_keys(vectors)
    trusted = {name: keys[name].public_key() for name in vector["trustedKeys"]}
    envelope = vector["envelope"]
    kind = envelope["payloadType"]
    payload = base64.urlsafe_b64decode(envelope["payload"])
    supported = kind in vector["supportedPayloadTypes"]
    wanted = kind if supported else vector["supportedPayloadTypes"][0]
    if vector["expect"] == "accept":
        assert pae(kind, payload).hex() == vector["pae"]
        got = verify_envelope(envelope, trusted, payload_type=wanted, threshold=vector["threshold"])
        assert got == payload
    else:
        with pytest.raises(SignatureError if supported else EnvelopeError):
            verify_envelope(envelope, trusted, payload_type=wanted, threshold=vector["threshold"])


def test_our_ed25519_signatures_equal_the_vectors(vectors: dict[str, Any]) -> None:
    """Ed25519 is deterministic: our signer must give the vector's exact signature bytes."""
    (vector,) = [v for v in vectors["vectors"] if v["id"] == "single-signature"]
    key = vector_keys(vectors)["A"]
    payload = base64.b64decode(vector["envelope"]["payload"])
    detached = sign_detached(key, IN_TOTO, payload)
    assert detached["sig"] == vector["envelope"]["signatures"][0]["sig"]
    assert detached["keyid"] == key_id(key.public_key())
    assert sign_envelope(key, IN_TOTO, payload)["signatures"][0]["sig"] == detached["sig"]


def test_dsse_protocol_example_with_raw_p256_signature() -> None:
    """protocol.md's example: P-256, raw r||s signature, no keyid."""
    public = ec.EllipticCurvePublicNumbers(
        46950820868899156662930047687818585632848591499744589407958293238635476079160,
        5640078356564379163099075877009565129882514886557779369047442380624545832820,
        ec.SECP256R1(),
    ).public_key()
    envelope = {
        "payload": "aGVsbG8gd29ybGQ=",
        "payloadType": "http://example.com/HelloWorld",
        "signatures": [
            {
                "sig": "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGA"
                "HTVeCUjW2JIZA=="
            }
        ],
    }
    assert verify_envelope(envelope, {"spec": public}) == b"hello world"
    envelope["payload"] = "aGVsbG8gd29ybGQh"
    with pytest.raises(SignatureError):
        verify_envelope(envelope, {"spec": public})


# --- our envelopes ----------------------------------------------------------------------------


@pytest.mark.parametrize("generate", GENERATORS)
def test_envelope_round_trip(generate: Callable[[], PrivateKey]) -> None:
    key = generate()
    payload = b'{"_type":"https://in-toto.io/Statement/v1"}'
    envelope = sign_envelope(key, IN_TOTO, payload)
    assert set(envelope) == {"payload", "payloadType", "signatures"}
    assert envelope["payload"] == base64.b64encode(payload).decode()
    assert envelope["payloadType"] == IN_TOTO
    (signature,) = envelope["signatures"]
    assert signature["keyid"] == key_id(key.public_key())
    json.dumps(envelope)  # plain JSON
    assert verify_envelope(envelope, keys_of(key), payload_type=IN_TOTO) == payload


@pytest.mark.parametrize("generate", GENERATORS)
def test_securesystemslib_verifies_our_envelopes_and_we_verify_its(
    generate: Callable[[], PrivateKey],
) -> None:
    key = generate()
    public = key.public_key()
    sslib_key = SSlibKey.from_crypto(public, keyid=key_id(public))
    ours = sign_envelope(key, IN_TOTO, b"payload")
    Envelope.from_dict(copy.deepcopy(ours)).verify([sslib_key], 1)
    theirs = Envelope(b"other payload", IN_TOTO, {})
    theirs.sign(CryptoSigner(key, sslib_key))
    assert verify_envelope(theirs.to_dict(), keys_of(key)) == b"other payload"


@pytest.mark.parametrize("generate", GENERATORS)
@pytest.mark.parametrize("part", ["payload", "payloadType", "sig"])
def test_tampered_envelopes_do_not_verify(generate: Callable[[], PrivateKey], part: str) -> None:
    key = generate()
    envelope = sign_envelope(key, IN_TOTO, b"payload")
    if part == "payload":
        envelope["payload"] = base64.b64encode(b"payloaD").decode()
    elif part == "payloadType":
        envelope["payloadType"] = "application/vnd.other+json"
    else:
        sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
        sig[10] ^= 1
        envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(SignatureError, match="0 valid signature"):
        verify_envelope(envelope, keys_of(key))


def test_keyid_is_a_hint_never_trust() -> None:
    key, other = generate_ed25519(), generate_ed25519()
    envelope = sign_envelope(key, IN_TOTO, b"p")
    # The right keyid but another key behind it: refused.
    with pytest.raises(SignatureError):
        verify_envelope(envelope, {key_id(key.public_key()): other.public_key()})
    # An unknown keyid is not tried against other keys.
    with pytest.raises(SignatureError) as info:
        verify_envelope(envelope, {"someone-else": key.public_key()})
    assert key_id(key.public_key()) in info.value.diagnostics()
    # No keyid at all: every trusted key is tried.
    del envelope["signatures"][0]["keyid"]
    assert verify_envelope(envelope, {"a": other.public_key(), "b": key.public_key()}) == b"p"


def test_threshold_counts_distinct_keys() -> None:
    a, b = generate_ed25519(), generate_ecdsa_p256()
    env_a, env_b = sign_envelope(a, IN_TOTO, b"p"), sign_envelope(b, IN_TOTO, b"p")
    both = {**env_a, "signatures": env_a["signatures"] + env_b["signatures"]}
    trusted = {**keys_of(a), **keys_of(b)}
    assert verify_envelope(both, trusted, threshold=2) == b"p"
    twice = {**env_a, "signatures": env_a["signatures"] * 2}
    with pytest.raises(SignatureError, match="1 valid signature"):
        verify_envelope(twice, trusted, threshold=2)
    # One key under two names is still one key.
    aliased = {"x": a.public_key(), "y": a.public_key()}
    doubled = {
        **env_a,
        "signatures": [{"keyid": "x", "sig": s["sig"]} for s in twice["signatures"]],
    }
    doubled["signatures"][1]["keyid"] = "y"
    with pytest.raises(SignatureError):
        verify_envelope(doubled, aliased, threshold=2)
    with pytest.raises(ValueError, match="threshold"):
        verify_envelope(env_a, trusted, threshold=0)


def test_payload_type_is_checked_when_given() -> None:
    key = generate_ed25519()
    envelope = sign_envelope(key, IN_TOTO, b"p")
    with pytest.raises(EnvelopeError, match=r"expected 'application/vnd\.other"):
        verify_envelope(envelope, keys_of(key), payload_type="application/vnd.other+json")


def test_verify_envelope_does_not_modify_its_input() -> None:
    """securesystemslib's Envelope.from_dict empties the signature objects; we must not."""
    key = generate_ed25519()
    envelope = sign_envelope(key, IN_TOTO, b"p")
    before = copy.deepcopy(envelope)
    verify_envelope(envelope, keys_of(key))
    assert envelope == before
    sslib_copy = copy.deepcopy(envelope)
    Envelope.from_dict(sslib_copy)
    assert sslib_copy["signatures"] == [{}]  # the library behaviour we work around


def malformed_envelopes() -> dict[str, object]:
    good = {
        "payload": "cA==",
        "payloadType": IN_TOTO,
        "signatures": [{"keyid": "k", "sig": "AA=="}],
    }
    sig = good["signatures"][0]  # type: ignore[index]
    return {
        "not an object": ["payload"],
        "no payloadType": {k: v for k, v in good.items() if k != "payloadType"},
        "payloadType not a string": {**good, "payloadType": 5},
        "no payload": {k: v for k, v in good.items() if k != "payload"},
        "payload not base64": {**good, "payload": "not base64!"},
        "payload mixed alphabets": {**good, "payload": "+_=="},
        "payload bad padding": {**good, "payload": "cA="},
        "no signatures": {**good, "signatures": []},
        "signatures not a list": {**good, "signatures": sig},
        "signature not an object": {**good, "signatures": ["AA=="]},
        "sig missing": {**good, "signatures": [{"keyid": "k"}]},
        "sig not base64": {**good, "signatures": [{"keyid": "k", "sig": "@@"}]},
        "keyid not a string": {**good, "signatures": [{"keyid": 7, "sig": "AA=="}]},
        "too many signatures": {**good, "signatures": [sig] * (MAX_ENVELOPE_SIGNATURES + 1)},
    }


MALFORMED = malformed_envelopes()


@pytest.mark.parametrize("envelope", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_envelopes_are_envelope_errors(envelope: Any) -> None:
    with pytest.raises(EnvelopeError):
        verify_envelope(envelope, keys_of(generate_ed25519()))


def test_unsupported_trusted_keys_are_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(KeyFileError, match="P-256"):
        verify_envelope(sign_envelope(generate_ed25519(), IN_TOTO, b"p"), {"k": p384})  # type: ignore[dict-item]


# --- the real VSA envelope ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def vsa(data_dir: Path) -> tuple[dict[str, Any], PublicKey]:
    envelope = json.loads((data_dir / "gke-gce-pre.bcid-vsa.jsonl").read_text("utf-8"))
    key = load_public_key_pem((data_dir / "vsa_signing_public_key.pem").read_text("utf-8"))
    return envelope, key


def test_real_vsa_envelope_verifies_with_its_pem(vsa: tuple[dict[str, Any], PublicKey]) -> None:
    envelope, key = vsa
    (signature,) = envelope["signatures"]
    assert len(base64.b64decode(signature["sig"])) == 64  # IEEE P1363 r||s, not DER
    payload = verify_envelope(envelope, {signature["keyid"]: key}, payload_type=IN_TOTO)
    statement = json.loads(payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/verification_summary/v1"
    assert statement["predicate"]["verificationResult"] == "PASSED"


def test_real_vsa_signature_also_verifies_in_der_form(
    vsa: tuple[dict[str, Any], PublicKey],
) -> None:
    envelope, key = vsa
    raw = base64.b64decode(envelope["signatures"][0]["sig"])
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    as_der = {**envelope, "signatures": [{"sig": base64.b64encode(der).decode()}]}
    assert verify_envelope(as_der, {"vsa": key}).startswith(b'{"_type"')


def test_real_vsa_tampered_payload_fails(vsa: tuple[dict[str, Any], PublicKey]) -> None:
    envelope, key = vsa
    payload = base64.b64decode(envelope["payload"]).replace(b"PASSED", b"FAILED")
    tampered = {**envelope, "payload": base64.b64encode(payload).decode()}
    with pytest.raises(SignatureError):
        verify_envelope(tampered, {envelope["signatures"][0]["keyid"]: key})


# --- detached signatures ----------------------------------------------------------------------


@pytest.mark.parametrize("generate", GENERATORS)
def test_detached_round_trip(generate: Callable[[], PrivateKey]) -> None:
    key = generate()
    payload = b'{"actor":"ci","type":"build.completed"}'
    signature = sign_detached(key, EVENT, payload)
    assert set(signature) == {"keyid", "sig"}
    assert signature["keyid"] == key_id(key.public_key())
    base64.b64decode(signature["sig"], validate=True)
    verify_detached(signature, EVENT, payload, key.public_key())
    url_safe = {**signature, "sig": signature["sig"].replace("+", "-").replace("/", "_")}
    verify_detached(url_safe, EVENT, payload, key.public_key())


def test_ecdsa_detached_signatures_are_der() -> None:
    key = generate_ecdsa_p256()
    raw = base64.b64decode(sign_detached(key, EVENT, b"p")["sig"])
    r, s = decode_dss_signature(raw)
    assert encode_dss_signature(r, s) == raw


@pytest.mark.parametrize("generate", GENERATORS)
def test_detached_tampering_fails(generate: Callable[[], PrivateKey]) -> None:
    key = generate()
    public = key.public_key()
    signature = sign_detached(key, EVENT, b"payload")
    with pytest.raises(SignatureError, match="does not verify"):
        verify_detached(signature, EVENT, b"payloaD", public)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_detached(signature, "application/vnd.other+json", b"payload", public)
    other = generate().public_key()
    with pytest.raises(SignatureError, match="not by the expected key") as info:
        verify_detached(signature, EVENT, b"payload", other)
    assert "registered public key" in info.value.diagnostics()
    forged = {"keyid": key_id(other), "sig": signature["sig"]}
    with pytest.raises(SignatureError, match="does not verify"):
        verify_detached(forged, EVENT, b"payload", other)


@pytest.mark.parametrize(
    "signature",
    [
        "not a mapping",
        {"sig": "AA=="},
        {"keyid": 1, "sig": "AA=="},
        {"keyid": "k"},
        {"keyid": "k", "sig": "A"},
        {"keyid": "k", "sig": 5},
    ],
)
def test_malformed_detached_signatures(signature: Any) -> None:
    with pytest.raises(EnvelopeError):
        verify_detached(signature, EVENT, b"p", generate_ed25519().public_key())
