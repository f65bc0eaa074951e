"""The store: verified blobs, immutable tags, referrers, an index that concurrent writers share."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from immutrail.artifacts import oci
from immutrail.artifacts import store as store_module
from immutrail.artifacts.digests import sha256_digest
from immutrail.artifacts.errors import (
    BlobVerificationError,
    NotFoundError,
    StoreError,
    TagConflictError,
)
from immutrail.artifacts.oci import Descriptor
from immutrail.artifacts.store import IndexEditor, Stage, Store


def put_image(store: Store, payload: bytes, tag: str | None = None) -> Descriptor:
    """A minimal image: one layer blob, an empty config, a manifest."""
    with store.stage() as stage:
        layer = stage.put(payload, oci.LAYER_TAR)
        config = stage.put(b"{}", oci.CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST,
            "config": config.to_dict(),
            "layers": [layer.to_dict()],
        }
        descriptor = stage.put(oci.encode(manifest), oci.MANIFEST)
        store.commit(stage, descriptor, tag)
    return descriptor


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store", create=True)


def test_new_store_is_an_oci_layout(store: Store) -> None:
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((store.root / "index.json").read_text())
    assert index == {"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": []}
    with pytest.raises(NotFoundError, match="holds no image store"):
        Store.open(store.root.parent / "elsewhere")
    (store.root / "oci-layout").write_text('{"imageLayoutVersion": "2.0.0"}')
    with pytest.raises(StoreError, match="not an OCI image layout"):
        Store.open(store.root)


def test_blob_is_stored_under_its_digest_read_only(store: Store) -> None:
    image = put_image(store, b"layer bytes")
    path = store.blob_path(sha256_digest(b"layer bytes"))
    assert path.read_bytes() == b"layer bytes"
    assert path.stat().st_mode & 0o777 == 0o444
    assert store.get_manifest(image.digest)["layers"][0]["size"] == len(b"layer bytes")
    assert list((store.root / ".tmp").iterdir()) == []


def test_corrupted_blob_fails_on_read_naming_it(store: Store) -> None:
    image = put_image(store, b"layer bytes")
    digest = sha256_digest(b"layer bytes")
    path = store.blob_path(digest)
    path.chmod(0o644)
    path.write_bytes(b"layer byteZ")
    with pytest.raises(BlobVerificationError) as caught:
        store.verify(image.digest)
    assert caught.value.digest == digest
    assert digest in caught.value.diagnostics() and str(path) in caught.value.diagnostics()
    with pytest.raises(BlobVerificationError, match="does not match"), store.open_blob(digest):
        pass  # leaving the block reads the rest and checks
    path.write_bytes(b"layer bytes and more")
    with pytest.raises(BlobVerificationError, match="longer than its size"):
        store.verify_blob(digest, len(b"layer bytes"))


def test_corrupted_manifest_fails_on_get(store: Store) -> None:
    image = put_image(store, b"x")
    path = store.blob_path(image.digest)
    path.chmod(0o644)
    path.write_bytes(path.read_bytes().replace(b'"schemaVersion":2', b'"schemaVersion":3'))
    with pytest.raises(BlobVerificationError, match=image.digest):
        store.get_manifest(image.digest)


def test_tags_are_immutable(store: Store) -> None:
    first = put_image(store, b"one", tag="app:1")
    before = (store.root / "index.json").read_bytes()
    blobs_before = sorted(p.name for p in store.blobs_dir.iterdir())
    with pytest.raises(TagConflictError, match=r"app:1.*already names"):
        put_image(store, b"two", tag="app:1")
    assert (store.root / "index.json").read_bytes() == before
    assert sorted(p.name for p in store.blobs_dir.iterdir()) == blobs_before  # nothing published
    assert list((store.root / ".tmp").iterdir()) == []
    again = put_image(store, b"one", tag="app:1")  # the same digest again is a no-op
    assert again.digest == first.digest
    assert [r.tags for r in store.list()] == [("app:1",)]
    put_image(store, b"one", tag="app:latest-stable")
    assert store.resolve("app:latest-stable").tags == ("app:1", "app:latest-stable")


@pytest.mark.parametrize("tag", ["", "-x", "a b", "a/../b", "x" * 256, "ü"])
def test_invalid_tags_are_refused(store: Store, tag: str) -> None:
    with pytest.raises(ValueError, match="not a valid OCI reference name"):
        put_image(store, b"x", tag=tag)


def test_untagged_entry_is_replaced_by_a_tagged_one(store: Store) -> None:
    image = put_image(store, b"x")
    put_image(store, b"x", tag="v1")
    manifests = json.loads((store.root / "index.json").read_text())["manifests"]
    assert [m["digest"] for m in manifests] == [image.digest]
    assert manifests[0]["annotations"] == {oci.REF_NAME: "v1"}


def test_attach_and_referrers(store: Store) -> None:
    image = put_image(store, b"x", tag="v1")
    seen: list[str] = []
    sbom = store.attach(
        image.digest,
        "application/vnd.cyclonedx+json",
        b'{"bomFormat":"CycloneDX"}',
        "application/vnd.cyclonedx+json",
        {"org.opencontainers.image.created": "2025-01-02T03:04:05Z"},
        before_index=lambda d: seen.append(d.digest),
    )
    assert seen == [sbom.digest]
    manifest = store.get_manifest(sbom.digest)
    assert manifest["artifactType"] == "application/vnd.cyclonedx+json"
    assert manifest["subject"] == {
        "mediaType": oci.MANIFEST,
        "digest": image.digest,
        "size": image.size,
    }
    assert manifest["config"]["digest"] == oci.EMPTY_DIGEST
    assert store.has_blob(oci.EMPTY_DIGEST)
    assert [d.digest for d in store.referrers(image.digest)] == [sbom.digest]
    assert store.referrers(image.digest, "application/other") == []
    assert [r.digest for r in store.list()] == [image.digest]  # artifacts are not images
    with pytest.raises(NotFoundError):
        store.attach("sha256:" + "0" * 64, "t", b"x", "t")


def test_failing_hook_leaves_the_index_unchanged(store: Store) -> None:
    image = put_image(store, b"x", tag="v1")
    before = (store.root / "index.json").read_bytes()

    def boom(_: Descriptor) -> None:
        raise RuntimeError("ledger unavailable")

    with pytest.raises(RuntimeError):
        store.attach(image.digest, "t/x", b"doc", "t/x", None, boom)
    assert (store.root / "index.json").read_bytes() == before


def _add_images(root: str, worker: int, count: int) -> None:
    store = Store.open(Path(root))
    for i in range(count):
        put_image(store, f"{worker}-{i}".encode(), tag=f"w{worker}:{i}")


def test_concurrent_writers_lose_no_entry(store: Store) -> None:
    workers, count = 4, 15
    context = multiprocessing.get_context("fork")
    procs = [
        context.Process(target=_add_images, args=(str(store.root), w, count))
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    tags = {tag for record in store.list() for tag in record.tags}
    assert tags == {f"w{w}:{i}" for w in range(workers) for i in range(count)}
    leftovers = [p for p in store.root.iterdir() if p.name.startswith(".index.json")]
    assert leftovers == []


def test_damaged_index_is_a_store_error(store: Store) -> None:
    (store.root / "index.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"index\.json is not valid JSON"):
        store.list()


def test_resolve_unknown(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.resolve("nope")
    with pytest.raises(NotFoundError):
        store.resolve("sha256:" + "a" * 64)
    with pytest.raises(ValueError, match="not a digest"):
        store.resolve("sha256:ABC")
    assert not os.listdir(store.root / ".tmp")


def staged_image(stage: Stage, payload: bytes) -> tuple[Descriptor, Descriptor]:
    """An image and an artifact about it, staged together but not committed (for commit_many)."""
    layer = stage.put(payload, oci.LAYER_TAR)
    config = stage.put(b"{}", oci.CONFIG)
    image = {"schemaVersion": 2, "mediaType": oci.MANIFEST, "config": config.to_dict()}
    image["layers"] = [layer.to_dict()]
    manifest = stage.put(oci.encode(image), oci.MANIFEST)
    note = stage.put(b'{"note": 1}', "application/json")
    artifact = {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "artifactType": "application/vnd.example.note",
        "config": oci.empty_config().to_dict(),
        "layers": [note.to_dict()],
        "subject": manifest.to_dict(),
    }
    stage.put(oci.EMPTY_JSON, oci.EMPTY)
    referrer = stage.put(
        oci.encode(artifact), oci.MANIFEST, artifact_type="application/vnd.example.note"
    )
    return manifest, referrer


def test_commit_many_lists_an_image_and_its_referrers_in_one_index_write(store: Store) -> None:
    writes: list[int] = []
    real = store._write_json

    def counting(name: str, value: dict[str, object]) -> None:
        writes.append(len(value.get("manifests", [])))  # type: ignore[arg-type]
        real(name, value)

    store._write_json = counting  # type: ignore[method-assign]
    with store.stage() as stage:
        manifest, referrer = staged_image(stage, b"layer")
        store.commit_many(stage, [(manifest, "app:1"), (referrer, None)])
    assert writes == [2]  # one write, naming both
    assert store.resolve("app:1").digest == manifest.digest
    assert [d.digest for d in store.referrers(manifest.digest)] == [referrer.digest]


@pytest.mark.parametrize("failure", ["hook", "tag-in-batch", "tag-in-index", "second-add"])
def test_commit_many_failing_midway_leaves_the_index_unchanged(
    store: Store, failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    put_image(store, b"older", tag="app:1")
    index_before = (store.root / "index.json").read_bytes()
    stage = store.stage()
    manifest, referrer = staged_image(stage, b"newer")
    batch: list[tuple[Descriptor, str | None]] = [(manifest, "app:2"), (referrer, None)]
    hook = None
    if failure == "hook":

        def hook() -> None:  # the ledger append, failing
            raise OSError("disk full while recording")

        expected: type[Exception] = OSError
    elif failure == "tag-in-batch":
        batch.append((referrer, "app:2"))
        expected = TagConflictError
    elif failure == "tag-in-index":
        batch[0] = (manifest, "app:1")
        expected = TagConflictError
    else:
        calls = []
        add = IndexEditor.add

        def add_then_fail(
            self: IndexEditor, descriptor: Descriptor, tag: str | None = None
        ) -> None:
            calls.append(descriptor)
            if len(calls) == 2:
                raise StoreError("failed after the image, before its referrer")
            add(self, descriptor, tag)

        monkeypatch.setattr(IndexEditor, "add", add_then_fail)
        expected = StoreError
    with stage, pytest.raises(expected):
        store.commit_many(stage, batch, hook)
    assert (store.root / "index.json").read_bytes() == index_before
    assert [r.tags for r in store.list(include_referrers=True)] == [("app:1",)]
    if failure.startswith("tag"):  # refused before anything was published
        assert not store.has_blob(manifest.digest)


def test_an_oversized_index_is_refused(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    put_image(store, b"layer", tag="app:1")
    size = (store.root / "index.json").stat().st_size
    monkeypatch.setattr(store_module, "MAX_INDEX_BYTES", size)
    assert [r.tags for r in store.list()] == [("app:1",)]  # exactly at the limit: read
    monkeypatch.setattr(store_module, "MAX_INDEX_BYTES", size - 1)
    with pytest.raises(StoreError, match="larger than"):
        store.list()
