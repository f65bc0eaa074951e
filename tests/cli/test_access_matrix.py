"""Every CLI command against every role, and against every kind of bad credential.

The table of what each command needs is ``immutrail.cli.permissions.COMMANDS``; this module walks
the real Typer app: a command missing from the table fails ``test_every_command_is_in_the_table``,
and a command whose check disagrees with its entry fails the matrix. A refusal must exit 1 with
a fixed message naming only the caller, the action and the environment asked for, print
nothing on stdout and append nothing to the ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from immutrail.access import ENV_SCOPED, ROLE_ACTIONS, Role
from immutrail.access.errors import INVALID_TOKEN, cannot_authenticate
from immutrail.cli.main import app
from immutrail.cli.permissions import COMMANDS, Need, Rule, command_table

from .conftest import GONE, RIGHT_ENV, SPARE, World, as_role, invoke, role_name, size

OTHER_ENV = "prod"
UNKNOWN_DIGEST = "sha256:" + "0" * 64
DOCS = Path(__file__).parents[2] / "docs" / "access.md"

# Arguments that reach each command's access check and, when it is allowed, fail fast or do
# something small: unknown images, missing files, a closed loopback port.
SAMPLES: dict[str, list[str]] = {
    "approve": [UNKNOWN_DIGEST, "--env", "prod"],
    "artifact export": ["{digest}", "-o", "{tmp}/export.tar", "--overwrite"],
    "artifact import": ["{tmp}/missing-layout"],
    "artifact list": [],
    "artifact provenance": ["{digest}"],
    "artifact pull": ["127.0.0.1:9/app:1"],
    "artifact push": ["{digest}", "127.0.0.1:9/app:1"],
    "artifact sbom": ["{digest}"],
    "artifact show": ["{digest}"],
    "audit at": ["2026-01-01T00:00:00Z", "--env", "{env}"],
    "audit changes": [
        "--env",
        "{env}",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2027-01-01T00:00:00Z",
    ],
    "audit evidence": [
        "--at",
        "2026-01-01T00:00:00Z",
        "--env",
        "{env}",
        "-o",
        "{tmp}/evidence.json",
        "--overwrite",
    ],
    "audit report": [
        "--framework",
        "soc2",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2027-01-01T00:00:00Z",
        "-o",
        "{tmp}/report.html",
        "--overwrite",
    ],
    "audit trace": [UNKNOWN_DIGEST],
    "build": ["{tmp}/missing/image.yaml"],
    "chaos": ["{env}", "--terminate", "1"],
    "check": [UNKNOWN_DIGEST],
    "deploy": ["{env}"],
    "drift check": ["{env}"],
    "drift watch": ["{env}", "--passes", "1", "--interval", "0.01"],
    "drift rules set": ["{env}", "{tmp}/missing.rego"],
    "drift rules clear": ["{env}"],
    "drift rules show": ["{env}"],
    "endpoint list": [],
    "endpoint show": ["{env}", "web"],
    "endpoint start": ["{env}", "web", "--port", "1", "--backend", "not-a-backend"],
    "endpoint stop": ["{env}", "web"],
    "env declare": ["{env}", "web", "{tmp}/missing.yaml"],
    "env show": ["{env}"],
    "exception grant": [
        "CVE-2026-0001",
        "--env",
        "{env}",
        "--expires",
        "2027-01-01T00:00:00Z",
        "--reason",
        "accepted",
    ],
    "exception list": ["--env", "{env}"],
    "keys export": ["{spare}"],
    "keys generate": ["--principal", SPARE, "--no-passphrase"],
    "keys list": [],
    "keys revoke": ["{spare}", "--reason", "spare"],
    "ledger append": ["--type", "test.event", "--subject", "test"],
    "ledger checkpoint": [],
    "ledger entry": ["0"],
    "ledger list": ["--limit", "1"],
    "ledger prove consistency": ["1", "2"],
    "ledger prove inclusion": ["0"],
    "ledger verify": [],
    "ledger vkey": [],
    "policy set": ["{env}", "{tmp}/missing-policy.yaml"],
    "policy show": ["{env}"],
    "principal create": ["newbie"],
    "principal disable": ["nobody", "--reason", "gone"],
    "principal list": [],
    "principal show": ["root"],
    "principal whoami": [],
    "promote": [UNKNOWN_DIGEST, "--to", "{env}"],
    "rebuild-verify": [UNKNOWN_DIGEST],
    "reconcile": ["{env}"],
    "role grant": ["nobody", "deployer", "--env", "staging"],
    "role list": ["root"],
    "role revoke": ["nobody", "deployer", "--env", "staging"],
    "rollback": ["{env}", "--service", "web"],
    "scan": [UNKNOWN_DIGEST],
    "sign": [UNKNOWN_DIGEST],
    "status": ["{env}"],
    "test": [UNKNOWN_DIGEST, "--", "true"],
    "token create": ["--expires-in", "1h"],
    "token list": ["--all"],
    "token revoke": ["0123456789abcdef"],
    "verify": [UNKNOWN_DIGEST],
    "vulndb import": ["{tmp}/missing-osv.json"],
    "vulndb status": [],
    "vulndb update": ["--url", "http://127.0.0.1:9", "--ecosystem", "PyPI"],
    "vulndb verify": [],
}


def app_commands() -> dict[str, Any]:
    import typer

    found: dict[str, Any] = {}

    def walk(command: Any, prefix: list[str]) -> None:
        subs = getattr(command, "commands", None)
        if subs is None:
            found[" ".join(prefix)] = command
            return
        for name, sub in subs.items():
            walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return found


APP = app_commands()
CHECKED = sorted(name for name, need in COMMANDS.items() if need.rule is not Rule.NONE)


def test_every_command_is_in_the_table() -> None:
    missing = sorted(set(APP) - set(COMMANDS))
    assert missing == [], f"commands without an entry in cli/permissions.py: {missing}"


def test_the_table_names_only_commands() -> None:
    assert sorted(set(COMMANDS) - set(APP)) == []


def test_every_checked_command_has_a_sample_and_takes_the_credentials() -> None:
    assert set(SAMPLES) >= set(CHECKED) & set(APP)
    for name in CHECKED:
        options = {opt for param in APP[name].params for opt in getattr(param, "opts", [])}
        assert {"--as", "--token", "--key-file", "--home"} <= options, name


def test_docs_show_the_command_table() -> None:
    assert command_table() in DOCS.read_text(encoding="utf-8")


def _args(world: World, name: str, env: str) -> list[str]:
    values = {
        "digest": world.digest,
        "tmp": str(world.tmp),
        "env": env,
        "spare": world.spare_key,
    }
    return [word.format(**values) for word in SAMPLES[name]]


def _allowed(role: Role, need: Need, env: str) -> bool:
    if need.rule is Rule.IDENTITY:
        return True
    assert need.action is not None
    if need.action not in ROLE_ACTIONS[role]:
        return False
    if need.action in ENV_SCOPED and need.env is not None:
        return env == RIGHT_ENV or role is Role.ADMIN  # the fixtures grant roles in RIGHT_ENV
    return True


def _environments(name: str) -> list[str]:
    need = COMMANDS[name]
    scoped = need.action in ENV_SCOPED and need.env is not None
    return [RIGHT_ENV, OTHER_ENV] if scoped else [RIGHT_ENV]


def _cases() -> Iterator[Any]:
    for name in CHECKED:
        for env in _environments(name):
            yield pytest.param(name, env, id=f"{name}-{env}")


def _leaks(message: str, caller: str, allowed_words: tuple[str, ...] = ()) -> list[str]:
    """Names of principals or environments a message mentions without the caller having named
    them: a refusal must not tell who or what exists."""
    others = [role_name(r) for r in Role if role_name(r) != caller] + ["root", GONE, SPARE]
    return [word for word in others if word in message and word not in allowed_words]


@pytest.mark.parametrize("method", ["key", "token"])
@pytest.mark.parametrize(("name", "env"), list(_cases()))
def test_matrix(world: World, name: str, env: str, method: str) -> None:
    need = COMMANDS[name]
    args = _args(world, name, env)
    for role in Role:
        caller = role_name(role)
        before = size(world.home)
        result = invoke(world.home, name.split(), args, credentials=as_role(role, method, world))
        if _allowed(role, need, env):
            assert "access denied" not in result.stderr, (role, result)
            assert "cannot authenticate" not in result.stderr, (role, result)
            assert INVALID_TOKEN not in result.stderr, (role, result)
            continue
        assert size(world.home) == before, f"{role} was refused but something was appended"
        assert result.stdout == "", (role, result)
        if need.rule is Rule.OR_SELF:
            # about someone else: denied, or the same answer as for something that is not there
            assert result.code in (1, 2), (role, result)
            assert result.stderr.startswith(
                (f"error: access denied: {caller} may not", "error: you have no")
            ), (role, result)
        else:
            assert need.action is not None
            scoped = need.action in ENV_SCOPED
            where = f" in environment {env}" if scoped else ""
            assert result.code == 1, (role, result)
            assert (
                result.stderr == f"error: access denied: {caller} may not {need.action}{where}"
            ), (
                role,
                result,
            )
        assert _leaks(result.stderr, caller, tuple(args)) == [], (role, result)


BAD_CREDENTIALS: dict[str, tuple[list[str], str]] = {
    "nobody": (["--as", "nobody"], "error: " + cannot_authenticate("nobody")),
    "disabled": (["--as", GONE], "error: " + cannot_authenticate(GONE)),
    "disabled-token": (["--token", "{token:" + GONE + "}"], "error: " + INVALID_TOKEN),
    "revoked-token": (["--token", "{token:revoked}"], "error: " + INVALID_TOKEN),
    "expired-token": (["--token", "{token:expired}"], "error: " + INVALID_TOKEN),
    "forged-token": (["--token", "imt_0123456789abcdef_" + "0" * 64], "error: " + INVALID_TOKEN),
    "wrong-key-file": (
        ["--as", "p-builder", "--key-file", "{keyfile:p-deployer}"],
        "error: " + cannot_authenticate("p-builder"),
    ),
    "none": ([], "error: authentication required"),
}


def _credentials(world: World, words: list[str]) -> list[str]:
    out = []
    for word in words:
        if word.startswith("{token:"):
            out.append(world.tokens[word[7:-1]])
        elif word.startswith("{keyfile:"):
            out.append(str(world.key_file(word[9:-1])))
        else:
            out.append(word)
    return out


@pytest.mark.parametrize(
    "name",
    CHECKED,
)
def test_bad_credentials_are_refused_alike(world: World, name: str) -> None:
    args = _args(world, name, RIGHT_ENV)
    for what, (words, message) in BAD_CREDENTIALS.items():
        before = size(world.home)
        result = invoke(world.home, name.split(), args, credentials=_credentials(world, words))
        assert result.code == 1, (what, result)
        assert result.stdout == "", (what, result)
        # the one fixed text per kind (the hint after it says how to authenticate)
        assert result.stderr.startswith(message), (what, result)
        assert size(world.home) == before, what
