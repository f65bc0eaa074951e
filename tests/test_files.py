"""Bounded reads of user-named files: the limit holds on the read, whatever the file is."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from immutrail.files import FileTooLargeError, read_capped, read_capped_text


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
