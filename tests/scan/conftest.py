"""Fixtures for the scan tests: real OSV records, an initialised home, images built from git.

Images are built with the real builder from a git repository whose files are the package
metadata a scanner looks for (a dist-info, a node_modules package.json, a dpkg status file),
so a scan goes the whole way: files -> SBOM -> database -> attestation -> ledger.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifacts.conftest import _isolated_git, make_repo  # noqa: F401 - fixtures
from immutrail.artifacts.builder import BuildResult, build
from immutrail.ledger.home import init_ledger, open_ledger
from immutrail.scan.scanner import import_database

DATA = Path(__file__).parent.parent / "data" / "scan"
OSV = DATA / "osv"
EXTRA = DATA / "extra"
REPORTS = DATA / "reports"

DEFINITION = """\
base: scratch
layers:
  - source: rootfs
    destination: /
"""


def dist_info(name: str, version: str) -> dict[str, str]:
    path = f"rootfs/usr/lib/python3/dist-packages/{name}-{version}.dist-info/METADATA"
    return {path: f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"}


def npm_package(name: str, version: str) -> dict[str, str]:
    path = f"rootfs/app/node_modules/{name}/package.json"
    return {path: json.dumps({"name": name, "version": version})}


DPKG_STATUS = """\
Package: nginx-full
Status: install ok installed
Architecture: amd64
Source: nginx
Version: 1.2.1-2.2+wheezy2

Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.13-38+deb7u10
"""

VULNERABLE_FILES: dict[str, str | bytes | tuple[str | bytes, int]] = {
    "image.yaml": DEFINITION,
    **dist_info("requests", "2.19.0"),
    **dist_info("urllib3", "1.24.1"),
    **dist_info("Jinja2", "2.10"),
    **dist_info("Flask", "2.3.2"),  # newer than every flask record: no finding
    **npm_package("minimist", "1.2.5"),
    **npm_package("ua-parser-js", "0.7.29"),
    "rootfs/var/lib/dpkg/status": DPKG_STATUS,
    "rootfs/etc/os-release": 'ID=debian\nVERSION_ID="7"\n',
}


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "home"
    ledger, _ = init_ledger(path)
    ledger.close()
    yield path


def import_into(home: Path, *paths: Path, skip_invalid: bool = False) -> None:
    ledger = open_ledger(home)
    try:
        import_database(home, ledger, list(paths), actor="user:test", skip_invalid=skip_invalid)
    finally:
        ledger.close()


@pytest.fixture
def db_home(home: Path) -> Path:
    """A home whose vulnerability database holds every real record of tests/data/scan."""
    import_into(home, OSV, EXTRA)
    return home


def build_image(tmp_path: Path, home: Path, files: dict, tag: str = "app:1") -> BuildResult:  # type: ignore[type-arg]
    repo = make_repo(tmp_path / f"repo-{tag.replace(':', '-')}", files)
    return build(repo / "image.yaml", home, tag=tag, actor="user:test")


@pytest.fixture
def vulnerable_image(tmp_path: Path, db_home: Path) -> BuildResult:
    return build_image(tmp_path, db_home, VULNERABLE_FILES)
