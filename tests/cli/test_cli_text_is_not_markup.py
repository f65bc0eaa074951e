"""`immutrail ledger …` prints what was appended as written: a subject that
looks like rich markup (`[/x]`) once raised MarkupError (exit 4) after the work was done."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from immutrail.cli.main import app

runner = CliRunner()


def test_ledger_list_prints_appended_text_as_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert runner.invoke(app, ["init", "--home", str(home)]).exit_code == 0
    appended = runner.invoke(
        app,
        ["ledger", "append", "--type", "x.y", "--actor", "user:ci", "--subject", "[/x][bold]",
         "--home", str(home)],
    )  # fmt: skip
    assert appended.exit_code == 0, appended.stderr
    listed = runner.invoke(app, ["ledger", "list", "--home", str(home)])
    assert listed.exit_code == 0, listed.stderr
    assert "[/x][bold]" in listed.stdout
    shown = runner.invoke(app, ["ledger", "entry", "0", "--home", str(home)])
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout.split("\n", 1)[1])["subject"] == "[/x][bold]"
