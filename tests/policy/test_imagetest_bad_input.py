"""`immutrail test` with hostile input: refused with exit 2 before anything runs or is recorded,
bounded memory whatever the command writes, user text printed as text."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from immutrail.artifacts.builder import build
from immutrail.artifacts.store import Store
from immutrail.cli.main import app
from immutrail.ledger.home import open_ledger
from immutrail.ledger.storage.interface import EntryFilter
from immutrail.policy import imagetest
from immutrail.policy.errors import PolicyInputError
from immutrail.policy.imagetest import MAX_NAME_CHARS, check_test_request, run_image_test

runner = CliRunner()


def entry_count(home: Path) -> int:
    ledger = open_ledger(home)
    try:
        return sum(1 for _ in ledger.entries(EntryFilter()))
    finally:
        ledger.close()


def blob_count(home: Path) -> int:
    return sum(1 for _ in (home / "store" / "blobs" / "sha256").iterdir())


@pytest.fixture
def image(repo: Path, home: Path) -> str:
    return build(repo / "image.yaml", home).digest


@pytest.mark.parametrize(
    ("args", "gist"),
    [
        (["--timeout", "nan"], "--timeout nan"),
        (["--timeout", "inf"], "--timeout inf"),
        (["--timeout", "1e308"], "at most 86400"),
        (["--timeout", "0"], "more than 0"),
        (["--timeout", "-1"], "more than 0"),
        (["--name", "x" * 70_000], f"at most {MAX_NAME_CHARS} characters"),
        (["--name", "a\x1b[31mb"], "control or invisible"),
        (["--name", "a\u202eb"], "control or invisible"),
        (["--name", " "], "cannot be empty"),
    ],
)
def test_test_bad_options_change_nothing(
    image: str, home: Path, args: list[str], gist: str
) -> None:
    before = (entry_count(home), blob_count(home))
    result = runner.invoke(app, ["test", image, *args, "--home", str(home), "--", "true"])
    assert result.exit_code == 2, result.output
    assert gist in result.stderr
    assert (entry_count(home), blob_count(home)) == before


def test_test_empty_command_is_a_usage_error(image: str, home: Path) -> None:
    before = (entry_count(home), blob_count(home))
    result = runner.invoke(app, ["test", image, "--home", str(home), "--", ""])
    assert result.exit_code == 2, result.output
    assert "give the test command" in result.stderr
    assert (entry_count(home), blob_count(home)) == before


def test_test_command_that_cannot_run_is_an_input_error(image: str, home: Path) -> None:
    # "." is a folder: exec fails with EACCES, which is the request's fault, not the machine's
    result = runner.invoke(app, ["test", image, "--home", str(home), "--name", "t", "--", "."])
    assert result.exit_code == 2, result.output
    assert "cannot run the test command" in result.stderr


def test_test_name_with_markup_prints_as_text(image: str, home: Path) -> None:
    result = runner.invoke(
        app, ["test", image, "--home", str(home), "--name", "[/x] [bold]y", "--", "true"]
    )
    assert result.exit_code == 0, result.output
    assert "PASSED [/x] [bold]y: exit 0" in result.stdout


def test_check_test_request_derives_and_checks_the_name() -> None:
    assert check_test_request(["/usr/bin/pytest", "-q"], None, 10) == "pytest"
    with pytest.raises(PolicyInputError, match="give --name"):
        check_test_request(["/"], None, 10)
    with pytest.raises(PolicyInputError, match="NUL"):
        check_test_request(["sh", "a\0b"], None, 10)
    with pytest.raises(PolicyInputError, match="give the test command"):
        check_test_request([], None, 10)


def test_output_past_the_cap_is_dropped_and_recorded(
    image: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(imagetest, "MAX_OUTPUT_BYTES", 1000)
    store, ledger = Store.for_home(home), open_ledger(home)
    try:
        run = run_image_test(
            store, ledger, home, "ci", image, ["sh", "-c", "head -c 300000 /dev/zero; exit 0"]
        )
    finally:
        ledger.close()
    assert run.passed and run.output_truncated  # drained to its end, not killed at the cap
    assert store.read_blob(run.output_digest) == b"\0" * 1000


def test_endless_output_is_bounded_and_timed_out(
    image: str, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `cat /dev/zero` once reached 9.3 GB before the cut: now only the cap is ever kept
    monkeypatch.setattr(imagetest, "MAX_OUTPUT_BYTES", 4096)
    store, ledger = Store.for_home(home), open_ledger(home)
    try:
        run = run_image_test(
            store, ledger, home, "ci", image, ["cat", "/dev/zero"], name="zero", timeout_s=1
        )
    finally:
        ledger.close()
    assert not run.passed and run.exit_code == -1 and run.output_truncated
    output = store.read_blob(run.output_digest)
    assert output == b"\0" * 4096 + b"\n[timed out after 1 s]\n"


def test_timeout_ends_the_commands_children_too(image: str, home: Path) -> None:
    store, ledger = Store.for_home(home), open_ledger(home)
    started = time.monotonic()
    try:
        # the background sleep keeps the output pipe open: only killing the group ends it
        run = run_image_test(
            store, ledger, home, "ci", image, ["sh", "-c", "sleep 60 & sleep 60"], timeout_s=1
        )
    finally:
        ledger.close()
    assert not run.passed and run.exit_code == -1
    assert time.monotonic() - started < 30


def test_json_result_reports_truncation(image: str, home: Path) -> None:
    result = runner.invoke(
        app, ["test", image, "--home", str(home), "--format", "json", "--", "true"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["output"]["truncated"] is False
