"""Rego policies run with the limits of :mod:`immutrail.rego`, and ``policy set`` runs the
gate's own checks: a policy the gate could not use is refused with exit 2, nothing kept or
recorded, instead of failing every later ``promote``."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path

import pytest

from immutrail.policy import evaluate as policy_evaluate
from immutrail.policy.errors import PolicyFormatError
from immutrail.policy.evaluate import evaluate_rego
from immutrail.policy.evidence import Evidence
from immutrail.rego import Limits, RegoSession

from .test_gate_e2e import cli, keygen
from .test_policy_registry import REGO, _events

HEADER = "package immutrail.policy\n\n"
DEEP = 100_000


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ('deny := {"a": 1}', "deny must be a set of strings"),
        ('deny contains {"msg": "x"} if true', "deny must be a set of strings"),
        ("x := " + "[" * DEEP + "]" * DEEP, "nested more than 100 levels"),
        ('deny contains "m" if data.nowhere.f(1)', "Function not found: data.nowhere.f"),
        ('deny contains "m" if 1 / 0 > 0', "divide by zero"),
        ('deny contains "m" if false\nbreak_glass := "ops"', "break_glass must be a list"),
    ],
    ids=["deny-object", "deny-objects", "deep", "undefined-function", "divide", "break-glass"],
)
def test_policy_set_refuses_what_the_gate_could_not_use(
    tmp_path: Path, home: Path, body: str, fragment: str
) -> None:
    keygen(home, "ops")
    policy = tmp_path / "qa.rego"
    policy.write_text(HEADER + body + "\n", encoding="utf-8")
    before = _events(home, "policy.changed")

    result = cli(home, "policy", "set", "qa", str(policy), "--principal", "ops", code=2)

    assert result == {}
    assert _events(home, "policy.changed") == before
    assert not (home / "policies").exists() or not any((home / "policies").iterdir())


def test_policy_set_error_message(tmp_path: Path, home: Path) -> None:
    from typer.testing import CliRunner

    from immutrail.cli.main import app

    keygen(home, "ops")
    policy = tmp_path / "qa.rego"
    policy.write_text(HEADER + 'deny := {"a": 1}\n', encoding="utf-8")
    result = CliRunner().invoke(
        app, ["policy", "set", "qa", str(policy), "--principal", "ops", "--home", str(home)]
    )
    assert result.exit_code == 2
    assert "error:" in result.stderr and "deny must be a set of strings" in result.stderr


def _evidence() -> Evidence:
    return Evidence("sha256:" + "1" * 64, "qa", datetime(2026, 1, 1, tzinfo=UTC))


def test_gate_evaluation_over_the_limits_is_a_policy_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow = (
        HEADER + 'deny contains "m" if {\n'
        "  count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); i == j])"
        " < 0\n}\n"
    )
    monkeypatch.setattr(
        policy_evaluate, "RegoSession", functools.partial(RegoSession, limits=Limits(time_s=1))
    )
    with pytest.raises(PolicyFormatError, match="took longer than 1 s"):
        evaluate_rego(slow, "slow.rego", _evidence())


def test_normal_policy_still_decides() -> None:
    checks = evaluate_rego(REGO, "qa.rego", _evidence())
    assert [(c.rule, c.passed, c.message) for c in checks] == [
        ("rego", False, "qa needs an approval")
    ]
    assert policy_evaluate.rego_break_glass(REGO, "qa.rego") == ("ops",)
