"""Text the ledger holds (actors, subjects, instance ids, types, times) and paths the user names
are printed as written by the `audit` commands: `[/x]` once made rich raise MarkupError (exit 4)
after the work was done. Also: output names the file system refuses are input errors (exit 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from immutrail.audit.queries import Answer, trace_query
from immutrail.cli.audit import _print_answer
from immutrail.cli.common import Format
from immutrail.cli.main import app

from .conftest import World, audit

runner = CliRunner()
MARKUP = "[/x]"


def marked(value: Any) -> Any:
    """``value`` with every string in it prefixed by MARKUP (the answer's kind kept)."""
    if isinstance(value, str):
        return MARKUP + value
    if isinstance(value, list):
        return [marked(item) for item in value]
    if isinstance(value, dict):
        return {k: v if k == "kind" else marked(v) for k, v in value.items()}
    return value


def printed(data: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str:
    data.pop("schema_version", None)
    answer = Answer(trace_query("sha256:" + "0" * 64), marked(data), frozenset(), frozenset())
    _print_answer(answer, Format.text)
    return capsys.readouterr().out


def test_at_trace_and_changes_print_ledger_text_as_written(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = [
        audit(world.home, "at", world.between, "--env", "prod"),
        audit(world.home, "trace", world.v1),
        audit(
            world.home, "changes", "--env", "prod", "--from", world.before_any, "--to", world.end
        ),
    ]
    for data in answers:
        out = printed(data, capsys)
        assert f"{MARKUP}prod" in out or f"{MARKUP}{world.v1}" in out
        assert out.count(MARKUP) > 5


def test_evidence_to_a_path_that_looks_like_markup(world: World, tmp_path: Path) -> None:
    (tmp_path / "[bold]x[").mkdir()
    out = tmp_path / "[bold]x[/x].json"  # the file "x].json" in the folder "[bold]x["
    result = runner.invoke(
        app, ["audit", "evidence", world.v1, "-o", str(out), "--home", str(world.home)]
    )
    assert result.exit_code == 0, result.stderr
    assert f"wrote {out}:" in result.stdout and out.is_file()


def test_evidence_and_report_to_a_name_too_long_exit_2(world: World, tmp_path: Path) -> None:
    out = tmp_path / ("x" * 300)
    for args in (
        ["evidence", world.v1],
        ["report", "--framework", "soc2", "--from", world.before_any, "--to", world.end],
    ):
        result = runner.invoke(
            app, ["audit", *args, "-o", str(out), "--overwrite", "--home", str(world.home)]
        )
        assert result.exit_code == 2, result.stderr
        assert "File name too long" in result.stderr and "Traceback" not in result.stderr
    assert not any(tmp_path.iterdir())
