"""The release gate end to end, through the CLI, on real OSV data and real builds.

The issue's story: an image with a known vulnerable package is scanned, the gate refuses it and
says why; the patched rebuild passes the scan, the baseline and its test, is approved by two other
people, signed, and promoted; every step is in the ledger.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from artifacts.conftest import commit_all, git, make_repo, write_files
from immutrail.cli.main import app
from immutrail.ledger.home import open_ledger
from immutrail.ledger.storage.interface import EntryFilter
from scan.conftest import EXTRA, OSV, dist_info, npm_package

runner = CliRunner()
# An exception that is in force whenever the tests run (a fixed date would expire one day).
UNTIL = (datetime.now(UTC) + timedelta(days=60)).strftime("%Y-%m-%dT00:00:00Z")

DEFINITION = """\
base: scratch
layers:
  - source: rootfs
    destination: /
user: "1000:1000"
healthcheck: {test: ["CMD", "/bin/true"], interval: 10s}
"""


def cli(home: Path, *args: str, code: int = 0) -> dict[str, Any]:
    options = ["--home", str(home), "--format", "json"]
    words = list(args)
    at = words.index("--") if "--" in words else len(words)  # options go before a test command
    result = runner.invoke(app, [*words[:at], *options, *words[at:]])
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    data: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {}
    return data


def keygen(home: Path, principal: str) -> str:
    made = cli(home, "keys", "generate", "--principal", principal, "--no-passphrase")
    return str(made.get("keyid") or made["key"]["keyid"])


def failed_rules(decision: dict[str, Any]) -> dict[str, str]:
    return {c["rule"]: c["message"] for c in decision["checks"] if not c["passed"]}


def test_vulnerable_refused_patched_promoted(tmp_path: Path, home: Path) -> None:
    cli(home, "vulndb", "import", str(OSV), str(EXTRA))
    for person in ("bob", "carol", "rel", "user:test"):
        keygen(home, person)

    repo = make_repo(
        tmp_path / "repo",
        {
            "image.yaml": DEFINITION,
            **dist_info("requests", "2.19.0"),
            **npm_package("minimist", "1.2.5"),
            "rootfs/app/run": ("#!/bin/sh\necho ok\n", 0o755),
        },
    )
    v1 = cli(home, "build", str(repo / "image.yaml"), "--tag", "app:1")["digest"]
    cli(home, "scan", v1)
    cli(home, "check", v1)
    cli(home, "test", v1, "--name", "smoke", "--", "test", "-x", "app/run")

    refused = cli(home, "promote", v1, "--to", "prod", code=1)
    assert refused["allowed"] is False
    why = failed_rules(refused)
    assert (
        "GHSA-xvch-5gv4-984h (critical) in minimist 1.2.5, fixed in 1.2.6" in why["vulnerabilities"]
    )
    assert "GHSA-x84v-xcm2-53pg (high) in requests 2.19.0" in why["vulnerabilities.exceptions"]
    assert "0 of 2 approval(s)" in why["approvals"] and "signature" in why
    assert "provenance" not in why and "baseline" not in why and "tests" not in why
    assert not (home / "desired-state" / "prod" / "app.json").exists()

    # The patched rebuild: same repository, fixed versions, a new commit on main.
    (repo / "rootfs/usr/lib/python3/dist-packages/requests-2.19.0.dist-info/METADATA").unlink()
    write_files(repo, {**dist_info("requests", "2.31.0"), **npm_package("minimist", "1.2.6")})
    commit_all(repo, "bump requests and minimist")
    v2 = cli(home, "build", str(repo / "image.yaml"), "--tag", "app:2")["digest"]
    assert v2 != v1
    cli(home, "scan", v2)
    cli(home, "check", v2)
    cli(home, "test", v2, "--name", "smoke", "--", "test", "-x", "app/run")
    cli(home, "sign", v2, "--principal", "rel")
    # The builder approving its own image does not count (separation of duties).
    cli(home, "approve", v2, "--env", "prod", "--principal", "user:test")
    cli(home, "approve", v2, "--env", "prod", "--principal", "bob")
    cli(home, "approve", v2, "--env", "staging", "--principal", "carol")  # wrong environment
    short = cli(home, "promote", v2, "--to", "prod", code=1)
    assert set(failed_rules(short)) == {"approvals"}
    message = failed_rules(short)["approvals"]
    assert "1 of 2" in message and "user:test built or authored this image" in message
    assert "approves environment 'staging', not 'prod'" in message

    cli(home, "approve", v2, "--env", "prod", "--principal", "carol")
    dry = cli(home, "promote", v2, "--to", "prod", "--dry-run")
    assert dry["allowed"] and dry["dry_run"]
    promoted = cli(home, "promote", v2, "--to", "prod")
    assert promoted["allowed"] and not promoted["override"]
    desired = json.loads((home / "desired-state" / "prod" / "app.json").read_text())["image"]
    assert desired["digest"] == v2 and desired["ledger_index"] == promoted["ledger_index"]
    assert desired["image"] == "app:2"
    # The desired-state repository has the promotion as a commit by the promoting principal.
    log = git(home / "desired-state", "log", "--format=%an%x00%B", "-1").split("\0")
    assert log[0] == "user:test"
    assert f"digest: {v2}" in log[1] and f"ledger-index: {promoted['ledger_index']}" in log[1]
    assert "decision: allowed by policy" in log[1]
    shown = cli(home, "policy", "show", "prod")
    assert shown["format"] == "built-in" and shown["services"]["app"]["digest"] == v2

    ledger = open_ledger(home)
    try:
        types = [row.type for row in ledger.entries(EntryFilter())]
        decisions = list(ledger.entries(EntryFilter(type="promotion.decided")))
    finally:
        ledger.close()
    for step in (
        "vulndb.imported",
        "artifact.built",
        "scan.completed",
        "baseline.checked",
        "image.tested",
        "image.signed",
        "image.approved",
        "promotion.decided",
    ):
        assert step in types, step
    assert [d.subject for d in decisions] == [v1, v2, v2]
    assert cli(home, "ledger", "verify")["ok"] is True


def test_exception_and_break_glass(tmp_path: Path, home: Path) -> None:
    cli(home, "vulndb", "import", str(OSV), str(EXTRA))
    for person in ("sec", "mallory"):
        keygen(home, person)
    policy = tmp_path / "staging.yaml"
    policy.write_text(
        "vulnerabilities: {block: [critical], need_exception: [high]}\n"
        "baseline: {required: false}\n"
        "break_glass: [sec]\n"
        "exceptions: {granters: [sec]}\n"
    )
    cli(home, "policy", "set", "staging", str(policy), "--principal", "sec")
    repo = make_repo(
        tmp_path / "repo", {"image.yaml": DEFINITION, **dist_info("requests", "2.19.0")}
    )
    digest = cli(home, "build", str(repo / "image.yaml"), "--tag", "app:1")["digest"]
    cli(home, "scan", digest)
    assert "vulnerabilities.exceptions" in failed_rules(
        cli(home, "promote", digest, "--to", "staging", code=1)
    )

    # An exception by someone the policy does not name does not count; by `sec` it does,
    # matched through the finding's alias (the CVE id).
    cli(
        home,
        "exception",
        "grant",
        "CVE-2018-18074",
        "--env",
        "staging",
        "--expires",
        "2099-01-01T00:00:00Z",
        "--reason",
        "x",
        "--principal",
        "mallory",
        code=2,
    )
    cli(
        home,
        "exception",
        "grant",
        "CVE-2018-18074",
        "--env",
        "staging",
        "--expires",
        UNTIL,
        "--reason",
        "no proxies in use",
        "--principal",
        "mallory",
    )
    assert not cli(home, "promote", digest, "--to", "staging", code=1)["allowed"]
    cli(
        home,
        "exception",
        "grant",
        "CVE-2018-18074",
        "--env",
        "staging",
        "--expires",
        UNTIL,
        "--reason",
        "no proxies in use",
        "--principal",
        "sec",
    )
    listed = cli(home, "exception", "list", "--env", "staging")["exceptions"]
    assert {e["granted_by"] for e in listed} == {"mallory", "sec"}
    ok = cli(home, "promote", digest, "--to", "staging")
    passed = {c["rule"]: c["message"] for c in ok["checks"]}
    assert f"exception by sec until {UNTIL}" in passed["vulnerabilities"]

    # Break-glass: only `sec`, only signed, only with a reason; flagged in the decision.
    repo2 = make_repo(
        tmp_path / "repo2",
        {"image.yaml": DEFINITION, **npm_package("minimist", "1.2.5")},
    )
    bad = cli(home, "build", str(repo2 / "image.yaml"), "--tag", "app:9")["digest"]
    cli(home, "scan", bad)
    cli(home, "promote", bad, "--to", "staging", "--override", code=2)  # no reason
    cli(
        home,
        "promote",
        bad,
        "--to",
        "staging",
        "--override",
        "--reason",
        "r",
        "--principal",
        "mallory",
        code=2,
    )
    forced = cli(
        home,
        "promote",
        bad,
        "--to",
        "staging",
        "--override",
        "--reason",
        "INC-1",
        "--principal",
        "sec",
    )
    assert forced["allowed"] and forced["override"]
    assert "vulnerabilities" in failed_rules(forced)
    shown = cli(home, "policy", "show", "staging")
    assert shown["format"] == "yaml" and shown["services"]["app"]["override"] is True
    assert shown["services"]["app"]["previous"] == digest


def test_detached_head_and_feature_branch_are_not_protected(tmp_path: Path, home: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"image.yaml": DEFINITION, "rootfs/a": "1\n"})
    git(repo, "checkout", "-q", "-b", "feature")
    feature = cli(home, "build", str(repo / "image.yaml"), "--tag", "f:1")["digest"]
    why = failed_rules(cli(home, "promote", feature, "--to", "prod", "--dry-run", code=1))
    assert (
        "built from refs/heads/feature, not from a protected branch (main)"
        in why["provenance.branch"]
    )
    commit_all(repo, "detached")
    git(repo, "checkout", "-q", "--detach")
    detached = cli(home, "build", str(repo / "image.yaml"), "--tag", "d:1")["digest"]
    why = failed_rules(cli(home, "promote", detached, "--to", "prod", "--dry-run", code=1))
    assert "an unnamed ref (detached HEAD)" in why["provenance.branch"]
    # a dry run records nothing
    ledger = open_ledger(home)
    try:
        assert not list(ledger.entries(EntryFilter(type="promotion.decided")))
    finally:
        ledger.close()
