"""User-named files: bounded reads (the limit holds on the read, whatever the file is) and
outputs written by rename (never over a link, a folder, a device or a FIFO)."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from immutrail.files import (
    FileTooLargeError,
    OutputPathError,
    atomic_output,
    check_output,
    read_capped,
    read_capped_text,
)
from output_paths import not_outputs


def test_a_file_within_the_limit_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_capped(path, 100) == b"x" * 100
    assert read_capped_text(path, 100) == "x" * 100


def test_a_regular_file_over_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "sparse"
    with path.open("wb") as handle:
        handle.truncate(1 << 40)  # a terabyte, sparse: reading it would never finish
    with pytest.raises(FileTooLargeError) as caught:
        read_capped(path, 1024)
    assert caught.value.errno == errno.EFBIG and caught.value.limit == 1024
    assert isinstance(caught.value, OSError) and str(path) in str(caught.value)


def test_an_endless_device_is_cut_at_the_limit() -> None:
    with pytest.raises(FileTooLargeError):
        read_capped("/dev/zero", 4096)


def test_a_pipe_is_cut_at_the_limit_and_read_whole_below_it(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    for size, limit in ((5000, 4096), (4096, 4096)):
        os.mkfifo(fifo)
        writer = threading.Thread(target=lambda n=size: fifo.write_bytes(b"y" * n))
        writer.start()
        try:
            if size > limit:
                with pytest.raises(FileTooLargeError):
                    read_capped(fifo, limit)
            else:
                assert read_capped(fifo, limit) == b"y" * size
        finally:
            writer.join(timeout=10)
            fifo.unlink()


def test_folders_and_text_that_is_not_utf8_are_typed_errors(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        read_capped(tmp_path, 10)
    binary = tmp_path / "b"
    binary.write_bytes(b"\xff")
    with pytest.raises(UnicodeDecodeError):
        read_capped_text(binary, 10)


@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_that_is_not_a_regular_file_is_never_replaced(
    tmp_path: Path, overwrite: bool
) -> None:
    for path, message in not_outputs(tmp_path).values():
        with pytest.raises(OutputPathError, match=message):
            check_output(path, overwrite)
        with (
            pytest.raises(OutputPathError, match=message),
            atomic_output(path, overwrite=overwrite),
        ):
            pytest.fail("the block must not run")
    assert (tmp_path / "fifo").is_fifo() and (tmp_path / "folder").is_dir()
    assert os.readlink(tmp_path / "linked") == str(tmp_path / "kept")
    assert (tmp_path / "kept").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dangling", "fifo", "folder", "kept", "linked",
    ]  # fmt: skip


def test_an_existing_file_is_replaced_only_when_asked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_output(out, overwrite=False) as stream:
        stream.write(b"one")
    assert out.read_bytes() == b"one" and (out.stat().st_mode & 0o777) == 0o644
    with pytest.raises(OutputPathError, match="exists; add --overwrite"):
        check_output(out, overwrite=False)
    with atomic_output(out, overwrite=True) as stream:
        stream.write(b"two")
    assert out.read_bytes() == b"two"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary file left


def test_a_name_that_appears_while_writing_is_not_replaced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(OutputPathError, match="is a symbolic link"):  # noqa: SIM117
        with atomic_output(out, overwrite=True) as stream:
            stream.write(b"data")
            out.symlink_to(tmp_path / "elsewhere")
    assert out.is_symlink() and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_an_error_while_writing_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_output(out, overwrite=False) as stream:
        stream.write(b"half")
        raise RuntimeError("the data could not be built")
    assert list(tmp_path.iterdir()) == []


def test_bad_names_and_missing_folders_are_output_errors(tmp_path: Path) -> None:
    too_long = tmp_path / ("x" * 300)
    with pytest.raises(OutputPathError, match=r"cannot write .*: File name too long"):
        check_output(too_long, overwrite=True)
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(OutputPathError, match="Not a directory"):
        check_output(file / "out", overwrite=False)
    with pytest.raises(OutputPathError, match=r"the folder .*missing does not exist"):
        check_output(tmp_path / "missing" / "out", overwrite=False)
    with pytest.raises(OutputPathError, match="embedded null byte"):
        check_output(tmp_path / "a\x00b", overwrite=False)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]


def test_a_name_near_the_limit_is_written(tmp_path: Path) -> None:
    out = tmp_path / ("x" * 255)  # the longest name: its temporary file's name must be shorter
    with atomic_output(out, overwrite=False) as stream:
        stream.write(b"ok")
    assert out.read_bytes() == b"ok"
