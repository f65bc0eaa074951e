"""Edges of the shared CLI plumbing: how errors print, empty paths, what a witness must hold,
a database file that is not one, a key reference that names nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from immutrail.cli.common import MAX_ERROR_CHARS, printable
from immutrail.cli.main import app
from immutrail.keys.passphrase import PASSPHRASE_ENV

runner = CliRunner()


def run(*args: str, code: int = 0) -> tuple[str, str]:
    result = runner.invoke(app, list(args))
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout, result.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    run("init", "--home", str(h), "--origin", "example.com/edges")
    run(
        "ledger", "append", "--home", str(h), "--type", "artifact.built", "--actor", "ci",
        "--subject", "sha256:" + "a" * 64, "--payload", "{}",
    )  # fmt: skip
    return h


def test_errors_show_control_characters_and_stay_bounded() -> None:
    assert printable("vkey \x1b[31mred\x07\nhint\tx") == "vkey \\x1b[31mred\\x07\nhint\tx"
    long = printable("x" * (MAX_ERROR_CHARS + 10))
    assert long.endswith("… (10 more characters)") and len(long) < MAX_ERROR_CHARS + 40


def test_an_error_is_one_line_however_long_and_never_wrapped(tmp_path: Path) -> None:
    # A real process: the terminal width rich would wrap at does not apply to a pipe.
    missing = tmp_path / ("d" * 150) / "ledger.db"
    result = subprocess.run(
        [sys.executable, "-m", "immutrail.cli.main", "ledger", "list", "--home", str(tmp_path),
         "--db", f"sqlite:///{missing}"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 3
    first = result.stderr.splitlines()[0]
    assert first.startswith("error: no ledger database at ") and first.endswith("ledger.db")


@pytest.mark.parametrize(
    "args",
    [
        ("init", "--home", ""),
        ("ledger", "list", "--home", ""),
        ("ledger", "vkey", "--home", "", "--key-file", "k"),
        ("ledger", "vkey", "--home", "h", "--key-file", ""),
        ("ledger", "checkpoint", "--home", "h", "--publish", ""),
        ("ledger", "verify", "--home", "h", "--witness", "w", "--witness", ""),
        ("audit", "verify", "bundle.json", "--witness", ""),
    ],
)
def test_an_empty_path_is_refused_not_read_as_the_current_folder(
    args: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, list(args))
    assert result.exit_code == 2
    words = " ".join(result.output.replace("│", " ").split())  # typer boxes usage errors
    assert "an empty path names nothing" in words
    assert list(tmp_path.iterdir()) == []


def test_an_empty_file_as_database_is_refused_and_left_empty(home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    _, err = run("ledger", "list", "--home", str(home), "--db", f"sqlite:///{empty}", code=3)
    assert "is not a SQLite database" in err
    assert empty.stat().st_size == 0  # the WAL pragma used to write a header into it


def test_a_folder_as_database_is_refused(home: Path, tmp_path: Path) -> None:
    _, err = run("ledger", "list", "--home", str(home), "--db", f"sqlite:///{tmp_path}", code=3)
    assert "is not a regular file" in err


def test_a_witness_folder_with_nothing_in_it_is_refused(home: Path, tmp_path: Path) -> None:
    empty = tmp_path / "witness"
    empty.mkdir()
    _, err = run("ledger", "verify", "--home", str(home), "--witness", str(empty), code=2)
    assert "witnesses nothing" in " ".join(err.split())


def test_a_damaged_witness_vkey_is_bad_input_not_a_replaced_ledger(
    home: Path, tmp_path: Path
) -> None:
    witness = tmp_path / "witness"
    run("ledger", "checkpoint", "--home", str(home), "--publish", str(witness))
    (witness / "vkey").write_bytes(b"garbage\x1b[2J\n")
    _, err = run("ledger", "verify", "--home", str(home), "--witness", str(witness), code=2)
    assert "does not hold a verifier key" in err
    assert "\x1b" not in err and "\\x1b" in err  # shown, never obeyed by the terminal
    _, err = run("ledger", "checkpoint", "--home", str(home), "--publish", str(witness), code=2)
    assert "does not hold a verifier key" in err


def test_publishing_into_a_broken_git_repository_writes_nothing(home: Path, tmp_path: Path) -> None:
    witness = tmp_path / "witness"
    (witness / ".git").mkdir(parents=True)  # git does not accept this as a repository
    _, err = run("ledger", "checkpoint", "--home", str(home), "--publish", str(witness), code=2)
    assert "git rev-parse" in err
    assert [p.name for p in witness.iterdir()] == [".git"]
    out, _ = run("ledger", "verify", "--home", str(home), "--format", "json")
    assert json.loads(out)["checkpoints"] == 0  # nor in the ledger


@pytest.mark.parametrize("source", [[], ["--passphrase-file", "missing"]])
def test_init_admin_without_a_passphrase_creates_no_home(
    source: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    h = tmp_path / "home"
    _, err = run("init", "--home", str(h), "--admin", "alice", *source, code=2)
    assert "passphrase" in err
    assert not h.exists()  # before, a home in setup mode was left behind
    monkeypatch.setenv(PASSPHRASE_ENV, "alice's secret")
    out, _ = run("init", "--home", str(h), "--admin", "alice", "--format", "json")
    assert json.loads(out)["admin"]["key"]["encrypted"] is True
