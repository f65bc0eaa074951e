"""What an import input holds: an OCI image layout, or a ``docker save`` archive turned into one.

:func:`read_layout` checks everything it can without writing anything and returns a
:class:`LayoutPlan`: which blobs to store, which manifests to list, which image is *the* image.

OCI layout (image-spec 1.1 ``oci-layout`` + ``index.json`` + ``blobs/sha256/``):

* every file under ``blobs/`` is hashed and must match its name (only SHA-256 is accepted);
* from ``index.json`` every index and manifest is followed (indexes nest up to a limit); each
  blob it names must be there with the size its descriptor says; all blobs missing from one
  manifest are named together (:class:`MissingBlobsError`);
* media types must be OCI or Docker image types: indexes, manifests, image configs and tar or
  tar+gzip layers; manifests that carry attestations (OCI 1.1 referrers, BuildKit attestation
  manifests, cosign's ``.att`` manifests) may also have the attestation types listed in
  ``ATTESTATION_LAYER_TYPES`` as layers. Anything else (zstd or foreign layers included) is
  refused;
* exactly one image (a manifest with layers, or an index) is listed at the top level; other top
  level entries are its attached artifacts. Tags (``ref.name``) in the input are reported but not
  adopted: the store's tags are immutable, so only ``--tag`` names the imported image.

Docker archive (``docker save``: ``manifest.json`` ``[{"Config", "RepoTags", "Layers"}]``, a
config JSON, a tar per layer) when the input has no ``index.json``: it must describe one image.
The OCI manifest built for it is deterministic (the same archive always gives the same digest):
``{"schemaVersion": 2, "mediaType": <OCI manifest>, "config": <OCI config descriptor of the
original config bytes>, "layers": [...]}`` with sorted keys and no whitespace, no annotations.
The config bytes are kept as they are, so the config digest is docker's image id. Each layer tar
is stored as it is in the archive: ``application/vnd.oci.image.layer.v1.tar`` (uncompressed; its
digest is the SHA-256 of the tar, which equals its diff_id), or ``…tar+gzip`` when the file is
gzip-compressed. The config's ``rootfs.diff_ids`` must match the layers (checked with the layer
contents, see ``importer``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immutrail.crypto.canonical import parse_strict_json
from immutrail.crypto.errors import CanonicalizationError, DuplicateKeyError
from immutrail.files import FileTooLargeError, read_capped

from . import oci
from .digests import is_digest
from .errors import ArtifactInputError
from .import_errors import (
    ArchiveFormatError,
    BlobMismatchError,
    ImportLimitError,
    ImportLimits,
    MediaTypeError,
    MissingBlobsError,
)
from .import_source import SourceFiles, normalise
from .oci import Descriptor

__all__ = [
    "ATTESTATION_LAYER_TYPES",
    "CONFIG_TYPES",
    "DOCKER_CONFIG",
    "DOCKER_MANIFEST_LIST",
    "INDEX_TYPES",
    "ImageParts",
    "LayoutPlan",
    "read_layout",
]

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
INDEX_TYPES = frozenset({oci.INDEX, DOCKER_MANIFEST_LIST})
CONFIG_TYPES = frozenset({oci.CONFIG, DOCKER_CONFIG})
ATTESTATION_LAYER_TYPES = frozenset(
    {
        "application/vnd.in-toto+json",
        "application/vnd.dsse.envelope.v1+json",
        "application/vnd.dev.cosign.simplesigning.v1+json",
        "application/vnd.cyclonedx+json",
        "application/spdx+json",
        oci.EMPTY,
    }
)
"""Layer types allowed in manifests that carry attestations rather than a filesystem."""
SIGSTORE_BUNDLE_PREFIX = "application/vnd.dev.sigstore.bundle"
ZSTD_LAYER = "application/vnd.oci.image.layer.v1.tar+zstd"

_BLOB_NAME = re.compile(r"blobs/([^/]+)/([^/]+)")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CHUNK = 1024 * 1024
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class ImageParts:
    """One image manifest of the input: its config and its filesystem layers, bottom first."""

    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...] | None
    """The config's ``rootfs.diff_ids`` (None when the config has none we could read)."""


@dataclass(frozen=True)
class LayoutPlan:
    """Everything to write, found valid; ``image`` is the imported image's descriptor."""

    source_kind: str
    image: Descriptor
    images: tuple[ImageParts, ...]
    manifests: tuple[Descriptor, ...]
    """Every index and manifest of the input (attestations may name any of them)."""
    attachments: tuple[Descriptor, ...]
    """Other top-level entries: the image's referrers and attestation manifests in the input."""
    blobs: Mapping[str, Path]
    """digest -> file: every blob to store."""
    generated: Mapping[str, bytes] = field(default_factory=dict)
    """digest -> bytes made by the import (the OCI manifest of a docker archive)."""
    source_tags: tuple[str, ...] = ()
    names: Mapping[str, str] = field(default_factory=dict)
    """digest -> the blob's path inside the input, for messages."""
    unreferenced: int = 0
    """Blobs in the input that nothing listed references (verified, not imported)."""

    @property
    def size(self) -> int:
        return sum(path.stat().st_size for path in self.blobs.values()) + sum(
            len(data) for data in self.generated.values()
        )


def _strict_json(data: bytes, label: str, entry: str) -> Any:
    try:
        return parse_strict_json(data)
    except DuplicateKeyError as exc:
        raise ArchiveFormatError(label, f"duplicate JSON key {exc.key!r}", entry) from exc
    except CanonicalizationError as exc:
        raise ArchiveFormatError(label, str(exc), entry) from exc


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return f"sha256:{digest.hexdigest()}", size


def _descriptor(value: object, label: str, where: str) -> Descriptor:
    try:
        return Descriptor.from_dict(value, where)
    except ArtifactInputError as exc:
        raise ArchiveFormatError(label, str(exc), where) from exc


class _Reader:
    """State shared while one input is read."""

    def __init__(self, files: SourceFiles, limits: ImportLimits):
        self.files = files
        self.limits = limits
        self.label = files.label
        self.blobs: dict[str, Path] = {}
        self.names: dict[str, str] = {}
        self.verified: dict[str, int] = {}
        """digest -> size of every blob file under blobs/sha256, all checked against their names"""

    def read_small(self, name: str, what: str) -> bytes:
        try:
            return read_capped(self.files.files[name], self.limits.max_json_bytes)
        except FileTooLargeError as exc:
            raise ImportLimitError(
                self.label, f"{what} is over the {self.limits.max_json_bytes}-byte limit", name
            ) from exc

    def json_file(self, name: str, what: str) -> Any:
        return _strict_json(self.read_small(name, what), self.label, name)

    def verify_blob_files(self) -> None:
        """Every file under ``blobs/`` must be a SHA-256 blob whose content matches its name."""
        for name, path in sorted(self.files.files.items()):
            if not name.startswith("blobs/"):
                continue
            match = _BLOB_NAME.fullmatch(name)
            if match is None:
                raise ArchiveFormatError(self.label, "not a blob path (blobs/sha256/<hex>)", name)
            algorithm, hex_part = match.groups()
            if algorithm != "sha256":
                raise BlobMismatchError(
                    self.label, f"{algorithm!r} blobs are not supported: only sha256", name
                )
            if not _HEX64.fullmatch(hex_part):
                raise BlobMismatchError(
                    self.label, "a blob's name must be 64 lower-case hex digits", name
                )
            digest, size = _hash_file(path)
            if digest != f"sha256:{hex_part}":
                raise BlobMismatchError(
                    self.label, f"content does not match its digest (content is {digest})", name
                )
            self.verified[digest] = size

    def blob(self, descriptor: Descriptor, where: str) -> Path | None:
        """The blob's file, its size checked against the descriptor; None when it is missing."""
        name = f"blobs/sha256/{descriptor.digest.removeprefix('sha256:')}"
        path = self.files.files.get(name)
        if path is None:
            return None
        size = self.verified[descriptor.digest]
        if size != descriptor.size:
            raise BlobMismatchError(
                self.label,
                f"{descriptor.digest} is {size} bytes, but {where} says {descriptor.size}",
                name,
            )
        self.blobs[descriptor.digest] = path
        self.names[descriptor.digest] = name
        return path

    def json_blob(self, descriptor: Descriptor, parent: str) -> dict[str, Any]:
        path = self.blob(descriptor, parent)
        if path is None:
            raise MissingBlobsError(self.label, parent, [descriptor.digest])
        what = f"blob {descriptor.digest} ({descriptor.media_type})"
        value = self.json_file(self.names[descriptor.digest], what)
        if not isinstance(value, dict):
            raise ArchiveFormatError(self.label, f"{what} is not a JSON object", descriptor.digest)
        return value


@dataclass
class _Walk:
    kinds: dict[str, str] = field(default_factory=dict)
    """digest -> image, index or artifact"""
    documents: dict[str, dict[str, Any]] = field(default_factory=dict)
    descriptors: dict[str, Descriptor] = field(default_factory=dict)
    images: list[ImageParts] = field(default_factory=list)


def _visit(reader: _Reader, walk: _Walk, descriptor: Descriptor, parent: str, depth: int) -> str:
    label = reader.label
    if descriptor.digest in walk.kinds:
        return walk.kinds[descriptor.digest]
    if depth > reader.limits.max_index_depth:
        raise ImportLimitError(
            label, f"indexes nested deeper than {reader.limits.max_index_depth}", descriptor.digest
        )
    kind_of = descriptor.media_type
    if kind_of not in INDEX_TYPES and kind_of not in oci.IMAGE_MANIFESTS:
        raise MediaTypeError(
            label,
            f"{descriptor.digest} has media type {kind_of!r}, not an OCI or Docker image "
            "manifest or index",
            parent,
        )
    document = reader.json_blob(descriptor, parent)
    if document.get("schemaVersion") != 2:
        raise ArchiveFormatError(label, "schemaVersion is not 2", descriptor.digest)
    declared = document.get("mediaType", kind_of)
    if declared != kind_of:
        raise MediaTypeError(
            label,
            f"the document says mediaType {declared!r} but its descriptor says {kind_of!r}",
            descriptor.digest,
        )
    walk.documents[descriptor.digest] = document
    walk.descriptors[descriptor.digest] = descriptor
    if kind_of in INDEX_TYPES:
        walk.kinds[descriptor.digest] = "index"
        children = document.get("manifests")
        if not isinstance(children, list):
            raise ArchiveFormatError(label, "an index without a manifests list", descriptor.digest)
        for position, item in enumerate(children):
            child = _descriptor(item, label, f"{descriptor.digest} manifests[{position}]")
            _visit(reader, walk, child, descriptor.digest, depth + 1)
        return "index"
    kind = _manifest(reader, walk, descriptor, document)
    walk.kinds[descriptor.digest] = kind
    return kind


def _manifest(
    reader: _Reader, walk: _Walk, descriptor: Descriptor, document: dict[str, Any]
) -> str:
    label = reader.label
    digest = descriptor.digest
    config = _descriptor(document.get("config"), label, f"{digest} config")
    raw_layers = document.get("layers")
    if not isinstance(raw_layers, list):
        raise ArchiveFormatError(label, "a manifest without a layers list", digest)
    layers = [
        _descriptor(item, label, f"{digest} layers[{i}]") for i, item in enumerate(raw_layers)
    ]
    artifact_type = document.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ArchiveFormatError(label, "artifactType is not a string", digest)
    if "subject" in document:
        _descriptor(document["subject"], label, f"{digest} subject")
    missing: list[str] = []
    for part in (config, *layers):
        if reader.blob(part, digest) is None and part.digest not in missing:
            missing.append(part.digest)
    if missing:
        raise MissingBlobsError(label, digest, missing)
    is_image = (
        artifact_type is None
        and config.media_type in CONFIG_TYPES
        and bool(layers)
        and all(layer.media_type in oci.LAYER_TYPES for layer in layers)
    )
    if is_image:
        config_doc = reader.json_blob(config, digest)
        walk.images.append(ImageParts(descriptor, config, tuple(layers), _diff_ids(config_doc)))
        return "image"
    if config.media_type not in CONFIG_TYPES and config.media_type != oci.EMPTY:
        raise MediaTypeError(
            label,
            f"config media type {config.media_type!r} is not an OCI or Docker image config",
            digest,
        )
    for layer in layers:
        if layer.media_type == ZSTD_LAYER:
            raise MediaTypeError(
                label, f"layer {layer.digest} is zstd-compressed, which is not supported", digest
            )
        if layer.media_type in oci.LAYER_TYPES:
            raise MediaTypeError(
                label,
                f"layer {layer.digest} mixes filesystem layers with other content",
                digest,
            )
        if layer.media_type not in ATTESTATION_LAYER_TYPES and not layer.media_type.startswith(
            SIGSTORE_BUNDLE_PREFIX
        ):
            raise MediaTypeError(
                label,
                f"layer {layer.digest} has media type {layer.media_type!r}, not an OCI or Docker "
                "image layer or a known attestation type",
                digest,
            )
    return "artifact"


def _diff_ids(config: Mapping[str, Any]) -> tuple[str, ...] | None:
    rootfs = config.get("rootfs")
    if not isinstance(rootfs, dict):
        return None
    values = rootfs.get("diff_ids")
    if not isinstance(values, list) or not all(is_digest(v) for v in values):
        return None
    return tuple(values)


def _artifact_type(descriptor: Descriptor, document: Mapping[str, Any]) -> str:
    """The referrers API's rule: the manifest's artifactType, else its config's media type;
    cosign's subject-less attestation manifests are listed under their first layer's type."""
    declared = document.get("artifactType")
    if isinstance(declared, str) and declared:
        return declared
    config_type = str(document.get("config", {}).get("mediaType", ""))
    layers = document.get("layers") or []
    if "subject" not in document and layers:
        return str(layers[0].get("mediaType", config_type))
    return config_type or descriptor.media_type


def _without_tag(descriptor: Descriptor) -> Descriptor:
    notes = {k: v for k, v in descriptor.annotations.items() if k != oci.REF_NAME}
    return Descriptor(
        descriptor.media_type,
        descriptor.digest,
        descriptor.size,
        notes,
        descriptor.artifact_type,
        descriptor.extra,
    )


def _read_oci(reader: _Reader, kind: str) -> LayoutPlan:
    label = reader.label
    layout = reader.json_file("oci-layout", "oci-layout")
    if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != oci.LAYOUT_VERSION:
        raise ArchiveFormatError(
            label, f"not an OCI image layout version {oci.LAYOUT_VERSION}", "oci-layout"
        )
    index = reader.json_file("index.json", "index.json")
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        raise ArchiveFormatError(label, "not an OCI image index", "index.json")
    if index.get("schemaVersion") != 2:
        raise ArchiveFormatError(label, "schemaVersion is not 2", "index.json")
    if index.get("mediaType", oci.INDEX) != oci.INDEX:
        raise MediaTypeError(label, f"mediaType {index.get('mediaType')!r}", "index.json")
    entries = [
        _descriptor(item, label, f"index.json manifests[{i}]")
        for i, item in enumerate(index["manifests"])
    ]
    if not entries:
        raise ArchiveFormatError(label, "lists no images", "index.json")
    walk = _Walk()
    for entry in entries:
        _visit(reader, walk, entry, "index.json", 0)
    tops = [e for e in entries if walk.kinds[e.digest] in ("image", "index")]
    digests = sorted({e.digest for e in tops})
    if len(digests) != 1:
        found = ", ".join(digests) or "none"
        raise ArchiveFormatError(
            label, f"must list exactly one image at the top level; it lists {found}", "index.json"
        )
    if not walk.images:
        raise ArchiveFormatError(label, f"{digests[0]} holds no image manifest", "index.json")
    image = _without_tag(tops[0])
    attachments: list[Descriptor] = []
    for entry in entries:
        if entry.digest == image.digest or any(a.digest == entry.digest for a in attachments):
            continue
        document = walk.documents[entry.digest]
        subject = document.get("subject")
        if isinstance(subject, dict) and subject.get("digest") not in walk.kinds:
            raise ArchiveFormatError(
                label,
                f"referrer {entry.digest} is attached to {subject.get('digest')}, which is not "
                "in the input",
                "index.json",
            )
        attachments.append(
            Descriptor(
                entry.media_type,
                entry.digest,
                entry.size,
                {k: v for k, v in entry.annotations.items() if k != oci.REF_NAME},
                _artifact_type(entry, document),
                {k: v for k, v in entry.extra.items() if k == "platform"},
            )
        )
    tags = tuple(sorted({e.tag for e in entries if e.tag is not None}))
    return LayoutPlan(
        source_kind=kind,
        image=image,
        images=tuple(walk.images),
        manifests=tuple(walk.descriptors.values()),
        attachments=tuple(attachments),
        blobs=dict(reader.blobs),
        source_tags=tags,
        names=dict(reader.names),
        unreferenced=len(set(reader.verified) - set(reader.blobs)),
    )


def _docker_member(reader: _Reader, value: object, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ArchiveFormatError(reader.label, f"{what} is not a file name", "manifest.json")
    return normalise(reader.label, value, value, reader.limits)


def _read_docker(reader: _Reader, kind: str) -> LayoutPlan:
    label = reader.label
    document = reader.json_file("manifest.json", "manifest.json")
    if not isinstance(document, list) or not document:
        raise ArchiveFormatError(label, "not a docker save manifest (a JSON list)", "manifest.json")
    if len(document) != 1:
        raise ArchiveFormatError(
            label,
            f"describes {len(document)} images; import one image per archive",
            "manifest.json",
        )
    item = document[0]
    if not isinstance(item, dict):
        raise ArchiveFormatError(label, "its entry is not a JSON object", "manifest.json")
    config_name = _docker_member(reader, item.get("Config"), "Config")
    raw_layers = item.get("Layers")
    if not isinstance(raw_layers, list) or not raw_layers:
        raise ArchiveFormatError(label, "Layers is not a non-empty list", "manifest.json")
    layer_names = [_docker_member(reader, name, "a layer") for name in raw_layers]
    repo_tags = item.get("RepoTags") or []
    if not isinstance(repo_tags, list) or not all(isinstance(t, str) for t in repo_tags):
        raise ArchiveFormatError(label, "RepoTags is not a list of names", "manifest.json")
    missing = [n for n in dict.fromkeys([config_name, *layer_names]) if not reader.files.has(n)]
    if missing:
        raise MissingBlobsError(label, "manifest.json", missing)

    config_bytes = reader.read_small(config_name, "the image config")
    config_doc = _strict_json(config_bytes, label, config_name)
    if not isinstance(config_doc, dict):
        raise ArchiveFormatError(label, "the image config is not a JSON object", config_name)
    config_digest = f"sha256:{hashlib.sha256(config_bytes).hexdigest()}"
    _check_named_digest(label, config_name, config_digest)
    config = Descriptor(oci.CONFIG, config_digest, len(config_bytes))
    blobs: dict[str, Path] = {config_digest: reader.files.files[config_name]}
    names: dict[str, str] = {config_digest: config_name}
    layers: list[Descriptor] = []
    for name in layer_names:
        path = reader.files.files[name]
        digest, size = _hash_file(path)
        _check_named_digest(label, name, digest)
        with path.open("rb") as stream:
            magic = stream.read(4)
        if magic.startswith(b"\x28\xb5\x2f\xfd"):
            raise MediaTypeError(label, "zstd-compressed layers are not supported", name)
        media_type = oci.LAYER_GZIP if magic.startswith(_GZIP_MAGIC) else oci.LAYER_TAR
        layers.append(Descriptor(media_type, digest, size))
        blobs[digest] = path
        names[digest] = name
    manifest = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "config": config.to_dict(),
        "layers": [layer.to_dict() for layer in layers],
    }
    manifest_bytes = oci.encode(manifest)
    manifest_digest = f"sha256:{hashlib.sha256(manifest_bytes).hexdigest()}"
    image = Descriptor(oci.MANIFEST, manifest_digest, len(manifest_bytes))
    return LayoutPlan(
        source_kind=kind,
        image=image,
        images=(ImageParts(image, config, tuple(layers), _diff_ids(config_doc)),),
        manifests=(image,),
        attachments=(),
        blobs=blobs,
        generated={manifest_digest: manifest_bytes},
        source_tags=tuple(sorted(set(repo_tags))),
        names=names,
        unreferenced=0,
    )


def _check_named_digest(label: str, name: str, digest: str) -> None:
    """Docker names configs ``<hex>.json`` and newer archives keep ``blobs/sha256/<hex>``."""
    base = name.rsplit("/", 1)[-1].removesuffix(".json")
    named = name.endswith(".json") or name.startswith("blobs/sha256/")
    if _HEX64.fullmatch(base) and named and f"sha256:{base}" != digest:
        raise BlobMismatchError(
            label, f"content does not match its digest (content is {digest})", name
        )


def read_layout(files: SourceFiles, limits: ImportLimits) -> LayoutPlan:
    """Check the input and plan its import; refuses with an ImageImportError naming the entry."""
    reader = _Reader(files, limits)
    reader.verify_blob_files()
    where = "layout" if files.kind == "directory" else "archive"
    if files.has("index.json") or files.has("oci-layout"):
        for required in ("oci-layout", "index.json"):
            if not files.has(required):
                raise ArchiveFormatError(files.label, "an OCI image layout needs it", required)
        return _read_oci(reader, f"oci-{where}")
    if files.has("manifest.json"):
        return _read_docker(reader, "docker-archive" if where == "archive" else "docker-folder")
    raise ArchiveFormatError(
        files.label,
        "neither an OCI image layout (oci-layout, index.json) nor a docker save archive "
        "(manifest.json)",
    )
