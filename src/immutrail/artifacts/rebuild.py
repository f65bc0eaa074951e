"""``immutrail rebuild-verify DIGEST``: build an image again from its recorded commit and compare.

The ``artifact.built`` event of DIGEST says what was built: the definition's path in the
repository, the commit, the repository's public URL (None for a local repository), the
``SOURCE_DATE_EPOCH`` used and the builder's versions. The rebuild:

1. finds the source: ``--repo`` when given, else the recorded repository URL, else the source URI
   in the image's attached provenance (``git+file://…`` for a local repository). The source only
   has to *contain* the commit: a commit id names its content, so where it is fetched from
   cannot change what is built;
2. clones it into a temporary folder (``git clone --no-checkout`` then ``git checkout COMMIT``)
   and points ``origin`` at the recorded URL (or removes it), since the URL is in the manifest;
3. builds with the ordinary builder into a temporary home with its own temporary ledger (so the
   real ledger gets no second ``artifact.built``), with the recorded ``source_date_epoch`` passed
   to the builder and the base image, if any, copied from the real store;
4. compares the manifests; when they differ it names each part that differs: the config (and
   the JSON paths inside it), each layer (and whether only its compression differs, i.e. same
   diff_id, or its content), the number of layers, the manifest annotations;
5. records ``artifact.rebuild-verified`` in the real ledger with the result.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutrail import __version__
from immutrail.ledger.event import Event, parse_entry
from immutrail.ledger.home import init_ledger, open_ledger
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter

from . import oci
from .builder import EVENT_BUILT, build, default_actor
from .digests import check_digest
from .errors import ArtifactError, ArtifactInputError, NotFoundError
from .git import run_git
from .oci import Descriptor
from .provenance import IN_TOTO_PAYLOAD_TYPE, read_provenance, split_source_uri
from .store import STORE_DIR, Store

__all__ = [
    "EVENT_REBUILD_VERIFIED",
    "Difference",
    "RebuildError",
    "RebuildResult",
    "rebuild_verify",
]

log = logging.getLogger(__name__)

EVENT_REBUILD_VERIFIED = "artifact.rebuild-verified"
MAX_JSON_PATHS = 12
_COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class RebuildError(ArtifactInputError):
    """The image cannot be rebuilt as asked: no build recorded, no source, commit not found."""


@dataclass(frozen=True)
class Difference:
    """One part of the image that the rebuild did not reproduce."""

    part: str
    """``config``, ``layer``, ``layers`` (their number) or ``manifest``."""
    index: int | None
    """The layer's position (0 = bottom), for ``layer``."""
    recorded: str | None
    rebuilt: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"part": self.part, "recorded": self.recorded}
        out.update(rebuilt=self.rebuilt, detail=self.detail)
        if self.index is not None:
            out["index"] = self.index
        return out


@dataclass(frozen=True)
class RebuildResult:
    digest: str
    rebuilt_digest: str
    reproducible: bool
    commit: str
    definition: str
    source: str
    dirty: bool
    """The recorded build was made from a dirty work tree: its commit does not hold its inputs."""
    built_event: int
    """Ledger index of the ``artifact.built`` event that was checked."""
    differences: tuple[Difference, ...]
    ledger_index: int


def _built_event(ledger: Ledger, digest: str) -> tuple[int, Event]:
    rows = list(ledger.entries(EntryFilter(type=EVENT_BUILT, subject=digest)))
    if not rows:
        raise RebuildError(
            f"the ledger has no {EVENT_BUILT} event for {digest}: only images built by immutrail "
            "can be rebuilt (an imported image has no recorded build)"
        )
    row = rows[-1]
    return row.index, parse_entry(row.data)


def _provenance_source(home: Path, digest: str) -> str | None:
    """The source URI that the image's attached provenance names (not trusted: only a hint)."""
    try:
        store = Store.for_home(home)
        for referrer in store.referrers(digest, IN_TOTO_PAYLOAD_TYPE):
            manifest, blobs = store.image_blobs(referrer.digest)
            del manifest
            summary = read_provenance(store.read_blob(blobs[1].digest))
            if summary.source_uri:
                return split_source_uri(summary.source_uri)[0]
    except (ArtifactError, IndexError) as exc:
        log.info("no usable provenance for %s: %s", digest, exc)
    return None


def _clone(source: str, commit: str, dest: Path, origin: str | None) -> None:
    if Path(source).exists():
        source = str(Path(source).resolve())  # git runs in the temporary folder
    run_git(dest.parent, "clone", "--quiet", "--no-checkout", "--", source, dest.name)
    try:
        run_git(dest, "checkout", "--quiet", "--detach", commit)
    except ArtifactInputError as exc:
        raise RebuildError(f"cannot check out commit {commit} from {source}: {exc}") from exc
    if origin is not None:
        run_git(dest, "remote", "set-url", "origin", origin)
    else:
        run_git(dest, "remote", "remove", "origin")


def _copy_image(source: Store, target: Store, digest: str) -> None:
    """Put an image (the base of the definition) into the temporary store, verified."""
    record = source.resolve(digest)
    _, blobs = source.image_blobs(digest)
    with target.stage() as stage:
        for descriptor in [record.descriptor, *blobs]:
            with stage.writer() as writer, source.open_blob(descriptor.digest) as reader:
                while chunk := reader.read(1024 * 1024):
                    writer.write(chunk)
        target.commit(stage, record.descriptor)


@dataclass(frozen=True)
class _Image:
    manifest: Mapping[str, Any]
    config: Descriptor | None
    config_json: Mapping[str, Any] | None
    layers: tuple[Descriptor, ...]

    @property
    def diff_ids(self) -> list[Any]:
        rootfs = (self.config_json or {}).get("rootfs", {})
        values = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
        return list(values) if isinstance(values, list) else []

    def layer_name(self, index: int) -> str:
        history = (self.config_json or {}).get("history")
        if not isinstance(history, list):
            return f"layer {index}"
        made = [h for h in history if isinstance(h, dict) and not h.get("empty_layer")]
        if index < len(made) and isinstance(made[index].get("created_by"), str):
            return f"layer {index} ({made[index]['created_by']})"
        return f"layer {index}"


def _load(store: Store, digest: str) -> _Image:
    manifest, blobs = store.image_blobs(digest)
    config = blobs[0]
    return _Image(manifest, config, store.get_json(config), tuple(blobs[1:]))


def _from_event(payload: Mapping[str, Any]) -> _Image:
    """The recorded image as far as the event describes it (when the store no longer has it)."""
    layers = tuple(
        # events written before `compression: none` existed name no media type: those were gzip
        Descriptor(
            str(item.get("media_type", oci.LAYER_GZIP)), str(item["digest"]), int(item["size"])
        )
        for item in payload.get("layers", [])
        if isinstance(item, dict)
    )
    config_digest = payload.get("config")
    config = Descriptor(oci.CONFIG, config_digest, 0) if isinstance(config_digest, str) else None
    diff_ids = [item.get("diff_id") for item in payload.get("layers", []) if isinstance(item, dict)]
    return _Image({}, config, {"rootfs": {"diff_ids": diff_ids}}, layers)


def _json_paths(a: object, b: object, prefix: str, out: list[str]) -> None:
    if len(out) >= MAX_JSON_PATHS or a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            step = f"[{json.dumps(key)}]" if "." in key else (f".{key}" if prefix else key)
            _json_paths(a.get(key), b.get(key), f"{prefix}{step}", out)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _json_paths(x, y, f"{prefix}[{index}]", out)
    else:
        out.append(prefix or "(the whole document)")


def compare_images(
    recorded: _Image, rebuilt: _Image, recorded_builder: Mapping[str, Any] | None
) -> list[Difference]:
    """Each part of ``rebuilt`` that differs from ``recorded``; only the event's layers when
    the recorded image is known from its event alone (the base's layers are then not compared)."""
    found: list[Difference] = []
    configs = (recorded.config, rebuilt.config)
    if configs[0] is not None and configs[1] is not None and configs[0].digest != configs[1].digest:
        paths: list[str] = []
        if recorded.manifest:  # the full config is known
            _json_paths(recorded.config_json, rebuilt.config_json, "", paths)
        where = f" at {', '.join(paths)}" if paths else ""
        found.append(
            Difference(
                "config",
                None,
                configs[0].digest,
                configs[1].digest,
                f"the image config differs{where}",
            )
        )
    theirs = rebuilt.layers
    their_ids = rebuilt.diff_ids
    if not recorded.manifest:  # known from the event: compare the layers this build made
        theirs = theirs[len(theirs) - len(recorded.layers) :] if recorded.layers else ()
        their_ids = their_ids[len(their_ids) - len(recorded.layers) :] if recorded.layers else []
    if len(recorded.layers) != len(theirs):
        found.append(
            Difference(
                "layers",
                None,
                str(len(recorded.layers)),
                str(len(theirs)),
                f"the recorded image has {len(recorded.layers)} layers, the rebuild {len(theirs)}",
            )
        )
    ours_ids = recorded.diff_ids
    for index, (mine, other) in enumerate(zip(recorded.layers, theirs, strict=False)):
        if mine.digest == other.digest:
            continue
        a = ours_ids[index] if index < len(ours_ids) else None
        b = their_ids[index] if index < len(their_ids) else None
        if a is not None and a == b and mine.media_type != other.media_type:
            detail = (
                f"{recorded.layer_name(index)}: same content (diff_id {a}) but stored as "
                f"{mine.media_type} when recorded and {other.media_type} rebuilt: the "
                "compression differs"
            )
        elif a is not None and a == b:
            versions = ""
            if recorded_builder:
                versions = (
                    f" (recorded with zlib {recorded_builder.get('zlib')}, rebuilt with zlib "
                    f"{zlib.ZLIB_RUNTIME_VERSION})"
                )
            detail = (
                f"{recorded.layer_name(index)}: same content (diff_id {a}) but different "
                f"compressed bytes: the compression differs{versions}"
            )
        else:
            detail = (
                f"{recorded.layer_name(index)}: the content differs (diff_id {a} recorded, "
                f"{b} rebuilt)"
            )
        found.append(Difference("layer", index, mine.digest, other.digest, detail))
    if recorded.manifest:
        notes_a = recorded.manifest.get("annotations") or {}
        notes_b = rebuilt.manifest.get("annotations") or {}
        if notes_a != notes_b:
            keys = sorted(
                k for k in set(notes_a) | set(notes_b) if notes_a.get(k) != notes_b.get(k)
            )
            found.append(
                Difference(
                    "manifest",
                    None,
                    None,
                    None,
                    f"the manifest annotations differ: {', '.join(keys)}",
                )
            )
    return found


def rebuild_verify(
    digest: str,
    home: Path,
    *,
    repo: str | None = None,
    actor: str | None = None,
    db: str | None = None,
    signed_as: Callable[[Ledger], Ledger] | None = None,
) -> RebuildResult:
    """Rebuild ``digest`` from its recorded commit, compare, record the result in the ledger.

    ``signed_as`` wraps the opened ledger so that its events carry the caller's signature
    (the CLI passes its authenticated caller's :meth:`Actor.ledger`).
    """
    check_digest(digest)
    actor = actor or default_actor()
    ledger = open_ledger(home, db)
    if signed_as is not None:
        ledger = signed_as(ledger)
    try:
        built_index, event = _built_event(ledger, digest)
        payload = event.payload
        commit, definition = payload.get("commit"), payload.get("definition")
        if not isinstance(commit, str) or not _COMMIT_RE.fullmatch(commit):
            raise RebuildError(f"the {EVENT_BUILT} event {built_index} has no valid commit id")
        if (
            not isinstance(definition, str)
            or not definition
            or definition.startswith("/")
            or ".." in definition.split("/")
        ):
            raise RebuildError(f"the {EVENT_BUILT} event {built_index} has no definition path")
        recorded_url = payload.get("repository")
        recorded_url = recorded_url if isinstance(recorded_url, str) else None
        source = repo or recorded_url or _provenance_source(home, digest)
        if source is None:
            raise RebuildError(
                f"{digest} was built from a local repository whose location is not recorded; "
                "give it with --repo PATH"
            )
        dirty = payload.get("dirty") is True
        epoch = payload.get("source_date_epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise RebuildError(
                f"the {EVENT_BUILT} event {built_index} has no valid source_date_epoch"
            )
        store_path = home / STORE_DIR
        real_store = Store.open(store_path) if (store_path / "oci-layout").exists() else None
        recorded = (
            _load(real_store, digest)
            if real_store is not None and real_store.has_blob(digest)
            else _from_event(payload)
        )
        with tempfile.TemporaryDirectory(prefix="immutrail-rebuild-") as tmp:
            work = Path(tmp)
            checkout = work / "source"
            _clone(source, commit, checkout, recorded_url)
            temp_home = work / "home"
            temp_ledger, _ = init_ledger(temp_home)
            temp_ledger.close()
            base = payload.get("base")
            if isinstance(base, str) and base != "scratch":
                if real_store is None:
                    raise NotFoundError(f"the base image {base} is not in the store")
                _copy_image(real_store, Store.for_home(temp_home, create=True), base)
            result = build(checkout / definition, temp_home, actor=actor, source_date_epoch=epoch)
            rebuilt = _load(Store.for_home(temp_home), result.digest)
        builder = payload.get("builder")
        differences = (
            []
            if result.digest == digest
            else compare_images(recorded, rebuilt, builder if isinstance(builder, dict) else None)
        )
        if result.digest != digest and not differences:
            differences.append(
                Difference(
                    "manifest",
                    None,
                    digest,
                    result.digest,
                    "the manifests differ outside their config, layers and annotations",
                )
            )
        reproducible = result.digest == digest
        appended = ledger.append(
            Event.create(
                EVENT_REBUILD_VERIFIED,
                actor,
                digest,
                {
                    "reproducible": reproducible,
                    "rebuilt_digest": result.digest,
                    "commit": commit,
                    "definition": definition,
                    "source": source,
                    "dirty": dirty,
                    "built_event": built_index,
                    "differences": [d.to_dict() for d in differences],
                    "builder": {"immutrail": __version__, "zlib": zlib.ZLIB_RUNTIME_VERSION},
                },
            )
        )
        return RebuildResult(
            digest=digest,
            rebuilt_digest=result.digest,
            reproducible=reproducible,
            commit=commit,
            definition=definition,
            source=source,
            dirty=dirty,
            built_event=built_index,
            differences=tuple(differences),
            ledger_index=appended.index,
        )
    finally:
        ledger.close()
