"""Which action every command needs, in which environment: the one table, walked by the tests.

Each command calls :func:`immutrail.cli.common.acting` (or the access commands' own checks)
with the action named here before it reads or writes anything. ``tests/cli/test_access_matrix.py``
checks that every command of the app is in this table and runs each one as every role: a
command added without an entry, or whose check disagrees with its entry, fails the tests.
docs/access.md shows :func:`command_table`'s output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from immutrail.access.model import Action

__all__ = ["COMMANDS", "Need", "Rule", "command_table"]

A = Action


class Rule(StrEnum):
    ACTION = "action"
    """The caller must be allowed ``action`` (in the environment named by ``env``)."""
    OR_SELF = "or-self"
    """``action``, unless the command is about the caller itself (its own tokens, keys, ...)."""
    IDENTITY = "identity"
    """Any authenticated principal: the command only tells the caller about itself."""
    NONE = "none"
    """No check: the command uses no ledger (or makes one); ``why`` says so."""


@dataclass(frozen=True)
class Need:
    action: Action | None
    env: str | None = None
    """The command's parameter that names the environment of an environment-scoped action."""
    rule: Rule = Rule.ACTION
    why: str = ""


_DRIFT_RULES = "what counts as drift is policy"


def _read(why: str = "") -> Need:
    return Need(A.LEDGER_READ, why=why)


COMMANDS: Mapping[str, Need] = {
    # The access commands check inside immutrail.access.manage (self reads, own tokens).
    "principal create": Need(A.PRINCIPALS_MANAGE, why="none on a ledger without principals"),
    "principal disable": Need(A.PRINCIPALS_MANAGE),
    "principal list": Need(A.AUDIT_READ),
    "principal show": Need(A.AUDIT_READ, rule=Rule.OR_SELF),
    "principal whoami": Need(None, rule=Rule.IDENTITY),
    "role grant": Need(A.PRINCIPALS_MANAGE),
    "role revoke": Need(A.PRINCIPALS_MANAGE),
    "role list": Need(A.AUDIT_READ, rule=Rule.OR_SELF),
    "token create": Need(A.TOKENS_MANAGE_OWN, why="--for another: tokens.manage"),
    "token list": Need(A.AUDIT_READ, rule=Rule.OR_SELF, why="or tokens.manage"),
    "token revoke": Need(A.TOKENS_MANAGE_OWN, why="another's: tokens.manage"),
    "keys generate": Need(
        A.KEYS_MANAGE, rule=Rule.OR_SELF, why="own: keys.manage.own, authenticated with a key"
    ),
    "keys revoke": Need(A.KEYS_MANAGE, rule=Rule.OR_SELF, why="own: keys.manage.own"),
    "keys list": _read(),
    "keys export": _read(),
    # The ledger.
    "ledger append": Need(A.LEDGER_APPEND),
    "ledger checkpoint": _read("a signed tree head commits to what exists; it changes no entry"),
    "ledger vkey": _read(),
    "ledger entry": _read(),
    "ledger list": _read(),
    "ledger prove inclusion": _read(),
    "ledger prove consistency": _read(),
    "ledger verify": _read(),
    # Images.
    "build": Need(A.ARTIFACT_BUILD),
    "rebuild-verify": Need(A.ARTIFACT_BUILD),
    "artifact list": _read(),
    "artifact show": _read(),
    "artifact sbom": _read(),
    "artifact provenance": _read(),
    "artifact export": Need(A.ARTIFACT_PULL, why="takes an image out of the store"),
    "artifact push": Need(A.ARTIFACT_PUSH),
    "artifact pull": Need(A.ARTIFACT_PULL),
    "artifact import": Need(A.ARTIFACT_IMPORT),
    "vulndb import": Need(A.VULNDB_UPDATE),
    "vulndb update": Need(A.VULNDB_UPDATE),
    "vulndb status": _read(),
    "vulndb verify": _read(),
    "scan": Need(A.SCAN_RUN),
    "check": Need(A.BASELINE_CHECK),
    "test": Need(A.IMAGE_TEST),
    "sign": Need(A.IMAGE_SIGN),
    "approve": Need(A.IMAGE_APPROVE, why="global: the approval names its environment"),
    "verify": _read(),
    # The gate.
    "promote": Need(A.PROMOTE, env="to", why="--override: promote.override"),
    "policy set": Need(A.POLICY_SET, env="environment"),
    "policy show": _read(),
    "exception grant": Need(A.EXCEPTION_GRANT, env="env"),
    "exception list": _read(),
    # Deployments.
    "env declare": Need(A.ENV_DECLARE, env="environment"),
    "env show": _read(),
    "deploy": Need(A.DEPLOY, env="environment"),
    "rollback": Need(A.ROLLBACK, env="environment"),
    "status": _read(),
    "reconcile": Need(A.RECONCILE, env="environment"),
    "chaos": Need(A.CHAOS, env="environment"),
    "endpoint list": _read(),
    "endpoint show": _read(),
    "endpoint start": Need(A.ENDPOINT_MANAGE, env="environment"),
    "endpoint stop": Need(A.ENDPOINT_MANAGE, env="environment"),
    "drift check": Need(A.DRIFT_CHECK, env="environment", why="--remediate: drift.remediate"),
    "drift watch": Need(A.DRIFT_CHECK, env="environment", why="--remediate: drift.remediate"),
    "drift rules set": Need(A.POLICY_SET, env="environment", why=_DRIFT_RULES),
    "drift rules clear": Need(A.POLICY_SET, env="environment", why=_DRIFT_RULES),
    "drift rules show": _read(),
    # The auditor's side.
    "audit at": Need(A.AUDIT_READ),
    "audit trace": Need(A.AUDIT_READ),
    "audit changes": Need(A.AUDIT_READ),
    "audit evidence": Need(A.AUDIT_EXPORT),
    "audit report": Need(A.AUDIT_EXPORT),
    "audit verify": Need(None, rule=Rule.NONE, why="reads only the bundle: no home, no ledger"),
    # No check.
    "init": Need(None, rule=Rule.NONE, why="creates the ledger; --admin bootstraps access"),
    "demo": Need(None, rule=Rule.NONE, why="makes its own home and acts in it as its cast"),
    "serve": Need(None, rule=Rule.NONE, why="the HTTP API authenticates every request itself"),
}
"""Command path (as typed after ``immutrail``) -> what it needs."""


def command_table() -> str:
    """The Markdown table of every command and what it needs (docs/access.md holds it)."""
    lines = ["| command | needs | environment | note |", "|---|---|---|---|"]
    for name, need in sorted(COMMANDS.items()):
        if need.rule is Rule.NONE:
            needs = "nothing"
        elif need.rule is Rule.IDENTITY:
            needs = "any identity"
        else:
            needs = f"`{need.action}`" + (" (or self)" if need.rule is Rule.OR_SELF else "")
        env = f"`{need.env}`" if need.env else ""
        lines.append(f"| `{name}` | {needs} | {env} | {need.why} |")
    return "\n".join(lines) + "\n"
