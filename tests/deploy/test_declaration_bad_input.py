"""`env declare` with a port of 0 or configuration files behind a symbolic link loop: exit 2 with
the right message, nothing recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from immutrail.cli.main import app
from immutrail.deploy.declaration import parse_declaration
from immutrail.deploy.errors import DeployInputError
from ledger_state import ledger_size

runner = CliRunner()


def declare(home: Path, path: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["env", "declare", "prod", "hello", str(path), "--home", str(home)])
    return result.exit_code, result.stderr


@pytest.mark.parametrize("port", ["0", "-1", "65536"])
def test_port_out_of_range_is_not_reported_missing(tmp_path: Path, port: str) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(f"port: {port}\n")
    with pytest.raises(DeployInputError, match="port must be an integer from 1 to 65535"):
        parse_declaration(path, "prod", "hello")


def test_missing_port_is_required(tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text("replicas: 1\n")
    with pytest.raises(DeployInputError, match=r"'port'.*1-65535.* is required"):
        parse_declaration(path, "prod", "hello")


def test_port_zero_through_the_cli(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text("port: 0\n")
    before = ledger_size(home)
    code, stderr = declare(home, path)
    assert code == 2 and "port must be an integer from 1 to 65535" in stderr
    assert ledger_size(home) == before


@pytest.mark.parametrize("links", [{"loop_a": "loop_b", "loop_b": "loop_a"}, {"loop_a": "loop_a"}])
def test_config_file_in_a_symlink_loop_is_an_input_error(
    home: Path, tmp_path: Path, links: dict[str, str]
) -> None:
    for name, target in links.items():
        (tmp_path / name).symlink_to(target)
    path = tmp_path / "svc.yaml"
    path.write_text("port: 8080\nfiles: {/etc/app.toml: loop_a}\n")
    with pytest.raises(DeployInputError, match=r"files./etc/app.toml: cannot read .*loop_a"):
        parse_declaration(path, "prod", "hello")
    before = ledger_size(home)
    code, stderr = declare(home, path)
    assert code == 2 and "loop_a" in stderr and "symbolic links" in stderr
    assert ledger_size(home) == before
    assert not (home / "config-files").exists()


def test_declaration_file_that_is_a_symlink_loop(home: Path, tmp_path: Path) -> None:
    (tmp_path / "svc.yaml").symlink_to("svc.yaml")
    code, stderr = declare(home, tmp_path / "svc.yaml")
    assert code == 2 and "svc.yaml" in stderr
