"""The loops that run once per entry or tree node: leaf hashes, tiles, the search for marks, and
the integrity check's reading of a range of entries.

Each exists twice: in C (``immutrail.ledger._native``, built with the package when a C compiler
and the OpenSSL and SQLite headers are present) and here in Python, which is used when the
extension is missing and is what the C is tested against. Both return the same values.

The C exists because of CPython's per-object costs, not SHA-256's: hashing a 360-byte entry
through ``hashlib`` costs about as much again in the call as in the hash, a 65-byte tree node
more than that, and the sqlite3 module spends about four times SQLite's own reading time making
each row's objects. Verification is those loops (BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .merkle import HASH_SIZE, LEAF_PREFIX, NODE_PREFIX
from .tiles import TILE_WIDTH

PURE_PYTHON_ENV = "IMMUTRAIL_PURE_PYTHON"
"""Set to 1 to use the Python loops even where the extension is built (to compare the two)."""


def leaf_hashes_py(entries: Iterable[bytes]) -> bytes:
    """The RFC 6962 leaf hash of each entry, joined."""
    sha256 = hashlib.sha256
    return b"".join([sha256(LEAF_PREFIX + entry).digest() for entry in entries])


def tile_from_base_py(base: bytes) -> bytes:
    """The stored bytes of a tile whose base is ``base`` (2 to 256 hashes joined, left to right).

    The interior nodes come in the order appending completes them (see ``tiles``): the walk of
    a frontier over the base, each completed node written as it is made.
    """
    width, rest = divmod(len(base), HASH_SIZE)
    if rest or not 2 <= width <= TILE_WIDTH:
        raise ValueError(
            f"a tile base is 2 to {TILE_WIDTH} hashes of {HASH_SIZE} bytes, not {len(base)} bytes"
        )
    sha256 = hashlib.sha256
    edge: list[bytes] = []
    out: list[bytes] = []
    for i in range(width):
        acc = base[i * HASH_SIZE : (i + 1) * HASH_SIZE]
        index = i
        while index & 1:
            acc = sha256(NODE_PREFIX + edge.pop() + acc).digest()
            out.append(acc)
            index >>= 1
        edge.append(acc)
    return b"".join(out)


def find_marked_py(entries: Sequence[bytes], marks: Sequence[bytes]) -> list[int]:
    """The positions of the entries that contain any of ``marks``."""
    if any(not mark for mark in marks):
        raise ValueError("find_marked: a mark must not be empty")
    return [n for n, entry in enumerate(entries) if any(mark in entry for mark in marks)]


@dataclass(frozen=True)
class LeafScan:
    """What reading ``[start, start + count)`` found, up to the first missing index."""

    leaves: bytes
    """The stored leaf hashes, joined; 32 zero bytes for one that is not 32 bytes of BLOB."""
    count: int
    """Entries read in sequence from ``start``: fewer than asked means the next one is missing."""
    bad: list[int]
    """Indexes whose bytes do not hash to their stored leaf hash (or either is not a BLOB)."""
    marked: list[int]
    """The other indexes whose bytes contain any of the marks."""


def rows_in_sequence(rows: Sequence[Sequence[Any]], expected: int) -> Sequence[Sequence[Any]]:
    """The leading ``rows`` (index first, sorted, unique) whose indexes run on from ``expected``:
    all of them unless one is missing."""
    if rows and rows[0][0] == expected and rows[-1][0] == expected + len(rows) - 1:
        return rows
    kept = 0
    while kept < len(rows) and rows[kept][0] == expected + kept:
        kept += 1
    return rows[:kept]


_NO_LEAF = bytes(HASH_SIZE)


def stored_leaves(rows: Sequence[Sequence[Any]]) -> bytes:
    """The rows' stored leaf hashes (their last column) joined, ``_NO_LEAF`` for a damaged one."""
    try:
        joined = b"".join([row[-1] for row in rows])
    except TypeError:  # a column that is not bytes
        joined = b""
    if len(joined) == HASH_SIZE * len(rows):
        return joined
    return b"".join([_leaf_or_none(row[-1]) or _NO_LEAF for row in rows])


def _leaf_or_none(value: object) -> bytes | None:
    return value if isinstance(value, bytes) and len(value) == HASH_SIZE else None


def scan_leaf_rows(
    chunks: Iterable[Sequence[Sequence[Any]]], start: int, marks: Sequence[bytes]
) -> LeafScan:
    """The Python twin of the C ``scan_sqlite_leaves``, over rows ``(index, bytes, leaf hash)``
    in index order (any storage backend)."""
    parts: list[bytes] = []
    bad: list[int] = []
    marked: list[int] = []
    expected = start
    for chunk in chunks:
        rows = rows_in_sequence(chunk, expected)
        expected += len(rows)
        joined = stored_leaves(rows)
        parts.append(joined)
        datas = [row[1] for row in rows]
        try:
            clean = leaf_hashes(datas) == joined
        except TypeError:  # an entry that is not bytes
            clean = False
        if clean:
            marked.extend(rows[n][0] for n in find_marked(datas, marks))
        else:
            for row in rows:
                data, leaf = row[1], _leaf_or_none(row[-1])
                if not isinstance(data, bytes) or leaf is None or leaf_hashes([data]) != leaf:
                    bad.append(row[0])
                elif find_marked([data], marks):
                    marked.append(row[0])
        if len(rows) < len(chunk):
            break
    return LeafScan(b"".join(parts), expected - start, bad, marked)


SqliteScanner = Callable[[Path, int, int, Sequence[bytes], int], LeafScan]


def _c_sqlite_scanner(native: ModuleType) -> SqliteScanner | None:
    """The C reader of SQLite ledgers, if the library it would use is the sqlite3 module's."""
    if native.sqlite_version() != sqlite3.sqlite_version:
        return None

    def scan(path: Path, start: int, stop: int, marks: Sequence[bytes], busy_ms: int) -> LeafScan:
        return LeafScan(*native.scan_sqlite_leaves(path, start, stop, marks, busy_ms))

    return scan


def _load_native() -> ModuleType | None:
    if os.environ.get(PURE_PYTHON_ENV) == "1":
        return None
    try:
        from . import _native
    except ImportError:
        return None
    return _native


_native = _load_native()

NATIVE = _native is not None
"""Whether the C loops were built and loaded (``python_loops`` may set them aside)."""

scan_sqlite: SqliteScanner | None
"""Reads a SQLite ledger's entries in C; None without the extension (or its SQLite library)."""
if _native is not None:
    leaf_hashes = _native.leaf_hashes
    tile_from_base = _native.tile_from_base
    find_marked = _native.find_marked
    scan_sqlite = _c_sqlite_scanner(_native)
else:
    leaf_hashes = leaf_hashes_py
    tile_from_base = tile_from_base_py
    find_marked = find_marked_py
    scan_sqlite = None


@contextmanager
def python_loops() -> Iterator[None]:
    """Within the block, use the Python loops even where the extension is built: benchmarks and
    tests compare the two. Processes forked inside the block inherit the choice; other threads
    see it too."""
    global leaf_hashes, tile_from_base, find_marked, scan_sqlite
    saved = leaf_hashes, tile_from_base, find_marked, scan_sqlite
    leaf_hashes, tile_from_base, find_marked = leaf_hashes_py, tile_from_base_py, find_marked_py
    scan_sqlite = None
    try:
        yield
    finally:
        leaf_hashes, tile_from_base, find_marked, scan_sqlite = saved


def implementation() -> str:
    """Which loops are in use now, for reports and benchmarks."""
    return "Python" if leaf_hashes is leaf_hashes_py else "C extension"
