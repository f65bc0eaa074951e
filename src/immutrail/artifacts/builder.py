"""``immutrail build``: from a definition in a git repository to an image in the store and an event.

The order is the guarantee. Everything that can be wrong with the input is found first, reading
only metadata: the definition, the repository state, every layer's files and links, the base
image. Then the blobs are written to the store's staging area; then, under the index lock, the
tag is checked, the blobs are published, the ``artifact.built`` event is appended to the ledger,
and only then does index.json name the image. Bad input therefore leaves the store and the ledger
untouched, and the store never lists an image the ledger does not know.

Reproducibility: the files come from the commit (not the work tree), all times are the commit
time (or the ``source_date_epoch`` given, else ``SOURCE_DATE_EPOCH``), and nothing of the host
(user, umask, mtimes, paths, clock) enters a layer, the config or the manifest. Two clones of a
commit give one digest.

The SBOM is made from the tree the layers form, merged while they are written (a
:class:`~.rootfs.TreeMerger` told every header): the finished layers are never read back.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from immutrail import __version__
from immutrail.ledger.event import Event
from immutrail.ledger.home import open_ledger
from immutrail.ledger.ledger import Ledger

from . import git, oci
from .attestations import BuildFacts, attach_build_attestations
from .definition import ImageDefinition, parse_definition
from .errors import ArtifactInputError, SourceError
from .imageconfig import BuiltLayer, SourceInfo, image_config, image_manifest
from .layerplan import LayerPlan, plan_layer
from .layers import Kind, write_layer
from .oci import Descriptor
from .rootfs import TreeMerger
from .sources import GitCommitTree, SourceTree, WorkTree
from .store import STORE_DIR, Stage, Store

log = logging.getLogger(__name__)

EVENT_BUILT = "artifact.built"
ACTOR_ENV = "IMMUTRAIL_ACTOR"
MAX_DIRTY_IN_EVENT = 20
_ACTOR_CLEAN_RE = re.compile(r"[^A-Za-z0-9._:@/+-]")


@dataclass(frozen=True)
class BuildResult:
    digest: str
    """The manifest digest: the image's identity."""
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    """Every layer of the image, the base's first."""
    built: tuple[BuiltLayer, ...]
    """The layers this build made, one per layer of the definition."""
    tag: str | None
    commit: str
    dirty: bool
    definition_path: str
    ledger_index: int
    store_root: Path
    input_files: Mapping[str, str]
    """Every repository file the build read -> its SHA-256 hex (provenance's inputs)."""
    base: str
    """``scratch`` or the base image's manifest digest."""
    sbom: str
    """The manifest digest of the attached CycloneDX SBOM."""
    provenance: str
    """The manifest digest of the attached, signed SLSA provenance."""

    def layer_paths(self) -> list[Path]:
        """Where the layer blobs are on disk (for the SBOM generator)."""
        store = Store(self.store_root)
        return [store.blob_path(layer.digest) for layer in self.layers]


class BuildObserver(Protocol):
    """Progress of a build; the CLI draws it, the API may log it."""

    def layer_started(self, index: int, total: int, description: str) -> None: ...

    def layer_finished(self, index: int, layer: BuiltLayer) -> None: ...


class _Silent:
    def layer_started(self, index: int, total: int, description: str) -> None:
        log.info("layer %d/%d: %s", index + 1, total, description)

    def layer_finished(self, index: int, layer: BuiltLayer) -> None:
        log.info("layer %d: %s", index + 1, layer.descriptor.digest)


def default_actor() -> str:
    """``$IMMUTRAIL_ACTOR``, else ``user:<login name>``: who the ledger says built the image."""
    value = os.environ.get(ACTOR_ENV)
    if value:
        return value
    try:
        name = getpass.getuser()
    except (OSError, KeyError):
        name = "unknown"
    return "user:" + (_ACTOR_CLEAN_RE.sub("_", name) or "unknown")


def source_epoch(commit_time: int, explicit: int | None = None) -> int:
    """``explicit`` when given, else ``SOURCE_DATE_EPOCH`` when set (reproducible-builds.org),
    else the commit time."""
    if explicit is not None:
        if isinstance(explicit, bool) or not isinstance(explicit, int) or explicit < 0:
            raise ArtifactInputError(
                f"source_date_epoch={explicit!r} is not a non-negative integer"
            )
        return explicit
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return commit_time
    if not value.isdigit():
        raise ArtifactInputError(f"SOURCE_DATE_EPOCH={value!r} is not a non-negative integer")
    return int(value)


def _definition_path(root: Path, definition: Path) -> str:
    try:
        # realpath, not resolve(): a link loop must reach the tree's "not a file" error, not
        # raise RuntimeError here.
        relative = Path(os.path.realpath(definition)).relative_to(os.path.realpath(root))
    except ValueError as exc:
        raise SourceError(f"{definition} is not inside the repository {root}") from exc
    return relative.as_posix()


def _open_tree(state: git.RepoState, allow_dirty: bool) -> SourceTree:
    if not state.dirty:
        return GitCommitTree(state.root, state.commit)
    if not allow_dirty:
        shown = ", ".join(state.dirty_paths[: git.MAX_DIRTY_SHOWN])
        more = len(state.dirty_paths) - git.MAX_DIRTY_SHOWN
        suffix = f" and {more} more" if more > 0 else ""
        raise SourceError(
            f"the work tree of {state.root} has changes not in commit {state.commit[:12]} "
            f"({shown}{suffix}); commit them, or build with --allow-dirty (recorded in the "
            "image and the ledger)"
        )
    log.warning("building from a dirty work tree; the image is labelled %s", "dirty")
    return WorkTree(state.root)


def _base(
    home: Path, definition: ImageDefinition
) -> tuple[list[Descriptor], dict[str, Any] | None]:
    if definition.from_scratch:
        return [], None
    store = Store.open(home / STORE_DIR)
    record = store.resolve(definition.base)
    if record.descriptor.media_type not in oci.IMAGE_MANIFESTS:
        raise ArtifactInputError(f"base {definition.base} is not an image manifest")
    _, blobs = store.image_blobs(definition.base)
    config = store.get_json(blobs[0])
    for layer in blobs[1:]:
        if not store.has_blob(layer.digest):
            raise ArtifactInputError(f"base {definition.base} lacks its layer {layer.digest}")
    return blobs[1:], config


def _created_by(plan: LayerPlan) -> str:
    spec = plan.spec
    words = [f"immutrail layer {spec.source} -> {spec.destination}"]
    if spec.mode is not None:
        words.append(f"mode {spec.mode:04o}")
    if spec.owner is not None:
        words.append(f"owner {spec.owner[0]}:{spec.owner[1]}")
    return ", ".join(words)


def build(
    definition_path: Path,
    home: Path,
    tag: str | None = None,
    allow_dirty: bool = False,
    actor: str | None = None,
    observer: BuildObserver | None = None,
    db: str | None = None,
    source_date_epoch: int | None = None,
    signed_as: Callable[[Ledger], Ledger] | None = None,
) -> BuildResult:
    """Build the image that ``definition_path`` describes into ``home``'s store; record it.

    ``db`` is the ledger database URL when it is not the one recorded in ``home``.
    ``source_date_epoch`` is the time of every entry, the config and the SBOM (Unix seconds);
    without it, ``$SOURCE_DATE_EPOCH``, else the commit time.
    ``signed_as`` wraps the opened ledger so that its events carry the caller's signature
    (the CLI passes its authenticated caller's :meth:`Actor.ledger`).
    """
    started = datetime.now(UTC)
    observer = observer or _Silent()
    actor = actor or default_actor()
    if tag is not None:
        oci.check_tag(tag)
    root = git.find_root(definition_path.parent if definition_path.parent.parts else Path("."))
    relative = _definition_path(root, definition_path)
    state = git.inspect(root)
    epoch = source_epoch(state.commit_time, source_date_epoch)
    ledger: Ledger | None = None
    try:
        with _open_tree(state, allow_dirty) as tree:
            data = tree.read_small(relative)
            definition = parse_definition(data, str(definition_path))
            files = tree.files()
            plans = [
                plan_layer(i, spec, files, tree.description)
                for i, spec in enumerate(definition.layers)
            ]
            ledger = open_ledger(home, db)
            if signed_as is not None:
                ledger = signed_as(ledger)
            base_layers, base_config = _base(home, definition)
            source = SourceInfo(state.commit, relative, epoch, state.dirty, state.source_url)
            store = Store.for_home(home, create=True)
            merged = TreeMerger()
            for base_layer in base_layers:
                merged.apply_layer(store.blob_path(base_layer.digest))
            with store.stage() as stage:
                built, inputs = _write_layers(
                    plans, tree, store, stage, merged, epoch, observer, definition.compression
                )
                config = image_config(definition, built, source, base_config)
                config_desc = stage.put(oci.encode(config), oci.CONFIG)
                layers = [*base_layers, *(b.descriptor for b in built)]
                manifest = image_manifest(config_desc, layers, source)
                manifest_desc = stage.put(oci.encode(manifest), oci.MANIFEST)
                payload = _payload(
                    definition, source, state, tag, config_desc, built, hashlib.sha256(data)
                )
                appended: list[int] = []

                def record() -> None:
                    event = Event.create(EVENT_BUILT, actor, manifest_desc.digest, payload)
                    appended.append(ledger.append(event).index)

                store.commit(stage, manifest_desc, tag, record)
        # the tree is closed: its file list and the layers' entries can go before the
        # attestations, which hold a statement about every input file at once
        del tree, files, plans
        facts = BuildFacts(
            digest=manifest_desc.digest,
            name=tag or manifest_desc.digest,
            commit=state.commit,
            branch=state.branch,
            repository=state.source_url or f"file://{state.root.resolve()}",
            definition_path=relative,
            dirty=state.dirty,
            base=definition.base,
            source_epoch=epoch,
            input_files=dict(sorted(inputs.items())),
            started=started,
            finished=datetime.now(UTC),
        )
        attached = attach_build_attestations(facts, merged.result(), store, ledger, home, actor)
        return BuildResult(
            digest=manifest_desc.digest,
            manifest=manifest_desc,
            config=config_desc,
            layers=tuple(layers),
            built=tuple(built),
            tag=tag,
            commit=state.commit,
            dirty=state.dirty,
            definition_path=relative,
            ledger_index=appended[0],
            store_root=store.root,
            input_files=dict(sorted(inputs.items())),
            base=definition.base,
            sbom=attached.sbom,
            provenance=attached.provenance,
        )
    finally:
        if ledger is not None:
            ledger.close()


def _write_layers(
    plans: Sequence[LayerPlan],
    tree: SourceTree,
    store: Store,
    stage: Stage,
    merged: TreeMerger,
    epoch: int,
    observer: BuildObserver,
    compression: str,
) -> tuple[list[BuiltLayer], dict[str, str]]:
    """Write every layer into ``stage`` (telling ``merged`` each header), ``compression`` gzip or
    none; the layers and every repository file read, with its SHA-256 hex."""
    built: list[BuiltLayer] = []
    inputs: dict[str, str] = {}
    for plan in plans:
        observer.layer_started(plan.index, len(plans), plan.description)
        reads = [e.source for e in plan.entries if e.kind is Kind.FILE]
        merged.begin_layer(Path(f"layers[{plan.index}]"))
        with tree.prefetch(reads), stage.writer() as sink:
            result = write_layer(plan.entries, sink, epoch, merged, compression)
        merged.end_layer(store.blob_path(sink.digest), sink.digest, result.diff_id, compression)
        inputs.update(result.inputs)
        layer = BuiltLayer(
            Descriptor(result.media_type, sink.digest, sink.size), result.diff_id, _created_by(plan)
        )
        built.append(layer)
        observer.layer_finished(plan.index, layer)
    return built, inputs


def _payload(
    definition: ImageDefinition,
    source: SourceInfo,
    state: git.RepoState,
    tag: str | None,
    config: Descriptor,
    built: Sequence[BuiltLayer],
    definition_hash: hashlib._Hash,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "definition": source.definition_path,
        "definition_digest": f"sha256:{definition_hash.hexdigest()}",
        "commit": source.commit,
        "repository": source.source_url,
        "dirty": state.dirty,
        "tag": tag,
        "base": definition.base,
        "config": config.digest,
        "layers": [
            {
                "digest": b.descriptor.digest,
                "diff_id": b.diff_id,
                "size": b.descriptor.size,
                "media_type": b.descriptor.media_type,
            }
            for b in built
        ],
        "source_date_epoch": source.epoch,
        "builder": {"immutrail": __version__, "zlib": zlib.ZLIB_RUNTIME_VERSION},
    }
    payload["source"] = {
        "branch": state.branch,
        "author": state.author_email,
        "author_name": state.author_name,
    }
    if state.dirty:
        payload["dirty_paths"] = list(state.dirty_paths[:MAX_DIRTY_IN_EVENT])
    return payload
