"""`immutrail rebuild-verify DIGEST`: rebuild from the recorded commit, compare, record."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from immutrail.artifacts import builder, layers, oci
from immutrail.artifacts.builder import EVENT_BUILT, build
from immutrail.artifacts.rebuild import EVENT_REBUILD_VERIFIED, RebuildError, rebuild_verify
from immutrail.cli import artifacts as artifacts_cli

from .conftest import commit_all, git, write_files
from .test_import import docker_archive, events, import_image, layer_of, snapshot, write_tar


def test_reproducible_build_is_verified_and_recorded(repo: Path, home: Path) -> None:
    built = build(repo / "image.yaml", home, tag="app:1")

    result = rebuild_verify(built.digest, home)  # the source comes from the provenance

    assert result.reproducible and result.rebuilt_digest == built.digest
    assert result.differences == () and result.commit == built.commit
    assert result.definition == "image.yaml" and result.source == f"file://{repo.resolve()}"
    assert result.built_event == built.ledger_index
    (event,) = events(home, EVENT_REBUILD_VERIFIED)
    assert event.subject == built.digest and event.actor == "user:test"
    assert event.payload["reproducible"] is True
    assert event.payload["rebuilt_digest"] == built.digest
    assert event.payload["differences"] == [] and event.payload["built_event"] == built.ledger_index
    assert len(events(home, EVENT_BUILT)) == 1  # the rebuild wrote no second artifact.built


def test_uncompressed_build_is_reproducible(plain_repo: Path, home: Path) -> None:
    built = build(plain_repo / "plain.yaml", home, tag="app:plain")

    result = rebuild_verify(built.digest, home)

    assert result.reproducible and result.rebuilt_digest == built.digest
    assert result.differences == () and result.definition == "plain.yaml"
    (event,) = events(home, EVENT_REBUILD_VERIFIED)
    assert event.payload["reproducible"] is True


def test_uncompressed_image_known_only_from_its_event(
    plain_repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event records each layer's media type: a rebuild that stores the same tar another
    way says so, rather than blaming zlib."""
    built = build(plain_repo / "plain.yaml", home)
    (home / "store" / "blobs" / "sha256" / built.digest[7:]).unlink()
    assert rebuild_verify(built.digest, home).reproducible
    real_write_layer = layers.write_layer

    def gzip_instead(*args: Any, **kwargs: Any) -> layers.LayerResult:
        return real_write_layer(*args[:4], compression="gzip")

    monkeypatch.setattr(builder, "write_layer", gzip_instead)
    result = rebuild_verify(built.digest, home)
    assert not result.reproducible
    layer_diffs = [d for d in result.differences if d.part == "layer"]
    assert [d.index for d in layer_diffs] == [0, 1]
    assert all(
        "same content" in d.detail
        and f"stored as {oci.LAYER_TAR} when recorded and {oci.LAYER_GZIP} rebuilt" in d.detail
        for d in layer_diffs
    )


def test_recorded_origin_and_source_date_epoch_are_used(
    repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clone gets the recorded origin URL (it is in the manifest); the recorded epoch is
    passed to the builder, whatever the environment says now (even something unreadable), and
    the environment is left alone."""
    git(repo, "remote", "add", "origin", "git@github.com:example/app.git")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    built = build(repo / "image.yaml", home)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")

    result = rebuild_verify(built.digest, home, repo=str(repo))

    assert result.reproducible, result.differences
    assert result.source == str(repo)
    assert os.environ["SOURCE_DATE_EPOCH"] == "yesterday"


def test_a_different_compression_is_named_per_layer(
    repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build(repo / "image.yaml", home)
    monkeypatch.setattr(layers, "GZIP_LEVEL", 1)  # as a builder with another zlib would

    result = rebuild_verify(built.digest, home)

    assert not result.reproducible and result.rebuilt_digest != built.digest
    layer_diffs = [d for d in result.differences if d.part == "layer"]
    assert [d.index for d in layer_diffs] == [0, 1]
    assert all(
        "same content" in d.detail and "compression differs" in d.detail for d in layer_diffs
    )
    assert "immutrail layer app -> /opt/app" in layer_diffs[0].detail
    assert layer_diffs[0].recorded == built.layers[0].digest
    assert not [d for d in result.differences if d.part == "config"]  # diff_ids are the same
    (event,) = events(home, EVENT_REBUILD_VERIFIED)
    assert event.payload["reproducible"] is False
    assert [d["part"] for d in event.payload["differences"]] == ["layer", "layer"]


def test_a_dirty_build_is_not_reproducible_and_says_what_differs(repo: Path, home: Path) -> None:
    write_files(repo, {"app/main.py": "print('changed, never committed')\n"})
    built = build(repo / "image.yaml", home, allow_dirty=True)

    result = rebuild_verify(built.digest, home)

    assert not result.reproducible and result.dirty
    parts = {d.part: d for d in result.differences}
    assert "rootfs.diff_ids[0]" in parts["config"].detail
    assert "org.immutrail" in parts["config"].detail or "Labels" in parts["config"].detail
    (layer,) = [d for d in result.differences if d.part == "layer"]
    assert layer.index == 0 and "the content differs" in layer.detail


def test_a_later_commit_does_not_change_the_answer(repo: Path, home: Path) -> None:
    built = build(repo / "image.yaml", home)
    write_files(repo, {"app/main.py": "print('v2')\n"})
    commit_all(repo, "v2")
    assert rebuild_verify(built.digest, home).reproducible


def test_refusals_record_nothing(repo: Path, home: Path, tmp_path: Path) -> None:
    built = build(repo / "image.yaml", home)
    before = snapshot(home)
    with pytest.raises(RebuildError, match=r"no artifact\.built event"):
        rebuild_verify("sha256:" + "0" * 64, home)
    files, _ = docker_archive([layer_of({"a": b"1"})])
    imported = import_image(write_tar(tmp_path / "d.tar", files), home).digest
    before = snapshot(home)
    with pytest.raises(RebuildError, match="imported image has no recorded build"):
        rebuild_verify(imported, home)
    other = tmp_path / "unrelated"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    write_files(other, {"x": "1"})
    commit_all(other)
    with pytest.raises(RebuildError, match="cannot check out commit"):
        rebuild_verify(built.digest, home, repo=str(other))
    with pytest.raises(Exception, match="not a digest"):
        rebuild_verify("latest", home)
    assert snapshot(home) == before


def test_local_build_without_provenance_needs_repo(
    repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build(repo / "image.yaml", home)
    monkeypatch.setattr("immutrail.artifacts.rebuild._provenance_source", lambda *_: None)
    with pytest.raises(RebuildError, match="--repo"):
        rebuild_verify(built.digest, home)
    assert rebuild_verify(built.digest, home, repo=str(repo)).reproducible


cli = typer.Typer()
cli.command("rebuild-verify")(artifacts_cli.rebuild_verify)
cli.command("build")(artifacts_cli.build)
runner = CliRunner()


def test_cli_exit_codes(repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = build(repo / "image.yaml", home)
    ok = runner.invoke(
        cli, ["rebuild-verify", built.digest, "--home", str(home), "--format", "json"]
    )
    assert ok.exit_code == 0, ok.stderr
    data = json.loads(ok.stdout)
    assert data["schema_version"] == 1 and data["reproducible"] is True
    assert data["rebuilt_digest"] == built.digest

    monkeypatch.setattr(layers, "GZIP_LEVEL", 1)
    bad = runner.invoke(cli, ["rebuild-verify", built.digest, "--home", str(home)])
    assert bad.exit_code == 1, bad.stderr
    assert "NOT reproducible" in bad.stdout and "compression differs" in bad.stdout

    missing = runner.invoke(cli, ["rebuild-verify", "sha256:" + "1" * 64, "--home", str(home)])
    assert missing.exit_code == 2 and "no artifact.built event" in missing.stderr


def test_image_on_a_base_image(repo: Path, home: Path) -> None:
    """The base image is copied from the real store into the rebuild's temporary store."""
    base = build(repo / "image.yaml", home, tag="base:1")
    write_files(
        repo,
        {"child.yaml": f"base: {base.digest}\nlayers: [{{source: README.md, destination: /r}}]\n"},
    )
    commit_all(repo)
    child = build(repo / "child.yaml", home, tag="child:1")
    result = rebuild_verify(child.digest, home)
    assert result.reproducible and result.definition == "child.yaml"


def test_image_no_longer_in_the_store_is_compared_with_its_event(
    repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built = build(repo / "image.yaml", home)
    manifest = home / "store" / "blobs" / "sha256" / built.digest[7:]
    manifest.unlink()
    monkeypatch.setattr(layers, "GZIP_LEVEL", 1)
    result = rebuild_verify(built.digest, home)
    assert not result.reproducible
    assert [d.index for d in result.differences if d.part == "layer"] == [0, 1]
    assert all("compression differs" in d.detail for d in result.differences if d.part == "layer")
