"""Policy files: the YAML form read strictly, every problem named with its line."""

from __future__ import annotations

import pytest

from immutrail.policy.errors import PolicyFormatError
from immutrail.policy.model import default_policy, parse_policy

FULL = """\
version: 1
environment: prod
provenance: {required: true, branches: [main, release], allow_dirty: false}
vulnerabilities: {require_scan: true, block: [critical], need_exception: [high]}
baseline: {required: true}
tests: {required: true}
signature: {required: true, signers: [release-bot]}
approvals: {count: 2, role: approvers, separation_of_duties: true}
roles: {approvers: [alice, bob, "user:carol"]}
break_glass: [security-lead]
exceptions: {granters: [security-lead]}
"""


def test_full_policy_round_trips() -> None:
    policy = parse_policy(FULL, "prod.yaml", "prod")
    assert policy.provenance.branches == ("main", "release")
    assert policy.vulnerabilities.need_exception == ("high",)
    assert policy.approvals.count == 2 and policy.approvals.role == "approvers"
    assert policy.roles["approvers"] == ("alice", "bob", "user:carol")
    assert policy.break_glass == ("security-lead",)
    assert policy.to_json()["signature"] == {"required": True, "signers": ["release-bot"]}
    assert policy.digest() == parse_policy(FULL, "copy.yaml", "prod").digest()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("aprovals: {count: 2}\n", "line 1: aprovals: unknown key"),
        ("approvals: {count: two}\n", "approvals.count: must be a int"),
        ("approvals: {count: true}\n", "approvals.count: must be a int"),
        ("approvals: {count: 1, role: admins}\n", "role 'admins' is not defined"),
        ("vulnerabilities: {block: [severe]}\n", "'severe' is not one of"),
        ("vulnerabilities: {block: [high], need_exception: [high]}\n", "both blocked and"),
        ("environment: staging\n", "the file is for 'staging', not 'prod'"),
        ("version: 2\n", "only version 1 exists"),
        ("break_glass: [Root]\n", "'Root' is not a principal id"),
        ("baseline: {required: true}\nbaseline: {required: false}\n", "duplicate"),
        ("- just a list\n", "must be a mapping"),
    ],
)
def test_bad_policies_are_named(text: str, expected: str) -> None:
    with pytest.raises(PolicyFormatError) as caught:
        parse_policy(text, "prod.yaml", "prod")
    assert expected in caught.value.diagnostics()


def test_all_problems_at_once() -> None:
    with pytest.raises(PolicyFormatError) as caught:
        parse_policy("aprovals: 1\ntests: {required: yes-please}\n", "p.yaml", "prod")
    assert len(caught.value.problems) == 2


def test_defaults() -> None:
    prod = default_policy("prod")
    assert prod.approvals.count == 2 and prod.approvals.separation_of_duties
    assert prod.provenance.branches == ("main",) and prod.signature_required
    assert prod.tests_required and prod.vulnerabilities.need_exception == ("high",)
    staging = default_policy("staging")
    assert staging.approvals.count == 0 and not staging.tests_required
    assert staging.baseline_required and staging.vulnerabilities.block == ("critical",)
    assert prod.digest() != staging.digest()
