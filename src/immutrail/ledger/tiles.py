"""Interior Merkle nodes packed in tiles: one stored row per 256-wide subtree, not one per node.

Tree levels are grouped eight at a time, as in C2SP tlog-tiles. Tile ``(L, N)`` holds the interior
nodes at tree levels ``8L+1 .. 8L+8`` of the perfect subtree at level ``8L+8``, index ``N``: its
*base* is 256 nodes of level ``8L`` (the leaves for ``L = 0``, the tops of 256 level ``L-1``
tiles above that). A full tile holds 128 + 64 + ... + 1 = 255 hashes.

The hashes are stored in the order in which appending completes them (a post-order walk), so a
tile that is still filling up holds exactly a *prefix* of its final contents: appending to the
tree only ever appends bytes to the last tile of each level, and a full tile never changes.
After ``w`` base nodes a tile holds ``w - popcount(w)`` hashes.

Leaf hashes (level 0) are not in tiles: they stay beside their entries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .merkle import HASH_SIZE

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
TILE_HASHES = TILE_WIDTH - 1
TILE_BYTES = TILE_HASHES * HASH_SIZE
KEY_SHIFT = 50
"""A tile is stored under one integer key ``tile_level << 50 | tile_index`` (fast lookups)."""


def tile_key(tile_level: int, tile_index: int) -> int:
    return tile_level << KEY_SHIFT | tile_index


def split_tile_key(key: int) -> tuple[int, int]:
    return key >> KEY_SHIFT, key & ((1 << KEY_SHIFT) - 1)


def _position(j: int, i: int) -> int:
    """Slot of the node at level ``j`` (1..8) and index ``i`` within its tile."""
    before = ((i + 1) << j) - 1  # base nodes appended before the one that completes this node
    return before - before.bit_count() + j - 1


# Slot -> (level within the tile, index within the tile): names a damaged slot in verification.
_SLOT_NODE: list[tuple[int, int]] = sorted(
    ((j, i) for j in range(1, TILE_HEIGHT + 1) for i in range(TILE_WIDTH >> j)),
    key=lambda node: _position(*node),
)
_NODE_SLOT: dict[tuple[int, int], int] = {node: pos for pos, node in enumerate(_SLOT_NODE)}


def locate(level: int, index: int) -> tuple[int, int]:
    """The tile key and byte offset holding the interior node ``(level, index)``, level >= 1."""
    tile_level = (level - 1) // TILE_HEIGHT
    j = level - TILE_HEIGHT * tile_level
    shift = TILE_HEIGHT - j
    slot = _NODE_SLOT[(j, index & ((1 << shift) - 1))]
    return tile_key(tile_level, index >> shift), slot * HASH_SIZE


def node_at(key: int, slot: int) -> tuple[int, int]:
    """The tree node ``(level, index)`` stored in slot ``slot`` of tile ``key``."""
    tile_level, tile_index = split_tile_key(key)
    j, i = _SLOT_NODE[slot]
    return TILE_HEIGHT * tile_level + j, tile_index << (TILE_HEIGHT - j) | i


def base_range(key: int) -> tuple[int, int]:
    """The first and last leaf index under a tile."""
    tile_level, tile_index = split_tile_key(key)
    span = TILE_HEIGHT * (tile_level + 1)
    return tile_index << span, ((tile_index + 1) << span) - 1


def tile_lengths(size: int) -> dict[int, int]:
    """Every tile a tree of ``size`` leaves stores, with its length in bytes."""
    out: dict[int, int] = {}
    tile_level = 0
    while True:
        base = size >> (TILE_HEIGHT * tile_level)
        if base < 2:
            return out
        full, rest = divmod(base, TILE_WIDTH)
        for n in range(full):
            out[tile_key(tile_level, n)] = TILE_BYTES
        if rest >= 2:
            out[tile_key(tile_level, full)] = (rest - rest.bit_count()) * HASH_SIZE
        tile_level += 1


def pack(completed: Iterable[tuple[int, int, bytes]]) -> list[tuple[int, bytes]]:
    """Completed nodes ``(level, index, hash)``, in completion order, as bytes to append per tile.

    The tiles come out in the order their first node came, each with its nodes' hashes joined.
    """
    grouped: dict[int, list[bytes]] = {}
    for level, index, h in completed:
        tile_level = (level - 1) >> 3
        key = tile_level << KEY_SHIFT | index >> (TILE_HEIGHT * tile_level + TILE_HEIGHT - level)
        part = grouped.get(key)
        if part is None:
            grouped[key] = [h]
        else:
            part.append(h)
    return [(key, b"".join(hashes)) for key, hashes in grouped.items()]


def lookup(
    keys: Sequence[tuple[int, int]], tiles: dict[int, bytes]
) -> dict[tuple[int, int], bytes]:
    """The hashes of interior nodes ``(level, index)`` found in ``tiles`` (key -> stored bytes)."""
    out: dict[tuple[int, int], bytes] = {}
    for level, index in keys:
        key, offset = locate(level, index)
        blob = tiles.get(key)
        if blob is not None and len(blob) >= offset + HASH_SIZE:
            out[(level, index)] = blob[offset : offset + HASH_SIZE]
    return out
