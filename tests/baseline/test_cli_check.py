"""The `immutrail check` command end to end: exit codes, JSON and text output, bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from immutrail.artifacts.builder import build
from immutrail.baseline import baseline_outcome
from immutrail.cli.main import app
from ledger_state import ledger_size

from .test_check import RULES_DIR, events

runner = CliRunner()


def invoke(home: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["check", *args, "--home", str(home)])
    return result.exit_code, result.stdout, result.stderr


def test_clean_image_exits_0_with_the_full_result(clean_repo: Path, home: Path) -> None:
    digest = build(clean_repo / "image.yaml", home, tag="clean:1").digest

    code, out, err = invoke(home, "clean:1", "--rules", str(RULES_DIR / "good"), "--format", "json")

    assert code == 0, err
    data = json.loads(out)
    assert data["schema_version"] == 1 and data["digest"] == digest and data["passed"] is True
    assert baseline_outcome(data["predicate"]).passed
    assert data["ledger_index"] == events(home)[-1].index


def test_failing_image_exits_1_and_is_recorded(violating_repo: Path, home: Path) -> None:
    build(violating_repo / "image.yaml", home, tag="bad:1")

    code, out, _ = invoke(home, "bad:1", "--actor", "ci:pipeline")

    assert code == 1
    assert "IMT-BL-006" in out and "FAILED" in out and "/opt/app/id_ecdsa" in out
    assert "BEGIN" not in out  # the key itself is never printed
    [row] = events(home)
    event = json.loads(row.data)
    assert event["actor"] == "ci:pipeline" and event["payload"]["passed"] is False
    assert "IMT-BL-006" in event["payload"]["failed"]


def test_fail_on_critical_lets_high_findings_pass(violating_repo: Path, home: Path) -> None:
    build(violating_repo / "image.yaml", home, tag="bad:1")

    code, out, _ = invoke(home, "bad:1", "--fail-on", "critical", "--format", "json")

    assert code == 1  # the image holds a private key: critical
    assert json.loads(out)["predicate"]["fail_on"] == "critical"


def test_unknown_image_and_bad_rules_exit_2_and_write_nothing(clean_repo: Path, home: Path) -> None:
    build(clean_repo / "image.yaml", home, tag="clean:1")
    before = ledger_size(home)

    code, out, err = invoke(home, "nope:1")
    assert code == 2 and out == "" and "nope:1" in err

    code, out, err = invoke(
        home, "clean:1", "--rules", str(RULES_DIR / "syntax"), "--format", "json"
    )
    # rego-cpp prints compile errors on stdout; none of it may reach ours
    assert code == 2 and out == ""
    assert "broken.rego" in err and "line" not in out

    code, _, err = invoke(home, "clean:1", "--rules", str(RULES_DIR / "missing"))
    assert code == 2 and "not a folder" in err

    code, _, err = invoke(home, "clean:1", "--fail-on", "severe")
    assert code == 2

    assert ledger_size(home) == before


def test_help_documents_the_exit_codes() -> None:
    result = runner.invoke(app, ["check", "--help"])
    assert result.exit_code == 0
    assert "0 passed" in result.stdout and "2 usage" in result.stdout
