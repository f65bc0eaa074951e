"""Where the queries read events from: a list (a bundle's events) or the ledger (see reading.py).

The queries only ever ask these five questions, so the same query code answers from the whole
ledger and from the few events a bundle carries, and an offline verifier re-derives an answer
with exactly the code that stated it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from immutrail.ledger.event import Event, time_us

from .vocabulary import ATTACHED, IN_TOTO_PAYLOAD_TYPE, PREDICATE_ANNOTATION


@dataclass(frozen=True, slots=True)
class Indexed:
    """An event and its ledger index (which orders it); ``us`` is its time in microseconds."""

    index: int
    event: Event
    us: int

    @classmethod
    def of(cls, index: int, event: Event) -> Indexed:
        return cls(index, event, time_us(event.time))

    @property
    def type(self) -> str:
        return self.event.type

    @property
    def payload(self) -> Mapping[str, Any]:
        return self.event.payload

    def text(self, key: str) -> str | None:
        """A payload field that must be a string to count (anything else reads as absent)."""
        value = self.event.payload.get(key)
        return value if isinstance(value, str) else None


class EventSource(Protocol):
    """The ledger as the queries see it: the first ``size`` entries, nothing after them."""

    @property
    def size(self) -> int:
        """The tree size the answer is as of; every event read has a smaller index."""

    def of_type(self, kind: str, mentions: str | None = None) -> list[Indexed]:
        """Every event of this type, in ledger order.

        ``mentions`` is a hint, never a filter the queries rely on: a source may leave out the
        events whose canonical bytes do not contain it (the queries check the field anyway).
        """

    def about(self, subject: str) -> list[Indexed]:
        """Every event with this subject, in ledger order."""

    def at_index(self, index: int) -> Indexed | None:
        """The event at this index, if it is in the source."""

    def window(self, since_us: int, until_us: int) -> list[Indexed]:
        """Every event timed within ``[since_us, until_us]``, in ledger order."""

    def artifact_kind(self, artifact: str) -> str | None:
        """What an attached artifact is (a predicate type, else its artifact type), by the digest
        of its OCI manifest; None when the manifest is not at hand."""


def member(name: str, value: str) -> str:
    """How ``"name": value`` is spelled in a stored (canonical, RFC 8785) entry: the text a
    source may look for in the raw bytes before it parses an entry."""
    return f"{json.dumps(name)}:{json.dumps(value, ensure_ascii=False)}"


def manifest_kind(manifest: Mapping[str, Any]) -> str | None:
    """The kind of an attached artifact from its OCI manifest: an in-toto statement's predicate
    type (its ``in-toto.io/predicate-type`` annotation), else the manifest's artifact type."""
    artifact_type = manifest.get("artifactType")
    annotations = manifest.get("annotations")
    if artifact_type == IN_TOTO_PAYLOAD_TYPE and isinstance(annotations, Mapping):
        kind = annotations.get(PREDICATE_ANNOTATION)
        return kind if isinstance(kind, str) else None
    return artifact_type if isinstance(artifact_type, str) else None


def parse_manifest(data: bytes) -> dict[str, Any] | None:
    """An OCI manifest's JSON object, or None when the bytes are not one."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):  # json recurses once per nesting level
        return None
    return value if isinstance(value, dict) else None


class ListSource:
    """A source over events held in memory (a bundle's): the pure form of the queries' input.

    ``manifests`` maps an attached artifact's manifest digest to the manifest's bytes; only
    those kinds are known, which is all the queries need from a bundle (the bundle carries the
    manifest of every attestation its answer names).
    """

    def __init__(
        self, events: Iterable[Indexed], size: int, manifests: Mapping[str, bytes] | None = None
    ) -> None:
        self._events = sorted(events, key=lambda e: e.index)
        self._size = size
        self._by_index = {e.index: e for e in self._events}
        self._by_type: dict[str, list[Indexed]] = {}
        self._by_subject: dict[str, list[Indexed]] = {}
        for item in self._events:
            self._by_type.setdefault(item.type, []).append(item)
            self._by_subject.setdefault(item.event.subject, []).append(item)
        self._kinds: dict[str, str | None] = {}
        for digest, data in (manifests or {}).items():
            manifest = parse_manifest(data)
            self._kinds[digest] = None if manifest is None else manifest_kind(manifest)

    @property
    def size(self) -> int:
        return self._size

    def of_type(self, kind: str, mentions: str | None = None) -> list[Indexed]:
        del mentions  # a hint for sources that must read every entry; these are in memory
        return list(self._by_type.get(kind, ()))

    def about(self, subject: str) -> list[Indexed]:
        return list(self._by_subject.get(subject, ()))

    def at_index(self, index: int) -> Indexed | None:
        return self._by_index.get(index)

    def window(self, since_us: int, until_us: int) -> list[Indexed]:
        return [e for e in self._events if since_us <= e.us <= until_us]

    def artifact_kind(self, artifact: str) -> str | None:
        return self._kinds.get(artifact)


def attachments(events: Iterable[Indexed]) -> dict[str, Indexed]:
    """``artifact.attached`` events by the digest of the artifact manifest they record."""
    found: dict[str, Indexed] = {}
    for item in events:
        artifact = item.text("artifact")
        if item.type == ATTACHED and artifact is not None:
            found.setdefault(artifact, item)
    return found
