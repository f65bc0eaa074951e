"""Fixtures of the drift tests: homes and git repositories (artifacts), images built two ways.

* ``app_image``: built by the project's builder from a git repository (files, an executable, a
  symbolic link, a config file with its own mode and owner);
* ``layered_image``: tar layers written here and stored through the store API, for what the
  builder never writes but imported images do: whiteouts, opaque folders, hard links, setuid bits,
  owners other than root, a file replaced in an upper layer.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from artifacts.conftest import _isolated_git, home, make_repo  # noqa: F401
from immutrail.artifacts import oci
from immutrail.artifacts.builder import BuildResult, build
from immutrail.artifacts.digests import sha256_digest
from immutrail.artifacts.store import Store

APP_DEFINITION = """\
base: scratch
layers:
  - source: app
    destination: /opt/app
  - source: config/app.toml
    destination: /etc/app/app.toml
    mode: "0640"
    owner: "1000:1000"
entrypoint: ["python3", "/opt/app/server.py"]
workdir: /opt/app
"""

APP_FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    "image.yaml": APP_DEFINITION,
    "app/server.py": "print('serving')\n",
    "app/lib/util.py": "X = 1\n",
    "app/lib/extra.py": "Y = 2\n",
    "app/static/index.html": "<p>hello</p>\n",
    "app/bin/run": ("#!/bin/sh\nexec python3 /opt/app/server.py\n", 0o755),
    "app/bin/main": "-> ../server.py",
    "app/data/one.txt": "1\n",
    "app/data/two.txt": "2\n",
    "config/app.toml": "port = 8080\n",
}

SLEEPER = [
    "python3",
    "-c",
    "import os, time; "
    "log = open(os.path.join(os.environ['TMPDIR'], 'app.log'), 'w'); "
    "log.write('started\\n'); log.flush(); "
    "open(os.path.join(os.environ['HOME'], '.history'), 'w').write('x'); "
    "time.sleep(120)",
]
"""An instance that writes its logs into its scratch folder, then waits to be destroyed."""


def build_app(home: Path, tmp_path: Path, name: str = "app") -> BuildResult:
    repo = make_repo(tmp_path / f"repo-{name}", APP_FILES)
    return build(repo / "image.yaml", home, tag=f"{name}:1")


@pytest.fixture
def app_image(home: Path, tmp_path: Path) -> BuildResult:
    return build_app(home, tmp_path)


# --- hand-written layers ------------------------------------------------------------------------

Member = tuple[tarfile.TarInfo, bytes | None]


def file(name: str, content: bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Member:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.uid, info.gid = len(content), mode, uid, gid
    return info, content


def folder(name: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid = tarfile.DIRTYPE, mode, uid, gid
    return info, None


def symlink(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    return info, None


def hardlink(name: str, target: str, mode: int = 0o644) -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.LNKTYPE, target, mode
    return info, None


def whiteout(name: str) -> Member:
    return file(name, b"", 0o644)


def layer_bytes(members: Sequence[Member], compress: bool = True) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, content in members:
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    data = raw.getvalue()
    return gzip.compress(data, mtime=0) if compress else data


def store_image(store: Store, layers: Sequence[Sequence[Member]], tag: str) -> str:
    """Store an image made of ``layers`` (bottom first, gzip); its manifest digest."""
    blobs = [layer_bytes(members) for members in layers]
    diff_ids = [sha256_digest(gzip.decompress(blob)) for blob in blobs]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/tool"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    with store.stage() as stage:
        layer_descriptors = [stage.put(blob, oci.LAYER_GZIP) for blob in blobs]
        config_descriptor = stage.put(oci.encode(config), oci.CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST,
            "config": config_descriptor.to_dict(),
            "layers": [d.to_dict() for d in layer_descriptors],
        }
        descriptor = stage.put(oci.encode(manifest), oci.MANIFEST)
        store.commit(stage, descriptor, tag)
    return descriptor.digest


LOWER = [
    folder("etc"),
    file("etc/a.conf", b"a=1\n"),
    file("etc/b.conf", b"b=1\n", 0o600),
    folder("opt/old"),
    file("opt/old/x", b"x\n"),
    file("opt/old/y", b"y\n"),
    file("bin/tool", b"\x7fELF tool\n", 0o4755),
    file("bin/plain", b"plain\n", 0o640),
    folder("srv", 0o750, 1000, 1000),
    file("srv/data", b"data\n", 0o644, 1000, 1000),
    symlink("etc/current", "a.conf"),
    hardlink("bin/tool-again", "bin/tool", 0o4755),
]
UPPER = [
    whiteout("etc/.wh.b.conf"),
    whiteout("opt/old/.wh..wh..opq"),
    file("opt/old/new", b"new\n"),
    file("etc/a.conf", b"a=2\n", 0o644),
]


@pytest.fixture
def layered(home: Path) -> tuple[Store, str]:
    store = Store.for_home(home, create=True)
    return store, store_image(store, [LOWER, UPPER], "layered:1")
