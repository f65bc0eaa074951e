"""Invariant 2: any change to any stored byte of the ledger is detected, and named.

A SQLite ledger of 300 events with checkpoints at sizes 100, 200 and 300 is built once. Each case
then works on a fresh copy of its file: an attacker with write access to the database drops the
append-only triggers and changes ONE byte of an entry's bytes or columns, a tree node, the tree
head or a signed checkpoint. ``verify()`` must fail and some problem must name that very place.
The cases are drawn from ``random.Random(seed)`` with fixed seeds, so a failure is reproducible
from its test id. A smaller run does the same on PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import random
import re
import shutil
import sqlite3
import string
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from immutrail.ledger import merkle, tiles
from immutrail.ledger.event import Event, event_time_us
from immutrail.ledger.home import init_ledger, open_ledger
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.verify import VerificationReport

SIZE = 300
CHECKPOINT_SIZES = (100, 200, SIZE)
SEEDS = (11, 2024, 90210)
CASES_PER_SEED = 50
ORIGIN = "tamper.test.immutrail.local/ledger"

SQLITE_TRIGGERS = (
    "entries_no_update",
    "entries_no_delete",
    "tiles_only_grow",
    "tiles_no_delete",
    "checkpoints_no_update",
    "checkpoints_no_delete",
)

# What an attacker can change, with a weight: entry bytes and tree nodes are most of the database.
KINDS: dict[str, int] = {
    "entry.data": 30,
    "entry.leaf_hash": 15,
    "entry.id": 5,
    "entry.type": 4,
    "entry.actor": 4,
    "entry.subject": 4,
    "entry.time_us": 4,
    "tile.hashes": 20,
    "tree_head.root": 4,
    "tree_head.frontier": 4,
    "checkpoint.note": 12,
}
TEXT_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/=:.-_ \n"


def make_event(n: int) -> Event:
    return Event.create(
        ["artifact.built", "scan.completed", "deploy.completed", "approval.granted"][n % 4],
        ["builder:ci", "user:alice", "user:bob@example.com", "scanner:trivy"][n % 3],
        f"sha256:{n:064x}",
        {"n": n, "commit": f"{n * 7919:040x}", "env": "prod", "note": "caf\u00e9 \u2713" * (n % 3)},
    )


def build_ledger(home: Path, db: str, size: int, checkpoint_sizes: tuple[int, ...]) -> None:
    """Singles and batches (so both append paths wrote the tree), a checkpoint at each size."""
    rng = random.Random(7)
    led, created = init_ledger(home, db, origin=ORIGIN)
    assert created
    try:
        n = 0
        for target in checkpoint_sizes:
            while n < target:
                k = min(rng.choice([1, 1, 1, 3, 10]), target - n)
                if k == 1:
                    led.append(make_event(n))
                else:
                    led.append_batch([make_event(n + i) for i in range(k)])
                n += k
            assert led.checkpoint().size == target
        assert led.head().size == size
        assert led.verify().ok
    finally:
        led.close()


# -- the tamper cases, drawn from fixed seeds --------------------------------------------------


@dataclass(frozen=True)
class Case:
    kind: str
    row: int  # taken modulo the number of candidate rows
    pos: int  # taken modulo the length of the value
    delta: int  # 1..255: the byte is XORed with it (or picks the replacement character)

    def __str__(self) -> str:
        return f"{self.kind}-r{self.row}-p{self.pos}-d{self.delta}"


def draw_cases(seed: int, count: int) -> list[Case]:
    rng = random.Random(seed)
    kinds, weights = list(KINDS), list(KINDS.values())
    return [
        Case(
            rng.choices(kinds, weights)[0],
            rng.randrange(1 << 30),
            rng.randrange(1 << 30),
            rng.randrange(1, 256),
        )
        for _ in range(count)
    ]


ALL_CASES = [
    pytest.param(case, id=f"seed{seed}-{i:02d}-{case}")
    for seed in SEEDS
    for i, case in enumerate(draw_cases(seed, CASES_PER_SEED))
]


# -- changing one byte ---------------------------------------------------------------------------


def flip_byte(value: bytes, case: Case) -> bytes:
    pos = case.pos % len(value)
    return value[:pos] + bytes([value[pos] ^ case.delta]) + value[pos + 1 :]


def flip_text(value: str, case: Case) -> str:
    """One byte of the UTF-8 text changed, keeping it valid UTF-8: an ASCII byte replaced."""
    raw = value.encode()
    ascii_positions = [i for i, b in enumerate(raw) if b < 0x80]
    pos = ascii_positions[case.pos % len(ascii_positions)]
    choices = [c for c in TEXT_ALPHABET if ord(c) != raw[pos]]
    new = choices[case.delta % len(choices)].encode()
    return (raw[:pos] + new + raw[pos + 1 :]).decode()


def flip_int(value: int, case: Case) -> int:
    raw = flip_byte(value.to_bytes(8, "big", signed=True), case)
    return int.from_bytes(raw, "big", signed=True)


@dataclass(frozen=True)
class Expect:
    """Where the change was made, and how a problem naming it looks."""

    description: str
    matches: Callable[[Any], bool]
    index: int | None = None


class Db:
    """A minimal adapter so the same tamper code drives SQLite and PostgreSQL."""

    def __init__(self, execute: Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]], mark: str):
        self.execute = execute
        self.mark = mark  # the placeholder: ? or %s

    def q(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        return self.execute(sql.replace("?", self.mark), args)


def apply_case(db: Db, case: Case) -> tuple[Expect, Callable[[], None]]:
    """Change one byte as ``case`` says; return what must be reported and how to undo it."""
    kind = case.kind
    table, column = kind.split(".")
    if table == "entry":
        (count,) = db.q("SELECT count(*) FROM entries")[0]
        idx = case.row % count
        (old,) = db.q(f"SELECT {column} FROM entries WHERE idx = ?", idx)[0]
        if isinstance(old, int):
            new: Any = flip_int(old, case)
        elif isinstance(old, str):
            new = flip_text(old, case)
        else:
            new = flip_byte(bytes(old), case)
        assert new != old
        db.q(f"UPDATE entries SET {column} = ? WHERE idx = ?", new, idx)
        expect = Expect(
            f"{column} of entry {idx}",
            lambda p, idx=idx: p.where == f"entry {idx}" and p.index == idx,
            idx,
        )
        return expect, lambda: db.q(f"UPDATE entries SET {column} = ? WHERE idx = ?", old, idx)
    if table == "tile":
        (count,) = db.q("SELECT count(*) FROM tiles")[0]
        k, old = db.q("SELECT k, hashes FROM tiles ORDER BY k LIMIT 1 OFFSET ?", case.row % count)[
            0
        ]
        new = flip_byte(bytes(old), case)
        db.q("UPDATE tiles SET hashes = ? WHERE k = ?", new, k)
        # The changed byte sits in one hash slot of the tile: that tree node must be named.
        level, index = tiles.node_at(k, (case.pos % len(old)) // 32)
        named = re.compile(rf"\blevel {level}\b.*\bindex {index}\b")
        expect = Expect(
            f"tree node level {level} index {index}",
            lambda p, named=named: p.where.startswith("tree node") and bool(named.search(p.where)),
            index << level,
        )
        return expect, lambda: db.q("UPDATE tiles SET hashes = ? WHERE k = ?", old, k)
    if table == "tree_head":
        (old,) = db.q(f"SELECT {column} FROM tree_head WHERE one = 1")[0]
        new = flip_byte(bytes(old), case)
        db.q(f"UPDATE tree_head SET {column} = ? WHERE one = 1", new)
        expect = Expect(f"tree head {column}", lambda p: p.where == "tree head")
        return expect, lambda: db.q(f"UPDATE tree_head SET {column} = ? WHERE one = 1", old)
    if table == "checkpoint":
        rows = db.q("SELECT size, note FROM checkpoints ORDER BY size")
        size, old = rows[case.row % len(rows)]
        new = flip_text(old, case)
        assert new != old
        db.q("UPDATE checkpoints SET note = ? WHERE size = ?", new, size)
        expect = Expect(
            f"note of the checkpoint of size {size}",
            lambda p, size=size: p.where == f"checkpoint of size {size}",
        )
        return expect, lambda: db.q("UPDATE checkpoints SET note = ? WHERE size = ?", old, size)
    raise AssertionError(kind)


def describe(report: VerificationReport) -> str:
    return "\n".join(f"  {p.where} [index {p.index}]: {p.message}" for p in report.problems)


def assert_detected(report: VerificationReport, expect: Expect) -> None:
    assert not report.ok, f"changing one byte of {expect.description} went undetected"
    assert any(expect.matches(p) for p in report.problems), (
        f"changing {expect.description} was detected, but no problem names it:\n" + describe(report)
    )


# -- SQLite --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pristine:
    home: Path
    db: Path
    root: Path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Pristine:
    root = tmp_path_factory.mktemp("tamper")
    db = root / "pristine.db"
    build_ledger(root / "home", f"sqlite:///{db}", SIZE, CHECKPOINT_SIZES)
    # Closed cleanly, so the WAL was folded into the main file: one file is the whole ledger.
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    return Pristine(root / "home", db, root)


@pytest.fixture
def copy_db(pristine: Pristine, tmp_path: Path) -> Path:
    target = tmp_path / "ledger.db"
    shutil.copyfile(pristine.db, target)
    return target


def sqlite_db(conn: sqlite3.Connection) -> Db:
    return Db(lambda sql, args: conn.execute(sql, args).fetchall(), "?")


@contextmanager
def sqlite_attacker(path: Path) -> Iterator[Db]:
    """Write access to the file, as an attacker has it: the append-only triggers dropped first."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for trigger in SQLITE_TRIGGERS:
            conn.execute(f"DROP TRIGGER {trigger}")
        yield sqlite_db(conn)
    finally:
        conn.close()


def open_copy(pristine: Pristine, path: Path) -> Ledger:
    return open_ledger(pristine.home, f"sqlite:///{path}")


def verify_copy(pristine: Pristine, path: Path, *, entry_format: bool = True) -> VerificationReport:
    led = open_copy(pristine, path)
    try:
        return led.verify(entry_format=entry_format)
    finally:
        led.close()


def test_the_cases_cover_every_kind_of_stored_value() -> None:
    drawn = {param.values[0].kind for param in ALL_CASES}
    assert drawn == set(KINDS)
    assert len(ALL_CASES) == len(SEEDS) * CASES_PER_SEED


def test_the_untouched_copy_verifies(pristine: Pristine, copy_db: Path) -> None:
    report = verify_copy(pristine, copy_db)
    assert report.ok, describe(report)
    assert (report.entries, report.checkpoints) == (SIZE, len(CHECKPOINT_SIZES))
    assert report.nodes == SIZE - SIZE.bit_count()


@pytest.mark.parametrize("case", ALL_CASES)
def test_one_changed_byte_is_detected_and_named(
    pristine: Pristine, copy_db: Path, case: Case
) -> None:
    with sqlite_attacker(copy_db) as db:
        expect, _ = apply_case(db, case)
    assert_detected(verify_copy(pristine, copy_db), expect)


@pytest.mark.parametrize("column", ["data", "leaf_hash", "id", "time_us"])
def test_first_bad_index_is_the_changed_entry(
    pristine: Pristine, copy_db: Path, column: str
) -> None:
    """The index an auditor is shown (CLI `first_bad_index`) is the entry that was changed."""
    idx = 201
    with sqlite_attacker(copy_db) as db:
        expect, _ = apply_case(db, Case(f"entry.{column}", idx, 3, 0x20))
    report = verify_copy(pristine, copy_db)
    assert_detected(report, expect)
    assert report.first_bad_index == idx, describe(report)


@pytest.mark.parametrize("entry_format", [True, False], ids=["full", "integrity"])
def test_a_changed_tree_node_is_named_as_itself_only(
    pristine: Pristine, copy_db: Path, entry_format: bool
) -> None:
    """Stored nodes are checked against the tree of stored leaves: no noise elsewhere."""
    with sqlite_attacker(copy_db) as db:
        for level, index in ((1, 0), (3, 17)):
            k, offset = tiles.locate(level, index)
            (old,) = db.q("SELECT hashes FROM tiles WHERE k = ?", k)[0]
            new = old[:offset] + bytes([old[offset] ^ 1]) + old[offset + 1 :]
            db.q("UPDATE tiles SET hashes = ? WHERE k = ?", new, k)
    report = verify_copy(pristine, copy_db, entry_format=entry_format)
    assert sorted(p.where for p in report.problems) == [
        "tree node level 1 index 0",
        "tree node level 3 index 17",
    ], describe(report)
    assert report.first_bad_index == 0
    assert {p.index for p in report.problems} == {0, 17 << 3}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("truncate", "tree node level"),
        ("extend", "tree tile level 0 index 1"),
        ("delete", "tree node level"),
        ("add", "tree tiles"),
    ],
)
def test_a_tile_cut_short_extended_removed_or_added_is_detected(
    pristine: Pristine, copy_db: Path, change: str, named: str
) -> None:
    with sqlite_attacker(copy_db) as db:
        (old,) = db.q("SELECT hashes FROM tiles WHERE k = 0")[0]
        if change == "truncate":
            db.q("UPDATE tiles SET hashes = ? WHERE k = 0", old[:-32])
        elif change == "extend":  # the partial tile: a full one cannot pass the CHECK
            k = tiles.tile_key(0, 1)
            (partial,) = db.q("SELECT hashes FROM tiles WHERE k = ?", k)[0]
            db.q("UPDATE tiles SET hashes = ? WHERE k = ?", partial + old[:32], k)
        elif change == "delete":
            db.q("DELETE FROM tiles WHERE k = 0")
        else:
            db.q("INSERT INTO tiles VALUES (?, ?)", tiles.tile_key(5, 0), old[:64])
    report = verify_copy(pristine, copy_db)
    assert not report.ok
    assert any(p.where.startswith(named) for p in report.problems), describe(report)


@pytest.mark.parametrize("entry_format", [True, False], ids=["full", "integrity"])
def test_verifying_in_worker_processes_finds_the_same_problems(
    pristine: Pristine, copy_db: Path, entry_format: bool
) -> None:
    """The range checks split over processes report exactly what one process reports."""
    from immutrail.crypto.note import Ed25519NoteVerifier
    from immutrail.ledger.verify import verify_store

    with sqlite_attacker(copy_db) as db:
        for case in draw_cases(77, 6):
            apply_case(db, case)
    led = open_copy(pristine, copy_db)
    try:
        verifier = Ed25519NoteVerifier.from_vkey(led.vkey)
        options: dict[str, Any] = {"chunk": 64, "entry_format": entry_format}
        alone = verify_store(led.store, verifier, led.origin, workers=1, **options)
        split = verify_store(led.store, verifier, led.origin, workers=2, **options)
    finally:
        led.close()
    assert not alone.ok
    assert [(p.where, p.message, p.index) for p in split.problems] == [
        (p.where, p.message, p.index) for p in alone.problems
    ]
    assert (split.entries, split.nodes, split.root) == (alone.entries, alone.nodes, alone.root)


@pytest.mark.parametrize("workers", [1, 2])
def test_the_python_loops_find_what_the_c_loops_find(
    pristine: Pristine, copy_db: Path, native_hashing: ModuleType, workers: int
) -> None:
    """Without the C extension, the integrity check reports exactly the same problems."""
    from immutrail.ledger import hashing

    with sqlite_attacker(copy_db) as db:
        for case in draw_cases(78, 8):
            apply_case(db, case)
    with_c = verify_integrity(pristine, copy_db, workers)
    with hashing.python_loops():
        with_python = verify_integrity(pristine, copy_db, workers)
    assert with_c[0], "the changes were found"
    assert with_python == with_c


def verify_integrity(pristine: Pristine, path: Path, workers: int) -> tuple[list[Any], bytes]:
    """The integrity check's problems and root, in ``workers`` processes over small ranges."""
    from immutrail.crypto.note import Ed25519NoteVerifier
    from immutrail.ledger.verify import verify_store

    led = open_copy(pristine, path)
    try:
        verifier = Ed25519NoteVerifier.from_vkey(led.vkey)
        report = verify_store(
            led.store, verifier, led.origin, workers=workers, chunk=64, entry_format=False
        )
    finally:
        led.close()
    return [(p.where, p.message, p.index) for p in report.problems], report.root


# -- the integrity-only check (`ledger verify --integrity-only`) ----------------------------------

# What the integrity check alone must catch: every stored byte except the indexed columns, which
# only the entry format check compares with the entry bytes.
INTEGRITY_CASES = [
    param
    for param in ALL_CASES
    if not param.values[0].kind.startswith("entry.")
    or param.values[0].kind in ("entry.data", "entry.leaf_hash")
]


def test_the_untouched_copy_passes_both_checks_alike(pristine: Pristine, copy_db: Path) -> None:
    full = verify_copy(pristine, copy_db)
    integrity = verify_copy(pristine, copy_db, entry_format=False)
    assert integrity.ok, describe(integrity)
    assert (integrity.entries, integrity.nodes, integrity.root, integrity.checkpoints) == (
        full.entries,
        full.nodes,
        full.root,
        full.checkpoints,
    )
    assert (full.entry_format, integrity.entry_format) == (True, False)


@pytest.mark.parametrize("case", INTEGRITY_CASES)
def test_one_changed_byte_is_detected_and_named_by_the_integrity_check(
    pristine: Pristine, copy_db: Path, case: Case
) -> None:
    with sqlite_attacker(copy_db) as db:
        expect, _ = apply_case(db, case)
    assert_detected(verify_copy(pristine, copy_db, entry_format=False), expect)


@pytest.mark.parametrize("column", ["type", "subject", "time_us"])
def test_indexed_columns_are_compared_by_the_full_check_only(
    pristine: Pristine, copy_db: Path, column: str
) -> None:
    """The documented difference: a changed query column leaves every hash intact."""
    with sqlite_attacker(copy_db) as db:
        expect, _ = apply_case(db, Case(f"entry.{column}", 42, 1, 0x01))
    assert verify_copy(pristine, copy_db, entry_format=False).ok
    assert_detected(verify_copy(pristine, copy_db), expect)


def test_a_non_canonical_entry_committed_with_the_ledger_key_is_caught_by_the_full_check(
    pristine: Pristine, copy_db: Path
) -> None:
    """Whoever holds the ledger key can commit any bytes with a consistent tree and signed
    checkpoint. The full check refuses an entry that is not the canonical form of an event
    (here: one space added); the integrity check proves only that it is the committed one."""
    led = open_copy(pristine, copy_db)
    try:
        event = make_event(SIZE)
        data = event.entry_bytes().replace(b'"actor":', b'"actor": ', 1)
        leaf = merkle.leaf_hash(data)
        with led.store.writer() as writer:
            head = writer.head()
            frontier = merkle.Frontier.from_bytes(head.size, head.frontier)
            stamp = event_time_us(event.time)
            row = (SIZE, event.id, event.type, event.actor, event.subject, stamp, data, leaf)
            completed = tiles.pack(frontier.extend([leaf]))
            writer.insert(
                [row], completed, type(head)(frontier.size, frontier.root(), frontier.to_bytes())
            )
        led.checkpoint()
        integrity = led.verify(entry_format=False)
        full = led.verify()
    finally:
        led.close()
    assert integrity.ok, describe(integrity)
    assert not full.ok
    assert full.first_bad_index == SIZE, describe(full)
    assert "not canonical" in full.problems[0].message, describe(full)


def test_the_signed_root_stored_beside_a_checkpoint_is_checked(
    pristine: Pristine, copy_db: Path
) -> None:
    """`checkpoints.root` is what `tlog_proof` trusts; changing it must not verify as ok."""
    with sqlite_attacker(copy_db) as db:
        (old,) = db.q("SELECT root FROM checkpoints WHERE size = 200")[0]
        db.q("UPDATE checkpoints SET root = ? WHERE size = 200", flip_byte(old, Case("", 0, 4, 1)))
    report = verify_copy(pristine, copy_db)
    assert not report.ok, "a changed checkpoints.root byte went undetected"
    assert any("checkpoint of size 200" in p.where for p in report.problems), describe(report)


def test_a_signature_spelled_differently_in_base64_is_detected(
    pristine: Pristine, copy_db: Path
) -> None:
    """One character of a checkpoint's signature changed so that a lenient base64 decoder still
    reads the same bytes (non-zero padding bits): a changed stored byte all the same."""
    with sqlite_attacker(copy_db) as db:
        (note,) = db.q("SELECT note FROM checkpoints WHERE size = 100")[0]
        line = note.rstrip("\n").split("\n")[-1]
        assert line.startswith("\u2014 "), note
        prefix, _, sig = line.rpartition(" ")
        data = sig.rstrip("=")
        if data == sig:
            pytest.skip("the signature has no base64 padding, so no padding bits to change")
        alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
        twins = [
            variant
            for variant in (data[:-1] + c + sig[len(data) :] for c in alphabet if c != data[-1])
            if base64.b64decode(variant) == base64.b64decode(sig)
        ]
        assert twins
        changed = note.replace(line, f"{prefix} {twins[0]}")
        assert len(changed) == len(note) and changed != note
        db.q("UPDATE checkpoints SET note = ? WHERE size = 100", changed)
    report = verify_copy(pristine, copy_db)
    assert not report.ok, "a re-spelled checkpoint signature went undetected"
    assert any(p.where == "checkpoint of size 100" for p in report.problems), describe(report)


@pytest.mark.parametrize(
    ("table", "column", "where", "named"),
    [
        ("checkpoints", "note", "size = 200", "checkpoint of size 200"),
        ("entries", "subject", "idx = 123", "entry 123"),
    ],
)
def test_a_byte_that_breaks_utf8_is_reported_not_a_crash(
    pristine: Pristine, copy_db: Path, table: str, column: str, where: str, named: str
) -> None:
    """A TEXT column holding invalid UTF-8 after a one-byte change: verify names the place.

    An exception is acceptable only as one of the ledger's own errors (which the CLI turns into
    a message and an exit code), naming the place; a raw sqlite3 error is a crash.
    """
    from immutrail.ledger.errors import LedgerError

    with sqlite_attacker(copy_db) as db:
        (old,) = db.q(f"SELECT {column} FROM {table} WHERE {where}")[0]
        raw = old.encode()
        bad = raw[:5] + b"\xff" + raw[6:]
        db.q(f"UPDATE {table} SET {column} = CAST(? AS TEXT) WHERE {where}", bad)
    led = open_copy(pristine, copy_db)
    try:
        report = led.verify()
    except LedgerError as exc:
        assert named in str(exc), str(exc)
        return
    except Exception as exc:
        pytest.fail(f"verify() crashed instead of reporting {named}: {type(exc).__name__}: {exc}")
    finally:
        led.close()
    assert not report.ok
    assert any(p.where == named for p in report.problems), describe(report)


def remove_last_entry(db: Db) -> int:
    """Delete the last entry, cut the tiles back to the smaller tree, and rewrite the head.

    The result is a smaller, internally consistent tree: only a checkpoint can tell.
    """
    leaves = [bytes(h) for (h,) in db.q("SELECT leaf_hash FROM entries ORDER BY idx")]
    last = len(leaves) - 1
    frontier = merkle.Frontier.empty()
    frontier.extend(leaves[:last])
    db.q("DELETE FROM entries WHERE idx = ?", last)
    lengths = tiles.tile_lengths(last)
    for k, blob in db.q("SELECT k, hashes FROM tiles"):
        if k not in lengths:
            db.q("DELETE FROM tiles WHERE k = ?", k)
        elif lengths[k] != len(blob):
            db.q("UPDATE tiles SET hashes = ? WHERE k = ?", bytes(blob)[: lengths[k]], k)
    db.q(
        "UPDATE tree_head SET size = ?, root = ?, frontier = ? WHERE one = 1",
        frontier.size,
        frontier.root(),
        frontier.to_bytes(),
    )
    return last


def assert_truncation_caught_by_checkpoint(report: VerificationReport, size: int) -> None:
    assert not report.ok, "removing the last entry (with its nodes and head) went undetected"
    # Only the checkpoint can tell, which proves the removal was consistent.
    assert all(p.where == f"checkpoint of size {size}" for p in report.problems), describe(report)
    assert any(
        "rolled back or truncated" in p.message and p.index == size - 1 for p in report.problems
    ), describe(report)


def test_removing_the_last_entry_consistently_is_caught_by_the_checkpoint(
    pristine: Pristine, copy_db: Path
) -> None:
    with sqlite_attacker(copy_db) as db:
        assert remove_last_entry(db) == SIZE - 1
    assert_truncation_caught_by_checkpoint(verify_copy(pristine, copy_db), SIZE)


def immutrail_cli() -> str:
    exe = shutil.which("immutrail", path=str(Path(sys.executable).parent))
    assert exe is not None, "the immutrail console script is not installed in this environment"
    return exe


def cli_verify_json(pristine: Pristine, db: Path, *flags: str) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [
            immutrail_cli(),
            "ledger",
            "verify",
            "--home",
            str(pristine.home),
            "--db",
            f"sqlite:///{db}",
            "--format",
            "json",
            *flags,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    try:
        data = json.loads(result.stdout)
    except ValueError:
        pytest.fail(f"no JSON from `ledger verify` (exit {result.returncode}): {result.stderr}")
    return result.returncode, data


@pytest.mark.parametrize("flags", [(), ("--integrity-only",)], ids=["full", "integrity"])
def test_cli_verify_exits_1_and_names_the_changed_entry(
    pristine: Pristine, copy_db: Path, tmp_path: Path, flags: tuple[str, ...]
) -> None:
    clean = tmp_path / "clean.db"
    shutil.copyfile(copy_db, clean)
    code, data = cli_verify_json(pristine, clean, *flags)
    assert (code, data["ok"], data["first_bad_index"]) == (0, True, None), data
    assert data["entry_format_checked"] is (not flags)
    idx = random.Random(5).randrange(SIZE)
    with sqlite_attacker(copy_db) as db:
        apply_case(db, Case("entry.data", idx, 17, 0x04))
    code, data = cli_verify_json(pristine, copy_db, *flags)
    assert code == 1, data
    assert data["ok"] is False
    assert data["first_bad_index"] == idx, data
    assert {"where": f"entry {idx}", "index": idx} in [
        {"where": p["where"], "index": p["index"]} for p in data["problems"]
    ], data


# -- PostgreSQL ----------------------------------------------------------------------------------

PG_SIZE = 100
PG_CHECKPOINTS = (40, 80, PG_SIZE)
PG_TRIGGERS = (
    ("entries_append_only", "entries"),
    ("tiles_only_grow", "tiles"),
    ("tiles_append_only", "tiles"),
    ("checkpoints_append_only", "checkpoints"),
)


@contextmanager
def pg_attacker(url: str) -> Iterator[Db]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for trigger, table in PG_TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")  # type: ignore[arg-type]

        def execute(sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            cur = conn.execute(sql, args)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

        yield Db(execute, "%s")


def pg_value(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview) else value


@pytest.mark.postgres
def test_one_changed_byte_is_detected_and_named_on_postgres(tmp_path: Path, pg_db: str) -> None:
    home = tmp_path / "home"
    build_ledger(home, pg_db, PG_SIZE, PG_CHECKPOINTS)
    cases = draw_cases(4242, 20)
    assert {c.kind for c in cases} >= {"entry.data", "tile.hashes", "checkpoint.note"}
    led = open_ledger(home, pg_db)
    try:
        with pg_attacker(pg_db) as db:
            for case in cases:
                expect, undo = apply_case(db, case)
                report = led.verify()
                try:
                    assert_detected(report, expect)
                except AssertionError as exc:
                    raise AssertionError(f"case {case}: {exc}") from None
                undo()
                report = led.verify()
                assert report.ok, f"after undoing {case}:\n{describe(report)}"
            assert remove_last_entry(db) == PG_SIZE - 1
            assert_truncation_caught_by_checkpoint(led.verify(), PG_SIZE)
    finally:
        led.close()
