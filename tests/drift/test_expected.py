"""The expected tree: layers applied in order, verified while read, cached under a seal."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from immutrail.artifacts.builder import BuildResult
from immutrail.artifacts.store import Store
from immutrail.artifacts.unpack import unpack_image
from immutrail.drift import (
    DriftError,
    DriftInputError,
    ImageVerificationError,
    Kind,
    check_root,
    drift_key,
    expected_files,
)
from immutrail.drift.expected import cache_path

from .conftest import file, store_image


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_layers_are_applied_with_whiteouts_opaque_folders_and_links(
    layered: tuple[Store, str],
) -> None:
    store, digest = layered
    tree = expected_files(store, digest)

    assert tree.image == digest and tree.source == "store" and tree.cache_problem is None
    assert sorted(e.path for e in tree) == [
        "bin",
        "bin/plain",
        "bin/tool",
        "bin/tool-again",
        "etc",
        "etc/a.conf",
        "etc/current",
        "opt",
        "opt/old",
        "opt/old/new",
        "srv",
        "srv/data",
    ]  # etc/b.conf whited out; opt/old/x and y hidden by the opaque marker
    a_conf = tree.entries["etc/a.conf"]
    assert (a_conf.kind, a_conf.sha256, a_conf.size) == (Kind.FILE, sha(b"a=2\n"), 4)
    tool = tree.entries["bin/tool"]
    assert (tool.kind, tool.mode) == (Kind.FILE, 0o4755)  # as the image says; setuid kept
    again = tree.entries["bin/tool-again"]
    assert (again.kind, again.link_target, again.sha256) == (
        Kind.HARDLINK,
        "bin/tool",
        tool.sha256,
    )
    link = tree.entries["etc/current"]
    assert (link.kind, link.link_target, link.sha256) == (Kind.SYMLINK, "a.conf", None)
    data = tree.entries["srv/data"]
    assert (data.uid, data.gid) == (1000, 1000)
    implicit = tree.entries["opt"]
    assert (implicit.kind, implicit.mode, implicit.uid) == (Kind.DIRECTORY, 0o755, 0)
    assert tree.file_count == 6
    assert tree.content_bytes == sum(e.size for e in tree if e.is_file)


def test_a_clean_unpack_of_a_tricky_image_shows_no_finding(
    layered: tuple[Store, str], tmp_path: Path
) -> None:
    # setuid dropped, write bits cleared, owners not kept, folder modes from the umask: the
    # unpacker's normalisation, which the comparison must mirror exactly
    store, digest = layered
    root = unpack_image(store, digest, tmp_path / "rootfs")
    report = check_root(expected_files(store, digest), root)
    assert report.clean, report.summary()
    assert report.entries_checked == 12 and report.files_checked == 6
    assert report.files_hashed == 6 and report.full


def test_the_builders_image_matches_its_unpacked_root(
    home: Path, app_image: BuildResult, tmp_path: Path
) -> None:
    store = Store.for_home(home)
    tree = expected_files(store, "app:1")  # a tag resolves to its digest
    assert tree.image == app_image.digest and tree.config == app_image.config.digest
    assert tree.entries["etc/app/app.toml"].mode == 0o640
    assert (tree.entries["etc/app/app.toml"].uid, tree.entries["etc/app/app.toml"].gid) == (
        1000,
        1000,
    )
    assert tree.entries["opt/app/bin/main"].link_target == "../server.py"
    root = unpack_image(store, app_image.digest, tmp_path / "rootfs")
    assert check_root(tree, root).clean


def test_the_cache_is_used_and_a_tampered_one_is_rebuilt(layered: tuple[Store, str]) -> None:
    store, digest = layered
    built = expected_files(store, digest)
    cached = expected_files(store, digest)
    assert cached.source == "cache" and cached.cache_problem is None
    assert cached.entries == built.entries and cached.digest == built.digest

    # one byte of one hash changed: the seal no longer matches
    path = cache_path(store, digest)
    document = json.loads(path.read_bytes())
    row = next(r for r in document["body"]["entries"] if r[0] == "etc/a.conf")
    row[6] = sha(b"a=1\n")
    path.write_text(json.dumps(document))
    rebuilt = expected_files(store, digest)
    assert rebuilt.source == "store"
    assert rebuilt.cache_problem is not None and "does not match its seal" in rebuilt.cache_problem
    assert rebuilt.entries["etc/a.conf"].sha256 == sha(b"a=2\n")
    assert expected_files(store, digest).source == "cache"  # the rebuilt cache was written back

    # a cache that is intact but belongs to another image, renamed into place
    other = store_image(store, [[file("only", b"1")]], "other:1")
    expected_files(store, other)
    cache_path(store, digest).write_bytes(cache_path(store, other).read_bytes())
    again = expected_files(store, digest)
    assert again.source == "store" and "describes image" in (again.cache_problem or "")
    assert again.entries == built.entries

    # a digest-only seal (no key) is refused where a keyed one is expected
    path.write_text(json.dumps({"seal": {"algorithm": "sha256", "value": "0" * 64}, "body": {}}))
    downgraded = expected_files(store, digest)
    assert downgraded.source == "store" and "sealed with 'sha256'" in (
        downgraded.cache_problem or ""
    )
    assert expected_files(store, digest, use_cache=False).source == "store"


def test_a_damaged_layer_is_refused(layered: tuple[Store, str]) -> None:
    store, digest = layered
    _, blobs = store.image_blobs(digest)
    layer = store.blob_path(blobs[-1].digest)
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0xFF
    layer.chmod(0o644)
    layer.write_bytes(bytes(data))
    with pytest.raises(ImageVerificationError, match=r"does not match its digest|not a readable"):
        expected_files(store, digest)
    assert not cache_path(store, digest).exists()  # nothing cached from bad bytes


def test_a_layer_with_the_wrong_diff_id_is_refused(home: Path) -> None:
    store = Store.for_home(home, create=True)
    digest = store_image(store, [[file("a", b"1")]], "a:1")
    manifest, blobs = store.image_blobs(digest)
    config = store.get_json(blobs[0])
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    from immutrail.artifacts import oci

    with store.stage() as stage:
        config_descriptor = stage.put(oci.encode(config), oci.CONFIG)
        manifest["config"] = config_descriptor.to_dict()
        descriptor = stage.put(oci.encode(manifest), oci.MANIFEST)
        store.commit(stage, descriptor, "a:2")
    with pytest.raises(ImageVerificationError, match="but the config says"):
        expected_files(store, descriptor.digest)


@pytest.mark.parametrize(
    ("ref", "problem"),
    [
        ("sha256:" + "0" * 64, "no image"),
        ("nothing:1", "no image"),
        ("sha256:xyz", "not a digest"),
    ],
)
def test_an_unknown_image_is_an_input_error(
    layered: tuple[Store, str], ref: str, problem: str
) -> None:
    store, _ = layered
    with pytest.raises(DriftInputError, match=problem):
        expected_files(store, ref)


def test_an_attached_artifact_is_not_an_image(home: Path, app_image: BuildResult) -> None:
    with pytest.raises(DriftInputError, match="not an image"):
        expected_files(Store.for_home(home), app_image.sbom)


def test_without_a_usable_key_the_tree_is_still_built_but_not_cached(
    layered: tuple[Store, str],
) -> None:
    store, digest = layered
    key = store.root / ".immutrail-drift" / "key"
    key.parent.mkdir(parents=True)
    key.write_bytes(b"short")
    with pytest.raises(DriftError, match="holds 5 bytes"):
        drift_key(store)
    tree = expected_files(store, digest)
    assert tree.source == "store" and "holds 5 bytes" in (tree.cache_problem or "")
    assert not cache_path(store, digest).exists()
    assert expected_files(store, digest).source == "store"
    key.unlink()
    assert len(drift_key(store)) == 32 and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert drift_key(store) == key.read_bytes()  # created once, then read
