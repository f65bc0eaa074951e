"""`immutrail sign`, `approve`, `verify` end to end through the CLI, keys made by `keys generate`.

Mounted here as cli/main.py mounts them. Every refusal must exit 2 and write nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from immutrail.artifacts.builder import build
from immutrail.artifacts.store import Store
from immutrail.cli import keys as keys_cli
from immutrail.cli import signing as signing_cli
from immutrail.crypto.keys import generate_ed25519, save_private_key
from immutrail.keys.passphrase import PASSPHRASE_ENV
from immutrail.ledger.home import open_ledger

cli = typer.Typer()
cli.add_typer(keys_cli.app, name="keys")
cli.command("sign")(signing_cli.sign)
cli.command("verify")(signing_cli.verify)
cli.command("approve")(signing_cli.approve)
runner = CliRunner()

BCR_ID = "https://github.com/bazel-contrib/publish-to-bcr/.github/workflows/publish.yaml@refs/tags/v0.0.1"


@pytest.fixture(autouse=True)
def _no_env_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)


def run(home: Path, *args: str, code: int = 0, fmt: str = "json") -> Any:
    result = runner.invoke(cli, [*args, "--home", str(home), "--format", fmt])
    assert result.exit_code == code, (result.stdout, result.stderr)
    if fmt == "json" and result.stdout:
        data = json.loads(result.stdout)
        assert data["schema_version"] == 1
        return data
    # rich wraps stderr at the terminal width: compare words, not line breaks
    return result.stdout if code in (0, 1) else " ".join(result.stderr.split())


def state(home: Path, digest: str) -> tuple[int, int]:
    ledger = open_ledger(home)
    try:
        return ledger.head().size, len(Store.for_home(home).referrers(digest))
    finally:
        ledger.close()


def test_keys_sign_approve_verify(repo: Path, home: Path, tmp_path: Path) -> None:
    digest = build(repo / "image.yaml", home, tag="app:1").digest
    secret = tmp_path / "pw"
    secret.write_text("alice's secret\n")
    alice = run(home, "keys", "generate", "--principal", "alice", "--passphrase-file", str(secret))
    bob = run(home, "keys", "generate", "--principal", "bob", "--no-passphrase")

    wrong = tmp_path / "wrong"
    wrong.write_text("guess")
    before = state(home, digest)
    error = run(
        home, "sign", digest, "--principal", "alice", "--passphrase-file", str(wrong), code=2
    )
    assert "wrong passphrase" in error
    assert state(home, digest) == before

    signed = run(
        home, "sign", "app:1", "--key", alice["keyid"][:10], "--passphrase-file", str(secret)
    )
    assert signed["digest"] == digest and signed["principal"] == "alice"
    approved = run(
        home, "approve", digest, "--env", "prod", "--principal", "bob", "--comment", "ok"
    )
    assert approved["environment"] == "prod" and approved["comment"] == "ok"

    before = state(home, digest)
    assert "already approved" in run(
        home, "approve", digest, "--env", "prod", "--principal", "bob", code=2
    )
    assert "not an environment name" in run(
        home, "approve", digest, "--env", "PROD", "--principal", "bob", code=2
    )
    stranger = tmp_path / "stranger.key"
    save_private_key(generate_ed25519(), stranger)
    assert "not announced" in run(
        home, "approve", digest, "--env", "staging", "--key-file", str(stranger), code=2
    )
    assert "say which key" in run(home, "approve", digest, "--env", "staging", code=2)
    assert "no image" in run(home, "sign", "sha256:" + "0" * 64, "--principal", "bob", code=2)
    assert state(home, digest) == before

    report = run(home, "verify", "app:1")
    assert report["ok"] and report["counts"] == {"verified": 6}
    kinds = {c["kind"]: c for c in report["checks"]}
    assert kinds["approval"]["signer"] == "bob" and kinds["signature"]["signer"] == "alice"
    text = run(home, "verify", digest, fmt="text")
    assert "all verified: 6 verified" in text and "approval for prod" in text

    run(home, "keys", "revoke", bob["keyid"], "--reason", "left")
    before = state(home, digest)
    assert "revoked" in run(
        home, "approve", digest, "--env", "staging", "--principal", "bob", code=2
    )
    assert state(home, digest) == before
    report = run(home, "verify", digest, code=1)
    assert not report["ok"] and report["counts"] == {"verified": 5, "failed": 1}
    failed = next(c for c in report["checks"] if c["status"] == "failed")
    assert failed["kind"] == "approval" and "revoked" in failed["detail"]
    assert "NOT all verified" in run(home, "verify", digest, code=1, fmt="text")


def test_verify_usage_errors(repo: Path, home: Path, tmp_path: Path) -> None:
    digest = build(repo / "image.yaml", home, tag="app:1").digest
    assert "both" in run(home, "verify", digest, "--certificate-identity", BCR_ID, code=2)
    assert "no image" in run(home, "verify", "sha256:" + "1" * 64, code=2)
    bad_root = tmp_path / "root.json"
    bad_root.write_text("{}")
    assert "trusted root" in run(home, "verify", digest, "--trusted-root", str(bad_root), code=2)
    bad_key = tmp_path / "key.pem"
    bad_key.write_text("not a key")
    assert "key" in run(home, "verify", digest, "--key", str(bad_key), code=2)
    assert "init" in run(tmp_path / "nowhere", "verify", digest, code=3)
