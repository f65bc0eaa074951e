"""Promotion policies in their documented YAML form, and the built-in defaults.

A policy says what evidence an image needs before it may run in an environment. The YAML form
(docs/policy.md) is read strictly: unknown keys, wrong types and duplicate keys are errors that
name the line, because a typo in a gate (``aprovals:``) must never silently weaken it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from immutrail.artifacts import strict_yaml
from immutrail.crypto.canonical import canonical_json

from .errors import PolicyFormatError

LEVELS = ("critical", "high", "medium", "low", "none", "unknown")
PRINCIPAL_NAME = re.compile(r"[a-z0-9][a-z0-9._@:-]{0,127}")
"""The grammar of principal ids, as immutrail.keys.names states it."""


@dataclass(frozen=True)
class ProvenanceRule:
    required: bool = True
    branches: tuple[str, ...] = ()
    """Protected branches the source commit must have been built from; empty: any branch."""
    allow_dirty: bool = False


@dataclass(frozen=True)
class VulnerabilityRule:
    require_scan: bool = True
    block: tuple[str, ...] = ("critical",)
    """Severity levels that refuse promotion outright."""
    need_exception: tuple[str, ...] = ()
    """Levels allowed only under a recorded exception that has not expired."""


@dataclass(frozen=True)
class ApprovalRule:
    count: int = 0
    role: str | None = None
    separation_of_duties: bool = True
    """No approver may be the source commit's author or the image's builder."""


@dataclass(frozen=True)
class Policy:
    environment: str
    provenance: ProvenanceRule = field(default_factory=ProvenanceRule)
    vulnerabilities: VulnerabilityRule = field(default_factory=VulnerabilityRule)
    baseline_required: bool = True
    tests_required: bool = False
    signature_required: bool = False
    signers: tuple[str, ...] = ()
    """Principals whose release signature counts; empty: any principal's non-builder key."""
    approvals: ApprovalRule = field(default_factory=ApprovalRule)
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    break_glass: tuple[str, ...] = ()
    """Principals allowed to override a refusal (``promote --override --reason``)."""
    exception_granters: tuple[str, ...] = ()
    """Principals whose vulnerability exceptions count; empty: any principal with a ledger key."""
    source: str = "built-in"

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "provenance": {
                "required": self.provenance.required,
                "branches": list(self.provenance.branches),
                "allow_dirty": self.provenance.allow_dirty,
            },
            "vulnerabilities": {
                "require_scan": self.vulnerabilities.require_scan,
                "block": list(self.vulnerabilities.block),
                "need_exception": list(self.vulnerabilities.need_exception),
            },
            "baseline": {"required": self.baseline_required},
            "tests": {"required": self.tests_required},
            "signature": {"required": self.signature_required, "signers": list(self.signers)},
            "approvals": {
                "count": self.approvals.count,
                "role": self.approvals.role,
                "separation_of_duties": self.approvals.separation_of_duties,
            },
            "roles": {name: list(members) for name, members in sorted(self.roles.items())},
            "break_glass": list(self.break_glass),
            "exceptions": {"granters": list(self.exception_granters)},
        }

    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(canonical_json(self.to_json())).hexdigest()


def default_policy(environment: str) -> Policy:
    """What applies when the user has set no policy for ``environment``.

    ``prod`` gets the full gate of the issue: provenance from ``main`` signed by a builder key,
    no critical vulnerability and high ones only under an expiring exception, the baseline, tests,
    a release signature and two approvals under separation of duties. Every other environment
    needs builder-signed provenance, a scan with no critical finding and the baseline.
    """
    if environment == "prod":
        return Policy(
            environment,
            ProvenanceRule(required=True, branches=("main",)),
            VulnerabilityRule(block=("critical",), need_exception=("high",)),
            baseline_required=True,
            tests_required=True,
            signature_required=True,
            approvals=ApprovalRule(count=2, separation_of_duties=True),
        )
    return Policy(environment)


_TOP_KEYS = {
    "version",
    "environment",
    "provenance",
    "vulnerabilities",
    "baseline",
    "tests",
    "signature",
    "approvals",
    "roles",
    "break_glass",
    "exceptions",
}


def parse_policy(text: str, path: str, environment: str) -> Policy:
    """A policy from its YAML form; PolicyFormatError lists every problem with its line."""
    try:
        document = strict_yaml.load(text)
    except strict_yaml.StrictYamlError as exc:
        where = f"line {exc.line}: " if exc.line else ""
        raise PolicyFormatError(path, [f"{where}{exc}"]) from exc
    reader = _Reader(document, path)
    body = reader.mapping((), _TOP_KEYS)
    if reader.value(("version",), int, 1) != 1:
        reader.problem(("version",), "only version 1 exists")
    named = reader.value(("environment",), str, environment)
    if named != environment:
        reader.problem(("environment",), f"the file is for {named!r}, not {environment!r}")
    # Each section is read once for its unknown keys; the values are read field by field below.
    reader.mapping(("provenance",), {"required", "branches", "allow_dirty"})
    reader.mapping(("vulnerabilities",), {"require_scan", "block", "need_exception"})
    reader.mapping(("approvals",), {"count", "role", "separation_of_duties"})
    reader.mapping(("baseline",), {"required"})
    reader.mapping(("tests",), {"required"})
    reader.mapping(("signature",), {"required", "signers"})
    reader.mapping(("exceptions",), {"granters"})
    roles_raw = body.get("roles", {})
    roles: dict[str, tuple[str, ...]] = {}
    if not isinstance(roles_raw, Mapping):
        reader.problem(("roles",), "must map role names to lists of principals")
    else:
        for name in roles_raw:
            roles[str(name)] = reader.principals(("roles", str(name)))
    block = reader.levels(("vulnerabilities", "block"), ("critical",))
    need_exception = reader.levels(("vulnerabilities", "need_exception"), ())
    if set(block) & set(need_exception):
        reader.problem(("vulnerabilities",), "a level cannot be both blocked and excepted")
    count = reader.value(("approvals", "count"), int, 0)
    if count < 0 or count > 100:
        reader.problem(("approvals", "count"), "must be between 0 and 100")
    role = reader.value(("approvals", "role"), str, None)
    if role is not None and role not in roles:
        reader.problem(("approvals", "role"), f"role {role!r} is not defined under roles")
    policy = Policy(
        environment,
        ProvenanceRule(
            required=reader.value(("provenance", "required"), bool, True),
            branches=reader.strings(("provenance", "branches")),
            allow_dirty=reader.value(("provenance", "allow_dirty"), bool, False),
        ),
        VulnerabilityRule(
            require_scan=reader.value(("vulnerabilities", "require_scan"), bool, True),
            block=block,
            need_exception=need_exception,
        ),
        baseline_required=reader.value(("baseline", "required"), bool, True),
        tests_required=reader.value(("tests", "required"), bool, False),
        signature_required=reader.value(("signature", "required"), bool, False),
        signers=reader.principals(("signature", "signers")),
        approvals=ApprovalRule(
            count=count,
            role=role,
            separation_of_duties=reader.value(("approvals", "separation_of_duties"), bool, True),
        ),
        roles=roles,
        break_glass=reader.principals(("break_glass",)),
        exception_granters=reader.principals(("exceptions", "granters")),
        source=path,
    )
    if reader.problems:
        raise PolicyFormatError(path, reader.problems)
    return policy


class _Reader:
    """Typed access to the YAML document that collects problems instead of stopping at one."""

    def __init__(self, document: strict_yaml.Document, path: str):
        self.document = document
        self.path = path
        self.problems: list[str] = []

    def problem(self, where: tuple[str, ...], message: str) -> None:
        line = self.document.line_of(where)
        prefix = f"line {line}: " if line else ""
        self.problems.append(f"{prefix}{'.'.join(where) or '(top)'}: {message}")

    def get(self, where: tuple[str, ...]) -> Any:
        value: Any = self.document.value
        for key in where:
            if not isinstance(value, Mapping) or key not in value:
                return None
            value = value[key]
        return value

    def mapping(self, where: tuple[str, ...], allowed: set[str]) -> Mapping[str, Any]:
        value = self.get(where) if where else self.document.value
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(where, "must be a mapping")
            return {}
        for key in value:
            if key not in allowed:
                self.problem(
                    (*where, str(key)), f"unknown key (allowed: {', '.join(sorted(allowed))})"
                )
        return value

    def value(self, where: tuple[str, ...], kind: type, default: Any) -> Any:
        value = self.get(where)
        if value is None:
            return default
        # bool is an int in Python; a count of "true" is a mistake worth naming
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem(where, f"must be a {kind.__name__}")
            return default
        return value

    def strings(self, where: tuple[str, ...]) -> tuple[str, ...]:
        value = self.get(where)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(where, "must be a list of non-empty strings")
            return ()
        return tuple(value)

    def principals(self, where: tuple[str, ...]) -> tuple[str, ...]:
        names = self.strings(where)
        for name in names:
            if not PRINCIPAL_NAME.fullmatch(name):
                self.problem(where, f"{name!r} is not a principal id")
        return names

    def levels(self, where: tuple[str, ...], default: tuple[str, ...]) -> tuple[str, ...]:
        if self.get(where) is None:
            return default
        levels = self.strings(where)
        for level in levels:
            if level not in LEVELS:
                self.problem(where, f"{level!r} is not one of {', '.join(LEVELS)}")
        return levels
