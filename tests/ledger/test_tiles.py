"""Tiles: interior nodes packed 255 to a row, in completion order, so a tile only ever grows."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from immutrail.ledger import merkle, tiles
from immutrail.ledger.event import Event
from immutrail.ledger.home import init_ledger


def built(n: int) -> list[Event]:
    return [Event.create("artifact.built", "builder:ci", f"img:{i}", {"n": i}) for i in range(n)]


def leaves(n: int) -> list[bytes]:
    return [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(n)]


def all_nodes(hashes: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every perfect subtree above the leaves, computed the plain way (level by level)."""
    out: dict[tuple[int, int], bytes] = {}
    level, row = 0, hashes
    while len(row) > 1:
        level += 1
        row = [merkle.node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        out.update({(level, i): h for i, h in enumerate(row)})
    return out


def test_every_slot_of_a_tile_names_one_node_and_back() -> None:
    seen = set()
    for slot in range(tiles.TILE_HASHES):
        level, index = tiles.node_at(tiles.tile_key(2, 5), slot)
        assert tiles.locate(level, index) == (tiles.tile_key(2, 5), slot * 32)
        seen.add((level, index))
    assert len(seen) == tiles.TILE_HASHES
    assert tiles.node_at(tiles.tile_key(0, 0), tiles.TILE_HASHES - 1) == (8, 0)  # the tile's top


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=70_000), st.integers(min_value=1, max_value=3000))
def test_tiles_grown_in_batches_hold_every_node_at_its_place(size: int, batch: int) -> None:
    size = size % 5000 if size < 65_000 else size  # mostly small, sometimes past level 1 tiles
    hashes = leaves(size)
    frontier = merkle.Frontier.empty()
    stored: dict[int, bytearray] = {}
    for start in range(0, size, batch):
        for key, part in tiles.pack(frontier.extend(hashes[start : start + batch])):
            stored.setdefault(key, bytearray()).extend(part)
    assert {k: len(v) for k, v in stored.items()} == tiles.tile_lengths(size)
    expected = all_nodes(hashes)
    got = tiles.lookup(list(expected), {k: bytes(v) for k, v in stored.items()})
    assert got == expected
    assert frontier.root() == (
        merkle.fold(merkle_root_parts(hashes)) if size else merkle.EMPTY_ROOT
    )


def merkle_root_parts(hashes: list[bytes]) -> list[bytes]:
    nodes = {**{(0, i): h for i, h in enumerate(hashes)}, **all_nodes(hashes)}
    return [nodes[k] for k in merkle.perfect_subtrees(0, len(hashes))]


def test_the_database_lets_a_tile_grow_and_nothing_else(tmp_path: Path) -> None:
    led, _ = init_ledger(tmp_path / "home")
    led.append_batch(built(300))
    led.close()
    conn = sqlite3.connect(tmp_path / "home" / "ledger.db", isolation_level=None)
    try:
        full, partial = (bytes(h) for (h,) in conn.execute("SELECT hashes FROM tiles ORDER BY k"))
        assert len(full) == tiles.TILE_BYTES and len(partial) == (44 - 3) * 32
        for sql, args in (
            ("UPDATE tiles SET hashes = ? WHERE k = 0", (bytes(len(full)),)),
            ("UPDATE tiles SET hashes = ? WHERE k = 1", (bytes(32) + partial,)),
            ("UPDATE tiles SET hashes = ? WHERE k = 1", (partial[:-32],)),
            ("DELETE FROM tiles WHERE k = 1", ()),
        ):
            with pytest.raises(sqlite3.DatabaseError):
                conn.execute(sql, args)
        conn.execute("UPDATE tiles SET hashes = ? WHERE k = 1", (partial + bytes(32),))
    finally:
        conn.close()


def test_random_single_appends_and_batches_build_the_same_tiles(tmp_path: Path) -> None:
    rng = random.Random(3)
    led, _ = init_ledger(tmp_path / "home")
    events = built(700)
    n = 0
    while n < len(events):
        k = min(rng.choice([1, 1, 2, 7, 100, 300]), len(events) - n)
        led.append_batch(events[n : n + k])
        n += k
    stored = led.store.tiles(0, 1 << 62)
    assert {k: len(v) for k, v in stored.items()} == tiles.tile_lengths(700)
    report = led.verify()
    assert report.ok, report.problems
    assert report.nodes == 700 - (700).bit_count()
    led.close()
