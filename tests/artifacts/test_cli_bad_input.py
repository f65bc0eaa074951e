"""Bad input to `immutrail build|artifact …` found by probing: outputs that are not regular
files, tags that read as digests, registry ports out of range, and image text that looks like
rich markup. Each refusal exits 2 with one `error:` line and changes nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from immutrail.artifacts import oci
from immutrail.artifacts.builder import build
from immutrail.artifacts.errors import ArtifactInputError
from immutrail.artifacts.registry_ref import Reference
from immutrail.cli.main import app
from output_paths import not_outputs

from .conftest import commit_all, write_files
from .test_import import (
    config_for,
    descriptor,
    layer_of,
    oci_layout,
    sha,
    snapshot,
    write_folder,
)

runner = CliRunner()
DIGEST = "sha256:" + "ab" * 32


def run(home: Path, *args: str, code: int) -> tuple[str, str]:
    result = runner.invoke(app, [*args, "--home", str(home)])
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result.stdout, " ".join(result.stderr.split())


# -- artifact export -o ----------------------------------------------------------------------


def test_export_never_replaces_a_link_a_folder_a_device_or_a_fifo(
    repo: Path, home: Path, tmp_path: Path
) -> None:
    build(repo / "image.yaml", home, tag="app:1")
    outs = tmp_path / "outs"
    outs.mkdir()
    for path, message in not_outputs(outs, ".tar").values():
        for flag in ((), ("--overwrite",)):
            _, err = run(home, "artifact", "export", "app:1", "-o", str(path), *flag, code=2)
            assert f"error: {path} {message}" in err, (path, flag)
    assert sorted(p.name for p in outs.iterdir()) == [
        "dangling.tar", "fifo.tar", "folder.tar", "kept.tar", "linked.tar",
    ]  # fmt: skip
    assert (outs / "fifo.tar").is_fifo() and not any((outs / "folder.tar").iterdir())
    assert os.readlink(outs / "dangling.tar") == str(outs / "nowhere.tar")
    assert os.readlink(outs / "linked.tar") == str(outs / "kept.tar")
    assert (outs / "kept.tar").read_text() == "keep me"


def test_export_bad_output_names_exit_2(repo: Path, home: Path, tmp_path: Path) -> None:
    build(repo / "image.yaml", home, tag="app:1")
    outs = tmp_path / "outs"
    outs.mkdir()
    too_long = outs / ("x" * 300)
    _, err = run(home, "artifact", "export", "app:1", "-o", str(too_long), code=2)
    assert "File name too long" in err and "cannot write" in err
    _, err = run(home, "artifact", "export", "app:1", "-o", str(outs / "no" / "x.tar"), code=2)
    assert "does not exist" in err
    assert list(outs.iterdir()) == []
    # The longest name a folder takes is written (its temporary file's name is shorter).
    longest = outs / ("x" * 255)
    run(home, "artifact", "export", "app:1", "-o", str(longest), code=0)
    assert [p.name for p in outs.iterdir()] == [longest.name]


def test_export_to_a_name_that_looks_like_markup(repo: Path, home: Path, tmp_path: Path) -> None:
    build(repo / "image.yaml", home, tag="app:1")
    (tmp_path / "[bold]x[").mkdir()
    out = tmp_path / "[bold]x[/x].tar"  # a file "x].tar" in the folder "[bold]x["
    stdout, _ = run(home, "artifact", "export", "app:1", "-o", str(out), code=0)
    assert f"to {out} (" in stdout and out.is_file()


# -- tags that read as digests ----------------------------------------------------------------


def test_import_tag_that_is_a_digest_is_refused(home: Path, tmp_path: Path) -> None:
    files, _ = oci_layout([layer_of({"app": b"v1"})])
    layout = write_folder(tmp_path / "layout", files)
    before = snapshot(home)
    for tag in (DIGEST, "sha256:abc", "SHA256:" + "ab" * 32):
        _, err = run(home, "artifact", "import", str(layout), "--tag", tag, code=2)
        assert f"error: tag {tag!r} reads as a digest" in err
    assert snapshot(home) == before
    run(home, "artifact", "import", str(layout), "--tag", "app:1", code=0)


def test_build_and_pull_tag_that_is_a_digest_is_refused(repo: Path, home: Path) -> None:
    _, err = run(home, "build", str(repo / "image.yaml"), "--tag", DIGEST, code=2)
    assert "reads as a digest" in err
    _, err = run(home, "artifact", "pull", "127.0.0.1:5000/app:1", "--tag", DIGEST, code=2)
    assert "reads as a digest" in err
    assert snapshot(home) == (0, []) and not (home / "store").exists()


# -- registry references -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("127.0.0.1:99999/repo:tag", "has the port '99999'"),
        ("127.0.0.1:65536/repo:tag", "has the port '65536'"),
        ("127.0.0.1:0/repo:tag", "has the port '0'"),
        ("127.0.0.1:/repo:tag", "has the port ''"),
        ("127.0.0.1:abc/repo:tag", "has the port 'abc'"),
        ("registry.example.org:5e3/repo", "has the port '5e3'"),
        ("registry.example.org:\u0665\u0660\u0660\u0660/repo", "has the port"),  # Arabic digits
        ("localhost:" + "9" * 5000 + "/repo", "has the port"),
        ("[::1]:70000/repo:tag", "has the port '70000'"),
        ("[:::]:5000/repo:tag", "not an IPv6 address"),
    ],
)
def test_bad_registry_host_or_port(text: str, fragment: str) -> None:
    with pytest.raises(ArtifactInputError, match="registry reference") as caught:
        Reference.parse(text)
    assert fragment in str(caught.value)


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("127.0.0.1:1/repo:tag", "127.0.0.1"),
        ("127.0.0.1:65535/repo:tag", "127.0.0.1"),
        ("localhost:5000/team/app@" + DIGEST, "localhost"),
        ("[::1]:5000/repo", "::1"),
        ("registry.example.org/repo:1", "registry.example.org"),
    ],
)
def test_good_registry_host_and_port(text: str, host: str) -> None:
    assert Reference.parse(text).hostname == host


@pytest.mark.parametrize("port", ["99999", "0", "abc"])
def test_push_and_pull_refuse_a_bad_port_before_anything(repo: Path, home: Path, port: str) -> None:
    build(repo / "image.yaml", home, tag="app:1")
    before = snapshot(home)
    reference = f"127.0.0.1:{port}/repo:tag"
    _, err = run(home, "artifact", "push", "app:1", reference, code=2)
    assert f"has the port '{port}'" in err and "1 to 65535" in err
    _, err = run(home, "artifact", "pull", reference, code=2)
    assert f"has the port '{port}'" in err
    assert snapshot(home) == before


def test_pull_of_a_bad_reference_creates_no_store(home: Path) -> None:
    run(home, "artifact", "pull", "127.0.0.1:99999/repo:tag", code=2)
    assert not (home / "store").exists()


# -- text from the image is printed, never parsed as markup -----------------------------------

MARKUP = "[/x]"


def test_sbom_show_and_list_print_markup_like_text(repo: Path, home: Path) -> None:
    write_files(
        repo,
        {"app/site/evil-1.0.dist-info/METADATA": f"Name: {MARKUP}evil\nVersion: [bold]1.0\n"},
    )
    commit_all(repo, "a package named like markup")
    build(repo / "image.yaml", home, tag="app:1")
    stdout, _ = run(home, "artifact", "sbom", "app:1", "--format", "json", code=0)
    names = [c.get("name") for c in json.loads(stdout)["sbom"]["components"]]
    assert f"{MARKUP}evil" in names  # the SBOM holds it as written
    stdout, _ = run(home, "artifact", "sbom", "app:1", code=0)
    assert f"{MARKUP}evil" in stdout and "[bold]1.0" in stdout


def test_show_and_list_print_an_imported_image_s_text_as_text(home: Path, tmp_path: Path) -> None:
    layer = layer_of({"app": b"v1"})
    config = config_for([layer], architecture="[/arch]", os="[bold]linux")
    manifest = oci.encode(
        {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST,
            "config": descriptor(oci.CONFIG, config),
            "layers": [descriptor(oci.LAYER_TAR, layer)],
            "annotations": {oci.CREATED: "[/created]", oci.REVISION: "[/rev]"},
        }
    )
    files = {f"blobs/sha256/{sha(b)[7:]}": b for b in (layer, config, manifest)}
    files["index.json"] = oci.encode(
        {
            "schemaVersion": 2,
            "mediaType": oci.INDEX,
            "manifests": [descriptor(oci.MANIFEST, manifest)],
        }
    )
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    layout = write_folder(tmp_path / "layout", files)
    run(home, "artifact", "import", str(layout), "--tag", "odd:1", code=0)
    stdout, _ = run(home, "artifact", "show", "odd:1", code=0)
    assert f"{oci.CREATED} = [/created]" in stdout and "([bold]linux/[/arch])" in stdout
    stdout, _ = run(home, "artifact", "list", code=0)
    assert "[/created]" in stdout and "[/rev]" in stdout
