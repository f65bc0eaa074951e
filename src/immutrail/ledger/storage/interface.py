"""The port every ledger storage backend implements (SQLite, PostgreSQL).

A backend stores rows and serializes writers; it knows nothing of Merkle math or events. The
ledger computes every row; the backend's one duty beyond storing is that :meth:`LedgerStore.writer`
is exclusive and atomic, so concurrent appenders produce one gap-free sequence and an acknowledged
append survives a crash.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from .. import tiles
from ..hashing import LeafScan

NodeKey = tuple[int, int]

LEVEL_SHIFT = 50
"""Schema v1-v2 stored each interior node under ``level << 50 | index`` (read when migrating)."""


def redact_url(url: str) -> str:
    """A database URL fit for messages: any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
    return url


@dataclass(frozen=True, slots=True)
class EntryRow:
    index: int
    id: str
    type: str
    actor: str
    subject: str
    time_us: int
    """The event's time in microseconds since the Unix epoch: sortable, for time filters."""
    data: bytes
    leaf_hash: bytes


@dataclass(frozen=True, slots=True)
class TreeHead:
    """The tree after the last committed append; ``frontier`` packs the right-edge hashes."""

    size: int
    root: bytes
    frontier: bytes


@dataclass(frozen=True, slots=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str
    created: str


@dataclass(frozen=True, slots=True)
class EntryFilter:
    type: str | None = None
    subject: str | None = None
    actor: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    start: int = 0
    limit: int | None = None


ENTRY_COLUMNS = "idx, id, type, actor, subject, time_us, data, leaf_hash"
EntryTuple = tuple[int, str, str, str, str, int, bytes, bytes]
"""One entry row as written, in ``ENTRY_COLUMNS`` order (no object per row on the append path)."""

SUBJECT_INDEXED = "subject_indexed"
"""Schema v2's meta key for the derived subject index (renamed to ``INDEXED_UPTO`` by v3)."""
INDEXED_UPTO = "indexed_upto"
"""Meta key: entries below this index are in every derived index.

Secondary indexes on the append path cost more than the rows themselves: subjects are digests, so
a B-tree index on them dirties one page per appended row, and ``(type, idx)`` inserts land in as
many places as there are types (BENCHMARKS.md, ADR 0001 and 0004). So the subject, type and time
indexes are derived tables, brought up to date, sorted, in one go by the first query that filters
on them, and checked against the entries by verification.
"""
DERIVED_INDEXES: tuple[tuple[str, str, str], ...] = (
    ("subject_index", "subject", "subject index"),
    ("type_index", "type", "type index"),
    ("time_index", "time_us", "time index"),
)
"""(table, entries column, name in verification reports) of each derived index."""
CATCH_UP_CHUNK = 100_000
QUERY_CHUNK = 2000
LEAF_CHUNK = 20_000

RowFetcher = Callable[[str, Sequence[object]], Sequence[Sequence[Any]]]
"""Runs one SELECT with bound values and returns all its rows (a backend's cursor call)."""


def scan_chunks(
    fetch: RowFetcher, columns: str, start: int, stop: int, chunk: int, mark: str
) -> Iterator[list[Any]]:
    """Rows of ``columns`` (``idx`` first) of the entries ``[start, stop)`` in index order,
    ``chunk`` rows a query; each query starts after the last index seen (keyset pagination),
    so a missing entry shortens a chunk rather than stopping the scan."""
    sql = (
        f"SELECT {columns} FROM entries WHERE idx >= {mark} AND idx < {mark} "
        f"ORDER BY idx LIMIT {mark}"
    )
    while start < stop:
        rows = list(fetch(sql, (start, stop, chunk)))
        if not rows:
            return
        yield rows
        start = rows[-1][0] + 1


def row_to_entry(r: Sequence[Any]) -> EntryRow:
    return EntryRow(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), bytes(r[7]))


def needs_derived(flt: EntryFilter) -> bool:
    return (
        flt.subject is not None
        or flt.type is not None
        or flt.since_us is not None
        or flt.until_us is not None
    )


def catch_up_inserts(upto: int, size: int, mark: str) -> Iterator[tuple[str, tuple[int, int]]]:
    """The INSERTs that bring every derived index from entry ``upto`` to ``size``.

    Sorted by the database itself, a chunk at a time: each index takes the new rows as a few
    sequential runs, and no row passes through Python. ``mark`` is the backend's placeholder.
    """
    for start in range(upto, size, CATCH_UP_CHUNK):
        stop = min(start + CATCH_UP_CHUNK, size)
        for table, column, _ in DERIVED_INDEXES:
            yield (
                f"INSERT INTO {table} SELECT {column}, idx FROM entries "
                f"WHERE idx >= {mark} AND idx < {mark} ORDER BY 1, 2",
                (start, stop),
            )


def derived_index_problems(
    fetch: RowFetcher, mark: str, upto: int
) -> list[tuple[str, str, int | None]]:
    """Rows of the derived indexes that disagree with the entries, and wrong row counts."""
    problems: list[tuple[str, str, int | None]] = []
    for table, column, name in DERIVED_INDEXES:
        for (idx,) in fetch(
            f"SELECT d.idx FROM {table} d LEFT JOIN entries e ON e.idx = d.idx "
            f"WHERE e.idx IS NULL OR e.{column} IS DISTINCT FROM d.{column} OR d.idx >= {mark} "
            "ORDER BY d.idx LIMIT 5",
            (upto,),
        ):
            problems.append((name, f"names entry {idx} under a {column} it does not have", idx))
        ((count,),) = fetch(f"SELECT count(*) FROM {table}", ())
        if int(count) != upto:
            problems.append((name, f"holds {count} rows for {upto} indexed entries", None))
    return problems


def paginate(flt: EntryFilter, fetch: RowFetcher, mark: str) -> Iterator[EntryRow]:
    """Entries matching ``flt`` in index order, in keyset-paginated chunks.

    Each chunk is one short read, so a long listing never holds a snapshot (or pins the SQLite
    WAL) for long. ``mark`` is the backend's placeholder (``?`` or ``%s``). Type, subject and
    time filters go through the derived indexes, which the caller brought up to date; the
    entries' own columns are compared as well, so the result never depends on them alone.
    """
    where, args = [f"e.idx >= {mark}"], list[object]([flt.start])
    source = "entries e"
    if flt.type is not None and flt.subject is None:
        # The (type, idx) key walks one type in index order: no sort, no materialized set.
        source = "type_index t CROSS JOIN entries e"
        where = [f"t.type = {mark}", f"t.idx >= {mark}", "e.idx = t.idx"]
        args = [flt.type, flt.start]
    for column, value in (("type", flt.type), ("actor", flt.actor)):
        if value is not None:
            where.append(f"e.{column} = {mark}")
            args.append(value)
    if flt.subject is not None:
        where.append(f"e.idx IN (SELECT idx FROM subject_index WHERE subject = {mark})")
        where.append(f"e.subject = {mark}")
        args.extend([flt.subject, flt.subject])
    times = []
    if flt.since_us is not None:
        times.append((">=", flt.since_us))
    if flt.until_us is not None:
        times.append(("<=", flt.until_us))
    if times:
        if source == "entries e" and flt.subject is None:
            inner = " AND ".join(f"time_us {op} {mark}" for op, _ in times)
            where.append(f"e.idx IN (SELECT idx FROM time_index WHERE {inner})")
            args.extend(value for _, value in times)
        where.extend(f"e.time_us {op} {mark}" for op, _ in times)
        args.extend(value for _, value in times)
    order = "t.idx" if source != "entries e" else "e.idx"
    columns = ", ".join(f"e.{c.strip()}" for c in ENTRY_COLUMNS.split(","))
    sql = (
        f"SELECT {columns} FROM {source} WHERE {' AND '.join(where)} ORDER BY {order} LIMIT {mark}"
    )
    start_arg = 1 if source != "entries e" else 0
    remaining = flt.limit
    while remaining is None or remaining > 0:
        take = QUERY_CHUNK if remaining is None else min(QUERY_CHUNK, remaining)
        rows = fetch(sql, (*args, take))
        for r in rows:
            yield row_to_entry(r)
        if len(rows) < take:
            return
        args[start_arg] = rows[-1][0] + 1
        if remaining is not None:
            remaining -= len(rows)


def nodes_from(
    keys: Sequence[NodeKey], rows: Iterable[tuple[int, int, Any]]
) -> dict[NodeKey, bytes]:
    """Answer ``nodes()`` from rows ``(0, idx, leaf_hash)`` and ``(1, tile key, tile)``."""
    out: dict[NodeKey, bytes] = {}
    stored_tiles: dict[int, bytes] = {}
    for is_tile, k, value in rows:
        if is_tile:
            stored_tiles[k] = bytes(value)
        else:
            out[(0, k)] = bytes(value)
    out.update(tiles.lookup([key for key in keys if key[0]], stored_tiles))
    return out


def wanted_rows(keys: Sequence[NodeKey]) -> tuple[list[int], list[int]]:
    """The entry indices and tile keys a ``nodes()`` request reads."""
    leaves = sorted({index for level, index in keys if level == 0})
    tile_keys = sorted({tiles.locate(level, index)[0] for level, index in keys if level})
    return leaves, tile_keys


def tiles_from_v2_nodes(
    leaves: Iterable[bytes], stored: Iterable[tuple[int, Any]], head: TreeHead
) -> list[tuple[int, bytes]]:
    """Schema v3 migration: the tiles of the tree over ``leaves``, checked against the v2 node
    rows ``(level << 50 | index, hash)`` and the head; StorageError (nothing migrated) if any
    stored node or the head disagrees, so a damaged ledger is never silently repaired."""
    from ..errors import StorageError
    from ..merkle import Frontier

    frontier = Frontier.empty()
    blobs: dict[int, bytearray] = {}
    remaining = iter(leaves)
    while chunk := list(itertools.islice(remaining, 4096)):
        for key, part in tiles.pack(frontier.extend(chunk)):
            blobs.setdefault(key, bytearray()).extend(part)
    if frontier.size != head.size or frontier.root() != head.root:
        raise StorageError(
            "cannot migrate to schema v3: the tree head does not match the stored leaf hashes; "
            "verify the ledger with the immutrail version that wrote it"
        )
    count = 0
    for k, h in stored:
        level, index = k >> LEVEL_SHIFT, k & ((1 << LEVEL_SHIFT) - 1)
        key, offset = tiles.locate(level, index) if level else (-1, 0)
        blob = blobs.get(key)
        if blob is None or bytes(blob[offset : offset + 32]) != bytes(h):
            raise StorageError(
                f"cannot migrate to schema v3: stored tree node level {level} index {index} "
                "does not match the tree of the stored leaf hashes; verify the ledger with the "
                "immutrail version that wrote it"
            )
        count += 1
    expected = frontier.size - frontier.size.bit_count()
    if count != expected:
        raise StorageError(
            f"cannot migrate to schema v3: {count} tree nodes stored, a tree of {frontier.size} "
            f"entries has {expected}; verify the ledger with the immutrail version that wrote it"
        )
    return [(key, bytes(blob)) for key, blob in sorted(blobs.items())]


class AppendWriter(Protocol):
    """Handed out inside an exclusive transaction; everything written commits together."""

    def head(self) -> TreeHead: ...

    def insert(
        self,
        entries: Sequence[EntryTuple],
        tile_appends: Sequence[tuple[int, bytes]],
        new_head: TreeHead,
    ) -> None:
        """Write the entries, append each ``(tile key, hashes)`` to its tile (creating it when
        new), and move the head."""
        ...


class LedgerStore(Protocol):
    url: str
    """The database location with any password removed, for messages."""

    def migrate(self) -> int:
        """Create or upgrade the schema; return the schema version now in force."""
        ...

    def check_schema(self) -> None:
        """Raise NotInitializedError or StorageError unless the schema is the current one."""
        ...

    def close(self) -> None: ...

    def reopen_url(self) -> str:
        """A URL that opens this database again, credentials included: for worker processes
        only, never for messages (use ``url``)."""
        ...

    def get_meta(self, key: str) -> str | None: ...

    def put_meta_once(self, key: str, value: str) -> str:
        """Store ``value`` unless ``key`` exists; return what is stored (first writer wins)."""
        ...

    def writer(self) -> AbstractContextManager[AppendWriter]:
        """An exclusive append transaction; a repeated event id raises DuplicateEventError and
        writes nothing."""
        ...

    def head(self) -> TreeHead: ...

    def entry(self, index: int) -> EntryRow | None: ...

    def index_of(self, event_id: str) -> int | None: ...

    def existing_ids(self, event_ids: Sequence[str]) -> set[str]: ...

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[EntryRow]:
        """Entries in index order, streamed in chunks."""
        ...

    def entry_chunks(self, start: int, stop: int) -> Iterator[list[EntryTuple]]:
        """Raw entry rows ``[start, stop)`` in index order, a chunk at a time (verification)."""
        ...

    def leaf_chunks(self, start: int, stop: int) -> Iterator[list[tuple[int, bytes]]]:
        """``(index, leaf hash)`` of entries ``[start, stop)`` in index order, in chunks."""
        ...

    def leaf_data_chunks(self, start: int, stop: int) -> Iterator[list[tuple[int, bytes, bytes]]]:
        """``(index, entry bytes, leaf hash)`` of ``[start, stop)`` in index order, in chunks."""
        ...

    def tune_for_scans(self) -> None:
        """This connection will read ranges of the ledger once each (a verification worker)."""
        ...

    def leaf_scan(self, start: int, stop: int, marks: Sequence[bytes]) -> LeafScan | None:
        """The entries ``[start, stop)`` read and checked against their leaf hashes natively
        (``hashing.LeafScan``), or None where the backend has no native reader: the caller then
        reads :meth:`leaf_data_chunks`."""
        ...

    def query(self, flt: EntryFilter) -> Iterator[EntryRow]: ...

    def check_derived_indexes(self) -> list[tuple[str, str, int | None]]:
        """Where a derived index disagrees with the entries: (index name, message, entry)."""
        ...

    def nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """Stored hashes of perfect subtrees (one round trip): level 0 from the entries' leaf
        hashes, interior nodes from their tiles."""
        ...

    def head_and_nodes(self, keys: Sequence[NodeKey]) -> tuple[TreeHead, Mapping[NodeKey, bytes]]:
        """The current head and :meth:`nodes` together (one round trip where it matters)."""
        ...

    def tiles(self, start_key: int, stop_key: int) -> dict[int, bytes]:
        """Stored tiles with ``start_key <= key < stop_key``."""
        ...

    def count_tiles(self) -> int: ...

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> StoredCheckpoint:
        """Store it unless one of that size exists; return the stored one."""
        ...

    def checkpoints(self) -> list[StoredCheckpoint]: ...
