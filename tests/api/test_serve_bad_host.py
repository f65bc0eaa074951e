"""``immutrail serve --host`` that is not a host name: exit 2 before anything is bound."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from immutrail.cli.main import app
from immutrail.ledger.home import init_ledger

runner = CliRunner()


@pytest.mark.parametrize(
    "host",
    [
        "a" * 64,  # a label over 63 characters
        "a" * 100_000,
        "a\udcffb",  # the byte 0xff on the command line, as Python decodes argv
        "a..b",  # an empty label
    ],
)
def test_a_host_that_is_not_a_host_name_exits_2(tmp_path: Path, host: str) -> None:
    home = tmp_path / "home"
    init_ledger(home)[0].close()
    result = runner.invoke(app, ["serve", "--home", str(home), "--host", host, "--port", "0"])
    assert result.exit_code == 2, (result.stdout, result.stderr)
    text = " ".join(result.stderr.split())
    assert text.startswith("error: --host ") and text.endswith(": not a valid host name")
    assert "Traceback" not in result.stderr and len(text) < 200
    assert result.stdout == ""
