"""Our layouts, read by independent OCI implementations: skopeo (containers/image) and umoci.

Skipped when the tools are missing, except under CI=true where they must be installed
(Debian packages `skopeo` and `umoci`).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from immutrail.artifacts import oci
from immutrail.artifacts.builder import build
from immutrail.artifacts.export import export_image
from immutrail.artifacts.store import Store

from .conftest import need_tool, set_compression


def tool(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_skopeo_inspects_the_store_and_the_export(
    repo: Path, home: Path, tmp_path: Path, compression: str
) -> None:
    skopeo = need_tool("skopeo")
    set_compression(repo, compression)
    result = build(repo / "image.yaml", home, tag="app:1")
    store = home / "store"
    info = json.loads(tool(skopeo, "inspect", f"oci:{store}:app:1"))
    assert info["Digest"] == result.digest
    assert info["Layers"] == [layer.digest for layer in result.layers]
    assert (info["Os"], info["Architecture"]) == ("linux", "amd64")
    raw = tool(skopeo, "inspect", "--raw", f"oci:{store}:app:1")
    assert Store.for_home(home).read_blob(result.digest) == raw.encode()
    media_type = oci.LAYER_TAR if compression == "none" else oci.LAYER_GZIP
    assert [layer["mediaType"] for layer in json.loads(raw)["layers"]] == [media_type] * 2

    archive = tmp_path / "app.tar"
    export_image(Store.for_home(home), "app:1", archive)
    assert json.loads(tool(skopeo, "inspect", f"oci-archive:{archive}:app:1"))["Digest"] == (
        result.digest
    )
    copy = tmp_path / "copy"
    tool(skopeo, "copy", "--preserve-digests", f"oci:{store}:app:1", f"oci:{copy}:again")
    assert json.loads(tool(skopeo, "inspect", f"oci:{copy}:again"))["Digest"] == result.digest


def tree(root: Path) -> dict[str, tuple[str, int, int, int, str]]:
    """path -> (kind, permission bits, uid, gid, content or link target)."""
    out: dict[str, tuple[str, int, int, int, str]] = {}
    for path in sorted(root.rglob("*")):
        info = path.lstat()
        name = str(path.relative_to(root))
        if stat.S_ISLNK(info.st_mode):
            out[name] = ("link", 0, info.st_uid, info.st_gid, os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            out[name] = ("dir", stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, "")
        else:
            content = path.read_text()
            out[name] = ("file", stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, content)
    return out


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_umoci_unpacks_the_definitions_content(
    repo: Path, home: Path, tmp_path: Path, compression: str
) -> None:
    umoci = need_tool("umoci")
    set_compression(repo, compression)
    build(repo / "image.yaml", home, tag="app:1")
    bundle = tmp_path / "bundle"
    as_root = os.geteuid() == 0
    args = [umoci, "unpack", "--image", f"{home / 'store'}:app:1", str(bundle)]
    if not as_root:
        args.insert(2, "--rootless")
    tool(*args)
    owner = (1000, 1000) if as_root else (os.geteuid(), os.getegid())
    root = (0, 0) if as_root else (os.geteuid(), os.getegid())
    app = (repo / "app" / "main.py").read_text()
    run = (repo / "app" / "bin" / "run").read_text()
    assert tree(bundle / "rootfs") == {
        "etc": ("dir", 0o755, *root, ""),
        "etc/app": ("dir", 0o755, *root, ""),
        "etc/app/app.toml": ("file", 0o640, *owner, "port = 8080\n"),
        "opt": ("dir", 0o755, *root, ""),
        "opt/app": ("dir", 0o755, *root, ""),
        "opt/app/bin": ("dir", 0o755, *root, ""),
        "opt/app/bin/main": ("link", 0, *root, "../main.py"),
        "opt/app/bin/run": ("file", 0o755, *root, run),
        "opt/app/lib": ("dir", 0o755, *root, ""),
        "opt/app/lib/util.py": ("file", 0o644, *root, "X = 1\n"),
        "opt/app/main.py": ("file", 0o644, *root, app),
    }
    config = json.loads((bundle / "config.json").read_text())
    assert config["process"]["args"] == ["/opt/app/bin/run"]
    assert "APP_HOME=/opt/app" in config["process"]["env"]
