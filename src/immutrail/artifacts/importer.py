"""``immutrail artifact import``: bring an image made elsewhere into the store, checked, recorded.

The input is an OCI image layout (a folder, or a tar of one, optionally gzip-compressed) or a
``docker save`` archive, with attestations given beside it (``import_attest``). The order is the
guarantee, as for a build:

1. read the input safely (``import_source``): every archive entry checked, nothing extracted by
   its own name;
2. check the layout (``import_layout``): every blob against its digest, every manifest's blobs
   present, only image media types, exactly one image;
3. read every layer of every image manifest with :meth:`RootFS.from_layers`, which refuses
   escaping paths and links, device nodes and duplicate entries, and check the config's
   ``diff_ids`` against the layers; refuse paths no Linux filesystem can hold below a folder
   (too long or too deep, see :class:`ImportLimits`), so that every imported image can be
   unpacked; setuid/setgid files are allowed (a third-party image may need them) but become
   warnings in the result and in the ledger event;
4. read the attestations, match each to the image, verify DSSE signatures with ``--key``;
5. only then: open the ledger, stage every blob in the store (hashed again on the way in),
   and under the index lock check the tag, publish the blobs, append ``artifact.imported`` and
   list the image and its attachments in index.json.

Any problem in steps 1 to 4 raises an :class:`ImageImportError` (exit 2) naming the input and the
entry, and leaves the store and the ledger exactly as they were (the store is not even created).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutrail.ledger.event import Event
from immutrail.ledger.home import open_ledger
from immutrail.ledger.ledger import Ledger

from . import oci
from .builder import default_actor
from .errors import ArtifactInputError
from .import_attest import Attestation, load_keys, match_attestation, parse_attestation
from .import_errors import (
    ArchiveFormatError,
    BlobMismatchError,
    ImportLimitError,
    ImportLimits,
    UnsafeLayerError,
)
from .import_layout import ImageParts, LayoutPlan, read_layout
from .import_source import open_source
from .oci import Descriptor
from .rootfs import EntryType, LayerFormatError, RootFS, RootFSError, RootFSLimitError
from .rootfs import UnsafeEntryError as LayerEntryError
from .store import Store

__all__ = ["EVENT_IMPORTED", "ImportResult", "LayerWarning", "import_image"]

log = logging.getLogger(__name__)

EVENT_IMPORTED = "artifact.imported"
MAX_WARNINGS_IN_EVENT = 100
_COPY_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class LayerWarning:
    """Something allowed but worth an auditor's attention (a setuid file, for now)."""

    kind: str
    """``setuid``, ``setgid`` or ``setuid+setgid``."""
    manifest: str
    layer: str
    path: str
    mode: int

    def message(self) -> str:
        return (
            f"{self.kind} file /{self.path} (mode {self.mode:04o}) in layer {self.layer} "
            f"of {self.manifest}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "manifest": self.manifest,
            "layer": self.layer,
            "path": self.path,
            "mode": f"{self.mode:04o}",
        }


@dataclass(frozen=True)
class ImportResult:
    digest: str
    """The imported image: its manifest, or the index it came as."""
    media_type: str
    source_kind: str
    """``oci-layout``, ``oci-archive``, ``docker-archive`` or ``docker-folder``."""
    source_digest: str | None
    """SHA-256 of the archive file (None for a folder)."""
    tag: str | None
    manifests: tuple[str, ...]
    """The image manifests (one, or the platforms of an index)."""
    attachments: tuple[Descriptor, ...]
    """Referrers and attestation manifests that came inside the input."""
    attestations: tuple[Attestation, ...]
    """The attestations given beside the input, as attached."""
    warnings: tuple[LayerWarning, ...]
    blobs: int
    size: int
    source_tags: tuple[str, ...]
    ledger_index: int


def _layer_warnings(image: ImageParts, rootfs: RootFS) -> list[LayerWarning]:
    found: list[LayerWarning] = []
    for entry in rootfs.entries():
        if entry.type not in (EntryType.FILE, EntryType.HARDLINK):
            continue
        special = entry.mode & 0o6000
        if not special:
            continue
        kind = {0o4000: "setuid", 0o2000: "setgid"}.get(special, "setuid+setgid")
        found.append(
            LayerWarning(
                kind,
                image.manifest.digest,
                image.layers[entry.layer].digest,
                entry.path,
                entry.mode,
            )
        )
    return found


def _where(plan: LayoutPlan, image: ImageParts, path: Path) -> str:
    """A layer file named as the user knows it: digest, path inside the input, its image."""
    digest = next((d.digest for d in image.layers if plan.blobs[d.digest] == path), "?")
    name = plan.names.get(digest, digest)
    return f"layer {digest} ({name}) of {image.manifest.digest}"


def check_layers(plan: LayoutPlan, label: str, limits: ImportLimits) -> list[LayerWarning]:
    """Read every image's layers as a filesystem; refuse unsafe ones; return the warnings."""
    warnings: list[LayerWarning] = []
    for image in plan.images:
        paths = [plan.blobs[layer.digest] for layer in image.layers]
        try:
            rootfs = RootFS.from_layers(
                paths, content_patterns=(), max_entries=limits.max_layer_entries
            )
        except LayerEntryError as exc:
            raise UnsafeLayerError(
                label, f"{_where(plan, image, exc.layer)}: {exc.reason}", exc.entry
            ) from exc
        except LayerFormatError as exc:
            detail = str(exc).removeprefix(f"layer {exc.layer}: ")
            raise ArchiveFormatError(label, f"{_where(plan, image, exc.layer)}: {detail}") from exc
        except RootFSLimitError as exc:
            raise ImportLimitError(
                label, f"{image.manifest.digest}: more than {limits.max_layer_entries} files"
            ) from exc
        except RootFSError as exc:  # pragma: no cover - from_layers raises the three above
            raise UnsafeLayerError(label, f"{image.manifest.digest}: {exc}") from exc
        _check_paths(plan, image, rootfs, label, limits)
        actual = tuple(info.diff_id for info in rootfs.layers)
        if image.diff_ids is not None and image.diff_ids != actual:
            raise BlobMismatchError(
                label,
                f"the config's rootfs.diff_ids ({', '.join(image.diff_ids) or 'none'}) do not "
                f"match the layers' content ({', '.join(actual)})",
                image.config.digest,
            )
        warnings.extend(_layer_warnings(image, rootfs))
    return warnings


def _check_paths(
    plan: LayoutPlan, image: ImageParts, rootfs: RootFS, label: str, limits: ImportLimits
) -> None:
    """Refuse an image whose filesystem cannot be unpacked below a folder on Linux.

    Absolute symbolic link targets are fine (they mean the image's root); a path of thousands
    of folders, a name over NAME_MAX or a link target over PATH_MAX are not.
    """
    for entry in rootfs.entries():
        path = entry.path.encode("utf-8", "surrogateescape")
        problem = None
        if len(path) > limits.max_layer_path_bytes:
            problem = f"the path is longer than {limits.max_layer_path_bytes} bytes"
        elif path.count(b"/") >= limits.max_layer_path_depth:
            problem = f"the path is more than {limits.max_layer_path_depth} folders deep"
        elif any(len(part) > limits.max_layer_name_bytes for part in path.split(b"/")):
            problem = f"a name in the path is longer than {limits.max_layer_name_bytes} bytes"
        elif entry.type is EntryType.SYMLINK and (
            len((entry.link_target or "").encode("utf-8", "surrogateescape"))
            > limits.max_link_target_bytes
        ):
            problem = f"the link target is longer than {limits.max_link_target_bytes} bytes"
        if problem is not None:
            where = f"layer {image.layers[entry.layer].digest} of {image.manifest.digest}"
            shown = entry.path if len(entry.path) <= 100 else entry.path[:100] + "…"
            raise UnsafeLayerError(label, f"{where}: {problem}", shown)


def _event_payload(
    plan: LayoutPlan,
    source_digest: str | None,
    source_name: str,
    tag: str | None,
    attestations: Sequence[Attestation],
    warnings: Sequence[LayerWarning],
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "source_kind": plan.source_kind,
        "source": source_name,
        "source_digest": source_digest,
        "media_type": plan.image.media_type,
        "tag": tag,
        "source_tags": list(plan.source_tags),
        "manifests": [image.manifest.digest for image in plan.images],
        "configs": [image.config.digest for image in plan.images],
        "attachments": [
            {"manifest": d.digest, "artifact_type": d.artifact_type} for d in plan.attachments
        ],
        "attestations": [a.to_dict() for a in attestations],
        "warnings": [w.to_dict() for w in warnings[:MAX_WARNINGS_IN_EVENT]],
        "blobs": len(plan.blobs) + len(plan.generated),
        "size": plan.size,
    }
    if len(warnings) > MAX_WARNINGS_IN_EVENT:
        payload["warnings_not_listed"] = len(warnings) - MAX_WARNINGS_IN_EVENT
    return payload


def _copy_blob(stage_writer: Any, path: Path) -> None:
    with path.open("rb") as stream:
        while chunk := stream.read(_COPY_CHUNK):
            stage_writer.write(chunk)


def import_image(
    path: Path,
    home: Path,
    *,
    attestations: Sequence[Path] = (),
    keys: Sequence[Path] = (),
    tag: str | None = None,
    actor: str | None = None,
    db: str | None = None,
    limits: ImportLimits | None = None,
    signed_as: Callable[[Ledger], Ledger] | None = None,
) -> ImportResult:
    """Import the image at ``path`` (and ``attestations`` beside it) into ``home``; record it.

    ``signed_as`` wraps the opened ledger so that its events carry the caller's signature
    (the CLI passes its authenticated caller's :meth:`Actor.ledger`).
    """
    limits = limits or ImportLimits()
    actor = actor or default_actor()
    if tag is not None:
        oci.check_tag(tag)
    trusted = load_keys(keys)
    parsed = [parse_attestation(item, limits) for item in attestations]
    with open_source(path, limits) as files:
        plan = read_layout(files, limits)
        warnings = check_layers(plan, files.label, limits)
        attached = [match_attestation(p, plan.image, plan.manifests, trusted) for p in parsed]
        payload = _event_payload(plan, files.digest, path.name, tag, attached, warnings)
        event = Event.create(EVENT_IMPORTED, actor, plan.image.digest, payload)
        event.entry_bytes()  # too large an event is refused now, not after the blobs are in
        for warning in warnings:
            log.warning("%s: %s", files.label, warning.message())
        ledger = open_ledger(home, db)
        if signed_as is not None:
            ledger = signed_as(ledger)
        try:
            index = _write(home, plan, attached, tag, ledger, event, files.label)
        finally:
            ledger.close()
        return ImportResult(
            digest=plan.image.digest,
            media_type=plan.image.media_type,
            source_kind=plan.source_kind,
            source_digest=files.digest,
            tag=tag,
            manifests=tuple(image.manifest.digest for image in plan.images),
            attachments=plan.attachments,
            attestations=tuple(attached),
            warnings=tuple(warnings),
            blobs=len(plan.blobs) + len(plan.generated),
            size=plan.size,
            source_tags=plan.source_tags,
            ledger_index=index,
        )


def _write(
    home: Path,
    plan: LayoutPlan,
    attached: Sequence[Attestation],
    tag: str | None,
    ledger: Any,
    event: Event,
    label: str,
) -> int:
    store_exists = (home / "store" / "oci-layout").exists()
    if tag is not None and store_exists:
        with Store.for_home(home).edit_index() as index:  # refuse early; checked again below
            index.check_tag(tag, plan.image.digest)
    store = Store.for_home(home, create=True)
    appended: list[int] = []
    with store.stage() as stage:
        for digest, blob_path in sorted(plan.blobs.items()):
            with stage.writer() as writer:
                _copy_blob(writer, blob_path)
            if writer.digest != digest:
                raise BlobMismatchError(
                    label, f"changed while it was imported (now {writer.digest})", digest
                )
        for digest, data in sorted(plan.generated.items()):
            if stage.put(data, oci.MANIFEST).digest != digest:  # pragma: no cover
                raise ArtifactInputError(f"generated manifest {digest} changed")
        referrers: list[Descriptor] = []
        for attestation in attached:
            blob = attestation.parsed
            stage.put(blob.data, blob.media_type)
            manifest = stage.put(
                attestation.manifest,
                oci.MANIFEST,
                artifact_type=blob.artifact_type,
                annotations={"in-toto.io/predicate-type": blob.predicate_type},
            )
            referrers.append(manifest)
        if attached:
            stage.put(oci.EMPTY_JSON, oci.EMPTY)
        with store.edit_index() as index:
            if tag is not None:
                index.check_tag(tag, plan.image.digest)
            stage.publish()
            appended.append(ledger.append(event).index)
            index.add(plan.image, tag)
            for descriptor in (*plan.attachments, *referrers):
                index.add(descriptor)
    return appended[0]
