"""Hostile command-line input to the deploy and drift commands: NaN, infinite, negative and
absurd seconds, and path-like environment names, are usage errors (exit 2) that write nothing;
user text in what they print is printed, never parsed as rich markup."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from immutrail.cli import drift as drift_cli
from immutrail.cli.main import app
from immutrail.cli.numbers import MAX_DURATION_S, MAX_INTERVAL_S, MIN_SECONDS
from immutrail.drift.check import DriftReport, Finding
from ledger_state import ledger_size


def run(home: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, [*args, "--home", str(home)])
    # click draws usage errors in a box: compare words, not borders and line breaks
    return result.exit_code, result.stdout, " ".join(result.stderr.replace("│", " ").split())


BAD_SECONDS = ["nan", "NaN", "inf", "-inf", "-1", "0", "1e-300", "1e10", str(MAX_INTERVAL_S + 1)]


@pytest.mark.parametrize("value", BAD_SECONDS)
@pytest.mark.parametrize(
    "words",
    [
        ("drift", "watch", "prod", "--passes", "1", "--interval"),
        ("drift", "watch", "prod", "--passes", "1", "--process-interval"),
        ("reconcile", "prod", "--watch", "--passes", "1", "--interval"),
    ],
    ids=["drift-interval", "drift-process-interval", "reconcile-interval"],
)
def test_seconds_options_refuse_non_finite_and_absurd_values(
    home: Path, words: tuple[str, ...], value: str
) -> None:
    before = ledger_size(home)
    code, _, stderr = run(home, *words, value)
    assert code == 2, stderr
    assert "is not a number of seconds from" in stderr and "Traceback" not in stderr
    assert ledger_size(home) == before


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "0", str(MAX_DURATION_S * 2)])
def test_drift_watch_duration_is_checked(home: Path, value: str) -> None:
    before = ledger_size(home)
    code, _, stderr = run(home, "drift", "watch", "prod", "--duration", value)
    assert code == 2 and "--duration" in stderr and "is not a number of seconds" in stderr
    assert ledger_size(home) == before


def test_seconds_in_range_are_accepted(home: Path) -> None:
    # The bounds themselves pass the check: the command runs (one pass, nothing declared).
    code, _, stderr = run(
        home, "reconcile", "prod", "--watch", "--passes", "1", "--interval", str(MIN_SECONDS)
    )
    assert code == 0, stderr
    code, _, stderr = run(
        home, "reconcile", "prod", "--watch", "--passes", "1", "--interval", str(MAX_INTERVAL_S)
    )
    assert code == 0, stderr


PATH_LIKE = ["../../etc", "[/x]", "prod/../x", ""]
COMMANDS = {
    "status": ["status", "ENV"],
    "env-show": ["env", "show", "ENV"],
    "deploy": ["deploy", "ENV"],
    "reconcile": ["reconcile", "ENV"],
    "chaos": ["chaos", "ENV", "--terminate", "1"],
    "rollback": ["rollback", "ENV", "--service", "hello"],
    "drift-check": ["drift", "check", "ENV"],
    "drift-watch": ["drift", "watch", "ENV", "--passes", "1"],
}


@pytest.mark.parametrize("name", PATH_LIKE)
@pytest.mark.parametrize("words", COMMANDS.values(), ids=COMMANDS.keys())
def test_path_like_environment_names_are_refused(home: Path, words: list[str], name: str) -> None:
    before = ledger_size(home)
    code, stdout, stderr = run(home, *(name if w == "ENV" else w for w in words))
    assert code == 2, (words, stdout, stderr)
    assert "is not an environment name" in stderr and "Traceback" not in stderr
    assert ledger_size(home) == before


def test_drift_report_prints_user_text_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    # A path inside an instance is whatever its image (or an intruder) named it.
    console = Console(record=True, width=200, highlight=False)
    monkeypatch.setattr(drift_cli, "stdout", console)
    finding = Finding("filesystem", "hello", "hello-1", "added /tmp/[/x] and [bold]b[/bold]")
    drift_cli._print(DriftReport("prod", [finding], 1, 1))
    printed = console.export_text()
    assert "/tmp/[/x]" in printed and "[bold]b[/bold]" in printed
