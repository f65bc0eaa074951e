"""The local vulnerability database: OSV records in SQLite, indexed by package.

``$IMMUTRAIL_HOME/vulndb/osv.sqlite`` holds

* ``records``: one row per OSV id: ``modified``, ``withdrawn``, the SHA-256 ``digest`` of the
  record's RFC 8785 canonical JSON, and those canonical bytes;
* ``affected``: one row per ``affected[]`` entry with a package, keyed by ecosystem base name
  (``Debian`` for ``Debian:12``) and the normalized package name, holding the full ecosystem
  string and the entry's ``ranges``/``versions``: a scan reads only the rows of the packages
  it looks up, never every record;
* ``meta`` and ``imports``: the snapshot digest and the history of imports.

The **snapshot digest** names the database's exact content: the SHA-256 of the lines
``<id> TAB <modified> TAB <record digest> LF`` for every record, sorted by id (byte order). A
scan records it, so anyone holding the same records can recompute it and re-check the scan.

An import is one transaction: a record that fails validation aborts it with the file (and
archive member) named, and the database is unchanged, unless ``skip_invalid`` is asked for, in
which case the skipped records and why are part of the result (and of the ledger event the
caller records). A record replaces the stored one with the same id when its ``modified`` is the
same or newer; an older copy is ignored and counted.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from .errors import OsvRecordError, ScanInputError, VulnDbError, VulnDbMissingError
from .osv import OsvRecord, parse_record
from .sources import SourceFile, describe, read_source
from .versions import SCHEMES, ecosystem_base

DB_DIR = "vulndb"
DB_FILE = "osv.sqlite"
SCHEMA_VERSION = "1"
MAX_SKIPPED_LISTED = 1000
"""At most this many skipped records are listed by name in a result; all are counted."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY,
    modified TEXT NOT NULL,
    withdrawn TEXT,
    digest TEXT NOT NULL,
    data BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS affected (
    eco_base TEXT NOT NULL,
    name TEXT NOT NULL,
    ecosystem TEXT NOT NULL,
    record_id TEXT NOT NULL,
    spec BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS affected_package ON affected (eco_base, name);
CREATE INDEX IF NOT EXISTS affected_record ON affected (record_id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imports (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    summary BLOB NOT NULL
);
"""


def db_path(home: Path) -> Path:
    return home / DB_DIR / DB_FILE


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the database holds: its digest, size and when it last changed."""

    digest: str
    records: int
    withdrawn: int
    last_update: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "records": self.records,
            "withdrawn": self.withdrawn,
            "last_update": self.last_update,
        }


@dataclass(frozen=True, slots=True)
class Skipped:
    source: str
    reason: str


@dataclass
class ImportResult:
    sources: list[SourceFile]
    read: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    older: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    skipped_count: int = 0
    without_comparator: dict[str, int] = field(default_factory=dict)
    """Affected entries by ecosystem base for which scans have no version comparator."""
    previous: str | None = None
    snapshot: Snapshot | None = None
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": [{"path": s.path, "kind": s.kind, "sha256": s.sha256} for s in self.sources],
            "read": self.read,
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "older": self.older,
            "skipped": self.skipped_count,
            "skipped_records": [{"source": s.source, "reason": s.reason} for s in self.skipped],
            "without_comparator": dict(sorted(self.without_comparator.items())),
            "previous_snapshot": self.previous,
            "snapshot": self.snapshot.to_dict() if self.snapshot else None,
        }


@dataclass(frozen=True, slots=True)
class Candidate:
    """One ``affected`` entry naming a package: what a scan evaluates."""

    record_id: str
    ecosystem: str
    spec: dict[str, Any]
    withdrawn: bool


class ImportObserver(Protocol):
    def record_read(self, source: str) -> None: ...


class VulnDb:
    """An open vulnerability database. Use :meth:`open` (scans) or :meth:`create` (imports)."""

    def __init__(self, path: Path, connection: sqlite3.Connection):
        self.path = path
        self._db = connection

    @classmethod
    def open(cls, home: Path) -> VulnDb:
        path = db_path(home)
        if not path.is_file():
            raise VulnDbMissingError(f"no vulnerability database at {path}")
        db = cls._connect(path)
        if db._meta("snapshot") is None:  # created by an import that failed: nothing in it
            db.close()
            raise VulnDbMissingError(f"no records were ever imported into {path}")
        return db

    @classmethod
    def create(cls, home: Path) -> VulnDb:
        path = db_path(home)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        return cls._connect(path, create=True)

    @classmethod
    def _connect(cls, path: Path, *, create: bool = False) -> VulnDb:
        try:
            connection = sqlite3.connect(path, isolation_level=None, timeout=30)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")
            if create:
                connection.executescript(_SCHEMA)
                connection.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
                )
            row = connection.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.Error as exc:
            raise VulnDbError(f"{path}: not a usable vulnerability database ({exc})") from exc
        if row is None or row[0] != SCHEMA_VERSION:
            connection.close()
            found = row[0] if row else "none"
            raise VulnDbError(
                f"{path}: database schema {found}, this immutrail reads {SCHEMA_VERSION}"
            )
        return cls(path, connection)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> VulnDb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading --------------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[None]:
        """One read transaction: everything read inside sees the same snapshot."""
        try:
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise VulnDbError(f"{self.path}: {exc}") from exc

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def snapshot(self) -> Snapshot:
        """The stored snapshot (computed at each import; :meth:`compute_snapshot` re-checks)."""
        try:
            digest = self._meta("snapshot") or _snapshot_digest([])
            records = int(self._meta("records") or 0)
            withdrawn = int(self._meta("withdrawn") or 0)
            return Snapshot(digest, records, withdrawn, self._meta("last_update"))
        except sqlite3.Error as exc:
            raise VulnDbError(f"{self.path}: {exc}") from exc

    def compute_snapshot(self, *, rehash: bool = True) -> Snapshot:
        """Recompute the snapshot digest from every row; ``rehash`` re-hashes each record too.

        An import has just hashed what it wrote and passes ``rehash=False``; ``vulndb verify``
        re-hashes, which catches a record changed in the file behind the database's back.
        """
        rows: list[tuple[str, str, str]] = []
        withdrawn = 0
        column = "data" if rehash else "NULL"
        try:
            for record_id, modified, digest, data, gone in self._db.execute(
                f"SELECT id, modified, digest, {column}, withdrawn IS NOT NULL "  # noqa: S608
                "FROM records ORDER BY id"
            ):
                actual = digest if data is None else "sha256:" + hashlib.sha256(data).hexdigest()
                if actual != digest:
                    raise VulnDbError(
                        f"{self.path}: record {record_id} does not match its digest {digest}"
                    )
                rows.append((record_id, modified, digest))
                withdrawn += bool(gone)
        except sqlite3.Error as exc:
            raise VulnDbError(f"{self.path}: {exc}") from exc
        return Snapshot(_snapshot_digest(rows), len(rows), withdrawn, self._meta("last_update"))

    def candidates(self, eco_base: str, name: str) -> list[Candidate]:
        """The affected entries naming ``name`` in ecosystem ``eco_base`` (index lookup)."""
        try:
            rows = self._db.execute(
                "SELECT a.record_id, a.ecosystem, a.spec, r.withdrawn IS NOT NULL "
                "FROM affected a JOIN records r ON r.id = a.record_id "
                "WHERE a.eco_base = ? AND a.name = ?",
                (eco_base, name),
            ).fetchall()
        except sqlite3.Error as exc:
            raise VulnDbError(f"{self.path}: {exc}") from exc
        return [Candidate(r[0], r[1], orjson.loads(r[2]), bool(r[3])) for r in rows]

    def record(self, record_id: str) -> dict[str, Any]:
        """A stored record, parsed (the bytes were validated when imported)."""
        try:
            row = self._db.execute("SELECT data FROM records WHERE id = ?", (record_id,)).fetchone()
        except sqlite3.Error as exc:
            raise VulnDbError(f"{self.path}: {exc}") from exc
        if row is None:
            raise VulnDbError(f"{self.path}: record {record_id} is indexed but not stored")
        value: dict[str, Any] = orjson.loads(row[0])
        return value

    # -- importing ------------------------------------------------------------------------------

    def import_paths(
        self,
        paths: Sequence[Path],
        *,
        skip_invalid: bool = False,
        before_commit: Callable[[ImportResult], None] | None = None,
        observer: ImportObserver | None = None,
    ) -> ImportResult:
        """Import every record under ``paths`` in one transaction (see the module docs).

        ``before_commit`` runs inside the transaction once the new snapshot is known (the CLI
        appends the ledger event there): if it raises, nothing is imported.
        """
        started = time.perf_counter()
        if not paths:
            raise ScanInputError("nothing to import: give OSV .json files, folders or .zip")
        result = ImportResult(sources=[describe(Path(p)) for p in paths])
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise VulnDbError(f"{self.path}: cannot start the import ({exc})") from exc
        try:
            result.previous = self._meta("snapshot")
            for source in result.sources:
                for item in read_source(source):
                    if observer is not None:
                        observer.record_read(item.source)
                    result.read += 1
                    try:
                        record = parse_record(item.data, item.source)
                    except OsvRecordError as exc:
                        if not skip_invalid:
                            raise
                        result.skipped_count += 1
                        if len(result.skipped) < MAX_SKIPPED_LISTED:
                            result.skipped.append(Skipped(item.source, exc.detail))
                        continue
                    self._store(record, result)
            if result.read == 0:
                raise ScanInputError(
                    "no OSV records found in " + ", ".join(s.path for s in result.sources)
                )
            snapshot = self.compute_snapshot(rehash=False)
            last_update = _now() if result.changed else snapshot.last_update
            result.snapshot = Snapshot(
                snapshot.digest, snapshot.records, snapshot.withdrawn, last_update
            )
            self._write_meta(result)
            if before_commit is not None:
                before_commit(result)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        result.seconds = time.perf_counter() - started
        return result

    def _store(self, record: OsvRecord, result: ImportResult) -> None:
        db = self._db
        row = db.execute(
            "SELECT modified, digest FROM records WHERE id = ?", (record.id,)
        ).fetchone()
        if row is not None:
            if row[1] == record.digest:
                result.unchanged += 1
                return
            if record.modified < row[0]:  # RFC 3339 Z times of one format sort as text
                result.older += 1
                return
            db.execute("DELETE FROM affected WHERE record_id = ?", (record.id,))
            result.updated += 1
        else:
            result.added += 1
        db.execute(
            "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?, ?)",
            (record.id, record.modified, record.withdrawn, record.digest, record.canonical),
        )
        rows = []
        for entry in record.affected:
            base = ecosystem_base(entry.ecosystem)
            if base not in SCHEMES:
                result.without_comparator[base] = result.without_comparator.get(base, 0) + 1
            rows.append(
                (base, entry.index_name, entry.ecosystem, record.id, orjson.dumps(entry.spec))
            )
        db.executemany("INSERT INTO affected VALUES (?, ?, ?, ?, ?)", rows)

    def _write_meta(self, result: ImportResult) -> None:
        assert result.snapshot is not None
        values = {
            "snapshot": result.snapshot.digest,
            "records": str(result.snapshot.records),
            "withdrawn": str(result.snapshot.withdrawn),
        }
        if result.snapshot.last_update is not None:
            values["last_update"] = result.snapshot.last_update
        self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(values.items()))
        self._db.execute(
            "INSERT INTO imports (time, summary) VALUES (?, ?)",
            (_now(), orjson.dumps(result.to_dict())),
        )


def _snapshot_digest(rows: Sequence[tuple[str, str, str]]) -> str:
    digest = hashlib.sha256()
    for record_id, modified, record_digest in sorted(rows, key=lambda r: r[0].encode()):
        digest.update(f"{record_id}\t{modified}\t{record_digest}\n".encode())
    return "sha256:" + digest.hexdigest()
