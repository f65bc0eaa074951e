"""SLSA provenance: building ours, signing/verifying it, importing real-world statements."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from immutrail.artifacts.errors import ArtifactInputError
from immutrail.artifacts.provenance import (
    IMMUTRAIL_BUILD_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    SLSA_PROVENANCE_V1,
    STATEMENT_V1,
    ProvenanceFormatError,
    ProvenanceSignatureError,
    SubjectMismatchError,
    UnsupportedPredicateError,
    WrongPayloadTypeError,
    build_provenance,
    read_provenance,
    rfc3339,
    sign_provenance,
    validate_statement,
    verify_attestation,
    verify_provenance,
)
from immutrail.crypto.canonical import canonical_json
from immutrail.crypto.dsse import sign_envelope
from immutrail.crypto.keys import generate_ecdsa_p256, generate_ed25519, key_id, load_public_key_pem

PROV = Path(__file__).resolve().parents[1] / "data" / "provenance"
OCI_BLOBS = PROV / "oci-container-workflow-dispatch/blobs/sha256"

IMAGE_HEX = "5" * 64
BASE_HEX = "b" * 64
COMMIT = "1ac93ce21ee526b36fd154b9058d97dfaa424c50"
START = datetime(2026, 3, 14, 8, 59, 1, tzinfo=UTC)
END = datetime(2026, 3, 14, 9, 0, 0, 250000, tzinfo=UTC)


def build(**overrides: Any) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "builder_id": "https://immutrail.example/builders/ci@v1",
        "definition_path": "images/web/image.yaml",
        "repo_uri": "https://git.example/acme/infra",
        "commit": COMMIT,
        "source_ref": "refs/heads/main",
        "base_image_digest": f"sha256:{BASE_HEX}",
        "base_image_name": "registry.example/base/debian:12",
        "input_files": {"web/app.py": "a" * 64, "images/web/image.yaml": "c" * 64},
        "started_on": START,
        "finished_on": END,
        "invocation_id": "urn:uuid:5c7c1f4e-0d5e-4d0b-9a0b-1f2e3d4c5b6a",
        "dirty": False,
    }
    arguments.update(overrides)
    return build_provenance("registry.example/acme/web", IMAGE_HEX, **arguments)


def test_build_provenance_exact_statement() -> None:
    statement = build()
    assert statement == {
        "_type": STATEMENT_V1,
        "subject": [{"name": "registry.example/acme/web", "digest": {"sha256": IMAGE_HEX}}],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": IMMUTRAIL_BUILD_TYPE,
                "externalParameters": {
                    "definition": "images/web/image.yaml",
                    "source": {
                        "uri": "git+https://git.example/acme/infra@refs/heads/main",
                        "digest": {"gitCommit": COMMIT},
                    },
                },
                "internalParameters": {"dirty": False},
                "resolvedDependencies": [
                    {
                        "name": "source",
                        "uri": "git+https://git.example/acme/infra@refs/heads/main",
                        "digest": {"gitCommit": COMMIT},
                    },
                    {
                        "name": "base-image",
                        "uri": "registry.example/base/debian:12",
                        "digest": {"sha256": BASE_HEX},
                    },
                    {"uri": "images/web/image.yaml", "digest": {"sha256": "c" * 64}},
                    {"uri": "web/app.py", "digest": {"sha256": "a" * 64}},
                ],
            },
            "runDetails": {
                "builder": {
                    "id": "https://immutrail.example/builders/ci@v1",
                    "version": {
                        "immutrail": statement["predicate"]["runDetails"]["builder"]["version"][
                            "immutrail"
                        ]
                    },
                },
                "metadata": {
                    "invocationId": "urn:uuid:5c7c1f4e-0d5e-4d0b-9a0b-1f2e3d4c5b6a",
                    "startedOn": "2026-03-14T08:59:01Z",
                    "finishedOn": "2026-03-14T09:00:00.25Z",
                },
            },
        },
    }
    # a boolean stays a boolean through the signed bytes (not 0/1, not a float)
    signed = json.loads(canonical_json(statement))
    assert signed["predicate"]["buildDefinition"]["internalParameters"]["dirty"] is False


def test_build_provenance_scratch_lockfile_dirty() -> None:
    statement = build(
        base_image_digest=None, input_files=None, lockfile=("uv.lock", "d" * 64), dirty=True
    )
    deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert [d.get("name") for d in deps] == ["source", "lockfile"]
    assert deps[1] == {"name": "lockfile", "uri": "uv.lock", "digest": {"sha256": "d" * 64}}
    assert statement["predicate"]["buildDefinition"]["internalParameters"] == {"dirty": True}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"input_files": None}, "build inputs"),
        ({"commit": "abc123"}, "full git commit"),
        ({"input_files": {"a": "XYZ"}}, "SHA-256"),
        ({"base_image_digest": "sha256:1234"}, "base image digest"),
        ({"finished_on": START - timedelta(seconds=1)}, "finish before"),
    ],
)
def test_build_provenance_refuses_bad_input(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ArtifactInputError, match=message):
        build(**overrides)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        rfc3339(datetime(2026, 1, 1))


# -- sign / verify ---------------------------------------------------------------------------


@pytest.fixture(params=["ed25519", "p256"])
def key(request: pytest.FixtureRequest):
    return generate_ed25519() if request.param == "ed25519" else generate_ecdsa_p256()


def trust(*keys) -> dict:
    return {key_id(k.public_key()): k.public_key() for k in keys}


def test_sign_and_verify_round_trip(key) -> None:
    statement = build()
    envelope = sign_provenance(statement, key)
    assert envelope["payloadType"] == IN_TOTO_PAYLOAD_TYPE
    assert base64.b64decode(envelope["payload"]) == canonical_json(statement)
    assert envelope["signatures"][0]["keyid"] == key_id(key.public_key())
    verified = verify_provenance(
        envelope, trust(key), expected_subject_digest=f"sha256:{IMAGE_HEX}"
    )
    assert verified == statement
    assert verify_provenance(envelope, trust(key), expected_subject_digest=IMAGE_HEX) == statement


def test_tampered_payload_is_rejected(key) -> None:
    envelope = sign_provenance(build(), key)
    forged = build(commit="f" * 40)  # same shape, other commit
    envelope["payload"] = base64.b64encode(canonical_json(forged)).decode()
    with pytest.raises(ProvenanceSignatureError):
        verify_provenance(envelope, trust(key))


def test_wrong_key_is_rejected(key) -> None:
    envelope = sign_provenance(build(), key)
    other = generate_ed25519()
    with pytest.raises(ProvenanceSignatureError, match="0 valid signature"):
        verify_provenance(envelope, trust(other))
    # the right keyid mapped to the wrong key: still no
    with pytest.raises(ProvenanceSignatureError):
        verify_provenance(envelope, {key_id(key.public_key()): other.public_key()})


def test_flipped_signature_bit_is_rejected(key) -> None:
    envelope = sign_provenance(build(), key)
    sig = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    sig[len(sig) // 2] ^= 0x01
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    with pytest.raises(ProvenanceSignatureError):
        verify_provenance(envelope, trust(key))


def test_wrong_payload_type_is_rejected(key) -> None:
    signed = sign_envelope(key, "application/json", canonical_json(build()))
    with pytest.raises(WrongPayloadTypeError, match="application/json"):
        verify_provenance(signed, trust(key))
    # relabelling a signed envelope breaks the signature, and is refused before that anyway
    envelope = sign_provenance(build(), key)
    envelope["payloadType"] = "application/vnd.other+json"
    with pytest.raises(WrongPayloadTypeError):
        verify_provenance(envelope, trust(key))


def test_subject_digest_mismatch(key) -> None:
    envelope = sign_provenance(build(), key)
    with pytest.raises(SubjectMismatchError, match="but not sha256:" + "6" * 64):
        verify_provenance(envelope, trust(key), expected_subject_digest="6" * 64)


def test_signed_but_malformed_statement(key) -> None:
    bad = build()
    del bad["predicate"]["runDetails"]["builder"]["id"]
    envelope = sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, canonical_json(bad))
    with pytest.raises(ProvenanceFormatError, match=r"predicate\.runDetails\.builder\.id"):
        verify_provenance(envelope, trust(key))
    dup = b'{"_type":"x","_type":"' + STATEMENT_V1.encode() + b'"}'
    envelope = sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, dup)
    with pytest.raises(ProvenanceFormatError, match="duplicate key '_type'"):
        verify_provenance(envelope, trust(key))
    envelope = sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, b"not json")
    with pytest.raises(ProvenanceFormatError, match="not valid JSON"):
        verify_provenance(envelope, trust(key))


def test_malformed_envelopes(key) -> None:
    with pytest.raises(ProvenanceFormatError):
        verify_provenance(["not", "an", "envelope"], trust(key))
    envelope = sign_provenance(build(), key)
    envelope["payload"] = "%%%"
    with pytest.raises(ProvenanceFormatError, match="base64"):
        verify_provenance(envelope, trust(key))
    envelope["signatures"] = []
    with pytest.raises(ProvenanceFormatError):
        verify_provenance(envelope, trust(key))


def test_sign_refuses_a_statement_that_is_not_ours(key) -> None:
    statement = build()
    statement["predicate"]["runDetails"]["metadata"]["startedOn"] = "yesterday"
    with pytest.raises(ProvenanceFormatError, match="RFC 3339"):
        sign_provenance(statement, key)


def test_verify_attestation_returns_any_predicate_but_provenance_needs_slsa(key) -> None:
    statement = {
        "_type": STATEMENT_V1,
        "subject": [{"name": "x", "digest": {"sha256": IMAGE_HEX}}],
        "predicateType": "https://cyclonedx.org/bom",
        "predicate": {"bomFormat": "CycloneDX"},
    }
    envelope = sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, canonical_json(statement))
    assert verify_attestation(envelope, trust(key)) == statement
    with pytest.raises(UnsupportedPredicateError):
        verify_provenance(envelope, trust(key))


# -- the structural validator --------------------------------------------------------------


def broken(path: list[str | int], value: Any) -> dict[str, Any]:
    statement = copy.deepcopy(build())
    target: Any = statement
    for step in path[:-1]:
        target = target[step]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return statement


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (["_type"], "https://in-toto.io/Statement/v2", "_type"),
        (["subject"], [], "subject"),
        (["subject", 0, "digest", "sha256"], "ABC", "subject[0].digest.sha256"),
        (["subject", 0, "digest", "sha256"], "A" * 64, "subject[0].digest.sha256"),
        (["subject", 0, "digest"], {}, "subject[0].digest"),
        (["predicateType"], 7, "predicateType"),
        (["predicate", "buildDefinition"], KeyError, "predicate.buildDefinition"),
        (["predicate", "buildDefinition", "externalParameters"], [], "externalParameters"),
        (
            ["predicate", "buildDefinition", "resolvedDependencies", 0],
            {"name": "nothing"},
            "resolvedDependencies[0]",
        ),
        (
            ["predicate", "buildDefinition", "resolvedDependencies", 0, "digest", "gitCommit"],
            "123",
            "resolvedDependencies[0].digest.gitCommit",
        ),
        (
            ["predicate", "runDetails", "metadata", "finishedOn"],
            "2026-13-01T00:00:00Z",
            "finishedOn",
        ),
        (["predicate", "runDetails", "metadata", "finishedOn"], "2026-03-14 09:00", "finishedOn"),
        (["predicate", "runDetails", "metadata", "finishedOn"], "2020-01-01T00:00:00Z", "before"),
    ],
)
def test_validator_names_the_bad_field(path: list[str | int], value: Any, where: str) -> None:
    statement = broken(path, value)
    with pytest.raises(ProvenanceFormatError, match=where.replace("[", r"\[").replace(".", r"\.")):
        validate_statement(statement)


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ({"uri": "web/app.py", "digest": {"sha256": "A" * 64}}, "[1].digest.sha256"),
        ({"uri": "web/app.py", "digest": {"sha256": "a" * 63}}, "[1].digest.sha256"),
        ({"uri": "web/app.py", "digest": {"sha256": 7}}, "[1].digest.sha256"),
        ({"uri": "web/app.py", "digest": {}}, "[1].digest"),
        ({"uri": "", "digest": {"sha256": "a" * 64}}, "[1].uri"),
        ({"uri": 7, "digest": {"sha256": "a" * 64}}, "[1].uri"),
        ({"uri": "web/app.py", "digest": "a" * 64}, "[1].digest"),
        (
            {"uri": "web/app.py", "digest": {"sha256": "a" * 64, "sha1": "b" * 39}},
            "[1].digest.sha1",
        ),
        ("web/app.py", "resolvedDependencies[1]"),
    ],
)
def test_input_files_of_the_common_shape_are_checked_in_full(value: Any, where: str) -> None:
    """An input file's entry is accepted by one quick test only when it has the exact shape
    ``build_provenance`` writes; anything near it still gets every check and its error."""
    statement = broken(["predicate", "buildDefinition", "resolvedDependencies", 1], value)
    with pytest.raises(ProvenanceFormatError, match=where.replace("[", r"\[").replace(".", r"\.")):
        validate_statement(statement, strict=True)


def test_input_files_of_the_common_shape_pass() -> None:
    statement = build()
    dependencies = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert dependencies[2] == {"uri": "images/web/image.yaml", "digest": {"sha256": "c" * 64}}
    assert validate_statement(statement, strict=True) is statement


@pytest.mark.parametrize(
    "path",
    [
        ["predicate", "buildDefinition", "internalParameters", "dirty"],
        ["predicate", "buildDefinition", "externalParameters", "definition"],
        ["predicate", "runDetails", "metadata", "invocationId"],
        ["subject", 0, "name"],
    ],
)
def test_strict_validation_requires_our_fields(path: list[str | int]) -> None:
    statement = broken(path, KeyError)
    validate_statement(statement)  # fine for an imported statement
    with pytest.raises(ProvenanceFormatError):
        validate_statement(statement, strict=True)


def test_validator_accepts_offset_times_and_fractions() -> None:
    statement = broken(
        ["predicate", "runDetails", "metadata", "startedOn"], "2026-03-14T10:59:01.5+02:00"
    )
    validate_statement(statement, strict=True)


# -- real-world provenance ------------------------------------------------------------------


def test_read_slsa_v02_container_provenance_from_oci_layout() -> None:
    envelope_blob = OCI_BLOBS / "e163b472f2e5d66e5a2a45e26e020c51a0d2da7dc8b567b31fc2ebfd33dbc33a"
    summary = read_provenance(envelope_blob.read_bytes())
    assert summary.slsa_version == "0.2"
    assert summary.statement_type == "https://in-toto.io/Statement/v0.1"
    assert summary.builder_id == (
        "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/"
        "generator_container_slsa3.yml@refs/tags/v2.1.0"
    )
    assert (
        summary.source_uri
        == "git+https://github.com/slsa-framework/example-package@refs/heads/main"
    )
    assert summary.source_commit == "4d329c75e7ec1725f7c9ce917a8799d408d06be3"
    (subject,) = summary.subjects
    # the subject is the image index stored right beside it in the same layout
    index_blob = OCI_BLOBS / subject.digest["sha256"]
    assert hashlib.sha256(index_blob.read_bytes()).hexdigest() == subject.digest["sha256"]
    assert summary.signature_keyids == ("",)
    assert summary.verified is False


def test_read_buildkit_bare_statement_with_empty_builder() -> None:
    blob = OCI_BLOBS / "8d63b5e440cc7cfa68622b4a3cae2dbe215f8f8dcc9f2fa4ffd3078d40d61a84"
    summary = read_provenance(json.loads(blob.read_text()))
    assert summary.builder_id == ""
    assert summary.source_commit == "4d329c75e7ec1725f7c9ce917a8799d408d06be3"
    assert summary.subjects[0].digest == {
        "sha256": "d1fc0de9c6a33e502c488221644de1736c53d8ddb59b0e41b4946fb26af50e69"
    }
    assert (OCI_BLOBS / summary.subjects[0].digest["sha256"]).exists()


@pytest.mark.parametrize("name", ["annotated-tag", "workflow-inputs"])
def test_read_dsse_provenance_subject_matches_artifact(name: str) -> None:
    summary = read_provenance((PROV / "dsse" / f"{name}.intoto.jsonl").read_text())
    artifact = hashlib.sha256((PROV / "dsse" / name).read_bytes()).hexdigest()
    assert summary.subjects[0].name == "artifact1"
    assert summary.subjects[0].digest["sha256"] == artifact
    assert summary.builder_id.startswith(
        "https://github.com/slsa-framework/slsa-github-generator/.github/workflows/"
    )
    assert summary.source_commit is not None and len(summary.source_commit) == 40


def test_read_annotated_tag_two_subjects_and_source() -> None:
    summary = read_provenance((PROV / "dsse/annotated-tag.intoto.jsonl").read_bytes())
    assert [s.name for s in summary.subjects] == ["artifact1", "artifact2"]
    assert summary.source_uri == "git+https://github.com/asraa/slsa-on-github-test@refs/tags/v1.5.0"
    assert summary.source_commit == "f24af35a7c714f1b4eeb53afefb57fa11bd5c95c"
    assert (
        summary.build_type == "https://github.com/slsa-framework/slsa-github-generator/generic@v1"
    )


def test_read_slsa_v1_github_attestation_bundle() -> None:
    summary = read_provenance((PROV / "sigstore-bundle/bcr-MODULE.bazel.intoto.jsonl").read_text())
    assert summary.slsa_version == "1"
    assert summary.statement_type == STATEMENT_V1
    assert summary.builder_id == (
        "https://github.com/bazel-contrib/publish-to-bcr/.github/workflows/publish.yaml"
        "@refs/tags/v0.0.1"
    )
    assert (
        summary.source_uri
        == "git+https://github.com/aspect-build/rules_lint@refs/heads/publish-to-bcr"
    )
    assert summary.source_commit == "8f70009fde0c94ade6ce2a054b94718c819126ec"
    assert summary.invocation_id == (
        "https://github.com/aspect-build/rules_lint/actions/runs/14095611671/attempts/1"
    )
    assert summary.subjects[0].name == "MODULE.bazel"


def test_read_slsa_v1_predicate_in_v01_statement_delegator() -> None:
    path = (
        PROV
        / "sigstore-bundle/gha_delegator-v2.1.0-binary-linux-amd64-workflow_dispatch.build.slsa"
    )
    summary = read_provenance(json.loads(path.read_text()))
    assert (summary.statement_type, summary.slsa_version) == (
        "https://in-toto.io/Statement/v0.1",
        "1",
    )
    artifact = PROV / "sigstore-bundle/gha_delegator-v2.1.0-binary-linux-amd64-workflow_dispatch"
    assert summary.subjects[0].digest["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert summary.source_commit == "4d329c75e7ec1725f7c9ce917a8799d408d06be3"


def test_read_v01_predicate_is_unsupported() -> None:
    document = json.loads((PROV / "gcb/gcloud-container-github.v0.3.json").read_text())
    envelope = document["provenance_summary"]["provenance"][0]["envelope"]
    with pytest.raises(UnsupportedPredicateError, match=r"v0\.1"):
        read_provenance(envelope)


def test_read_provenance_refuses_non_provenance_and_garbage() -> None:
    with pytest.raises(UnsupportedPredicateError, match="verification_summary"):
        read_provenance((PROV / "vsa/gke-gce-pre.bcid-vsa.jsonl").read_text())
    with pytest.raises(ProvenanceFormatError):
        read_provenance(b"{")
    with pytest.raises(WrongPayloadTypeError):
        read_provenance({"payloadType": "text/plain", "payload": "", "signatures": []})
    with pytest.raises(ProvenanceFormatError, match="base64"):
        read_provenance({"payloadType": IN_TOTO_PAYLOAD_TYPE, "payload": "!!", "signatures": []})


def test_tampered_real_provenance_keeps_parsing_but_would_not_verify() -> None:
    """read_provenance reports claims; only verification can say they are signed."""
    envelope = json.loads((PROV / "dsse/annotated-tag.intoto.jsonl").read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["subject"][0]["digest"]["sha256"] = "0" * 64
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    assert read_provenance(envelope).subjects[0].digest["sha256"] == "0" * 64
    assert read_provenance(envelope).verified is False


# -- the real VSA: DSSE with a raw r||s P-256 signature --------------------------------------


def vsa() -> tuple[dict[str, Any], Any]:
    envelope = json.loads((PROV / "vsa/gke-gce-pre.bcid-vsa.jsonl").read_text())
    public = load_public_key_pem((PROV / "vsa/vsa_signing_public_key.pem").read_bytes())
    return envelope, public


def test_real_vsa_signature_verifies_with_shipped_pem() -> None:
    envelope, public = vsa()
    assert len(base64.b64decode(envelope["signatures"][0]["sig"])) == 64  # raw r||s
    statement = verify_attestation(envelope, {envelope["signatures"][0]["keyid"]: public})
    assert statement["predicateType"] == "https://slsa.dev/verification_summary/v1"
    assert statement["predicate"]["verificationResult"] == "PASSED"
    assert statement["subject"] == [
        {"name": "_", "digest": {"gce_image_id": "8970095005306000053"}}
    ]


def test_real_vsa_tampered_or_wrong_key_fails() -> None:
    envelope, public = vsa()
    keyid = envelope["signatures"][0]["keyid"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["verificationResult"] = "FAILED"
    tampered = dict(envelope, payload=base64.b64encode(json.dumps(statement).encode()).decode())
    with pytest.raises(ProvenanceSignatureError):
        verify_attestation(tampered, {keyid: public})
    with pytest.raises(ProvenanceSignatureError):
        verify_attestation(envelope, {keyid: generate_ecdsa_p256().public_key()})
    with pytest.raises(SubjectMismatchError):
        verify_attestation(envelope, {keyid: public}, expected_subject_digest="1" * 64)
