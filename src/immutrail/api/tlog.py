"""The ledger as a C2SP ``tlog-tiles`` log (https://c2sp.org/tlog-tiles), read-only, at ``/tlog/``.

    /tlog/checkpoint                    the latest signed checkpoint (text/plain)
    /tlog/tile/<L>/<N>[.p/<W>]          hash tiles: 256 (or W) hashes of tree level 8L
    /tlog/tile/entries/<N>[.p/<W>]      entry bundles: big-endian uint16 length, then the entry

``N`` is written in three-digit path elements, all but the last prefixed with ``x``
(``x001/x234/067``). A tile exists once the tree holds its last hash; the same path then serves
the same bytes forever (full and partial tiles alike), so tiles are cached as immutable.

What needs a token: the checkpoint and hash tiles reveal nothing but hashes and are public, so
witnesses and monitors can follow the log; entry bundles hold the events (actors, digests) and
need ``ledger.read`` unless the server runs with ``--public-log``.

The tiles are derived from what the ledger stores: level-0 hashes are the entries' leaf hashes,
a level-L hash (L >= 1) is the perfect subtree of height 8L, which the ledger keeps as the top
node of one of its own 256-wide interior tiles (:mod:`immutrail.ledger.tiles`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from immutrail.access import Action, Identity
from immutrail.ledger.errors import StorageError
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.merkle import HASH_SIZE
from immutrail.ledger.tiles import TILE_HEIGHT, TILE_WIDTH

from .auth import LedgerDep, Permit
from .ledger_routes import latest_checkpoint
from .problems import ApiError, NotFound
from .responses import errors

PREFIX = "/tlog"
MAX_LEVEL = 63
MAX_ENTRY = 0xFFFF
"""An entry bundle's length prefix is a uint16."""
IMMUTABLE = "max-age=31536000, immutable"
CHECKPOINT_CACHE = "public, max-age=2"
"""The checkpoint changes: cache it no longer than a few seconds (the spec's SHOULD)."""

_LEVEL_RE = re.compile(r"0|[1-9][0-9]?")
_WIDTH_RE = re.compile(r"[1-9][0-9]{0,2}")

router = APIRouter(prefix=PREFIX, tags=["tlog-tiles"])
EntriesReader = Annotated[Identity | None, Depends(Permit(Action.LEDGER_READ, public_log=True))]
TilePath = Annotated[
    str, Path(description="`<L>/<N>[.p/<W>]` or `entries/<N>[.p/<W>]`, N as x001/x234/067.")
]


@dataclass(frozen=True)
class Tile:
    level: int
    """0..63; -1 for an entry bundle."""
    index: int
    width: int
    """1..256; 256 is a full tile."""

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    def path(self) -> str:
        """The tile's path under the prefix (the inverse of :func:`parse_tile_path`)."""
        digits = f"{self.index % 1000:03d}"
        rest = self.index // 1000
        while rest:
            digits = f"x{rest % 1000:03d}/{digits}"
            rest //= 1000
        level = "entries" if self.level < 0 else str(self.level)
        partial = "" if self.full else f".p/{self.width}"
        return f"tile/{level}/{digits}{partial}"


class TilePathError(ApiError):
    """A path that is no tile path in the spec's one spelling."""


class EntryTooLargeError(ApiError):
    """An entry over 65,535 bytes has no uint16 length prefix (the ledger allows 65,536)."""

    status = 500
    slug = "internal"


def parse_tile_path(tail: str) -> Tile:
    """``<L>/<N>[.p/<W>]`` or ``entries/<N>[.p/<W>]`` (what follows ``/tile/``), strictly."""
    parts = tail.split("/")
    if len(parts) < 2:
        raise TilePathError(f"tile/{tail} is not a tile path")
    head, parts = parts[0], parts[1:]
    if head == "entries":
        level = -1
    elif _LEVEL_RE.fullmatch(head) and int(head) <= MAX_LEVEL:
        level = int(head)
    else:
        raise TilePathError(f"tile/{tail}: the level must be 0-{MAX_LEVEL} or entries")
    width = TILE_WIDTH
    if len(parts) >= 2 and parts[-2].endswith(".p"):
        if not _WIDTH_RE.fullmatch(parts[-1]) or int(parts[-1]) >= TILE_WIDTH:
            raise TilePathError(f"tile/{tail}: a partial width is 1-255")
        width = int(parts[-1])
        parts = [*parts[:-2], parts[-2].removesuffix(".p")]
    index = 0
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        digits = part if last else part.removeprefix("x")
        if (not last and not part.startswith("x")) or not re.fullmatch(r"[0-9]{3}", digits):
            raise TilePathError(f"tile/{tail}: N must be written as x001/x234/067")
        index = index * 1000 + int(digits)
    tile = Tile(level, index, width)
    if tile.path() != f"tile/{tail}":  # e.g. x000/001: one spelling per tile
        raise TilePathError(f"tile/{tail} is not in the canonical form {tile.path()}")
    return tile


def _available(tile: Tile, size: int) -> bool:
    """Whether a tree of ``size`` entries holds every hash of the tile."""
    span = TILE_HEIGHT * max(tile.level, 0)
    return (tile.index * TILE_WIDTH + tile.width) << span <= size


def hash_tile(ledger: Ledger, tile: Tile) -> bytes:
    """The tile's hashes: MTH of the level-8L perfect subtrees it lists, left to right."""
    first = tile.index * TILE_WIDTH
    if tile.level == 0:
        hashes = [
            leaf
            for chunk in ledger.store.leaf_chunks(first, first + tile.width)
            for _, leaf in chunk
        ]
    else:
        level = TILE_HEIGHT * tile.level
        keys = [(level, first + i) for i in range(tile.width)]
        found = ledger.store.nodes(keys)
        hashes = [found[key] for key in keys if key in found]
    if len(hashes) != tile.width or any(len(h) != HASH_SIZE for h in hashes):
        raise StorageError(f"{tile.path()}: tree hashes missing from storage; run `ledger verify`")
    return b"".join(hashes)


def entry_bundle(ledger: Ledger, tile: Tile) -> bytes:
    first = tile.index * TILE_WIDTH
    out = bytearray()
    count = 0
    for row in ledger.store.entries(first, first + tile.width):
        if len(row.data) > MAX_ENTRY:
            raise EntryTooLargeError(
                f"entry {row.index} is {len(row.data)} bytes: an entry bundle holds entries of "
                f"at most {MAX_ENTRY} bytes (read it from /api/v1/ledger/entries/{row.index})"
            )
        out += len(row.data).to_bytes(2, "big") + row.data
        count += 1
    if count != tile.width:
        raise StorageError(f"{tile.path()}: entries missing from storage; run `ledger verify`")
    return bytes(out)


def _binary(data: bytes, cache: str) -> Response:
    return Response(data, media_type="application/octet-stream", headers={"Cache-Control": cache})


_TILE_RESPONSES = {
    200: {
        "description": "The tile's bytes (32-byte hashes, or length-prefixed entries).",
        "content": {"application/octet-stream": {"schema": {"type": "string"}}},
    },
    **errors(400, 401, 403, 404),
}


@router.get(
    "/checkpoint",
    summary="The latest signed checkpoint (C2SP tlog-checkpoint)",
    response_class=Response,
    responses={
        200: {
            "description": "The signed note: origin, size, base64 root, blank line, signature.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **errors(404),
    },
)
def tlog_checkpoint(ledger: LedgerDep) -> Response:
    """Public: a checkpoint holds the origin, the size and the root hash."""
    note = latest_checkpoint(ledger).note
    return Response(
        note,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": CHECKPOINT_CACHE},
    )


@router.get(
    "/tile/entries/{tail:path}",
    summary="An entry bundle",
    response_class=Response,
    responses=_TILE_RESPONSES,
)
def tlog_entries(ledger: LedgerDep, identity: EntriesReader, tail: TilePath) -> Response:
    """The entries of one level-0 tile, each as a big-endian uint16 length and the exact
    bytes hashed into the leaf. Needs `ledger.read` unless the server runs with
    `--public-log`."""
    tile = parse_tile_path(f"entries/{tail}")
    if not _available(tile, ledger.head().size):
        raise NotFound(f"the ledger does not hold {tile.path()} yet")
    cache = ("public, " if identity is None else "private, ") + IMMUTABLE
    return _binary(entry_bundle(ledger, tile), cache)


@router.get(
    "/tile/{tail:path}",
    summary="A hash tile",
    response_class=Response,
    responses=_TILE_RESPONSES,
)
def tlog_tile(ledger: LedgerDep, tail: TilePath) -> Response:
    """Public: 32-byte hashes of tree level 8L (level 0: the leaf hashes)."""
    tile = parse_tile_path(tail)
    if tile.level < 0:  # pragma: no cover - the entries route is matched first
        raise NotFound("entry bundles are under tile/entries/")
    if not _available(tile, ledger.head().size):
        raise NotFound(f"the ledger does not hold {tile.path()} yet")
    return _binary(hash_tile(ledger, tile), "public, " + IMMUTABLE)
