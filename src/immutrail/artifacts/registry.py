"""Push images to an OCI registry and pull them back, with their attestations, verified.

``push`` sends what the registry lacks (a ``HEAD`` per blob, then a ``POST`` and one ``PUT``, or
``PATCH`` chunks for large blobs, streamed from the store's verifying reader), then the manifest
by digest (and by tag), then every referrer: each attached artifact whose ``subject`` is the image.
A registry with the referrers API indexes those itself (it says so with ``OCI-Subject``); for one
without (distribution 2.8, Debian's ``docker-registry``) the client keeps the tag-schema fallback,
an OCI index under the tag ``sha256-<hex of the subject>``, merged with what is already there.

``pull`` fetches the manifest (by digest, or by tag, recording the digest it resolved), checks
its bytes against the digest, fetches every blob into the store's staging area while hashing it,
then the referrers (API or fallback tag), each verified the same way and each required to name
the image as its subject. Only when everything matched are the blobs published, the
``artifact.pulled`` event appended, and index.json updated, once, naming the image and all its
referrers together (``Store.commit_many``); any mismatch leaves the store as it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from immutrail.ledger.event import Event
from immutrail.ledger.ledger import Ledger

from . import oci
from .digests import hex_of, sha256_digest
from .errors import ArtifactInputError
from .oci import Descriptor
from .registry_client import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    Credentials,
    Fetched,
    RegistryAuthError,
    RegistryClient,
    RegistryContentError,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnreachableError,
)
from .registry_ref import Reference
from .store import READ_CHUNK, Stage, Store

__all__ = [
    "EVENT_PULLED",
    "EVENT_PUSHED",
    "Credentials",
    "PullResult",
    "PushResult",
    "Reference",
    "RegistryAuthError",
    "RegistryContentError",
    "RegistryError",
    "RegistryNotFoundError",
    "RegistryUnreachableError",
    "TransferObserver",
    "pull",
    "push",
    "referrers_tag",
]

log = logging.getLogger(__name__)

EVENT_PUSHED = "artifact.pushed"
EVENT_PULLED = "artifact.pulled"
DEFAULT_CHUNK_SIZE = 32 * 1024 * 1024
"""Blobs up to this size go in one ``PUT``; larger ones in ``PATCH`` chunks of this size."""
MAX_REFERRERS = 1000
MAX_INDEX_DEPTH = 2
METHOD_API = "referrers-api"
METHOD_TAG = "tag-schema"


class TransferObserver(Protocol):
    """Progress of a push or pull, one blob at a time; the CLI draws it."""

    def blob_started(self, descriptor: Descriptor, index: int, total: int) -> None: ...

    def blob_finished(self, descriptor: Descriptor, transferred: bool) -> None: ...


class _Quiet:
    def blob_started(self, descriptor: Descriptor, index: int, total: int) -> None:
        log.debug("blob %d/%d: %s", index + 1, total, descriptor.digest)

    def blob_finished(self, descriptor: Descriptor, transferred: bool) -> None:
        log.debug("%s %s", "sent" if transferred else "present", descriptor.digest)


def referrers_tag(digest: str) -> str:
    """The tag-schema fallback's tag for ``digest``: ``sha256-<hex>``."""
    return f"sha256-{hex_of(digest)}"


@dataclass(frozen=True)
class PushResult:
    digest: str
    reference: str
    """Where it went, ``host/repo[:tag]@digest``."""
    tag: str | None
    blobs_uploaded: int
    blobs_present: int
    bytes_uploaded: int
    referrers: tuple[str, ...]
    referrers_method: str | None
    """``referrers-api``, ``tag-schema`` or None when there were no referrers."""
    ledger_index: int | None


@dataclass(frozen=True)
class PullResult:
    digest: str
    reference: str
    """What was asked for, ``host/repo:tag`` or ``host/repo@digest``."""
    media_type: str
    tag: str | None
    """The local tag the image was given, if any."""
    blobs_fetched: int
    blobs_present: int
    bytes_fetched: int
    referrers: tuple[str, ...]
    referrers_method: str | None
    ledger_index: int | None


# -- what an image consists of -----------------------------------------------------------------


@dataclass
class _Graph:
    """Manifests (children before parents, bytes verified) and the blobs they reference."""

    manifests: list[tuple[Descriptor, bytes]] = field(default_factory=list)
    blobs: dict[str, Descriptor] = field(default_factory=dict)


def _parse_manifest(data: bytes, digest: str, where: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:  # json recurses once per nesting level
        raise RegistryContentError(digest, where, f"is not JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("schemaVersion") != 2:
        raise RegistryContentError(digest, where, "is not a schemaVersion 2 manifest or index")
    return document


def _children(document: dict[str, Any], digest: str, where: str) -> list[Descriptor]:
    """The descriptors an index lists or a manifest references (config first, then layers)."""
    try:
        if "manifests" in document:
            items = document["manifests"]
            if not isinstance(items, list):
                raise ArtifactInputError("its manifests are not a list")
            return [Descriptor.from_dict(item, f"entry of {digest}") for item in items]
        layers = document.get("layers", [])
        if not isinstance(layers, list):
            raise ArtifactInputError("its layers are not a list")
        return [
            Descriptor.from_dict(document.get("config"), f"config of {digest}"),
            *(Descriptor.from_dict(item, f"layer of {digest}") for item in layers),
        ]
    except ArtifactInputError as exc:
        raise RegistryContentError(digest, where, f"is not a valid manifest: {exc}") from exc


def _media_type(document: dict[str, Any], fallback: str, digest: str, where: str) -> str:
    declared = document.get("mediaType")
    media_type = declared if isinstance(declared, str) and declared else fallback
    if media_type not in MANIFEST_TYPES:
        raise RegistryContentError(digest, where, f"has the unsupported media type {media_type!r}")
    if media_type in INDEX_TYPES and "manifests" not in document:
        raise RegistryContentError(digest, where, "claims to be an index but lists no manifests")
    return media_type


def _local_graph(store: Store, descriptor: Descriptor, graph: _Graph, depth: int = 0) -> None:
    data = store.read_blob(descriptor.digest)
    where = str(store.blob_path(descriptor.digest))
    document = _parse_manifest(data, descriptor.digest, where)
    for child in _children(document, descriptor.digest, where):
        if descriptor.media_type in INDEX_TYPES:
            if depth >= MAX_INDEX_DEPTH:
                raise ArtifactInputError(f"{descriptor.digest} nests indexes too deeply")
            _local_graph(store, child, graph, depth + 1)
        else:
            graph.blobs.setdefault(child.digest, child)
    if all(d.digest != descriptor.digest for d, _ in graph.manifests):
        graph.manifests.append((descriptor, data))


def _referrer_descriptor(
    manifest: Descriptor, document: dict[str, Any], subject: str, where: str
) -> Descriptor:
    """The descriptor a referrers index lists for ``manifest`` (checked to point at ``subject``)."""
    found = document.get("subject")
    if not isinstance(found, dict) or found.get("digest") != subject:
        raise RegistryContentError(
            manifest.digest, where, f"is listed as a referrer of {subject} but its subject is not"
        )
    artifact_type = document.get("artifactType")
    if not isinstance(artifact_type, str):
        config = document.get("config")
        artifact_type = config.get("mediaType") if isinstance(config, dict) else None
    annotations = document.get("annotations", {})
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        annotations = {}
    return Descriptor(
        manifest.media_type,
        manifest.digest,
        manifest.size,
        dict(annotations),
        artifact_type if isinstance(artifact_type, str) else None,
    )


# -- push --------------------------------------------------------------------------------------


def push(
    store: Store,
    ref: str,
    target: str,
    *,
    include_referrers: bool = True,
    ledger: Ledger | None = None,
    actor: str | None = None,
    plain_http: bool | None = None,
    credentials: Credentials | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    observer: TransferObserver | None = None,
    timeout: float = 60.0,
    transport: httpx.BaseTransport | None = None,
) -> PushResult:
    """Push the image ``ref`` (digest or local tag) and its referrers to ``target``.

    ``target`` is ``HOST[:PORT]/REPO[:TAG]``. Plain HTTP is used for loopback registries unless
    ``plain_http=False``, and refused for any other host. With ``ledger``, an ``artifact.pushed``
    event by ``actor`` records it.
    """
    destination = Reference.parse(target)
    record = store.resolve(ref)
    digest = record.digest
    if destination.digest is not None and destination.digest != digest:
        raise ArtifactInputError(
            f"{target} names the digest {destination.digest}, but {ref} is {digest}; "
            "push to a repository or a tag, the digest is the image's own"
        )
    if chunk_size < 1:
        raise ArtifactInputError("the chunk size must be positive")
    if ledger is not None and not actor:
        raise ArtifactInputError("an actor is needed to record the push")
    observer = observer or _Quiet()

    image = _Graph()
    _local_graph(store, record.descriptor, image)
    referrers: list[tuple[Descriptor, _Graph]] = []
    if include_referrers:
        for descriptor in store.referrers(digest):
            graph = _Graph()
            _local_graph(store, descriptor, graph)
            referrers.append((descriptor, graph))
    blobs: dict[str, Descriptor] = dict(image.blobs)
    for _, graph in referrers:
        for blob_digest, blob in graph.blobs.items():
            blobs.setdefault(blob_digest, blob)

    uploaded = present = sent_bytes = 0
    method: str | None = None
    with RegistryClient(
        destination,
        plain_http=plain_http,
        credentials=credentials,
        timeout=timeout,
        transport=transport,
    ) as client:
        for position, blob in enumerate(blobs.values()):
            observer.blob_started(blob, position, len(blobs))
            if client.has_blob(blob.digest, push=True):
                present += 1
                observer.blob_finished(blob, False)
                continue
            client.upload_blob(
                blob.digest,
                blob.size,
                _store_opener(store, blob),
                chunk_size=chunk_size,
            )
            uploaded += 1
            sent_bytes += blob.size
            observer.blob_finished(blob, True)
        for manifest, data in image.manifests:
            _put_manifest(client, manifest.digest, manifest, data)
        if destination.tag is not None:
            top, data = image.manifests[-1]
            _put_manifest(client, destination.tag, top, data)
        if referrers:
            method = _push_referrers(client, digest, referrers)

    reference = str(destination.with_digest(digest))
    ledger_index = None
    if ledger is not None:
        assert actor is not None
        payload = {
            "reference": reference,
            "repository": destination.repository_url,
            "tag": destination.tag,
            "blobs_uploaded": uploaded,
            "blobs_present": present,
            "bytes_uploaded": sent_bytes,
            "referrers": [d.digest for d, _ in referrers],
            "referrers_count": len(referrers),
            "referrers_method": method,
        }
        ledger_index = ledger.append(Event.create(EVENT_PUSHED, actor, digest, payload)).index
    log.info("pushed %s to %s (%d blobs sent)", digest, reference, uploaded)
    return PushResult(
        digest=digest,
        reference=reference,
        tag=destination.tag,
        blobs_uploaded=uploaded,
        blobs_present=present,
        bytes_uploaded=sent_bytes,
        referrers=tuple(d.digest for d, _ in referrers),
        referrers_method=method,
        ledger_index=ledger_index,
    )


def _store_opener(store: Store, blob: Descriptor) -> Callable[[], Any]:
    return lambda: store.open_blob(blob.digest, blob.size)


def _put_manifest(
    client: RegistryClient, reference: str, manifest: Descriptor, data: bytes
) -> httpx.Headers:
    headers = client.put_manifest(reference, data, manifest.media_type)
    claimed = headers.get("Docker-Content-Digest")
    if claimed is not None and claimed != manifest.digest:
        raise RegistryContentError(
            manifest.digest,
            client.url("manifests", reference),
            f"was stored by the registry as {claimed} (it changed the bytes)",
        )
    return headers


def _push_referrers(
    client: RegistryClient, subject: str, referrers: list[tuple[Descriptor, _Graph]]
) -> str:
    """Put every referrer manifest; keep the fallback tag for those the registry did not index."""
    unindexed: list[Descriptor] = []
    for descriptor, graph in referrers:
        for manifest, data in graph.manifests:
            headers = _put_manifest(client, manifest.digest, manifest, data)
            if manifest.digest != descriptor.digest:
                continue
            if headers.get("OCI-Subject") != subject:
                document = _parse_manifest(data, manifest.digest, "the store")
                unindexed.append(_referrer_descriptor(descriptor, document, subject, "the store"))
    if not unindexed:
        return METHOD_API
    tag = referrers_tag(subject)
    current = client.get_manifest(tag, accept=oci.INDEX)
    entries: list[dict[str, Any]] = []
    if current is not None:
        where = current.url
        document = _parse_manifest(current.data, sha256_digest(current.data), where)
        if document.get("mediaType", current.content_type) != oci.INDEX:
            raise RegistryError(
                f"the fallback referrers tag {tag} in {client.ref.repository_url} is not an "
                "OCI index; refusing to overwrite it"
            )
        items = document.get("manifests")
        entries = (
            [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []
        )
    known = {item.get("digest") for item in entries}
    added = [d.to_dict() for d in unindexed if d.digest not in known]
    if added or current is None:
        index = {"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": [*entries, *added]}
        client.put_manifest(tag, oci.encode(index), oci.INDEX)
    return METHOD_TAG


# -- pull --------------------------------------------------------------------------------------


class _Puller:
    """Fetches manifests and blobs into one stage, verifying each against its digest."""

    def __init__(
        self, store: Store, client: RegistryClient, stage: Stage, observer: TransferObserver
    ):
        self.store = store
        self.client = client
        self.stage = stage
        self.observer = observer
        self.fetched = 0
        self.present = 0
        self.bytes = 0
        self.staged: set[str] = set()

    def manifest(
        self, reference: str, expected: Descriptor | None
    ) -> tuple[Descriptor, dict[str, Any]]:
        fetched = self.client.get_manifest(reference)
        if fetched is None:
            raise RegistryNotFoundError(
                f"the registry has no manifest {reference} in {self.client.ref.repository_url}"
            )
        return self.accept(fetched, reference, expected)

    def accept(
        self, fetched: Fetched, reference: str, expected: Descriptor | None
    ) -> tuple[Descriptor, dict[str, Any]]:
        """Check the bytes against the digest asked for (or, by tag, the one claimed); stage."""
        actual = sha256_digest(fetched.data)
        wanted = reference if reference.startswith("sha256:") else fetched.claimed_digest
        if wanted is not None and actual != wanted:
            raise RegistryContentError(
                wanted, fetched.url, f"does not match its digest (content is {actual})"
            )
        if expected is not None and len(fetched.data) != expected.size:
            raise RegistryContentError(
                actual,
                fetched.url,
                f"is {len(fetched.data)} bytes, not the {expected.size} its descriptor says",
            )
        document = _parse_manifest(fetched.data, actual, fetched.url)
        fallback = expected.media_type if expected is not None else fetched.content_type
        media_type = _media_type(document, fallback, actual, fetched.url)
        if expected is not None and media_type != expected.media_type:
            raise RegistryContentError(
                actual,
                fetched.url,
                f"is a {media_type}, not the {expected.media_type} its descriptor says",
            )
        descriptor = Descriptor(media_type, actual, len(fetched.data))
        if actual not in self.staged:
            self.stage.put(fetched.data, media_type)
            self.staged.add(actual)
        return descriptor, document

    def tree(self, descriptor: Descriptor, document: dict[str, Any], depth: int = 0) -> None:
        """Every manifest (for an index) and blob the manifest needs, fetched and verified."""
        url = self.client.url("manifests", descriptor.digest)
        children = _children(document, descriptor.digest, url)
        if descriptor.media_type in INDEX_TYPES:
            if depth >= MAX_INDEX_DEPTH:
                raise RegistryContentError(descriptor.digest, url, "nests indexes too deeply")
            for child in children:
                if child.media_type not in MANIFEST_TYPES:
                    raise RegistryContentError(
                        descriptor.digest, url, f"lists {child.digest} of type {child.media_type}"
                    )
                child_descriptor, child_document = self.manifest(child.digest, child)
                self.tree(child_descriptor, child_document, depth + 1)
            return
        for position, blob in enumerate(children):
            self.blob(blob, position, len(children))

    def blob(self, blob: Descriptor, position: int, total: int) -> None:
        self.observer.blob_started(blob, position, total)
        if blob.digest in self.staged or self.store.has_blob(blob.digest):
            self.present += 1
            self.observer.blob_finished(blob, False)
            return
        with self.client.open_blob(blob.digest) as response, self.stage.writer() as sink:
            url = str(response.url)
            for data in response.iter_bytes(READ_CHUNK):
                sink.write(data)
                if sink.size > blob.size:
                    raise RegistryContentError(
                        blob.digest, url, f"is longer than its size {blob.size}"
                    )
            if sink.size != blob.size:
                raise RegistryContentError(
                    blob.digest, url, f"holds {sink.size} bytes, not its size {blob.size}"
                )
            if sink.digest != blob.digest:
                raise RegistryContentError(
                    blob.digest, url, f"does not match its digest (content is {sink.digest})"
                )
        self.staged.add(blob.digest)
        self.fetched += 1
        self.bytes += blob.size
        self.observer.blob_finished(blob, True)

    def referrers(self, subject: str) -> tuple[list[Descriptor], str | None]:
        """The subject's referrers, from the API or the fallback tag; each fetched and checked."""
        pages = self.client.get_referrers(subject)
        method = METHOD_API
        listed: list[Descriptor] = []
        if pages is None:
            method = METHOD_TAG
            fetched = self.client.get_manifest(referrers_tag(subject), accept=oci.INDEX)
            pages = [] if fetched is None else [fetched.data]
        for page in pages:
            where = self.client.url("referrers", subject)
            document = _parse_manifest(page, sha256_digest(page), where)
            listed.extend(_children({"manifests": document.get("manifests", [])}, subject, where))
        unique = list({d.digest: d for d in listed}.values())
        if len(unique) > MAX_REFERRERS:
            raise RegistryError(f"{subject} has more than {MAX_REFERRERS} referrers")
        found: list[Descriptor] = []
        for item in unique:
            descriptor, document = self.manifest(item.digest, item)
            url = self.client.url("manifests", item.digest)
            found.append(_referrer_descriptor(descriptor, document, subject, url))
            self.tree(descriptor, document)
        return found, (method if found else None)


def pull(
    store: Store,
    source: str,
    *,
    tag: str | None = None,
    include_referrers: bool = True,
    ledger: Ledger | None = None,
    actor: str | None = None,
    plain_http: bool | None = None,
    credentials: Credentials | None = None,
    observer: TransferObserver | None = None,
    timeout: float = 60.0,
    transport: httpx.BaseTransport | None = None,
) -> PullResult:
    """Pull ``HOST[:PORT]/REPO@sha256:…`` or ``…:TAG`` and its referrers into ``store``.

    Every byte is checked against its digest before anything is published; ``tag`` names the
    image in the store (immutable, checked first). With ``ledger``, an ``artifact.pulled`` event
    by ``actor`` is appended before index.json lists the image.
    """
    origin = Reference.parse(source)
    if origin.digest is None and origin.tag is None:
        raise ArtifactInputError(
            f"{source} names no tag or digest: pull HOST/REPO:TAG or HOST/REPO@sha256:…"
        )
    if tag is not None:
        oci.check_tag(tag)
        if origin.digest is not None:
            with store.edit_index() as index:
                index.check_tag(tag, origin.digest)
    if ledger is not None and not actor:
        raise ArtifactInputError("an actor is needed to record the pull")
    with (
        RegistryClient(
            origin,
            plain_http=plain_http,
            credentials=credentials,
            timeout=timeout,
            transport=transport,
        ) as client,
        store.stage() as stage,
    ):
        puller = _Puller(store, client, stage, observer or _Quiet())
        reference = origin.digest or origin.tag
        assert reference is not None
        top, document = puller.manifest(reference, None)
        puller.tree(top, document)
        found: list[Descriptor] = []
        method = None
        if include_referrers:
            found, method = puller.referrers(top.digest)
        appended: list[int] = []

        def record() -> None:
            if ledger is None:
                return
            assert actor is not None
            payload = {
                "reference": str(origin),
                "resolved": str(origin.with_digest(top.digest)),
                "repository": origin.repository_url,
                "media_type": top.media_type,
                "tag": tag,
                "blobs_fetched": puller.fetched,
                "blobs_present": puller.present,
                "bytes_fetched": puller.bytes,
                "referrers": [d.digest for d in found],
                "referrers_count": len(found),
                "referrers_method": method,
            }
            event = Event.create(EVENT_PULLED, actor, top.digest, payload)
            appended.append(ledger.append(event).index)

        store.commit_many(stage, [(top, tag), *((r, None) for r in found)], record)
    log.info("pulled %s from %s", top.digest, source)
    return PullResult(
        digest=top.digest,
        reference=str(origin),
        media_type=top.media_type,
        tag=tag,
        blobs_fetched=puller.fetched,
        blobs_present=puller.present,
        bytes_fetched=puller.bytes,
        referrers=tuple(d.digest for d in found),
        referrers_method=method,
        ledger_index=appended[0] if appended else None,
    )
