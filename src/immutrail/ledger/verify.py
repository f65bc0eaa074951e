"""Full verification: recompute every entry hash and the whole tree, and check every checkpoint.

The stored leaf hashes build the tree (so a tampered node is named as itself, not as noise above a
tampered entry); each entry's bytes are checked against its stored leaf hash separately. Roots are
taken at every checkpoint size as the stream passes it, so checkpoints cost no extra reads.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from immutrail.crypto.checkpoint import Checkpoint, open_checkpoint
from immutrail.crypto.errors import CryptoError
from immutrail.crypto.keys import PublicKey, key_id, load_public_key_pem
from immutrail.crypto.note import NoteVerifier

from .errors import EventFormatError
from .event import Event, parse_entry, time_us, verify_event_signature
from .merkle import Frontier, leaf_hash
from .storage.interface import EntryRow, LedgerStore
from .witness import WitnessedCheckpoint

ProgressObserver = Callable[[int, int], None]
"""Called with (entries verified, entries in all) as verification goes."""

MAX_ENTRY_PROBLEMS = 20
_NODE_CHECK_EVERY = 8192


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
    try:
        event = parse_entry(row.data)
    except EventFormatError as exc:
        return str(exc)
    if (event.id, event.type, event.actor, event.subject) != (
        row.id,
        row.type,
        row.actor,
        row.subject,
    ):
        return "the indexed columns (id, type, actor, subject) disagree with the entry bytes"
    if time_us(event.time) != row.time_us:
        return "the indexed time disagrees with the entry bytes"
    if keys is not None:
        return keys.check(event) or keys.learn(event)
    return None


class _Targets:
    """Checkpoints awaiting the root at their size."""

    def __init__(self) -> None:
        self.by_size: dict[int, list[tuple[str, Checkpoint]]] = {}

    def add(self, label: str, checkpoint: Checkpoint) -> None:
        self.by_size.setdefault(checkpoint.size, []).append((label, checkpoint))


def verify_store(
    store: LedgerStore,
    verifier: NoteVerifier,
    origin: str,
    witnessed: Iterable[WitnessedCheckpoint] = (),
    observer: ProgressObserver | None = None,
) -> VerificationReport:
    report = VerificationReport()
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

    frontier = Frontier.empty()
    keys = KeyRing()
    pending: dict[int, tuple[int, list[bytes]]] = {}
    entry_problems = 0
    # Leaf indices a reported problem already explains: a node above one of them is bound to
    # differ too, so only the lowest bad place on each path is reported.
    explained: list[int] = []

    def is_explained(first: int, last: int) -> bool:
        at = bisect.bisect_left(explained, first)
        return at < len(explained) and explained[at] <= last

    def check_nodes() -> None:
        for level, (start, hashes) in sorted(pending.items()):
            stored_nodes = store.node_range(level, start, start + len(hashes))
            for offset, computed in enumerate(hashes):
                index = start + offset
                report.nodes += 1
                if stored_nodes.get(index) != computed:
                    first, last = index << level, ((index + 1) << level) - 1
                    if is_explained(first, last):
                        continue
                    bisect.insort(explained, first)
                    state = "missing" if index not in stored_nodes else "wrong"
                    report.problems.append(
                        Problem(
                            f"tree node level {level} index {index}",
                            f"{state}: does not match the hash of entries {first}..{last}",
                            first,
                        )
                    )
        pending.clear()

    for expected, row in enumerate(store.entries()):
        if row.index != expected:
            report.problems.append(
                Problem(
                    f"entry {expected}", f"missing (the next stored entry is {row.index})", expected
                )
            )
            break
        if entry_problems < MAX_ENTRY_PROBLEMS:
            why = None
            if leaf_hash(row.data) != row.leaf_hash:
                why = "its bytes do not match its stored leaf hash"
            else:
                why = check_row(row, keys)
            if why is not None:
                entry_problems += 1
                bisect.insort(explained, row.index)
                report.problems.append(Problem(f"entry {row.index}", why, row.index))
        for level, index, h in frontier.append(row.leaf_hash):
            _, hashes = pending.setdefault(level, (index, []))
            hashes.append(h)
        if frontier.size in targets.by_size:
            _check_roots(report, targets.by_size.pop(frontier.size), frontier.root())
        if frontier.size % _NODE_CHECK_EVERY == 0:
            check_nodes()
            if observer is not None:
                observer(frontier.size, head.size)
    check_nodes()
    report.entries = frontier.size
    report.signatures, report.unknown_signers = keys.verified, keys.unknown
    report.root = frontier.root()
    if observer is not None:
        observer(frontier.size, head.size)

    for message, bad_index in store.check_subject_index():
        report.problems.append(Problem("subject index", message, bad_index))
    expected_nodes = frontier.size - frontier.size.bit_count()
    stored_count = store.count_nodes()
    if stored_count != expected_nodes:
        report.problems.append(
            Problem(
                "tree nodes",
                f"{stored_count} stored, but a tree of {frontier.size} entries has "
                f"{expected_nodes}",
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
