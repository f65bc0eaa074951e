"""Evaluate a policy over the evidence: every rule gives a check that passed or says why not.

The YAML form is evaluated here, rule by rule, so that a refusal lists every reason at once. A
Rego policy (``package immutrail.policy``, a ``deny`` set of messages over ``input`` = the
evidence document) is evaluated with regopy in a child process with limits
(:mod:`immutrail.rego`); it passes when ``deny`` is empty.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from immutrail.rego import (
    Module,
    RegoLimitError,
    RegoSession,
    RegoSourceError,
    RegoUnavailableError,
    Value,
)

from .errors import PolicyError, PolicyFormatError
from .evidence import Evidence
from .model import Policy


@dataclass(frozen=True)
class Check:
    rule: str
    passed: bool
    message: str

    def to_json(self) -> dict[str, object]:
        return {"rule": self.rule, "passed": self.passed, "message": self.message}


def evaluate(policy: Policy, evidence: Evidence) -> list[Check]:
    checks = [
        *_provenance(policy, evidence),
        *_vulnerabilities(policy, evidence),
        *_baseline(policy, evidence),
        *_tests(policy, evidence),
        *_signature(policy, evidence),
        *_approvals(policy, evidence),
    ]
    return checks


def _provenance(policy: Policy, evidence: Evidence) -> list[Check]:
    rule = policy.provenance
    if not rule.required:
        return []
    found = evidence.provenance
    if found is None:
        return [
            Check(
                "provenance",
                False,
                _missing("SLSA provenance signed by a builder key", evidence, "provenance"),
            )
        ]
    checks = [
        Check(
            "provenance",
            True,
            f"SLSA provenance signed by builder key {found['signer']['keyid'][:16]}… "
            f"(commit {str(found['commit'])[:12]})",
        )
    ]
    if rule.branches:
        branch = found.get("branch")
        ok = branch in rule.branches
        checks.append(
            Check(
                "provenance.branch",
                ok,
                f"built from branch {branch}"
                if ok
                else f"built from {found.get('ref') or 'an unnamed ref (detached HEAD)'}, "
                f"not from a protected branch ({', '.join(rule.branches)})",
            )
        )
    if not rule.allow_dirty:
        checks.append(
            Check(
                "provenance.clean",
                not found["dirty"],
                "built from a clean work tree"
                if not found["dirty"]
                else "built from a dirty work tree (--allow-dirty)",
            )
        )
    return checks


def _vulnerabilities(policy: Policy, evidence: Evidence) -> list[Check]:
    rule = policy.vulnerabilities
    scan = evidence.scan
    if scan is None:
        if rule.require_scan:
            return [
                Check("vulnerabilities", False, _missing("a vulnerability scan", evidence, "vulns"))
            ]
        return []
    blocked: list[str] = []
    excepted: list[str] = []
    unexcepted: list[str] = []
    for finding in scan["findings"]:
        level = finding["level"]
        label = f"{finding['id']} ({level}) in {finding['package']} {finding['version']}"
        if finding["fixed"]:
            label += f", fixed in {', '.join(finding['fixed'])}"
        if level in rule.block:
            blocked.append(label)
        elif level in rule.need_exception:
            ids = {finding["id"], *finding["aliases"]}
            granted = [
                e
                for e in evidence.exceptions
                if e.covers(ids, evidence.digest)
                and (not policy.exception_granters or e.granted_by in policy.exception_granters)
            ]
            if granted:
                e = granted[0]
                excepted.append(
                    f"{label}: exception by {e.granted_by} until {e.to_json()['expires']}"
                )
            else:
                unexcepted.append(label)
    checks = []
    if blocked:
        checks.append(
            Check("vulnerabilities", False, f"{len(blocked)} blocked: " + "; ".join(blocked))
        )
    if unexcepted:
        checks.append(
            Check(
                "vulnerabilities.exceptions",
                False,
                f"{len(unexcepted)} need a recorded, unexpired exception: " + "; ".join(unexcepted),
            )
        )
    if not blocked and not unexcepted:
        total = len(scan["findings"])
        message = f"scan {scan['attestation'][:19]}…: {total} finding(s), none blocked"
        if excepted:
            message += "; under exception: " + "; ".join(excepted)
        checks.append(Check("vulnerabilities", True, message))
    return checks


def _baseline(policy: Policy, evidence: Evidence) -> list[Check]:
    if not policy.baseline_required:
        return []
    found = evidence.baseline
    if found is None:
        return [
            Check("baseline", False, _missing("a security baseline check", evidence, "baseline"))
        ]
    if found["passed"]:
        return [Check("baseline", True, "the security baseline passes")]
    return [Check("baseline", False, "baseline rules fail: " + ", ".join(found["failed"]))]


def _tests(policy: Policy, evidence: Evidence) -> list[Check]:
    if not policy.tests_required:
        return []
    if not evidence.tests:
        return [Check("tests", False, _missing("a test result", evidence, "test-result"))]
    failed = [t["name"] for t in evidence.tests if t["result"] != "PASSED"]
    if failed:
        return [Check("tests", False, "tests fail: " + ", ".join(failed))]
    return [Check("tests", True, f"{len(evidence.tests)} test(s) pass")]


def _signature(policy: Policy, evidence: Evidence) -> list[Check]:
    if not policy.signature_required:
        return []
    signers = sorted(
        {
            s["principal"]
            for s in evidence.signatures
            if not policy.signers or s["principal"] in policy.signers
        }
    )
    if signers:
        return [Check("signature", True, "release signature by " + ", ".join(signers))]
    wanted = f" by one of {', '.join(policy.signers)}" if policy.signers else ""
    return [
        Check("signature", False, _missing(f"release signature{wanted}", evidence, "signature"))
    ]


def _approvals(policy: Policy, evidence: Evidence) -> list[Check]:
    rule = policy.approvals
    if rule.count == 0:
        return []
    members = set(policy.roles.get(rule.role, ())) if rule.role else None
    build = evidence.build or {}
    author = str(build.get("author") or "").lower()
    # The author is an e-mail address; a principal named by it or by its local part is the author.
    conflicted = {p for p in (build.get("builder"), author, author.partition("@")[0]) if p}
    if evidence.provenance:
        conflicted.add(evidence.provenance["signer"]["principal"])
    counted: list[str] = []
    refused: list[str] = []
    for approval in evidence.approvals:
        who = approval["principal"]
        if members is not None and who not in members:
            refused.append(f"{who} is not in role {rule.role}")
        elif rule.separation_of_duties and who in conflicted:
            refused.append(f"{who} built or authored this image (separation of duties)")
        elif who not in counted:
            counted.append(who)
    refused.extend(
        f"{r.reference[:19]}…: {r.reason}" for r in evidence.rejected if r.kind == "approval"
    )
    role = f" of role {rule.role}" if rule.role else ""
    message = (
        f"{len(counted)} of {rule.count} approval(s){role} for {evidence.environment}"
        + (f" ({', '.join(counted)})" if counted else "")
        + (f"; not counted: {'; '.join(refused)}" if refused else "")
    )
    return [Check("approvals", len(counted) >= rule.count, message)]


def _missing(what: str, evidence: Evidence, kind: str) -> str:
    """ "no X", plus why attached candidates did not count."""
    reasons = [r.reason for r in evidence.rejected if kind in r.kind]
    if reasons:
        return f"no valid {what}; rejected: " + "; ".join(reasons)
    return f"no {what}"


# -- Rego ----------------------------------------------------------------------------------

REGO_PACKAGE = "immutrail.policy"
_DENY = f"data.{REGO_PACKAGE}.deny"
_BREAK_GLASS = f"data.{REGO_PACKAGE}.break_glass"
_NO_DENY = f"define `deny contains msg if {{…}}` in package {REGO_PACKAGE}"
_EMPTY_DIGEST = "sha256:" + "0" * 64


def _values(source: str, path: str, refs: list[str], document: object) -> dict[str, Value]:
    """Evaluate ``refs`` of the policy over ``document`` (None: no input) in one limited child.

    Strict built-in errors are on: a policy whose built-in fails (a division by zero) is an
    error, never a ``deny`` that silently stays empty and lets everything through.
    """
    try:
        with RegoSession([Module(path, source)], strict=True) as session:
            if document is None:
                values = session.evaluate(refs)
            else:
                values = session.evaluate(refs, document)
    except RegoSourceError as exc:
        lines = exc.problem.strip().splitlines()
        raise PolicyFormatError(path, [" ".join(lines[:2]) if lines else "does not parse"]) from exc
    except RegoLimitError as exc:
        raise PolicyFormatError(path, [f"evaluating the policy {exc.reason}"]) from exc
    except RegoUnavailableError as exc:
        raise PolicyError(str(exc)) from exc
    for value in values:
        if value.error is not None:
            name = value.ref.rsplit(".", 1)[-1]
            raise PolicyFormatError(path, [f"evaluating {name}: {value.error[:500]}"])
    return {value.ref: value for value in values}


def _denials(path: str, value: Value) -> list[str]:
    """The gate's shape check of ``deny``: a set (or array) of messages."""
    if not value.defined:
        raise PolicyFormatError(path, [_NO_DENY])
    denials = value.value
    if not isinstance(denials, list) or not all(isinstance(d, str) for d in denials):
        raise PolicyFormatError(
            path, ["deny must be a set of strings: write `deny contains msg if {…}`"]
        )
    return denials


def _break_glass(path: str, value: Value) -> tuple[str, ...]:
    if not value.defined:
        return ()
    if isinstance(value.value, list) and all(isinstance(v, str) for v in value.value):
        return tuple(value.value)
    raise PolicyFormatError(path, ["break_glass must be a list of principal ids"])


def evaluate_rego(source: str, path: str, evidence: Evidence) -> list[Check]:
    """Run a Rego policy; each ``deny`` message is a failed check, none means one passed check."""
    values = _values(source, path, [_DENY], evidence.to_json())
    denials = _denials(path, values[_DENY])
    if not denials:
        return [Check("rego", True, f"{path}: no denial")]
    return [Check("rego", False, message) for message in sorted(denials)]


def check_rego(source: str, path: str, environment: str = "check") -> None:
    """Refuse a policy the gate could not use (at ``policy set`` time, before anything is kept).

    The gate's own checks, over the evidence of an image nothing is known about (the document
    every policy must cope with): it parses, ``deny`` is a set of messages, ``break_glass`` a
    list of principals, and nothing fails or exceeds the limits on the way.
    """
    evidence = Evidence(_EMPTY_DIGEST, environment, datetime.now(UTC))
    values = _values(source, path, [_DENY, _BREAK_GLASS], evidence.to_json())
    _denials(path, values[_DENY])
    _break_glass(path, values[_BREAK_GLASS])


def rego_break_glass(source: str, path: str) -> tuple[str, ...]:
    """``break_glass`` of a Rego policy (a list of principals), or () when it defines none."""
    return _break_glass(path, _values(source, path, [_BREAK_GLASS], None)[_BREAK_GLASS])
