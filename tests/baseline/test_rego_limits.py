"""User rules over the limits of :mod:`immutrail.rego` are refused like any broken rule file:
exit 2, the file named, nothing attached or recorded, and immutrail itself never crashes."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from immutrail.artifacts.builder import build
from immutrail.baseline import rego as baseline_rego
from immutrail.baseline.errors import RuleFileError
from immutrail.rego import Limits, RegoSession

from .test_check import _store_state, run_check
from .test_cli_check import invoke

METADATA = 'metadata := {"id": "ACME-1", "title": "t", "severity": "low"}\n'


def rules_folder(tmp_path: Path, name: str, body: str) -> Path:
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / f"{name}.rego").write_text(
        f"package immutrail.rules.{name}\n\n{METADATA}\n{body}\n", encoding="utf-8"
    )
    return folder


def short_limits(monkeypatch: pytest.MonkeyPatch, limits: Limits) -> None:
    monkeypatch.setattr(baseline_rego, "RegoSession", functools.partial(RegoSession, limits=limits))


def test_deeply_nested_rule_exits_2_before_evaluation(clean_repo: Path, home: Path) -> None:
    # 100,000 levels used to segfault the whole process (exit 139)
    build(clean_repo / "image.yaml", home, tag="clean:1")
    before = _store_state(home)
    depth = 100_000
    folder = rules_folder(clean_repo.parent, "deep", "x := " + "[" * depth + "]" * depth)

    code, out, err = invoke(home, "clean:1", "--rules", str(folder), "--format", "json")

    assert code == 2 and out == ""
    assert "deep.rego" in err and "nested more than 100 levels" in err
    assert _store_state(home) == before


def test_undefined_function_exits_2_not_4(clean_repo: Path, home: Path) -> None:
    # regopy's output for this is not JSON: a JSONDecodeError escaped (exit 4)
    build(clean_repo / "image.yaml", home, tag="clean:1")
    before = _store_state(home)
    folder = rules_folder(clean_repo.parent, "undef", 'deny contains "m" if { data.nowhere.f(1) }')

    code, out, err = invoke(home, "clean:1", "--rules", str(folder), "--format", "json")

    assert code == 2 and out == ""
    assert "undef.rego" in err and "Function not found: data.nowhere.f" in err
    assert _store_state(home) == before


def test_rule_that_takes_too_long_is_a_rule_file_error(
    clean_repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(clean_repo / "image.yaml", home, tag="clean:1")
    before = _store_state(home)
    folder = rules_folder(
        clean_repo.parent,
        "slow",
        'deny contains "m" if {\n'
        "  count([1 | some i in numbers.range(1, 3000); some j in numbers.range(1, 3000); i == j])"
        " < 0\n"
        "}",
    )
    short_limits(monkeypatch, Limits(time_s=1))

    with pytest.raises(RuleFileError) as caught:
        run_check(home, "clean:1", rules_dir=folder)

    assert caught.value.path == "slow.rego"
    assert "took longer than 1 s" in caught.value.diagnostics()
    assert _store_state(home) == before


def test_rule_that_takes_too_much_memory_is_a_rule_file_error(
    clean_repo: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # numbers.range(1, 100000000) took 10-15 GB in-process
    build(clean_repo / "image.yaml", home, tag="clean:1")
    before = _store_state(home)
    folder = rules_folder(
        clean_repo.parent,
        "range",
        'deny contains "m" if { count(numbers.range(1, 100000000)) < 0 }',
    )
    short_limits(monkeypatch, Limits(memory_bytes=256 * 1024 * 1024))

    with pytest.raises(RuleFileError) as caught:
        run_check(home, "clean:1", rules_dir=folder)

    assert caught.value.path == "range.rego"
    assert "used more than 256 MiB of memory" in caught.value.diagnostics()
    assert _store_state(home) == before
