"""The text printer of `scan`: user text from a scanner report prints as text (it was parsed as
rich markup, exit 4 after the scan was recorded), and 200,000 findings print as one aligned
table (how fast: bench/bench_scan.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from typer.testing import CliRunner

from immutrail.artifacts.builder import BuildResult
from immutrail.cli.main import app
from immutrail.cli.scan import _findings_table
from immutrail.scan.attestation import Finding

from .conftest import REPORTS
from .test_reports_and_cli import ledger_types


def test_markup_in_a_report_prints_as_text(
    tmp_path: Path, vulnerable_image: BuildResult, db_home: Path
) -> None:
    report = json.loads((REPORTS / "grype-golang-x-net-epss.json").read_text())
    [match] = report["matches"]
    for number, hostile in enumerate(["GHSA-[/x]", "[bold]GHSA-b[/bold]", "GHSA-\x1b[31m"]):
        more = copy.deepcopy(match)
        more["vulnerability"]["id"] = hostile
        more["relatedVulnerabilities"] = []  # no shared alias: not merged with the real one
        more["artifact"]["name"] = f"[/pkg{number}]"
        more["artifact"]["purl"] = f"pkg:golang/example.com/pkg{number}@v0.9.0"
        report["matches"].append(more)
    path = tmp_path / "grype.json"
    path.write_text(json.dumps(report))
    result = CliRunner().invoke(
        app, ["scan", vulnerable_image.digest, "--from-report", str(path), "--home", str(db_home)]
    )
    assert result.exit_code == 0, result.stderr
    assert "GHSA-[/x]" in result.stdout and "[bold]GHSA-b[/bold]" in result.stdout
    assert "[/pkg0]" in result.stdout
    assert "\x1b" not in result.stdout and "GHSA-\\x1b[31m" in result.stdout
    assert ledger_types(db_home)[-1] == "scan.completed"


def finding(number: int) -> Finding:
    level = ("low", "medium", "high", "critical", "unknown")[number % 5]
    return Finding(
        f"CVE-2024-{number}", (), f"pkg{number % 500}", "1.0.0", "", "PyPI", level, 5.0, ("1.1",)
    )


def test_two_hundred_thousand_findings_print_as_one_table() -> None:
    findings = [finding(n) for n in range(200_000)]
    text = _findings_table(findings)
    lines = text.splitlines()
    assert len(lines) == 1 + len(findings)
    assert lines[0].split() == ["id", "package", "installed", "fixed", "level", "score"]
    assert lines[-1].split() == ["CVE-2024-199999", "pkg499", "1.0.0", "1.1", "unknown", "5.0"]
    assert len({line.index("pkg") for line in lines[1:]}) == 1  # aligned columns


def test_cells_are_one_line() -> None:
    hostile = Finding("A\nB", (), "p\x07", "1", "", "", "low", None, ())
    [_, row] = _findings_table([hostile]).splitlines()
    assert row.split() == ["A\\nB", "p\\x07", "1", "-", "low"]
