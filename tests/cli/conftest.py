"""A bootstrapped home shared by the CLI access tests: one principal per role, bad credentials.

Built once per module with the library (fast): ``root`` (the bootstrapped admin), ``p-<role>``
for every role (roles granted per environment only in ``staging``), each with an unencrypted
key and a token; ``p-gone`` (disabled), a revoked and an expired token, a spare key to revoke,
and one small image in the store.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer.testing
from typer.testing import CliRunner

from access.conftest import ADMIN, RIGHT_ENV, add_principal, login, role_environments
from artifacts.conftest import isolate
from deploy.conftest import hello_repo
from immutrail.access import NewPrincipal, Role, bootstrap, create_token, disable_principal
from immutrail.access.actor import announce_key
from immutrail.access.manage import revoke_token
from immutrail.artifacts.builder import build
from immutrail.cli.main import app
from immutrail.keys.keystore import KEYS_DIR
from immutrail.ledger.home import init_ledger, open_ledger

GONE = "p-gone"
SPARE = "spare"

# Nothing from the user's environment may authenticate or name an actor.
CLEAN_ENV: dict[str, str | None] = dict.fromkeys(
    (
        "IMMUTRAIL_PRINCIPAL",
        "IMMUTRAIL_TOKEN",
        "IMMUTRAIL_ACTOR",
        "IMMUTRAIL_KEY_PASSPHRASE",
        "IMMUTRAIL_HOME",
        "IMMUTRAIL_DB",
    )
)


@pytest.fixture(autouse=True, scope="module")
def _command_built_once() -> Iterator[None]:
    """CliRunner turns the Typer app into a click command on every call (a third of a second
    for this app): build it once, or the matrix's thousand calls take minutes."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", functools.cache(typer.testing._get_command))
        yield


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class World:
    home: Path
    tmp: Path
    digest: str
    tokens: dict[str, str]
    """principal -> an active token; and ``revoked``/``expired`` -> such tokens of p-builder."""
    spare_key: str
    """A key announced for a name nobody created: something for admins to revoke."""

    def key_file(self, principal: str) -> Path:
        (path,) = (self.home / KEYS_DIR / principal).glob("*.key")
        return path


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str
    """Whitespace-normalized: rich wraps stderr at the terminal width."""

    def json(self) -> Any:
        return json.loads(self.stdout)


def role_name(role: Role) -> str:
    return f"p-{role.value}"


def invoke(
    world_home: Path,
    words: Sequence[str],
    rest: Sequence[str] = (),
    *,
    credentials: Sequence[str] = (),
    env: dict[str, str | None] | None = None,
    home: bool = True,
) -> Result:
    """``immutrail WORDS [credentials] --home HOME REST`` in-process, JSON output."""
    where = ["--home", str(world_home)] if home else []
    args = [*words, *credentials, *where, "--format", "json", *rest]
    result = CliRunner().invoke(app, args, env={**CLEAN_ENV, **(env or {})})
    return Result(result.exit_code, result.stdout, " ".join(result.stderr.split()))


def size(home: Path) -> int:
    with open_ledger(home) as ledger:
        return ledger.head().size


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("cli-access")
    home = root / "home"
    with pytest.MonkeyPatch.context() as patch:
        isolate(patch, root, date=None, actor=None)
        patch.delenv("IMMUTRAIL_KEY_PASSPHRASE", raising=False)
        ledger, _ = init_ledger(home)
        with ledger:
            bootstrap(home, ledger, NewPrincipal.check(ADMIN, "person", "Root"), passphrase=None)
            admin = login(home, ledger, ADMIN)
            tokens: dict[str, str] = {}
            for role in Role:
                name = role_name(role)
                add_principal(home, ledger, admin, name, [role], role_environments(role))
                expires = now() + timedelta(days=1)
                tokens[name] = create_token(ledger, admin, name, expires=expires, now=now()).secret
            add_principal(home, ledger, admin, GONE, [Role.BUILDER])
            tokens[GONE] = create_token(
                ledger, admin, GONE, expires=now() + timedelta(days=1), now=now()
            ).secret
            disable_principal(ledger, admin, GONE, reason="left")
            builder = role_name(Role.BUILDER)
            revoked = create_token(
                ledger, admin, builder, expires=now() + timedelta(days=1), now=now()
            )
            revoke_token(ledger, admin, revoked.token.token_id, reason="rotated")
            tokens["revoked"] = revoked.secret
            long_ago = now() - timedelta(days=2)
            tokens["expired"] = create_token(
                ledger, admin, builder, expires=long_ago + timedelta(days=1), now=long_ago
            ).secret
            spare = announce_key(home, ledger, admin, SPARE, passphrase=None)
        repo = hello_repo(root / "hello")
        digest = build(repo / "image.yaml", home, tag="hello:1", actor=ADMIN).digest
        yield World(home, root, digest, tokens, spare.info.keyid)


def as_role(role: Role, method: str, world: World) -> list[str]:
    name = role_name(role)
    return ["--as", name] if method == "key" else ["--token", world.tokens[name]]


__all__ = [
    "GONE",
    "RIGHT_ENV",
    "SPARE",
    "Result",
    "World",
    "as_role",
    "invoke",
    "role_name",
    "size",
    "world",
]
