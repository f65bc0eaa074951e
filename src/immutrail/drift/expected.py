"""What an image says its root filesystem is: every path with its type, mode, owner and content.

:func:`expected_files` applies the image's layers in order, with the OCI whiteout rules
(``.wh.NAME`` removes NAME from the layers below, ``.wh..wh..opq`` empties a directory), through
the same merger the scanner and the unpacker's validation use
(:class:`immutrail.artifacts.rootfs.RootFS`). Each layer is streamed once and hashed while it is
read: the bytes must match the manifest's layer digest and, uncompressed, the config's
``rootfs.diff_ids``, or :class:`ImageVerificationError` is raised and nothing is returned. Device
nodes, ``..`` and links out of the root are refused as they are by the unpacker.

The result is a pure function of the manifest digest, so it is cached per digest in the store,
``STORE/.immutrail-drift/expected/<hex>.json``, as a sealed document (:mod:`.seal`): HMAC-SHA256
under the key ``STORE/.immutrail-drift/key`` (0600). A cache whose seal, kind, image or layer
list does not match is not believed: the tree is rebuilt from the layers and the rebuilt one is
written back; :attr:`ExpectedTree.cache_problem` says what was wrong.

Modes are kept as the image states them. What an instance shows differs by runtime (the local
unpacker drops setuid bits and clears write bits, Docker keeps the image's modes): that is
:mod:`.compare`'s business, not the tree's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from immutrail.artifacts.digests import check_digest, hex_of, is_digest
from immutrail.artifacts.errors import (
    ArtifactError,
    ArtifactInputError,
    BlobVerificationError,
)
from immutrail.artifacts.oci import IMAGE_MANIFESTS, LAYER_TYPES, Descriptor
from immutrail.artifacts.rootfs import EntryType, RootFS
from immutrail.artifacts.store import Store

from .errors import DriftError, DriftInputError, ImageVerificationError, SealError
from .seal import canonical, load_key, seal, unseal, write_atomic

__all__ = [
    "CACHE_DIR",
    "ExpectedEntry",
    "ExpectedTree",
    "Kind",
    "drift_key",
    "expected_files",
]

logger = logging.getLogger(__name__)

CACHE_DIR = ".immutrail-drift"
"""Below the store's root: ``expected/`` (the cached trees) and ``key`` (their seal key)."""
DOCUMENT_KIND = "immutrail.drift.expected-tree"
DOCUMENT_VERSION = 1


class Kind(StrEnum):
    """The type of a path in the image (a hard link shares a regular file's content)."""

    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    FIFO = "fifo"


_KINDS = {
    EntryType.FILE: Kind.FILE,
    EntryType.DIRECTORY: Kind.DIRECTORY,
    EntryType.SYMLINK: Kind.SYMLINK,
    EntryType.HARDLINK: Kind.HARDLINK,
    EntryType.FIFO: Kind.FIFO,
}


@dataclass(frozen=True, slots=True)
class ExpectedEntry:
    """One path of the image. ``path`` is relative to the root, without a leading ``/``.

    ``mode`` holds the permission bits as the image states them (``0o7777`` at most); ``sha256``
    (hex) and ``size`` describe the content of regular files and hard links; ``link_target`` is a
    symbolic link's target as written, or the path a hard link points to.
    """

    path: str
    kind: Kind
    mode: int
    uid: int
    gid: int
    size: int = 0
    sha256: str | None = None
    link_target: str | None = None

    @property
    def is_file(self) -> bool:
        return self.kind in (Kind.FILE, Kind.HARDLINK)

    def to_row(self) -> list[Any]:
        return [
            self.path,
            str(self.kind),
            self.mode,
            self.uid,
            self.gid,
            self.size,
            self.sha256,
            self.link_target,
        ]

    @classmethod
    def from_row(cls, row: object) -> ExpectedEntry:
        if not isinstance(row, list) or len(row) != 8:
            raise ValueError(f"not an entry row: {row!r}")
        path, kind, mode, uid, gid, size, sha256, link = row
        ints = (mode, uid, gid, size)
        if not isinstance(path, str) or not path or path.startswith("/"):
            raise ValueError(f"bad path {path!r}")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in ints):
            raise ValueError(f"{path}: bad numbers")
        if sha256 is not None and not is_digest(f"sha256:{sha256}"):
            raise ValueError(f"{path}: bad sha256")
        if link is not None and not isinstance(link, str):
            raise ValueError(f"{path}: bad link target")
        return cls(path, Kind(kind), mode, uid, gid, size, sha256, link)


@dataclass(frozen=True)
class ExpectedTree:
    """Every path of image ``image`` (its manifest digest), sorted.

    ``digest`` names the tree itself (SHA-256 of its canonical JSON): a check's saved state is
    bound to it. ``source`` is ``"store"`` when the layers were read, ``"cache"`` when the sealed
    cache was used; ``cache_problem`` says why a cache that was there was not believed.
    """

    image: str
    config: str
    """The config digest: the ID a Docker engine gives the image."""
    layers: tuple[str, ...]
    entries: Mapping[str, ExpectedEntry]
    digest: str
    source: str = "store"
    cache_problem: str | None = field(default=None, compare=False)

    def get(self, path: str) -> ExpectedEntry | None:
        return self.entries.get(path)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ExpectedEntry]:
        return iter(self.entries.values())

    @property
    def file_count(self) -> int:
        return sum(1 for entry in self.entries.values() if entry.is_file)

    @property
    def content_bytes(self) -> int:
        """Bytes of regular-file content, each hard-linked file counted once per path."""
        return sum(entry.size for entry in self.entries.values() if entry.is_file)

    def to_body(self) -> dict[str, Any]:
        return _body(self.image, self.config, self.layers, self.entries.values())


def _body(image: str, config: str, layers: tuple[str, ...], entries: Any) -> dict[str, Any]:
    return {
        "kind": DOCUMENT_KIND,
        "version": DOCUMENT_VERSION,
        "image": image,
        "config": config,
        "layers": list(layers),
        "entries": [entry.to_row() for entry in entries],
    }


def _tree_digest(body: Mapping[str, Any]) -> str:
    return f"sha256:{hashlib.sha256(canonical(body)).hexdigest()}"


def drift_key(store: Store) -> bytes:
    """The key that seals this store's drift caches (and, given to a check, its state)."""
    return load_key(store.root / CACHE_DIR / "key")


def cache_path(store: Store, image: str) -> Path:
    return store.root / CACHE_DIR / "expected" / f"{hex_of(image)}.json"


def expected_files(store: Store, digest: str, *, use_cache: bool = True) -> ExpectedTree:
    """The root filesystem image ``digest`` (a manifest digest or a tag) gives an instance.

    ``use_cache=False`` reads the layers even when a sealed cache exists (and rewrites it).
    Raises DriftInputError for an unknown image or one that cannot be read as a filesystem,
    ImageVerificationError when its blobs do not match their digests, DriftError when the store
    itself fails.
    """
    image = _image(store, digest)
    path = cache_path(store, image.digest)
    layers = tuple(layer.digest for layer in image.layers)
    problem: str | None = None
    try:
        key: bytes | None = drift_key(store)
    except DriftError as exc:  # a read-only store, say: no cache, but still an answer
        key, problem = None, exc.diagnostics()
        logger.warning("the tree of %s is not cached: %s", image.digest, problem)
    if use_cache and key is not None:
        cached, problem = _load_cache(path, key, image.digest, image.config.digest, layers)
        if cached is not None:
            return cached
        if problem is not None:
            logger.warning("not using the cached tree of %s: %s", image.digest, problem)
    entries = _from_layers(store, image)
    body = _body(image.digest, image.config.digest, layers, entries.values())
    if key is not None:
        try:
            write_atomic(path, seal(body, key))
        except OSError as exc:
            logger.warning("cannot cache the tree of %s in %s: %s", image.digest, path, exc)
    return ExpectedTree(
        image.digest,
        image.config.digest,
        layers,
        entries,
        _tree_digest(body),
        "store",
        problem,
    )


@dataclass(frozen=True)
class _Image:
    digest: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


def _image(store: Store, ref: str) -> _Image:
    """The manifest (verified) of ``ref`` and its blobs' descriptors."""
    try:
        if ref.startswith("sha256:"):
            check_digest(ref, "image digest")
        record = store.resolve(ref)
        if record.descriptor.artifact_type is not None or (
            record.descriptor.media_type not in IMAGE_MANIFESTS
        ):
            raise DriftInputError(f"{ref} is an attached artifact, not an image")
        _, blobs = store.image_blobs(record.digest)
    except BlobVerificationError as exc:
        raise ImageVerificationError(f"image {ref}: {exc.diagnostics()}") from exc
    except ArtifactInputError as exc:
        raise DriftInputError(f"image {ref}: {exc.diagnostics()}") from exc
    except ArtifactError as exc:
        raise DriftError(f"image {ref}: {exc.diagnostics()}") from exc
    for layer in blobs[1:]:
        if layer.media_type not in LAYER_TYPES:
            raise DriftInputError(
                f"image {record.digest}: layer {layer.digest} has the media type "
                f"{layer.media_type!r}, which is not a filesystem layer"
            )
    return _Image(record.digest, blobs[0], tuple(blobs[1:]))


def _from_layers(store: Store, image: _Image) -> dict[str, ExpectedEntry]:
    """Merge the layers (each streamed once, hashed as it goes) and check them against the
    manifest's digests and the config's diff_ids."""
    name = image.digest
    try:
        config = store.get_json(image.config)
        rootfs_section = config.get("rootfs")
        diff_ids = rootfs_section.get("diff_ids") if isinstance(rootfs_section, dict) else None
        if not isinstance(diff_ids, list) or len(diff_ids) != len(image.layers):
            raise DriftInputError(
                f"image {name}: its config does not list one diff_id for each of its "
                f"{len(image.layers)} layers"
            )
        paths = []
        for layer in image.layers:
            path = store.blob_path(layer.digest)
            try:
                size = path.stat().st_size
            except FileNotFoundError as exc:
                raise DriftError(f"image {name}: layer {layer.digest} is not in the store") from exc
            if size != layer.size:
                raise ImageVerificationError(
                    f"image {name}: layer {layer.digest} at {path} holds {size} bytes, "
                    f"not {layer.size}"
                )
            paths.append(path)
        rootfs = RootFS.from_layers(paths, content_patterns=())
    except BlobVerificationError as exc:
        raise ImageVerificationError(f"image {name}: {exc.diagnostics()}") from exc
    except ArtifactInputError as exc:
        _verify_layers(store, image)  # damaged bytes are often unreadable before they mismatch
        raise DriftInputError(f"image {name} cannot be read as a filesystem: {exc}") from exc
    except ArtifactError as exc:
        raise DriftError(f"image {name}: {exc.diagnostics()}") from exc
    except OSError as exc:
        raise DriftError(f"image {name}: cannot read its layers: {exc}") from exc
    for info, layer, diff_id in zip(rootfs.layers, image.layers, diff_ids, strict=True):
        if info.digest != layer.digest:
            raise ImageVerificationError(
                f"image {name}: layer blob {info.path} does not match its digest {layer.digest} "
                f"(content is {info.digest})"
            )
        if info.diff_id != diff_id:
            raise ImageVerificationError(
                f"image {name}: layer {layer.digest} uncompressed is {info.diff_id}, but the "
                f"config says {diff_id}"
            )
    return {
        entry.path: ExpectedEntry(
            entry.path,
            _KINDS[entry.type],
            entry.mode & 0o7777,
            entry.uid,
            entry.gid,
            entry.size,
            entry.sha256,
            entry.link_target,
        )
        for entry in rootfs.entries()
    }


def _verify_layers(store: Store, image: _Image) -> None:
    """ImageVerificationError if a layer blob does not match its digest."""
    for layer in image.layers:
        try:
            store.verify_blob(layer.digest, layer.size)
        except BlobVerificationError as exc:
            raise ImageVerificationError(f"image {image.digest}: {exc.diagnostics()}") from exc
        except ArtifactError as exc:
            raise DriftError(f"image {image.digest}: {exc.diagnostics()}") from exc


def _load_cache(
    path: Path, key: bytes, image: str, config: str, layers: tuple[str, ...]
) -> tuple[ExpectedTree | None, str | None]:
    """The cached tree, or None and why not (None when there simply is no cache)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"cannot read {path}: {exc}"
    try:
        body = unseal(data, key, f"the cached tree {path}")
    except SealError as exc:
        return None, str(exc)
    if body.get("kind") != DOCUMENT_KIND or body.get("version") != DOCUMENT_VERSION:
        return None, f"{path} is not a version {DOCUMENT_VERSION} expected tree"
    if body.get("image") != image or body.get("config") != config:
        return None, f"{path} describes image {body.get('image')!r}, not {image}"
    if body.get("layers") != list(layers):
        return None, f"{path} lists other layers than the manifest of {image}"
    rows = body.get("entries")
    if not isinstance(rows, list):
        return None, f"{path} holds no entry list"
    try:
        entries = {entry.path: entry for entry in map(ExpectedEntry.from_row, rows)}
    except ValueError as exc:
        return None, f"{path}: {exc}"
    if len(entries) != len(rows):
        return None, f"{path} lists a path twice"
    tree = ExpectedTree(image, config, layers, entries, _tree_digest(body), "cache")
    return tree, None
