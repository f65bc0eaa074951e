"""The full matrix: every action against every role, in the granted environment, in another one
and globally, for identities authenticated both ways (token and key). No unauthorized success.

``EXPECTED`` is written out here by hand, independently of ``ROLE_ACTIONS``: the test fails when
the code and this table (and docs/access.md, which must show the code's table) disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from immutrail.access import (
    ENV_SCOPED,
    ROLE_ACTIONS,
    AccessDenied,
    Action,
    Identity,
    Role,
    authorize,
)
from immutrail.access.errors import AccessInputError
from immutrail.access.model import READ_ONLY, role_table
from immutrail.ledger.home import open_ledger

from .conftest import OTHER_ENV, RIGHT_ENV, Population, by_token, login, role_environments

DOCS = Path(__file__).parent.parent.parent / "docs" / "access.md"

SCOPED = {
    "policy.set",
    "exception.grant",
    "promote",
    "promote.override",
    "env.declare",
    "deploy",
    "rollback",
    "reconcile",
    "chaos",
    "drift.check",
    "drift.remediate",
    "endpoint.manage",
}

EXPECTED: dict[str, set[str]] = {
    "admin": {a.value for a in Action},
    "builder": {
        "artifact.build",
        "artifact.push",
        "artifact.pull",
        "artifact.import",
        "scan.run",
        "vulndb.update",
        "baseline.check",
        "image.test",
        "image.sign",
        "tokens.manage.own",
        "keys.manage.own",
        "ledger.read",
    },
    "reviewer": {
        "scan.run",
        "baseline.check",
        "image.test",
        "image.approve",
        "exception.grant",
        "tokens.manage.own",
        "keys.manage.own",
        "ledger.read",
        "audit.read",
    },
    "deployer": {
        "artifact.pull",
        "promote",
        "env.declare",
        "deploy",
        "rollback",
        "reconcile",
        "drift.check",
        "tokens.manage.own",
        "keys.manage.own",
        "ledger.read",
    },
    "operator": {
        "artifact.pull",
        "vulndb.update",
        "rollback",
        "reconcile",
        "chaos",
        "drift.check",
        "drift.remediate",
        "endpoint.manage",
        "tokens.manage.own",
        "keys.manage.own",
        "ledger.read",
    },
    "auditor": {"ledger.read", "audit.read", "audit.export"},
}

CATALOGUE = {
    "artifact.build",
    "artifact.push",
    "artifact.pull",
    "artifact.import",
    "scan.run",
    "vulndb.update",
    "baseline.check",
    "image.test",
    "image.sign",
    "image.approve",
    "policy.set",
    "exception.grant",
    "promote",
    "promote.override",
    "env.declare",
    "deploy",
    "rollback",
    "reconcile",
    "chaos",
    "drift.check",
    "drift.remediate",
    "endpoint.manage",
    "keys.manage",
    "keys.manage.own",
    "principals.manage",
    "tokens.manage",
    "tokens.manage.own",
    "ledger.append",
    "ledger.read",
    "audit.read",
    "audit.export",
}

WHERE = {"right env": RIGHT_ENV, "other env": OTHER_ENV, "global": None}


def expected(role: Role, action: Action, where: str) -> bool:
    if action.value not in EXPECTED[role.value]:
        return False
    if action.value not in SCOPED:
        return True
    everywhere = role_environments(role) is None
    return where == "right env" or everywhere


@pytest.fixture(scope="module")
def identities(population: Population) -> Iterator[dict[tuple[Role, str], Identity]]:
    """Each role's principal, authenticated once by its token and once by its key."""
    with open_ledger(population.home) as ledger:
        found: dict[tuple[Role, str], Identity] = {}
        for role in Role:
            found[(role, "token")] = by_token(population.home, ledger, population.tokens[role])
            found[(role, "key")] = login(population.home, ledger, f"p-{role.value}")
        yield found


def test_catalogue_is_complete() -> None:
    assert {a.value for a in Action} == CATALOGUE
    assert {a.value for a in ENV_SCOPED} == SCOPED
    assert {r.value for r in Role} == set(EXPECTED)


def test_code_table_is_the_expected_table() -> None:
    assert {r.value: {a.value for a in ROLE_ACTIONS[r]} for r in Role} == EXPECTED


def test_auditor_reads_everything_and_changes_nothing() -> None:
    assert ROLE_ACTIONS[Role.AUDITOR] == READ_ONLY
    assert {a.value for a in READ_ONLY} == {"ledger.read", "audit.read", "audit.export"}
    for role in Role:
        assert Action.LEDGER_READ in ROLE_ACTIONS[role]


def test_docs_show_the_code_table() -> None:
    assert role_table() in DOCS.read_text(encoding="utf-8")


@pytest.mark.parametrize("method", ["token", "key"])
@pytest.mark.parametrize("where", list(WHERE))
@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
@pytest.mark.parametrize("action", list(Action), ids=lambda a: a.value)
def test_matrix(
    identities: dict[tuple[Role, str], Identity],
    action: Action,
    role: Role,
    where: str,
    method: str,
) -> None:
    identity = identities[(role, method)]
    environment = WHERE[where]
    if expected(role, action, where):
        authorize(identity, action, environment)
        authorize(identity, action.value, environment)  # by name, as the API will
        assert identity.can(action, environment)
        return
    with pytest.raises(AccessDenied) as caught:
        authorize(identity, action, environment)
    assert not identity.can(action, environment)
    message = str(caught.value)
    assert message.startswith(f"access denied: p-{role.value} may not {action.value}")
    if action in ENV_SCOPED:
        where_text = (
            "in every environment" if environment is None else f"in environment {environment}"
        )
        assert message.endswith(where_text)
    else:
        assert message.endswith(action.value)
    # nothing about other principals, tokens or environments
    others = [f"p-{r.value}" for r in Role if r is not role] + ["root", RIGHT_ENV]
    assert not any(name in message for name in others if name != environment)


def test_unknown_action_and_bad_environment_are_input_errors(
    identities: dict[tuple[Role, str], Identity],
) -> None:
    admin = identities[(Role.ADMIN, "key")]
    with pytest.raises(AccessInputError, match="not an action"):
        authorize(admin, "artifact.delete")
    with pytest.raises(AccessInputError, match="not an environment name"):
        authorize(admin, Action.DEPLOY, "Prod/../x")
