"""The image store: an OCI image layout (image-spec 1.1) on disk, content-addressed and verified.

    STORE/oci-layout           {"imageLayoutVersion": "1.0.0"}
    STORE/index.json           every image and attached artifact; tags are ref.name annotations
    STORE/blobs/sha256/<hex>   content, named by its SHA-256, read-only
    STORE/.tmp/                blobs being written (same file system, so renames are atomic)
    STORE/.lock                the lock that serialises index.json updates

Any OCI tool (skopeo, umoci, oras) reads it as it is. Three rules make it trustworthy:

* a blob reaches ``blobs/`` only by rename, after its bytes were hashed and matched its name;
  every read hashes again and fails naming the blob when the bytes do not match;
* a tag, once written, names one digest forever: re-pointing it is refused;
* index.json changes under an exclusive ``fcntl`` lock, by write-to-temp, fsync and rename, so two
  builds at once both land and a crash leaves the old or the new index, never half of one; an
  image and its referrers pulled together are listed by one such write (``commit_many``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from immutrail.files import fsync_folder

from . import oci
from .digests import HashingWriter, check_digest, hex_of
from .errors import BlobVerificationError, NotFoundError, StoreError, TagConflictError
from .oci import Descriptor

STORE_DIR = "store"
LOCK_FILE = ".lock"
TMP_DIR = ".tmp"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
"""The distribution spec's recommended manifest limit; larger ones are refused on read."""
MAX_INDEX_BYTES = 64 * 1024 * 1024
READ_CHUNK = 1024 * 1024

# Aliases: inside Store, the name `list` is the method.
Descriptors = list[Descriptor]
Strings = list[str]


class VerifyingReader:
    """Hashes what is read; at the end, a digest or size mismatch raises BlobVerificationError."""

    def __init__(self, stream: IO[bytes], digest: str, path: Path, size: int | None):
        self._stream = stream
        self._hash = HashingWriter()
        self._digest = digest
        self._path = path
        self._size = size
        self._done = False

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        self._hash.write(data)
        if self._size is not None and self._hash.size > self._size:
            raise BlobVerificationError(
                self._digest, str(self._path), f"is longer than its size {self._size}"
            )
        if not data or n < 0:
            self._check()
        return data

    def _check(self) -> None:
        if self._done:
            return
        self._done = True
        if self._size is not None and self._hash.size != self._size:
            raise BlobVerificationError(
                self._digest,
                str(self._path),
                f"holds {self._hash.size} bytes, not its recorded size {self._size}",
            )
        if self._hash.digest != self._digest:
            raise BlobVerificationError(
                self._digest,
                str(self._path),
                f"does not match its digest (content is {self._hash.digest})",
            )

    def drain(self) -> None:
        """Read to the end, so the check runs even when the caller stopped early."""
        while self.read(READ_CHUNK):
            pass


class BlobWriter(HashingWriter):
    """A blob on its way in: hashed as written to a temp file in the store's ``.tmp``."""

    def __init__(self, stream: IO[bytes], path: Path):
        super().__init__(stream)
        self.stream = stream
        self.path = path


@dataclass(frozen=True)
class ImageRecord:
    """One manifest in the store with every tag that names it."""

    descriptor: Descriptor
    tags: tuple[str, ...]

    @property
    def digest(self) -> str:
        return self.descriptor.digest


Records = list[ImageRecord]


class Stage:
    """Blobs written but not yet in the store; :meth:`Store.commit` publishes them.

    A build writes every layer here first, so that an error found half-way (or a tag already taken)
    leaves the store exactly as it was: the temp files are removed when the stage closes.
    """

    def __init__(self, store: Store):
        self._store = store
        self._blobs: dict[str, Path] = {}

    @contextlib.contextmanager
    def writer(self) -> Iterator[BlobWriter]:
        """A stream to write one blob into; its digest and size are known when the block ends."""
        fd, name = tempfile.mkstemp(dir=self._store.tmp_dir, prefix="blob-")
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as stream:
                writer = BlobWriter(stream, path)
                yield writer
                stream.flush()
                os.fsync(stream.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        previous = self._blobs.get(writer.digest)
        if previous is not None:
            path.unlink()
        else:
            self._blobs[writer.digest] = path

    def put(self, data: bytes, media_type: str, **fields: Any) -> Descriptor:
        with self.writer() as writer:
            writer.write(data)
        return Descriptor(media_type, writer.digest, writer.size, **fields)

    @property
    def digests(self) -> tuple[str, ...]:
        return tuple(self._blobs)

    def publish(self) -> None:
        """Rename every staged blob into ``blobs/sha256`` (replacing a damaged copy, if any)."""
        for digest, path in list(self._blobs.items()):
            target = self._store.blob_path(digest)
            path.chmod(0o444)
            os.replace(path, target)
            del self._blobs[digest]
        fsync_folder(self._store.blobs_dir)

    def discard(self) -> None:
        for path in self._blobs.values():
            path.unlink(missing_ok=True)
        self._blobs.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.discard()


class IndexEditor:
    """index.json, loaded under the lock; changes are written when the ``edit`` block ends."""

    def __init__(self, document: dict[str, Any]):
        self.document = document
        self.changed = False

    @property
    def manifests(self) -> list[Descriptor]:
        return [
            Descriptor.from_dict(item, "index.json entry") for item in self.document["manifests"]
        ]

    def tagged(self, tag: str) -> Descriptor | None:
        return next((d for d in self.manifests if d.tag == tag), None)

    def check_tag(self, tag: str, digest: str) -> None:
        """Refuse to re-point ``tag``; naming the same digest again is fine (a rebuild)."""
        current = self.tagged(tag)
        if current is not None and current.digest != digest:
            raise TagConflictError(
                f"tag {tag!r} already names {current.digest}; tags are immutable, so this "
                f"image ({digest}) needs a new tag"
            )

    def add(self, descriptor: Descriptor, tag: str | None = None) -> None:
        """List ``descriptor`` (under ``tag``); an untagged entry is replaced by a tagged one."""
        entries = self.manifests
        if tag is not None:
            oci.check_tag(tag)
            self.check_tag(tag, descriptor.digest)
            if any(d.tag == tag for d in entries):
                return
            kept = [d for d in entries if not (d.digest == descriptor.digest and d.tag is None)]
            kept.append(descriptor.with_annotations(**{oci.REF_NAME: tag}))
        else:
            if any(d.digest == descriptor.digest for d in entries):
                return
            kept = [*entries, descriptor]
        self.document["manifests"] = [d.to_dict() for d in kept]
        self.changed = True


class Store:
    """An OCI image layout; create with :meth:`open` (``create=True`` makes an empty one)."""

    def __init__(self, root: Path):
        self.root = root
        self.blobs_dir = root / "blobs" / "sha256"
        self.tmp_dir = root / TMP_DIR

    @classmethod
    def for_home(cls, home: Path, *, create: bool = False) -> Store:
        return cls.open(home / STORE_DIR, create=create)

    @classmethod
    def open(cls, root: Path, *, create: bool = False) -> Store:
        store = cls(root)
        if not (root / "oci-layout").exists():
            if not create:
                raise NotFoundError(f"{root} holds no image store yet (build an image first)")
            store._create()
        store._check_layout()
        return store

    def _create(self) -> None:
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(exist_ok=True)
        with self.lock():
            if not (self.root / "index.json").exists():
                self._write_json(
                    "index.json", {"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": []}
                )
            if not (self.root / "oci-layout").exists():
                self._write_json("oci-layout", {"imageLayoutVersion": oci.LAYOUT_VERSION})

    def _check_layout(self) -> None:
        try:
            layout = json.loads((self.root / "oci-layout").read_bytes())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self.root}/oci-layout is unreadable: {exc}") from exc
        if not isinstance(layout, dict) or layout.get("imageLayoutVersion") != oci.LAYOUT_VERSION:
            raise StoreError(f"{self.root} is not an OCI image layout version {oci.LAYOUT_VERSION}")
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(exist_ok=True)

    # -- files ---------------------------------------------------------------------------------

    def _write_json(self, name: str, value: Mapping[str, Any]) -> None:
        """Replace ``name`` atomically: temp file, fsync, rename, fsync the folder."""
        data = json.dumps(value, indent=2, sort_keys=False).encode() + b"\n"
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{name}.")
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(data)
                stream.flush()
                os.fsync(stream.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.root / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        fsync_folder(self.root)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """An exclusive lock across processes (``fcntl.flock``) for index.json updates."""
        with open(self.root / LOCK_FILE, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _read_index(self) -> dict[str, Any]:
        path = self.root / "index.json"
        try:
            with path.open("rb") as stream:
                # read(n) allocates n bytes first: ask for the file's size, not for the limit
                size = min(os.fstat(stream.fileno()).st_size, MAX_INDEX_BYTES)
                data = stream.read(size + 1)
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        if len(data) > MAX_INDEX_BYTES:
            raise StoreError(f"{path} is larger than {MAX_INDEX_BYTES} bytes")
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise StoreError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("manifests"), list):
            raise StoreError(f"{path} is not an OCI image index")
        return document

    @contextlib.contextmanager
    def edit_index(self) -> Iterator[IndexEditor]:
        """Hold the lock, yield the current index, write it back if the block changed it."""
        with self.lock():
            editor = IndexEditor(self._read_index())
            yield editor
            if editor.changed:
                self._write_json("index.json", editor.document)

    # -- blobs ---------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / hex_of(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def stage(self) -> Stage:
        return Stage(self)

    @contextlib.contextmanager
    def open_blob(self, digest: str, size: int | None = None) -> Iterator[VerifyingReader]:
        """A stream of the blob that raises BlobVerificationError at the end if it does not match.

        Leaving the block reads what the caller left unread, so a mismatch is never missed.
        """
        path = self.blob_path(check_digest(digest))
        try:
            stream = path.open("rb")
        except FileNotFoundError as exc:
            raise NotFoundError(f"blob {digest} is not in the store {self.root}") from exc
        with stream:
            reader = VerifyingReader(stream, digest, path, size)
            yield reader
            reader.drain()

    def read_blob(self, digest: str, limit: int = MAX_MANIFEST_BYTES) -> bytes:
        """A small blob (manifest, config), verified, at most ``limit`` bytes."""
        path = self.blob_path(check_digest(digest))
        try:
            size = path.stat().st_size
        except FileNotFoundError as exc:
            raise NotFoundError(f"blob {digest} is not in the store {self.root}") from exc
        if size > limit:
            raise StoreError(f"blob {digest} is {size} bytes, over the {limit}-byte limit")
        with self.open_blob(digest) as reader:
            data = reader.read()
        return data

    def verify_blob(self, digest: str, size: int | None = None) -> None:
        with self.open_blob(digest, size):
            pass

    # -- images and artifacts ------------------------------------------------------------------

    def manifests(self) -> Descriptors:
        editor = IndexEditor(self._read_index())
        return editor.manifests

    def list(self, *, include_referrers: bool = False) -> Records:
        """Every manifest with its tags, in the order first stored."""
        order: Strings = []
        found: dict[str, tuple[Descriptor, Strings]] = {}
        for descriptor in self.manifests():
            if descriptor.artifact_type is not None and not include_referrers:
                continue
            if descriptor.digest not in found:
                order.append(descriptor.digest)
                found[descriptor.digest] = (descriptor, [])
            if descriptor.tag is not None:
                found[descriptor.digest][1].append(descriptor.tag)
        return [ImageRecord(found[d][0], tuple(found[d][1])) for d in order]

    def resolve(self, ref: str) -> ImageRecord:
        """A manifest by digest or by tag."""
        records = self.list(include_referrers=True)
        if ref.startswith("sha256:"):
            check_digest(ref)
            match = next((r for r in records if r.digest == ref), None)
        else:
            match = next((r for r in records if ref in r.tags), None)
        if match is None:
            raise NotFoundError(f"no image {ref!r} in the store {self.root}")
        return match

    def get_manifest(self, digest: str) -> dict[str, Any]:
        """The manifest's JSON, verified against its digest."""
        data = self.read_blob(digest, MAX_MANIFEST_BYTES)
        try:
            manifest = json.loads(data)
        except (ValueError, RecursionError) as exc:  # json recurses once per nesting level
            raise StoreError(f"manifest {digest} is not JSON: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("schemaVersion") != 2:
            raise StoreError(f"blob {digest} is not an OCI manifest (schemaVersion 2)")
        return manifest

    def get_json(self, descriptor: Descriptor) -> dict[str, Any]:
        data = self.read_blob(descriptor.digest, MAX_MANIFEST_BYTES)
        if len(data) != descriptor.size:
            raise BlobVerificationError(
                descriptor.digest, str(self.blob_path(descriptor.digest)), "has the wrong size"
            )
        try:
            value = json.loads(data)
        except (ValueError, RecursionError) as exc:  # json recurses once per nesting level
            raise StoreError(f"blob {descriptor.digest} is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise StoreError(f"blob {descriptor.digest} is not a JSON object")
        return value

    def commit(
        self,
        stage: Stage,
        manifest: Descriptor,
        tag: str | None = None,
        before_index: Callable[[], None] | None = None,
    ) -> None:
        """Publish ``stage`` and list ``manifest`` (under ``tag``), all under the index lock.

        The tag is checked before anything is published; ``before_index`` (the ledger append)
        runs after the blobs are in place and before the index names them, so the store never
        lists an image whose event was not written.
        """
        self.commit_many(stage, [(manifest, tag)], before_index)

    def commit_many(
        self,
        stage: Stage,
        manifests: Sequence[tuple[Descriptor, str | None]],
        before_index: Callable[[], None] | None = None,
    ) -> None:
        """As :meth:`commit`, for several manifests (an image and its referrers) at once.

        index.json is written once, with all of them or (on any error, including one in
        ``before_index``) with none: a reader never sees an image without its referrers.
        Every tag is checked first, against the index and against the other manifests.
        """
        wanted: dict[str, str] = {}
        for descriptor, tag in manifests:
            if tag is None:
                continue
            oci.check_tag(tag)
            if wanted.setdefault(tag, descriptor.digest) != descriptor.digest:
                raise TagConflictError(
                    f"tag {tag!r} is given to both {wanted[tag]} and {descriptor.digest}"
                )
        with self.edit_index() as index:
            for tag, digest in wanted.items():
                index.check_tag(tag, digest)
            stage.publish()
            if before_index is not None:
                before_index()
            for descriptor, tag in manifests:
                index.add(descriptor, tag)

    def attach(
        self,
        subject_digest: str,
        artifact_type: str,
        blob_bytes: bytes,
        media_type: str,
        annotations: Mapping[str, str] | None = None,
        before_index: Callable[[Descriptor], None] | None = None,
    ) -> Descriptor:
        """Store ``blob_bytes`` as an OCI 1.1 artifact whose ``subject`` is the given manifest."""
        subject = self.resolve(check_digest(subject_digest, "subject")).descriptor
        with self.stage() as stage:
            blob = stage.put(blob_bytes, media_type)
            config = stage.put(oci.EMPTY_JSON, oci.EMPTY)
            manifest: dict[str, Any] = {
                "schemaVersion": 2,
                "mediaType": oci.MANIFEST,
                "artifactType": artifact_type,
                "config": oci.empty_config().to_dict(),
                "layers": [blob.to_dict()],
                "subject": {
                    "mediaType": subject.media_type,
                    "digest": subject.digest,
                    "size": subject.size,
                },
            }
            assert config.digest == oci.EMPTY_DIGEST
            if annotations:
                manifest["annotations"] = dict(annotations)
            descriptor = stage.put(
                oci.encode(manifest),
                oci.MANIFEST,
                artifact_type=artifact_type,
                annotations=dict(annotations or {}),
            )
            hook = None if before_index is None else (lambda: before_index(descriptor))
            self.commit(stage, descriptor, None, hook)
        return descriptor

    def referrers(self, digest: str, artifact_type: str | None = None) -> Descriptors:
        """The artifacts whose ``subject`` is ``digest``, as the referrers API would list them."""
        check_digest(digest)
        found: Descriptors = []
        for descriptor in self.manifests():
            if descriptor.artifact_type is None:
                continue
            if artifact_type is not None and descriptor.artifact_type != artifact_type:
                continue
            manifest = self.get_manifest(descriptor.digest)
            subject = manifest.get("subject")
            if isinstance(subject, dict) and subject.get("digest") == digest:
                found.append(descriptor)
        return found

    def image_blobs(self, digest: str) -> tuple[dict[str, Any], Descriptors]:
        """A manifest and the descriptors of every blob it needs (config first, then layers)."""
        manifest = self.get_manifest(digest)
        config = Descriptor.from_dict(manifest.get("config"), f"config of {digest}")
        layers = manifest.get("layers", [])
        if not isinstance(layers, list):
            raise StoreError(f"manifest {digest} has no layer list")
        return manifest, [
            config,
            *(Descriptor.from_dict(item, f"layer of {digest}") for item in layers),
        ]

    def image_config(self, digest: str) -> dict[str, Any]:
        """The run configuration (``config`` of the image config: Env, Entrypoint, Labels…)."""
        _, blobs = self.image_blobs(digest)
        inner = self.get_json(blobs[0]).get("config")
        return inner if isinstance(inner, dict) else {}

    def verify(self, digest: str) -> Descriptors:
        """Verify a manifest and every blob it references; return what was checked."""
        self.resolve(digest)
        _, blobs = self.image_blobs(digest)
        for descriptor in blobs:
            self.verify_blob(descriptor.digest, descriptor.size)
        return blobs
