"""Build an evidence bundle: one self-contained, deterministic file an auditor verifies offline.

The bundle holds the query, the answer, every event the answer cites with its RFC 6962 inclusion
proof against one signed checkpoint, the consistency proof from that checkpoint to the latest
one, the attestations the answer relies on (OCI manifest and content, byte for byte), and the
public keys with the ``key.created`` events that announced them. docs/evidence-bundle.md is the
format; :mod:`immutrail.audit.verify` checks it, and runs on every bundle before it is returned.

The same ledger state and query give the same bytes: there is no creation time, no random id, and
the JSON is RFC 8785 canonical. Someone with read access to the ledger can rebuild a bundle
``--as-of`` its checkpoint and compare bytes, which shows nothing relevant was left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from immutrail.artifacts.errors import ArtifactError
from immutrail.artifacts.store import Store
from immutrail.crypto.canonical import canonical_json, parse_strict_json
from immutrail.crypto.errors import CryptoError
from immutrail.ledger.errors import LedgerInputError
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.merkle import leaf_hash
from immutrail.ledger.storage.interface import StoredCheckpoint

from . import vocabulary as v
from . import wire
from .errors import AuditError, AuditInputError
from .queries import Answer, Query, run_query
from .reading import LedgerSource
from .source import Indexed
from .verify import BundleReport, verify_bundle


@dataclass(frozen=True)
class BuiltBundle:
    data: bytes
    """The bundle's bytes (canonical JSON, no trailing newline)."""
    answer: Answer
    checkpoint_size: int
    latest_size: int
    signed_checkpoint: bool
    """Whether a new checkpoint was signed for it (the ledger had grown past the last one)."""
    report: BundleReport
    """The verification every bundle passes before it is returned."""

    @property
    def events(self) -> int:
        return self.report.events

    @property
    def attestations(self) -> int:
        return self.report.attestations


def choose_checkpoints(
    ledger: Ledger, as_of: int | None
) -> tuple[StoredCheckpoint, StoredCheckpoint, bool]:
    """The checkpoint the answer is as of, the latest one, and whether one was signed now."""
    stored = ledger.checkpoints()
    signed = False
    if as_of is not None:
        anchor = next((c for c in stored if c.size == as_of), None)
        if anchor is None:
            sizes = ", ".join(str(c.size) for c in stored[-5:]) or "none"
            raise AuditInputError(
                f"no checkpoint of size {as_of} is stored (the latest: {sizes}); "
                "--as-of names the size of a checkpoint the ledger signed"
            )
        return anchor, stored[-1], False
    latest = stored[-1] if stored else None
    if latest is None or latest.size < ledger.head().size:
        try:
            latest = ledger.checkpoint()
            signed = True
        except LedgerInputError as exc:
            if latest is None:
                raise AuditInputError(
                    "the ledger has no checkpoint and this home cannot sign one "
                    f"({exc}); run `immutrail ledger checkpoint` where the ledger key is"
                ) from exc
    return latest, latest, signed


def build_bundle(
    ledger: Ledger, store: Store | None, query: Query, *, as_of: int | None = None
) -> BuiltBundle:
    """The evidence bundle answering ``query`` as of a checkpoint (``as_of``, else the latest,
    signed now when the ledger has grown past it). AuditError when the ledger or the store
    cannot supply what the answer cites; nothing is written but that checkpoint."""
    anchor, latest, signed = choose_checkpoints(ledger, as_of)
    source = LedgerSource(ledger, store, anchor.size)
    answer = run_query(query, source)
    attestations = [_attestation(source, store, index) for index in sorted(answer.attested)]
    keys = _keys(source, answer, attestations)
    indices = sorted(set(answer.cited) | {i for k in keys for i in _key_indices(k)})
    events = [_event(ledger, source, index, anchor) for index in indices]
    consistency = ledger.consistency_proof(anchor.size, latest.size)
    if consistency.new_root != latest.root or consistency.old_root != anchor.root:
        raise AuditError("the stored checkpoints disagree with the tree; run `ledger verify`")
    document: dict[str, Any] = {
        "format": wire.FORMAT,
        "query": query.to_json(),
        "ledger": {"origin": ledger.origin, "vkey": ledger.vkey},
        "checkpoint": anchor.note,
        "latest": {
            "checkpoint": latest.note,
            "consistency": [wire.b64(h) for h in consistency.proof],
        },
        "events": events,
        "keys": keys,
        "attestations": [
            {"index": index, "manifest": wire.b64(manifest), "content": wire.b64(content)}
            for index, manifest, content in attestations
        ],
        "answer": answer.data,
    }
    data = canonical_json(document)
    if len(data) > wire.MAX_BUNDLE_BYTES:
        raise AuditInputError(
            f"the bundle would be {len(data)} bytes, over the {wire.MAX_BUNDLE_BYTES}-byte "
            "limit; narrow the query"
        )
    report = verify_bundle(data, vkey=ledger.vkey)
    if not report.ok:  # the ledger or the store disagrees with itself: never hand that out
        first = report.problems[0]
        raise AuditError(
            f"the bundle built from this ledger does not verify ({first}); "
            "run `immutrail ledger verify` and `immutrail artifact verify`"
        )
    return BuiltBundle(data, answer, anchor.size, latest.size, signed, report)


def _event(
    ledger: Ledger, source: LedgerSource, index: int, anchor: StoredCheckpoint
) -> dict[str, Any]:
    row = ledger.entry(index)
    item = source.at_index(index)
    assert item is not None  # the index is below the anchor's size, which the source covers
    proof = ledger.inclusion_proof(index, anchor.size)
    if proof.root != anchor.root or proof.leaf_hash != leaf_hash(row.data):
        raise AuditError(
            f"ledger entry {index} does not lead to the checkpoint of size {anchor.size}; "
            "run `ledger verify`"
        )
    return {
        "index": index,
        "event": item.event.to_dict(),
        "inclusion": [wire.b64(h) for h in proof.proof],
    }


def _attestation(source: LedgerSource, store: Store | None, index: int) -> tuple[int, bytes, bytes]:
    item = source.at_index(index)
    if item is None or item.type != v.ATTACHED:
        raise AuditError(f"ledger entry {index} is not an artifact.attached event")
    if store is None:
        raise AuditError("the answer relies on attestations, and this home has no image store")
    artifact, blob = item.text("artifact"), item.text("blob")
    if artifact is None or blob is None:
        raise AuditError(f"ledger entry {index} does not name its artifact and content")
    try:
        manifest = store.read_blob(artifact)
        content = store.read_blob(blob, wire.MAX_ATTESTATION_BYTES)
    except ArtifactError as exc:
        raise AuditError(
            f"the attestation attached at ledger index {index} cannot be read from the "
            f"image store: {exc}"
        ) from exc
    return index, manifest, content


def _signer_keyids(content: bytes) -> list[str]:
    try:
        envelope = parse_strict_json(content)
    except CryptoError:
        return []
    signatures = envelope.get("signatures") if isinstance(envelope, dict) else None
    return [
        s["keyid"]
        for s in (signatures if isinstance(signatures, list) else [])
        if isinstance(s, dict) and isinstance(s.get("keyid"), str)
    ]


def _keys(
    source: LedgerSource, answer: Answer, attestations: list[tuple[int, bytes, bytes]]
) -> list[dict[str, Any]]:
    """The announcement (and any revocation) of every key that signed a cited event or a
    carried attestation, as the ledger recorded them before the checkpoint."""
    wanted: set[str] = set()
    for index in answer.cited:
        item = source.at_index(index)
        if item is not None and item.event.signature is not None:
            wanted.add(item.event.signature["keyid"])
    for index, _, content in attestations:
        item = source.at_index(index)
        if item is not None and item.text("artifact_type") == v.IN_TOTO_PAYLOAD_TYPE:
            wanted.update(_signer_keyids(content))
    keys: dict[str, dict[str, Any]] = {}
    # A key announcement is itself signed by whoever announced it: follow those signers too,
    # back to the first admin's key (announced unsigned, at the bootstrap).
    while wanted:
        keyid = wanted.pop()
        if keyid in keys:
            continue
        history = source.about(f"key:{keyid}")
        created = next((e for e in history if e.type == v.KEY_CREATED), None)
        if created is None:
            continue  # an unannounced signer: the verification below says which one
        revoked = next(
            (e for e in history if e.type == v.KEY_REVOKED and e.index > created.index), None
        )
        keys[keyid] = _key_entry(keyid, created, revoked)
        for announcement in (created, revoked):
            if announcement is not None and announcement.event.signature is not None:
                wanted.add(announcement.event.signature["keyid"])
    return sorted(keys.values(), key=lambda k: int(k["index"]))


def _key_entry(keyid: str, created: Indexed, revoked: Indexed | None) -> dict[str, Any]:
    return {
        "keyid": keyid,
        "public_key": created.payload.get("public_key"),
        "index": created.index,
        "revoked_index": None if revoked is None else revoked.index,
    }


def _key_indices(key: dict[str, Any]) -> list[int]:
    found = [int(key["index"])]
    if key["revoked_index"] is not None:
        found.append(int(key["revoked_index"]))
    return found
