"""The ledger service on both backends: append, read, checkpoints, proofs, verification."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from immutrail.crypto.checkpoint import open_checkpoint
from immutrail.crypto.note import Ed25519NoteVerifier
from immutrail.ledger import merkle
from immutrail.ledger.errors import (
    DuplicateEventError,
    EventFormatError,
    LedgerInputError,
    NotInitializedError,
)
from immutrail.ledger.event import Event, parse_entry
from immutrail.ledger.home import init_ledger, open_ledger
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.proofs import TlogProof
from immutrail.ledger.storage.interface import EntryFilter

DIGEST = "sha256:" + "ab" * 32


def built(n: int, actor: str = "builder:ci") -> list[Event]:
    return [
        Event.create("artifact.built", actor, f"{DIGEST[:-4]}{i:04x}", {"n": i, "commit": "4f2a9c"})
        for i in range(n)
    ]


def test_append_assigns_consecutive_indices_and_keeps_the_exact_bytes(ledger: Ledger) -> None:
    first = ledger.append(Event.create("source.committed", "user:alice", "git:repo@1", {"x": 1}))
    rest = ledger.append_batch(built(5))
    assert [first.index, *(r.index for r in rest)] == list(range(6))
    row = ledger.entry(3)
    assert row.leaf_hash == merkle.leaf_hash(row.data) == rest[2].leaf_hash
    event = parse_entry(row.data)
    assert event.id == rest[2].id and event.payload == {"n": 2, "commit": "4f2a9c"}
    assert ledger.head().size == 6
    assert ledger.resolve(rest[2].id) == 3


def test_entry_bytes_are_jcs_of_the_event(ledger: Ledger) -> None:
    event = Event.create(
        "deploy.completed",
        "user:carol",
        "env:prod",
        {"b": [1, "é"], "a": True},
        time="2026-03-14T10:00:00+01:00",
        id="01900000-0000-7000-8000-000000000001",
    )
    ledger.append(event)
    assert ledger.entry(0).data == (
        b'{"actor":"user:carol","id":"01900000-0000-7000-8000-000000000001",'
        b'"payload":{"a":true,"b":[1,"\xc3\xa9"]},"subject":"env:prod",'
        b'"time":"2026-03-14T09:00:00Z","type":"deploy.completed"}'
    )


def test_duplicate_ids_are_refused_and_nothing_is_written(ledger: Ledger) -> None:
    events = built(3)
    ledger.append_batch(events)
    with pytest.raises(DuplicateEventError):
        ledger.append_batch([*built(2), events[1]])
    with pytest.raises(DuplicateEventError):
        ledger.append_batch([events[0]])
    same = built(1)
    with pytest.raises(DuplicateEventError):
        ledger.append_batch([same[0], same[0]])
    assert ledger.head().size == 3


def test_list_filters_by_type_subject_actor_and_time(ledger: Ledger) -> None:
    ledger.append_batch(
        [
            Event.create("artifact.built", "builder:ci", "img:a", time="2026-01-01T00:00:00Z"),
            Event.create("scan.completed", "scanner:osv", "img:a", time="2026-01-02T00:00:00.5Z"),
            Event.create("artifact.built", "builder:ci", "img:b", time="2026-01-03T00:00:00Z"),
            Event.create("approval.granted", "user:bob", "img:b", time="2026-01-02T00:00:00Z"),
        ]
    )

    def indices(**kw: object) -> list[int]:
        return [r.index for r in ledger.entries(EntryFilter(**kw))]  # type: ignore[arg-type]

    from immutrail.ledger.event import time_us

    assert indices(type="artifact.built") == [0, 2]
    assert indices(subject="img:b") == [2, 3]
    assert indices(actor="user:bob") == [3]
    assert indices(since_us=time_us("2026-01-02T00:00:00Z")) == [1, 2, 3]
    assert indices(until_us=time_us("2026-01-02T00:00:00Z")) == [0, 3]
    assert indices(start=1, limit=2) == [1, 2]


def test_listing_pages_through_more_than_one_chunk(ledger: Ledger) -> None:
    ledger.append_batch(built(4500))
    assert [r.index for r in ledger.entries(EntryFilter())] == list(range(4500))
    assert len(list(ledger.entries(EntryFilter(start=4000, limit=2100)))) == 500


def test_checkpoint_is_a_signed_note_that_verifies_and_matches_the_tree(ledger: Ledger) -> None:
    ledger.append_batch(built(11))
    stored = ledger.checkpoint()
    verifier = Ed25519NoteVerifier.from_vkey(ledger.vkey)
    checkpoint = open_checkpoint(stored.note, verifier, origin=ledger.origin)
    assert (checkpoint.size, checkpoint.root_hash) == (11, ledger.root())
    assert stored.note.startswith(
        f"{ledger.origin}\n11\n{base64.b64encode(ledger.root()).decode()}\n"
    )
    assert ledger.checkpoint() == stored  # one checkpoint a size
    ledger.append_batch(built(1))
    assert [c.size for c in ledger.checkpoints()] == [11]
    assert ledger.checkpoint().size == 12


def test_proofs_verify_against_roots_at_every_size(ledger: Ledger) -> None:
    ledger.append_batch(built(37))
    for size in (1, 2, 5, 16, 17, 37):
        root = ledger.root(size)
        for index in {0, size // 2, size - 1}:
            proof = ledger.inclusion_proof(index, size)
            assert proof.root == root
            merkle.verify_inclusion(index, size, proof.leaf_hash, proof.proof, root)
        for old in (0, 1, size // 3, size):
            c = ledger.consistency_proof(old, size)
            merkle.verify_consistency(old, size, c.old_root, c.new_root, c.proof)


def test_tlog_proof_round_trips_and_verifies_offline(ledger: Ledger) -> None:
    ledger.append_batch(built(9))
    with pytest.raises(LedgerInputError, match="no checkpoint"):
        ledger.tlog_proof(3)
    ledger.checkpoint()
    text = ledger.tlog_proof(3).format()
    assert text.startswith("c2sp.org/tlog-proof@v1\nindex 3\n")
    parsed = TlogProof.parse(text)
    checkpoint = open_checkpoint(
        parsed.checkpoint, Ed25519NoteVerifier.from_vkey(ledger.vkey), origin=ledger.origin
    )
    leaf = merkle.leaf_hash(ledger.entry(3).data)
    merkle.verify_inclusion(3, checkpoint.size, leaf, parsed.proof, checkpoint.root_hash)


def test_out_of_range_requests_are_input_errors(ledger: Ledger) -> None:
    ledger.append_batch(built(4))
    for call in (
        lambda: ledger.entry(4),
        lambda: ledger.inclusion_proof(4),
        lambda: ledger.inclusion_proof(0, 5),
        lambda: ledger.consistency_proof(3, 5),
        lambda: ledger.consistency_proof(4, 2),
        lambda: ledger.resolve("01900000-0000-7000-8000-00000000dead"),
    ):
        with pytest.raises(LedgerInputError):
            call()


def test_a_clean_ledger_verifies(ledger: Ledger) -> None:
    ledger.append_batch(built(300))
    ledger.checkpoint()
    ledger.append_batch(built(20))
    ledger.checkpoint()
    seen: list[int] = []
    report = ledger.verify(observer=lambda done, total: seen.append(done))
    assert report.ok, report.problems
    assert (report.entries, report.checkpoints) == (320, 2)
    assert report.nodes == 320 - bin(320).count("1")
    assert report.root == ledger.root()
    assert seen[-1] == 320


def test_reopen_and_reinit_keep_the_same_ledger(tmp_path: Path, db_url: str) -> None:
    home = tmp_path / "home"
    first, created = init_ledger(home, db_url)
    first.append_batch(built(3))
    first.close()
    again, created_again = init_ledger(home, db_url)
    assert created and not created_again
    assert (again.origin, again.vkey, again.head().size) == (first.origin, first.vkey, 3)
    again.close()
    opened = open_ledger(home)  # the URL given at init is remembered
    assert opened.head().size == 3
    opened.close()


def test_a_second_home_cannot_take_over_an_existing_database(tmp_path: Path, db_url: str) -> None:
    first, _ = init_ledger(tmp_path / "a", db_url)
    first.close()
    with pytest.raises(LedgerInputError, match="key is not"):
        init_ledger(tmp_path / "b", db_url)


def test_opening_a_missing_ledger_says_init(tmp_path: Path) -> None:
    with pytest.raises(NotInitializedError) as info:
        open_ledger(tmp_path / "nowhere")
    assert "immutrail init" in info.value.diagnostics()


def test_oversized_events_are_refused(ledger: Ledger) -> None:
    with pytest.raises(EventFormatError, match="limit"):
        ledger.append(Event.create("report.attached", "scanner:osv", "img:a", {"x": "a" * 70000}))
    assert ledger.head().size == 0


def test_subject_index_catches_up_on_query_and_is_checked_by_verify(tmp_path: Path) -> None:
    import sqlite3

    led, _ = init_ledger(tmp_path / "home")
    led.append_batch(built(30))
    first = [r.index for r in led.entries(EntryFilter(subject=f"{DIGEST[:-4]}{7:04x}"))]
    led.append_batch(built(5))  # same subjects again: the index must catch up at the next query
    again = [r.index for r in led.entries(EntryFilter(subject=f"{DIGEST[:-4]}{3:04x}"))]
    assert (first, again) == ([7], [3, 33])
    assert led.verify().ok
    led.close()
    conn = sqlite3.connect(tmp_path / "home" / "ledger.db")
    conn.execute("UPDATE subject_index SET subject = 'sha256:forged' WHERE idx = 12")
    conn.commit()
    conn.close()
    tampered = open_ledger(tmp_path / "home")
    report = tampered.verify()
    tampered.close()
    assert [(p.where, p.index) for p in report.problems] == [("subject index", 12)]


def test_proofs_follow_appends_made_through_another_connection(tmp_path: Path, db_url: str) -> None:
    """Proofs plan their reads against the last head seen; growth elsewhere must show at once."""
    first, _ = init_ledger(tmp_path / "home", db_url)
    second = open_ledger(tmp_path / "home", db_url)
    try:
        first.append_batch(built(10))
        assert first.inclusion_proof(3).size == 10
        second.append_batch(built(5))
        proof = first.inclusion_proof(3)  # the current size, not the one last seen
        assert (proof.size, proof.root) == (15, second.root())
        assert first.inclusion_proof(12).size == 15  # an index past the last head seen
        assert first.root() == second.root() and first.root(10) == second.root(10)
        c = first.consistency_proof(10, 15)
        merkle.verify_consistency(10, 15, c.old_root, c.new_root, c.proof)
        with pytest.raises(LedgerInputError):
            first.inclusion_proof(15)
    finally:
        second.close()
        first.close()
