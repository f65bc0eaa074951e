"""Attach a document (SBOM, provenance, scan result) to an image and record that in the ledger.

The store's :meth:`~immutrail.artifacts.store.Store.attach` knows nothing of the ledger; this is
the one place both happen, in the order that keeps them consistent: the artifact's blobs are in
the store, then the ``artifact.attached`` event is appended, then index.json lists the artifact.
"""

from __future__ import annotations

from collections.abc import Mapping

from immutrail.ledger.event import Event
from immutrail.ledger.ledger import Ledger

from .digests import sha256_digest
from .oci import Descriptor
from .store import Store

EVENT_ATTACHED = "artifact.attached"


def attach_and_record(
    store: Store,
    ledger: Ledger,
    actor: str,
    subject_digest: str,
    artifact_type: str,
    data: bytes,
    media_type: str,
    annotations: Mapping[str, str] | None = None,
) -> Descriptor:
    """Store ``data`` as a referrer of ``subject_digest``; the event's subject is the image."""
    blob_digest = sha256_digest(data)

    def record(manifest: Descriptor) -> None:
        ledger.append(
            Event.create(
                EVENT_ATTACHED,
                actor,
                subject_digest,
                {
                    "artifact": manifest.digest,
                    "artifact_type": artifact_type,
                    "media_type": media_type,
                    "blob": blob_digest,
                    "size": len(data),
                },
            )
        )

    return store.attach(subject_digest, artifact_type, data, media_type, annotations, record)
