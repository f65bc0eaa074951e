"""What every fresh build carries: its CycloneDX SBOM and its signed SLSA provenance.

Both are attached to the image as OCI referrers and recorded as ``artifact.attached`` events. The
provenance is a DSSE envelope signed with the home's builder key (``builder.key``, Ed25519,
created on first use and announced in the ledger as ``key.created`` so that a verifier can find
the public key from the ledger alone).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from immutrail.crypto.canonical import canonical_json
from immutrail.crypto.dsse import sign_envelope
from immutrail.crypto.keys import (
    PrivateKey,
    generate_ed25519,
    key_id,
    load_private_key,
    public_key_pem,
    save_private_key,
)
from immutrail.ledger.event import Event
from immutrail.ledger.ledger import Ledger

from .attach import attach_and_record
from .provenance import IN_TOTO_PAYLOAD_TYPE, build_provenance
from .rootfs import RootFS
from .sbom import generate_sbom
from .store import Store

BUILDER_KEY_FILE = "builder.key"
SBOM_TYPE = "application/vnd.cyclonedx+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
EVENT_KEY_CREATED = "key.created"


@dataclass(frozen=True)
class BuildFacts:
    """What the build knew that the attestations state."""

    digest: str
    name: str
    commit: str
    branch: str | None
    repository: str
    definition_path: str
    dirty: bool
    base: str
    source_epoch: int
    input_files: dict[str, str]
    started: datetime
    finished: datetime


@dataclass(frozen=True)
class Attached:
    sbom: str
    provenance: str
    builder_key_id: str


def builder_key(home: Path, ledger: Ledger, actor: str) -> PrivateKey:
    """The home's builder key; made (and its public half recorded) the first time it is needed."""
    path = home / BUILDER_KEY_FILE
    if path.exists():
        return load_private_key(path)
    key = generate_ed25519()
    save_private_key(key, path)
    public = key.public_key()
    ledger.append(
        Event.create(
            EVENT_KEY_CREATED,
            actor,
            f"key:{key_id(public)}",
            {"purpose": "builder", "algorithm": "ed25519", "public_key": public_key_pem(public)},
        )
    )
    return key


def builder_id(ledger: Ledger) -> str:
    return f"https://{ledger.origin}/builder"


def attach_build_attestations(
    facts: BuildFacts,
    rootfs: RootFS,
    store: Store,
    ledger: Ledger,
    home: Path,
    actor: str,
) -> Attached:
    """Attach the SBOM of ``rootfs`` (the image's merged tree) and the signed provenance."""
    key = builder_key(home, ledger, actor)
    sbom = generate_sbom(
        rootfs,
        facts.name,
        facts.digest,
        timestamp=datetime.fromtimestamp(facts.source_epoch, UTC),
    )
    sbom_manifest = attach_and_record(
        store,
        ledger,
        actor,
        facts.digest,
        SBOM_TYPE,
        canonical_json(sbom),
        SBOM_TYPE,
        {"org.opencontainers.image.created": sbom["metadata"]["timestamp"]},
    )
    statement = build_provenance(
        facts.name,
        facts.digest.removeprefix("sha256:"),
        builder_id=builder_id(ledger),
        definition_path=facts.definition_path,
        repo_uri=facts.repository,
        commit=facts.commit,
        source_ref=f"refs/heads/{facts.branch}" if facts.branch else None,
        base_image_digest=None if facts.base == "scratch" else facts.base,
        input_files=facts.input_files,
        started_on=facts.started,
        finished_on=facts.finished,
        invocation_id=str(uuid.uuid4()),
        dirty=facts.dirty,
    )
    # build_provenance has just validated it strictly: sign_provenance would do it again
    envelope = sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, canonical_json(statement))
    provenance_manifest = attach_and_record(
        store,
        ledger,
        actor,
        facts.digest,
        IN_TOTO_PAYLOAD_TYPE,
        canonical_json(envelope),
        DSSE_MEDIA_TYPE,
        {"in-toto.io/predicate-type": SLSA_PROVENANCE_V1},
    )
    return Attached(sbom_manifest.digest, provenance_manifest.digest, key_id(key.public_key()))
