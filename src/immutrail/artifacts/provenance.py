"""SLSA provenance: build it for our images, sign and verify it, and import other builders'.

Our builds are described by an in-toto Statement v1 whose predicate is SLSA Provenance v1
(https://slsa.dev/spec/v1.0/provenance): the subject is the image manifest digest;
``externalParameters`` hold what the user chose (the definition file and the source commit);
``resolvedDependencies`` hold everything the build consumed (the source commit, the base image,
every input file or the lockfile, each with its digest); ``runDetails`` name the builder and the
invocation and when it ran. The JSON is built here by hand, not through the in-toto-attestation
protobuf models, which pass predicates through ``Struct`` and turn integers into floats.

Signing wraps the RFC 8785 canonical JSON of the statement in a DSSE envelope of payload type
``application/vnd.in-toto+json`` (``crypto.dsse``). Verifying checks the payload type, the
signature by a trusted key, the statement's shape, and optionally that an expected digest is
among the subjects, each failure with its own error type.

``validate_statement`` is the structural check used for our output (``strict=True``: every field
we promise, SLSA v1 only) and for imported statements (Statement v1 or v0.1, SLSA v1 or v0.2;
unknown fields are kept and ignored, as both specs require of consumers): required fields and
their types, RFC 3339 times, lower-case hex digests of the right length for the algorithms we
know. ``read_provenance`` turns a DSSE envelope, a Sigstore bundle or a bare statement into a
:class:`ProvenanceSummary` (subjects, builder, source commit, times), *without* verifying any
signature: it says what a document claims, verification says whether to believe it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from immutrail.crypto.canonical import parse_strict_json
from immutrail.crypto.errors import CanonicalizationError

from .. import __version__
from ..crypto.canonical import canonical_json
from ..crypto.dsse import sign_envelope, verify_envelope
from ..crypto.errors import EnvelopeError, SignatureError
from ..crypto.keys import PrivateKey, PublicKey
from .errors import ArtifactError, ArtifactInputError

__all__ = [
    "IMMUTRAIL_BUILD_TYPE",
    "IN_TOTO_PAYLOAD_TYPE",
    "SLSA_PROVENANCE_V02",
    "SLSA_PROVENANCE_V1",
    "STATEMENT_V01",
    "STATEMENT_V1",
    "ProvenanceError",
    "ProvenanceFormatError",
    "ProvenanceSignatureError",
    "ProvenanceSummary",
    "Subject",
    "SubjectMismatchError",
    "UnsupportedPredicateError",
    "WrongPayloadTypeError",
    "build_provenance",
    "read_provenance",
    "rfc3339",
    "sign_provenance",
    "split_source_uri",
    "validate_statement",
    "verify_attestation",
    "verify_provenance",
]

STATEMENT_V1 = "https://in-toto.io/Statement/v1"
STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
SLSA_PROVENANCE_V02 = "https://slsa.dev/provenance/v0.2"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
IMMUTRAIL_BUILD_TYPE = "https://immutrail.dev/build-types/oci-image/v1"
"""Our ``buildType``: a build of an image definition file from a git commit."""

MAX_STATEMENT_BYTES = 16 * 1024 * 1024

_HEX_LENGTHS: Mapping[str, tuple[int, ...]] = {
    "sha1": (40,),
    "sha224": (56,),
    "sha256": (64,),
    "sha384": (96,),
    "sha512": (128,),
    "sha3_256": (64,),
    "sha3_512": (128,),
    "sha512_256": (64,),
    "gitCommit": (40, 64),
    "gitTree": (40, 64),
    "gitBlob": (40, 64),
}
_HEX = re.compile(r"[0-9a-f]+")
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")


class ProvenanceError(ArtifactError):
    """Base of the provenance errors."""


class ProvenanceFormatError(ProvenanceError, ArtifactInputError):
    """A statement or envelope that does not have the required shape; ``where`` is its path."""

    def __init__(self, where: str, message: str):
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class UnsupportedPredicateError(ProvenanceFormatError):
    """A well-formed statement of a predicate type we do not read as provenance."""


class WrongPayloadTypeError(ProvenanceError, ArtifactInputError):
    """A DSSE envelope that does not carry an in-toto statement."""


class ProvenanceSignatureError(ProvenanceError):
    """No trusted key signed the envelope, or the signature does not verify."""

    def __init__(self, message: str, hint: str | None = None):
        self.hint = hint
        super().__init__(message)

    def diagnostics(self) -> str:
        return str(self) if self.hint is None else f"{self}\n{self.hint}"


class SubjectMismatchError(ProvenanceError):
    """A verified statement whose subjects do not include the digest it was expected to cover."""


# -- building ------------------------------------------------------------------------------


def rfc3339(moment: datetime) -> str:
    """``moment`` in UTC as RFC 3339 with a ``Z``; fractions of a second only when present."""
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    utc = moment.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def _sha256_hex(value: str, what: str) -> str:
    hex_part = value.removeprefix("sha256:")
    if len(hex_part) != 64 or not _HEX.fullmatch(hex_part):
        raise ArtifactInputError(f"{what} {value!r} is not a lower-case SHA-256 (64 hex digits)")
    return hex_part


def _git_uri(repo_uri: str, ref: str | None) -> str:
    uri = repo_uri if repo_uri.startswith("git+") else f"git+{repo_uri}"
    return f"{uri}@{ref}" if ref else uri


def split_source_uri(uri: str) -> tuple[str, str | None]:
    """``git+URL@refs/heads/main`` -> (``URL``, ``refs/heads/main``); the ref may be absent.

    Only an ``@refs/…`` suffix is a ref: an ``@`` elsewhere belongs to the URL (``git@host``).
    """
    base, at, ref = uri.removeprefix("git+").rpartition("@")
    if at and ref.startswith("refs/"):
        return base, ref
    return uri.removeprefix("git+"), None


def build_provenance(
    subject_name: str,
    subject_digest_hex: str,
    *,
    builder_id: str,
    build_type: str = IMMUTRAIL_BUILD_TYPE,
    definition_path: str,
    repo_uri: str,
    commit: str,
    source_ref: str | None = None,
    base_image_digest: str | None,
    base_image_name: str | None = None,
    input_files: Mapping[str, str] | None = None,
    lockfile: tuple[str, str] | None = None,
    started_on: datetime,
    finished_on: datetime,
    invocation_id: str,
    dirty: bool,
) -> dict[str, Any]:
    """The in-toto Statement v1 / SLSA Provenance v1 of one image build, validated.

    ``subject_digest_hex`` is the image manifest's SHA-256 (with or without ``sha256:``);
    ``commit`` the full git commit id; ``input_files`` maps each repository path the build read
    to its SHA-256 hex, ``lockfile`` is ``(path, sha256 hex)`` of a lock file standing for the
    inputs; at least one of the two must be given (an empty mapping says "no input files").
    ``dirty`` records that the work tree had uncommitted changes (``--allow-dirty``): the commit
    then does not describe the inputs, the file digests do.
    """
    if input_files is None and lockfile is None:
        raise ArtifactInputError(
            "provenance must list the build inputs: give input_files, a lockfile, or both"
        )
    if started_on > finished_on:
        raise ArtifactInputError("the build cannot finish before it started")
    commit = commit.lower()
    if len(commit) not in (40, 64) or not _HEX.fullmatch(commit):
        raise ArtifactInputError(f"commit {commit!r} is not a full git commit id")
    source_uri = _git_uri(repo_uri, source_ref)
    dependencies: list[dict[str, Any]] = [
        {"name": "source", "uri": source_uri, "digest": {"gitCommit": commit}}
    ]
    if base_image_digest is not None:
        base: dict[str, Any] = {
            "name": "base-image",
            "digest": {"sha256": _sha256_hex(base_image_digest, "base image digest")},
        }
        if base_image_name:
            base["uri"] = base_image_name
        dependencies.append(base)
    if lockfile is not None:
        path, digest = lockfile
        dependencies.append(
            {"name": "lockfile", "uri": path, "digest": {"sha256": _sha256_hex(digest, path)}}
        )
    for path, digest in sorted((input_files or {}).items()):
        if not path:
            raise ArtifactInputError("an input file has an empty path")
        dependencies.append({"uri": path, "digest": {"sha256": _sha256_hex(digest, path)}})
    statement: dict[str, Any] = {
        "_type": STATEMENT_V1,
        "subject": [
            {
                "name": subject_name,
                "digest": {"sha256": _sha256_hex(subject_digest_hex, "subject digest")},
            }
        ],
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": build_type,
                "externalParameters": {
                    "definition": definition_path,
                    "source": {"uri": source_uri, "digest": {"gitCommit": commit}},
                },
                "internalParameters": {"dirty": dirty},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": builder_id, "version": {"immutrail": __version__}},
                "metadata": {
                    "invocationId": invocation_id,
                    "startedOn": rfc3339(started_on),
                    "finishedOn": rfc3339(finished_on),
                },
            },
        },
    }
    validate_statement(statement, strict=True)
    return statement


# -- validation ----------------------------------------------------------------------------


def _at(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


def _object(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ProvenanceFormatError(where, f"must be an object, not {_kind(value)}")
    return value


def _string(value: object, where: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ProvenanceFormatError(where, f"must be a string, not {_kind(value)}")
    if not empty and not value:
        raise ProvenanceFormatError(where, "must not be empty")
    return value


def _list(value: object, where: str, *, empty: bool = True) -> list[Any]:
    if not isinstance(value, list):
        raise ProvenanceFormatError(where, f"must be an array, not {_kind(value)}")
    if not empty and not value:
        raise ProvenanceFormatError(where, "must not be empty")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ProvenanceFormatError(where, f"must be true or false, not {_kind(value)}")
    return value


def _kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, int | float) else type(value).__name__


def _time(value: object, where: str) -> datetime:
    text = _string(value, where)
    if not _RFC3339.fullmatch(text):
        raise ProvenanceFormatError(where, f"{text!r} is not an RFC 3339 date-time")
    try:
        return datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ProvenanceFormatError(where, f"{text!r} is not a valid date-time: {exc}") from exc


def _digest_set(value: object, where: str) -> Mapping[str, str]:
    digests = _object(value, where)
    if not digests:
        raise ProvenanceFormatError(where, "must name at least one digest")
    for algorithm, digest in digests.items():
        text = _string(digest, _at(where, algorithm))
        lengths = _HEX_LENGTHS.get(algorithm)
        if lengths is not None and (len(text) not in lengths or not _HEX.fullmatch(text)):
            raise ProvenanceFormatError(
                _at(where, algorithm),
                f"{text!r} is not {' or '.join(map(str, lengths))} lower-case hex digits",
            )
    return digests


def _resource(value: object, where: str) -> Mapping[str, Any]:
    resource = _object(value, where)
    for key in ("uri", "name", "mediaType", "downloadLocation"):
        if key in resource:
            _string(resource[key], _at(where, key), empty=key == "name")
    if "digest" in resource:
        _digest_set(resource["digest"], _at(where, "digest"))
    if "annotations" in resource:
        _object(resource["annotations"], _at(where, "annotations"))
    if not any(key in resource for key in ("uri", "digest", "content")):
        raise ProvenanceFormatError(where, "needs at least one of uri, digest or content")
    return resource


def _resources(value: object, where: str) -> list[Mapping[str, Any]]:
    items = _list(value, where)
    for i, item in enumerate(items):
        if not _plain_input(item):  # anything else gets every check, and its error, in full
            _resource(item, _at(where, i))
    return items


def _plain_input(item: object) -> bool:
    """Whether ``item`` is ``{"uri": <non-empty string>, "digest": {"sha256": <64 hex>}}``, the
    shape of an input file, which :func:`_resource` accepts. One test instead of building the
    path of every field for the errors (a build of 20,000 files lists 20,000 of them)."""
    if type(item) is not dict or item.keys() != _PLAIN_INPUT_KEYS:
        return False
    uri, digests = item["uri"], item["digest"]
    if type(uri) is not str or not uri or type(digests) is not dict or len(digests) != 1:
        return False
    digest = digests.get("sha256")
    return type(digest) is str and len(digest) == 64 and _HEX.fullmatch(digest) is not None


_PLAIN_INPUT_KEYS = frozenset({"uri", "digest"})


def validate_statement(statement: object, *, strict: bool = False) -> Mapping[str, Any]:
    """Check the shape of an in-toto statement, and of its predicate when it is SLSA provenance.

    ``strict`` demands what ``build_provenance`` writes: Statement v1, SLSA Provenance v1, named
    subjects, and the fields of our build type. ProvenanceFormatError names the first bad field.
    """
    body = _object(statement, "statement")
    kind = _string(body.get("_type"), "_type")
    allowed = (STATEMENT_V1,) if strict else (STATEMENT_V1, STATEMENT_V01)
    if kind not in allowed:
        raise ProvenanceFormatError("_type", f"{kind!r} is not one of {', '.join(allowed)}")
    subjects = _list(body.get("subject"), "subject", empty=False)
    for index, subject in enumerate(subjects):
        where = _at("subject", index)
        item = _object(subject, where)
        if "name" in item or strict:
            _string(item.get("name"), _at(where, "name"), empty=not strict)
        _digest_set(item.get("digest"), _at(where, "digest"))
    predicate_type = _string(body.get("predicateType"), "predicateType")
    predicate = _object(body.get("predicate", {}), "predicate")
    if predicate_type == SLSA_PROVENANCE_V1:
        _validate_slsa_v1(predicate, strict=strict)
    elif predicate_type == SLSA_PROVENANCE_V02 and not strict:
        _validate_slsa_v02(predicate)
    elif strict:
        raise UnsupportedPredicateError(
            "predicateType", f"{predicate_type!r}: our provenance is {SLSA_PROVENANCE_V1}"
        )
    return body


def _validate_slsa_v1(predicate: Mapping[str, Any], *, strict: bool) -> None:
    where = "predicate.buildDefinition"
    definition = _object(predicate.get("buildDefinition"), where)
    _string(definition.get("buildType"), _at(where, "buildType"))
    external = _object(definition.get("externalParameters"), _at(where, "externalParameters"))
    if "internalParameters" in definition:
        _object(definition["internalParameters"], _at(where, "internalParameters"))
    dependencies = _resources(
        definition.get("resolvedDependencies", []), _at(where, "resolvedDependencies")
    )
    where = "predicate.runDetails"
    run = _object(predicate.get("runDetails"), where)
    builder = _object(run.get("builder"), _at(where, "builder"))
    _string(builder.get("id"), _at(where, "builder.id"))
    if "version" in builder:
        for key, value in _object(builder["version"], _at(where, "builder.version")).items():
            _string(value, _at(where, f"builder.version.{key}"))
    if "builderDependencies" in builder:
        _resources(builder["builderDependencies"], _at(where, "builder.builderDependencies"))
    metadata = _object(run.get("metadata", {}), _at(where, "metadata"))
    times = {}
    for key in ("startedOn", "finishedOn"):
        if key in metadata or strict:
            times[key] = _time(metadata.get(key), _at(where, f"metadata.{key}"))
    if "invocationId" in metadata or strict:
        _string(metadata.get("invocationId"), _at(where, "metadata.invocationId"))
    if "byproducts" in run:
        _resources(run["byproducts"], _at(where, "byproducts"))
    if len(times) == 2 and times["startedOn"] > times["finishedOn"]:
        raise ProvenanceFormatError(_at(where, "metadata"), "finishedOn is before startedOn")
    if strict:
        where = "predicate.buildDefinition.externalParameters"
        _string(external.get("definition"), _at(where, "definition"))
        source = _object(external.get("source"), _at(where, "source"))
        _string(source.get("uri"), _at(where, "source.uri"))
        if "gitCommit" not in _digest_set(source.get("digest"), _at(where, "source.digest")):
            raise ProvenanceFormatError(_at(where, "source.digest"), "must have a gitCommit")
        internal = _object(
            definition.get("internalParameters"),
            "predicate.buildDefinition.internalParameters",
        )
        _bool(internal.get("dirty"), "predicate.buildDefinition.internalParameters.dirty")
        if not dependencies:
            raise ProvenanceFormatError(
                "predicate.buildDefinition.resolvedDependencies", "must list the source"
            )


def _validate_slsa_v02(predicate: Mapping[str, Any]) -> None:
    builder = _object(predicate.get("builder"), "predicate.builder")
    _string(builder.get("id"), "predicate.builder.id", empty=True)  # BuildKit writes ""
    _string(predicate.get("buildType"), "predicate.buildType")
    if "invocation" in predicate:
        invocation = _object(predicate["invocation"], "predicate.invocation")
        if "configSource" in invocation:
            where = "predicate.invocation.configSource"
            config = _object(invocation["configSource"], where)
            if "uri" in config:
                _string(config["uri"], _at(where, "uri"))
            if "digest" in config:
                _digest_set(config["digest"], _at(where, "digest"))
            if "entryPoint" in config:
                _string(config["entryPoint"], _at(where, "entryPoint"), empty=True)
    if "metadata" in predicate:
        where = "predicate.metadata"
        metadata = _object(predicate["metadata"], where)
        for key in ("buildStartedOn", "buildFinishedOn"):
            if key in metadata:
                _time(metadata[key], _at(where, key))
        if "buildInvocationId" in metadata:
            _string(metadata["buildInvocationId"], _at(where, "buildInvocationId"), empty=True)
        if "reproducible" in metadata:
            _bool(metadata["reproducible"], _at(where, "reproducible"))
    if "materials" in predicate:
        for index, item in enumerate(_list(predicate["materials"], "predicate.materials")):
            where = _at("predicate.materials", index)
            material = _object(item, where)
            if "uri" in material:
                _string(material["uri"], _at(where, "uri"))
            if "digest" in material:
                _digest_set(material["digest"], _at(where, "digest"))


# -- signing and verifying -----------------------------------------------------------------


def sign_provenance(statement: Mapping[str, Any], key: PrivateKey) -> dict[str, Any]:
    """A DSSE envelope over the canonical JSON of ``statement`` (validated strictly first)."""
    validate_statement(statement, strict=True)
    return sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, canonical_json(statement))


def verify_attestation(
    envelope: object,
    public_keys: Mapping[str, PublicKey],
    *,
    expected_subject_digest: str | None = None,
) -> dict[str, Any]:
    """The statement inside a DSSE envelope signed by one of ``public_keys`` (any predicate).

    WrongPayloadTypeError, ProvenanceSignatureError, ProvenanceFormatError, and
    SubjectMismatchError when ``expected_subject_digest`` (``sha256:<hex>`` or hex) is given and
    no subject has that SHA-256.
    """
    if not isinstance(envelope, Mapping):
        raise ProvenanceFormatError("envelope", "a DSSE envelope must be a JSON object")
    payload_type = envelope.get("payloadType")
    if payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise WrongPayloadTypeError(
            f"envelope payloadType is {payload_type!r}, not {IN_TOTO_PAYLOAD_TYPE!r}"
        )
    try:
        payload = verify_envelope(envelope, public_keys, payload_type=IN_TOTO_PAYLOAD_TYPE)
    except SignatureError as exc:
        raise ProvenanceSignatureError(str(exc), exc.hint) from exc
    except EnvelopeError as exc:
        raise ProvenanceFormatError("envelope", str(exc)) from exc
    statement = _parse_json(payload, "payload")
    validate_statement(statement)
    if expected_subject_digest is not None:
        _check_subject(statement, expected_subject_digest)
    return statement


def verify_provenance(
    envelope: object,
    public_keys: Mapping[str, PublicKey],
    *,
    expected_subject_digest: str | None = None,
) -> dict[str, Any]:
    """Like ``verify_attestation``, and the statement must be SLSA provenance (v1 or v0.2)."""
    statement = verify_attestation(
        envelope, public_keys, expected_subject_digest=expected_subject_digest
    )
    if statement["predicateType"] not in (SLSA_PROVENANCE_V1, SLSA_PROVENANCE_V02):
        raise UnsupportedPredicateError(
            "predicateType", f"{statement['predicateType']!r} is not SLSA provenance"
        )
    return statement


def _check_subject(statement: Mapping[str, Any], expected: str) -> None:
    wanted = _sha256_hex(expected.lower(), "expected subject digest")
    digests = [subject["digest"].get("sha256") for subject in statement["subject"]]
    if wanted not in digests:
        raise SubjectMismatchError(
            f"the statement covers {', '.join(f'sha256:{d}' for d in digests if d) or 'nothing'}"
            f" but not sha256:{wanted}"
        )


def _parse_json(data: bytes, where: str) -> dict[str, Any]:
    if len(data) > MAX_STATEMENT_BYTES:
        raise ProvenanceFormatError(where, f"larger than {MAX_STATEMENT_BYTES} bytes")

    try:
        value = parse_strict_json(data)
    except CanonicalizationError as exc:
        raise ProvenanceFormatError(where, str(exc)) from exc
    if not isinstance(value, dict):
        raise ProvenanceFormatError(where, "must be a JSON object")
    return value


# -- import --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    name: str
    digest: Mapping[str, str]


@dataclass(frozen=True)
class ProvenanceSummary:
    """What an imported provenance document claims. ``verified`` is False: nothing checked it."""

    statement_type: str
    predicate_type: str
    slsa_version: str
    subjects: tuple[Subject, ...]
    builder_id: str
    build_type: str
    source_uri: str | None
    source_digest: Mapping[str, str]
    invocation_id: str | None
    started_on: str | None
    finished_on: str | None
    dependencies: tuple[Mapping[str, Any], ...]
    signature_keyids: tuple[str, ...]
    statement: Mapping[str, Any] = field(repr=False)
    verified: bool = False

    @property
    def source_commit(self) -> str | None:
        return self.source_digest.get("gitCommit") or self.source_digest.get("sha1")


def read_provenance(document: object) -> ProvenanceSummary:
    """Parse SLSA v0.2 or v1 provenance from a DSSE envelope, a Sigstore bundle or a statement.

    ``document`` is the parsed JSON object, or its bytes/text. Signatures are NOT verified.
    """
    if isinstance(document, bytes | str):
        data = document.encode("utf-8") if isinstance(document, str) else document
        document = _parse_json(data, "document")
    body = _object(document, "document")
    if "dsseEnvelope" in body:  # a Sigstore bundle
        body = _object(body["dsseEnvelope"], "dsseEnvelope")
    keyids: tuple[str, ...] = ()
    if "payload" in body:
        if body.get("payloadType") != IN_TOTO_PAYLOAD_TYPE:
            raise WrongPayloadTypeError(
                f"envelope payloadType is {body.get('payloadType')!r}, not {IN_TOTO_PAYLOAD_TYPE!r}"
            )
        payload = _string(body.get("payload"), "payload")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProvenanceFormatError("payload", "is not base64") from exc
        signatures = _list(body.get("signatures", []), "signatures")
        keyids = tuple(
            str(s.get("keyid", "")) if isinstance(s, Mapping) else "" for s in signatures
        )
        statement: Mapping[str, Any] = _parse_json(raw, "payload")
    else:
        statement = body
    validate_statement(statement)
    predicate_type = statement["predicateType"]
    predicate = statement.get("predicate", {})
    subjects = tuple(
        Subject(str(s.get("name", "")), dict(s["digest"])) for s in statement["subject"]
    )
    if predicate_type == SLSA_PROVENANCE_V1:
        return _summary_v1(statement, predicate, subjects, keyids)
    if predicate_type == SLSA_PROVENANCE_V02:
        return _summary_v02(statement, predicate, subjects, keyids)
    raise UnsupportedPredicateError(
        "predicateType",
        f"{predicate_type!r} is not SLSA provenance v1 or v0.2",
    )


def _git_source(resources: list[Mapping[str, Any]]) -> tuple[str | None, Mapping[str, str]]:
    for resource in resources:
        digest = resource.get("digest", {})
        uri = resource.get("uri")
        if isinstance(uri, str) and ("gitCommit" in digest or "sha1" in digest):
            return uri, dict(digest)
    return None, {}


def _summary_v1(
    statement: Mapping[str, Any],
    predicate: Mapping[str, Any],
    subjects: tuple[Subject, ...],
    keyids: tuple[str, ...],
) -> ProvenanceSummary:
    definition = predicate["buildDefinition"]
    dependencies = list(definition.get("resolvedDependencies", []))
    source_uri, source_digest = _git_source(dependencies)
    external_source = definition["externalParameters"].get("source")
    if source_uri is None and isinstance(external_source, Mapping):
        source_uri, source_digest = _git_source([external_source])
    metadata = predicate["runDetails"].get("metadata", {})
    return ProvenanceSummary(
        statement_type=statement["_type"],
        predicate_type=statement["predicateType"],
        slsa_version="1",
        subjects=subjects,
        builder_id=predicate["runDetails"]["builder"]["id"],
        build_type=definition["buildType"],
        source_uri=source_uri,
        source_digest=source_digest,
        invocation_id=metadata.get("invocationId"),
        started_on=metadata.get("startedOn"),
        finished_on=metadata.get("finishedOn"),
        dependencies=tuple(dependencies),
        signature_keyids=keyids,
        statement=statement,
    )


def _summary_v02(
    statement: Mapping[str, Any],
    predicate: Mapping[str, Any],
    subjects: tuple[Subject, ...],
    keyids: tuple[str, ...],
) -> ProvenanceSummary:
    config = predicate.get("invocation", {}).get("configSource", {})
    materials = list(predicate.get("materials", []))
    source_uri, source_digest = _git_source([config] if config else [])
    if source_uri is None:
        source_uri, source_digest = _git_source(materials)
    metadata = predicate.get("metadata", {})
    return ProvenanceSummary(
        statement_type=statement["_type"],
        predicate_type=statement["predicateType"],
        slsa_version="0.2",
        subjects=subjects,
        builder_id=predicate["builder"]["id"],
        build_type=predicate["buildType"],
        source_uri=source_uri,
        source_digest=source_digest,
        invocation_id=metadata.get("buildInvocationId"),
        started_on=metadata.get("buildStartedOn"),
        finished_on=metadata.get("buildFinishedOn"),
        dependencies=tuple(materials),
        signature_keyids=keyids,
        statement=statement,
    )
