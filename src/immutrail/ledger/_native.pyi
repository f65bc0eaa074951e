"""Type stubs for the C extension built from _native.c (see immutrail.ledger.hashing)."""

from collections.abc import Iterable
from os import PathLike

def leaf_hashes(entries: Iterable[bytes], /) -> bytes: ...
def tile_from_base(base: bytes, /) -> bytes: ...
def find_marked(entries: Iterable[bytes], marks: Iterable[bytes], /) -> list[int]: ...
def sqlite_version() -> str | None: ...
def scan_sqlite_leaves(
    path: str | bytes | PathLike[str],
    start: int,
    stop: int,
    marks: Iterable[bytes],
    busy_timeout_ms: int,
    /,
) -> tuple[bytes, int, list[int], list[int]]: ...
