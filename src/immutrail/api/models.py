"""The API's wire models (pydantic v2): what the OpenAPI document promises, field by field.

Hashes are base64 (as in checkpoints and ``immutrail ledger prove``), times RFC 3339 UTC, digests
``sha256:<hex>``. Answers of the audit queries are documented in docs/audit.md and passed through
as JSON objects.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from immutrail import names
from immutrail.ledger.event import MAX_ENTRY_BYTES, Event
from immutrail.ledger.proofs import b64
from immutrail.ledger.storage.interface import EntryRow

EVENT_TYPE_PATTERN = r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$"
UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
SUBJECT_PATTERN = r"^[^\x00-\x1f\x7f]+$"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
ENVIRONMENT_PATTERN = f"^{names.ENVIRONMENT_GRAMMAR}$"
RFC3339_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
ENTRY_REF_PATTERN = r"^([0-9]{1,18}|" + UUID_PATTERN[1:-1] + r")$"


class Signature(BaseModel):
    keyid: str = Field(description="SHA-256 of the signer's public key, hex.")
    sig: str = Field(description="The DSSE signature, base64.")


class EventOut(BaseModel):
    """A ledger event (docs/ledger.md); ``payload.auth`` says how its actor authenticated."""

    id: str
    type: str
    actor: str
    subject: str
    time: str
    payload: dict[str, Any]
    signature: Signature | None = None

    @classmethod
    def of(cls, event: Event) -> EventOut:
        return cls.model_validate(event.to_dict())


class EntryOut(BaseModel):
    index: int = Field(ge=0)
    leaf_hash: str = Field(description="RFC 6962 leaf hash of the entry bytes, base64.")
    event: EventOut

    @classmethod
    def of(cls, row: EntryRow, event: Event) -> EntryOut:
        return cls(index=row.index, leaf_hash=b64(row.leaf_hash), event=EventOut.of(event))


class EntryPage(BaseModel):
    entries: list[EntryOut]
    next_start: int | None = Field(
        description="Pass as `start` for the next page; null when this page is the last."
    )
    size: int = Field(ge=0, description="The ledger's size when the page was read.")


class AppendIn(BaseModel):
    """An event to append. The actor is the authenticated caller and the time the server's."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(pattern=EVENT_TYPE_PATTERN, max_length=128, examples=["release.noted"])
    subject: str = Field(pattern=SUBJECT_PATTERN, min_length=1, max_length=1024)
    payload: dict[str, Any] = Field(
        default_factory=dict,
        description=f"A JSON object without `auth` (the server sets it); the whole event must "
        f"fit in {MAX_ENTRY_BYTES} bytes of canonical JSON.",
        json_schema_extra={"not": {"required": ["auth"]}},
    )
    id: str | None = Field(
        default=None,
        pattern=UUID_PATTERN,
        description="A UUID for the event, so a retried append is refused (409) instead of "
        "recorded twice [default: a new UUIDv7].",
    )


class Appended(BaseModel):
    index: int = Field(ge=0)
    id: str
    leaf_hash: str
    event: EventOut


class InclusionProofOut(BaseModel):
    """RFC 6962 audit path from an entry to the root of the tree of ``size`` entries."""

    index: int = Field(ge=0)
    size: int = Field(ge=1)
    leaf_hash: str
    root: str
    proof: list[str]


class ConsistencyProofOut(BaseModel):
    """RFC 6962 proof that the tree of ``old_size`` entries is a prefix of ``new_size``."""

    old_size: int = Field(ge=0)
    new_size: int = Field(ge=0)
    old_root: str
    new_root: str
    proof: list[str]


class CheckpointOut(BaseModel):
    origin: str
    size: int = Field(ge=0)
    root: str
    note: str = Field(description="The C2SP signed note, verbatim (checkpoint and signature).")
    vkey: str = Field(description="The ledger's verifier key (signed-note name+hash+key).")
    created: str


class GrantOut(BaseModel):
    role: str
    environments: str | list[str] = Field(description='"*" or a list of environments.')


class AllowedOut(BaseModel):
    action: str
    environments: str | list[str] | None = Field(
        description='null for a global action; "*" or a list for an environment action.'
    )


class WhoAmI(BaseModel):
    principal: str
    method: str
    token_id: str | None
    key_id: str | None
    roles: list[GrantOut]
    scopes: list[str] | None
    token_expires: str | None
    allowed: list[AllowedOut]


class ImageSummary(BaseModel):
    digest: str
    tags: list[str]
    media_type: str
    created: str | None
    revision: str | None


class ImageList(BaseModel):
    images: list[ImageSummary]


class BlobOut(BaseModel):
    digest: str
    size: int
    media_type: str


class AttestationOut(BaseModel):
    digest: str = Field(description="The attestation's OCI manifest (its `subject` is the image).")
    artifact_type: str | None
    annotations: dict[str, str]
    content: BlobOut = Field(description="The attested document (download it by `digest`).")


class ImageDetail(ImageSummary):
    annotations: dict[str, str]
    config: BlobOut
    layers: list[BlobOut]
    attestations: list[AttestationOut]


class EnvironmentSummary(BaseModel):
    name: str
    services: list[str]


class EnvironmentList(BaseModel):
    environments: list[EnvironmentSummary]


class DesiredOut(BaseModel):
    digest: str
    image: str | None
    promoted_by: str
    promoted_at: str
    ledger_index: int
    policy_digest: str
    override: bool
    previous: str | None
    rolled_back_by: str | None


class DeclarationOut(BaseModel):
    spec: dict[str, Any]
    declared_by: str
    declared_at: str
    ledger_index: int


class ServiceOut(BaseModel):
    service: str
    desired: DesiredOut | None = Field(description="The digest that may run there (the gate).")
    declaration: DeclarationOut | None


class EnvironmentOut(BaseModel):
    name: str
    services: list[ServiceOut]


class Stamp(BaseModel):
    index: int
    time: str
    actor: str


class DeploymentEnd(Stamp):
    type: str
    reason: str | None


class DeploymentOut(BaseModel):
    deployment: str
    service: str
    digest: str | None
    strategy: str | None
    reason: str | None
    started: Stamp
    end: DeploymentEnd | None = Field(description="null while it runs (or if interrupted).")


class DeploymentList(BaseModel):
    environment: str
    deployments: list[DeploymentOut]


class AuditAnswer(BaseModel):
    query: dict[str, Any]
    answer: dict[str, Any] = Field(description="As `immutrail audit … --format json` prints it.")
