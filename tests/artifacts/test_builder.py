"""Builds: reproducible across clones and days, dirty trees refused or recorded, bad input writes
nothing, and every build is an `artifact.built` event whose subject is the manifest digest."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from immutrail.artifacts import oci
from immutrail.artifacts.builder import build
from immutrail.artifacts.errors import (
    ArtifactInputError,
    DefinitionError,
    SourceError,
    TagConflictError,
)
from immutrail.artifacts.store import Store
from immutrail.ledger.errors import NotInitializedError
from immutrail.ledger.event import parse_entry
from immutrail.ledger.home import open_ledger

from .conftest import APP_FILES, COMMIT_EPOCH, commit_all, git, make_repo, write_files


def all_events(home: Path) -> list[dict[str, Any]]:
    ledger = open_ledger(home)
    try:
        size = ledger.head().size
        return [dict(parse_entry(ledger.entry(i).data).to_dict()) for i in range(size)]
    finally:
        ledger.close()


def events(home: Path) -> list[dict[str, Any]]:
    """The ``artifact.built`` events (a build also records its key and attestations)."""
    return [e for e in all_events(home) if e["type"] == "artifact.built"]


def snapshot(home: Path) -> dict[str, Any]:
    """What a failed build must not change: the store's files and the ledger's size."""
    store = home / "store"
    files = sorted(str(p.relative_to(store)) for p in store.rglob("*")) if store.exists() else []
    index = (store / "index.json").read_bytes() if store.exists() else b""
    return {"files": files, "index": index, "events": len(all_events(home))}


def clone(source: Path, dest: Path, umask: int) -> Path:
    old = os.umask(umask)
    try:
        subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True)
    finally:
        os.umask(old)
    return dest


def test_same_commit_same_digest_in_two_clones(repo: Path, home: Path, tmp_path: Path) -> None:
    """Different clones, umasks, file mtimes and days: one manifest digest."""
    a = clone(repo, tmp_path / "clone-a", 0o022)
    b = clone(repo, tmp_path / "clone-b", 0o077)
    for path in b.rglob("*"):
        if ".git" not in path.parts and not path.is_symlink():
            os.utime(path, (1, 1))
    first = build(a / "image.yaml", home, tag="app:1")
    other_home = tmp_path / "other-home"
    from immutrail.ledger.home import init_ledger

    init_ledger(other_home)[0].close()
    second = build(b / "image.yaml", other_home)
    assert first.digest == second.digest
    assert first.config.digest == second.config.digest
    assert [layer.digest for layer in first.layers] == [layer.digest for layer in second.layers]
    # and again in the same store, later: still the same, and the tag may be given again
    assert build(b / "image.yaml", home, tag="app:1").digest == first.digest


def test_manifest_config_and_event(repo: Path, home: Path) -> None:
    result = build(repo / "image.yaml", home, tag="app:1", actor="ci:pipeline-7")
    store = Store.for_home(home)
    manifest = store.get_manifest(result.digest)
    commit = git(repo, "rev-parse", "HEAD")
    assert manifest["annotations"] == {
        oci.CREATED: "2025-01-02T03:04:05Z",
        oci.REVISION: commit,
        "dev.immutrail.definition": "image.yaml",
    }  # no .source: the repository has no public origin
    assert [layer["mediaType"] for layer in manifest["layers"]] == [oci.LAYER_GZIP] * 2
    config = store.get_json(result.config)
    assert config["created"] == "2025-01-02T03:04:05Z"
    assert (config["os"], config["architecture"]) == ("linux", "amd64")
    assert config["rootfs"]["diff_ids"] == [layer.diff_id for layer in result.built]
    assert config["config"]["Entrypoint"] == ["/opt/app/bin/run"]
    assert config["config"]["ExposedPorts"] == {"8080/tcp": {}}
    assert config["config"]["Env"] == ["APP_HOME=/opt/app"]
    assert [h["created"] for h in config["history"]] == ["2025-01-02T03:04:05Z"] * 2
    assert "dev.immutrail.dirty" not in config["config"]["Labels"]

    [event] = events(home)
    assert (event["type"], event["actor"], event["subject"]) == (
        "artifact.built",
        "ci:pipeline-7",
        result.digest,
    )
    payload = event["payload"]
    assert payload["commit"] == commit and payload["dirty"] is False
    assert payload["definition"] == "image.yaml" and payload["tag"] == "app:1"
    assert payload["config"] == result.config.digest
    assert [layer["digest"] for layer in payload["layers"]] == [
        layer.digest for layer in result.layers
    ]
    assert payload["source_date_epoch"] == COMMIT_EPOCH
    assert result.ledger_index == 0


def test_source_date_epoch_overrides_the_commit_time(
    repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = build(repo / "image.yaml", home)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    pinned = build(repo / "image.yaml", home)
    assert pinned.digest != plain.digest
    assert Store.for_home(home).get_json(pinned.config)["created"] == "1970-01-02T00:00:00Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ArtifactInputError, match="SOURCE_DATE_EPOCH"):
        build(repo / "image.yaml", home)


def test_source_date_epoch_parameter_wins_over_the_environment(
    repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "86400")
    from_env = build(repo / "image.yaml", home)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")  # not even read when a value is given
    given = build(repo / "image.yaml", home, source_date_epoch=86400)
    assert given.digest == from_env.digest
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    at_commit = build(repo / "image.yaml", home, source_date_epoch=COMMIT_EPOCH)
    assert at_commit.digest == build(repo / "image.yaml", home).digest
    ledger = open_ledger(home)
    try:
        before = ledger.head().size
    finally:
        ledger.close()
    for bad in (-1, True, "86400"):
        with pytest.raises(ArtifactInputError, match="source_date_epoch"):
            build(repo / "image.yaml", home, source_date_epoch=bad)  # type: ignore[arg-type]
    ledger = open_ledger(home)
    try:
        assert ledger.head().size == before  # refused before anything was recorded
    finally:
        ledger.close()


def test_public_origin_becomes_the_source_annotation(repo: Path, home: Path) -> None:
    git(repo, "remote", "add", "origin", "git@github.com:example/app.git")
    result = build(repo / "image.yaml", home)
    manifest = Store.for_home(home).get_manifest(result.digest)
    assert manifest["annotations"][oci.SOURCE] == "https://github.com/example/app"


def test_dirty_tree_is_refused_and_nothing_written(repo: Path, home: Path) -> None:
    write_files(repo, {"app/main.py": "print('edited')\n"})
    before = snapshot(home)
    with pytest.raises(SourceError, match=r"app/main.py.*--allow-dirty"):
        build(repo / "image.yaml", home, tag="app:1")
    assert snapshot(home) == before


def test_untracked_file_makes_the_tree_dirty(repo: Path, home: Path) -> None:
    write_files(repo, {"app/new.py": "x"})
    with pytest.raises(SourceError, match=r"app/new\.py"):
        build(repo / "image.yaml", home)


def test_allow_dirty_is_recorded_and_uses_the_work_tree(repo: Path, home: Path) -> None:
    clean = build(repo / "image.yaml", home)
    write_files(repo, {"app/main.py": "print('edited')\n"})
    dirty = build(repo / "image.yaml", home, allow_dirty=True)
    assert dirty.dirty and dirty.digest != clean.digest
    store = Store.for_home(home)
    assert store.get_json(dirty.config)["config"]["Labels"]["dev.immutrail.dirty"] == "true"
    assert store.get_manifest(dirty.digest)["annotations"]["dev.immutrail.dirty"] == "true"
    event = events(home)[-1]
    assert event["payload"]["dirty"] is True
    assert event["payload"]["dirty_paths"] == ["app/main.py"]


def test_bad_definition_writes_nothing(repo: Path, home: Path) -> None:
    write_files(
        repo, {"image.yaml": "base: scratch\nlayers: [{source: app, destination: /a}]\nfoo: 1\n"}
    )
    commit_all(repo)
    before = snapshot(home)
    with pytest.raises(DefinitionError) as caught:
        build(repo / "image.yaml", home)
    assert "unknown key 'foo'" in caught.value.diagnostics()
    assert str(repo / "image.yaml") in caught.value.diagnostics()
    assert snapshot(home) == before


def test_escaping_symlink_writes_nothing(repo: Path, home: Path) -> None:
    build(repo / "image.yaml", home, tag="app:1")  # the store exists and holds something
    write_files(repo, {"app/evil": "-> ../../../etc/shadow"})
    commit_all(repo)
    before = snapshot(home)
    with pytest.raises(SourceError, match=re.escape("app/evil -> ../../../etc/shadow leaves")):
        build(repo / "image.yaml", home, tag="app:2")
    assert snapshot(home) == before


def test_repointing_a_tag_writes_nothing(repo: Path, home: Path) -> None:
    build(repo / "image.yaml", home, tag="app:1")
    write_files(repo, {"app/main.py": "print('v2')\n"})
    commit_all(repo)
    before = snapshot(home)
    with pytest.raises(TagConflictError, match="app:1"):
        build(repo / "image.yaml", home, tag="app:1")
    assert snapshot(home) == before


def test_definition_must_be_committed(tmp_path: Path, home: Path) -> None:
    root = make_repo(tmp_path / "r", {".gitignore": "image.yaml\n", "app/a": "1"})
    write_files(root, {"image.yaml": "base: scratch\nlayers: [{source: app, destination: /a}]\n"})
    with pytest.raises(SourceError, match=r"image\.yaml is not a file in commit"):
        build(root / "image.yaml", home)


def test_not_a_repository_and_no_commit(tmp_path: Path, home: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "image.yaml").write_text("base: scratch\n")
    with pytest.raises(SourceError, match="not inside a git repository"):
        build(tmp_path / "plain" / "image.yaml", home)
    git(tmp_path / "plain", "init", "-q")
    with pytest.raises(SourceError, match="no commit yet"):
        build(tmp_path / "plain" / "image.yaml", home)


def test_uninitialized_home_writes_nothing(repo: Path, tmp_path: Path) -> None:
    with pytest.raises(NotInitializedError):
        build(repo / "image.yaml", tmp_path / "no-home")
    assert not (tmp_path / "no-home" / "store").exists()


def test_build_on_a_base_image(repo: Path, home: Path) -> None:
    base = build(repo / "image.yaml", home, tag="base:1")
    write_files(
        repo,
        {
            "child.yaml": f"base: {base.digest}\n"
            "layers: [{source: README.md, destination: /README.md}]\n"
            "env: {EXTRA: '1'}\ncmd: [--verbose]\n",
        },
    )
    commit_all(repo)
    child = build(repo / "child.yaml", home, tag="child:1")
    store = Store.for_home(home)
    assert [d.digest for d in child.layers[:2]] == [d.digest for d in base.layers]
    config = store.get_json(child.config)
    base_config = store.get_json(base.config)
    assert config["rootfs"]["diff_ids"][:2] == base_config["rootfs"]["diff_ids"]
    assert len(config["history"]) == 3
    assert config["config"]["Env"] == ["APP_HOME=/opt/app", "EXTRA=1"]
    assert config["config"]["Entrypoint"] == ["/opt/app/bin/run"]
    assert config["config"]["Cmd"] == ["--verbose"]
    assert config["config"]["Labels"]["dev.immutrail.definition"] == "child.yaml"
    write_files(repo, {"child.yaml": "base: sha256:" + "1" * 64 + "\nlayers: []\n"})
    commit_all(repo)
    with pytest.raises(ArtifactInputError, match="no image"):
        build(repo / "child.yaml", home)


def test_whole_repository_as_root_layer(tmp_path: Path, home: Path) -> None:
    root = make_repo(
        tmp_path / "r",
        {**APP_FILES, "image.yaml": "base: scratch\nlayers: [{source: ., destination: /}]\n"},
    )
    result = build(root / "image.yaml", home)
    payload = json.dumps(events(home)[-1]["payload"])
    assert result.digest in events(home)[-1]["subject"] and "layers" in payload


def test_input_files_are_the_committed_bytes_digests(repo: Path, home: Path) -> None:
    """What provenance lists as inputs: every file read, hashed as it streamed into a layer."""
    import hashlib

    result = build(repo / "image.yaml", home)
    expected = {
        path: hashlib.sha256((repo / path).read_bytes()).hexdigest()
        for path in ("app/bin/run", "app/lib/util.py", "app/main.py", "config/app.toml")
    }
    assert result.input_files == expected  # excluded app/cache.pyc and the symlink are not inputs
    assert result.base == "scratch"
    assert [p.name for p in result.layer_paths()] == [
        layer.digest.split(":")[1] for layer in result.layers
    ]


def test_a_build_attaches_its_sbom_and_signed_provenance(repo: Path, home: Path) -> None:
    from immutrail.artifacts.attestations import DSSE_MEDIA_TYPE, SBOM_TYPE
    from immutrail.artifacts.provenance import verify_provenance
    from immutrail.crypto.keys import key_id, load_public_key_pem

    result = build(repo / "image.yaml", home, tag="app:attested")
    store = Store.for_home(home)
    referrers = {d.artifact_type: d for d in store.referrers(result.digest)}
    assert set(referrers) == {SBOM_TYPE, "application/vnd.in-toto+json"}
    assert referrers[SBOM_TYPE].digest == result.sbom
    sbom_manifest = store.get_manifest(result.sbom)
    assert sbom_manifest["subject"]["digest"] == result.digest
    sbom = json.loads(store.read_blob(sbom_manifest["layers"][0]["digest"]))
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.6"
    assert sbom["metadata"]["component"]["name"] == "app:attested"

    prov_manifest = store.get_manifest(result.provenance)
    assert prov_manifest["layers"][0]["mediaType"] == DSSE_MEDIA_TYPE
    envelope = json.loads(store.read_blob(prov_manifest["layers"][0]["digest"]))
    # The builder's public key is found from the ledger alone.
    [key_event] = [e for e in all_events(home) if e["type"] == "key.created"]
    public = load_public_key_pem(key_event["payload"]["public_key"])
    assert key_event["subject"] == f"key:{key_id(public)}"
    statement = verify_provenance(
        envelope, {key_id(public): public}, expected_subject_digest=result.digest
    )
    params = statement["predicate"]["buildDefinition"]["externalParameters"]
    assert params["source"]["digest"]["gitCommit"] == result.commit
    kinds = [e["type"] for e in all_events(home)]
    assert kinds == ["artifact.built", "key.created", "artifact.attached", "artifact.attached"]

    again = build(repo / "image.yaml", home)  # the key is made once
    assert [e["type"] for e in all_events(home)].count("key.created") == 1
    assert again.digest == result.digest
