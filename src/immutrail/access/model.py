"""The access model: actions, roles, what each role may do, and grants of roles to principals.

One constant per action (:class:`Action`), each either environment-scoped (``deploy`` in
``staging``) or global (``artifact.build``). A role is a fixed set of actions
(:data:`ROLE_ACTIONS`); a grant gives a principal a role in every environment or in a list of
them. The table in docs/access.md is :func:`role_table`'s output, checked by the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from immutrail import names

from .errors import AccessInputError

__all__ = [
    "ALL_ENVIRONMENTS",
    "ENV_SCOPED",
    "ROLE_ACTIONS",
    "Action",
    "Grant",
    "Role",
    "check_environment",
    "environments_from_json",
    "environments_to_json",
    "parse_action",
    "parse_role",
    "role_table",
]


class Action(StrEnum):
    """Everything a principal can be allowed to do, present and planned."""

    ARTIFACT_BUILD = "artifact.build"
    ARTIFACT_PUSH = "artifact.push"
    ARTIFACT_PULL = "artifact.pull"
    ARTIFACT_IMPORT = "artifact.import"
    SCAN_RUN = "scan.run"
    VULNDB_UPDATE = "vulndb.update"
    BASELINE_CHECK = "baseline.check"
    IMAGE_TEST = "image.test"
    IMAGE_SIGN = "image.sign"
    IMAGE_APPROVE = "image.approve"
    POLICY_SET = "policy.set"
    EXCEPTION_GRANT = "exception.grant"
    PROMOTE = "promote"
    PROMOTE_OVERRIDE = "promote.override"
    ENV_DECLARE = "env.declare"
    DEPLOY = "deploy"
    ROLLBACK = "rollback"
    RECONCILE = "reconcile"
    CHAOS = "chaos"
    DRIFT_CHECK = "drift.check"
    DRIFT_REMEDIATE = "drift.remediate"
    ENDPOINT_MANAGE = "endpoint.manage"
    KEYS_MANAGE = "keys.manage"
    """Create and revoke any principal's keys."""
    KEYS_MANAGE_OWN = "keys.manage.own"
    """Create (authenticated with a key: rotation) and revoke one's own keys."""
    PRINCIPALS_MANAGE = "principals.manage"
    TOKENS_MANAGE = "tokens.manage"
    """Create and revoke any principal's tokens."""
    TOKENS_MANAGE_OWN = "tokens.manage.own"
    """Create and revoke one's own tokens."""
    LEDGER_APPEND = "ledger.append"
    LEDGER_READ = "ledger.read"
    AUDIT_READ = "audit.read"
    """Read everything, including who holds which role and token."""
    AUDIT_EXPORT = "audit.export"


A = Action

ENV_SCOPED: frozenset[Action] = frozenset(
    {
        A.POLICY_SET,
        A.EXCEPTION_GRANT,
        A.PROMOTE,
        A.PROMOTE_OVERRIDE,
        A.ENV_DECLARE,
        A.DEPLOY,
        A.ROLLBACK,
        A.RECONCILE,
        A.CHAOS,
        A.DRIFT_CHECK,
        A.DRIFT_REMEDIATE,
        A.ENDPOINT_MANAGE,
    }
)
"""Actions performed in one environment; every other action is global."""

READ_ONLY: frozenset[Action] = frozenset({A.LEDGER_READ, A.AUDIT_READ, A.AUDIT_EXPORT})
"""Actions that change nothing: all an auditor may do."""


class Role(StrEnum):
    ADMIN = "admin"
    BUILDER = "builder"
    REVIEWER = "reviewer"
    DEPLOYER = "deployer"
    OPERATOR = "operator"
    AUDITOR = "auditor"


ROLE_ACTIONS: Mapping[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.BUILDER: frozenset(
        {
            A.ARTIFACT_BUILD,
            A.ARTIFACT_PUSH,
            A.ARTIFACT_PULL,
            A.ARTIFACT_IMPORT,
            A.SCAN_RUN,
            A.VULNDB_UPDATE,
            A.BASELINE_CHECK,
            A.IMAGE_TEST,
            A.IMAGE_SIGN,
            A.TOKENS_MANAGE_OWN,
            A.KEYS_MANAGE_OWN,
            A.LEDGER_READ,
        }
    ),
    # Reviewers judge images and grant exceptions; they build, sign and deploy nothing, so that
    # whoever approves is never whoever produced or ships the image (separation of duties).
    Role.REVIEWER: frozenset(
        {
            A.SCAN_RUN,
            A.BASELINE_CHECK,
            A.IMAGE_TEST,
            A.IMAGE_APPROVE,
            A.EXCEPTION_GRANT,
            A.TOKENS_MANAGE_OWN,
            A.KEYS_MANAGE_OWN,
            A.LEDGER_READ,
            A.AUDIT_READ,
        }
    ),
    Role.DEPLOYER: frozenset(
        {
            A.ARTIFACT_PULL,
            A.PROMOTE,
            A.ENV_DECLARE,
            A.DEPLOY,
            A.ROLLBACK,
            A.RECONCILE,
            A.DRIFT_CHECK,
            A.TOKENS_MANAGE_OWN,
            A.KEYS_MANAGE_OWN,
            A.LEDGER_READ,
        }
    ),
    Role.OPERATOR: frozenset(
        {
            A.ARTIFACT_PULL,
            A.VULNDB_UPDATE,
            A.ROLLBACK,
            A.RECONCILE,
            A.CHAOS,
            A.DRIFT_CHECK,
            A.DRIFT_REMEDIATE,
            A.ENDPOINT_MANAGE,
            A.TOKENS_MANAGE_OWN,
            A.KEYS_MANAGE_OWN,
            A.LEDGER_READ,
        }
    ),
    Role.AUDITOR: READ_ONLY,
}

ALL_ENVIRONMENTS = "*"
"""How a grant for every environment is written in events (never a valid environment name)."""

MAX_ENVIRONMENTS = 100


def check_environment(name: str) -> str:
    return names.check_environment(name, AccessInputError)


def parse_action(name: str) -> Action:
    try:
        return Action(name)
    except ValueError:
        raise AccessInputError(
            f"{name!r} is not an action",
            hint="The actions are: " + ", ".join(a.value for a in Action),
        ) from None


def parse_role(name: str) -> Role:
    try:
        return Role(name)
    except ValueError:
        raise AccessInputError(
            f"{name!r} is not a role; use one of {', '.join(r.value for r in Role)}"
        ) from None


def role_has_scoped_actions(role: Role) -> bool:
    return bool(ROLE_ACTIONS[role] & ENV_SCOPED)


@dataclass(frozen=True)
class Grant:
    """``role`` for ``principal``: in every environment (``environments`` None) or in a list.

    Global actions of the role are granted by any of its grants; environment-scoped ones only
    in the grant's environments. Roles without environment-scoped actions, and ``admin`` (whose
    global actions include granting roles), are only ever granted for every environment.
    """

    principal: str
    role: Role
    environments: frozenset[str] | None

    def allows(self, action: Action, environment: str | None) -> bool:
        if action not in ROLE_ACTIONS[self.role]:
            return False
        if action not in ENV_SCOPED or self.environments is None:
            return True
        return environment is not None and environment in self.environments

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role.value, "environments": environments_to_json(self.environments)}


def environments_to_json(environments: frozenset[str] | None) -> str | list[str]:
    return ALL_ENVIRONMENTS if environments is None else sorted(environments)


def environments_from_json(value: object) -> frozenset[str] | None:
    """``"*"`` or a non-empty list of distinct environment names, as events carry them."""
    if value == ALL_ENVIRONMENTS:
        return None
    if not isinstance(value, list) or not value:
        raise AccessInputError('environments must be "*" or a non-empty list of names')
    if len(value) > MAX_ENVIRONMENTS:
        raise AccessInputError(f"at most {MAX_ENVIRONMENTS} environments in one grant")
    names = [check_environment(v) for v in value]
    if len(set(names)) != len(names):
        raise AccessInputError("an environment is named twice")
    return frozenset(names)


def normalize_environments(role: Role, environments: Iterable[str] | None) -> frozenset[str] | None:
    """Check a grant's environments for ``role`` (None: every environment)."""
    if environments is None:
        return None
    envs = environments_from_json(list(environments))
    if role is Role.ADMIN:
        raise AccessInputError(
            "admin is granted for every environment only",
            hint="An admin can grant any role, so an admin of one environment would be an "
            "admin of all of them; grant deployer or operator per environment instead.",
        )
    if not role_has_scoped_actions(role):
        raise AccessInputError(
            f"{role.value} has no environment-scoped actions: grant it for every environment"
        )
    return envs


def role_table() -> str:
    """The Markdown table of every action against every role (docs/access.md holds it)."""
    roles = list(Role)
    lines = [
        "| action | scope | " + " | ".join(r.value for r in roles) + " |",
        "|---|---|" + "---|" * len(roles),
    ]
    for action in Action:
        scope = "environment" if action in ENV_SCOPED else "global"
        marks = " | ".join("✓" if action in ROLE_ACTIONS[r] else "" for r in roles)
        lines.append(f"| `{action.value}` | {scope} | {marks} |")
    return "\n".join(lines) + "\n"
