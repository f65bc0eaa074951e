"""A local instance's unpacked root against its image: clean, tampered for real, checked again.

Instances are started by the real ``LocalRuntime`` (a process that writes logs into its scratch
folder and waits); tampering is done the way someone on the host would: chmod the read-only file
writable, change a byte, add, remove, replace by a link, restore an mtime with ``os.utime``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from immutrail.artifacts.builder import BuildResult
from immutrail.artifacts.store import Store
from immutrail.artifacts.unpack import make_writable, unpack_image
from immutrail.deploy.local import LocalRuntime
from immutrail.deploy.runtime import Instance, InstanceSpec
from immutrail.drift import (
    Change,
    DriftInputError,
    IntegrityReport,
    RecheckPolicy,
    check_root,
    drift_key,
    expected_files,
)
from immutrail.drift.expected import ExpectedTree

from .conftest import SLEEPER

NO_SAMPLE = RecheckPolicy(full_every=100, sample_fraction=0.0, sample_min=0)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def runtime(home: Path) -> Iterator[LocalRuntime]:
    runtime = LocalRuntime(home, Store.for_home(home, create=True), grace_seconds=1.0)
    yield runtime
    for instance in runtime.list():
        runtime.destroy(instance.id)


def start(runtime: LocalRuntime, image: BuildResult) -> tuple[Instance, Path]:
    instance = runtime.create(InstanceSpec("dev", "app", image.digest, command=SLEEPER))
    folder = runtime.root / instance.id
    log = folder / "scratch" / "app.log"
    deadline = time.monotonic() + 30
    while not (log.exists() and log.read_text() == "started\n"):
        assert time.monotonic() < deadline, runtime.logs(instance.id)
        time.sleep(0.05)
    return instance, folder / "rootfs"


@contextmanager
def writable(folder: Path) -> Iterator[None]:
    """Give a read-only folder its owner's write bit back for a moment, then restore its mode."""
    mode = stat.S_IMODE(folder.stat().st_mode)
    folder.chmod(mode | stat.S_IWUSR)
    try:
        yield
    finally:
        folder.chmod(mode)


def by_path(report: IntegrityReport) -> dict[str, dict[str, Any]]:
    return {f["path"]: f for f in report.to_json()["findings"]}


def test_a_clean_instance_has_no_finding_even_with_logs_in_its_scratch(
    home: Path, app_image: BuildResult, runtime: LocalRuntime
) -> None:
    _, root = start(runtime, app_image)
    expected = expected_files(runtime.store, app_image.digest)
    report = check_root(expected, root)
    assert report.clean, report.summary()
    assert report.files_checked == expected.file_count == 8
    assert report.bytes_hashed == expected.content_bytes
    document = report.to_json()
    assert document["clean"] is True and document["findings"] == []
    assert document["counts"] == {"added": 0, "removed": 0, "modified": 0, "unreadable": 0}
    assert document["runtime"] == "local" and document["image"] == app_image.digest
    assert "clean" in report.summary()


def test_a_runtime_mount_point_inside_the_root_is_ignored(
    home: Path, app_image: BuildResult, tmp_path: Path
) -> None:
    store = Store.for_home(home)
    root = unpack_image(store, app_image.digest, tmp_path / "rootfs")
    with writable(root):
        (root / "tmp" / "logs").mkdir(parents=True)  # as a runtime mounting a scratch at /tmp
    (root / "tmp" / "logs" / "service.log").write_text("a log line\n")
    expected = expected_files(store, app_image.digest)
    assert check_root(expected, root, ignore=["/tmp"]).clean
    noticed = by_path(check_root(expected, root))
    assert set(noticed) == {"/tmp", "/tmp/logs", "/tmp/logs/service.log"}
    assert noticed["/tmp/logs/service.log"]["sha256"] == sha(b"a log line\n")
    with pytest.raises(DriftInputError, match=r"without '\.\.'"):
        check_root(expected, root, ignore=["../elsewhere"])


def test_tampering_gives_the_right_findings_with_hashes(
    home: Path, app_image: BuildResult, runtime: LocalRuntime, tmp_path: Path
) -> None:
    _, root = start(runtime, app_image)
    expected = expected_files(runtime.store, app_image.digest)
    app = root / "opt" / "app"
    original = (app / "server.py").read_bytes()

    # 1. made writable, one byte changed (and left writable)
    server = app / "server.py"
    server.chmod(0o644)
    changed = b"P" + original[1:]
    server.write_bytes(changed)
    # 2. a file added into the root
    with writable(app):
        (app / "backdoor.sh").write_bytes(b"#!/bin/sh\nnc -l 4444\n")
    # 3. one removed
    with writable(app / "lib"):
        (app / "lib" / "extra.py").unlink()
    # 4. chmod: setuid on the launcher
    (app / "bin" / "run").chmod(0o4555)
    # 5. a file replaced by a symbolic link that leads out of the root
    with writable(app / "static"):
        (app / "static" / "index.html").unlink()
        (app / "static" / "index.html").symlink_to("/etc/passwd")
    # 6. a folder replaced by a link to the host's root: never followed
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not part of any image\n")
    with writable(app):
        make_writable(app / "data")
        shutil.rmtree(app / "data")
        (app / "data").symlink_to(outside)

    report = check_root(expected, root)
    found = by_path(report)
    assert set(found) == {
        "/opt/app/server.py",
        "/opt/app/backdoor.sh",
        "/opt/app/lib/extra.py",
        "/opt/app/bin/run",
        "/opt/app/static/index.html",
        "/opt/app/data",
        "/opt/app/data/one.txt",
        "/opt/app/data/two.txt",
    }
    assert found["/opt/app/server.py"]["change"] == "modified"
    assert found["/opt/app/server.py"]["differences"] == [
        {"aspect": "content", "expected": sha(original), "observed": sha(changed)},
        {"aspect": "mode", "expected": "0444", "observed": "0644"},
    ]
    assert found["/opt/app/backdoor.sh"] == {
        "path": "/opt/app/backdoor.sh",
        "change": "added",
        "type": "file",
        "sha256": sha(b"#!/bin/sh\nnc -l 4444\n"),
        "size": 21,
        "detail": f"mode 0644, owner {os.getuid()}:{os.getgid()}",
    }
    assert found["/opt/app/lib/extra.py"] == {
        "path": "/opt/app/lib/extra.py",
        "change": "removed",
        "type": "file",
        "sha256": sha(b"Y = 2\n"),
        "size": 6,
    }
    assert found["/opt/app/bin/run"]["differences"] == [
        {"aspect": "mode", "expected": "0555", "observed": "4555"}
    ]
    assert found["/opt/app/static/index.html"]["differences"] == [
        {"aspect": "type", "expected": "file", "observed": "symlink"},
        {"aspect": "content", "expected": sha(b"<p>hello</p>\n"), "observed": None},
        {"aspect": "link_target", "expected": None, "observed": "/etc/passwd"},
    ]
    assert found["/opt/app/data"]["differences"][0] == {
        "aspect": "type",
        "expected": "directory",
        "observed": "symlink",
    }
    assert found["/opt/app/data/one.txt"]["change"] == "removed"
    assert report.counts() == {"added": 1, "removed": 3, "modified": 4, "unreadable": 0}
    # nothing behind the links was read: only the image's files that are still there
    # of 8 files, 4 are gone (removed, or now links): 4 hashed, and the backdoor
    assert report.files_hashed == 5
    assert report.bytes_hashed == sum(
        e.size
        for e in expected
        if e.is_file
        and e.path not in {"opt/app/lib/extra.py", "opt/app/static/index.html"}
        and not e.path.startswith("opt/app/data/")
    ) + len(b"#!/bin/sh\nnc -l 4444\n")
    assert [f["path"] for f in report.to_json()["findings"]] == sorted(found)
    assert "DRIFT: 1 added, 3 removed, 4 modified" in report.summary()


def test_an_unreadable_file_is_a_finding_not_a_crash(
    home: Path, app_image: BuildResult, tmp_path: Path
) -> None:
    store = Store.for_home(home)
    expected = expected_files(store, app_image.digest)
    # a folder every user can reach (pytest's own tmp folders are private to root)
    base = Path(tempfile.mkdtemp(prefix="drift-unreadable-"))
    try:
        base.chmod(0o755)
        root = unpack_image(store, app_image.digest, base / "rootfs")
        (root / "opt" / "app" / "server.py").chmod(0o000)
        (root / "opt" / "app" / "lib").chmod(0o000)
        if os.geteuid() == 0:
            # root reads everything: check as an unprivileged user, as a real check would run
            document = check_as_nobody(expected, root)
        else:
            document = check_root(expected, root).to_json()
    finally:
        make_writable(base)
        shutil.rmtree(base)
    found = {f["path"]: f for f in document["findings"]}
    assert found["/opt/app/server.py"]["change"] == "unreadable"
    assert "Permission denied" in found["/opt/app/server.py"]["detail"]
    # what the folder holds could not be seen: not "removed", and said so
    assert not {"/opt/app/lib/util.py", "/opt/app/lib/extra.py"} & set(found)
    assert "2 paths of the image are below folders that could not be read" in document["notes"]
    # and the image's own 0640 config file, which only its owner may read
    assert found["/etc/app/app.toml"]["change"] == "unreadable"
    assert document["counts"]["unreadable"] == 3
    lib = [f for f in document["findings"] if f["path"] == "/opt/app/lib"]
    assert [f["change"] for f in lib] == ["modified", "unreadable"]  # its mode, then its listing


def check_as_nobody(expected: ExpectedTree, root: Path) -> dict[str, Any]:
    """check_root in a forked child that dropped to uid/gid 65534; its report's JSON.

    Forked, not executed: the interpreter itself may live where that user cannot read it.
    """
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            data = json.dumps(check_root(expected, root).to_json()).encode()
            with os.fdopen(writer, "wb") as out:
                out.write(data)
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    with os.fdopen(reader, "rb") as source:
        data = source.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    document: dict[str, Any] = json.loads(data)
    return document


def test_a_second_check_is_cheaper_and_still_sees_a_change_with_its_mtime_restored(
    home: Path, app_image: BuildResult, runtime: LocalRuntime, tmp_path: Path
) -> None:
    _, root = start(runtime, app_image)
    store = runtime.store
    expected = expected_files(store, app_image.digest)
    state = tmp_path / "state" / "instance.json"
    key = drift_key(store)

    first = check_root(expected, root, state=state, seal_key=key, policy=NO_SAMPLE)
    assert first.clean and first.full and first.files_hashed == 8
    assert "no usable state" in first.notes[0]

    second = check_root(expected, root, state=state, seal_key=key, policy=NO_SAMPLE)
    assert second.clean and not second.full
    assert (second.files_trusted, second.files_hashed, second.bytes_hashed) == (8, 0, 0)

    # change one byte and put the mtime (and atime) back: size and mtime say "unchanged"
    target = root / "opt" / "app" / "lib" / "util.py"
    before = target.lstat()
    target.chmod(0o644)
    target.write_bytes(b"X = 2\n")  # same size
    target.chmod(stat.S_IMODE(before.st_mode))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.lstat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size,
        before.st_mtime_ns,
        before.st_ino,
    )
    assert (
        after.st_ctime_ns != before.st_ctime_ns
    )  # the kernel set ctime to "now"; nobody can undo it

    third = check_root(expected, root, state=state, seal_key=key, policy=NO_SAMPLE)
    assert not third.full and third.files_hashed == 1 and third.files_trusted == 7
    [finding] = third.findings
    assert (finding.path, finding.change) == ("/opt/app/lib/util.py", Change.MODIFIED)
    assert finding.differences[0].expected == sha(b"X = 1\n")
    assert finding.differences[0].observed == sha(b"X = 2\n")

    # a changed file is never recorded as verified: it is hashed, and reported, every time
    fourth = check_root(expected, root, state=state, seal_key=key, policy=NO_SAMPLE)
    assert [f.path for f in fourth.findings] == ["/opt/app/lib/util.py"]
    assert fourth.files_hashed == 1


def test_every_nth_check_and_full_true_hash_everything_and_a_sample_is_always_hashed(
    home: Path, app_image: BuildResult, tmp_path: Path
) -> None:
    store = Store.for_home(home)
    root = unpack_image(store, app_image.digest, tmp_path / "rootfs")
    expected = expected_files(store, app_image.digest)
    state = tmp_path / "state.json"
    every_third = RecheckPolicy(full_every=3, sample_fraction=0.0, sample_min=0)
    fulls = [check_root(expected, root, state=state, policy=every_third).full for _ in range(7)]
    assert fulls == [True, False, False, True, False, False, True]
    forced = check_root(expected, root, state=state, policy=every_third, full=True)
    assert forced.full and forced.files_hashed == 8
    assert "a full check was asked for" in forced.notes[0]

    sampled = check_root(
        expected, root, state=state, policy=RecheckPolicy(sample_fraction=0.0, sample_min=3)
    )
    assert not sampled.full and (sampled.files_hashed, sampled.files_trusted) == (3, 5)


def test_a_tampered_or_foreign_state_is_discarded(
    home: Path, app_image: BuildResult, tmp_path: Path
) -> None:
    store = Store.for_home(home)
    expected = expected_files(store, app_image.digest)
    root = unpack_image(store, app_image.digest, tmp_path / "one")
    other = unpack_image(store, app_image.digest, tmp_path / "two")
    key = drift_key(store)
    state = tmp_path / "state.json"
    check_root(expected, root, state=state, seal_key=key)

    # someone marks a file as verified with the stat tuple of its changed version
    document = json.loads(state.read_bytes())
    first = next(iter(document["body"]["files"]))
    document["body"]["files"][first][4] += 1
    state.write_text(json.dumps(document))
    report = check_root(expected, root, state=state, seal_key=key)
    assert report.full and any("does not match its seal" in n for n in report.notes)

    # an intact state of one instance is not used for another
    report = check_root(expected, other, state=state, seal_key=key)
    assert report.full and any("belongs to another root" in n for n in report.notes)

    # a keyed state read without the key (or the other way round) is refused
    report = check_root(expected, other, state=state)
    assert report.full and any("sealed with 'hmac-sha256'" in n for n in report.notes)

    state.write_text("{not json")
    report = check_root(expected, other, state=state)
    assert report.full and any("is not JSON" in n for n in report.notes)
    assert report.clean


def test_a_bad_root_or_policy_is_an_input_error(
    home: Path, app_image: BuildResult, tmp_path: Path
) -> None:
    expected = expected_files(Store.for_home(home), app_image.digest)
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(DriftInputError, match="does not exist"):
        check_root(expected, tmp_path / "missing")
    with pytest.raises(DriftInputError, match="not a folder"):
        check_root(expected, tmp_path / "a-file")
    with pytest.raises(DriftInputError, match="not a folder"):
        check_root(expected, tmp_path / "link")  # never followed, not even for the root
    with pytest.raises(DriftInputError, match="full_every"):
        RecheckPolicy(full_every=0)
    with pytest.raises(DriftInputError, match="sample_fraction"):
        RecheckPolicy(sample_fraction=2.0)


def test_a_writable_root_folder_is_a_finding(
    home: Path, app_image: BuildResult, tmp_path: Path
) -> None:
    store = Store.for_home(home)
    root = unpack_image(store, app_image.digest, tmp_path / "rootfs")
    mode = stat.S_IMODE(root.stat().st_mode)
    root.chmod(mode | 0o200)
    (root / "opt").chmod(stat.S_IMODE((root / "opt").stat().st_mode) | 0o020)
    found = by_path(check_root(expected_files(store, app_image.digest), root))
    assert set(found) == {"/", "/opt"}
    assert found["/"]["differences"] == [
        {"aspect": "mode", "expected": f"{mode:04o}", "observed": f"{mode | 0o200:04o}"}
    ]
    assert found["/opt"]["differences"] == [
        {"aspect": "mode", "expected": f"{mode:04o}", "observed": f"{mode | 0o020:04o}"}
    ]


def test_a_planted_fifo_is_reported_and_never_blocks_the_check(
    home: Path, app_image: BuildResult, tmp_path: Path
) -> None:
    store = Store.for_home(home)
    root = unpack_image(store, app_image.digest, tmp_path / "rootfs")
    app = root / "opt" / "app"
    with writable(app):
        os.mkfifo(app / "pipe")  # opening it for reading would wait for a writer forever
        (app / "server.py").unlink()
        os.mkfifo(app / "server.py")
    found = by_path(check_root(expected_files(store, app_image.digest), root))
    assert found["/opt/app/pipe"]["change"] == "added"
    assert found["/opt/app/pipe"]["type"] == "fifo"
    assert found["/opt/app/server.py"]["differences"][0] == {
        "aspect": "type",
        "expected": "file",
        "observed": "fifo",
    }
