"""RootFS: merging OCI layer tarballs, whiteouts, shadowed files, bounded content, bad entries."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import re
import tarfile
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest

from immutrail.artifacts import layers
from immutrail.artifacts.digests import HashingWriter
from immutrail.artifacts.layers import Entry, Kind
from immutrail.artifacts.rootfs import (
    ContentNotRetainedError,
    EntryType,
    LayerFormatError,
    PathNotFoundError,
    RootFS,
    RootFSError,
    RootFSLimitError,
    ShadowReason,
    TreeMerger,
    UnsafeEntryError,
    glob_to_regex,
)


@dataclass(frozen=True)
class E:
    """One tar entry to write: a file (``data``), ``dir``, ``sym``/``hard`` (``link``), or other."""

    name: str
    data: bytes | None = None
    kind: str = "file"
    link: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def write_layer(path: Path, entries: list[E], *, compress: bool = True) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, 0
            content = None
            if entry.kind == "file":
                content = entry.data or b""
                info.size = len(content)
            elif entry.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif entry.kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, entry.link
            elif entry.kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, entry.link
            elif entry.kind == "chr":
                info.type = tarfile.CHRTYPE
            elif entry.kind == "blk":
                info.type = tarfile.BLKTYPE
            elif entry.kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    data = raw.getvalue()
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def layer(tmp_path: Path):
    counter = iter(range(1000))

    def make(entries: list[E], *, compress: bool = True) -> Path:
        return write_layer(tmp_path / f"layer{next(counter)}.tar", entries, compress=compress)

    return make


def test_single_layer_metadata_and_digests(layer) -> None:
    body = b"#!/bin/sh\necho hi\n"
    path = layer(
        [
            E("./", kind="dir", mode=0o755),
            E("./usr/", kind="dir", mode=0o755),
            E("./usr/bin/", kind="dir", mode=0o755),
            E("./usr/bin/hello", body, mode=0o4755, uid=0, gid=50),
            E("./usr/bin/hi", kind="sym", link="hello", mode=0o777),
            E("./usr/bin/hello2", kind="hard", link="usr/bin/hello"),
            E("./run/pipe", kind="fifo", mode=0o600),
        ]
    )
    fs = RootFS.from_layers([path])
    hello = fs.entry("usr/bin/hello")
    assert hello.type is EntryType.FILE
    assert hello.mode == 0o4755  # setuid bit kept for the baseline checks
    assert (hello.uid, hello.gid, hello.size, hello.sha256) == (0, 50, len(body), sha(body))
    assert fs.entry("/usr/bin/hi").link_target == "hello"
    hard = fs.entry("usr/bin/hello2")
    assert hard.type is EntryType.HARDLINK and hard.is_file
    assert (hard.link_target, hard.sha256, hard.size) == ("usr/bin/hello", sha(body), len(body))
    assert fs.entry("run").type is EntryType.DIRECTORY  # implied parent
    assert fs.entry("run/pipe").type is EntryType.FIFO
    assert list(fs) == sorted(fs)
    assert "usr/bin/hello" in fs and "usr/bin/nope" not in fs
    assert len(fs) == 7


def test_layer_info_digest_and_diff_id(layer, tmp_path: Path) -> None:
    gz = layer([E("a", b"x")])
    plain = layer([E("a", b"x")], compress=False)
    fs = RootFS.from_layers([gz, plain])
    info_gz, info_plain = fs.layers
    assert info_gz.digest == "sha256:" + sha(gz.read_bytes())
    assert info_gz.diff_id == "sha256:" + sha(gzip.decompress(gz.read_bytes()))
    assert info_gz.compression == "gzip" and info_plain.compression == "none"
    assert info_plain.digest == info_plain.diff_id == "sha256:" + sha(plain.read_bytes())
    assert info_gz.diff_id == info_plain.diff_id  # same tar, differently wrapped
    assert info_gz.entries == 1


def test_upper_layer_overwrites_and_records_shadowed(layer) -> None:
    lower = layer([E("etc/app.conf", b"password=hunter2\n"), E("etc/keep", b"k")])
    upper = layer([E("etc/app.conf", b"password=<redacted>\n")])
    fs = RootFS.from_layers([lower, upper])
    assert fs.entry("etc/app.conf").sha256 == sha(b"password=<redacted>\n")
    assert fs.entry("etc/app.conf").layer == 1
    assert fs.entry("etc/keep").layer == 0
    (shadow,) = fs.shadowed
    assert shadow.entry.path == "etc/app.conf"
    assert shadow.entry.sha256 == sha(b"password=hunter2\n")
    assert (shadow.entry.layer, shadow.hidden_by_layer, shadow.reason) == (
        0,
        1,
        ShadowReason.OVERWRITTEN,
    )


def test_whiteout_removes_file_and_subtree_from_lower_layers(layer) -> None:
    lower = layer(
        [
            E("root/.ssh/id_rsa", b"PRIVATE KEY"),
            E("root/.ssh/known_hosts", b"hosts"),
            E("root/.profile", b"profile"),
            E("tmp/secret.txt", b"s3cr3t"),
        ]
    )
    upper = layer([E("root/.wh..ssh", b""), E("tmp/.wh.secret.txt", b"")])
    fs = RootFS.from_layers([lower, upper])
    assert sorted(fs) == ["root", "root/.profile", "tmp"]
    hidden = {(s.entry.path, s.entry.sha256, s.reason) for s in fs.shadowed}
    assert hidden == {
        ("root/.ssh/id_rsa", sha(b"PRIVATE KEY"), ShadowReason.WHITEOUT),
        ("root/.ssh/known_hosts", sha(b"hosts"), ShadowReason.WHITEOUT),
        ("tmp/secret.txt", sha(b"s3cr3t"), ShadowReason.WHITEOUT),
    }
    assert not any(path.startswith(".wh.") or "/.wh." in path for path in fs)


def test_whiteout_of_a_tree_deeper_than_the_recursion_limit(layer) -> None:
    deep = "/".join(["d"] * 3000)  # deeper than Python's recursion limit of 1000
    lower = layer([E(f"top/{deep}/f", b"deep"), E("keep", b"k")])
    upper = layer([E(".wh.top", b"")])
    fs = RootFS.from_layers([lower, upper])
    assert sorted(fs) == ["keep"]
    assert [s.entry.path for s in fs.shadowed] == [f"top/{deep}/f"]


def test_opaque_whiteout_empties_directory_of_lower_content_only(layer) -> None:
    lower = layer([E("app/", kind="dir"), E("app/old.py", b"old"), E("app/lib/x.py", b"x")])
    # The opaque marker comes *after* this layer's own file: it must not hide it.
    upper = layer(
        [E("app/", kind="dir", mode=0o750), E("app/new.py", b"new"), E("app/.wh..wh..opq", b"")]
    )
    fs = RootFS.from_layers([lower, upper])
    assert sorted(fs) == ["app", "app/new.py"]
    assert fs.entry("app").mode == 0o750
    assert {s.entry.path for s in fs.shadowed} == {"app/old.py", "app/lib/x.py"}
    assert {s.reason for s in fs.shadowed} == {ShadowReason.OPAQUE}


def test_whiteout_does_not_hide_same_layer_entry(layer) -> None:
    lower = layer([E("data/file", b"old")])
    upper = layer([E("data/file", b"new"), E("data/.wh.file", b"")])
    fs = RootFS.from_layers([lower, upper])
    assert fs.entry("data/file").sha256 == sha(b"new")


def test_whiteout_then_recreate_directory_in_same_layer(layer) -> None:
    lower = layer([E("opt/tool/bin", b"v1"), E("opt/tool/extra", b"e")])
    upper = layer([E("opt/.wh.tool", b""), E("opt/tool/bin", b"v2")])
    fs = RootFS.from_layers([lower, upper])
    assert sorted(fs) == ["opt", "opt/tool", "opt/tool/bin"]
    assert fs.entry("opt/tool/bin").sha256 == sha(b"v2")


def test_file_replacing_directory_removes_its_subtree(layer) -> None:
    lower = layer([E("srv/www/index.html", b"<html>")])
    upper = layer([E("srv/www", b"now a file")])
    fs = RootFS.from_layers([lower, upper])
    assert fs.entry("srv/www").type is EntryType.FILE
    assert "srv/www/index.html" not in fs
    assert [s.entry.path for s in fs.shadowed] == ["srv/www/index.html"]


def test_whiteout_of_missing_path_is_harmless(layer) -> None:
    fs = RootFS.from_layers([layer([E("a", b"1")]), layer([E(".wh.nothing", b"")])])
    assert list(fs) == ["a"] and fs.shadowed == ()


def test_file_deleted_then_readded_across_three_layers(layer) -> None:
    l0 = layer([E("etc/token", b"t0")])
    l1 = layer([E("etc/.wh.token", b"")])
    l2 = layer([E("etc/token", b"t2")])
    fs = RootFS.from_layers([l0, l1, l2])
    assert fs.entry("etc/token").sha256 == sha(b"t2")
    assert [(s.entry.sha256, s.hidden_by_layer) for s in fs.shadowed] == [(sha(b"t0"), 1)]


# -- content retention ---------------------------------------------------------------------


def test_read_returns_only_interesting_small_files(layer) -> None:
    status = b"Package: zlib1g\nStatus: install ok installed\n"
    path = layer(
        [
            E("var/lib/dpkg/status", status),
            E("usr/share/doc/big.txt", b"x" * 5000),
            E("usr/lib/python3/site-packages/a-1.dist-info/METADATA", b"Name: a\n"),
            E("app/node_modules/@scope/pkg/package.json", b"{}"),
            E("app/node_modules/pkg/lib/package.json", b"{}"),
        ]
    )
    fs = RootFS.from_layers([path])
    assert fs.read("var/lib/dpkg/status") == status
    assert fs.read("/var/lib/dpkg/status") == status
    assert fs.read("usr/lib/python3/site-packages/a-1.dist-info/METADATA") == b"Name: a\n"
    assert fs.read("app/node_modules/@scope/pkg/package.json") == b"{}"
    with pytest.raises(ContentNotRetainedError, match="matches no content pattern"):
        fs.read("usr/share/doc/big.txt")
    with pytest.raises(ContentNotRetainedError):  # nested package.json is not a package root
        fs.read("app/node_modules/pkg/lib/package.json")
    with pytest.raises(ContentNotRetainedError, match="more than the 10 allowed"):
        fs.read("var/lib/dpkg/status", max_bytes=10)
    with pytest.raises(PathNotFoundError):
        fs.read("etc/shadow")
    with pytest.raises(PathNotFoundError):
        fs.read("var/lib/dpkg")  # a directory


def test_content_limits_are_recorded_not_silent(layer) -> None:
    path = layer([E("var/lib/dpkg/status", b"x" * 100), E("lib/apk/db/installed", b"y" * 10)])
    fs = RootFS.from_layers([path], max_content_bytes=50)
    assert fs.read("lib/apk/db/installed") == b"y" * 10
    assert "larger than 50" in fs.unretained["var/lib/dpkg/status"]
    with pytest.raises(ContentNotRetainedError, match="larger than 50"):
        fs.read("var/lib/dpkg/status")
    fs = RootFS.from_layers([path], max_total_content_bytes=105)
    assert fs.read("var/lib/dpkg/status") == b"x" * 100
    assert "budget" in fs.unretained["lib/apk/db/installed"]


def test_overwritten_content_is_dropped_and_replaced(layer) -> None:
    lower = layer([E("etc/os-release", b"ID=debian\n")])
    upper = layer([E("etc/os-release", b"ID=alpine\n")])
    fs = RootFS.from_layers([lower, upper])
    assert fs.read("etc/os-release") == b"ID=alpine\n"
    removed = RootFS.from_layers([lower, layer([E("etc/.wh.os-release", b"")])])
    with pytest.raises(PathNotFoundError):
        removed.read("etc/os-release")


def test_read_follows_symlinks_inside_the_root(layer) -> None:
    path = layer(
        [
            E("usr/lib/os-release", b"ID=alpine\n"),
            E("etc/os-release", kind="sym", link="../usr/lib/os-release"),
            E("etc/abs-os-release", kind="sym", link="/usr/lib/os-release"),
            E("etc/loop", kind="sym", link="loop"),
        ]
    )
    fs = RootFS.from_layers([path])
    assert fs.read("etc/os-release") == b"ID=alpine\n"
    assert fs.read("etc/abs-os-release") == b"ID=alpine\n"
    assert fs.resolve("etc/abs-os-release") == "usr/lib/os-release"
    with pytest.raises(RootFSError, match="too many levels"):
        fs.read("etc/loop")


def test_glob() -> None:
    rx = glob_to_regex("**/node_modules/*/package.json")
    assert rx.fullmatch("node_modules/a/package.json")
    assert rx.fullmatch("app/x/node_modules/a/package.json")
    assert not rx.fullmatch("node_modules/a/b/package.json")
    assert glob_to_regex("var/lib/dpkg/status.d/*").fullmatch("var/lib/dpkg/status.d/base")
    assert not glob_to_regex("var/lib/dpkg/status.d/*").fullmatch("var/lib/dpkg/status.d/a/b")
    assert glob_to_regex("a/[!x]?.txt").fullmatch("a/yz.txt")
    assert not glob_to_regex("a/[!x]?.txt").fullmatch("a/xz.txt")
    assert glob_to_regex("a/[b.txt").fullmatch("a/[b.txt")  # unclosed class is literal
    assert glob_to_regex("etc/**").fullmatch("etc/a/b")


# -- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        (E("../etc/passwd", b"x"), "'..' component"),
        (E("usr/../../etc/passwd", b"x"), "'..' component"),
        (E("/etc/passwd", b"x"), "absolute path"),
        (E("dev/sda", kind="blk"), "device nodes"),
        (E("dev/null", kind="chr"), "device nodes"),
        (E("bin/evil", kind="sym", link="../../../etc/shadow"), "points outside the root"),
        (E("bin/evil", kind="hard", link="../etc/shadow"), "'..' component"),
        (E("bin/evil", kind="hard", link="/etc/shadow"), "absolute path"),
        (E("bin/evil", kind="hard", link="etc/missing"), "not a regular file"),
        (E("tmp/.wh...", b""), "whiteout of an invalid name"),
    ],
)
def test_unsafe_entries_are_refused_naming_layer_and_entry(layer, entry: E, reason: str) -> None:
    path = layer([E("ok", b"fine"), entry])
    with pytest.raises(UnsafeEntryError, match=re.escape(reason)) as info:
        RootFS.from_layers([path])
    assert info.value.layer == path
    assert info.value.entry == entry.name
    assert str(path) in str(info.value) and entry.name in str(info.value)


def test_tar_path_traversal_through_symlink_is_refused(layer) -> None:
    lower = layer([E("var/www", kind="sym", link="/etc")])
    upper = layer([E("var/www/passwd", b"root::0:0::/root:/bin/sh\n")])
    with pytest.raises(UnsafeEntryError, match="through the symbolic link 'var/www'"):
        RootFS.from_layers([lower, upper])


def test_entry_below_a_file_is_refused(layer) -> None:
    with pytest.raises(UnsafeEntryError, match="'a' is not a directory"):
        RootFS.from_layers([layer([E("a", b"file"), E("a/b", b"child")])])


def test_duplicate_entry_in_one_layer_is_refused(layer) -> None:
    path = layer([E("etc/passwd", b"one"), E("etc/passwd", b"two")])
    with pytest.raises(UnsafeEntryError, match="appears twice"):
        RootFS.from_layers([path])


def test_file_replacing_a_directory_the_same_layer_writes_into_is_refused(layer) -> None:
    with pytest.raises(UnsafeEntryError, match="also writes into"):
        RootFS.from_layers([layer([E("d/x", b"1"), E("d", b"file")])])


def test_relative_symlink_staying_inside_is_accepted(layer) -> None:
    path = layer(
        [
            E("usr/lib/a", b"1"),
            E("lib", kind="sym", link="usr/lib"),
            E("usr/bin/x", kind="sym", link="../lib/a"),
        ]
    )
    fs = RootFS.from_layers([path], content_patterns=["usr/lib/a"])
    assert fs.read("lib/a") == b"1" and fs.read("usr/bin/x") == b"1"


def test_truncated_layer_is_a_clear_error(layer, tmp_path: Path) -> None:
    good = layer([E("a", b"x" * 100_000), E("b", b"y")], compress=False)
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:50_000])
    with pytest.raises(LayerFormatError, match=r"cut\.tar"):
        RootFS.from_layers([cut])
    gz = layer([E("a", b"x" * 100_000)])
    cut_gz = tmp_path / "cut.tar.gz"
    cut_gz.write_bytes(gz.read_bytes()[:-20])
    with pytest.raises(LayerFormatError):
        RootFS.from_layers([cut_gz])


def test_garbage_and_zstd_and_missing_layers(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(LayerFormatError):
        RootFS.from_layers([junk])
    zstd = tmp_path / "zstd"
    zstd.write_bytes(b"\x28\xb5\x2f\xfd" + b"\x00" * 100)
    with pytest.raises(LayerFormatError, match="zstd"):
        RootFS.from_layers([zstd])
    with pytest.raises(LayerFormatError, match="cannot open"):
        RootFS.from_layers([tmp_path / "absent"])


def test_entry_limit(layer) -> None:
    path = layer([E(f"f{i}", b"") for i in range(10)])
    with pytest.raises(RootFSLimitError):
        RootFS.from_layers([path], max_entries=5)
    assert len(RootFS.from_layers([path], max_entries=10)) == 10


def test_large_layer_is_streamed_not_kept(layer) -> None:
    blob = bytes(range(256)) * 40_000  # ~10 MB, not a content pattern
    fs = RootFS.from_layers([layer([E("opt/big.bin", blob)])])
    assert fs.entry("opt/big.bin").sha256 == sha(blob)
    assert fs._contents == {}


def test_hard_link_to_kept_content_reads_the_same(layer) -> None:
    status = b"Package: a\n"
    path = layer(
        [
            E("var/lib/dpkg/status", status),
            E("etc/os-release", kind="hard", link="var/lib/dpkg/status"),
            E("opt/data", b"not kept"),
            E("usr/lib/os-release", kind="hard", link="opt/data"),
        ]
    )
    fs = RootFS.from_layers([path])
    assert fs.read("etc/os-release") == status
    assert "target's content was not kept" in fs.unretained["usr/lib/os-release"]
    with pytest.raises(ContentNotRetainedError, match="target's content"):
        fs.read("usr/lib/os-release")
    assert [e.path for e in fs.entries()] == sorted(fs)
    with pytest.raises(PathNotFoundError):
        fs.entry("nope")


def test_unknown_whiteout_metadata_is_ignored(layer) -> None:
    fs = RootFS.from_layers([layer([E("a", b"1")]), layer([E(".wh..wh.plnk", b"")])])
    assert list(fs) == ["a"]


# -- a tree merged from the headers a builder writes ---------------------------------------------


def written_layer(
    path: Path,
    entries: list[Entry],
    merger: TreeMerger | None = None,
    mtime: int = 0,
    compression: str = "gzip",
) -> Path:
    """Write ``entries`` with the builder's layer writer, telling ``merger`` as it goes."""
    with path.open("wb") as out:
        sink = HashingWriter(out)
        if merger is not None:
            merger.begin_layer(path)
        result = layers.write_layer(entries, sink, mtime, merger, compression)
    if merger is not None:
        merger.end_layer(path, sink.digest, result.diff_id, compression)
    return path


def content(data: bytes) -> Callable[[], AbstractContextManager[BinaryIO]]:
    return lambda: contextlib.nullcontext(io.BytesIO(data))


def file_entry(path: str, data: bytes, mode: int = 0o644) -> Entry:
    return Entry(path, Kind.FILE, mode, size=len(data), open=content(data))


def same_tree(a: RootFS, b: RootFS) -> None:
    assert list(a.entries()) == list(b.entries())
    assert dict(a.unretained) == dict(b.unretained)
    assert a.shadowed == b.shadowed
    assert a.layers == b.layers
    for entry in a.entries():
        if entry.is_file:
            try:
                kept: bytes | None = a.read(entry.path, max_bytes=1 << 30)
            except ContentNotRetainedError:
                kept = None
            if kept is None:
                with pytest.raises(ContentNotRetainedError):
                    b.read(entry.path, max_bytes=1 << 30)
            else:
                assert b.read(entry.path, max_bytes=1 << 30) == kept


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_a_tree_merged_while_writing_equals_the_one_read_back(
    layer, tmp_path: Path, compression: str
) -> None:
    """Whiteouts, an opaque directory, an overwritten file, a link and kept or too-large package
    files: the tree told the headers as they are written is the tree read from the layer file,
    gzip or uncompressed (the layers' records, their compression included, are equal too)."""
    lower = layer(
        [
            E("etc/os-release", b"ID=debian\nVERSION_ID=12\n"),
            E("var/lib/dpkg/status", b"Package: old\n"),
            E("opt/gone/a", b"a"),
            E("opt/emptied/b", b"b"),
            E("usr/bin/tool", b"v1"),
        ]
    )
    upper = [
        file_entry("etc/.wh.os-release", b""),
        Entry("etc/os-release", Kind.SYMLINK, 0o777, linkname="../usr/lib/os-release"),
        file_entry("usr/lib/os-release", b"ID=alpine\nVERSION_ID=3.14.2\n"),
        file_entry("opt/.wh.gone", b""),
        file_entry("opt/emptied/.wh..wh..opq", b""),
        file_entry("opt/emptied/c", b"c"),
        file_entry("usr/bin/tool", b"v2", 0o755),
        file_entry("lib/apk/db/installed", b"P:musl\nV:1.2.2-r3\n"),
        file_entry("app/node_modules/big/package.json", b"{}" * 60),
        file_entry("app/node_modules/ok/package.json", b'{"name": "ok", "version": "1.0.0"}'),
    ]
    settings = {"max_content_bytes": 100}
    merger = TreeMerger(**settings)
    merger.apply_layer(lower)
    top = written_layer(tmp_path / "upper.tar", upper, merger, 1_700_000_000, compression)
    live = merger.result()

    same_tree(live, RootFS.from_layers([lower, top], **settings))
    assert live.read("etc/os-release").startswith(b"ID=alpine")
    assert "opt/gone/a" not in live and "opt/emptied/b" not in live
    assert {s.entry.path for s in live.shadowed} == {
        "etc/os-release",
        "opt/gone/a",
        "opt/emptied/b",
        "usr/bin/tool",
    }
    assert "larger than 100 bytes" in live.unretained["app/node_modules/big/package.json"]


def test_merger_result_equals_reading_the_written_layers(layer, tmp_path: Path) -> None:
    lower = layer([E("etc/os-release", b"ID=debian\n")])
    merger = TreeMerger()
    merger.apply_layer(lower)
    top = written_layer(tmp_path / "top.tar.gz", [file_entry("a", b"1")], merger)
    same_tree(RootFS.from_layers([lower, top]), merger.result())


def test_merger_misuse_is_refused(tmp_path: Path) -> None:
    merger = TreeMerger()
    info = tarfile.TarInfo("a")
    with pytest.raises(RuntimeError, match="begin_layer"):
        merger.apply_written(info, "0" * 64, None)
    with pytest.raises(RuntimeError, match="begin_layer"):
        merger.end_layer(tmp_path / "x", "sha256:" + "0" * 64, "sha256:" + "0" * 64)
    merger.begin_layer(tmp_path / "x")
    with pytest.raises(RuntimeError, match="not ended"):
        merger.begin_layer(tmp_path / "y")
    info.size = 3
    with pytest.raises(ValueError, match="not reported"):
        merger.apply_written(info, None, None)


@pytest.mark.parametrize(
    "pattern",
    ["**/*.dist-info/METADATA", "a/[bc]d", "a/[!b]d", "a/x[]a]z", "a/*", "**", "a/?d", "**/d"],
)
def test_glob_finds_what_its_regex_matches(layer, pattern: str) -> None:
    names = ["a/bd", "a/cd", "a/xd", "a/x]z", "a/xaz", "p/q.dist-info/METADATA", "q/d"]
    fs = RootFS.from_layers([layer([E(name, b"1") for name in names])])
    regex = glob_to_regex(pattern)
    assert fs.glob(pattern) == [path for path in fs if regex.fullmatch(path)]
    assert fs.glob(pattern)  # each pattern matches something here
