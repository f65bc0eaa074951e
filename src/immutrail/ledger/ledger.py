"""The ledger service: append, checkpoint, prove, verify. All of immutrail writes here."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from immutrail.crypto.checkpoint import Checkpoint, sign_checkpoint
from immutrail.crypto.note import Ed25519NoteVerifier, NoteSigner, NoteVerifier

from . import hashing, merkle, tiles, witness
from .errors import DuplicateEventError, LedgerInputError, StorageError, VerificationError
from .event import Event, event_time_us, now
from .proofs import ConsistencyProof, InclusionProof, TlogProof
from .storage.interface import EntryFilter, EntryRow, LedgerStore, StoredCheckpoint, TreeHead
from .verify import Problem, ProgressObserver, VerificationReport, verify_store

SignerLoader = Callable[[], NoteSigner]

MAX_BATCH_EVENTS = 1_000_000


@dataclass(slots=True)
class Appended:
    """Where an event went. Not frozen: one is built per appended event, and a frozen
    dataclass's __init__ costs four times as much (measured)."""

    index: int
    id: str
    leaf_hash: bytes


class Ledger:
    """One ledger: its store, its origin (the checkpoint's first line) and its verifier key.

    The signer is loaded only when a checkpoint is signed, so appending and reading need no secret.
    """

    def __init__(
        self,
        store: LedgerStore,
        origin: str,
        vkey: str,
        load_signer: SignerLoader | None = None,
    ):
        self.store = store
        self.origin = origin
        self.vkey = vkey
        self.verifier: NoteVerifier = Ed25519NoteVerifier.from_vkey(vkey)
        self._load_signer = load_signer
        self._signer: NoteSigner | None = None
        self._head_hint: TreeHead | None = None
        """The last tree head this object read or wrote: proofs plan their reads against it."""

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- append --------------------------------------------------------------------------------

    def append(self, event: Event) -> Appended:
        return self.append_batch([event])[0]

    def append_batch(self, events: Sequence[Event]) -> list[Appended]:
        """Append all events in one atomic, durable transaction; return their indices."""
        if not events:
            return []
        if len(events) > MAX_BATCH_EVENTS:
            raise LedgerInputError(f"a batch holds at most {MAX_BATCH_EVENTS} events")
        # Everything that does not depend on the position is computed before taking the lock.
        # Plain tuples and local names: this loop runs once per appended event.
        datas = [e.entry_bytes() for e in events]
        leaves = merkle.split_hashes(hashing.leaf_hashes(datas))
        ids = [e.id for e in events]
        if len(set(ids)) != len(ids):
            raise DuplicateEventError("the batch holds the same event id twice")
        stamps = [event_time_us(e.time) for e in events]
        try:
            with self.store.writer() as writer:
                head = writer.head()
                frontier = merkle.Frontier.from_bytes(head.size, head.frontier)
                if frontier.root() != head.root:
                    raise StorageError("the stored tree head is inconsistent; run `ledger verify`")
                start = head.size
                rows = [
                    (start + i, e.id, e.type, e.actor, e.subject, stamp, data, leaf)
                    for i, (e, stamp, data, leaf) in enumerate(
                        zip(events, stamps, datas, leaves, strict=True)
                    )
                ]
                tile_appends = tiles.pack(frontier.extend(leaves))
                new_head = TreeHead(frontier.size, frontier.root(), frontier.to_bytes())
                writer.insert(rows, tile_appends, new_head)
        except DuplicateEventError as exc:
            # The unique index refused the batch and nothing was written; name the event.
            known = self.store.existing_ids(ids)
            if known:
                raise DuplicateEventError(
                    f"the ledger already holds event {sorted(known)[0]}"
                ) from exc
            raise
        self._head_hint = new_head
        return [
            Appended(start + i, event_id, leaf)
            for i, (event_id, leaf) in enumerate(zip(ids, leaves, strict=True))
        ]

    # -- read ----------------------------------------------------------------------------------

    def head(self) -> TreeHead:
        return self.store.head()

    def entry(self, index: int) -> EntryRow:
        size = self.store.head().size
        if not 0 <= index < size:
            raise LedgerInputError(
                f"index {index} is out of range: the ledger holds {size} entries"
            )
        row = self.store.entry(index)
        if row is None:
            raise StorageError(f"entry {index} is missing from storage; run `ledger verify`")
        return row

    def resolve(self, ref: str) -> int:
        """An entry by decimal index or by event id."""
        if ref.isdigit():
            return int(ref)
        index = self.store.index_of(ref)
        if index is None:
            raise LedgerInputError(f"no event with id {ref!r} in the ledger")
        return index

    def entries(self, flt: EntryFilter) -> Iterator[EntryRow]:
        return self.store.query(flt)

    # -- checkpoints ---------------------------------------------------------------------------

    def signer(self) -> NoteSigner:
        if self._signer is None:
            if self._load_signer is None:
                raise LedgerInputError("this ledger was opened without its signing key")
            self._signer = self._load_signer()
            if self._signer.vkey != self.vkey:
                raise VerificationError(
                    "the home's ledger key is not the key this ledger was created with"
                )
        return self._signer

    def checkpoint(self, publish: Path | None = None) -> StoredCheckpoint:
        """Sign the current tree head (once per size) and optionally publish it to a witness."""
        if publish is not None:
            witness.prepare(publish, self.vkey)  # a folder that cannot witness changes nothing
        head = self.store.head()
        note = sign_checkpoint(Checkpoint(self.origin, head.size, head.root), self.signer())
        # Ed25519 is deterministic: the note a witness holds for this size, if it is this ledger's.
        already_held = publish is not None and witness.held(publish, note, head.size)
        stored = self.store.add_checkpoint(StoredCheckpoint(head.size, head.root, note, now()))
        if stored.root != head.root:
            raise VerificationError(
                f"a checkpoint of size {head.size} with another root is already stored"
            )
        if publish is not None and not already_held:
            witness.add(publish, stored.note, stored.size)
        return stored

    def checkpoints(self) -> list[StoredCheckpoint]:
        return self.store.checkpoints()

    # -- proofs --------------------------------------------------------------------------------

    def _known_head(self, at_least: int) -> TreeHead:
        """The last head this ledger saw, or a fresh one when that is smaller than ``at_least``."""
        head = self._head_hint
        if head is None or head.size < at_least:
            head = self._head_hint = self.store.head()
        return head

    def _proof_hashes(
        self,
        size: int | None,
        at_least: int,
        make_ranges: Callable[[int], list[tuple[int, int]]],
    ) -> tuple[int, list[bytes]]:
        """The tree size (``size``, or the current one) and the hashes of ``make_ranges(size)``.

        The head read and the hashes are one statement, planned against the last head seen: one
        storage round trip unless the ledger grew since (PostgreSQL's round trips are most of
        a proof's time). The root at the head's own size comes from the head.
        """
        head = self._known_head(max(at_least, size or 0))
        for attempt in range(2):
            tree_size = head.size if size is None else size
            if not 0 <= tree_size <= head.size:
                raise LedgerInputError(
                    f"size {tree_size} is out of range: the ledger holds {head.size}"
                )
            ranges = make_ranges(tree_size)
            plans = {r: merkle.perfect_subtrees(*r) for r in ranges if r != (0, head.size)}
            current, got = self.store.head_and_nodes(sorted({k for p in plans.values() for k in p}))
            self._head_hint = current
            if size is None and current.size != head.size and attempt == 0:
                head = current  # the ledger grew: prove against the size it has now
                continue
            missing = sorted({k for p in plans.values() for k in p if k not in got})
            if missing:
                raise StorageError(
                    f"tree nodes missing from storage: {missing[:5]}; run `ledger verify`"
                )
            return tree_size, [
                head.root if r == (0, head.size) else merkle.fold([got[k] for k in plans[r]])
                for r in ranges
            ]
        raise AssertionError("unreachable: the second attempt always returns")

    def root(self, size: int | None = None) -> bytes:
        _, hashes = self._proof_hashes(size, 0, lambda n: [(0, n)] if n else [])
        return hashes[0] if hashes else merkle.EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        if index < 0:
            raise LedgerInputError(f"index {index} is not in the ledger")

        def ranges(tree_size: int) -> list[tuple[int, int]]:
            if not index < tree_size:
                raise LedgerInputError(f"index {index} is not in a tree of size {tree_size}")
            return [(index, index + 1), (0, tree_size), *merkle.inclusion_ranges(index, tree_size)]

        tree_size, (leaf, root, *hashes) = self._proof_hashes(size, index + 1, ranges)
        proof = InclusionProof(index, tree_size, leaf, root, tuple(hashes))
        try:  # a self-check: damaged storage yields an error here, never a wrong proof
            merkle.verify_inclusion(index, tree_size, leaf, proof.proof, root)
        except merkle.ProofError as exc:
            raise StorageError(f"stored tree nodes disagree ({exc}); run `ledger verify`") from exc
        return proof

    def consistency_proof(self, old_size: int, new_size: int) -> ConsistencyProof:
        if not 0 <= old_size <= new_size:
            raise LedgerInputError(f"old size {old_size} must be between 0 and {new_size}")
        if old_size == 0:
            return ConsistencyProof(0, new_size, merkle.EMPTY_ROOT, self.root(new_size), ())

        def ranges(tree_size: int) -> list[tuple[int, int]]:
            path = merkle.consistency_ranges(old_size, tree_size)
            return [(0, old_size), (0, tree_size), *path]

        new, (old_root, new_root, *hashes) = self._proof_hashes(new_size, new_size, ranges)
        proof = ConsistencyProof(old_size, new, old_root, new_root, tuple(hashes))
        try:
            merkle.verify_consistency(old_size, new, old_root, new_root, proof.proof)
        except merkle.ProofError as exc:
            raise StorageError(f"stored tree nodes disagree ({exc}); run `ledger verify`") from exc
        return proof

    def tlog_proof(self, index: int, size: int | None = None) -> TlogProof:
        """The C2SP tlog-proof of an entry against a stored checkpoint (``size`` or the latest)."""
        stored = self.store.checkpoints()
        if size is not None:
            chosen = next((c for c in stored if c.size == size), None)
            if chosen is None:
                raise LedgerInputError(f"no checkpoint of size {size}; sign one with `checkpoint`")
        else:
            chosen = stored[-1] if stored else None
            if chosen is None or chosen.size <= index:
                raise LedgerInputError(
                    f"no checkpoint covers index {index} yet; sign one with `ledger checkpoint`"
                )
        proof = self.inclusion_proof(index, chosen.size)
        if proof.root != chosen.root:
            raise VerificationError(f"the checkpoint of size {chosen.size} disagrees with the tree")
        return TlogProof(index, proof.proof, chosen.note)

    # -- verification --------------------------------------------------------------------------

    def verify(
        self,
        witnesses: Sequence[Path] = (),
        observer: ProgressObserver | None = None,
        *,
        workers: int | None = None,
        entry_format: bool = True,
    ) -> VerificationReport:
        """Verify everything; witness folders must hold checkpoints this ledger still extends.

        ``workers``: processes checking entry ranges (None: one per core for large ledgers).
        ``entry_format=False``: integrity only (see :func:`verify_store`).
        """
        held: list[witness.WitnessedCheckpoint] = []
        problems: list[Problem] = []
        for folder in witnesses:
            vkey, notes = witness.load(folder)
            if vkey is not None and vkey != self.vkey:
                problems.append(
                    Problem(
                        f"witness {folder}",
                        f"trusts the ledger key {vkey}, but this ledger's key is {self.vkey}: "
                        "the ledger was replaced",
                    )
                )
            held.extend(notes)
        report = verify_store(
            self.store,
            self.verifier,
            self.origin,
            held,
            observer,
            workers=workers,
            entry_format=entry_format,
        )
        report.problems[:0] = problems
        return report
