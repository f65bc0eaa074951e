"""Hostile YAML through the strict reader and its three callers (build, policy set, env
declare): NUL bytes and deep nesting are StrictYamlError, exit 2, and nothing is written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from immutrail.artifacts.strict_yaml import MAX_DEPTH, StrictYamlError, load
from immutrail.cli.main import app
from immutrail.ledger.home import open_ledger

from .conftest import make_repo

# Both under the callers' size limits (64 KiB for a declaration), far over Python's recursion one.
DEEP_FLOW = "[" * 30_000 + "]" * 30_000
DEEP_BLOCK = "- " * 30_000 + "x\n"  # block sequences nested on one line
HOSTILE = {
    "nul": ("base: scratch\nlabels: {a: \0}\n", "U+0000"),
    "deep-flow": (DEEP_FLOW, f"nested deeper than {MAX_DEPTH}"),
    "deep-block": (DEEP_BLOCK, f"nested deeper than {MAX_DEPTH}"),
}


@pytest.mark.parametrize(("text", "gist"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_yaml_is_a_strict_yaml_error(text: str, gist: str) -> None:
    with pytest.raises(StrictYamlError, match=re.escape(gist)):
        load(text)


def test_deep_nesting_is_refused_before_pyyaml_recurses() -> None:
    for text in ("[" * 100_000 + "]" * 100_000, "{a: " * 100_000 + "}" * 100_000):
        with pytest.raises(StrictYamlError, match="nested deeper") as caught:
            load(text)
        assert not isinstance(caught.value.__context__, RecursionError)


def test_nul_error_names_its_line() -> None:
    with pytest.raises(StrictYamlError) as caught:
        load("a: 1\nb: 2\nc: \0\n")
    assert caught.value.line == 3


def test_depth_limit_is_exact() -> None:
    assert load("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).value is not None
    with pytest.raises(StrictYamlError, match="nested deeper"):
        load("[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2))
    # Mappings at depths 0..63, the last one's value at depth 64: the limit, allowed.
    block = "".join(" " * depth + "k:\n" for depth in range(MAX_DEPTH - 1))
    assert load(block + " " * (MAX_DEPTH - 1) + "k: 1\n").value is not None
    with pytest.raises(StrictYamlError, match="nested deeper"):
        load(block + " " * (MAX_DEPTH - 1) + "k: [1]\n")


def _home_state(home: Path) -> tuple[int, list[str]]:
    with open_ledger(home) as ledger:
        size = ledger.head().size
    files = sorted(
        str(p.relative_to(home))
        for p in home.rglob("*")
        if p.is_file() and not p.name.endswith(("-wal", "-shm", "-journal"))
    )
    return size, files


def _run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args, "--home", str(home)])
    return result.exit_code, " ".join(result.stderr.split())


@pytest.mark.parametrize(("text", "gist"), HOSTILE.values(), ids=HOSTILE.keys())
def test_callers_refuse_hostile_yaml_and_write_nothing(
    text: str, gist: str, home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    repo = make_repo(tmp_path / "repo", {"image.yaml": text})
    code, stderr = _run(home, "keys", "generate", "--principal", "ops", "--no-passphrase")
    assert code == 0, stderr
    before = _home_state(home)
    for args in (
        ("build", str(repo / "image.yaml"), "--actor", "user:test"),
        ("policy", "set", "prod", str(path), "--principal", "ops"),
        ("env", "declare", "prod", "hello", str(path), "--actor", "user:test"),
    ):
        code, stderr = _run(home, *args)
        assert code == 2, (args, stderr)
        assert gist in stderr and "Traceback" not in stderr, (args, stderr)
        assert _home_state(home) == before, args
