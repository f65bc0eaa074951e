"""The layer writer: byte-identical output, normalized metadata, and refusal of what a layer must
not hold (escaping symlinks, devices, hard links, setuid bits nobody asked for)."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import random
import socket
import tarfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immutrail.artifacts import oci
from immutrail.artifacts.definition import LayerSpec
from immutrail.artifacts.digests import HashingWriter
from immutrail.artifacts.errors import SourceError
from immutrail.artifacts.layerplan import plan_layer
from immutrail.artifacts.layers import (
    COMPRESS_CHUNK,
    Entry,
    Kind,
    LayerResult,
    WrittenMember,
    complete,
    tar_header,
    write_layer,
)
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


# -- compression in its own thread ------------------------------------------------------------


def test_threaded_compression_gives_the_bytes_of_one_gzip_stream() -> None:
    """Chunks of several MiB cross the thread boundary; the blob is still byte for byte what one
    GzipFile (level 6, no name, mtime 0) makes of the whole tar, so no digest moved."""
    rnd = random.Random(5)
    text = b" ".join(rnd.choice([b"alpha", b"beta", b"gamma", b"delta"]) for _ in range(900_000))
    noise = rnd.randbytes(3 * COMPRESS_CHUNK + 123)
    entries = [
        Entry("a/text", Kind.FILE, 0o644, size=len(text), open=opener(text)),
        Entry("a/noise", Kind.FILE, 0o644, size=len(noise), open=opener(noise)),
        Entry("a/empty", Kind.FILE, 0o644, size=0, open=opener(b"")),
    ]
    sink = io.BytesIO()
    result = write_layer(entries, sink, EPOCH)
    blob = sink.getvalue()
    tar_bytes = gzip.decompress(blob)
    assert "sha256:" + hashlib.sha256(tar_bytes).hexdigest() == result.diff_id
    single = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", compresslevel=6, fileobj=single, mtime=0) as gz:
        gz.write(tar_bytes)
    assert blob == single.getvalue()
    assert result.inputs == {}  # entries without a repository source report no input


def test_uncompressed_layer_is_the_tar_itself_hashed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """``none`` writes the bytes gzip would have compressed, with no thread, through the sink's
    own hash when it is a fresh HashingWriter (the store's blob writer): no second hash."""
    rnd = random.Random(3)
    noise = rnd.randbytes(2 * COMPRESS_CHUNK + 7)
    entries = [
        Entry("a/noise", Kind.FILE, 0o644, size=len(noise), open=opener(noise), source="n"),
        Entry("a/link", Kind.SYMLINK, 0o777, linkname="noise"),
        Entry("a/empty", Kind.FILE, 0o600, size=0, open=opener(b"")),
    ]
    compressed = io.BytesIO()
    gzipped = write_layer(entries, compressed, EPOCH)
    plain = io.BytesIO()
    sink = HashingWriter(plain)
    made: list[HashingWriter] = []
    real_init = HashingWriter.__init__

    def counting(self: HashingWriter, target: Any = None) -> None:
        made.append(self)
        real_init(self, target)

    monkeypatch.setattr(HashingWriter, "__init__", counting)
    started = threading.Thread.start
    monkeypatch.setattr(threading.Thread, "start", lambda _: pytest.fail("a thread was started"))
    result = write_layer(entries, sink, EPOCH, compression="none")
    monkeypatch.setattr(threading.Thread, "start", started)

    assert made == []  # the sink's hash is the diff_id
    assert plain.getvalue() == gzip.decompress(compressed.getvalue())
    assert result.diff_id == sink.digest == gzipped.diff_id
    assert result.uncompressed_size == sink.size == len(plain.getvalue())
    assert (result.media_type, gzipped.media_type) == (oci.LAYER_TAR, oci.LAYER_GZIP)
    assert result.inputs == gzipped.inputs == {"n": hashlib.sha256(noise).hexdigest()}
    # any other sink: the writer hashes the tar itself
    other = io.BytesIO()
    again = write_layer(entries, other, EPOCH, compression="none")
    assert other.getvalue() == plain.getvalue() and again.diff_id == result.diff_id
    assert len(made) == 1


def test_an_unknown_compression_is_refused() -> None:
    with pytest.raises(SourceError, match="unknown layer compression 'zstd'"):
        write_layer([Entry("a", Kind.DIRECTORY, 0o755)], io.BytesIO(), EPOCH, compression="zstd")


def test_a_failing_sink_stops_the_layer_and_its_thread() -> None:
    class Full:
        written = 0

        def write(self, data: bytes) -> int:
            self.written += len(data)
            if self.written > 1000:
                raise OSError(28, "No space left on device")
            return len(data)

        def flush(self) -> None:
            pass

    data = random.Random(1).randbytes(4 * COMPRESS_CHUNK)
    entries = [Entry("big", Kind.FILE, 0o644, size=len(data), open=opener(data))]
    with pytest.raises(OSError, match="No space left"):
        write_layer(entries, Full(), EPOCH)
    assert not [t for t in threading.enumerate() if t.name == "layer-gzip"]


def test_a_failing_source_stops_the_thread() -> None:
    @contextlib.contextmanager
    def broken() -> Iterator[BinaryIO]:
        raise SourceError("cannot read big")
        yield io.BytesIO()  # pragma: no cover - never reached

    data = random.Random(2).randbytes(2 * COMPRESS_CHUNK)
    entries = [
        Entry("a", Kind.FILE, 0o644, size=len(data), open=opener(data)),
        Entry("b", Kind.FILE, 0o644, size=1, open=broken),
    ]
    with pytest.raises(SourceError, match="cannot read big"):
        write_layer(entries, io.BytesIO(), EPOCH)
    assert not [t for t in threading.enumerate() if t.name == "layer-gzip"]


def opener(data: bytes) -> Callable[[], AbstractContextManager[BinaryIO]]:
    return lambda: contextlib.nullcontext(io.BytesIO(data))


# -- blobs streamed from one git process --------------------------------------------------------


def read_all(tree: GitCommitTree, paths: list[str]) -> dict[str, bytes]:
    files = {f.path: f for f in tree.files()}
    out = {}
    for path in paths:
        source = files[path]
        assert source.open is not None
        with source.open() as stream:
            out[path] = stream.read(source.size)
    return out


def test_prefetched_blobs_are_read_in_order_and_out_of_order_still_works(tmp_path: Path) -> None:
    files = {f"app/f{i:03d}": f"content {i}\n" * i for i in range(60)}
    files["app/same"] = files["app/f007"]  # one blob under two names
    root = make_repo(tmp_path / "r", files)
    order = sorted(files)
    with GitCommitTree(root, "HEAD") as tree:
        with tree.prefetch(order):
            assert read_all(tree, order) == {p: c.encode() for p, c in files.items()}
        assert tree._proc is None  # every answer came from the prefetch, none from a round trip
        shuffled = order[::-1]
        with tree.prefetch(order):  # announced one way, read another: each falls back
            assert read_all(tree, shuffled) == {p: files[p].encode() for p in shuffled}
        with tree.prefetch(order):  # stopped early: leaving the block ends git, no hang
            assert read_all(tree, order[:3]) == {p: files[p].encode() for p in order[:3]}
        assert read_all(tree, ["app/same"]) == {"app/same": files["app/f007"].encode()}


def test_link_targets_are_read_in_one_request(tmp_path: Path) -> None:
    root = make_repo(
        tmp_path / "r",
        {"app/a": "1", "app/l1": "-> a", "app/sub/l2": "-> ../a", "app/l3": "-> sub"},
    )
    with GitCommitTree(root, "HEAD") as tree:
        links = {f.path: f.linkname for f in tree.files() if f.kind is SourceKind.SYMLINK}
    assert links == {"app/l1": "a", "app/sub/l2": "../a", "app/l3": "sub"}


# -- the tar bytes are tarfile's ---------------------------------------------------------------

_NAME_CHARS = st.characters(blacklist_characters="\0/", blacklist_categories=("Cs",))
_COMPONENT = st.text(_NAME_CHARS, min_size=1, max_size=40).filter(lambda p: p not in (".", ".."))


@settings(max_examples=400, deadline=None)
@given(
    parts=st.lists(_COMPONENT, min_size=1, max_size=5),
    kind=st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE]),
    mode=st.integers(0, 0o7777),
    uid=st.one_of(st.integers(0, 0o7777777), st.integers(0o7777777, 2**40)),
    gid=st.integers(0, 0o7777777 + 5),
    size=st.one_of(st.integers(0, 10**6), st.integers(8**11 - 2, 8**11 + 2)),
    mtime=st.one_of(st.integers(0, 2**33), st.integers(8**11 - 2, 8**11 + 2)),
    link=st.text(_NAME_CHARS, max_size=120),
)
def test_tar_header_is_tarfiles_gnu_header(
    parts: list[str], kind: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, link: str
) -> None:
    """The fast header, against tarfile's own for names and links up to and past 100 bytes,
    ids, sizes and times at the edge of what octal fields hold (tarfile's base-256 beyond)."""
    info = tarfile.TarInfo("/".join(parts))
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, mtime
    info.uname = info.gname = ""
    if kind == tarfile.REGTYPE:
        info.size = size
    if kind == tarfile.SYMTYPE:
        info.linkname = link
    member = WrittenMember(
        info.name, info.type, info.mode, info.uid, info.gid, info.size, info.linkname
    )
    assert tar_header(member, mtime) == info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")


def test_layer_bytes_are_what_tarfile_writes() -> None:
    """write_layer against tarfile.TarFile writing the same members (GNU format): the header,
    content, padding and end-of-archive bytes, over a long name, a long link, an empty file, a
    file of exactly one block and one of several MiB."""
    rnd = random.Random(5)
    long_dir = "d" * 60 + "/" + "e" * 60
    contents = {
        "a/empty": b"",
        "a/block": rnd.randbytes(512),
        "a/big": rnd.randbytes(2 * COMPRESS_CHUNK + 3),
        f"{long_dir}/file-with-a-long-name": b"x" * 700,
        "a/\udcff-not-utf8": b"surrogate",
    }
    entries = [
        Entry(path, Kind.FILE, 0o640, 7, 8, size=len(data), open=opener(data))
        for path, data in contents.items()
    ]
    entries.append(Entry("a/link", Kind.SYMLINK, 0o777, linkname="../" + "l" * 150))
    ordered = complete(entries)
    sink = HashingWriter(written := io.BytesIO())
    write_layer(ordered, sink, EPOCH, compression="none")

    expected = io.BytesIO()
    with tarfile.TarFile(
        fileobj=expected, mode="w", format=tarfile.GNU_FORMAT, errors="surrogateescape"
    ) as tar:
        for entry in ordered:
            info = tarfile.TarInfo(entry.path)
            info.mtime, info.mode, info.uid, info.gid = EPOCH, entry.mode, entry.uid, entry.gid
            info.uname = info.gname = ""
            if entry.kind is Kind.DIRECTORY:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif entry.kind is Kind.SYMLINK:
                info.type, info.linkname = tarfile.SYMTYPE, entry.linkname
                tar.addfile(info)
            else:
                info.size = entry.size
                tar.addfile(info, io.BytesIO(contents[entry.path]))
    assert written.getvalue() == expected.getvalue()
    assert len(written.getvalue()) % tarfile.RECORDSIZE == 0


@pytest.mark.parametrize(
    "path", ["", "/a", "a/", "a//b", "./a", "a/.", "a/./b", "..", "a/../b", "a/..", "a\0b"]
)
def test_paths_that_are_not_normal_are_refused(path: str) -> None:
    with pytest.raises(SourceError, match="not a normalized relative path"):
        complete([Entry(path, Kind.DIRECTORY, 0o755)])


def test_parents_are_added_once_and_a_file_cannot_be_a_parent() -> None:
    entries = complete(
        [
            Entry("a/b/c/f", Kind.FILE, 0o644, size=0, open=opener(b"")),
            Entry("a/b/g", Kind.FILE, 0o644, size=0, open=opener(b"")),
            Entry("a/b", Kind.DIRECTORY, 0o700),
            Entry("..a", Kind.DIRECTORY, 0o755),
        ]
    )
    assert [(e.path, e.mode) for e in entries] == [
        ("..a", 0o755),
        ("a", 0o755),
        ("a/b", 0o700),  # the definition's own entry, not an added one
        ("a/b/c", 0o755),
        ("a/b/c/f", 0o644),
        ("a/b/g", 0o644),
    ]
    with pytest.raises(SourceError, match="'a/b' is a file but 'a/b/c/d' is below it"):
        complete(
            [
                Entry("a/b", Kind.FILE, 0o644, size=0, open=opener(b"")),
                Entry("a/b/c/d", Kind.FILE, 0o644, size=0, open=opener(b"")),
            ]
        )
