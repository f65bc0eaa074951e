"""SBOM generation from real package metadata laid out in image layers (tests/data/sbom)."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from cyclonedx.model.bom import Bom
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator

from immutrail.artifacts import sbom as sbom_module
from immutrail.artifacts.attestations import SBOM_TYPE
from immutrail.artifacts.builder import build
from immutrail.artifacts.errors import ArtifactInputError
from immutrail.artifacts.rootfs import RootFS
from immutrail.artifacts.sbom import (
    SbomValidationError,
    find_packages,
    generate_sbom,
    pep503_name,
    sbom_serial_number,
)
from immutrail.artifacts.store import Store
from immutrail.crypto.canonical import canonical_json

from .conftest import COMMIT_EPOCH, make_repo

DATA = Path(__file__).resolve().parents[1] / "data" / "sbom"
SHARED = DATA / "real"
DIGEST = "sha256:" + "ab" * 32
WHEN = datetime(2026, 3, 14, 9, 0, tzinfo=UTC)

SITE = "usr/local/lib/python3.11/site-packages"
DEBIAN_BASE = {
    "etc/os-release": "os-release/debian-12",
    "var/lib/dpkg/status": "dpkg/status",
    "var/lib/dpkg/status.d/base-files": "dpkg/status.d/base-files",
    f"{SITE}/packaging-26.3.dist-info/METADATA": "pypi/packaging-26.3.dist-info.METADATA",
    f"{SITE}/rfc3339_validator-0.1.4.dist-info/METADATA": (
        "pypi/rfc3339_validator-0.1.4.dist-info.METADATA"
    ),
    "usr/lib/python3/dist-packages/lazr.restfulclient-0.14.5.egg-info/PKG-INFO": (
        "pypi/lazr.restfulclient-0.14.5.egg-info.PKG-INFO"
    ),
    "usr/lib/python2.7/wsgiref.egg-info": "pypi/wsgiref.egg-info",
}
NODE_APP = {
    "app/package-lock.json": "npm/package-lock.json",
    "app/node_modules/debug/package.json": "npm/node_modules/debug/package.json",
    "app/node_modules/ms/package.json": "npm/node_modules/ms/package.json",
    "app/node_modules/@types/ms/package.json": "npm/node_modules/@types/ms/package.json",
    "app/node_modules/debug/node_modules/ms/package.json": (
        "npm/node_modules/debug/node_modules/ms/package.json"
    ),
}
ALPINE = {"etc/os-release": "os-release/alpine-3.14", "lib/apk/db/installed": "apk/installed"}


def write_layer(path: Path, files: dict[str, bytes | str]) -> Path:
    """A gzip layer holding ``files`` (value: bytes, or a fixture path under tests/data/sbom)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, source in sorted(files.items()):
            data = source if isinstance(source, bytes) else (DATA / source).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def debian_node_rootfs(tmp_path: Path) -> RootFS:
    base = write_layer(tmp_path / "base.tar.gz", dict(DEBIAN_BASE))
    app = write_layer(tmp_path / "app.tar.gz", dict(NODE_APP))
    return RootFS.from_layers([base, app])


@pytest.fixture
def alpine_rootfs(tmp_path: Path) -> RootFS:
    return RootFS.from_layers([write_layer(tmp_path / "alpine.tar.gz", dict(ALPINE))])


def components_by_purl(bom: dict) -> dict[str, dict]:
    return {c["purl"]: c for c in bom["components"]}


def props(component: dict, name: str) -> list[str]:
    return [p["value"] for p in component.get("properties", []) if p["name"] == name]


def test_debian_python_npm_image_exact_components(debian_node_rootfs: RootFS) -> None:
    bom = generate_sbom(debian_node_rootfs, "registry.example/team/app:1.4", DIGEST, timestamp=WHEN)
    found = components_by_purl(bom)
    assert set(found) == {
        # Python (PEP 503 names: rfc3339_validator's Name is rfc3339-validator, lazr.* dots)
        "pkg:pypi/packaging@26.3",
        "pkg:pypi/rfc3339-validator@0.1.4",
        "pkg:pypi/lazr-restfulclient@0.14.5",
        "pkg:pypi/wsgiref@0.1.2",
        # Debian: status (login is "deinstall ok config-files": absent) + distroless status.d
        "pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?arch=amd64&distro=debian-12",
        "pkg:deb/debian/tzdata@2025b-0%2Bdeb12u2?arch=all&distro=debian-12",
        "pkg:deb/debian/util-linux@2.38.1-5%2Bdeb12u3?arch=amd64&distro=debian-12",
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12",
        "pkg:deb/debian/base-files@12.4%2Bdeb12u11?arch=amd64&distro=debian-12",
        # npm: lock and node_modules agree; nested ms 2.1.2 under debug; scoped @types/ms
        "pkg:npm/%40types/ms@0.7.34",
        "pkg:npm/debug@4.3.4",
        "pkg:npm/ms@2.1.3",
        "pkg:npm/ms@2.1.2",
    }
    assert not any("login" in purl for purl in found)

    scoped = found["pkg:npm/%40types/ms@0.7.34"]
    assert (scoped["group"], scoped["name"], scoped["version"]) == ("@types", "ms", "0.7.34")
    assert props(scoped, "immutrail:path") == [
        "app/node_modules/@types/ms/package.json",
        "app/package-lock.json",
    ]
    assert [o["location"] for o in scoped["evidence"]["occurrences"]] == [
        "app/node_modules/@types/ms/package.json",
        "app/package-lock.json",
    ]
    assert props(found["pkg:npm/ms@2.1.2"], "immutrail:path") == [
        "app/node_modules/debug/node_modules/ms/package.json",
        "app/package-lock.json",
    ]

    packaging = found["pkg:pypi/packaging@26.3"]
    assert packaging["licenses"] == [{"expression": "Apache-2.0 OR BSD-2-Clause"}]
    assert props(packaging, "immutrail:path") == [f"{SITE}/packaging-26.3.dist-info/METADATA"]
    assert found["pkg:pypi/rfc3339-validator@0.1.4"]["name"] == "rfc3339-validator"
    assert found["pkg:pypi/lazr-restfulclient@0.14.5"]["name"] == "lazr.restfulclient"
    assert found["pkg:pypi/lazr-restfulclient@0.14.5"]["licenses"] == [
        {"license": {"name": "LGPL v3"}}
    ]
    assert props(found["pkg:pypi/wsgiref@0.1.2"], "immutrail:path") == [
        "usr/lib/python2.7/wsgiref.egg-info"
    ]
    assert found["pkg:npm/debug@4.3.4"]["licenses"] == [{"license": {"id": "MIT"}}]

    libc = found["pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12"]
    assert props(libc, "immutrail:deb:source-name") == ["glibc"]
    assert props(libc, "immutrail:deb:source-version") == ["2.36-9+deb12u14"]
    assert props(libc, "immutrail:path") == ["var/lib/dpkg/status"]
    base_files = found["pkg:deb/debian/base-files@12.4%2Bdeb12u11?arch=amd64&distro=debian-12"]
    assert props(base_files, "immutrail:path") == ["var/lib/dpkg/status.d/base-files"]

    # the image itself
    meta = bom["metadata"]
    assert meta["component"]["type"] == "container"
    assert meta["component"]["purl"] == (
        f"pkg:oci/app@{DIGEST}?repository_url=registry.example/team/app&tag=1.4"
    )
    assert meta["component"]["version"] == DIGEST
    assert meta["timestamp"] == "2026-03-14T09:00:00+00:00"
    assert bom["serialNumber"] == f"urn:uuid:{sbom_serial_number(DIGEST)}"
    assert bom["specVersion"] == "1.6"
    assert {"name": "immutrail:distro", "value": "debian-12"} in meta["properties"]
    root_deps = next(d for d in bom["dependencies"] if d["ref"] == meta["component"]["bom-ref"])
    assert sorted(root_deps["dependsOn"]) == sorted(c["bom-ref"] for c in bom["components"])


def test_alpine_image_exact_components(alpine_rootfs: RootFS) -> None:
    bom = generate_sbom(alpine_rootfs, "alpine", DIGEST, timestamp=WHEN)
    found = components_by_purl(bom)
    distro = "arch=armv7&distro=alpine-3.14.2"
    assert set(found) == {
        f"pkg:apk/alpine/musl@1.2.2-r3?{distro}",
        f"pkg:apk/alpine/ca-certificates-bundle@20191127-r5?{distro}",
        f"pkg:apk/alpine/musl-utils@1.2.2-r3?{distro}",
        f"pkg:apk/alpine/libretls@3.3.3-r2?{distro}",
        f"pkg:apk/alpine/ssl_client@1.33.1-r3?{distro}",
    }
    assert found[f"pkg:apk/alpine/libretls@3.3.3-r2?{distro}"]["licenses"] == [
        {"expression": "ISC AND (BSD-3-Clause OR MIT)"}
    ]
    # "MIT BSD GPL2+" is no SPDX expression: kept as a named license, not dropped or mangled
    assert found[f"pkg:apk/alpine/musl-utils@1.2.2-r3?{distro}"]["licenses"] == [
        {"license": {"name": "MIT BSD GPL2+"}}
    ]
    ssl_client = found[f"pkg:apk/alpine/ssl_client@1.33.1-r3?{distro}"]
    assert props(ssl_client, "immutrail:apk:origin") == ["busybox"]
    assert props(ssl_client, "immutrail:path") == ["lib/apk/db/installed"]
    assert bom["metadata"]["component"]["purl"] == f"pkg:oci/alpine@{DIGEST}"


def test_output_validates_and_is_deterministic(debian_node_rootfs: RootFS, tmp_path: Path) -> None:
    first = generate_sbom(debian_node_rootfs, "app", DIGEST, timestamp=WHEN)
    # the same layers read again, and a timestamp in another zone for the same instant
    again = RootFS.from_layers([layer.path for layer in debian_node_rootfs.layers])
    later_zone = WHEN.astimezone(timezone(timedelta(hours=5)))
    second = generate_sbom(again, "app", DIGEST, timestamp=later_zone)
    assert canonical_json(first) == canonical_json(second)
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    assert validator.validate_str(json.dumps(first)) is None
    other = generate_sbom(debian_node_rootfs, "app", "sha256:" + "cd" * 32, timestamp=WHEN)
    assert other["serialNumber"] != first["serialNumber"]
    assert uuid.UUID(first["serialNumber"].removeprefix("urn:uuid:")).version == 5


def test_validator_catches_a_broken_bom(monkeypatch, alpine_rootfs: RootFS) -> None:
    """validate_str returns its error; generate_sbom must turn it into an exception."""
    real_output = sbom_module.JsonV1Dot6.output_as_string

    def corrupt(self, **kwargs):
        document = json.loads(real_output(self, **kwargs))
        document["components"][0]["type"] = "not-a-component-type"
        return json.dumps(document)

    monkeypatch.setattr(sbom_module.JsonV1Dot6, "output_as_string", corrupt)
    with pytest.raises(SbomValidationError, match=r"not valid CycloneDX 1\.6"):
        generate_sbom(alpine_rootfs, "alpine", DIGEST, timestamp=WHEN)


def test_same_purl_at_two_locations_gets_two_components(tmp_path: Path) -> None:
    ms = "npm/node_modules/ms/package.json"
    layer = write_layer(
        tmp_path / "l.tar.gz",
        {"srv/a/node_modules/ms/package.json": ms, "srv/b/node_modules/ms/package.json": ms},
    )
    bom = generate_sbom(RootFS.from_layers([layer]), "x", DIGEST, timestamp=WHEN)
    assert [c["purl"] for c in bom["components"]] == ["pkg:npm/ms@2.1.3"] * 2
    refs = {c["bom-ref"] for c in bom["components"]}
    assert len(refs) == 2


def test_unreadable_sources_are_reported_in_the_bom(tmp_path: Path) -> None:
    lock_v1 = json.dumps({"name": "old", "lockfileVersion": 1, "dependencies": {}}).encode()
    layer = write_layer(
        tmp_path / "l.tar.gz",
        {
            "old/package-lock.json": lock_v1,
            "broken/node_modules/x/package.json": b"{not json",
            "site/nover-1.dist-info/METADATA": b"Metadata-Version: 2.1\nName: nover\n",
            "var/lib/dpkg/status": b"Package: big\nVersion: 1\n" * 100,
        },
    )
    fs = RootFS.from_layers([layer], max_content_bytes=1000)
    inventory = find_packages(fs)
    assert inventory.packages == []
    reasons = {s.path: s.reason for s in inventory.skipped}
    assert "lockfileVersion 1" in reasons["old/package-lock.json"]
    assert "not valid JSON" in reasons["broken/node_modules/x/package.json"]
    assert "no Name or Version" in reasons["site/nover-1.dist-info/METADATA"]
    assert "larger than 1000" in reasons["var/lib/dpkg/status"]
    bom = generate_sbom(fs, "x", DIGEST, timestamp=WHEN)
    skipped = [
        p["value"] for p in bom["metadata"]["properties"] if p["name"] == "immutrail:skipped"
    ]
    assert len(skipped) == 4
    assert "components" not in bom or bom["components"] == []


def test_dpkg_status_requires_installed_status(tmp_path: Path) -> None:
    status = (
        b"Package: a\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n\n"
        b"Package: b\nStatus: deinstall ok config-files\nVersion: 2\n\n"
        b"Package: c\nStatus: install ok half-configured\nVersion: 3\n\n"
        b"Package: d\nVersion: 4\n"
    )
    distroless = b"Package: e\nVersion: 5\nArchitecture: arm64\n"
    layer = write_layer(
        tmp_path / "l.tar.gz",
        {
            "var/lib/dpkg/status": status,
            "var/lib/dpkg/status.d/e": distroless,
            "var/lib/dpkg/status.d/e.md5sums": b"d41d8cd98f00b204e9800998ecf8427e  usr/bin/e\n",
        },
    )
    purls = [p.purl.to_string() for p in find_packages(RootFS.from_layers([layer])).packages]
    # no os-release: namespace debian, no distro qualifier
    assert purls == ["pkg:deb/debian/a@1?arch=amd64", "pkg:deb/debian/e@5?arch=arm64"]


def test_upper_layer_removing_a_package_removes_it_from_the_sbom(tmp_path: Path) -> None:
    base = write_layer(tmp_path / "base.tar.gz", dict(NODE_APP))
    upper = write_layer(
        tmp_path / "rm.tar.gz",
        {"app/node_modules/debug/.wh.node_modules": b"", "app/node_modules/.wh.ms": b""},
    )
    purls = {p.purl.to_string() for p in find_packages(RootFS.from_layers([base, upper])).packages}
    # the lockfile still lists them (its own paths), but node_modules no longer has them
    nm_paths = {
        path
        for p in find_packages(RootFS.from_layers([base, upper])).packages
        for path in p.paths
        if "node_modules" in path
    }
    assert "pkg:npm/ms@2.1.3" in purls  # from the lock
    assert nm_paths == {
        "app/node_modules/debug/package.json",
        "app/node_modules/@types/ms/package.json",
    }


def test_pep503() -> None:
    assert pep503_name("Foo.Bar__baz-QUX") == "foo-bar-baz-qux"
    assert pep503_name("rfc3339_validator") == "rfc3339-validator"


def test_bad_arguments(alpine_rootfs: RootFS) -> None:
    with pytest.raises(ArtifactInputError):
        generate_sbom(alpine_rootfs, "alpine", "sha256:xyz", timestamp=WHEN)
    with pytest.raises(ValueError, match="timezone"):
        generate_sbom(alpine_rootfs, "alpine", DIGEST, timestamp=datetime(2026, 1, 1))


# -- reading CycloneDX 1.6 written by others, the same way ----------------------------------


def test_real_trivy_cyclonedx_16_reads_with_the_library() -> None:
    text = (SHARED / "cyclonedx-1.6-trivy-conda.cdx.json").read_text()
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    document = json.loads(text)
    bom = Bom.from_json(document)  # type: ignore[attr-defined]
    purls = sorted(str(c.purl) for c in bom.components)
    assert purls == sorted(c["purl"] for c in document["components"])
    assert purls == ["pkg:conda/openssl@1.1.1q", "pkg:conda/pip@22.2.2"]
    assert str(bom.serial_number) == document["serialNumber"].removeprefix("urn:uuid:")


def test_our_sbom_round_trips_through_the_library(debian_node_rootfs: RootFS) -> None:
    document = generate_sbom(debian_node_rootfs, "app", DIGEST, timestamp=WHEN)
    bom = Bom.from_json(document)  # type: ignore[attr-defined]
    assert sorted(str(c.purl) for c in bom.components) == sorted(
        c["purl"] for c in document["components"]
    )
    assert bom.metadata.component is not None
    assert str(bom.metadata.component.purl) == document["metadata"]["component"]["purl"]
    assert bom.metadata.timestamp == WHEN


def test_npm_lock_edge_cases(tmp_path: Path) -> None:
    lock = {
        "lockfileVersion": 2,
        "packages": {
            "": {"name": "root", "version": "1.0.0"},
            "packages/worker": {"name": "@acme/worker", "version": "1.0.0"},
            "node_modules/@acme/worker": {"resolved": "packages/worker", "link": True},
            "node_modules/noversion": {"license": "MIT"},
            "node_modules/left-pad": {"version": "1.3.0", "dev": True, "license": "WTFPL"},
            "node_modules/aliased": {"name": "real-name", "version": "2.0.0"},
        },
    }
    layer = write_layer(
        tmp_path / "l.tar.gz",
        {
            "srv/package-lock.json": json.dumps(lock).encode(),
            "srv/node_modules/old/package.json": json.dumps(
                {"name": "old", "version": "0.1.0", "license": {"type": "BSD"}}
            ).encode(),
            "srv/node_modules/anon/package.json": b'{"private": true}',
            "srv/node_modules/list/package.json": b"[]",
        },
    )
    inventory = find_packages(RootFS.from_layers([layer]))
    found = {p.purl.to_string(): p for p in inventory.packages}
    assert set(found) == {"pkg:npm/left-pad@1.3.0", "pkg:npm/real-name@2.0.0", "pkg:npm/old@0.1.0"}
    assert found["pkg:npm/left-pad@1.3.0"].properties == (("immutrail:npm:dev", "true"),)
    assert found["pkg:npm/left-pad@1.3.0"].location == "srv/node_modules/left-pad"
    assert found["pkg:npm/old@0.1.0"].licenses == ("BSD",)
    assert {s.path: s.reason for s in inventory.skipped} == {
        "srv/node_modules/anon/package.json": "no name or version",
        "srv/node_modules/list/package.json": "not a JSON object",
    }


# -- the SBOM of a build, from the tree merged while its layers were written ----------------------


def fixture_files(files: dict[str, str], prefix: str = "") -> dict[str, bytes]:
    return {prefix + name: (DATA / source).read_bytes() for name, source in files.items()}


def test_a_builds_sbom_is_byte_identical_to_one_made_from_its_layers_read_back(
    tmp_path: Path, home: Path
) -> None:
    """The builder never reads its layers back: the SBOM comes from the tree merged as they were
    written. It must be the SBOM that reading the stored layers gives, byte for byte, over a
    base image, whiteouts, an overwritten os-release that became a link, and skipped sources."""
    base_repo = make_repo(
        tmp_path / "base",
        {
            "image.yaml": "base: scratch\nlayers:\n  - source: rootfs\n    destination: /\n",
            **fixture_files(DEBIAN_BASE, "rootfs/"),
        },
    )
    base = build(base_repo / "image.yaml", home, tag="base:1")
    node = {name.removeprefix("app/"): source for name, source in NODE_APP.items()}
    app_repo = make_repo(
        tmp_path / "app",
        {
            "image.yaml": (
                f"base: {base.digest}\nlayers:\n  - source: node\n    destination: /app\n"
                "  - source: overlay\n    destination: /\n"
            ),
            **fixture_files(node, "node/"),
            "node/node_modules/broken/package.json": "{not json",
            "overlay/etc/.wh.os-release": "",
            "overlay/etc/os-release": "-> ../usr/lib/os-release",
            "overlay/usr/lib/os-release": (DATA / "os-release/alpine-3.14").read_bytes(),
            "overlay/lib/apk/db/installed": (DATA / "apk/installed").read_bytes(),
            "overlay/var/lib/dpkg/.wh.status.d": "",
            f"overlay/{SITE}/.wh.packaging-26.3.dist-info": "",
        },
    )
    built = build(app_repo / "image.yaml", home, tag="app:1")

    store = Store.for_home(home)
    (sbom_ref,) = store.referrers(built.digest, SBOM_TYPE)
    _, blobs = store.image_blobs(sbom_ref.digest)
    attached = store.read_blob(blobs[1].digest, 1 << 24)
    rootfs = RootFS.from_layers([store.blob_path(layer.digest) for layer in built.layers])
    expected = generate_sbom(
        rootfs, "app:1", built.digest, timestamp=datetime.fromtimestamp(COMMIT_EPOCH, UTC)
    )
    assert attached == canonical_json(expected)

    document = json.loads(attached)
    purls = {c["purl"] for c in document["components"]}
    assert any(p.startswith("pkg:apk/alpine/musl@") for p in purls)
    assert any(p.startswith("pkg:npm/debug@") for p in purls)
    assert any(p.startswith("pkg:deb/alpine/") for p in purls)  # os-release is alpine's now
    assert not any(p.startswith("pkg:pypi/packaging@") for p in purls)  # whited out
    assert not any("base-files" in p for p in purls)  # status.d whited out
    skipped = [p["value"] for p in document["metadata"]["properties"]]
    assert any("broken/package.json" in value for value in skipped)
