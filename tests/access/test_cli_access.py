"""`immutrail principal|role|token`: the whole flow through the CLI, mounted as cli/main.py will.

Bootstrap, principals, roles, tokens created, expired, revoked, replayed and forged, a disabled
principal, an unknown one; every refusal is checked for its exit code and for saying nothing
about principals, tokens or environments the caller did not name.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from immutrail.access import AccessState, Role, create_token
from immutrail.access.actor import announce_key
from immutrail.access.errors import INVALID_TOKEN
from immutrail.cli import access as access_cli
from immutrail.ledger.event import parse_entry
from immutrail.ledger.home import open_ledger
from immutrail.ledger.storage.interface import EntryFilter

from .conftest import ADMIN, Population, login

cli = typer.Typer()
cli.add_typer(access_cli.principal_app, name="principal")
cli.add_typer(access_cli.role_app, name="role")
cli.add_typer(access_cli.token_app, name="token")
runner = CliRunner()


def run(home: Path, *args: str, code: int = 0, fmt: str = "json", env: Any = None) -> Any:
    result = runner.invoke(cli, [*args, "--home", str(home), "--format", fmt], env=env)
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    if code != 0:
        assert result.stdout == ""
        # rich wraps stderr at the terminal width: compare words, not line breaks
        return " ".join(result.stderr.split())
    if fmt == "json":
        data = json.loads(result.stdout)
        assert data["schema_version"] == 1
        return data
    return result.stdout


def size(home: Path) -> int:
    with open_ledger(home) as ledger:
        return ledger.head().size


def actors(home: Path, start: int) -> list[tuple[str, str]]:
    with open_ledger(home) as ledger:
        return [(row.type, row.actor) for row in ledger.entries(EntryFilter(start=start))]


@pytest.fixture
def booted(home: Path) -> Path:
    data = run(home, "principal", "create", ADMIN, "--role", "admin", "--no-passphrase")
    assert data["bootstrap"] and data["roles"] == [{"role": "admin", "environments": "*"}]
    assert Path(data["key"]["path"]).is_file() and not data["key"]["encrypted"]
    return home


def test_bootstrap_once_and_only_as_admin(home: Path, tmp_path: Path) -> None:
    message = run(home, "principal", "create", "alice", "--role", "deployer", "--env", "x", code=2)
    assert "the first one must be an admin" in message
    assert run(home, "principal", "create", "alice", code=2).startswith("error: no principal")
    for role in ("nosuch", ""):  # a bad --role is bad input (exit 2), not an uncaught error
        assert "is not a role" in run(home, "principal", "create", "alice", "--role", role, code=2)
    assert size(home) == 0
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    out = run(
        home,
        "principal",
        "create",
        "alice",
        "--role",
        "admin",
        "--display-name",
        "Alice A.",
        "--email",
        "alice@Example.org",
        "--passphrase-file",
        str(secret),
        fmt="text",
    )
    assert "bootstrapped admin alice" in out and "admin (every environment)" in out
    assert actors(home, 0) == [
        ("key.created", "alice"),
        ("principal.created", "alice"),
        ("role.granted", "alice"),
    ]
    # a second unauthenticated create is no bootstrap
    message = run(home, "principal", "create", "mallory", "--role", "admin", code=1)
    assert message.startswith("error: authentication required")
    assert size(home) == 3
    shown = run(
        home, "principal", "show", "alice", "--as", "alice", "--passphrase-file", str(secret)
    )
    assert shown["email"] == "alice@example.org" and shown["display_name"] == "Alice A."
    assert shown["keys"][0]["counts"] is True


def test_cli_flow(booted: Path) -> None:
    home = booted
    auth = ("--as", ADMIN)
    start = size(home)
    made = run(home, "principal", "create", "bob", "--role", "deployer", "--env", "staging", *auth)
    assert made["roles"] == [{"role": "deployer", "environments": ["staging"]}]
    run(home, "principal", "create", "ci", "--kind", "automation", "--role", "builder", *auth)
    run(home, "role", "grant", "bob", "operator", "--env", "staging", "--env", "prod", *auth)
    message = run(home, "role", "grant", "bob", "deployer", *auth, code=2)
    assert "say where" in message
    message = run(home, "principal", "create", "x", "--no-passphrase", *auth, code=2)
    assert "for the bootstrap only" in message
    listed = run(home, "role", "list", *auth)["grants"]
    assert {(g["principal"], g["role"]) for g in listed} == {
        ("root", "admin"),
        ("bob", "deployer"),
        ("bob", "operator"),
        ("ci", "builder"),
    }
    # tokens: printed once, json field `token`
    created = run(home, "token", "create", "--for", "bob", "--expires-in", "2h", *auth)
    token = created["token"]
    assert token.startswith("imt_") and created["principal"] == "bob"
    listing = run(home, "token", "list", "--all", *auth)
    assert token not in json.dumps(listing) and "secret_sha256" not in json.dumps(listing)
    me = run(home, "principal", "whoami", env={"IMMUTRAIL_TOKEN": token})
    assert me["principal"] == "bob" and me["method"] == "token"
    # bob's token makes bob the actor of what he does
    own = run(home, "token", "create", "--expires-in", "1h", "--token", token)
    assert own["created"]["by"] == "bob"
    run(home, "token", "revoke", own["token_id"], "--reason", "test", "--token", token)
    text = run(home, "principal", "whoami", "--token", token, fmt="text")
    assert "bob (authenticated with token" in text and "deploy" in text
    # every change was recorded with its authenticated actor, never IMMUTRAIL_ACTOR's user:test
    recorded = actors(home, start)
    assert {actor for _, actor in recorded} == {"root", "bob"}
    assert ("token.created", "bob") in recorded and ("token.revoked", "bob") in recorded
    with open_ledger(home) as ledger:
        rows = list(ledger.entries(EntryFilter(start=start)))
        signed = [parse_entry(r.data).signature is not None for r in rows]
        assert signed == [r.actor == "root" for r in rows]  # root used a key, bob a token
        assert not AccessState.replay(ledger).rejected
    # revocation and disabling
    run(home, "token", "revoke", created["token_id"], *auth)
    assert run(home, "principal", "whoami", "--token", token, code=1) == f"error: {INVALID_TOKEN}"
    disabled = run(home, "principal", "disable", "ci", "--reason", "decommissioned", *auth)
    assert disabled["enabled"] is False
    principals = run(home, "principal", "list", *auth)["principals"]
    assert [(p["name"], p["enabled"]) for p in principals] == [
        ("root", True),
        ("bob", True),
        ("ci", False),
    ]
    table = run(home, "principal", "list", *auth, fmt="text")
    assert "disabled" in table and "deployer" in table


def test_token_failures_are_indistinguishable(booted: Path) -> None:
    home = booted
    auth = ("--as", ADMIN)
    run(home, "principal", "create", "bob", "--role", "auditor", *auth)
    run(home, "principal", "create", "carol", "--role", "auditor", *auth)
    live = run(home, "token", "create", "--for", "bob", *auth)["token"]
    revoked = run(home, "token", "create", "--for", "bob", *auth)
    run(home, "token", "revoke", revoked["token_id"], *auth)
    of_disabled = run(home, "token", "create", "--for", "carol", *auth)["token"]
    run(home, "principal", "disable", "carol", "--reason", "left", *auth)
    with open_ledger(home) as ledger:
        past = datetime(2020, 1, 1, tzinfo=UTC)
        identity = login(home, ledger, ADMIN)
        expired = create_token(
            ledger, identity, "bob", expires=past + timedelta(hours=1), now=past
        ).secret
    token_id = live.split("_")[1]
    forged = f"imt_{token_id}_{'f' * 64}"
    unknown = f"imt_{'0' * 16}_{live.split('_')[2]}"
    messages = {
        run(home, "principal", "whoami", "--token", bad, code=1)
        for bad in (revoked["token"], of_disabled, expired, forged, unknown, "imt_short", "x")
    }
    assert messages == {f"error: {INVALID_TOKEN}"}
    assert run(home, "principal", "whoami", "--token", live)["principal"] == "bob"
    # a token and a principal that do not match
    assert run(home, "principal", "whoami", "--token", live, "--as", "root", code=1) == (
        f"error: {INVALID_TOKEN}"
    )


def test_principal_failures_are_indistinguishable(booted: Path) -> None:
    home = booted
    auth = ("--as", ADMIN)
    run(home, "principal", "create", "bob", "--role", "auditor", *auth)
    run(home, "principal", "create", "carol", "--role", "auditor", *auth)
    with open_ledger(home) as ledger:
        announce_key(home, ledger, login(home, ledger, ADMIN), "carol", passphrase=None)
    run(home, "principal", "disable", "carol", "--reason", "left", *auth)
    for name in ("nobody", "bob", "carol"):  # unknown, without a key, disabled
        message = run(home, "principal", "whoami", "--as", name, code=1)
        assert message == (
            f"error: cannot authenticate as {name}: no enabled principal of that name has a "
            "usable key here"
        )
    assert "authentication required" in run(home, "principal", "whoami", code=1)
    assert "not a principal name" in run(home, "principal", "whoami", "--as", "Bad Name", code=2)


def test_refusals_do_not_reveal_what_exists(population: Population) -> None:
    home = population.home
    deployer = ("--token", population.tokens[Role.DEPLOYER])
    # showing someone else: the same denial whether they exist or not
    shown = {run(home, "principal", "show", who, *deployer, code=1) for who in ("p-admin", "ghost")}
    assert shown == {"error: access denied: p-deployer may not audit.read"}
    # revoking a token that is someone else's, or that does not exist: the same answer
    with open_ledger(home) as ledger:
        state = AccessState.replay(ledger)
        others = next(t.token_id for t in state.tokens.values() if t.principal == "p-builder")
    before = size(home)
    answers = {
        run(home, "token", "revoke", token_id, *deployer, code=2).replace(token_id, "ID")
        for token_id in (others, "0123456789abcdef")
    }
    assert answers == {"error: you have no token ID"}
    # granting to a principal that does not exist, as a non-admin: denied before any lookup
    denied = {
        run(home, "role", "grant", who, "auditor", *deployer, code=1)
        for who in ("p-auditor", "ghost")
    }
    assert denied == {"error: access denied: p-deployer may not principals.manage"}
    assert size(home) == before


# One row per command: its arguments (with {n} for a fresh name) and the roles allowed to run it.
# A non-admin may create and list its own tokens, show itself and list its own grants.
COMMANDS: list[tuple[str, list[str], set[str]]] = [
    ("create principal", ["principal", "create", "n{n}"], {"admin"}),
    ("grant role", ["role", "grant", "p-auditor", "deployer", "--env", "e{n}"], {"admin"}),
    ("revoke role", ["role", "revoke", "p-operator", "operator", "--env", "staging"], {"admin"}),
    ("disable principal", ["principal", "disable", "p-builder", "--reason", "r"], {"admin"}),
    (
        "own token",
        ["token", "create", "--expires-in", "1h"],
        {"admin", "builder", "reviewer", "deployer", "operator"},
    ),
    ("token for another", ["token", "create", "--for", "root", "--expires-in", "1h"], {"admin"}),
    ("list all tokens", ["token", "list", "--all"], {"admin", "reviewer", "auditor"}),
    ("list own tokens", ["token", "list"], {r.value for r in Role}),
    ("list principals", ["principal", "list"], {"admin", "reviewer", "auditor"}),
    ("show another", ["principal", "show", "root"], {"admin", "reviewer", "auditor"}),
    ("list all grants", ["role", "list"], {"admin", "reviewer", "auditor"}),
    ("whoami", ["principal", "whoami"], {r.value for r in Role}),
]


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
def test_every_command_against_every_role(home: Path, role: Role, tmp_path: Path) -> None:
    """Each role runs every command; only the allowed ones succeed, the rest write nothing."""
    admin = run(home, "principal", "create", ADMIN, "--role", "admin", "--no-passphrase")
    assert admin["bootstrap"]
    as_root = ("--as", ADMIN)
    run(home, "principal", "create", "p-builder", "--role", "builder", *as_root)
    run(
        home,
        "principal",
        "create",
        "p-operator",
        "--role",
        "operator",
        "--env",
        "staging",
        *as_root,
    )
    run(home, "principal", "create", "p-auditor", "--role", "auditor", *as_root)
    name = f"caller-{role.value}"
    envs = ["--env", "staging"] if role in (Role.DEPLOYER, Role.OPERATOR, Role.REVIEWER) else []
    run(home, "principal", "create", name, "--role", role.value, *envs, *as_root)
    token = run(home, "token", "create", "--for", name, *as_root)["token"]
    for n, (label, args, allowed) in enumerate(COMMANDS):
        before = size(home)
        argv = [a.format(n=n) for a in args]
        if role.value in allowed:
            run(home, *argv, "--token", token)
        else:
            message = run(home, *argv, "--token", token, code=1)
            assert message.startswith(f"error: access denied: {name} may not "), (label, message)
            assert size(home) == before, label
