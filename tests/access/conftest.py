"""Fixtures of the access tests: an initialised home, a bootstrapped admin, one principal per role.

Principals get unencrypted keys (``passphrase=None``) unless a test is about passphrases, so
that authenticating costs microseconds and the whole folder stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from artifacts.conftest import _isolated_git, home  # noqa: F401
from immutrail.access import (
    Identity,
    NewPrincipal,
    Role,
    authenticate,
    bootstrap,
    create_principal,
    create_token,
)
from immutrail.access.actor import announce_key
from immutrail.access.model import role_has_scoped_actions
from immutrail.keys.passphrase import PASSPHRASE_ENV
from immutrail.ledger.home import init_ledger, open_ledger
from immutrail.ledger.ledger import Ledger

ADMIN = "root"
RIGHT_ENV = "staging"
OTHER_ENV = "prod"


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IMMUTRAIL_PRINCIPAL", "IMMUTRAIL_TOKEN", PASSPHRASE_ENV):
        monkeypatch.delenv(name, raising=False)


def login(path: Path, ledger: Ledger, name: str, key_file: Path | None = None) -> Identity:
    """``name`` authenticated with its key in the home's key store (or ``key_file``)."""
    return authenticate(
        path,
        ledger,
        principal=name,
        token=None,
        key_file=key_file,
        passphrase_file=None,
        now=now(),
    )


def by_token(path: Path, ledger: Ledger, token: str, at: datetime | None = None) -> Identity:
    return authenticate(
        path,
        ledger,
        principal=None,
        token=token,
        key_file=None,
        passphrase_file=None,
        now=at or now(),
    )


def role_environments(role: Role) -> list[str] | None:
    """How the fixtures grant ``role``: only in RIGHT_ENV when it can be limited at all."""
    if role is Role.ADMIN or not role_has_scoped_actions(role):
        return None
    return [RIGHT_ENV]


def add_principal(
    path: Path,
    ledger: Ledger,
    admin: Identity,
    name: str,
    roles: list[Role],
    environments: list[str] | None = None,
    *,
    key: bool = True,
) -> None:
    create_principal(
        ledger,
        admin,
        NewPrincipal.check(name, "person", None),
        roles=roles,
        environments=environments,
    )
    if key:
        announce_key(path, ledger, admin, name, passphrase=None)


@pytest.fixture
def admin_home(home: Path) -> Iterator[tuple[Path, Ledger, Identity]]:
    """A home whose first principal, ``root``, is the bootstrapped admin."""
    with open_ledger(home) as ledger:
        bootstrap(home, ledger, NewPrincipal.check(ADMIN, "person", "Root"), passphrase=None)
        yield home, ledger, login(home, ledger, ADMIN)


@dataclass(frozen=True)
class Population:
    home: Path
    tokens: dict[Role, str]
    """One token per role, held by the principal ``p-<role>``."""


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> Population:
    """One principal per role, each with a key and a token (built once per module)."""
    path = tmp_path_factory.mktemp("population") / "home"
    ledger, _ = init_ledger(path)
    with ledger:
        bootstrap(path, ledger, NewPrincipal.check(ADMIN, "person", "Root"), passphrase=None)
        admin = login(path, ledger, ADMIN)
        tokens: dict[Role, str] = {}
        for role in Role:
            name = f"p-{role.value}"
            add_principal(path, ledger, admin, name, [role], role_environments(role))
            made = create_token(ledger, admin, name, expires=now() + timedelta(days=1), now=now())
            tokens[role] = made.secret
    return Population(path, tokens)
