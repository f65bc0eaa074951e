"""``compression: none``: uncompressed tar layers (``application/vnd.oci.image.layer.v1.tar``).

The same tree as the gzip build (same diff_ids), one hash per layer (blob digest = diff_id), byte
reproducible, mixed with a gzip base, and accepted by everything downstream of the store: SBOM,
unpack, export and import. The independent clients (skopeo, umoci, docker, the registry) are in
test_interop.py, test_docker_load.py and test_registry.py, beside the fixtures they start.
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from immutrail.artifacts import oci
from immutrail.artifacts.builder import BuildResult, build
from immutrail.artifacts.errors import DefinitionError
from immutrail.artifacts.export import export_image
from immutrail.artifacts.importer import import_image
from immutrail.artifacts.rootfs import RootFS
from immutrail.artifacts.sbom import generate_sbom
from immutrail.artifacts.store import Store
from immutrail.artifacts.unpack import make_writable, unpack_image
from immutrail.ledger.home import init_ledger

from .conftest import COMMIT_EPOCH, commit_all, write_files
from .test_builder import clone, events, snapshot
from .test_cli_artifacts import run


def new_home(path: Path) -> Path:
    init_ledger(path)[0].close()
    return path


def attached_sbom(store: Store, built: BuildResult) -> dict[str, Any]:
    manifest = store.get_manifest(built.sbom)
    document: dict[str, Any] = json.loads(store.read_blob(manifest["layers"][0]["digest"]))
    return document


def build_both(repo: Path, home: Path) -> tuple[BuildResult, BuildResult, Store]:
    """The uncompressed and the gzip image of one commit, in one store."""
    plain = build(repo / "plain.yaml", home, tag="app:plain")
    gzipped = build(repo / "image.yaml", home, tag="app:gzip")
    return plain, gzipped, Store.for_home(home)


def test_layers_are_plain_tar_hashed_once_with_the_gzip_builds_content(
    plain_repo: Path, home: Path
) -> None:
    plain, gzipped, store = build_both(plain_repo, home)

    assert [d.media_type for d in plain.layers] == [oci.LAYER_TAR] * 2
    assert [d.media_type for d in gzipped.layers] == [oci.LAYER_GZIP] * 2
    manifest = store.get_manifest(plain.digest)
    assert [layer["mediaType"] for layer in manifest["layers"]] == [oci.LAYER_TAR] * 2
    # the same tar: same diff_ids, and an uncompressed blob's digest is its diff_id
    assert [b.diff_id for b in plain.built] == [b.diff_id for b in gzipped.built]
    assert [b.descriptor.digest for b in plain.built] == [b.diff_id for b in plain.built]
    assert plain.digest != gzipped.digest
    for layer in plain.layers:
        blob = store.read_blob(layer.digest)
        assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer.digest
        assert len(blob) == layer.size and blob[:2] != b"\x1f\x8b"
    with tarfile.open(store.blob_path(plain.layers[1].digest), mode="r:") as tar:
        [config_file] = [m for m in tar.getmembers() if m.isfile()]
        assert config_file.name == "etc/app/app.toml" and config_file.mode == 0o640
    config = store.get_json(plain.config)
    assert config["rootfs"]["diff_ids"] == [layer.digest for layer in plain.layers]
    # the provenance's inputs do not depend on how the layers are stored
    assert plain.input_files == gzipped.input_files

    built_events = {e["subject"]: e["payload"] for e in events(home)}
    assert [x["media_type"] for x in built_events[plain.digest]["layers"]] == [oci.LAYER_TAR] * 2
    assert [x["media_type"] for x in built_events[gzipped.digest]["layers"]] == [oci.LAYER_GZIP] * 2


def test_byte_reproducible_across_clones_umasks_and_mtimes(
    plain_repo: Path, home: Path, tmp_path: Path
) -> None:
    a = clone(plain_repo, tmp_path / "clone-a", 0o022)
    b = clone(plain_repo, tmp_path / "clone-b", 0o077)
    for path in b.rglob("*"):
        if ".git" not in path.parts and not path.is_symlink():
            path.touch()  # today's mtime: the commit's time must win
    first = build(a / "plain.yaml", home)
    other = new_home(tmp_path / "other-home")
    second = build(b / "plain.yaml", other)
    assert first.digest == second.digest
    for mine, theirs in zip(first.layers, second.layers, strict=True):
        assert Store.for_home(home).read_blob(mine.digest) == Store.for_home(other).read_blob(
            theirs.digest
        )
    with tarfile.open(Store.for_home(home).blob_path(first.layers[0].digest), mode="r:") as tar:
        assert {m.mtime for m in tar.getmembers()} == {COMMIT_EPOCH}


def test_source_date_epoch_gives_the_same_digest_every_time(
    plain_repo: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = build(plain_repo / "plain.yaml", home)
    second = build(plain_repo / "plain.yaml", new_home(tmp_path / "again"))
    assert first.digest == second.digest
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert build(plain_repo / "plain.yaml", home).digest != first.digest  # the commit time now


def test_sbom_is_the_gzip_builds_and_the_one_read_back_from_the_layers(
    plain_repo: Path, home: Path
) -> None:
    plain, gzipped, store = build_both(plain_repo, home)
    ours, theirs = attached_sbom(store, plain), attached_sbom(store, gzipped)
    assert [c["purl"] for c in ours["components"]] == ["pkg:pypi/demo@1.2"]
    assert ours["components"] == theirs["components"]
    assert ours["dependencies"][0]["dependsOn"] == theirs["dependencies"][0]["dependsOn"]
    # made while writing, it is what a reader of the stored (uncompressed) layers finds
    read_back = generate_sbom(
        RootFS.from_layers(plain.layer_paths()),
        "app:plain",
        plain.digest,
        timestamp=datetime.fromisoformat(ours["metadata"]["timestamp"]),
    )
    assert read_back == ours
    assert [layer.compression for layer in RootFS.from_layers(plain.layer_paths()).layers] == [
        "none",
        "none",
    ]


def test_a_gzip_base_keeps_its_layers_under_an_uncompressed_child_and_back(
    plain_repo: Path, home: Path, tmp_path: Path
) -> None:
    base = build(plain_repo / "image.yaml", home, tag="base:gzip")
    plain_base = build(plain_repo / "plain.yaml", home, tag="base:plain")
    layer = "layers: [{source: README.md, destination: /README.md}]\n"
    write_files(
        plain_repo,
        {
            "child.yaml": f"base: {base.digest}\ncompression: none\n{layer}",
            "child-gzip.yaml": f"base: {plain_base.digest}\n{layer}",
        },
    )
    commit_all(plain_repo)
    child = build(plain_repo / "child.yaml", home, tag="child:1")
    assert [d.media_type for d in child.layers] == [oci.LAYER_GZIP] * 2 + [oci.LAYER_TAR]
    assert child.layers[:2] == base.layers
    back = build(plain_repo / "child-gzip.yaml", home, tag="child:2")
    assert [d.media_type for d in back.layers] == [oci.LAYER_TAR] * 2 + [oci.LAYER_GZIP]
    # both unpack (as the local runtime does) to the same files
    trees = []
    for name, image in (("a", child), ("b", back)):
        root = unpack_image(Store.for_home(home), image.digest, tmp_path / name)
        trees.append(
            {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        )
        make_writable(root)
    assert trees[0] == trees[1]
    assert trees[0]["README.md"] == b"# demo\n" and trees[0]["opt/app/main.py"]


def test_export_then_import_into_another_home(plain_repo: Path, home: Path, tmp_path: Path) -> None:
    built = build(plain_repo / "plain.yaml", home, tag="app:1")
    archive = tmp_path / "app.tar"
    export_image(Store.for_home(home), "app:1", archive)
    with tarfile.open(archive) as tar:
        [docker] = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert docker["Layers"] == [f"blobs/sha256/{d.digest[7:]}" for d in built.layers]

    other = new_home(tmp_path / "other")
    imported = import_image(archive, other, tag="app:1")
    assert imported.digest == built.digest
    store = Store.for_home(other)
    store.verify(built.digest)
    _, blobs = store.image_blobs(built.digest)
    assert [d.media_type for d in blobs[1:]] == [oci.LAYER_TAR] * 2


def test_bad_compression_exits_2_and_writes_nothing(plain_repo: Path, home: Path) -> None:
    write_files(plain_repo, {"bad.yaml": "base: scratch\ncompression: zstd\n" + LAYER})
    commit_all(plain_repo)
    build(plain_repo / "image.yaml", home)  # a store and a ledger with something in them
    before = snapshot(home)
    with pytest.raises(DefinitionError) as caught:
        build(plain_repo / "bad.yaml", home)
    assert "line 2: compression: 'zstd' must be `gzip` (the default) or `none`" in str(caught.value)
    assert str(plain_repo / "bad.yaml") in caught.value.diagnostics()

    stderr = run(home, "build", str(plain_repo / "bad.yaml"), code=2)
    assert "compression" in stderr and "zstd" in stderr
    assert snapshot(home) == before


LAYER = "layers: [{source: app, destination: /app}]\n"
