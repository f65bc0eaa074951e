"""`immutrail keys generate|list|export|revoke`: JSON shapes, text, exit codes, nothing written
on refusal. The group is mounted here as cli/main.py mounts it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from immutrail.cli import keys as keys_cli
from immutrail.crypto.keys import key_id, load_public_key_pem
from immutrail.keys.passphrase import PASSPHRASE_ENV
from ledger_state import ledger_size

cli = typer.Typer()
cli.add_typer(keys_cli.app, name="keys")
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_env_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


def run(home: Path, *args: str, code: int = 0, fmt: str = "json") -> Any:
    result = runner.invoke(cli, ["keys", *args, "--home", str(home), "--format", fmt])
    assert result.exit_code == code, (result.stdout, result.stderr)
    if code == 0 and fmt == "json":
        data = json.loads(result.stdout)
        assert data["schema_version"] == 1
        return data
    # rich wraps stderr at the terminal width: compare words, not line breaks
    return result.stdout if code == 0 else " ".join(result.stderr.split())


def test_generate_list_export_revoke(home: Path, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    made = run(home, "generate", "--principal", "alice", "--passphrase-file", str(secret))
    assert made["principal"] == "alice" and made["algorithm"] == "ed25519" and made["encrypted"]
    assert Path(made["path"]).read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY")
    ec = run(
        home,
        "generate",
        "--principal",
        "bob",
        "--algorithm",
        "ecdsa-p256",
        "--purpose",
        "approval",
        "--no-passphrase",
    )
    assert ec["algorithm"] == "ecdsa-p256" and ec["purpose"] == "approval" and not ec["encrypted"]

    listed = run(home, "list")["keys"]
    assert [(k["principal"], k["revoked"]) for k in listed] == [("alice", None), ("bob", None)]
    assert all(k["private_key_here"] for k in listed)
    assert [k["principal"] for k in run(home, "list", "--principal", "bob")["keys"]] == ["bob"]
    table = run(home, "list", fmt="text")
    assert "alice" in table and "ecdsa-p256" in table

    pem = run(home, "export", made["keyid"][:12], fmt="text")
    assert key_id(load_public_key_pem(pem)) == made["keyid"]
    assert run(home, "export", made["keyid"])["public_key"] == pem

    revoked = run(home, "revoke", made["keyid"], "--reason", "left the team")
    assert revoked["revoked"]["reason"] == "left the team"
    assert revoked["ledger_index"] == revoked["revoked"]["index"]
    size = ledger_size(home)
    assert "already revoked" in run(home, "revoke", made["keyid"], "--reason", "x", code=2)
    assert "no key" in run(home, "revoke", "0" * 64, "--reason", "x", code=2)
    assert "no key" in run(home, "export", "0" * 64, code=2)
    assert ledger_size(home) == size
    text = run(home, "revoke", ec["keyid"], "--reason", "rotated", fmt="text")
    assert "revoked key" in text and "REVOKED" in text


def test_generate_without_any_passphrase_source_is_refused(home: Path, tmp_path: Path) -> None:
    size = ledger_size(home)
    error = run(home, "generate", "--principal", "alice", code=2)
    assert "needs a passphrase" in error and "--passphrase-file" in error
    secret = tmp_path / "pw"
    secret.write_text("x")
    both = ["generate", "--principal", "alice", "--no-passphrase", "--passphrase-file", str(secret)]
    assert "not both" in run(home, *both, code=2)
    assert "not a principal id" in run(
        home, "generate", "--principal", "A/B", "--no-passphrase", code=2
    )
    assert ledger_size(home) == size
    assert not (home / "keys").exists() or not any((home / "keys").rglob("*.key"))


def test_generate_takes_the_passphrase_from_the_environment(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "from-env")
    made = run(home, "generate", "--principal", "carol")
    assert made["encrypted"]
    text = run(home, "generate", "--principal", "dave", fmt="text")
    assert "generated ed25519 key" in text and "(encrypted)" in text


def test_uninitialized_home_exits_3(tmp_path: Path) -> None:
    assert "init" in run(tmp_path / "nowhere", "list", code=3)
