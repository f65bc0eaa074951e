"""Bad input to `audit evidence` and `audit report`: outputs that are not regular files, and
report windows too wide to build. Each exits 2 with one `error:` line and writes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from immutrail.audit.errors import AuditInputError
from immutrail.audit.reading import LedgerSource
from immutrail.audit.report import build_report
from immutrail.audit.report.window import MAX_WINDOW_DAYS, check_span, weeks
from immutrail.audit.verify import verify_bundle
from immutrail.cli.main import app
from immutrail.ledger.event import time_us
from immutrail.ledger.home import open_ledger
from output_paths import not_outputs

from .conftest import World

runner = CliRunner()
DAY_US = 86_400_000_000


def run(world: World, *args: str, code: int) -> str:
    result = runner.invoke(app, ["audit", *args, "--home", str(world.home)])
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return " ".join(result.stderr.split())


def evidence(world: World, out: Path, *extra: str, code: int) -> str:
    return run(world, "evidence", world.v1, "-o", str(out), *extra, code=code)


def report(world: World, out: Path, *extra: str, start: str = "", end: str = "", code: int) -> str:
    window = ["--from", start or world.before_any, "--to", end or world.end]
    return run(world, "report", "--framework", "soc2", *window, "-o", str(out), *extra, code=code)


def unchanged(tmp_path: Path) -> None:
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["dangling.json", "fifo.json", "folder.json", "kept.json", "linked.json"]
    assert (tmp_path / "fifo.json").is_fifo()
    assert os.readlink(tmp_path / "dangling.json") == str(tmp_path / "nowhere.json")
    assert os.readlink(tmp_path / "linked.json") == str(tmp_path / "kept.json")
    assert (tmp_path / "kept.json").read_text() == "keep me"
    assert not any((tmp_path / "folder.json").iterdir())


@pytest.mark.parametrize("overwrite", [False, True])
def test_outputs_that_are_not_regular_files_are_refused(
    world: World, tmp_path: Path, overwrite: bool
) -> None:
    flag = ("--overwrite",) if overwrite else ()
    for path, message in not_outputs(tmp_path, ".json").values():
        assert f"error: {path} {message}" in evidence(world, path, *flag, code=2)
        assert f"error: {path} {message}" in report(
            world, path, *flag, "--output-format", "json", code=2
        )
    unchanged(tmp_path)


def test_a_regular_file_is_still_replaced_when_asked(world: World, tmp_path: Path) -> None:
    out = tmp_path / "b.json"
    out.write_text("old")
    evidence(world, out, "--overwrite", code=0)
    assert verify_bundle(out.read_bytes(), vkey=world.vkey).ok
    out = tmp_path / "r.html"
    out.write_text("old")
    report(world, out, "--overwrite", code=0)
    assert out.read_text().startswith("<!DOCTYPE html>")


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z"),  # was an OverflowError
        ("2016-01-01T00:00:00Z", "9999-12-01T00:00:00Z"),  # was 25 s and 54 MB of HTML
        ("2016-01-01T00:00:00Z", "2026-01-01T00:00:00.000001Z"),  # one microsecond too wide
        ("0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59-00:00"),
    ],
)
def test_a_window_over_ten_years_is_refused_before_any_work(
    world: World, tmp_path: Path, start: str, end: str
) -> None:
    out = tmp_path / "r.html"
    text = report(world, out, start=start, end=end, code=2)
    assert f"longer than {MAX_WINDOW_DAYS} days (ten years)" in text and text.startswith("error:")
    assert not out.exists() and not any(tmp_path.iterdir())
    with open_ledger(world.home) as ledger, pytest.raises(AuditInputError, match="ten years"):
        build_report(LedgerSource(ledger, None), "soc2", start, end)  # the web UI's way in


@pytest.mark.parametrize(
    ("start", "end", "code"),
    [
        ("2016-01-01T00:00:00Z", "2026-01-01T00:00:00Z", 0),  # ten calendar years: 3653 days
        ("9990-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", 0),  # the calendar's last week
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z", 0),
        ("0001-01-01T00:00:00+01:00", "0001-01-02T00:00:00Z", 2),  # year 0 in UTC
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00", 2),  # year 10000 in UTC
        ("9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", 2),  # backwards
    ],
)
def test_windows_at_the_calendars_ends_never_crash(
    world: World, tmp_path: Path, start: str, end: str, code: int
) -> None:
    out = tmp_path / "r.csv"
    report(world, out, start=start, end=end, code=code)
    assert out.exists() == (code == 0)


def test_weeks_reach_the_calendars_last_monday_and_refuse_wider_windows() -> None:
    last = weeks(time_us("9999-12-20T00:00:00Z"), time_us("9999-12-31T23:59:59.999999Z"))
    assert [name for name, _ in last] == ["9999-W51", "9999-W52"]
    start = time_us("2016-01-01T00:00:00Z")
    assert len(weeks(start, start + MAX_WINDOW_DAYS * DAY_US)) <= 523
    check_span(start, start + MAX_WINDOW_DAYS * DAY_US)
    with pytest.raises(AuditInputError, match="split it"):
        check_span(start, start + MAX_WINDOW_DAYS * DAY_US + 1)
    with pytest.raises(AuditInputError):
        weeks(time_us("0001-01-01T00:00:00Z"), time_us("9999-12-31T23:59:59Z"))
