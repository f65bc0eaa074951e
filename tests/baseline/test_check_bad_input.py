"""`immutrail check` with bad --allow-setuid values (refused, nothing recorded) and with rule
titles and evidence that look like rich markup (printed as written, never parsed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from immutrail.artifacts.builder import build
from immutrail.baseline.errors import BaselineInputError
from immutrail.baseline.runner import setuid_allowlist
from immutrail.cli.main import app

from .test_cli_check import ledger_size

runner = CliRunner()


@pytest.mark.parametrize(
    "path",
    ["", "/", "usr/local/bin/helper", "./helper", "/usr/local/bin/", "/usr//bin/x",
     "/usr/../etc/shadow", "/usr/./bin/x", "/a\x00b", "/" + "a" * 4096],
)  # fmt: skip
def test_allow_setuid_must_name_a_file_by_its_absolute_path(path: str) -> None:
    with pytest.raises(BaselineInputError, match="is not an absolute path to a file"):
        setuid_allowlist([path])


def test_allow_setuid_paths_are_kept_root_relative() -> None:
    allowed = setuid_allowlist(["/usr/bin/passwd", "/usr/local/bin/helper"])
    assert allowed == {"usr/bin/passwd", "usr/local/bin/helper"}


@pytest.mark.parametrize("path", ["", "usr/local/bin/helper", "/usr/../bin/su", "/"])
def test_bad_allow_setuid_exits_2_and_records_nothing(
    violating_repo: Path, home: Path, path: str
) -> None:
    build(violating_repo / "image.yaml", home, tag="bad:1")
    before = ledger_size(home)
    store = sorted(p.name for p in (home / "store" / "blobs" / "sha256").iterdir())

    result = runner.invoke(app, ["check", "bad:1", "--allow-setuid", path, "--home", str(home)])

    assert result.exit_code == 2, result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert f"error: --allow-setuid {path!r} is not an absolute path" in result.stderr
    assert ledger_size(home) == before
    assert sorted(p.name for p in (home / "store" / "blobs" / "sha256").iterdir()) == store


MARKUP_RULE = """\
package immutrail.rules.markup

import rego.v1

metadata := {
	"id": "ACME-MARKUP-001",
	"title": "[/x] no [bold]files",
	"severity": "low",
	"rationale": "A title and evidence that look like rich markup.",
	"remediation": "None: they must be printed as written.",
	"controls": ["[/control]"],
}

deny contains {"msg": sprintf("[/x] %s", [f.path]), "path": f.path} if {
	some f in input.files
	f.path == "/opt/app/main.py"
}
"""


def test_rule_title_and_evidence_that_look_like_markup(clean_repo: Path, home: Path) -> None:
    build(clean_repo / "image.yaml", home, tag="clean:1")
    rules = home.parent / "rules"
    rules.mkdir()
    (rules / "markup.rego").write_text(MARKUP_RULE)

    result = runner.invoke(app, ["check", "clean:1", "--rules", str(rules), "--home", str(home)])

    assert result.exit_code == 0, result.stderr  # a low finding does not fail the image
    assert "Traceback" not in result.stderr
    row = [line for line in result.stdout.splitlines() if "ACME-MARKUP-001" in line]
    assert row and "[/x] no" in row[0] and "FAIL" in row[0]  # the table folds long cells
    assert "[bold]files" in result.stdout and "/opt/app/main.py:" in result.stdout
