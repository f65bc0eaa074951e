"""Keep an instance's output in the store before the instance is destroyed.

Instances are ephemeral; their logs must not be. The two streams go into one JSON document
(media type :data:`LOGS_MEDIA_TYPE`) attached to the instance's image as an OCI referrer, so that
an evidence bundle of the image carries the logs of every instance that ran it. One document
rather than two blobs because the store's artifacts hold one blob each, and the streams belong
together. The ledger gets ``artifact.attached`` (subject: the image) and ``instance.logs.kept``
(subject: the instance id) naming the SHA-256 and size of each stream.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson

from immutrail.artifacts.attach import attach_and_record
from immutrail.artifacts.digests import sha256_digest
from immutrail.artifacts.store import Store
from immutrail.ledger.event import Event
from immutrail.ledger.ledger import Ledger

from .runtime import Instance, Logs

LOGS_ARTIFACT_TYPE = "application/vnd.immutrail.instance-logs.v1+json"
LOGS_MEDIA_TYPE = LOGS_ARTIFACT_TYPE
EVENT_LOGS_KEPT = "instance.logs.kept"


@dataclass(frozen=True)
class KeptLogs:
    instance: str
    image: str
    artifact: str
    """The digest of the referrer manifest that holds the logs."""
    ledger_index: int


def logs_document(instance: Instance, logs: Logs) -> bytes:
    """The attached document: who produced the output, and each stream in base64."""
    return orjson.dumps(
        {
            "instance": instance.id,
            "environment": instance.environment,
            "service": instance.service,
            "image": instance.digest,
            "created_at": instance.created_at,
            "stdout": base64.b64encode(logs.stdout).decode(),
            "stderr": base64.b64encode(logs.stderr).decode(),
        },
        option=orjson.OPT_SORT_KEYS,
    )


def keep_logs(store: Store, ledger: Ledger, actor: str, instance: Instance, logs: Logs) -> KeptLogs:
    """Attach ``logs`` to the instance's image and record ``instance.logs.kept``."""
    descriptor = attach_and_record(
        store,
        ledger,
        actor,
        instance.digest,
        LOGS_ARTIFACT_TYPE,
        logs_document(instance, logs),
        LOGS_MEDIA_TYPE,
        {"dev.immutrail.instance": instance.id},
    )
    event = Event.create(
        EVENT_LOGS_KEPT,
        actor,
        instance.id,
        {
            "image": instance.digest,
            "artifact": descriptor.digest,
            "environment": instance.environment,
            "service": instance.service,
            "stdout": {"digest": sha256_digest(logs.stdout), "size": len(logs.stdout)},
            "stderr": {"digest": sha256_digest(logs.stderr), "size": len(logs.stderr)},
        },
    )
    index = ledger.append(event).index
    return KeptLogs(instance.id, instance.digest, descriptor.digest, index)
