"""Runtime rules over the limits of :mod:`immutrail.rego`: ``drift rules set`` refuses them
with exit 2 and records nothing; rules that exceed a limit on a real instance's document are a
:class:`RuleEvaluationError`; normal rules run for many instances in one child process."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.test_admission import cli
from immutrail.drift.rules import (
    EMPTY_INPUT,
    SAMPLE_INPUT,
    Evaluator,
    RuleEvaluationError,
    RulesError,
    RuleSet,
    parse_rules,
)
from immutrail.rego import Limits

from .test_rules import RULES
from .watching import events

HEADER = b"package immutrail.drift\n\n"
DEEP = 15_000
"""Fits in the 32 KiB a rule file may have; took 10-15 GB in-process."""
SLOW = (
    b'alert contains "m" if {\n'
    b"  count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); i == j])"
    b" > 0\n  input.instance.port == 1\n}\n"
)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"x := " + b"[" * DEEP + b"]" * DEEP, "nested more than 100 levels"),
        (b'alert contains "x" if { data.nowhere.f(1) }', "Function not found: data.nowhere.f"),
        (b'alert := {"a": 1}\nreplace := 5', "alert must be a set"),
    ],
    ids=["deep", "undefined-function", "not-sets"],
)
def test_rules_set_refuses_them_and_records_nothing(
    home: Path, tmp_path: Path, body: bytes, fragment: str
) -> None:
    path = tmp_path / "prod.rego"
    path.write_bytes(HEADER + body + b"\n")
    with pytest.raises(RulesError, match=fragment):
        parse_rules(path.read_bytes(), path.name)
    cli(home, "drift", "rules", "set", "prod", str(path), code=2)
    assert events(home, "drift.rules.changed") == []


def test_rules_over_the_memory_or_time_limit_are_refused() -> None:
    greedy = HEADER + b'alert contains "m" if { count(numbers.range(1, 100000000)) < 0 }\n'
    with pytest.raises(RulesError, match="used more than 256 MiB of memory"):
        parse_rules(greedy, "greedy.rego", limits=Limits(memory_bytes=256 * 1024 * 1024))
    with pytest.raises(RulesError, match="took longer than 1 s"):
        parse_rules(HEADER + SLOW, "slow.rego", limits=Limits(time_s=1))


def test_a_limit_met_on_a_real_document_is_a_rule_evaluation_error() -> None:
    # On the sample documents the slow part is never reached (port is 8080 or null)...
    source = (HEADER + SLOW.replace(b"  count(", b'  input.instance.id == "x"\n  count(')).decode()
    rules = RuleSet("slow.rego", source, "sha256:" + "0" * 64)
    with Evaluator(rules, limits=Limits(time_s=1)) as evaluator:
        assert evaluator.evaluate(SAMPLE_INPUT) == []
        # ...on this instance it is.
        odd = {**SAMPLE_INPUT, "instance": {**SAMPLE_INPUT["instance"], "id": "x"}}
        with pytest.raises(RuleEvaluationError, match="took longer than 1 s"):
            evaluator.evaluate(odd)


def test_one_child_evaluates_every_instance_of_a_check() -> None:
    rules = RuleSet("prod.rego", RULES, "sha256:" + "0" * 64)
    with Evaluator(rules) as evaluator:
        child = evaluator._session._child
        assert child is not None
        for n in range(20):
            instance = {**SAMPLE_INPUT["instance"], "id": f"i-{n}"}
            outcomes = evaluator.evaluate({**SAMPLE_INPUT, "instance": instance})
            assert {o.rule for o in outcomes} == {"uid", "config"}
            assert evaluator.evaluate(EMPTY_INPUT) == []
        assert evaluator._session._child is child
