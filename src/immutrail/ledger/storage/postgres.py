"""PostgreSQL ledger storage: one ledger shared by many processes and API servers.

Writers serialize on ``SELECT … FOR UPDATE`` of the single tree-head row, so the sequence stays
gap-free however many processes append; entries go in with COPY, the fastest path psycopg offers
(LIBRARIES.md: 497k rows/s against 104k for executemany). A commit returns only after the WAL is
flushed (the server's default ``synchronous_commit=on``), which is what "acknowledged" means here.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import errors as pg_errors

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
    redact_url,
    row_to_entry,
)

_MIGRATION_LOCK = 0x1A4D_7E11  # advisory lock id: one migrator at a time

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            """CREATE TABLE entries (
                idx BIGINT PRIMARY KEY,
                id TEXT NOT NULL,
                type TEXT NOT NULL,
                actor TEXT NOT NULL,
                subject TEXT NOT NULL,
                time_us BIGINT NOT NULL,
                data BYTEA NOT NULL,
                leaf_hash BYTEA NOT NULL
            )""",
            "CREATE UNIQUE INDEX entries_id ON entries (id)",
            "CREATE INDEX entries_type ON entries (type, idx)",
            "CREATE INDEX entries_subject ON entries (subject, idx)",
            "CREATE INDEX entries_time ON entries (time_us)",
            "CREATE TABLE nodes (k BIGINT PRIMARY KEY, hash BYTEA NOT NULL)",
            """CREATE TABLE tree_head (
                one INTEGER PRIMARY KEY CHECK (one = 1),
                size BIGINT NOT NULL,
                root BYTEA NOT NULL,
                frontier BYTEA NOT NULL
            )""",
            f"INSERT INTO tree_head VALUES (1, 0, '\\x{EMPTY_ROOT.hex()}'::bytea, ''::bytea)",
            """CREATE TABLE checkpoints (
                size BIGINT PRIMARY KEY,
                root BYTEA NOT NULL,
                note TEXT NOT NULL,
                created TEXT NOT NULL
            )""",
            # Append-only by construction: history tables refuse updates and deletes.
            """CREATE FUNCTION immutrail_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$""",
            """CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON entries
               FOR EACH STATEMENT EXECUTE FUNCTION immutrail_append_only()""",
            """CREATE TRIGGER nodes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON nodes
               FOR EACH STATEMENT EXECUTE FUNCTION immutrail_append_only()""",
            """CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
               ON checkpoints FOR EACH STATEMENT EXECUTE FUNCTION immutrail_append_only()""",
        ],
    ),
    (
        2,
        [
            "DROP INDEX entries_subject",
            """CREATE TABLE subject_index (
                subject TEXT NOT NULL,
                idx BIGINT NOT NULL,
                PRIMARY KEY (subject, idx)
            )""",
            "INSERT INTO subject_index SELECT subject, idx FROM entries ORDER BY subject, idx",
            f"INSERT INTO meta VALUES ('{SUBJECT_INDEXED}', (SELECT count(*) FROM entries))",
        ],
    ),
]


def _normalize(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


class PostgresWriter:
    def __init__(self, conn: psycopg.Connection[Any], head: TreeHead):
        self._conn = conn
        self._head = head

    def head(self) -> TreeHead:
        return self._head

    def insert(
        self,
        entries: Sequence[EntryRow],
        nodes: Sequence[tuple[int, int, bytes]],
        new_head: TreeHead,
    ) -> None:
        with self._conn.cursor() as cur:
            with cur.copy(f"COPY entries ({ENTRY_COLUMNS}) FROM STDIN") as copy:
                for e in entries:
                    copy.write_row(
                        (e.index, e.id, e.type, e.actor, e.subject, e.time_us, e.data, e.leaf_hash)
                    )
            if nodes:
                with cur.copy("COPY nodes (k, hash) FROM STDIN") as copy:
                    for level, index, h in nodes:
                        copy.write_row((node_key(level, index), h))
            cur.execute(
                "UPDATE tree_head SET size = %s, root = %s, frontier = %s WHERE one = 1",
                (new_head.size, new_head.root, new_head.frontier),
            )


class PostgresStore:
    def __init__(self, url: str):
        self._dsn = _normalize(url)
        self.url = redact_url(self._dsn)
        try:
            self._conn: psycopg.Connection[Any] = psycopg.connect(self._dsn, autocommit=True)
        except psycopg.Error as exc:
            raise StorageError(f"cannot connect to {self.url}: {exc}") from exc

    # -- schema --------------------------------------------------------------------------------

    def migrate(self) -> int:
        latest = MIGRATIONS[-1][0]
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            cur.execute("SELECT coalesce(max(version), 0) FROM schema_migrations")
            row = cur.fetchone()
            current = int(row[0]) if row else 0
            if current > latest:
                raise StorageError(
                    f"{self.url} has schema version {current}; this immutrail knows up to {latest}"
                )
            for version, statements in MIGRATIONS:
                if version > current:
                    for statement in statements:
                        cur.execute(statement)
                    cur.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
        return latest

    def check_schema(self) -> None:
        try:
            row = self._conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        except pg_errors.UndefinedTable as exc:
            raise NotInitializedError(f"{self.url} holds no ledger schema") from exc
        if row is None or row[0] != MIGRATIONS[-1][0]:
            raise StorageError(f"{self.url} has schema version {row and row[0]}")

    def close(self) -> None:
        self._conn.close()

    # -- meta ----------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = %s", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put_meta_once(self, key: str, value: str) -> str:
        self._conn.execute(
            "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO NOTHING", (key, value)
        )
        stored = self.get_meta(key)
        assert stored is not None
        return stored

    # -- writes --------------------------------------------------------------------------------

    @contextmanager
    def writer(self) -> Iterator[PostgresWriter]:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute("SELECT size, root, frontier FROM tree_head WHERE one = 1 FOR UPDATE")
                row = cur.fetchone()
                if row is None:
                    raise StorageError("the tree_head row is missing: the database is damaged")
                yield PostgresWriter(self._conn, TreeHead(row[0], bytes(row[1]), bytes(row[2])))
        except pg_errors.UniqueViolation as exc:
            raise DuplicateEventError(
                f"the ledger already holds one of these events: {exc}"
            ) from exc
        except psycopg.OperationalError as exc:
            raise StorageError(f"append to {self.url} failed: {exc}") from exc

    def add_checkpoint(self, checkpoint: StoredCheckpoint) -> StoredCheckpoint:
        self._conn.execute(
            "INSERT INTO checkpoints VALUES (%s, %s, %s, %s) ON CONFLICT (size) DO NOTHING",
            (checkpoint.size, checkpoint.root, checkpoint.note, checkpoint.created),
        )
        row = self._conn.execute(
            "SELECT size, root, note, created FROM checkpoints WHERE size = %s", (checkpoint.size,)
        ).fetchone()
        assert row is not None
        return StoredCheckpoint(row[0], bytes(row[1]), row[2], row[3])

    # -- reads ---------------------------------------------------------------------------------

    def head(self) -> TreeHead:
        row = self._conn.execute(
            "SELECT size, root, frontier FROM tree_head WHERE one = 1"
        ).fetchone()
        if row is None:
            raise StorageError("the tree_head row is missing: the database is damaged")
        return TreeHead(row[0], bytes(row[1]), bytes(row[2]))

    def entry(self, index: int) -> EntryRow | None:
        row = self._conn.execute(
            f"SELECT {ENTRY_COLUMNS} FROM entries WHERE idx = %s", (index,)
        ).fetchone()
        return None if row is None else row_to_entry(row)

    def index_of(self, event_id: str) -> int | None:
        row = self._conn.execute("SELECT idx FROM entries WHERE id = %s", (event_id,)).fetchone()
        return None if row is None else int(row[0])

    def existing_ids(self, event_ids: Sequence[str]) -> set[str]:
        rows = self._conn.execute(
            "SELECT id FROM entries WHERE id = ANY(%s)", (list(event_ids),)
        ).fetchall()
        return {r[0] for r in rows}

    def entries(self, start: int = 0, stop: int | None = None) -> Iterator[EntryRow]:
        return self.query(EntryFilter(start=start, limit=None if stop is None else stop - start))

    def index_subjects(self) -> None:
        """Bring the derived subject index up to the tree head, sorted, in one transaction."""
        size = self.head().size
        if int(self.get_meta(SUBJECT_INDEXED) or 0) >= size:
            return
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SELECT 1 FROM tree_head WHERE one = 1 FOR UPDATE")  # one indexer
            cur.execute("SELECT value FROM meta WHERE key = %s", (SUBJECT_INDEXED,))
            row = cur.fetchone()
            upto = int(row[0]) if row else 0
            while True:
                cur.execute(
                    "SELECT subject, idx FROM entries WHERE idx >= %s ORDER BY idx LIMIT %s",
                    (upto, SUBJECT_CATCH_UP_CHUNK),
                )
                rows = cur.fetchall()
                if not rows:
                    break
                upto = rows[-1][1] + 1
                rows.sort()
                with cur.copy("COPY subject_index (subject, idx) FROM STDIN") as copy:
                    for subject_row in rows:
                        copy.write_row(subject_row)
            cur.execute("UPDATE meta SET value = %s WHERE key = %s", (str(upto), SUBJECT_INDEXED))

    def check_subject_index(self) -> list[tuple[str, int | None]]:
        upto = int(self.get_meta(SUBJECT_INDEXED) or 0)
        problems: list[tuple[str, int | None]] = []
        for (idx,) in self._conn.execute(
            "SELECT s.idx FROM subject_index s LEFT JOIN entries e ON e.idx = s.idx "
            "WHERE e.idx IS NULL OR e.subject IS DISTINCT FROM s.subject OR s.idx >= %s "
            "ORDER BY s.idx LIMIT 5",
            (upto,),
        ):
            problems.append((f"names entry {idx} under a subject it does not have", idx))
        row = self._conn.execute("SELECT count(*) FROM subject_index").fetchone()
        count = int(row[0]) if row else 0
        if count != upto:
            problems.append((f"holds {count} rows for {upto} indexed entries", None))
        return problems

    def query(self, flt: EntryFilter) -> Iterator[EntryRow]:
        if flt.subject is not None:
            self.index_subjects()
        return paginate(flt, lambda sql, args: self._conn.execute(sql, args).fetchall(), "%s")

    def nodes(self, keys: Sequence[NodeKey]) -> Mapping[NodeKey, bytes]:
        # One statement for leaves and inner nodes: a proof is one round trip.
        leaves = [index for level, index in keys if level == 0]
        inner = {node_key(level, index): (level, index) for level, index in keys if level}
        out: dict[NodeKey, bytes] = {}
        if not keys:
            return out
        rows = self._conn.execute(
            "SELECT 0, idx, leaf_hash FROM entries WHERE idx = ANY(%s) "
            "UNION ALL SELECT 1, k, hash FROM nodes WHERE k = ANY(%s)",
            (leaves, list(inner)),
        )
        for is_inner, k, h in rows:
            out[inner[k] if is_inner else (0, k)] = bytes(h)
        return out

    def node_range(self, level: int, start: int, stop: int) -> Mapping[int, bytes]:
        base = node_key(level, 0)
        return {
            k - base: bytes(h)
            for k, h in self._conn.execute(
                "SELECT k, hash FROM nodes WHERE k >= %s AND k < %s", (base + start, base + stop)
            )
        }

    def count_nodes(self) -> int:
        row = self._conn.execute("SELECT count(*) FROM nodes").fetchone()
        return int(row[0]) if row else 0

    def checkpoints(self) -> list[StoredCheckpoint]:
        return [
            StoredCheckpoint(r[0], bytes(r[1]), r[2], r[3])
            for r in self._conn.execute(
                "SELECT size, root, note, created FROM checkpoints ORDER BY size"
            )
        ]
