"""`immutrail build` and `immutrail artifact list|show|export`: JSON shapes and exit codes.

The commands are mounted here the way cli/main.py mounts them, so the tests do not depend on it.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from immutrail.artifacts.store import Store
from immutrail.cli import artifacts as artifacts_cli
from immutrail.ledger.event import Event
from immutrail.ledger.home import open_ledger

from .conftest import commit_all, write_files

cli = typer.Typer()
cli.add_typer(artifacts_cli.app, name="artifact")
cli.command("build")(artifacts_cli.build)
runner = CliRunner()


def run(home: Path, *args: str, code: int = 0) -> Any:
    result = runner.invoke(cli, [*args, "--home", str(home), "--format", "json"])
    assert result.exit_code == code, (result.stdout, result.stderr)
    if code == 0:
        data = json.loads(result.stdout)
        assert data["schema_version"] == 1
        return data
    return result.stderr


def test_build_list_show_export(repo: Path, home: Path, tmp_path: Path) -> None:
    built = run(home, "build", str(repo / "image.yaml"), "--tag", "app:1")
    assert built["digest"].startswith("sha256:") and built["tag"] == "app:1"
    assert built["dirty"] is False and len(built["layers"]) == 2
    assert {"digest", "media_type", "diff_id", "size", "created_by"} <= built["layers"][0].keys()
    assert built["layers"][0]["media_type"] == "application/vnd.oci.image.layer.v1.tar+gzip"

    listed = run(home, "artifact", "list")
    assert listed["images"] == [
        {
            "digest": built["digest"],
            "tags": ["app:1"],
            "media_type": "application/vnd.oci.image.manifest.v1+json",
            "created": "2025-01-02T03:04:05Z",
            "revision": built["commit"],
        }
    ]
    shown = run(home, "artifact", "show", "app:1", "--verify")
    assert shown["digest"] == built["digest"] and shown["verified"] == "all blobs"
    assert [layer["digest"] for layer in shown["layers"]] == [x["digest"] for x in built["layers"]]
    assert shown["config"]["config"]["Entrypoint"] == ["/opt/app/bin/run"]

    out = tmp_path / "app.tar"
    exported = run(home, "artifact", "export", built["digest"], "-o", str(out))
    # 4 blobs of the image; its SBOM and provenance: 2 manifests, 2 layers, 1 empty config.
    assert exported["blobs"] == 9
    with tarfile.open(out) as tar:
        names = tar.getnames()
        docker = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert {"oci-layout", "index.json", "manifest.json"} <= set(names)
    assert docker[0]["RepoTags"] == ["app:1"]
    assert docker[0]["Config"] == f"blobs/sha256/{built['config'].split(':')[1]}"
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "app:1"
    first = out.read_bytes()
    assert "exists" in run(home, "artifact", "export", "app:1", "-o", str(out), code=2)
    run(home, "artifact", "export", "app:1", "-o", str(out), "--overwrite")
    assert out.read_bytes() == first  # deterministic archive


def test_bad_definition_exits_2_naming_file_and_key(repo: Path, home: Path) -> None:
    write_files(
        repo, {"bad.yaml": "base: scratch\nlayers: [{source: app, destination: /a}]\nbogus: 1\n"}
    )
    commit_all(repo)
    err = run(home, "build", str(repo / "bad.yaml"), code=2)
    assert "bad.yaml" in err and "bogus" in err
    assert not (home / "store").exists()


def test_dirty_exits_2_and_allow_dirty_builds(repo: Path, home: Path) -> None:
    write_files(repo, {"app/main.py": "print(2)\n"})
    assert "--allow-dirty" in run(home, "build", str(repo / "image.yaml"), code=2)
    assert run(home, "build", str(repo / "image.yaml"), "--allow-dirty")["dirty"] is True


def test_corrupted_blob_exits_1(repo: Path, home: Path, tmp_path: Path) -> None:
    built = run(home, "build", str(repo / "image.yaml"), "--tag", "app:1")
    store = Store.for_home(home)
    layer = store.blob_path(built["layers"][0]["digest"])
    layer.chmod(0o644)
    data = bytearray(layer.read_bytes())
    data[-20] ^= 0xFF
    layer.write_bytes(bytes(data))
    err = run(home, "artifact", "show", "app:1", "--verify", code=1)
    assert built["layers"][0]["digest"] in err
    out = tmp_path / "x.tar"
    err = run(home, "artifact", "export", "app:1", "-o", str(out), code=1)
    assert built["layers"][0]["digest"] in err and not out.exists()
    assert not list(tmp_path.glob(".x.tar.*"))  # no half-written archive left behind


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("artifact", "show", "nope:1"), 2),
        (("artifact", "show", "sha256:xyz"), 2),
    ],
)
def test_lookup_errors(home: Path, args: tuple[str, ...], code: int) -> None:
    run(home, *args, code=code)


def test_list_before_any_build_is_empty(home: Path) -> None:
    assert run(home, "artifact", "list")["images"] == []


def test_build_without_init_exits_3(repo: Path, tmp_path: Path) -> None:
    err = run(tmp_path / "nowhere", "build", str(repo / "image.yaml"), code=3)
    assert "immutrail init" in err


def test_text_output(repo: Path, home: Path) -> None:
    result = runner.invoke(
        cli, ["build", str(repo / "image.yaml"), "--tag", "v1", "--home", str(home)]
    )
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("built sha256:") and "app -> /opt/app" in result.stdout
    digest = result.stdout.split()[1]
    result = runner.invoke(cli, ["artifact", "list", "--home", str(home)])
    assert result.exit_code == 0 and "2025-01-02T03:04:05Z" in result.stdout
    result = runner.invoke(cli, ["artifact", "show", "v1", "--home", str(home)])
    assert result.exit_code == 0 and f"image   {digest}" in result.stdout
    assert "verified manifest and config" in result.stdout


def test_sbom_and_provenance_contents(repo: Path, home: Path) -> None:
    write_files(
        repo,
        {"app/site/requests-2.31.0.dist-info/METADATA": "Name: requests\nVersion: 2.31.0\n"},
    )
    commit = commit_all(repo, "add a package")
    built = run(home, "build", str(repo / "image.yaml"), "--tag", "app:1")
    sbom = run(home, "artifact", "sbom", "app:1")
    assert sbom["sbom_manifest"] == built["sbom"]
    purls = [c.get("purl") for c in sbom["sbom"]["components"]]
    assert "pkg:pypi/requests@2.31.0" in purls
    text = runner.invoke(cli, ["artifact", "sbom", "app:1", "--home", str(home)])
    assert text.exit_code == 0 and "pkg:pypi/requests@2.31.0" in text.stdout

    prov = run(home, "artifact", "provenance", "app:1")
    (verified,) = prov["verified"]
    assert verified["attestation"] == built["provenance"] and prov["rejected"] == []
    source = verified["statement"]["predicate"]["buildDefinition"]["externalParameters"]["source"]
    assert source["digest"] == {"gitCommit": commit} and source["uri"].endswith("@refs/heads/main")
    text = runner.invoke(cli, ["artifact", "provenance", "app:1", "--home", str(home)])
    assert text.exit_code == 0 and "verified" in text.stdout and commit in text.stdout

    # Once the builder key is revoked its provenance no longer verifies: exit 1, with why.
    ledger = open_ledger(home)
    try:
        keyid = verified["signer"]["keyid"]
        ledger.append(Event.create("key.revoked", "admin", f"key:{keyid}", {"reason": "test"}))
    finally:
        ledger.close()
    revoked = runner.invoke(cli, ["artifact", "provenance", "app:1", "--home", str(home)])
    assert revoked.exit_code == 1 and "revoked key" in revoked.stdout
