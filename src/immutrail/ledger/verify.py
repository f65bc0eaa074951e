"""Full verification: recompute every entry hash and the whole tree, and check every checkpoint.

The entries are checked in index ranges by worker processes, one per core, each reading the
rows itself. A range's check depends on nothing outside it:

* every entry's bytes against its stored leaf hash;
* with the *entry format* check (the default), each entry is also the canonical JSON of a valid
  event and agrees with its indexed columns; without it (``entry_format=False``), entries that
  announce, revoke or use an actor key are found by their bytes;
* every 256-wide tile of tree nodes above the range is recomputed from the stored leaf hashes
  and compared with the stored tile.

This process then recomputes the tiles above those from the tops the workers return, and takes
the root at every checkpoint size from the nodes it has just checked. When any tile differs,
the tree is rebuilt once more leaf by leaf (:class:`_TreePass`), which names the lowest wrong
node and gives the roots the entries themselves imply.

Actor signatures depend on the keys announced earlier in the ledger, so the few entries that
announce, revoke or use a key are replayed in order here after the range checks.
"""

from __future__ import annotations

import bisect
import gc
import importlib
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field

from immutrail.crypto.checkpoint import Checkpoint, open_checkpoint
from immutrail.crypto.errors import CryptoError
from immutrail.crypto.keys import PublicKey, key_id, load_public_key_pem
from immutrail.crypto.note import NoteVerifier

from . import hashing, merkle, tiles
from .errors import EventFormatError
from .event import Event, parse_entry, time_us, verify_event_signature
from .merkle import HASH_SIZE, Frontier
from .storage.interface import EntryRow, EntryTuple, LedgerStore
from .witness import WitnessedCheckpoint

ProgressObserver = Callable[[int, int], None]
"""Called with (entries verified, entries in all) as verification goes."""

MAX_ENTRY_PROBLEMS = 20
RANGE_CHUNK = 100 * tiles.TILE_WIDTH
"""Entries per unit of work handed to a worker: whole tiles."""
PARALLEL_FROM = 2 * RANGE_CHUNK
"""Smaller ledgers are checked in this process: starting workers costs more than they save."""


@dataclass(frozen=True)
class Problem:
    where: str
    message: str
    index: int | None = None

    def to_json(self) -> dict[str, object]:
        return {"where": self.where, "index": self.index, "message": self.message}


@dataclass
class VerificationReport:
    size: int = 0
    root: bytes = b""
    entries: int = 0
    signatures: int = 0
    """Actor signatures verified against keys announced in the ledger."""
    unknown_signers: int = 0
    """Signed entries whose key the ledger does not announce (not verifiable here)."""
    nodes: int = 0
    checkpoints: int = 0
    witnessed: int = 0
    problems: list[Problem] = field(default_factory=list)
    entry_format: bool = True
    """Whether each entry's event format, its indexed columns and the derived indexes were
    checked too (``ledger verify`` without ``--integrity-only``)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_index(self) -> int | None:
        return min((p.index for p in self.problems if p.index is not None), default=None)


EVENT_KEY_CREATED = "key.created"
EVENT_KEY_REVOKED = "key.revoked"


class KeyRing:
    """Actor keys announced in the ledger itself, so signed events verify from the ledger alone.

    ``key.created`` (subject ``key:<key id>``, payload ``public_key`` PEM) adds a key;
    ``key.revoked`` (same subject) makes every later signature by it a problem.
    """

    def __init__(self) -> None:
        self.keys: dict[str, PublicKey] = {}
        self.revoked: set[str] = set()
        self.verified = 0
        self.unknown = 0

    def learn(self, event: Event) -> str | None:
        if event.type not in (EVENT_KEY_CREATED, EVENT_KEY_REVOKED):
            return None
        keyid = event.subject.removeprefix("key:")
        if event.type == EVENT_KEY_REVOKED:
            self.revoked.add(keyid)
            return None
        try:
            public = load_public_key_pem(str(event.payload.get("public_key", "")))
        except CryptoError as exc:
            return f"announces a key that cannot be read: {exc}"
        if event.subject != f"key:{key_id(public)}":
            return "announces a key under a subject that is not its key id"
        self.keys[keyid] = public
        return None

    def check(self, event: Event) -> str | None:
        if event.signature is None:
            return None
        keyid = event.signature["keyid"]
        public = self.keys.get(keyid)
        if public is None:
            self.unknown += 1
            return None
        if keyid in self.revoked:
            return f"signed by key {keyid[:16]}…, which was revoked before this entry"
        try:
            verify_event_signature(event, public)
        except CryptoError as exc:
            return f"the actor's signature does not verify: {exc}"
        self.verified += 1
        return None


def check_row(row: EntryRow, keys: KeyRing | None = None) -> str | None:
    """Why the stored row disagrees with its own bytes (or its signature fails), or None."""
    why, event = _check_content(
        (row.index, row.id, row.type, row.actor, row.subject, row.time_us, row.data, row.leaf_hash)
    )
    if why is None and keys is not None and event is not None:
        return keys.check(event) or keys.learn(event)
    return why


def _check_content(row: EntryTuple) -> tuple[str | None, Event | None]:
    """The context-free checks of one row: bytes, leaf hash, event format, indexed columns."""
    _, event_id, event_type, actor, subject, stamp, data, leaf = row
    if merkle.leaf_hash(data) != leaf:
        return "its bytes do not match its stored leaf hash", None
    try:
        event = parse_entry(bytes(data))
    except EventFormatError as exc:
        return str(exc), None
    if (event.id, event.type, event.actor, event.subject) != (event_id, event_type, actor, subject):
        return "the indexed columns (id, type, actor, subject) disagree with the entry bytes", event
    if time_us(event.time) != stamp:
        return "the indexed time disagrees with the entry bytes", event
    return None, event


def _needs_keys(event: Event) -> bool:
    return event.signature is not None or event.type in (EVENT_KEY_CREATED, EVENT_KEY_REVOKED)


@dataclass
class RangeResult:
    """What one range check found in ``[start, stop)``."""

    start: int
    stop: int
    problems: list[tuple[int, str]] = field(default_factory=list)
    keyed: list[int] = field(default_factory=list)
    """Entries that announce, revoke or use an actor key: replayed in order afterwards."""
    gap: int | None = None
    """The first index in the range with no stored entry, if any."""
    tops: list[bytes] = field(default_factory=list)
    """The top hash of each full level-0 tile in the range, recomputed from the stored leaves."""
    nodes: int = 0
    tiles_differ: bool = False
    """A stored level-0 tile of the range differs from the one its leaf hashes give."""


_KEY_MARKS = (b'"signature":{', b'"type":"key.')
"""What the bytes of a signed entry, and of a key.created or key.revoked entry, contain: the
integrity check replays the entries holding either (a superset: a payload may hold the same text;
the replay parses each one)."""


def check_range(store: LedgerStore, start: int, stop: int, *, entry_format: bool) -> RangeResult:
    """Check entries ``[start, stop)`` (``start`` a multiple of the tile width) and their tiles."""
    result = RangeResult(start, stop)
    if entry_format:
        leaves, count = _check_format_chunks(store.entry_chunks(start, stop), start, result)
    else:
        scan = store.leaf_scan(start, stop, _KEY_MARKS) or hashing.scan_leaf_rows(
            store.leaf_data_chunks(start, stop), start, _KEY_MARKS
        )
        leaves, count = scan.leaves, scan.count
        why = "its bytes do not match its stored leaf hash"
        result.problems = [(index, why) for index in scan.bad[:MAX_ENTRY_PROBLEMS]]
        result.keyed = scan.marked
    if start + count < stop:
        result.gap = start + count
    else:
        _check_base_tiles(store, result, leaves)
    return result


def _check_format_chunks(
    chunks: Iterable[Sequence[EntryTuple]], start: int, result: RangeResult
) -> tuple[bytes, int]:
    """Each entry's format, bytes and indexed columns; (stored leaf hashes joined, entries read
    in sequence from ``start`` up to the first missing one)."""
    parts: list[bytes] = []
    expected = start
    for chunk in chunks:
        rows = hashing.rows_in_sequence(chunk, expected)
        expected += len(rows)
        parts.append(hashing.stored_leaves(rows))
        if len(result.problems) < MAX_ENTRY_PROBLEMS:
            _check_formats(rows, result)  # type: ignore[arg-type]
        if len(rows) < len(chunk):
            break
    return b"".join(parts), expected - start


def _check_formats(chunk: Sequence[EntryTuple], result: RangeResult) -> None:
    for row in chunk:
        why, event = _check_content(row)
        if why is not None:
            result.problems.append((row[0], why))
        elif event is not None and _needs_keys(event):
            result.keyed.append(row[0])


def _check_base_tiles(store: LedgerStore, result: RangeResult, leaves: bytes) -> None:
    """Recompute the level-0 tiles over ``leaves`` (joined, from ``result.start``) and compare."""
    first = result.start // tiles.TILE_WIDTH
    count = -(-len(leaves) // _BASE_BYTES)
    stored = store.tiles(tiles.tile_key(0, first), tiles.tile_key(0, first + count))
    equal, result.tops, result.nodes = _recompute_tiles(leaves, 0, first, stored)
    result.tiles_differ = not equal


def _upper_tiles_agree(store: LedgerStore, tops: list[bytes]) -> tuple[bool, int]:
    """Recompute every tile above level 0 from the level-0 tiles' tops; (all equal, hashes)."""
    nodes, tile_level, base = 0, 1, tops
    while len(base) >= 2:
        stored = store.tiles(tiles.tile_key(tile_level, 0), tiles.tile_key(tile_level + 1, 0))
        equal, base, computed = _recompute_tiles(b"".join(base), tile_level, 0, stored)
        nodes += computed
        if not equal:
            return False, nodes
        tile_level += 1
    return True, nodes


_BASE_BYTES = tiles.TILE_WIDTH * HASH_SIZE


def _recompute_tiles(
    base: bytes, tile_level: int, first: int, stored: dict[int, bytes]
) -> tuple[bool, list[bytes], int]:
    """The tiles of ``tile_level`` over ``base`` (joined hashes; tile ``first`` onwards), each
    recomputed and compared with ``stored``: (all equal, the tops of the full ones, hashes
    computed)."""
    equal, tops, nodes = True, [], 0
    for n in range(0, len(base), _BASE_BYTES):
        part = base[n : n + _BASE_BYTES]
        if len(part) < 2 * HASH_SIZE:
            continue
        computed = hashing.tile_from_base(part)
        nodes += len(computed) // HASH_SIZE
        if stored.get(tiles.tile_key(tile_level, first + n // _BASE_BYTES)) != computed:
            equal = False
        if len(part) == _BASE_BYTES:
            tops.append(computed[-HASH_SIZE:])
    return equal, tops, nodes


def _range_worker(url: str, start: int, stop: int, entry_format: bool) -> RangeResult:
    """Runs in a worker process: its own connection, one index range. The worker's garbage
    collector is off (the pool's initializer): parsing builds no cycles, and collections would
    walk, and copy, the heap inherited through fork (15% of the time, measured)."""
    from .home import open_store

    store = open_store(url)
    store.tune_for_scans()
    try:
        return check_range(store, start, stop, entry_format=entry_format)
    finally:
        store.close()


class _Targets:
    """Checkpoints awaiting the root at their size."""

    def __init__(self) -> None:
        self.by_size: dict[int, list[tuple[str, Checkpoint]]] = {}

    def add(self, label: str, checkpoint: Checkpoint) -> None:
        self.by_size.setdefault(checkpoint.size, []).append((label, checkpoint))


def _derived_worker(url: str) -> list[tuple[str, str, int | None]]:
    """Runs in a worker process: the derived-index checks (SQL joins over every indexed row,
    as long as a third of the entry format checks)."""
    from .home import open_store

    store = open_store(url)
    try:
        return store.check_derived_indexes()
    finally:
        store.close()


class _RangePass:
    """The range checks of ``[0, size)``: in worker processes, unless the ledger is small or
    ``workers`` is 1, in which case :meth:`results` runs them here, in order."""

    def __init__(
        self, store: LedgerStore, size: int, workers: int | None, chunk: int, entry_format: bool
    ):
        self.store, self.entry_format = store, entry_format
        self.ranges = [(a, min(a + chunk, size)) for a in range(0, size, chunk)]
        self.futures: list[Future[RangeResult]] = []
        self.derived: Future[list[tuple[str, str, int | None]]] | None = None
        self.pool: ProcessPoolExecutor | None = None
        count = workers if workers is not None else min(os.cpu_count() or 1, len(self.ranges))
        if (
            count <= 1
            or len(self.ranges) <= 1
            or (workers is None and size < PARALLEL_FROM)
            or "fork" not in multiprocessing.get_all_start_methods()
        ):
            return
        # fork: a worker starts in milliseconds and never re-runs the caller's __main__ (spawn
        # and forkserver do, which breaks any script without a main guard). It inherits this
        # process's database connection but never touches it: it opens its own and leaves
        # through os._exit.
        importlib.import_module(f"{__package__}.home")  # before the fork: workers import nothing
        self.pool = ProcessPoolExecutor(
            max_workers=count,
            mp_context=multiprocessing.get_context("fork"),
            initializer=gc.disable,
        )
        url = store.reopen_url()
        if entry_format:
            self.derived = self.pool.submit(_derived_worker, url)  # first: the longest task
        self.futures = [
            self.pool.submit(_range_worker, url, a, b, entry_format) for a, b in self.ranges
        ]

    def results(self) -> Iterator[RangeResult]:
        if self.futures:
            for future in self.futures:
                yield future.result()
        else:
            for a, b in self.ranges:
                yield check_range(self.store, a, b, entry_format=self.entry_format)

    def derived_problems(self) -> list[tuple[str, str, int | None]]:
        if not self.entry_format:
            return []
        if self.derived is None:
            return self.store.check_derived_indexes()
        return self.derived.result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


def verify_store(
    store: LedgerStore,
    verifier: NoteVerifier,
    origin: str,
    witnessed: Iterable[WitnessedCheckpoint] = (),
    observer: ProgressObserver | None = None,
    *,
    workers: int | None = None,
    chunk: int = RANGE_CHUNK,
    entry_format: bool = True,
) -> VerificationReport:
    """``workers``: range-checking processes (None: one per core for large ledgers).

    ``entry_format=False`` leaves out the checks that each entry is the canonical JSON of a
    valid event agreeing with its indexed columns, and the derived-index checks: what remains
    proves every entry's bytes are those the tree, the checkpoints and the witnesses commit to.
    """
    report = VerificationReport(entry_format=entry_format)
    head = store.head()
    report.size = head.size
    targets = _Targets()

    def open_note(label: str, note: str) -> Checkpoint | None:
        try:
            checkpoint = open_checkpoint(note, verifier, origin=origin)
        except CryptoError as exc:
            report.problems.append(Problem(label, f"does not verify: {exc}"))
            return None
        targets.add(label, checkpoint)
        return checkpoint

    for stored in store.checkpoints():
        report.checkpoints += 1
        label = f"checkpoint of size {stored.size}"
        signed = open_note(label, stored.note)
        if signed is not None and (signed.size, signed.root_hash) != (stored.size, stored.root):
            report.problems.append(
                Problem(label, "its stored size or root differs from what its note signs")
            )
    for item in witnessed:
        report.witnessed += 1
        open_note(f"witnessed checkpoint {item.source}", item.note)

    chunk = -(-chunk // tiles.TILE_WIDTH) * tiles.TILE_WIDTH  # ranges own whole tiles
    ranges = _RangePass(store, head.size, workers, chunk, entry_format)
    results: list[RangeResult] = []
    try:
        for result in ranges.results():
            results.append(result)
            if observer is not None:
                observer(result.stop, head.size)
        derived = ranges.derived_problems()
    finally:
        ranges.close()
    tile_count = store.count_tiles()

    entry_problems: list[tuple[int, str]] = []
    keyed: list[int] = []
    tops: list[bytes] = []
    gap: int | None = None
    tiles_differ = False
    for result in results:
        entry_problems.extend(result.problems)
        keyed.extend(result.keyed)
        tops.extend(result.tops)
        report.nodes += result.nodes
        tiles_differ = tiles_differ or result.tiles_differ
        if result.gap is not None and gap is None:
            gap = result.gap
    entry_problems.sort()
    entry_problems = entry_problems[:MAX_ENTRY_PROBLEMS]
    if gap is not None:
        entry_problems = [p for p in entry_problems if p[0] < gap]
    keys = KeyRing()
    for index in sorted(keyed):
        if len(entry_problems) >= MAX_ENTRY_PROBLEMS or (gap is not None and index >= gap):
            break
        row = store.entry(index)
        if row is None:
            continue
        why = check_row(row, keys)
        if why is not None:
            bisect.insort(entry_problems, (index, why))

    explained = [index for index, _ in entry_problems]
    located: list[Problem] = [Problem(f"entry {i}", why, i) for i, why in entry_problems]
    if gap is not None:
        located.append(Problem(f"entry {gap}", "missing: no entry is stored at this index", gap))
        explained.append(gap)
    explained.sort()

    upper_agree, upper_nodes = (
        (False, 0) if gap is not None or tiles_differ else _upper_tiles_agree(store, tops)
    )
    if upper_agree:
        # Every stored node equals the hash of its stored children: the stored nodes are the
        # tree of the stored leaves, and the roots come straight from them.
        report.nodes += upper_nodes
        frontier = _frontier_from_nodes(store, head.size)
        for size in sorted(s for s in targets.by_size if s <= head.size):
            _check_roots(report, targets.by_size.pop(size), _root_from_nodes(store, size))
    else:
        report.nodes = 0
        tree = _TreePass(store, targets, report)
        for leaves in store.leaf_chunks(0, head.size):
            tree.add(leaves)
        tree.finish()
        frontier = tree.frontier
        located.extend(tree.node_problems(explained))
    located.sort(key=lambda p: p.index if p.index is not None else -1)
    report.problems.extend(located)

    report.entries = frontier.size if gap is None else gap
    report.signatures, report.unknown_signers = keys.verified, keys.unknown
    report.root = frontier.root()
    if observer is not None:
        observer(frontier.size, head.size)

    for name, message, bad_index in derived:
        report.problems.append(Problem(name, message, bad_index))
    expected_tiles = tiles.tile_lengths(frontier.size)
    if tile_count != len(expected_tiles):
        report.problems.append(
            Problem(
                "tree tiles",
                f"{tile_count} stored, but a tree of {frontier.size} entries has "
                f"{len(expected_tiles)}",
            )
        )
    if head.size != frontier.size:
        report.problems.append(
            Problem(
                "tree head",
                f"says size {head.size} but {frontier.size} entries are stored",
                min(head.size, frontier.size),
            )
        )
    elif head.root != report.root or head.frontier != frontier.to_bytes():
        report.problems.append(Problem("tree head", "root does not match the recomputed tree"))
    if frontier.size in targets.by_size:  # a checkpoint of size 0
        _check_roots(report, targets.by_size.pop(frontier.size), frontier.root())
    for size, waiting in sorted(targets.by_size.items()):
        for label, _ in waiting:
            report.problems.append(
                Problem(
                    label,
                    f"is for size {size} but the ledger holds only {frontier.size} entries: "
                    "the ledger was rolled back or truncated",
                    frontier.size,
                )
            )
    return report


def _subtree_hashes(store: LedgerStore, size: int) -> list[bytes]:
    """The perfect subtrees of the first ``size`` leaves, left to right, from stored nodes."""
    keys = merkle.perfect_subtrees(0, size)
    got = store.nodes(keys)
    return [got[k] for k in keys]


def _frontier_from_nodes(store: LedgerStore, size: int) -> Frontier:
    return Frontier(size, _subtree_hashes(store, size) if size else [])


def _root_from_nodes(store: LedgerStore, size: int) -> bytes:
    return merkle.fold(_subtree_hashes(store, size)) if size else merkle.EMPTY_ROOT


class _TreePass:
    """The tree rebuilt from the stored leaf hashes, compared tile by tile with storage."""

    def __init__(self, store: LedgerStore, targets: _Targets, report: VerificationReport):
        self.store = store
        self.targets = targets
        self.report = report
        self.frontier = Frontier.empty()
        self.pending: dict[int, bytearray] = {}
        """Computed tile contents not compared yet, by tile key."""
        self.mismatches: list[tuple[int, int, int, int, str]] = []
        """(level, index, first leaf, last leaf, "wrong" | "missing") of stored nodes."""
        self.tile_notes: list[Problem] = []
        self.stopped = False

    def add(self, leaves: Sequence[tuple[int, bytes]]) -> None:
        """The next stored leaf hashes ``(index, hash)``; stops for good at a missing index."""
        frontier, targets = self.frontier, self.targets.by_size
        if self.stopped or not leaves:
            return
        first = leaves[0][0]
        if first != frontier.size or leaves[-1][0] != first + len(leaves) - 1:
            ok = 0
            while ok < len(leaves) and leaves[ok][0] == first + ok == frontier.size + ok:
                ok += 1
            self.stopped = True
            leaves = leaves[:ok]
        hashes = [h for _, h in leaves]
        end = frontier.size + len(hashes)
        # Roots are needed at checkpoint sizes inside this chunk: extend up to each in turn.
        cuts = sorted(s - frontier.size for s in targets if frontier.size < s <= end)
        done = 0
        for cut in [*cuts, len(hashes)]:
            for key, part in tiles.pack(frontier.extend(hashes[done:cut])):
                self.pending.setdefault(key, bytearray()).extend(part)
            done = cut
            if frontier.size in targets:
                _check_roots(self.report, targets.pop(frontier.size), frontier.root())
        if len(self.pending) > 64:
            self.compare(final=False)

    def finish(self) -> None:
        self.compare(final=True)

    def compare(self, *, final: bool) -> None:
        """Compare every full computed tile (and, at the end, the partial ones) with storage."""
        ready = {
            k: bytes(v) for k, v in self.pending.items() if final or len(v) == tiles.TILE_BYTES
        }
        if not ready:
            return
        by_level: dict[int, list[int]] = {}
        for key in ready:
            by_level.setdefault(tiles.split_tile_key(key)[0], []).append(key)
        for keys in by_level.values():
            stored = self.store.tiles(min(keys), max(keys) + 1)
            for key in keys:
                self._compare_tile(key, ready[key], stored.get(key))
                del self.pending[key]

    def _compare_tile(self, key: int, computed: bytes, stored: bytes | None) -> None:
        self.report.nodes += len(computed) // 32
        if stored == computed:
            return
        for slot in range(len(computed) // 32):
            offset = slot * 32
            got = (
                None
                if stored is None or len(stored) < offset + 32
                else stored[offset : offset + 32]
            )
            if got != computed[offset : offset + 32]:
                level, index = tiles.node_at(key, slot)
                state = "missing" if got is None else "wrong"
                first, last = index << level, ((index + 1) << level) - 1
                self.mismatches.append((level, index, first, last, state))
        if stored is not None and len(stored) > len(computed):
            first, _ = tiles.base_range(key)
            tile_level, tile_index = tiles.split_tile_key(key)
            self.tile_notes.append(
                Problem(
                    f"tree tile level {tile_level} index {tile_index}",
                    f"holds {len(stored) // 32} hashes, but the tree has {len(computed) // 32} "
                    "there",
                    first,
                )
            )

    def node_problems(self, explained: list[int]) -> list[Problem]:
        """Node mismatches, lowest first, leaving out any a lower reported place explains: a
        node above a changed entry or node is bound to differ too."""
        out: list[Problem] = list(self.tile_notes)
        for level, index, first, last, state in sorted(self.mismatches):
            at = bisect.bisect_left(explained, first)
            if at < len(explained) and explained[at] <= last:
                continue
            bisect.insort(explained, first)
            out.append(
                Problem(
                    f"tree node level {level} index {index}",
                    f"{state}: does not match the hash of entries {first}..{last}",
                    first,
                )
            )
        return out


def _check_roots(
    report: VerificationReport, waiting: list[tuple[str, Checkpoint]], root: bytes
) -> None:
    for label, checkpoint in waiting:
        if checkpoint.root_hash != root:
            report.problems.append(
                Problem(
                    label,
                    f"signed root differs from the ledger's root at size {checkpoint.size}: "
                    "the ledger was changed or forked after it was signed",
                )
            )
