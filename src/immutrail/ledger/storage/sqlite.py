"""SQLite ledger storage: the embedded default, one file, WAL journal.

Durability: ``synchronous=FULL`` in WAL mode fsyncs the log at every commit, so an acknowledged
append survives power loss (``NORMAL`` would not). Writers serialize on ``BEGIN IMMEDIATE``; readers
never block them. Written against the standard library's ``sqlite3`` rather than SQLAlchemy: the
append path is the product's hot path, and Core costs half the raw insert rate (LIBRARIES.md).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import sqlite3
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .. import hashing, tiles
from ..errors import DuplicateEventError, NotInitializedError, StorageError
from ..merkle import EMPTY_ROOT
from .interface import (
    ENTRY_COLUMNS,
    INDEXED_UPTO,
    LEAF_CHUNK,
    QUERY_CHUNK,
    SUBJECT_INDEXED,
    EntryFilter,
    EntryRow,
    EntryTuple,
    NodeKey,
    StoredCheckpoint,
    TreeHead,
    catch_up_inserts,
    derived_index_problems,
    needs_derived,
    nodes_from,
    paginate,
    row_to_entry,
    scan_chunks,
    tiles_from_v2_nodes,
    wanted_rows,
)

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        f"""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE entries (
            idx INTEGER PRIMARY KEY,
            id TEXT NOT NULL,
            type TEXT NOT NULL,
            actor TEXT NOT NULL,
            subject TEXT NOT NULL,
            time_us INTEGER NOT NULL,
            data BLOB NOT NULL,
            leaf_hash BLOB NOT NULL
        );
        CREATE UNIQUE INDEX entries_id ON entries (id);
        CREATE INDEX entries_type ON entries (type, idx);
        CREATE INDEX entries_subject ON entries (subject, idx);
        CREATE INDEX entries_time ON entries (time_us);
        CREATE TABLE nodes (k INTEGER PRIMARY KEY, hash BLOB NOT NULL);
        CREATE TABLE tree_head (
            one INTEGER PRIMARY KEY CHECK (one = 1),
            size INTEGER NOT NULL,
            root BLOB NOT NULL,
            frontier BLOB NOT NULL
        );
        INSERT INTO tree_head VALUES (1, 0, X'{EMPTY_ROOT.hex()}', X'');
        CREATE TABLE checkpoints (
            size INTEGER PRIMARY KEY,
            root BLOB NOT NULL,
            note TEXT NOT NULL,
            created TEXT NOT NULL
        );
        -- Append-only by construction: history tables refuse updates and deletes.
        CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries
            BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
        CREATE TRIGGER entries_no_delete BEFORE DELETE ON entries
            BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
        CREATE TRIGGER nodes_no_update BEFORE UPDATE ON nodes
            BEGIN SELECT RAISE(ABORT, 'ledger nodes are append-only'); END;
        CREATE TRIGGER nodes_no_delete BEFORE DELETE ON nodes
            BEGIN SELECT RAISE(ABORT, 'ledger nodes are append-only'); END;
        CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints
            BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
        CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints
            BEGIN SELECT RAISE(ABORT, 'checkpoints are append-only'); END;
        """,
    ),
    (
        2,
        f"""
        DROP INDEX entries_subject;
        CREATE TABLE subject_index (
            subject TEXT NOT NULL,
            idx INTEGER NOT NULL,
            PRIMARY KEY (subject, idx)
        ) WITHOUT ROWID;
        INSERT INTO subject_index SELECT subject, idx FROM entries ORDER BY subject, idx;
        INSERT INTO meta VALUES ('{SUBJECT_INDEXED}', (SELECT count(*) FROM entries));
        """,
    ),
    (
        3,
        f"""
        CREATE TABLE tiles (
            k INTEGER PRIMARY KEY,
            hashes BLOB NOT NULL
                CHECK (length(hashes) % 32 = 0 AND length(hashes) BETWEEN 32 AND {tiles.TILE_BYTES})
        );
        -- A tile only grows, by whole hashes, until it is full; then it never changes.
        CREATE TRIGGER tiles_only_grow BEFORE UPDATE ON tiles
            WHEN NEW.k IS NOT OLD.k OR length(OLD.hashes) >= {tiles.TILE_BYTES}
                OR substr(NEW.hashes, 1, length(OLD.hashes)) IS NOT OLD.hashes
            BEGIN SELECT RAISE(ABORT, 'ledger tiles only grow'); END;
        CREATE TRIGGER tiles_no_delete BEFORE DELETE ON tiles
            BEGIN SELECT RAISE(ABORT, 'ledger tiles are append-only'); END;
        CREATE TABLE type_index (
            type TEXT NOT NULL,
            idx INTEGER NOT NULL,
            PRIMARY KEY (type, idx)
        ) WITHOUT ROWID;
        CREATE TABLE time_index (
            time_us INTEGER NOT NULL,
            idx INTEGER NOT NULL,
            PRIMARY KEY (time_us, idx)
        ) WITHOUT ROWID;
        INSERT INTO type_index SELECT type, idx FROM entries
            WHERE idx < (SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{SUBJECT_INDEXED}')
            ORDER BY type, idx;
        INSERT INTO time_index SELECT time_us, idx FROM entries
            WHERE idx < (SELECT CAST(value AS INTEGER) FROM meta WHERE key = '{SUBJECT_INDEXED}')
            ORDER BY time_us, idx;
        DROP INDEX entries_type;
        DROP INDEX entries_time;
        UPDATE meta SET key = '{INDEXED_UPTO}' WHERE key = '{SUBJECT_INDEXED}';
        """,
    ),
]
"""Versioned schema scripts; version 3 also runs :func:`_nodes_to_tiles` after its script."""

ROWS_PER_INSERT = 100
"""Entries per multi-row INSERT (800 bound values, under SQLite's historic limit of 999): one
statement step per 100 rows instead of one per row (measured 1.2x on the rows alone)."""
# SQLite's || yields TEXT even for two BLOBs; CAST back keeps the bytes and the BLOB type.
TILE_APPEND = (
    "INSERT INTO tiles (k, hashes) VALUES (?, ?) "
    "ON CONFLICT (k) DO UPDATE SET hashes = CAST(hashes || excluded.hashes AS BLOB)"
)


@functools.lru_cache(maxsize=8)
def _insert_entries_sql(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES {values}"


def _nodes_to_tiles(conn: sqlite3.Connection) -> None:
    """Schema v3: the v2 per-node rows become tiles (checked, never repaired), then go."""
    head = _read_head(conn)
    leaves = (bytes(h) for (h,) in conn.execute("SELECT leaf_hash FROM entries ORDER BY idx"))
    stored = conn.execute("SELECT k, hash FROM nodes")
    packed = tiles_from_v2_nodes(leaves, stored, head)
    conn.executemany("INSERT INTO tiles (k, hashes) VALUES (?, ?)", packed)
    for statement in (
        "DROP TRIGGER nodes_no_update",
        "DROP TRIGGER nodes_no_delete",
        "DROP TABLE nodes",
    ):
        conn.execute(statement)


class SqliteWriter:
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def head(self) -> TreeHead:
        return _read_head(self._conn)

    def insert(
        self,
        entries: Sequence[EntryTuple],
        tile_appends: Sequence[tuple[int, bytes]],
        new_head: TreeHead,
    ) -> None:
        conn = self._conn
        flat = itertools.chain.from_iterable
        for start in range(0, len(entries), ROWS_PER_INSERT):
            chunk = entries[start : start + ROWS_PER_INSERT]
            conn.execute(_insert_entries_sql(len(chunk)), list(flat(chunk)))
        conn.executemany(TILE_APPEND, tile_appends)
        conn.execute(
            "UPDATE tree_head SET size = ?, root = ?, frontier = ? WHERE one = 1",
            (new_head.size, new_head.root, new_head.frontier),
        )


def _read_head(conn: sqlite3.Connection) -> TreeHead:
    row = conn.execute("SELECT size, root, frontier FROM tree_head WHERE one = 1").fetchone()
    if row is None:
        raise StorageError("the tree_head row is missing: the database is damaged")
    return TreeHead(row[0], bytes(row[1]), bytes(row[2]))


# The first 16 bytes of every SQLite 3 database file (https://sqlite.org/fileformat.html).
SQLITE_HEADER = b"SQLite format 3\x00"


def _check_is_database(path: Path) -> None:
    """Refuse a path that holds no SQLite database before opening it: the pragmas that follow
    would turn an empty file into one (and a FIFO would block the read)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise NotInitializedError(f"no ledger database at {path}") from None
    except OSError as exc:
        raise StorageError(f"cannot open the ledger database {path}: {exc.strerror}") from exc
    if not stat.S_ISREG(mode):
        raise StorageError(f"the ledger database {path} is not a regular file")
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StorageError(f"cannot open the ledger database {path}: {exc.strerror}") from exc
    if header != SQLITE_HEADER:
        raise NotInitializedError(f"{path} is not a SQLite database, so it holds no ledger")


class SqliteStore:
    """A ledger in one SQLite file; ``create=True`` (``init``) makes it, otherwise it must exist."""

    def __init__(self, path: Path, *, create: bool = False, busy_timeout_s: float = 60.0):
        self.path = path
        self.url = f"sqlite:///{path}"
        self._busy_ms = int(busy_timeout_s * 1000)
        if not create:
            _check_is_database(path)
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = sqlite3.connect(
                f"file:{path}?mode={'rwc' if create else 'rw'}",
                uri=True,
                timeout=busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            # A damaged text column must reach verification as a value it can report, not as a
            # decoding exception; entry bytes are BLOBs and unaffected.
            self._conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            # A larger page cache and fewer WAL checkpoints: appends touch index pages all over
            # the subject index, and re-reading them per batch dominated (BENCHMARKS.md).
            self._conn.execute("PRAGMA cache_size=-65536")
            self._conn.execute("PRAGMA wal_autocheckpoint=10000")
            self._conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the ledger database {path}: {exc}") from exc

    # -- schema --------------------------------------------------------------------------------

    def migrate(self) -> int:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            current = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] or 0
            latest = MIGRATIONS[-1][0]
            if current > latest:
                raise StorageError(
                    f"{self.url} has schema version {current}; this immutrail knows up to {latest}"
                )
            for version, script in MIGRATIONS:
                if version > current:
                    for statement in _statements(script):
                        conn.execute(statement)
                    if version == 3:
                        _nodes_to_tiles(conn)
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (?, strftime('%Y-%m-%dT%H:%M:%SZ'))",
                        (version,),
                    )
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:  # a device, a folder, a file that is no database
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise StorageError(f"cannot set up the ledger schema in {self.url}: {exc}") from exc
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return latest

    def check_schema(self) -> None:
        try:
            row = self._conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        except sqlite3.OperationalError as exc:
            raise NotInitializedError(f"{self.url} holds no ledger schema") from exc
        if row[0] != MIGRATIONS[-1][0]:
            raise StorageError(
                f"{self.url} has schema version {row[0]}, expected {MIGRATIONS[-1][0]}"
            )

    def close(self) -> None:
        self._conn.close()

    def reopen_url(self) -> str:
        return self.url

    # -- meta ----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put_meta_once(self, key: str, value: str) -> str:
        with self._transaction():
            self._conn.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (key, value))
        stored = self.get_meta(key)
        assert stored is not None
        return stored

    # -- writes --------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StorageError(f"cannot lock {self.url} for writing: {exc}") from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def writer(self) -> Iterator[SqliteWriter]:
        try:
            with self._transaction() as conn:
                yield SqliteWriter(conn)
        except sqlite3.IntegrityError as exc:
            if "entries.id" in str(exc):
                raise DuplicateEventError("the ledger already holds one of these events") from exc
            raise StorageError(f"append refused by the database: {exc}") from exc

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> StoredCheckpoint:
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO checkpoints VALUES (?, ?, ?, ?)",
                (checkpoint.size, checkpoint.root, checkpoint.note, checkpoint.created),
            )
        row = self._conn.execute(
            "SELECT size, root, note, created FROM checkpoints WHERE size = ?", (checkpoint.size,)
        ).fetchone()
        return StoredCheckpoint(row[0], bytes(row[1]), row[2], row[3])

    # -- reads ---------------------------------------------------------------------------------

    def head(self) -> TreeHead:
        return _read_head(self._conn)

    def entry(self, index: int) -> EntryRow | None:
        row = self._conn.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE idx = ?", (index,)
        ).fetchone()
        return None if row is None else row_to_entry(row)

    def index_of(self, event_id: str) -> int | None:
        row = self._conn.execute("SELECT idx FROM entries WHERE id = ?", (event_id,)).fetchone()
        return None if row is None else int(row[0])

    def existing_ids(self, event_ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(event_ids), 500):
            chunk = event_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(
                r[0]
                for r in self._conn.execute(f"SELECT id FROM entries WHERE id IN ({marks})", chunk)
            )
        return found

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[EntryRow]:
        return self.query(EntryFilter(start=start, limit=None if stop is None else stop - start))

    def _fetch(self, sql: str, args: Sequence[object]) -> list[Any]:
        return self._conn.execute(sql, args).fetchall()

    def entry_chunks(self, start: int, stop: int) -> Iterator[list[EntryTuple]]:
        return scan_chunks(self._fetch, ENTRY_COLUMNS, start, stop, QUERY_CHUNK, "?")

    def leaf_chunks(self, start: int, stop: int) -> Iterator[list[tuple[int, bytes]]]:
        return scan_chunks(self._fetch, "idx, leaf_hash", start, stop, LEAF_CHUNK, "?")

    def tune_for_scans(self) -> None:
        # The large page cache that helps appends slows a single pass: every page read takes a
        # fresh cache slot (a verification range read 1.6x faster with SQLite's default).
        self._conn.execute("PRAGMA cache_size=-2000")

    def leaf_data_chunks(self, start: int, stop: int) -> Iterator[list[tuple[int, bytes, bytes]]]:
        return scan_chunks(self._fetch, "idx, data, leaf_hash", start, stop, QUERY_CHUNK, "?")

    def leaf_scan(self, start: int, stop: int, marks: Sequence[bytes]) -> hashing.LeafScan | None:
        scan = hashing.scan_sqlite
        if scan is None:
            return None
        try:
            return scan(self.path, start, stop, marks, self._busy_ms)
        except RuntimeError as exc:
            raise StorageError(f"{self.url}: {exc}") from exc

    def catch_up_indexes(self) -> None:
        """Bring the derived indexes up to the tree head, sorted, in one transaction."""
        size = self.head().size
        if int(self.get_meta(INDEXED_UPTO) or 0) >= size:
            return
        with self._transaction() as conn:
            (value,) = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (INDEXED_UPTO,)
            ).fetchone()
            upto = int(value)
            (size,) = conn.execute("SELECT size FROM tree_head WHERE one = 1").fetchone()
            for sql, args in catch_up_inserts(upto, size, "?"):
                conn.execute(sql, args)
            upto = max(upto, size)
            conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(upto), INDEXED_UPTO))

    def check_derived_indexes(self) -> list[tuple[str, str, int | None]]:
        upto = int(self.get_meta(INDEXED_UPTO) or 0)
        return derived_index_problems(self._fetch, "?", upto)

    def query(self, flt: EntryFilter) -> Iterator[EntryRow]:
        if needs_derived(flt):
            self.catch_up_indexes()
        return paginate(flt, self._fetch, "?")

    def nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        if not keys:
            return {}
        leaves, tile_keys = wanted_rows(keys)
        # Both kinds in one statement (no more than 999 parameters: a proof needs about 70).
        marks_leaves = ",".join("?" * len(leaves)) or "NULL"
        marks_tiles = ",".join("?" * len(tile_keys)) or "NULL"
        rows = self._conn.execute(
            f"SELECT 0, idx, leaf_hash FROM entries WHERE idx IN ({marks_leaves}) "
            f"UNION ALL SELECT 1, k, hashes FROM tiles WHERE k IN ({marks_tiles})",
            [*leaves, *tile_keys],
        )
        return nodes_from(keys, rows)

    def head_and_nodes(self, keys: Sequence[NodeKey]) -> tuple[TreeHead, Mapping[NodeKey, bytes]]:
        # Two statements: a local call costs microseconds. The nodes of any size up to the head
        # are there for good, so a head that moves in between does no harm.
        return _read_head(self._conn), self.nodes(keys)

    def tiles(self, start_key: int, stop_key: int) -> dict[int, bytes]:
        return {
            k: bytes(h)
            for k, h in self._conn.execute(
                "SELECT k, hashes FROM tiles WHERE k >= ? AND k < ?", (start_key, stop_key)
            )
        }

    def count_tiles(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM tiles").fetchone()[0])

    def checkpoints(self) -> list[StoredCheckpoint]:
        return [
            StoredCheckpoint(r[0], bytes(r[1]), r[2], r[3])
            for r in self._conn.execute(
                "SELECT size, root, note, created FROM checkpoints ORDER BY size"
            )
        ]


def _statements(script: str) -> list[str]:
    """Split a migration script; trigger bodies keep their inner semicolons."""
    statements, current = [], []
    for line in script.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line)
        joined = "\n".join(current)
        if stripped.endswith(";") and sqlite3.complete_statement(joined):
            statements.append(joined)
            current = []
    return statements
