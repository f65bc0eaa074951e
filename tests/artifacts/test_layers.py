"""The layer writer: byte-identical output, normalized metadata, and refusal of what a layer must
not hold (escaping symlinks, devices, hard links, setuid bits nobody asked for)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import socket
import tarfile
from pathlib import Path

import pytest

from immutrail.artifacts.definition import LayerSpec
from immutrail.artifacts.digests import HashingWriter
from immutrail.artifacts.errors import SourceError
from immutrail.artifacts.layerplan import plan_layer
from immutrail.artifacts.layers import Entry, Kind, LayerResult, complete, write_layer
from immutrail.artifacts.sources import GitCommitTree, SourceFile, SourceKind, WorkTree

from .conftest import APP_FILES, commit_all, make_repo, write_files

EPOCH = 1_700_000_000


def layer_bytes(tree_files: list[SourceFile], spec: LayerSpec) -> tuple[bytes, LayerResult]:
    plan = plan_layer(0, spec, tree_files, "test tree")
    sink = io.BytesIO()
    result = write_layer(plan.entries, sink, EPOCH)
    return sink.getvalue(), result


def members(blob: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return {m.name: m for m in tar.getmembers()}


def build_worktree_layer(root: Path, spec: LayerSpec) -> tuple[bytes, LayerResult]:
    with WorkTree(root) as tree:
        return layer_bytes(list(tree.files()), spec)


def test_layer_is_byte_identical_whatever_the_mtimes_and_umask(tmp_path: Path) -> None:
    first = make_repo(tmp_path / "a", APP_FILES)
    old = os.umask(0o077)
    try:
        second = make_repo(tmp_path / "b", APP_FILES)
    finally:
        os.umask(old)
    for path in second.rglob("*"):
        if not path.is_symlink():
            os.utime(path, (123, 456))
    (second / "app" / "main.py").chmod(0o600)  # git keeps only the executable bit
    spec = LayerSpec("app", "/opt/app", exclude=("*.pyc",))
    a, result_a = build_worktree_layer(first, spec)
    b, result_b = build_worktree_layer(second, spec)
    assert a == b
    assert result_a.diff_id == result_b.diff_id
    with gzip.open(io.BytesIO(a)) as raw:
        assert "sha256:" + hashlib.sha256(raw.read()).hexdigest() == result_a.diff_id


def test_entries_are_sorted_normalized_and_parents_emitted(repo: Path) -> None:
    blob, result = build_worktree_layer(repo, LayerSpec("app", "/opt/app", exclude=("*.pyc",)))
    found = members(blob)
    assert list(found) == [
        "opt",
        "opt/app",
        "opt/app/bin",
        "opt/app/bin/main",
        "opt/app/bin/run",
        "opt/app/lib",
        "opt/app/lib/util.py",
        "opt/app/main.py",
    ]
    assert result.entries == len(found)
    for member in found.values():
        assert (member.mtime, member.uid, member.gid) == (EPOCH, 0, 0)
        assert (member.uname, member.gname) == ("", "")
        assert not member.pax_headers
    assert found["opt"].isdir() and found["opt"].mode == 0o755
    assert found["opt/app/bin/run"].mode == 0o755
    assert found["opt/app/main.py"].mode == 0o644
    assert found["opt/app/bin/main"].issym() and found["opt/app/bin/main"].linkname == "../main.py"
    assert blob[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no mtime, no name


def test_owner_and_mode_from_the_definition(repo: Path) -> None:
    spec = LayerSpec("app", "/srv/app", mode=0o4750, owner=(1000, 2000), exclude=("bin", "*.pyc"))
    found = members(build_worktree_layer(repo, spec)[0])
    assert (found["srv"].uid, found["srv"].gid) == (0, 0)  # a parent of the destination
    assert (found["srv/app"].uid, found["srv/app"].gid) == (1000, 2000)
    assert found["srv/app/main.py"].mode == 0o4750  # setuid only because the definition says so
    assert found["srv/app/lib"].mode == 0o755
    assert "srv/app/bin/run" not in found


def test_setuid_in_the_work_tree_is_dropped(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", {"bin/tool": ("x", 0o755)})
    (root / "bin" / "tool").chmod(0o6755)
    found = members(build_worktree_layer(root, LayerSpec("bin", "/usr/bin"))[0])
    assert found["usr/bin/tool"].mode == 0o755


def test_long_and_non_ascii_names_need_no_pax(tmp_path: Path) -> None:
    deep = "/".join(["d" * 60] * 4) + "/fïlé.txt"
    root = make_repo(tmp_path / "r", {f"src/{deep}": "x"})
    blob = build_worktree_layer(root, LayerSpec("src", "/x"))[0]
    with gzip.open(io.BytesIO(blob)) as raw:
        data = raw.read()
    assert b"PaxHeader" not in data and b"ustar  \x00" in data  # the GNU magic
    assert f"x/{deep}" in members(blob)


@pytest.mark.parametrize(
    ("link", "message"),
    [("../../etc/passwd", "leaves the layer"), ("/etc/passwd", "is absolute")],
)
def test_symlink_escaping_the_layer_is_refused(tmp_path: Path, link: str, message: str) -> None:
    root = make_repo(tmp_path / "r", {"app/x": "1", "app/sub/link": f"-> {link}"})
    with GitCommitTree(root, "HEAD") as tree, pytest.raises(SourceError, match=message):
        plan_layer(0, LayerSpec("app", "/app"), tree.files(), tree.description)


def test_symlink_to_a_sibling_outside_the_source_folder_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", {"app/link": "-> ../config/x", "config/x": "1"})
    with GitCommitTree(root, "HEAD") as tree:
        with pytest.raises(SourceError, match=r"app/link -> \.\./config/x leaves"):
            plan_layer(0, LayerSpec("app", "/app"), tree.files(), tree.description)
        plan_layer(0, LayerSpec(".", "/"), tree.files(), tree.description)  # inside the repo root


def test_hardlinks_fifos_and_sockets_are_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", {"app/a": "1", "app/c": "3"})
    os.link(root / "app" / "a", root / "app" / "b")
    with WorkTree(root) as tree, pytest.raises(SourceError, match="app/a is a hard link"):
        tree.files()
    (root / "app" / "b").unlink()
    (root / "app" / "a").unlink()
    os.mkfifo(root / "app" / "a")  # a tracked path that became a fifo
    with WorkTree(root) as tree, pytest.raises(SourceError, match="app/a is not a regular file"):
        tree.files()
    (root / "app" / "a").unlink()
    (root / "app" / "c").unlink()
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(root / "app" / "c"))
        with WorkTree(root) as tree, pytest.raises(SourceError, match="app/c is not a regular"):
            tree.files()
    finally:
        server.close()


def test_untracked_special_files_are_not_part_of_the_tree(tmp_path: Path) -> None:
    """git never lists a fifo, so like a commit the work tree cannot carry one into a layer."""
    root = make_repo(tmp_path / "r", {"app/a": "1"})
    os.mkfifo(root / "app" / "fifo")
    names = list(members(build_worktree_layer(root, LayerSpec("app", "/app"))[0]))
    assert names == ["app", "app/a"]


def test_writer_refuses_duplicates_and_bad_paths() -> None:
    with pytest.raises(SourceError, match="two entries"):
        complete([Entry("a", Kind.DIRECTORY, 0o755), Entry("a", Kind.DIRECTORY, 0o755)])
    for bad in ("/abs", "a/../b", "a//b", "./a", ""):
        with pytest.raises(SourceError, match="normalized relative path"):
            complete([Entry(bad, Kind.DIRECTORY, 0o755)])
    with pytest.raises(SourceError, match="is a file but"):
        complete([Entry("a", Kind.FILE, 0o644), Entry("a/b", Kind.FILE, 0o644)])


def test_file_that_changes_while_read_is_refused(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", {"app/a": "12345"})
    with WorkTree(root) as tree:
        plan = plan_layer(0, LayerSpec("app", "/app"), tree.files(), tree.description)
        (root / "app" / "a").write_text("123456789")
        with pytest.raises(SourceError, match="grew"):
            write_layer(plan.entries, HashingWriter(), EPOCH)
        (root / "app" / "a").write_text("1")
        with pytest.raises(SourceError, match=r"shorter|changed"):
            write_layer(plan.entries, HashingWriter(), EPOCH)


def test_commit_tree_reads_committed_bytes_not_the_work_tree(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", {"app/a": "committed"})
    write_files(root, {"app/a": "edited in the work tree", "app/new": "untracked"})
    with GitCommitTree(root, "HEAD") as tree:
        blob, _ = layer_bytes(list(tree.files()), LayerSpec("app", "/app"))
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        assert tar.getnames() == ["app", "app/a"]
        stream = tar.extractfile("app/a")
        assert stream is not None and stream.read() == b"committed"


def test_ignored_files_never_enter_a_layer(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", {".gitignore": "*.secret\n", "app/a": "1"})
    write_files(root, {"app/token.secret": "s3cr3t", "app/b": "2"})
    names = list(members(build_worktree_layer(root, LayerSpec("app", "/app"))[0]))
    assert names == ["app", "app/a", "app/b"]


def test_missing_source_excluded_everything_and_submodules(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "r", {"app/a.pyc": "1"})
    files = [SourceFile("app/a.pyc", SourceKind.FILE, size=1)]
    with pytest.raises(SourceError, match="does not exist in t"):
        plan_layer(0, LayerSpec("nope", "/x"), files, "t")
    with pytest.raises(SourceError, match="every file"):
        plan_layer(0, LayerSpec("app", "/x", exclude=("*.pyc",)), files, "t")
    with pytest.raises(SourceError, match="cannot be the image root"):
        plan_layer(0, LayerSpec("app/a.pyc", "/"), files, "t")
    nested = make_repo(root / "vendor", {"x": "1"})
    commit_all(root)
    assert nested.exists()
    with WorkTree(root) as tree, pytest.raises(SourceError, match="submodule or nested"):
        plan_layer(0, LayerSpec(".", "/"), tree.files(), tree.description)
