"""The port every ledger storage backend implements (SQLite, PostgreSQL).

A backend stores rows and serializes writers; it knows nothing of Merkle math or events. The
ledger computes every row; the backend's one duty beyond storing is that :meth:`LedgerStore.writer`
is exclusive and atomic, so concurrent appenders produce one gap-free sequence and an acknowledged
append survives a crash.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

NodeKey = tuple[int, int]

LEVEL_SHIFT = 50
"""Internal nodes are stored under one integer key ``level << 50 | index`` (fast ``IN`` lookups)."""


def redact_url(url: str) -> str:
    """A database URL fit for messages: any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if at and ":" in creds:
        return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"
    return url


def node_key(level: int, index: int) -> int:
    return level << LEVEL_SHIFT | index


def split_node_key(key: int) -> NodeKey:
    return key >> LEVEL_SHIFT, key & ((1 << LEVEL_SHIFT) - 1)


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
SUBJECT_INDEXED = "subject_indexed"
"""Meta key: entries below this index are in ``subject_index``.

Subjects are digests, random by nature: a B-tree index on them dirties one page per appended row
and cut appends to a tenth of the raw insert rate (BENCHMARKS.md). So the subject index is
derived: brought up to date, sorted, in one go, by the first query that filters on a subject,
and checked against the entries by verification.
"""
SUBJECT_CATCH_UP_CHUNK = 100_000
QUERY_CHUNK = 2000

RowFetcher = Callable[[str, Sequence[object]], Sequence[Sequence[Any]]]
"""Runs one SELECT with bound values and returns all its rows (a backend's cursor call)."""


def row_to_entry(r: Sequence[Any]) -> EntryRow:
    return EntryRow(r[0], r[1], r[2], r[3], r[4], r[5], bytes(r[6]), bytes(r[7]))


def paginate(flt: EntryFilter, fetch: RowFetcher, mark: str) -> Iterator[EntryRow]:
    """Entries matching ``flt`` in index order, in keyset-paginated chunks.

    Each chunk is one short read, so a long listing never holds a snapshot (or pins the SQLite
    WAL) for long. ``mark`` is the backend's placeholder (``?`` or ``%s``).
    """
    where, args = [f"idx >= {mark}"], list[object]([flt.start])
    for column, value in (("type", flt.type), ("actor", flt.actor)):
        if value is not None:
            where.append(f"{column} = {mark}")
            args.append(value)
    if flt.subject is not None:  # through the derived index; the caller brought it up to date
        where.append(f"idx IN (SELECT idx FROM subject_index WHERE subject = {mark})")
        args.append(flt.subject)
    if flt.since_us is not None:
        where.append(f"time_us >= {mark}")
        args.append(flt.since_us)
    if flt.until_us is not None:
        where.append(f"time_us <= {mark}")
        args.append(flt.until_us)
    sql = (
        f"SELECT {ENTRY_COLUMNS} FROM entries WHERE {' AND '.join(where)} ORDER BY idx LIMIT {mark}"
    )
    remaining = flt.limit
    while remaining is None or remaining > 0:
        take = QUERY_CHUNK if remaining is None else min(QUERY_CHUNK, remaining)
        rows = fetch(sql, (*args, take))
        for r in rows:
            yield row_to_entry(r)
        if len(rows) < take:
            return
        args[0] = rows[-1][0] + 1
        if remaining is not None:
            remaining -= len(rows)


class AppendWriter(Protocol):
    """Handed out inside an exclusive transaction; everything written commits together."""

    def head(self) -> TreeHead: ...

    def insert(
        self,
        entries: Sequence[EntryRow],
        nodes: Sequence[tuple[int, int, bytes]],
        new_head: TreeHead,
    ) -> None: ...


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

    def get_meta(self, key: str) -> str | None: ...

    def put_meta_once(self, key: str, value: str) -> str:
        """Store ``value`` unless ``key`` exists; return what is stored (first writer wins)."""
        ...

    def writer(self) -> AbstractContextManager[AppendWriter]: ...

    def head(self) -> TreeHead: ...

    def entry(self, index: int) -> EntryRow | None: ...

    def index_of(self, event_id: str) -> int | None: ...

    def existing_ids(self, event_ids: Sequence[str]) -> set[str]: ...

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[EntryRow]:
        """Entries in index order, streamed in chunks."""
        ...

    def query(self, flt: EntryFilter) -> Iterator[EntryRow]: ...

    def check_subject_index(self) -> list[tuple[str, int | None]]:
        """Where the derived subject index disagrees with the entries: (message, entry index)."""
        ...

    def nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        """Stored hashes of perfect subtrees; level 0 answers from the entries' leaf hashes."""
        ...

    def node_range(self, level: int, start: int, stop: int) -> Mapping[int, bytes]:
        """Stored internal nodes of one level (>= 1) with ``start <= index < stop``."""
        ...

    def count_nodes(self) -> int: ...

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> StoredCheckpoint:
        """Store it unless one of that size exists; return the stored one."""
        ...

    def checkpoints(self) -> list[StoredCheckpoint]: ...
