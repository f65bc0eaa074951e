"""Layers that real images have and unpacking once crashed on: absolute symbolic links, and
trees deeper than Python's recursion limit; import refuses what no folder can hold."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from artifacts.test_import import member, new_home, oci_layout, snapshot, tar_of, write_tar
from immutrail.artifacts.import_errors import ImportLimits, UnsafeLayerError
from immutrail.artifacts.importer import import_image
from immutrail.artifacts.store import Store
from immutrail.artifacts.unpack import make_read_only, make_writable, remove_tree, unpack_image
from immutrail.cli.main import app
from immutrail.ledger.home import open_ledger
from immutrail.policy.imagetest import run_image_test

runner = CliRunner()
BUSYBOX = b"\x7fELF pretend busybox"


def import_layers(tmp_path: Path, home: Path, *layers: bytes, **limits: int) -> str:
    files, _ = oci_layout(list(layers))
    archive = write_tar(tmp_path / "image.tar", files)
    return import_image(archive, home, limits=ImportLimits(**limits)).digest


def test_absolute_symlink_is_unpacked_as_written(tmp_path: Path) -> None:
    home = new_home(tmp_path / "home")
    layer = tar_of(
        [
            member("bin/", kind=tarfile.DIRTYPE, mode=0o755),
            member("bin/busybox", BUSYBOX, mode=0o755),
            member("bin/sh", kind=tarfile.SYMTYPE, link="/bin/busybox"),
            member("etc/", kind=tarfile.DIRTYPE, mode=0o755),
            member("etc/passwd-link", kind=tarfile.SYMTYPE, link="/etc/passwd"),
        ]
    )
    digest = import_layers(tmp_path, home, layer)
    root = unpack_image(Store.for_home(home), digest, tmp_path / "root")
    try:
        assert os.readlink(root / "bin/sh") == "/bin/busybox"  # the image's root, not ours
        assert os.readlink(root / "etc/passwd-link") == "/etc/passwd"
        assert (root / "bin/busybox").read_bytes() == BUSYBOX
    finally:
        make_writable(root)
    # and `immutrail test` runs against it
    ledger = open_ledger(home)
    try:
        run = run_image_test(
            Store.for_home(home), ledger, home, "ci", digest, ["test", "-L", "bin/sh"]
        )
    finally:
        ledger.close()
    assert run.passed


def test_folder_over_an_absolute_link_never_touches_the_links_target(tmp_path: Path) -> None:
    home = new_home(tmp_path / "home")
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o755)
    lower = tar_of([member("lib", kind=tarfile.SYMTYPE, link=str(outside))])
    upper = tar_of(
        [member("lib/", kind=tarfile.DIRTYPE, mode=0o700), member("lib/x", b"x", mode=0o644)]
    )
    digest = import_layers(tmp_path, home, lower, upper)
    root = unpack_image(Store.for_home(home), digest, tmp_path / "root")
    try:
        assert not (root / "lib").is_symlink() and (root / "lib/x").read_bytes() == b"x"
    finally:
        make_writable(root)
    assert list(outside.iterdir()) == [] and outside.stat().st_mode & 0o777 == 0o755


def test_import_refuses_a_path_too_deep_to_unpack(tmp_path: Path) -> None:
    home = new_home(tmp_path / "home")
    before = snapshot(home)
    deep = tar_of([member("d/" * 3000 + "f", b"1")])
    files, _ = oci_layout([deep])
    archive = write_tar(tmp_path / "deep.tar", files)
    with pytest.raises(UnsafeLayerError, match="more than 256 folders deep"):
        import_image(archive, home)
    result = runner.invoke(app, ["artifact", "import", str(archive), "--home", str(home)])
    assert result.exit_code == 2, result.output
    assert "more than 256 folders deep" in result.stderr
    assert snapshot(home) == before


@pytest.mark.parametrize(
    ("name", "link", "gist"),
    [
        ("d/" * 300 + "f", "", "more than 256 folders deep"),
        ("n" * 300, "", "longer than 255 bytes"),
        ("l", "/" + "t" * 5000, "link target is longer than 4095 bytes"),
    ],
)
def test_import_refuses_paths_no_folder_can_hold(
    tmp_path: Path, name: str, link: str, gist: str
) -> None:
    home = new_home(tmp_path / "home")
    before = snapshot(home)
    entry = member(name, kind=tarfile.SYMTYPE, link=link) if link else member(name, b"1")
    files, _ = oci_layout([tar_of([entry])])
    with pytest.raises(UnsafeLayerError, match=gist):
        import_image(write_tar(tmp_path / "bad.tar", files), home)
    assert snapshot(home) == before


def test_unpacking_a_deep_tree_does_not_recurse(tmp_path: Path) -> None:
    # 1,500 folders: deeper than Python's recursion limit (os.walk and shutil.rmtree recurse)
    home = new_home(tmp_path / "home")
    deep = tar_of([member("d/" * 1500 + "f", b"1")])
    digest = import_layers(
        tmp_path, home, deep, max_layer_path_bytes=4000, max_layer_path_depth=2000
    )
    root = unpack_image(Store.for_home(home), digest, tmp_path / "root")
    assert not os.access(root / "d", os.W_OK) or os.geteuid() == 0
    make_writable(root)
    remove_tree(root)
    assert not root.exists()


def test_read_only_and_remove_a_deep_folder(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    folder = root
    for _ in range(1500):
        folder = folder / "d"
        folder.mkdir()
    (folder / "f").write_bytes(b"x")
    (folder / "loop").symlink_to("loop")
    make_read_only(root)
    make_writable(root)
    remove_tree(root)
    assert not root.exists()


def test_import_refuses_a_path_too_long_to_unpack(tmp_path: Path) -> None:
    home = new_home(tmp_path / "home")
    before = snapshot(home)
    files, _ = oci_layout([tar_of([member("/".join(["n" * 250] * 9), b"1")])])
    with pytest.raises(UnsafeLayerError, match="longer than 2048 bytes"):
        import_image(write_tar(tmp_path / "long.tar", files), home)
    assert snapshot(home) == before
