"""`verify_image`: an image's blobs, ledger record, SBOM, signed statements and Sigstore bundles,
each with its verdict and reason; and Sigstore bundles given to `artifact import`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from immutrail.artifacts.attestations import BUILDER_KEY_FILE, DSSE_MEDIA_TYPE
from immutrail.artifacts.export import export_image
from immutrail.artifacts.import_errors import AttestationSignatureError
from immutrail.artifacts.importer import import_image
from immutrail.artifacts.provenance import IN_TOTO_PAYLOAD_TYPE
from immutrail.artifacts.statements import PREDICATE_ANNOTATION, ledger_keys
from immutrail.artifacts.store import Store
from immutrail.crypto.canonical import canonical_json
from immutrail.crypto.dsse import sign_envelope
from immutrail.crypto.keys import generate_ed25519, key_id, load_private_key
from immutrail.keys.keystore import revoke_key
from immutrail.ledger.event import parse_entry
from immutrail.ledger.home import init_ledger, open_ledger
from immutrail.ledger.storage.interface import EntryFilter
from immutrail.signing.approve import APPROVAL_PREDICATE, approve_image
from immutrail.signing.errors import SigningInputError
from immutrail.signing.sign import sign_image
from immutrail.signing.sigstore_bundles import IdentityPolicy
from immutrail.signing.verify import Status, VerifyOptions, VerifyReport, verify_image

from .helpers import statement_of, with_statement, world

DATA = Path(__file__).parent.parent / "data" / "signing" / "production"
BCR = DATA / "bcr-MODULE.bazel.intoto.jsonl"
DELEGATOR = DATA / "gha_delegator-v2.1.0-binary-linux-amd64-workflow_dispatch.build.slsa"
BCR_IDENTITY = IdentityPolicy(
    "https://github.com/bazel-contrib/publish-to-bcr/.github/workflows/publish.yaml@refs/tags/v0.0.1",
    "https://token.actions.githubusercontent.com",
)
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def by_kind(report: VerifyReport) -> dict[str, list[tuple[Status, str]]]:
    found: dict[str, list[tuple[Status, str]]] = {}
    for check in report.checks:
        found.setdefault(check.kind, []).append((check.status, check.detail))
    return found


def statuses(report: VerifyReport, kind: str) -> list[Status]:
    return [status for status, _ in by_kind(report).get(kind, [])]


def test_signed_and_approved_image_verifies_and_tampering_is_named(home: Path, repo: Path) -> None:
    with world(home, repo) as w:
        digest = w.build("app:1")
        sign_image(w.store, w.ledger, home, digest, w.key("alice"))
        approve_image(w.store, w.ledger, home, digest, "prod", w.key("bob"))
        seen: list[tuple[int, int]] = []
        report = verify_image(w.store, w.ledger, "app:1", observer=lambda d, t: seen.append((d, t)))
        assert report.ok, report.checks
        assert report.digest == digest and report.counts() == {"verified": 6}
        assert sorted(by_kind(report)) == [
            "approval",
            "blobs",
            "ledger",
            "provenance",
            "sbom",
            "signature",
        ]
        assert seen[-1] == (6, 6)
        approval = by_kind(report)["approval"][0][1]
        assert "approval for prod" in approval and "of bob" in approval
        assert "recorded as artifact.built" in by_kind(report)["ledger"][0][1]

        # Bytes changed on disk: the layer no longer matches its digest.
        layer = w.store.get_manifest(digest)["layers"][0]["digest"]
        path = w.store.blob_path(layer)
        path.chmod(0o644)
        path.write_bytes(path.read_bytes() + b"x")
        report = verify_image(w.store, w.ledger, digest)
        assert not report.ok and statuses(report, "blobs") == [Status.FAILED]
        assert layer in by_kind(report)["blobs"][0][1]


def test_forged_copied_and_revoked_statements_fail(home: Path, repo: Path) -> None:
    with world(home, repo) as w:
        first = w.build("app:1")
        second = w.build("app:2", change="v2")
        approved = approve_image(w.store, w.ledger, home, first, "prod", w.key("bob"))
        envelope = w.envelope_of(approved.approval.attestation)
        statement = statement_of(envelope)
        statement["predicate"]["environment"] = "staging"
        for target, data in ((first, with_statement(envelope, statement)), (second, envelope)):
            w.store.attach(
                target,
                IN_TOTO_PAYLOAD_TYPE,
                canonical_json(data),
                DSSE_MEDIA_TYPE,
                {PREDICATE_ANNOTATION: APPROVAL_PREDICATE},
            )
        report = verify_image(w.store, w.ledger, first)
        assert sorted(statuses(report, "approval")) == [Status.FAILED, Status.VERIFIED]
        assert any("does not verify" in d for s, d in by_kind(report)["approval"])
        copied = verify_image(w.store, w.ledger, second)
        ((status, detail),) = by_kind(copied)["approval"]
        assert status is Status.FAILED and f"covers {first} but not {second}" in detail

        builder = next(k for k in ledger_keys(w.ledger).values() if k.purpose == "builder")
        revoke_key(home, w.ledger, builder.keyid, reason="rotated", actor="user:sec")
        report = verify_image(w.store, w.ledger, first)
        ((status, detail),) = by_kind(report)["provenance"]
        assert status is Status.FAILED and "revoked at ledger entry" in detail

        with pytest.raises(SigningInputError, match="not an image"):
            verify_image(w.store, w.ledger, approved.approval.attestation)


def test_a_real_bundle_about_another_artifact_fails(home: Path, repo: Path) -> None:
    with world(home, repo) as w:
        digest = w.build("app:1")
        w.store.attach(
            digest,
            BUNDLE_TYPE,
            BCR.read_bytes(),
            BUNDLE_TYPE,
            {PREDICATE_ANNOTATION: "https://slsa.dev/provenance/v1"},
        )
        for identity in (None, BCR_IDENTITY):
            report = verify_image(w.store, w.ledger, digest, VerifyOptions(identity=identity))
            ((status, detail),) = by_kind(report)["sigstore-bundle"]
            # The signature, certificate and log entry verify; the statement names MODULE.bazel.
            assert status is Status.FAILED and "its statement is about sha256:06ce3309" in detail
            assert not report.ok


def _exported(home: Path, repo: Path, tmp_path: Path) -> tuple[Path, str, Any]:
    with world(home, repo) as w:
        digest = w.build("app:1")
        archive = tmp_path / "app.tar"
        export_image(w.store, digest, archive)
    return archive, digest, load_private_key(home / BUILDER_KEY_FILE).public_key()


def _bundle_about(template: Path, digest: str, **changes: Any) -> dict[str, Any]:
    """A real bundle's verification material around our own envelope about ``digest``."""
    real = json.loads(template.read_text())
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "app", "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": "https://example.org/test/v1",
        "predicate": {"ok": True},
    }
    envelope = sign_envelope(generate_ed25519(), IN_TOTO_PAYLOAD_TYPE, canonical_json(statement))
    return {**real, "dsseEnvelope": envelope, **changes}


def test_import_verifies_sigstore_bundles(home: Path, repo: Path, tmp_path: Path) -> None:
    archive, digest, builder_public = _exported(home, repo, tmp_path)
    target = tmp_path / "target"
    init_ledger(target)[0].close()

    # Forged: a real certificate and log entry around someone else's envelope: refused.
    forged = tmp_path / "forged.sigstore.json"
    forged.write_text(json.dumps(_bundle_about(BCR, digest)))
    with pytest.raises(AttestationSignatureError, match="Sigstore bundle does not verify"):
        import_image(archive, target, attestations=[forged])
    assert not (target / "store").exists()

    # Without an inclusion proof nothing can be checked offline: attached, unverified, and why.
    incomplete = _bundle_about(BCR, digest)
    entry = incomplete["verificationMaterial"]["tlogEntries"][0]
    incomplete["verificationMaterial"]["tlogEntries"][0] = {
        k: v for k, v in entry.items() if k != "inclusionProof"
    }
    offline = tmp_path / "offline.sigstore.json"
    offline.write_text(json.dumps(incomplete))
    unsupported = tmp_path / "delegator.sigstore.json"
    unsupported.write_text(json.dumps(_bundle_about(DELEGATOR, digest)))
    result = import_image(archive, target, attestations=[offline, unsupported], tag="app:1")
    first, second = result.attestations
    assert not first.verified and "needs the network" in first.verification
    assert "no inclusion proof" in first.verification
    assert not second.verified and "intoto/0.0.2" in second.verification
    ledger = open_ledger(target)
    try:
        (event,) = list(ledger.entries(EntryFilter(type="artifact.imported")))
        recorded = parse_entry(event.data).payload["attestations"]
        assert [a["verified"] for a in recorded] == [False, False]
        assert "needs sigstore" not in json.dumps(recorded)

        store = Store.for_home(target)
        report = verify_image(store, ledger, "app:1")
        kinds = by_kind(report)
        assert sorted(s for s, _ in kinds["sigstore-bundle"]) == [
            Status.NEEDS_NETWORK,
            Status.UNVERIFIED,
        ]
        # The exported SBOM came inside the archive and the import event records it.
        assert statuses(report, "sbom") == [Status.VERIFIED]
        assert statuses(report, "ledger") == [Status.VERIFIED]
        # The provenance is signed by the first home's builder key, unknown to this ledger...
        ((status, detail),) = kinds["provenance"]
        assert status is Status.UNVERIFIED and "--key" in detail
        # ...unless that key is given.
        given = VerifyOptions(keys={key_id(builder_public): builder_public})
        report = verify_image(store, ledger, "app:1", given)
        assert statuses(report, "provenance") == [Status.VERIFIED]
        assert "the given key" in by_kind(report)["provenance"][0][1]
        assert not report.ok  # the two bundles still cannot be verified here
    finally:
        ledger.close()


def test_missing_sbom_and_missing_ledger_record(home: Path, repo: Path, tmp_path: Path) -> None:
    archive, digest, _ = _exported(home, repo, tmp_path)
    other = tmp_path / "other"
    init_ledger(other)[0].close()
    import_image(archive, other)
    # Someone removes the SBOM from the store's index behind immutrail's back.
    index_file = other / "store" / "index.json"
    index = json.loads(index_file.read_text())
    index["manifests"] = [
        m for m in index["manifests"] if m.get("artifactType") != "application/vnd.cyclonedx+json"
    ]
    index_file.chmod(0o644)
    index_file.write_text(json.dumps(index))
    stranger = tmp_path / "stranger"
    init_ledger(stranger)[0].close()
    for ledger_home, ledger_status in ((other, Status.VERIFIED), (stranger, Status.FAILED)):
        ledger = open_ledger(ledger_home)
        try:
            report = verify_image(Store.for_home(other), ledger, digest)
        finally:
            ledger.close()
        assert statuses(report, "sbom") == [Status.MISSING] and not report.ok
        assert statuses(report, "ledger") == [ledger_status]
    assert "does not record this image" in by_kind(report)["ledger"][0][1]
