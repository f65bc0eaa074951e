"""Scan an image and record the result: the one place the scan touches store and ledger.

``scan_image`` reads everything first (the image, its SBOM, the database or the report) and
builds the predicate; only then does it write: a generated SBOM (for an imported image that
came without one) attached as a referrer, the signed vulnerability attestation, and the
``scan.completed`` ledger event. ``import_database`` wraps a database import with its
``vulndb.imported`` ledger event, appended inside the import's transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from immutrail import __version__
from immutrail.artifacts.attach import attach_and_record
from immutrail.artifacts.attestations import SBOM_TYPE
from immutrail.artifacts.oci import Descriptor
from immutrail.artifacts.rootfs import RootFS
from immutrail.artifacts.sbom import generate_sbom
from immutrail.artifacts.statements import attest
from immutrail.artifacts.store import Store
from immutrail.crypto.canonical import canonical_json, parse_strict_json
from immutrail.crypto.errors import CanonicalizationError
from immutrail.ledger.event import Event, format_time
from immutrail.ledger.ledger import Ledger

from .attestation import VULNS_PREDICATE, DbInfo, build_predicate, scan_summary
from .errors import SbomError, ScanInputError
from .matcher import Matcher, components_from_sbom
from .reports import ImageIdentity, read_report
from .results import ScanOutcome
from .vulndb import ImportObserver, ImportResult, VulnDb

EVENT_SCAN_COMPLETED = "scan.completed"
EVENT_VULNDB_IMPORTED = "vulndb.imported"
VULNDB_URI = "immutrail:vulndb:osv"
MAX_SBOM_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ScanRun:
    digest: str
    outcome: ScanOutcome
    predicate: Mapping[str, Any]
    summary: Mapping[str, Any]
    attestation: str
    sbom: str | None
    sbom_generated: bool
    ledger_index: int


def _now() -> str:
    return format_time(datetime.now(UTC))


def image_identity(store: Store, digest: str) -> ImageIdentity:
    _, blobs = store.image_blobs(digest)
    config = store.get_json(blobs[0])
    rootfs = config.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, Mapping) else None
    return ImageIdentity(digest, blobs[0].digest, tuple(str(d) for d in diff_ids or ()))


def _stored_sbom(store: Store, digest: str) -> tuple[dict[str, Any], str] | None:
    """The first CycloneDX SBOM attached to the image, and its blob digest."""
    for descriptor in store.referrers(digest, SBOM_TYPE):
        manifest = store.get_manifest(descriptor.digest)
        layers = manifest.get("layers") or []
        if not layers:
            continue
        blob = Descriptor.from_dict(layers[0], f"layer of {descriptor.digest}")
        try:
            document = parse_strict_json(store.read_blob(blob.digest, MAX_SBOM_BYTES))
        except CanonicalizationError as exc:
            raise SbomError(f"the SBOM {blob.digest} attached to {digest}: {exc}") from exc
        if not isinstance(document, dict):
            raise SbomError(f"the SBOM {blob.digest} attached to {digest} is not a JSON object")
        return document, blob.digest
    return None


def _generated_sbom(store: Store, digest: str, name: str) -> dict[str, Any]:
    """An SBOM made from the image's layers (verified first), timed by the image's config."""
    blobs = store.verify(digest)
    config = store.get_json(blobs[0])
    created = config.get("created")
    try:
        moment = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError(created)
    except ValueError:
        moment = datetime.fromtimestamp(0, UTC)  # no usable time: a fixed one, reproducibly
    rootfs = RootFS.from_layers([store.blob_path(d.digest) for d in blobs[1:]])
    return generate_sbom(rootfs, name, digest, timestamp=moment)


def scan_image(
    store: Store,
    ledger: Ledger,
    home: Path,
    ref: str,
    *,
    actor: str,
    report: Path | None = None,
) -> ScanRun:
    """Scan the image ``ref`` (digest or tag) with the home's database, or take ``report``."""
    record = store.resolve(ref)
    if record.descriptor.artifact_type is not None:
        raise ScanInputError(f"{ref} is an attached artifact, not an image")
    digest = record.digest
    name = record.tags[0] if record.tags else digest
    started = _now()
    sbom_digest: str | None = None
    new_sbom: dict[str, Any] | None = None
    if report is not None:
        read = read_report(report, image_identity(store, digest))
        outcome = read.outcome
        db = DbInfo(
            f"immutrail:report:{read.tool}", read.sha256, read.db_updated or read.created or started
        )
        extra: dict[str, Any] = {
            "report": {
                "path": report.name,
                "sha256": read.sha256,
                "tool_version": read.tool_version,
                "db_version": read.db_version,
                "created": read.created,
                "image_match": read.image_match,
            }
        }
        version = read.tool_version
    else:
        with VulnDb.open(home) as vulndb:
            stored = _stored_sbom(store, digest)
            if stored is None:
                new_sbom = _generated_sbom(store, digest, name)
                sbom = new_sbom
            else:
                sbom, sbom_digest = stored
            components, skipped = components_from_sbom(sbom)
            with vulndb.reading():
                snapshot = vulndb.snapshot()
                outcome = Matcher(vulndb).scan(components, skipped)
        db = DbInfo(VULNDB_URI, snapshot.digest, snapshot.last_update or started)
        extra = {"records": snapshot.records}
        version = __version__
    finished = _now()
    generated = new_sbom is not None
    if new_sbom is not None:
        sbom_bytes = canonical_json(new_sbom)
        attach_and_record(
            store,
            ledger,
            actor,
            digest,
            SBOM_TYPE,
            sbom_bytes,
            SBOM_TYPE,
            {"org.opencontainers.image.created": str(new_sbom["metadata"]["timestamp"])},
        )
        sbom_digest = "sha256:" + hashlib.sha256(sbom_bytes).hexdigest()
    if sbom_digest is not None:
        extra["sbom"] = sbom_digest
    predicate = build_predicate(
        outcome, scanner_version=version, db=db, started=started, finished=finished, extra=extra
    )
    summary = scan_summary(predicate)
    attached = attest(store, ledger, home, actor, digest, VULNS_PREDICATE, predicate)
    appended = ledger.append(
        Event.create(
            EVENT_SCAN_COMPLETED,
            actor,
            digest,
            {
                "counts": summary["counts"],
                "vulnerabilities": summary["vulnerabilities"],
                "findings": summary["findings"],
                "db": db.version,
                "attestation": attached.digest,
                "source": outcome.source,
                "withdrawn": summary["withdrawn"],
                "not_evaluated": summary["not_evaluated"],
            },
        )
    )
    return ScanRun(
        digest,
        outcome,
        predicate,
        summary,
        attached.digest,
        sbom_digest,
        generated,
        appended.index,
    )


def import_database(
    home: Path,
    ledger: Ledger,
    paths: Sequence[Path],
    *,
    actor: str,
    skip_invalid: bool = False,
    origin: Sequence[str] = (),
    observer: ImportObserver | None = None,
) -> tuple[ImportResult, int]:
    """Import OSV records and record ``vulndb.imported`` in the same transaction."""
    appended: list[int] = []

    def record(result: ImportResult) -> None:
        assert result.snapshot is not None
        payload = {
            key: value for key, value in result.to_dict().items() if key not in ("skipped_records",)
        }
        payload["skipped_records"] = [
            {"source": s.source, "reason": s.reason[:200]} for s in result.skipped[:50]
        ]
        if origin:
            payload["downloaded_from"] = list(origin)
        appended.append(
            ledger.append(
                Event.create(EVENT_VULNDB_IMPORTED, actor, result.snapshot.digest, payload)
            ).index
        )

    with VulnDb.create(home) as vulndb:
        result = vulndb.import_paths(
            paths, skip_invalid=skip_invalid, before_commit=record, observer=observer
        )
    return result, appended[0]
