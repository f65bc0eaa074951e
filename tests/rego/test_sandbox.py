"""User Rego runs in a child process with limits: absurd sources are refused before any
interpreter sees them, and a crash, memory exhaustion or timeout of the child is a typed error,
never the end of the calling process. Limits are parameters, kept small here so tests are fast."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from immutrail.rego import (
    MAX_NESTING,
    Limits,
    Module,
    RegoLimitError,
    RegoSession,
    RegoSourceError,
    RegoUnavailableError,
    nesting_depth,
    sandbox,
)

SMALL_MEMORY = 256 * 1024 * 1024
DEEP = 100_000


def deep_array(depth: int) -> str:
    return "package p\n\nx := " + "[" * depth + "]" * depth + "\n"


# A loop that allocates little: 9 million iterations, about a minute.
SLOW = """\
package p

x := count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); i == j])
"""

RULES = """\
package p

deny contains sprintf("%s is denied", [input.name]) if input.name != "ok"

off := false

broken contains "never" if data.nowhere.f(1)

divides := 1 / 0
"""


def test_nesting_depth_ignores_strings_and_comments() -> None:
    source = 'x := "[[[(" # {{{{\ny := `\n((( ]]]\n` z := [{"a": (1)}]\n'
    assert nesting_depth(source) == 3
    assert nesting_depth('x := "\\"[[["') == 0
    assert nesting_depth("]]] [") == 1  # unbalanced closers never make it negative


@pytest.mark.parametrize("opener", ["[", "{", "("])
def test_deep_nesting_is_refused_before_evaluation(opener: str) -> None:
    closer = {"[": "]", "{": "}", "(": ")"}[opener]
    source = "package p\n\nx := " + opener * DEEP + "1" + closer * DEEP + "\n"
    with pytest.raises(RegoSourceError, match=f"nested more than {MAX_NESTING} levels") as caught:
        RegoSession([Module("deep.rego", source)])
    assert caught.value.module == "deep.rego"


def test_too_large_sources_are_refused() -> None:
    limits = Limits(source_bytes=1000, total_source_bytes=1500)
    with pytest.raises(RegoSourceError, match="larger than 1000 bytes"):
        RegoSession([Module("a.rego", "package p\n" + "#" * 1000)], limits=limits)
    modules = [Module(f"{n}.rego", "package p\n" + "#" * 900) for n in "ab"]
    with pytest.raises(RegoSourceError, match="together are larger") as caught:
        RegoSession(modules, limits=limits)
    assert caught.value.module == "b.rego"


def test_nesting_past_the_precheck_that_crashes_the_interpreter_is_a_typed_error() -> None:
    # 100,000 levels overflow rego-cpp's stack: in-process, that was a segfault of immutrail.
    limits = Limits(nesting=10 * DEEP, memory_bytes=SMALL_MEMORY)
    with RegoSession([Module("deep.rego", deep_array(DEEP))], limits=limits) as session:
        with pytest.raises(RegoLimitError, match="crashed with signal SIGSEGV") as caught:
            session.evaluate(["data.p.x"])
        assert caught.value.ref == "data.p.x"
        # Once the child has failed, the session says so again rather than starting over.
        with pytest.raises(RegoLimitError, match="crashed"):
            session.evaluate(["data.p"])


def test_memory_exhaustion_is_a_typed_error() -> None:
    source = "package p\n\nx := numbers.range(1, 100000000)\n"
    limits = Limits(memory_bytes=SMALL_MEMORY)
    with (
        RegoSession([Module("range.rego", source)], limits=limits) as session,
        pytest.raises(RegoLimitError, match="used more than 256 MiB of memory"),
    ):
        session.evaluate(["data.p.x"])


def test_nesting_that_blows_memory_past_the_precheck_is_a_typed_error() -> None:
    # 3,000 nested objects take far more than 256 MiB in rego-cpp (the square of the depth).
    depth = 3000
    source = "package p\n\nx := " + '{"k": ' * depth + "1" + "}" * depth + "\n"
    limits = Limits(nesting=depth, memory_bytes=SMALL_MEMORY)
    with (
        RegoSession([Module("objects.rego", source)], limits=limits) as session,
        pytest.raises(RegoLimitError, match="used more than 256 MiB of memory"),
    ):
        session.evaluate(["data.p.x"])


def test_timeout_is_a_typed_error() -> None:
    limits = Limits(time_s=1)
    with (
        RegoSession([Module("slow.rego", SLOW)], limits=limits) as session,
        pytest.raises(RegoLimitError, match="took longer than 1 s") as caught,
    ):
        session.evaluate(["data.p.x"], {})
    assert caught.value.ref == "data.p.x"
    assert "evaluating data.p.x took longer than 1 s" in str(caught.value)


def test_undefined_false_and_failing_references_are_values() -> None:
    with RegoSession([Module("rules.rego", RULES)]) as session:
        values = session.evaluate(
            ["data.p.deny", "data.p.off", "data.p.nope", "data.nowhere", "data.p.broken"],
            {"name": "eve"},
        )
        deny, off, nope, nowhere, broken = values
        assert deny.defined and deny.value == ["eve is denied"] and deny.error is None
        assert off.defined and off.value is False  # not "undefined", regopy's trap
        assert not nope.defined and nope.error is None
        assert not nowhere.defined and nowhere.error is None
        # regopy's Output raised JSONDecodeError on this one: the output is an error node
        assert not broken.defined and broken.error == "Function not found: data.nowhere.f"
        (divides,) = session.evaluate(["data.p.divides"])
        assert divides.error == "divide by zero"  # strict built-in errors are on
        (whole,) = session.evaluate(["data.p"])
        assert whole.error is not None  # one failing rule fails the package


def test_compile_errors_name_the_module() -> None:
    modules = [
        Module("ok.rego", "package a\n\nx := 1\n"),
        Module("bad.rego", "package b\nx := [\n"),
    ]
    with RegoSession(modules) as session, pytest.raises(RegoSourceError) as caught:
        session.compile()
    assert caught.value.module == "bad.rego"
    assert "bad.rego:2" in caught.value.problem


def test_one_child_serves_many_documents() -> None:
    with RegoSession([Module("rules.rego", RULES)]) as session:
        session.compile()
        assert session._child is not None
        pid = session._child.process.pid
        names = [f"n{i}" for i in range(50)]
        for name in names:
            (deny,) = session.evaluate(["data.p.deny"], {"name": name})
            assert deny.value == [f"{name} is denied"]
        assert session._child.process.pid == pid
    assert session._child is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_child_that_cannot_start_is_unavailable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "child.py"
    broken.write_text("import sys\nsys.stderr.write('no regopy here')\nsys.exit(3)\n")
    monkeypatch.setattr(sandbox, "_CHILD", str(broken))
    with (
        RegoSession([Module("rules.rego", RULES)]) as session,
        pytest.raises(RegoUnavailableError, match="exit status 3 \\(no regopy here\\)"),
    ):
        session.compile()


def test_a_value_too_large_to_take_is_an_error_value() -> None:
    source = 'package p\n\nbig := concat("", ["a" | some i in numbers.range(1, 5000)])\n'
    with RegoSession([Module("big.rego", source)], limits=Limits(result_bytes=1000)) as session:
        (big,) = session.evaluate(["data.p.big"])
    assert not big.defined and big.error == "the value of data.p.big is larger than 1000 bytes"


def test_an_input_document_the_interpreter_cannot_take_is_a_typed_error() -> None:
    with RegoSession([Module("rules.rego", RULES)]) as session:
        with pytest.raises(RegoLimitError, match="could not take the input document"):
            session.evaluate(["data.p.deny"], {"name": "\udcff"})  # not encodable as UTF-8
        # the interpreter itself is fine: the next document is evaluated
        (deny,) = session.evaluate(["data.p.deny"], {"name": "ok"})
        assert deny.value == []
