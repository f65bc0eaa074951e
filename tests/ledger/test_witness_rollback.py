"""Invariant 3: a ledger rolled back or forked behind a checkpoint that someone kept is detected.

Checkpoints are published to a witness folder, out of the operator's reach. Then the operator
restores an earlier copy of the SQLite file (rollback), or grows a different history from it and
signs that with the same key (fork). Both ledgers are internally consistent, so ``verify()`` alone
passes; ``verify(witnesses=[dir])`` must fail and say why. A witness folder in a git work tree
records each publish as a commit; a folder that trusts another ledger's key, and a contradicting
checkpoint for a size the folder already holds, are refused.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from immutrail.ledger import witness
from immutrail.ledger.errors import VerificationError
from immutrail.ledger.event import Event
from immutrail.ledger.home import DB_FILE, init_ledger, open_ledger
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.verify import VerificationReport


def events(tag: str, start: int, stop: int) -> list[Event]:
    return [
        Event.create("deploy.completed", "deployer:ci", f"env:prod/{tag}/{n}", {"n": n})
        for n in range(start, stop)
    ]


def describe(report: VerificationReport) -> str:
    return "\n".join(f"  {p.where} [index {p.index}]: {p.message}" for p in report.problems)


def snapshot(db: Path, target: Path) -> None:
    """A consistent copy of a live SQLite ledger (the backup an operator keeps)."""
    src, dst = sqlite3.connect(db), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


def restore(backup: Path, db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(backup, db)


def verify(home: Path, witnesses: list[Path] | None = None) -> VerificationReport:
    led = open_ledger(home)
    try:
        return led.verify(witnesses or [])
    finally:
        led.close()


def cli_verify(home: Path, *witnesses: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("immutrail", path=str(Path(sys.executable).parent))
    assert exe is not None
    args = [exe, "ledger", "verify", "--home", str(home)]
    for w in witnesses:
        args += ["--witness", str(w)]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def git_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's git configuration (signing, hooks, templates) out of these tests."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    empty = tmp_path / "gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


class Scenario:
    """A ledger with checkpoints of size 50 and 100 published to a witness, and a backup at 50."""

    def __init__(self, root: Path):
        self.home = root / "home"
        self.db = self.home / DB_FILE
        self.witness = root / "witness"
        self.backup = root / "backup-at-50.db"
        led, _ = init_ledger(self.home, origin="witness.test.immutrail.local/ledger")
        try:
            self.vkey = led.vkey
            led.append_batch(events("a", 0, 30))
            for e in events("a", 30, 50):
                led.append(e)
            assert led.checkpoint(self.witness).size == 50
            snapshot(self.db, self.backup)
            led.append_batch(events("a", 50, 100))
            self.note100 = led.checkpoint(self.witness).note
        finally:
            led.close()

    def reopen(self) -> Ledger:
        return open_ledger(self.home)


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    s = Scenario(tmp_path)
    report = verify(s.home, [s.witness])
    assert report.ok, describe(report)
    assert (report.size, report.witnessed) == (100, 2)
    return s


def test_restoring_an_earlier_copy_is_caught_by_the_witness(scenario: Scenario) -> None:
    restore(scenario.backup, scenario.db)
    alone = verify(scenario.home)
    assert alone.ok and alone.size == 50, "the restored copy is consistent: only a witness can tell"

    report = verify(scenario.home, [scenario.witness])
    assert not report.ok
    held = scenario.witness / witness.checkpoint_file(100)
    rolled = [p for p in report.problems if str(held) in p.where]
    assert rolled, describe(report)
    assert "rolled back or truncated" in rolled[0].message
    assert rolled[0].index == 50
    assert report.first_bad_index == 50
    # Only the size-100 checkpoint disagrees; the size-50 one is still extended.
    assert len(report.problems) == 1, describe(report)


def test_rollback_detected_through_the_cli(scenario: Scenario) -> None:
    before = cli_verify(scenario.home, scenario.witness)
    assert before.returncode == 0, before.stdout + before.stderr
    restore(scenario.backup, scenario.db)
    after = cli_verify(scenario.home, scenario.witness)
    assert after.returncode == 1, after.stdout + after.stderr
    assert "rolled back or truncated" in after.stdout
    assert witness.checkpoint_file(100) in after.stdout


def test_a_rolled_back_ledger_grown_past_the_witness_is_a_fork(scenario: Scenario) -> None:
    restore(scenario.backup, scenario.db)
    led = scenario.reopen()
    try:
        led.append_batch(events("b", 50, 120))
        assert led.checkpoint().size == 120
        assert led.verify().ok
        report = led.verify([scenario.witness])
    finally:
        led.close()
    held = scenario.witness / witness.checkpoint_file(100)
    forked = [p for p in report.problems if str(held) in p.where]
    assert forked and "forked" in forked[0].message, describe(report)
    assert len(report.problems) == 1, describe(report)


def test_a_forked_copy_resigned_with_the_same_key_is_caught(scenario: Scenario) -> None:
    fork_home = scenario.home.parent / "fork-home"
    fork_home.mkdir()
    shutil.copy2(scenario.home / "ledger.key", fork_home / "ledger.key")
    shutil.copyfile(scenario.backup, fork_home / DB_FILE)
    led = open_ledger(fork_home)
    try:
        assert led.vkey == scenario.vkey
        # A different event at position 50, then a history as long as the witnessed one.
        other = Event.create("deploy.completed", "mallory:ops", "env:prod/evil", {"n": 50})
        assert led.append(other).index == 50
        led.append_batch(events("a", 51, 100))
        fork100 = led.checkpoint()
        assert fork100.size == 100 and fork100.note != scenario.note100
        assert led.verify().ok, "the fork is internally consistent and correctly signed"

        report = led.verify([scenario.witness])
        assert not report.ok
        held = scenario.witness / witness.checkpoint_file(100)
        forked = [p for p in report.problems if str(held) in p.where]
        assert forked and "forked" in forked[0].message, describe(report)

        # Publishing the fork's checkpoint to the witness is refused and changes nothing there.
        with pytest.raises(VerificationError, match="forked"):
            led.checkpoint(scenario.witness)
        assert held.read_text() == scenario.note100
    finally:
        led.close()


def test_publishing_a_contradicting_checkpoint_of_the_same_size_raises(
    scenario: Scenario,
) -> None:
    held = scenario.witness / witness.checkpoint_file(100)
    other = scenario.note100.replace("\n", "\n\n", 1)  # any other text for the same size
    with pytest.raises(VerificationError, match="different checkpoint for size 100"):
        witness.publish(scenario.witness, other, 100, scenario.vkey)
    assert held.read_text() == scenario.note100
    # The same checkpoint again is fine (publishing is idempotent).
    assert witness.publish(scenario.witness, scenario.note100, 100, scenario.vkey) == held


def test_a_witness_that_trusts_another_ledgers_key_fails(
    scenario: Scenario, tmp_path: Path
) -> None:
    other, _ = init_ledger(tmp_path / "other-home", origin="other.test.immutrail.local/ledger")
    try:
        other.append_batch(events("o", 0, 10))
        other_witness = tmp_path / "other-witness"
        other.checkpoint(other_witness)
        other_vkey = other.vkey
    finally:
        other.close()
    assert other_vkey != scenario.vkey

    # Our checkpoints, but the folder's vkey is the other ledger's.
    swapped = tmp_path / "swapped"
    shutil.copytree(scenario.witness, swapped)
    (swapped / witness.VKEY_FILE).write_text(other_vkey + "\n")
    report = verify(scenario.home, [swapped])
    assert not report.ok
    assert any(p.where == f"witness {swapped}" and "replaced" in p.message for p in report.problems)

    # Wholly the other ledger's witness folder: its key and its checkpoints.
    report = verify(scenario.home, [other_witness])
    assert not report.ok
    assert any(p.where == f"witness {other_witness}" for p in report.problems), describe(report)
    assert any("does not verify" in p.message for p in report.problems), describe(report)
    assert cli_verify(scenario.home, other_witness).returncode == 1

    # And this ledger refuses to publish into a folder that witnesses another key.
    led = scenario.reopen()
    try:
        with pytest.raises(VerificationError, match="another ledger key"):
            led.checkpoint(swapped)
    finally:
        led.close()


@pytest.mark.usefixtures("git_env")
def test_a_witness_in_a_git_work_tree_gets_one_commit_per_publish(tmp_path: Path) -> None:
    folder = tmp_path / "witness-repo"
    folder.mkdir()
    subprocess.run(["git", "init", "--quiet", str(folder)], check=True)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(folder), *args], check=True, capture_output=True, text=True
        ).stdout

    led, _ = init_ledger(tmp_path / "home")
    notes = {}
    try:
        for size in (10, 20, 30):
            led.append_batch(events("g", size - 10, size))
            notes[size] = led.checkpoint(folder).note
        led.checkpoint(folder)  # the same size again: nothing new to record
        assert led.verify([folder]).witnessed == 3
    finally:
        led.close()
    assert git("rev-list", "--count", "HEAD").strip() == "3"
    assert git("log", "--format=%s").split("\n")[:3] == [
        "checkpoint 30",
        "checkpoint 20",
        "checkpoint 10",
    ]
    assert sorted(git("ls-files").split()) == sorted(
        [witness.VKEY_FILE, *(witness.checkpoint_file(s) for s in notes)]
    )
    assert git("status", "--porcelain") == ""
    for size, note in notes.items():
        assert git("show", f"HEAD:{witness.checkpoint_file(size)}") == note
    # Each commit adds exactly one checkpoint (the first also the vkey).
    first = git("rev-list", "--max-parents=0", "HEAD").strip()
    assert sorted(git("show", "--name-only", "--format=", first).split()) == sorted(
        [witness.VKEY_FILE, witness.checkpoint_file(10)]
    )
    assert git("show", "--name-only", "--format=", "HEAD").split() == [witness.checkpoint_file(30)]
