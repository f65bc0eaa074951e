"""The ledger service: append, checkpoint, prove, verify. All of immutrail writes here."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from immutrail.crypto.checkpoint import Checkpoint, sign_checkpoint
from immutrail.crypto.note import Ed25519NoteVerifier, NoteSigner, NoteVerifier

from . import merkle, witness
from .errors import DuplicateEventError, LedgerInputError, StorageError, VerificationError
from .event import Event, now, time_us
from .proofs import ConsistencyProof, InclusionProof, TlogProof
from .storage.interface import EntryFilter, EntryRow, LedgerStore, StoredCheckpoint, TreeHead
from .verify import Problem, ProgressObserver, VerificationReport, verify_store

SignerLoader = Callable[[], NoteSigner]

MAX_BATCH_EVENTS = 1_000_000


@dataclass(frozen=True)
class Appended:
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

    def close(self) -> None:
        self.store.close()

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
        datas = [e.entry_bytes() for e in events]
        leaves = [merkle.leaf_hash(d) for d in datas]
        times = [time_us(e.time) for e in events]
        ids = [e.id for e in events]
        if len(set(ids)) != len(ids):
            raise DuplicateEventError("the batch holds the same event id twice")
        known = self.store.existing_ids(ids)
        if known:
            raise DuplicateEventError(f"the ledger already holds event {sorted(known)[0]}")
        with self.store.writer() as writer:
            head = writer.head()
            frontier = merkle.Frontier.from_bytes(head.size, head.frontier)
            if frontier.root() != head.root:
                raise StorageError("the stored tree head is inconsistent; run `ledger verify`")
            start = head.size
            rows, nodes = [], []
            for offset, (event, data, leaf, stamp) in enumerate(
                zip(events, datas, leaves, times, strict=True)
            ):
                nodes.extend(frontier.append(leaf))
                rows.append(
                    EntryRow(
                        start + offset,
                        event.id,
                        event.type,
                        event.actor,
                        event.subject,
                        stamp,
                        data,
                        leaf,
                    )
                )
            writer.insert(
                rows, nodes, TreeHead(frontier.size, frontier.root(), frontier.to_bytes())
            )
        return [
            Appended(start + i, e.id, leaf)
            for i, (e, leaf) in enumerate(zip(events, leaves, strict=True))
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
        head = self.store.head()
        note = sign_checkpoint(Checkpoint(self.origin, head.size, head.root), self.signer())
        stored = self.store.add_checkpoint(StoredCheckpoint(head.size, head.root, note, now()))
        if stored.root != head.root:
            raise VerificationError(
                f"a checkpoint of size {head.size} with another root is already stored"
            )
        if publish is not None:
            witness.publish(publish, stored.note, stored.size, self.vkey)
        return stored

    def checkpoints(self) -> list[StoredCheckpoint]:
        return self.store.checkpoints()

    # -- proofs --------------------------------------------------------------------------------

    def _head_and_size(self, size: int | None) -> tuple[TreeHead, int]:
        head = self.store.head()
        if size is None:
            return head, head.size
        if not 0 <= size <= head.size:
            raise LedgerInputError(f"size {size} is out of range: the ledger holds {head.size}")
        return head, size

    def _hashes(self, head: TreeHead, ranges: list[tuple[int, int]]) -> list[bytes]:
        """Hashes of leaf ranges in one storage round trip; the current root from the head."""
        wanted = [r for r in ranges if r != (0, head.size)]
        try:
            got = iter(merkle.range_hashes(wanted, self.store.nodes))
        except LookupError as exc:
            raise StorageError(f"{exc}; run `ledger verify`") from exc
        return [head.root if r == (0, head.size) else next(got) for r in ranges]

    def root(self, size: int | None = None) -> bytes:
        head, tree_size = self._head_and_size(size)
        return self._hashes(head, [(0, tree_size)])[0] if tree_size else merkle.EMPTY_ROOT

    def inclusion_proof(self, index: int, size: int | None = None) -> InclusionProof:
        head, tree_size = self._head_and_size(size)
        if not 0 <= index < tree_size:
            raise LedgerInputError(f"index {index} is not in a tree of size {tree_size}")
        path = merkle.inclusion_ranges(index, tree_size)
        leaf, root, *hashes = self._hashes(head, [(index, index + 1), (0, tree_size), *path])
        proof = InclusionProof(index, tree_size, leaf, root, tuple(hashes))
        try:  # a self-check: damaged storage yields an error here, never a wrong proof
            merkle.verify_inclusion(index, tree_size, leaf, proof.proof, root)
        except merkle.ProofError as exc:
            raise StorageError(f"stored tree nodes disagree ({exc}); run `ledger verify`") from exc
        return proof

    def consistency_proof(self, old_size: int, new_size: int) -> ConsistencyProof:
        head, new = self._head_and_size(new_size)
        if not 0 <= old_size <= new:
            raise LedgerInputError(f"old size {old_size} must be between 0 and {new}")
        if old_size == 0:
            return ConsistencyProof(0, new, merkle.EMPTY_ROOT, self.root(new), ())
        path = merkle.consistency_ranges(old_size, new)
        old_root, new_root, *hashes = self._hashes(head, [(0, old_size), (0, new), *path])
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
    ) -> VerificationReport:
        """Verify everything; witness folders must hold checkpoints this ledger still extends."""
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
        report = verify_store(self.store, self.verifier, self.origin, held, observer)
        report.problems[:0] = problems
        return report
