"""``immutrail serve``: what it prints, how it stops, and its exit codes."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from typer.testing import CliRunner

from immutrail.cli.main import app
from immutrail.ledger.home import init_ledger

from .conftest import Servers, free_port

runner = CliRunner()


def test_serve_prints_where_and_stops_cleanly(tmp_path: Path, serve: Servers) -> None:
    home = tmp_path / "home"
    ledger, _ = init_ledger(home)
    ledger.close()
    server = serve(home)
    server.process.terminate()
    out, err = server.process.communicate(timeout=15)
    assert server.process.returncode == 0, err
    printed = json.loads(out.splitlines()[0])
    assert printed["schema_version"] == 1
    assert printed["url"] == server.url
    assert printed["openapi"] == server.url + "/openapi.json"
    assert printed["tlog"] == server.url + "/tlog/"
    assert (printed["origin"], printed["vkey"]) == (ledger.origin, ledger.vkey)
    assert printed["public_log"] is False


def test_serve_without_a_ledger_exits_3(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", "--home", str(tmp_path / "none"), "--port", "0"])
    assert result.exit_code == 3, result.output
    assert "immutrail init" in result.stderr


def test_serve_on_a_taken_port_exits_3(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init_ledger(home)[0].close()
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        result = runner.invoke(app, ["serve", "--home", str(home), "--port", str(port)])
    assert result.exit_code == 3, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_serve_on_an_unknown_host_exits_2(tmp_path: Path) -> None:
    home = tmp_path / "home"
    init_ledger(home)[0].close()
    result = runner.invoke(app, ["serve", "--home", str(home), "--host", "no such host!"])
    assert result.exit_code == 2, result.output
    assert "cannot resolve --host" in result.stderr
