"""The ledger's hashing loops: the C extension returns what the Python loops return, and both
agree with the append path's own tree (``Frontier`` and ``tiles.pack``), which is tested against
the RFC vectors in test_merkle.py."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immutrail.ledger import hashing, merkle, tiles
from immutrail.ledger.event import Event
from immutrail.ledger.home import init_ledger
from immutrail.ledger.storage.sqlite import SqliteStore

entries = st.lists(st.binary(max_size=600), max_size=300)
hashes32 = st.binary(min_size=32, max_size=32)


def tile_by_appending(base: list[bytes]) -> bytes:
    """A level-0 tile over ``base`` as the append path writes it."""
    frontier = merkle.Frontier.empty()
    packed = tiles.pack(frontier.extend(base))
    return b"".join(part for _, part in packed)


@given(entries)
def test_leaf_hashes_are_rfc6962_leaf_hashes_joined(items: list[bytes]) -> None:
    expected = b"".join(merkle.leaf_hash(item) for item in items)
    assert hashing.leaf_hashes_py(items) == expected
    assert merkle.split_hashes(expected) == [merkle.leaf_hash(item) for item in items]


@given(entries)
def test_the_c_leaf_hashes_equal_the_python_ones(
    native_hashing: ModuleType, items: list[bytes]
) -> None:
    assert native_hashing.leaf_hashes(items) == hashing.leaf_hashes_py(items)
    assert native_hashing.leaf_hashes(tuple(items)) == native_hashing.leaf_hashes(iter(items))


@pytest.mark.parametrize("width", [2, 3, 4, 5, 7, 8, 100, 127, 128, 129, 255, 256])
def test_a_tile_from_its_base_is_the_tile_appending_writes(width: int) -> None:
    base = [merkle.leaf_hash(str(n).encode()) for n in range(width)]
    expected = tile_by_appending(base)
    assert len(expected) == (width - width.bit_count()) * merkle.HASH_SIZE
    assert hashing.tile_from_base_py(b"".join(base)) == expected


@settings(max_examples=60)
@given(st.lists(hashes32, min_size=2, max_size=256))
def test_the_c_tile_equals_the_python_tile(native_hashing: ModuleType, base: list[bytes]) -> None:
    joined = b"".join(base)
    assert native_hashing.tile_from_base(joined) == hashing.tile_from_base_py(joined)
    assert native_hashing.tile_from_base(bytearray(joined)) == tile_by_appending(base)


@pytest.mark.parametrize("size", [0, 32, 31, 33, 257 * 32, 64 + 1])
def test_a_tile_base_of_the_wrong_size_is_refused_by_both(
    native_hashing: ModuleType, size: int
) -> None:
    for tile_from_base in (native_hashing.tile_from_base, hashing.tile_from_base_py):
        with pytest.raises(ValueError, match="a tile base is 2 to 256 hashes of 32 bytes"):
            tile_from_base(bytes(size))


@given(
    st.lists(st.binary(max_size=60), max_size=40),
    st.lists(st.binary(min_size=1, max_size=4), min_size=1, max_size=3),
)
def test_the_c_search_finds_what_the_python_search_finds(
    native_hashing: ModuleType, items: list[bytes], marks: list[bytes]
) -> None:
    expected = [n for n, item in enumerate(items) if any(m in item for m in marks)]
    assert hashing.find_marked_py(items, marks) == expected
    assert native_hashing.find_marked(items, marks) == expected


def test_the_key_marks_are_found_in_real_entries(native_hashing: ModuleType) -> None:
    items = [
        b'{"signature":{"keyid":"x"}}',
        b'{"type":"artifact.built"}',
        b'{"type":"key.created"}',
    ]
    marks = (b'"signature":{', b'"type":"key.')
    assert (
        native_hashing.find_marked(items, marks) == hashing.find_marked_py(items, marks) == [0, 2]
    )


def test_bad_arguments_are_typed_errors_in_both(native_hashing: ModuleType) -> None:
    for leaf_hashes in (native_hashing.leaf_hashes, hashing.leaf_hashes_py):
        with pytest.raises(TypeError):
            leaf_hashes([b"ok", "text"])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            leaf_hashes(5)  # type: ignore[arg-type]
    for find_marked in (native_hashing.find_marked, hashing.find_marked_py):
        with pytest.raises(ValueError, match="a mark must not be empty"):
            find_marked([b"abc"], [b""])
        with pytest.raises(TypeError):
            find_marked(["abc"], [b"a"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="takes 2 arguments"):
        native_hashing.find_marked([b"abc"])  # type: ignore[call-arg]


def test_the_c_loops_are_in_use_when_built(native_hashing: ModuleType) -> None:
    assert hashing.NATIVE
    assert hashing.leaf_hashes is native_hashing.leaf_hashes
    assert hashing.implementation() == "C extension"
    with hashing.python_loops():
        assert hashing.implementation() == "Python"


def test_the_python_loops_can_be_chosen_by_environment() -> None:
    env = {**os.environ, hashing.PURE_PYTHON_ENV: "1"}
    code = "from immutrail.ledger import hashing; print(hashing.implementation())"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "Python"


# -- reading a SQLite ledger in C ----------------------------------------------------------------

MARKS = (b'"type":"scan.', b'"n":7}')
SIZE = 700  # three tiles, the last one partial


@pytest.fixture(scope="module")
def ledger_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("scan")
    db = home / "ledger.db"
    led, _ = init_ledger(home / "home", f"sqlite:///{db}", origin="scan.test.immutrail.local/l")
    try:
        kinds = ["artifact.built", "scan.completed", "deploy.completed"]
        led.append_batch(
            [Event.create(kinds[n % 3], "user:alice", f"env:{n}", {"n": n}) for n in range(SIZE)]
        )
    finally:
        led.close()
    return db


@pytest.fixture
def damaged(ledger_file: Path, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A copy of the ledger, writable as an attacker has it (append-only triggers dropped)."""
    copy = tmp_path / "ledger.db"
    shutil.copy(ledger_file, copy)
    conn = sqlite3.connect(copy, isolation_level=None)
    conn.execute("DROP TRIGGER entries_no_update")
    conn.execute("DROP TRIGGER entries_no_delete")
    yield conn
    conn.close()


def both_scans(path: Path, start: int, stop: int) -> tuple[hashing.LeafScan, hashing.LeafScan]:
    store = SqliteStore(path)
    try:
        assert hashing.scan_sqlite is not None
        native = hashing.scan_sqlite(path, start, stop, MARKS, 1000)
        python = hashing.scan_leaf_rows(store.leaf_data_chunks(start, stop), start, MARKS)
    finally:
        store.close()
    return native, python


@pytest.mark.parametrize(("start", "stop"), [(0, SIZE), (256, 512), (512, SIZE), (0, 0), (0, 900)])
def test_the_c_scan_reads_what_the_python_rows_hold(
    native_hashing: ModuleType, ledger_file: Path, start: int, stop: int
) -> None:
    native, python = both_scans(ledger_file, start, stop)
    assert native == python
    assert native.count == min(stop, SIZE) - start
    assert native.bad == []
    in_range = range(start, start + native.count)
    assert native.marked == [i for i in in_range if i % 3 == 1 or i == 7]
    with sqlite3.connect(ledger_file) as conn:
        leaves = conn.execute(
            "SELECT leaf_hash FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, stop)
        )
        assert native.leaves == b"".join(leaf for (leaf,) in leaves)


@pytest.mark.parametrize(
    ("change", "bad"),
    [
        ("UPDATE entries SET data = data || x'20' WHERE idx = 5", [5]),
        ("UPDATE entries SET leaf_hash = substr(leaf_hash, 1, 31) WHERE idx = 300", [300]),
        ("UPDATE entries SET leaf_hash = hex(leaf_hash) WHERE idx = 301", [301]),
        ("UPDATE entries SET data = CAST(data AS TEXT) WHERE idx = 302", [302]),
        ("UPDATE entries SET leaf_hash = x'' WHERE idx = 303", [303]),
        ("UPDATE entries SET data = x'' WHERE idx = 699", [699]),
    ],
)
def test_the_c_scan_finds_what_the_python_rows_show_on_a_damaged_ledger(
    native_hashing: ModuleType,
    damaged: sqlite3.Connection,
    tmp_path: Path,
    change: str,
    bad: list[int],
) -> None:
    damaged.execute(change)
    native, python = both_scans(tmp_path / "ledger.db", 0, SIZE)
    assert native == python
    assert native.bad == bad
    assert native.count == SIZE
    assert len(native.leaves) == SIZE * 32


def test_the_c_scan_stops_at_a_missing_entry(
    native_hashing: ModuleType, damaged: sqlite3.Connection, tmp_path: Path
) -> None:
    damaged.execute("DELETE FROM entries WHERE idx = 400")
    native, python = both_scans(tmp_path / "ledger.db", 256, SIZE)
    assert native == python
    assert native.count == 400 - 256
    assert len(native.leaves) == native.count * 32


def test_sqlite_errors_are_storage_errors(native_hashing: ModuleType, tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(RuntimeError, match="cannot read the ledger's entries"):
        native_hashing.scan_sqlite_leaves(missing, 0, 10, MARKS, 100)
    assert not missing.exists()  # opened read-only: nothing created
    empty = tmp_path / "other.db"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(RuntimeError, match="no such table: entries"):
        native_hashing.scan_sqlite_leaves(empty, 0, 10, MARKS, 100)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ((5, 4, MARKS, 100), ValueError),
        ((-1, 4, MARKS, 100), ValueError),
        ((0, 1 << 30, MARKS, 100), ValueError),
        ((0, 4, MARKS, -1), ValueError),
        ((0, 4, [b""], 100), ValueError),
        ((0, 4, ["text"], 100), TypeError),
        (("0", 4, MARKS, 100), TypeError),
    ],
)
def test_bad_scan_arguments_are_refused(
    native_hashing: ModuleType, ledger_file: Path, args: tuple[Any, ...], error: type[Exception]
) -> None:
    with pytest.raises(error):
        native_hashing.scan_sqlite_leaves(ledger_file, *args)


def test_the_store_reads_natively_unless_told_not_to(
    native_hashing: ModuleType, ledger_file: Path
) -> None:
    store = SqliteStore(ledger_file)
    try:
        scan = store.leaf_scan(0, SIZE, MARKS)
        assert scan is not None and scan.count == SIZE
        with hashing.python_loops():
            assert store.leaf_scan(0, SIZE, MARKS) is None
    finally:
        store.close()
