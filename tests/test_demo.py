"""`immutrail demo` end to end: its outcomes, not its wording."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from immutrail.cli.main import app


def test_demo_catches_tampering_and_rollback_and_reruns_clean(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    for _ in range(2):  # a re-run starts clean
        result = CliRunner().invoke(app, ["demo", "--dir", str(target), "--format", "json"])
        assert result.exit_code == 0, result.stderr
        out = json.loads(result.stdout)
        assert out["ok"] is True
        assert out["entries"] == 6 and out["inclusion_verified"] and out["clean_verify_ok"]
        assert out["tamper_detected_at"] == out["tampered_index"] == 4
        assert out["rollback_detected"] is True
        assert (target / "witness" / "vkey").exists()


def test_demo_refuses_to_remove_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert (tmp_path / "precious.txt").read_text() == "keep me"
