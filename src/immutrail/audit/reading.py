"""The queries' source over a live ledger (and, for artifact kinds, the image store).

There is no separate audit index to drift from the truth: the queries read through the ledger's
own columns (type, subject, time), which ``immutrail ledger verify`` checks against the hashed
entries. Each row read here is checked against its own bytes (type, subject, time and leaf hash)
on the way, so a column edited behind the ledger's back is an error, not a wrong answer.
"""

from __future__ import annotations

from pathlib import Path

from immutrail.artifacts.errors import ArtifactError
from immutrail.artifacts.store import Store
from immutrail.ledger.errors import EventFormatError
from immutrail.ledger.event import parse_entry
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.merkle import leaf_hash
from immutrail.ledger.storage.interface import EntryFilter, EntryRow

from .errors import AuditError
from .source import Indexed, manifest_kind, parse_manifest


def optional_store(home: Path) -> Store | None:
    """``home``'s image store, or None when it has none (or it cannot be opened): answers then
    leave artifact kinds unknown (provenance is not listed)."""
    try:
        return Store.for_home(home)
    except ArtifactError:
        return None


class LedgerSource:
    """The first ``size`` entries of ``ledger`` (default: all of them now)."""

    def __init__(self, ledger: Ledger, store: Store | None, size: int | None = None) -> None:
        self.ledger = ledger
        self.store = store
        self._size = ledger.head().size if size is None else size
        self._parsed: dict[int, Indexed] = {}
        self._types: dict[tuple[str, str | None], list[Indexed]] = {}
        self._subjects: dict[str, list[Indexed]] = {}
        self._kinds: dict[str, str | None] = {}

    @property
    def size(self) -> int:
        return self._size

    def _read(self, row: EntryRow) -> Indexed:
        known = self._parsed.get(row.index)
        if known is not None:
            return known
        try:
            event = parse_entry(row.data)
        except EventFormatError as exc:
            raise AuditError(
                f"ledger entry {row.index} is not a valid event ({exc}); run `ledger verify`"
            ) from exc
        item = Indexed.of(row.index, event)
        if (
            leaf_hash(row.data) != row.leaf_hash
            or (event.type, event.subject, event.id) != (row.type, row.subject, row.id)
            or item.us != row.time_us
        ):
            raise AuditError(
                f"ledger entry {row.index}: its stored columns disagree with its bytes; "
                "run `ledger verify`"
            )
        self._parsed[row.index] = item
        return item

    def _rows(self, flt: EntryFilter, mentions: bytes | None = None) -> list[Indexed]:
        found = []
        for row in self.ledger.entries(flt):
            if row.index >= self._size:
                break
            # Entries are canonical JSON, so a member the query needs is spelled exactly so:
            # an entry without those bytes cannot match, and need not be parsed.
            if mentions is None or mentions in row.data:
                found.append(self._read(row))
        return found

    def of_type(self, kind: str, mentions: str | None = None) -> list[Indexed]:
        key = (kind, mentions)
        if key not in self._types:
            needle = None if mentions is None else mentions.encode("utf-8")
            self._types[key] = self._rows(EntryFilter(type=kind), needle)
        return list(self._types[key])

    def about(self, subject: str) -> list[Indexed]:
        if subject not in self._subjects:
            self._subjects[subject] = self._rows(EntryFilter(subject=subject))
        return list(self._subjects[subject])

    def at_index(self, index: int) -> Indexed | None:
        if not 0 <= index < self._size:
            return None
        return self._read(self.ledger.entry(index))

    def window(self, since_us: int, until_us: int) -> list[Indexed]:
        rows = self._rows(EntryFilter(since_us=since_us, until_us=until_us))
        return sorted(rows, key=lambda e: e.index)

    def artifact_kind(self, artifact: str) -> str | None:
        if artifact not in self._kinds:
            self._kinds[artifact] = self._kind(artifact)
        return self._kinds[artifact]

    def _kind(self, artifact: str) -> str | None:
        if self.store is None:
            return None
        try:
            data = self.store.read_blob(artifact)
        except ArtifactError:
            return None  # not in this store: the kind stays unknown, as it would in a bundle
        manifest = parse_manifest(data)
        return None if manifest is None else manifest_kind(manifest)
