"""Real Sigstore bundles verified offline: production bundles with the right identity verify,
everything else says precisely why not (failed, needs the network, unsupported)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from immutrail.signing.sigstore_bundles import (
    BundleStatus,
    IdentityPolicy,
    TrustRootError,
    check_bundle,
    load_trust_root,
)

DATA = Path(__file__).parent.parent / "data" / "signing"
BCR = DATA / "production" / "bcr-MODULE.bazel.intoto.jsonl"
BCR_IDENTITY = IdentityPolicy(
    "https://github.com/bazel-contrib/publish-to-bcr/.github/workflows/publish.yaml@refs/tags/v0.0.1",
    "https://token.actions.githubusercontent.com",
)
GENERIC = (
    DATA / "production" / "gha_generic-v2.1.0-binary-linux-amd64-workflow_dispatch.intoto.jsonl"
)
GENERIC_IDENTITY = IdentityPolicy(
    "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/"
    "generator_generic_slsa3.yml@refs/tags/v2.1.0",
    "https://token.actions.githubusercontent.com",
)
STAGING_ROOT = DATA / "staging" / "trusted_root.staging.json"


def sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(("bundle", "identity"), [(BCR, BCR_IDENTITY), (GENERIC, GENERIC_IDENTITY)])
def test_production_bundles_verify_offline_with_the_right_identity(
    bundle: Path, identity: IdentityPolicy
) -> None:
    result = check_bundle(bundle.read_bytes(), load_trust_root(), identity)
    assert result.status is BundleStatus.VERIFIED, result.detail
    assert result.kind == "dsse" and result.identity == identity.identity
    assert result.issuer == identity.issuer and result.log_index is not None
    assert result.payload_type == "application/vnd.in-toto+json" and result.payload is not None
    expected = json.loads(bundle.read_text())["dsseEnvelope"]["payload"]
    assert result.payload == base64.b64decode(expected)


def test_without_an_identity_policy_it_is_never_verified() -> None:
    result = check_bundle(BCR.read_bytes(), load_trust_root(), None)
    assert result.status is BundleStatus.IDENTITY_NOT_CHECKED and result.signature_verified
    assert "NOT checked" in result.detail and BCR_IDENTITY.identity in result.detail
    assert "verified" not in result.status.value


@pytest.mark.parametrize(
    ("identity", "fragment"),
    [
        (IdentityPolicy("someone@example.org", BCR_IDENTITY.issuer), "SANs do not match"),
        (IdentityPolicy(BCR_IDENTITY.identity, "https://accounts.google.com"), "Issuer"),
    ],
)
def test_wrong_identity_or_issuer_fails(identity: IdentityPolicy, fragment: str) -> None:
    result = check_bundle(BCR.read_bytes(), load_trust_root(), identity)
    assert result.status is BundleStatus.FAILED and fragment in result.detail


def test_tampered_bundles_fail() -> None:
    bundle = json.loads(BCR.read_text())
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    payload = base64.b64encode(json.dumps(statement).encode()).decode()
    tampered = {**bundle, "dsseEnvelope": {**bundle["dsseEnvelope"], "payload": payload}}
    result = check_bundle(json.dumps(tampered).encode(), load_trust_root(), BCR_IDENTITY)
    assert result.status is BundleStatus.FAILED and "does not verify" in result.detail

    signature = bundle["dsseEnvelope"]["signatures"][0]
    raw = bytearray(base64.b64decode(signature["sig"]))
    raw[-1] ^= 1
    bad_sig = {**signature, "sig": base64.b64encode(bytes(raw)).decode()}
    tampered = {**bundle, "dsseEnvelope": {**bundle["dsseEnvelope"], "signatures": [bad_sig]}}
    result = check_bundle(json.dumps(tampered).encode(), load_trust_root(), BCR_IDENTITY)
    assert result.status is BundleStatus.FAILED


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("bundle_cve_2022_36056.txt", "transparency log entry is inconsistent"),
        ("bundle_invalid_version.txt", "not a valid Sigstore bundle"),
        ("bundle_no_log_entry.txt", "expected exactly one log entry"),
    ],
)
def test_sigstore_negative_bundles_fail(name: str, fragment: str) -> None:
    artifact = DATA / "negative" / name
    bundle = artifact.with_name(name + ".sigstore")
    result = check_bundle(
        bundle.read_bytes(), load_trust_root(STAGING_ROOT), None, artifact_digest=sha(artifact)
    )
    assert result.status is BundleStatus.FAILED and fragment in result.detail


@pytest.mark.parametrize("name", ["bundle.txt", "tsa-bundle.txt"])
def test_staging_message_signatures_verify_against_their_artifact(name: str) -> None:
    artifact = DATA / "staging" / name
    data = artifact.with_name(name + ".sigstore").read_bytes()
    trust = load_trust_root(STAGING_ROOT)
    result = check_bundle(data, trust, None, artifact_digest=sha(artifact))
    assert result.status is BundleStatus.IDENTITY_NOT_CHECKED, result.detail
    assert result.kind == "message"
    identity = IdentityPolicy(str(result.identity), str(result.issuer))
    verified = check_bundle(data, trust, identity, artifact_digest=sha(artifact))
    assert verified.status is BundleStatus.VERIFIED, verified.detail
    wrong = check_bundle(data, trust, identity, artifact_digest="sha256:" + "1" * 64)
    assert wrong.status is BundleStatus.FAILED
    assert check_bundle(data, trust, identity).status is BundleStatus.FAILED


def test_what_needs_the_network_is_named() -> None:
    # A v0.1 bundle with a promise but no inclusion proof: the proof must be fetched from Rekor.
    python = (DATA / "production" / "Python-3.12.5.tgz.sigstore").read_bytes()
    result = check_bundle(python, load_trust_root(), None, artifact_digest="sha256:" + "0" * 64)
    assert result.status is BundleStatus.NEEDS_NETWORK
    assert "no inclusion proof" in result.detail and "118981923" in result.detail
    assert "https://rekor.sigstore.dev" in result.detail
    # A bundle from a log newer than the trusted root: a newer root is needed.
    newer = (DATA / "staging" / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes()
    result = check_bundle(newer, load_trust_root(STAGING_ROOT), None)
    assert result.status is BundleStatus.NEEDS_NETWORK and "--trusted-root" in result.detail
    # A production bundle checked against the staging root: its log is unknown there.
    result = check_bundle(BCR.read_bytes(), load_trust_root(STAGING_ROOT), BCR_IDENTITY)
    assert result.status is BundleStatus.NEEDS_NETWORK and "does not know" in result.detail


def test_unsupported_log_entry_kind_is_not_a_failure() -> None:
    delegator = (
        DATA / "production" / "gha_delegator-v2.1.0-binary-linux-amd64-workflow_dispatch.build.slsa"
    )
    result = check_bundle(delegator.read_bytes(), load_trust_root(), None)
    assert result.status is BundleStatus.UNSUPPORTED and "intoto/0.0.2" in result.detail


@pytest.mark.parametrize("data", [b"not json", b"[]", b'{"mediaType": 1}', b"{}"])
def test_garbage_fails(data: bytes) -> None:
    assert check_bundle(data, load_trust_root(), None).status is BundleStatus.FAILED


def test_trust_roots(tmp_path: Path) -> None:
    shipped = load_trust_root()
    assert "shipped" in shipped.source and len(shipped.tlogs) >= 2
    older = load_trust_root(DATA / "production" / "trustedroot.v1.json")
    assert check_bundle(BCR.read_bytes(), older, BCR_IDENTITY).status is BundleStatus.VERIFIED
    with pytest.raises(TrustRootError, match="cannot read"):
        load_trust_root(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"mediaType": "nope"}')
    with pytest.raises(TrustRootError, match="not a Sigstore trusted root"):
        load_trust_root(bad)
