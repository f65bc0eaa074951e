"""SQLite ledger storage: the embedded default, one file, WAL journal.

Durability: ``synchronous=FULL`` in WAL mode fsyncs the log at every commit, so an acknowledged
append survives power loss (``NORMAL`` would not). Writers serialize on ``BEGIN IMMEDIATE``; readers
never block them. Written against the standard library's ``sqlite3`` rather than SQLAlchemy: the
append path is the product's hot path, and Core costs half the raw insert rate (LIBRARIES.md).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import DuplicateEventError, NotInitializedError, StorageError
from ..merkle import EMPTY_ROOT
from .interface import (
    ENTRY_COLUMNS,
    SUBJECT_CATCH_UP_CHUNK,
    SUBJECT_INDEXED,
    EntryFilter,
    EntryRow,
    NodeKey,
    StoredCheckpoint,
    TreeHead,
    node_key,
    paginate,
    row_to_entry,
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
]


class SqliteWriter:
    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn

    def head(self) -> TreeHead:
        return _read_head(self._conn)

    def insert(
        self,
        entries: Sequence[EntryRow],
        nodes: Sequence[tuple[int, int, bytes]],
        new_head: TreeHead,
    ) -> None:
        self._conn.executemany(
            f"INSERT INTO entries ({ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (e.index, e.id, e.type, e.actor, e.subject, e.time_us, e.data, e.leaf_hash)
                for e in entries
            ],
        )
        self._conn.executemany(
            "INSERT INTO nodes (k, hash) VALUES (?, ?)",
            [(node_key(level, index), h) for level, index, h in nodes],
        )
        self._conn.execute(
            "UPDATE tree_head SET size = ?, root = ?, frontier = ? WHERE one = 1",
            (new_head.size, new_head.root, new_head.frontier),
        )


def _read_head(conn: sqlite3.Connection) -> TreeHead:
    row = conn.execute("SELECT size, root, frontier FROM tree_head WHERE one = 1").fetchone()
    if row is None:
        raise StorageError("the tree_head row is missing: the database is damaged")
    return TreeHead(row[0], bytes(row[1]), bytes(row[2]))


class SqliteStore:
    """A ledger in one SQLite file; ``create=True`` (``init``) makes it, otherwise it must exist."""

    def __init__(self, path: Path, *, create: bool = False, busy_timeout_s: float = 60.0):
        self.path = path
        self.url = f"sqlite:///{path}"
        if not create and not path.exists():
            raise NotInitializedError(f"no ledger database at {path}")
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
            self._conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
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
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (?, strftime('%Y-%m-%dT%H:%M:%SZ'))",
                        (version,),
                    )
            conn.execute("COMMIT")
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

    def index_subjects(self) -> None:
        """Bring the derived subject index up to the tree head, sorted, in one transaction."""
        size = self.head().size
        if int(self.get_meta(SUBJECT_INDEXED) or 0) >= size:
            return
        with self._transaction() as conn:
            upto = int(
                conn.execute("SELECT value FROM meta WHERE key = ?", (SUBJECT_INDEXED,)).fetchone()[
                    0
                ]
            )
            while True:
                rows = conn.execute(
                    "SELECT subject, idx FROM entries WHERE idx >= ? ORDER BY idx LIMIT ?",
                    (upto, SUBJECT_CATCH_UP_CHUNK),
                ).fetchall()
                if not rows:
                    break
                upto = rows[-1][1] + 1
                rows.sort()
                conn.executemany("INSERT INTO subject_index VALUES (?, ?)", rows)
            conn.execute("UPDATE meta SET value = ? WHERE key = ?", (str(upto), SUBJECT_INDEXED))

    def check_subject_index(self) -> list[tuple[str, int | None]]:
        upto = int(self.get_meta(SUBJECT_INDEXED) or 0)
        problems: list[tuple[str, int | None]] = []
        for (idx,) in self._conn.execute(
            "SELECT s.idx FROM subject_index s LEFT JOIN entries e ON e.idx = s.idx "
            "WHERE e.idx IS NULL OR e.subject IS NOT s.subject OR s.idx >= ? "
            "ORDER BY s.idx LIMIT 5",
            (upto,),
        ):
            problems.append((f"names entry {idx} under a subject it does not have", idx))
        count = self._conn.execute("SELECT count(*) FROM subject_index").fetchone()[0]
        if count != upto:
            problems.append((f"holds {count} rows for {upto} indexed entries", None))
        return problems

    def query(self, flt: EntryFilter) -> Iterator[EntryRow]:
        if flt.subject is not None:
            self.index_subjects()
        return paginate(flt, lambda sql, args: self._conn.execute(sql, args).fetchall(), "?")

    def nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        leaves = [index for level, index in keys if level == 0]
        inner = {node_key(level, index): (level, index) for level, index in keys if level}
        out: dict[NodeKey, bytes] = {}
        if not keys:
            return out
        # Both kinds in one statement (no more than 999 parameters: a proof needs about 64).
        marks_leaves = ",".join("?" * len(leaves)) or "NULL"
        marks_inner = ",".join("?" * len(inner)) or "NULL"
        rows = self._conn.execute(
            f"SELECT 0, idx, leaf_hash FROM entries WHERE idx IN ({marks_leaves}) "
            f"UNION ALL SELECT 1, k, hash FROM nodes WHERE k IN ({marks_inner})",
            [*leaves, *inner],
        )
        for is_inner, k, h in rows:
            out[inner[k] if is_inner else (0, k)] = bytes(h)
        return out

    def node_range(self, level: int, start: int, stop: int) -> Mapping[int, bytes]:
        base = node_key(level, 0)
        return {
            k - base: bytes(h)
            for k, h in self._conn.execute(
                "SELECT k, hash FROM nodes WHERE k >= ? AND k < ?", (base + start, base + stop)
            )
        }

    def count_nodes(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM nodes").fetchone()[0])

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
