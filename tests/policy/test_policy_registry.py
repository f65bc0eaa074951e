"""Policies as files the user owns: Rego and YAML, recorded when set, guarded when kept."""

from __future__ import annotations

import json
from pathlib import Path

from artifacts.conftest import commit_all, git, make_repo
from immutrail.ledger.event import Event
from immutrail.ledger.home import open_ledger
from immutrail.ledger.storage.interface import EntryFilter

from .test_gate_e2e import DEFINITION, cli, failed_rules, keygen

REGO = """\
package immutrail.policy

deny contains msg if {
    not input.provenance
    msg := "no provenance"
}

deny contains msg if {
    count(input.approvals) < 1
    msg := sprintf("%s needs an approval", [input.environment])
}

break_glass := ["ops"]
"""


def _events(home: Path, kind: str) -> int:
    ledger = open_ledger(home)
    try:
        return len(list(ledger.entries(EntryFilter(type=kind))))
    finally:
        ledger.close()


def test_rego_policy_decides_and_its_changes_are_recorded(tmp_path: Path, home: Path) -> None:
    keygen(home, "ops")
    keygen(home, "alice")
    digest = cli(
        home,
        "build",
        str(
            make_repo(tmp_path / "r", {"image.yaml": DEFINITION, "rootfs/x": "1\n"}) / "image.yaml"
        ),
    )["digest"]
    policy = tmp_path / "qa.rego"
    policy.write_text(REGO)
    set_ = cli(home, "policy", "set", "qa", str(policy), "--principal", "ops")
    assert set_["format"] == "rego" and set_["digest"].startswith("sha256:")

    refused = cli(home, "promote", digest, "--to", "qa", "--service", "app", code=1)
    assert failed_rules(refused) == {"rego": "qa needs an approval"}
    assert refused["policy"]["digest"] == set_["digest"]
    cli(home, "approve", digest, "--env", "qa", "--principal", "alice")
    assert cli(home, "promote", digest, "--to", "qa", "--service", "app")["allowed"]

    # A Rego module that does not parse, or has no deny set, is refused; nothing is recorded.
    before = _events(home, "policy.changed")
    broken = tmp_path / "broken.rego"
    broken.write_text("package immutrail.policy\ndeny contains msg if {\n")
    cli(home, "policy", "set", "qa", str(broken), "--principal", "ops", code=2)
    empty = tmp_path / "empty.rego"
    empty.write_text("package immutrail.policy\nallow := true\n")
    cli(home, "policy", "set", "qa", str(empty), "--principal", "ops", code=2)
    other = tmp_path / "prod.yaml"
    other.write_text("environment: prod\n")
    cli(home, "policy", "set", "qa", str(other), "--principal", "ops", code=2)
    assert _events(home, "policy.changed") == before

    # The kept copy is what the gate evaluates; changing it on disk is an error, not a fallback.
    kept = home / "policies" / set_["digest"].replace(":", "-")
    kept.chmod(0o644)
    kept.write_text(REGO.replace("< 1", "< 0"))
    cli(home, "promote", digest, "--to", "qa", "--service", "app", "--dry-run", code=3)


def test_unsigned_policy_change_does_not_count(tmp_path: Path, home: Path) -> None:
    policy = tmp_path / "dev.yaml"
    policy.write_text("baseline: {required: false}\n")
    ledger = open_ledger(home)
    try:  # someone with database access writes a policy change without a key
        ledger.append(
            Event.create(
                "policy.changed",
                "mallory",
                "env:dev",
                {"environment": "dev", "digest": "sha256:" + "0" * 64, "format": "yaml"},
            )
        )
    finally:
        ledger.close()
    result = cli(home, "policy", "show", "dev", code=3)
    assert result == {}


def test_desired_state_is_repaired_from_the_ledger(tmp_path: Path, home: Path) -> None:
    policy = tmp_path / "dev.yaml"
    policy.write_text(
        "provenance: {required: false}\nvulnerabilities: {require_scan: false}\n"
        "baseline: {required: false}\n"
    )
    keygen(home, "ops")
    cli(home, "policy", "set", "dev", str(policy), "--principal", "ops")
    repo = make_repo(tmp_path / "r", {"image.yaml": DEFINITION, "rootfs/x": "1\n"})
    first = cli(home, "build", str(repo / "image.yaml"), "--tag", "a:1")["digest"]
    cli(home, "promote", first, "--to", "dev")
    (repo / "rootfs" / "x").write_text("2\n")
    commit_all(repo)
    second = cli(home, "build", str(repo / "image.yaml"), "--tag", "a:2")["digest"]
    promoted = cli(home, "promote", second, "--to", "dev")
    repository = home / "desired-state"
    assert git(repository, "rev-list", "--count", "HEAD") == "2"
    path = repository / "dev" / "a.json"
    git(repository, "reset", "-q", "--hard", "HEAD~1")  # one promotion behind, as after a crash
    assert json.loads(path.read_text())["image"]["digest"] == first
    shown = cli(home, "policy", "show", "dev")["services"]["a"]
    assert shown["digest"] == second and shown["previous"] == first
    assert shown["ledger_index"] == promoted["ledger_index"]
    assert json.loads(path.read_text())["image"] == shown
    assert git(repository, "rev-list", "--count", "HEAD") == "2"  # the repair is a new commit
    assert "repaired-from-ledger: true" in git(repository, "log", "-1", "--format=%B")
    assert git(repository, "status", "--porcelain") == ""
