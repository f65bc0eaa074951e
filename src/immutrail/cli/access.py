"""`immutrail principal|role|token …`: who may do what, every change recorded in the ledger.

Every command authenticates its caller (``--as``/``IMMUTRAIL_PRINCIPAL`` with a key of that
principal here, or ``--token``/``IMMUTRAIL_TOKEN``) and records that identity as the actor. The
one exception is the bootstrap: on a ledger without principals, ``principal create NAME --role
admin`` creates the first admin and its key without authentication.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Column, Table
from rich.text import Text

from immutrail.access.authenticate import Identity, authenticate, whoami
from immutrail.access.errors import (
    INVALID_TOKEN,
    AccessDenied,
    AccessError,
    AccessInputError,
    AuthenticationError,
    cannot_authenticate,
)
from immutrail.access.manage import (
    NewPrincipal,
    bootstrap,
    create_principal,
    create_token,
    disable_principal,
    grant_role,
    list_grants,
    list_principals,
    list_tokens,
    revoke_role,
    revoke_token,
    show_principal,
)
from immutrail.access.model import Grant, Role, parse_role, role_has_scoped_actions
from immutrail.access.registry import AccessState, Token, replayed
from immutrail.access.tokens import parse_duration
from immutrail.ledger.errors import LedgerInputError
from immutrail.ledger.event import parse_time
from immutrail.ledger.home import open_ledger
from immutrail.ledger.ledger import Ledger

from .common import (
    DEFAULT_HOME,
    AsOption,
    Caller,
    DbOption,
    ExitCode,
    Format,
    FormatOption,
    HomeOption,
    KeyFileOption,
    PassphraseFileOption,
    TokenOption,
    emit_json,
    errors_to_exit_codes,
    fail,
    passphrase_source,
    stdout,
)
from .common import now as _now

_EXITS = (
    "Exit codes: 0 ok; 1 not authenticated or not allowed (nothing was written); 2 bad input "
    "(nothing was written); 3 operational error (ledger unreachable, concurrent change)."
)

principal_app = typer.Typer(
    no_args_is_help=True,
    help=f"Principals (people and automation) and who they are. {_EXITS}",
)
role_app = typer.Typer(
    no_args_is_help=True, help=f"Roles granted to principals, per environment. {_EXITS}"
)
token_app = typer.Typer(
    no_args_is_help=True,
    help=f"API tokens: expiring, stored only as hashes, revocable. {_EXITS}",
)

EnvOption = Annotated[
    list[str] | None,
    typer.Option("--env", metavar="ENV", help="An environment (repeat for several)."),
]
AllEnvOption = Annotated[
    bool, typer.Option("--all-environments", help="Every environment, present and future.")
]


class KindChoice(StrEnum):
    person = "person"
    automation = "automation"


class Algorithm(StrEnum):
    ed25519 = "ed25519"
    ecdsa_p256 = "ecdsa-p256"


@contextmanager
def access_errors() -> Iterator[None]:
    """The project's error mapping, plus access control's: refusals exit 1, bad input 2."""
    with errors_to_exit_codes():
        try:
            yield
        except (AuthenticationError, AccessDenied) as exc:
            fail(exc.diagnostics(), ExitCode.VERIFICATION_FAILED)
        except AccessInputError as exc:
            fail(exc.diagnostics(), ExitCode.USAGE)
        except AccessError as exc:
            fail(exc.diagnostics(), ExitCode.OPERATIONAL)


@contextmanager
def session(
    home: Path, db: str | None, creds: Caller
) -> Iterator[tuple[Ledger, AccessState, Identity]]:
    """The ledger, the replayed access state, and the authenticated caller."""
    with open_ledger(home, db) as ledger:
        state = replayed(ledger)
        identity = authenticate(
            home,
            ledger,
            principal=creds.principal,
            token=creds.token,
            key_file=creds.key_file,
            passphrase_file=creds.passphrase_file,
            now=_now(),
            state=state,
            passphrase=passphrase_source(creds.passphrase_file),
        )
        yield ledger, state, identity


def _environments(envs: list[str] | None, everywhere: bool, roles: list[Role]) -> list[str] | None:
    """``--env`` names, or None for every environment.

    Roles granted only for every environment (admin, and those without environment-scoped
    actions) need neither option; for the others the caller must say where, so that a deployer
    is never made one of every environment by omission.
    """
    if everywhere and envs:
        raise AccessInputError("give --env or --all-environments, not both")
    if everywhere:
        return None
    if envs:
        return list(envs)
    if all(r is Role.ADMIN or not role_has_scoped_actions(r) for r in roles):
        return None
    raise AccessInputError("say where: --env ENV (repeatable) or --all-environments")


def _grant_text(grant: Grant) -> str:
    where = (
        "every environment" if grant.environments is None else ", ".join(sorted(grant.environments))
    )
    return f"{grant.role.value} ({where})"


def _print_principal(data: dict[str, Any]) -> None:
    state = "enabled" if data["enabled"] else "DISABLED"
    stdout.print(f"principal  {data['name']} ({data['kind']}, {state})", markup=False)
    stdout.print(f"name       {data['display_name']}", markup=False)
    if data.get("email"):
        stdout.print(f"email      {data['email']}", markup=False)
    created = data["created"]
    boot = " (bootstrap)" if data["bootstrap"] else ""
    stdout.print(
        f"created    {created['time']} by {created['by']} (entry {created['index']}){boot}",
        markup=False,
    )
    if data["disabled"]:
        gone = data["disabled"]
        stdout.print(
            f"disabled   {gone['time']} by {gone['by']} (entry {gone['index']}): {gone['reason']}",
            markup=False,
        )
    roles = data.get("roles") or []
    envs = (r["environments"] for r in roles)
    listed = [
        f"{r['role']} ({'every environment' if e == '*' else ', '.join(e)})"
        for r, e in zip(roles, envs, strict=True)
    ]
    stdout.print(f"roles      {'; '.join(listed) or '(none)'}", markup=False)
    for key in data.get("keys", []):
        counts = "counts" if key["counts"] else "does not count"
        stdout.print(f"key        {key['keyid'][:16]} {key['purpose']} ({counts})", markup=False)
    for token_id in data.get("tokens", []):
        stdout.print(f"token      {token_id}", markup=False)


# -- principal -----------------------------------------------------------------------------------


@principal_app.command("create")
def principal_create(
    name: Annotated[str, typer.Argument(help="The principal's id, e.g. alice or ci@example.org.")],
    kind: Annotated[KindChoice, typer.Option("--kind", help="A person or automation.")] = (
        KindChoice.person
    ),
    display_name: Annotated[
        str | None, typer.Option("--display-name", help="Its readable name (default: NAME).")
    ] = None,
    email: Annotated[str | None, typer.Option("--email", help="An e-mail address.")] = None,
    role: Annotated[
        list[str] | None,
        typer.Option("--role", help="Grant this role at once (repeatable; see `role list`)."),
    ] = None,
    env: EnvOption = None,
    all_environments: AllEnvOption = False,
    adopt_key: Annotated[
        list[str] | None,
        typer.Option(
            "--adopt-key",
            metavar="KEYID",
            help="A key already announced for NAME that may authenticate it (repeatable).",
        ),
    ] = None,
    algorithm: Annotated[
        Algorithm | None,
        typer.Option(
            "--algorithm", help="Bootstrap only: the admin key's type.", show_default="ed25519"
        ),
    ] = None,
    no_passphrase: Annotated[
        bool,
        typer.Option("--no-passphrase", help="Bootstrap only: keep the admin key unencrypted."),
    ] = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Create a principal (principal.created), with roles (role.granted) if given.

    Needs principals.manage (admin). On a ledger with no principal at all, `principal create
    NAME --role admin` is the bootstrap: it needs no authentication, generates NAME's key
    (encrypted with --passphrase-file / $IMMUTRAIL_KEY_PASSPHRASE / a prompt, unless
    --no-passphrase) and works once. Exit 1 not allowed, 2 bad input or name taken.
    """
    creds = Caller(as_, token, key_file, passphrase_file)
    with access_errors():
        roles = [parse_role(r) for r in role or []]
        new = NewPrincipal.check(name, kind.value, display_name, email)
        if not roles and (env or all_environments):
            raise AccessInputError("--env and --all-environments go with --role")
        envs = _environments(env, all_environments, roles) if roles else None
        with open_ledger(home, db) as ledger:
            state = replayed(ledger)
            if not state.bootstrapped:
                result = _bootstrap(
                    home, ledger, state, new, roles, envs, creds, no_passphrase, algorithm
                )
            else:
                if no_passphrase or algorithm is not None:
                    raise AccessInputError(
                        "--no-passphrase and --algorithm are for the bootstrap only",
                        hint="Give the new principal a key with `immutrail keys generate`.",
                    )
                identity = authenticate(
                    home,
                    ledger,
                    principal=as_,
                    token=token,
                    key_file=key_file,
                    passphrase_file=passphrase_file,
                    now=_now(),
                    state=state,
                    passphrase=passphrase_source(passphrase_file),
                )
                made, indices = create_principal(
                    ledger,
                    identity,
                    new,
                    roles=roles,
                    environments=envs,
                    adopt_keys=adopt_key or (),
                    state=state,
                )
                result = {
                    **made.to_dict(),
                    "roles": [g.to_dict() for g in state.grants_of(made.name)],
                    "ledger_indices": indices,
                }
    if fmt is Format.json:
        emit_json(result)
        return
    verb = "bootstrapped admin" if result["bootstrap"] else "created principal"
    stdout.print(f"{verb} {result['name']}", markup=False)
    _print_principal(result)
    if "key" in result:
        stdout.print(f"key file   {result['key']['path']}", markup=False)
    stdout.print(
        f"ledger     entries {', '.join(map(str, result['ledger_indices']))}", markup=False
    )


def _bootstrap(
    home: Path,
    ledger: Ledger,
    state: AccessState,
    new: NewPrincipal,
    roles: list[Role],
    envs: list[str] | None,
    creds: Caller,
    no_passphrase: bool,
    algorithm: Algorithm | None,
    secret: bytes | None = None,
) -> dict[str, Any]:
    if creds.token:
        raise AuthenticationError(INVALID_TOKEN)
    if creds.principal not in (None, new.name):
        raise AuthenticationError(cannot_authenticate(creds.principal or ""))
    if roles != [Role.ADMIN] or envs is not None:
        raise AccessInputError(
            "no principal exists yet: the first one must be an admin",
            hint=f"Run `immutrail principal create {new.name} --role admin` (the bootstrap).",
        )
    if no_passphrase and creds.passphrase_file is not None:
        raise AccessInputError("give either --no-passphrase or --passphrase-file, not both")
    if secret is None and not no_passphrase:
        secret = new_key_passphrase(new.name, creds.passphrase_file)
    kind = (algorithm or Algorithm.ed25519).value
    made = bootstrap(home, ledger, new, passphrase=secret, algorithm=kind, state=state)
    return {
        **made.principal.to_dict(),
        "roles": [g.to_dict() for g in state.grants_of(new.name)],
        "key": {
            "keyid": made.key.info.keyid,
            "path": str(made.key.path),
            "encrypted": made.key.encrypted,
            "ledger_index": made.key.ledger_index,
        },
        "ledger_indices": made.indices,
    }


def new_key_passphrase(name: str, passphrase_file: Path | None) -> bytes:
    """The passphrase that encrypts ``name``'s new key: file, environment, or a prompt."""
    return passphrase_source(passphrase_file).get(f"the new key of {name}", confirm=True)


def bootstrap_admin(
    home: Path,
    ledger: Ledger,
    name: str,
    *,
    email: str | None,
    no_passphrase: bool,
    passphrase_file: Path | None,
    secret: bytes | None = None,
) -> dict[str, Any]:
    """`immutrail init --admin NAME`: the bootstrap at creation, so that a ledger never runs in
    setup mode. On a ledger NAME already bootstrapped: what exists (``"bootstrap": "existing"``);
    on one bootstrapped by someone else: AccessInputError, nothing written. ``secret``: the new
    key's passphrase when the caller already has it (else it is asked for when needed)."""
    new = NewPrincipal.check(name, "person", None, email)
    state = replayed(ledger)
    first = state.principal(new.name)
    if state.bootstrapped:
        if first is None or not first.bootstrap:
            raise AccessInputError(
                "access is already set up on this ledger, by another admin",
                hint="Run `immutrail init` without --admin, then authenticate with --as.",
            )
        return {**first.to_dict(), "roles": [g.to_dict() for g in state.grants_of(new.name)]}
    return _bootstrap(
        home,
        ledger,
        state,
        new,
        [Role.ADMIN],
        None,
        Caller(passphrase_file=passphrase_file),
        no_passphrase,
        None,
        secret,
    )


@principal_app.command("list")
def principal_list(
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Every principal with its roles. Needs audit.read (admin, reviewer, auditor); exit 1 if not.

    Access events that do not count (forged, tampered, unauthorized) are listed too.
    """
    creds = Caller(as_, token, key_file, passphrase_file)
    with access_errors(), session(home, db, creds) as (_, state, identity):
        principals = list_principals(state, identity)
    rows = [
        {**p.to_dict(), "roles": [g.to_dict() for g in state.grants_of(p.name)]} for p in principals
    ]
    rejected = [r.to_dict() for r in state.rejected]
    if fmt is Format.json:
        emit_json({"principals": rows, "rejected": rejected})
        return
    table = Table("principal", "kind", "display name", "roles", "status", "created")
    for p in principals:
        table.add_row(
            p.name,
            p.kind.value,
            p.display_name,
            "; ".join(_grant_text(g) for g in state.grants_of(p.name)) or "(none)",
            "enabled" if p.enabled else "disabled",
            f"{p.created_at} by {p.created_by}",
        )
    stdout.print(table, markup=False)
    for item in rejected:
        stdout.print(
            Text.assemble(
                ("does not count:", "yellow"),
                f" entry {item['index']} ({item['type']} by {item['actor']}): {item['reason']}",
            ),
            highlight=False,
        )


@principal_app.command("show")
def principal_show(
    name: Annotated[str, typer.Argument(help="The principal.")],
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """A principal: kind, roles, keys (and whether they count), tokens, history.

    Anyone may show themselves; others need audit.read. Exit 1 not allowed, 2 unknown name.
    """
    creds = Caller(as_, token, key_file, passphrase_file)
    with access_errors(), session(home, db, creds) as (_, state, identity):
        data = show_principal(state, identity, name)
    if fmt is Format.json:
        emit_json(data)
    else:
        _print_principal(data)


@principal_app.command("disable")
def principal_disable(
    name: Annotated[str, typer.Argument(help="The principal.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger).")],
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Disable a principal for good (principal.disabled): its keys and tokens stop working.

    Needs principals.manage (admin). Refused (exit 2) when it would leave no enabled admin.
    """
    creds = Caller(as_, token, key_file, passphrase_file)
    with access_errors(), session(home, db, creds) as (ledger, state, identity):
        principal, index = disable_principal(ledger, identity, name, reason=reason, state=state)
    if fmt is Format.json:
        emit_json({**principal.to_dict(), "ledger_index": index})
    else:
        stdout.print(f"disabled {principal.name} (entry {index})", markup=False)


@principal_app.command("whoami")
def principal_whoami(
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Who the credentials given authenticate as, and what that principal may do where.

    Exit 1 when they authenticate no one.
    """
    creds = Caller(as_, token, key_file, passphrase_file)
    with access_errors(), session(home, db, creds) as (_, _state, identity):
        data = whoami(identity)
    if fmt is Format.json:
        emit_json(data)
        return
    via = f"token {identity.token_id}" if identity.token_id else f"key {identity.key_id}"
    stdout.print(f"{identity.principal} (authenticated with {via})", markup=False)
    if identity.scopes is not None:
        stdout.print(f"scopes   {', '.join(sorted(identity.scopes))}", markup=False)
    stdout.print(
        f"roles    {'; '.join(_grant_text(g) for g in identity.grants) or '(none)'}",
        markup=False,
    )
    table = Table("may", "where")
    for item in data["allowed"]:
        envs = item["environments"]
        where = "-" if envs is None else "every environment" if envs == "*" else ", ".join(envs)
        table.add_row(item["action"], where)
    stdout.print(table, markup=False)


# -- role ----------------------------------------------------------------------------------------


@role_app.command("grant")
def role_grant(
    name: Annotated[str, typer.Argument(help="The principal.")],
    role: Annotated[str, typer.Argument(help="admin, builder, reviewer, deployer, ...")],
    env: EnvOption = None,
    all_environments: AllEnvOption = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Grant ROLE to a principal in --env ENV… or --all-environments (role.granted).

    Needs principals.manage (admin). Exit 1 not allowed; 2 unknown principal, role already
    held there, admin or auditor/builder limited to some environments.
    """
    creds = Caller(as_, token, key_file, passphrase_file)
    with access_errors():
        wanted = parse_role(role)
        envs = _environments(env, all_environments, [wanted])
        with session(home, db, creds) as (ledger, state, identity):
            grant, index = grant_role(ledger, identity, name, wanted, envs, state=state)
    if fmt is Format.json:
        emit_json({"principal": name, **grant.to_dict(), "ledger_index": index})
    else:
        stdout.print(f"{name} now holds {_grant_text(grant)} (entry {index})", markup=False)


@role_app.command("revoke")
def role_revoke(
    name: Annotated[str, typer.Argument(help="The principal.")],
    role: Annotated[str, typer.Argument(help="The role to take back.")],
    env: EnvOption = None,
    all_environments: AllEnvOption = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Take ROLE back in --env ENV… or entirely with --all-environments (role.revoked).

    Needs principals.manage (admin). Exit 2 when the role is not held there, or when it would
    leave no enabled admin.
    """
    creds = Caller(as_, token, key_file, passphrase_file)
    with access_errors():
        wanted = parse_role(role)
        envs = _environments(env, all_environments, [wanted])
        with session(home, db, creds) as (ledger, state, identity):
            remaining, index = revoke_role(ledger, identity, name, wanted, envs, state=state)
    if fmt is Format.json:
        emit_json(
            {
                "principal": name,
                "role": wanted.value,
                "remaining": None if remaining is None else remaining.to_dict()["environments"],
                "ledger_index": index,
            }
        )
    else:
        left = "nothing" if remaining is None else _grant_text(remaining)
        stdout.print(
            f"revoked {wanted.value} from {name}; left of it: {left} (entry {index})", markup=False
        )


@role_app.command("list")
def role_list(
    name: Annotated[
        str | None, typer.Argument(help="Only this principal (default: everyone).")
    ] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """The grants: one's own for anyone, everyone's with audit.read. Exit 1 not allowed."""
    creds = Caller(as_, token, key_file, passphrase_file)
    with access_errors(), session(home, db, creds) as (_, state, identity):
        grants = list_grants(state, identity, name)
    if fmt is Format.json:
        emit_json({"grants": [{"principal": g.principal, **g.to_dict()} for g in grants]})
        return
    table = Table("principal", "role", "environments")
    for g in grants:
        where = "*" if g.environments is None else ", ".join(sorted(g.environments))
        table.add_row(g.principal, g.role.value, where)
    stdout.print(table, markup=False)


# -- token ---------------------------------------------------------------------------------------


def _expiry(expires_in: str | None, expires_at: str | None, now: datetime) -> datetime:
    if expires_in and expires_at:
        raise AccessInputError("give --expires-in or --expires-at, not both")
    if expires_at:
        try:
            return parse_time(expires_at, field="--expires-at")
        except LedgerInputError as exc:
            raise AccessInputError(str(exc)) from None
    return now + parse_duration(expires_in or "30d")


@token_app.command("create")
def token_create(
    for_: Annotated[
        str | None,
        typer.Option("--for", metavar="PRINCIPAL", help="Whose token (default: the caller's)."),
    ] = None,
    expires_in: Annotated[
        str | None,
        typer.Option("--expires-in", help="Lifetime: 45s, 90m, 12h, 30d, 2w (default: 30d)."),
    ] = None,
    expires_at: Annotated[
        str | None, typer.Option("--expires-at", help="Expiry as an RFC 3339 time.")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            metavar="ACTION",
            help="Limit the token to this action (repeatable; default: all its principal may).",
        ),
    ] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Create an API token (token.created) and print it ONCE; only its hash is kept.

    Own tokens need tokens.manage.own, others' tokens.manage. At most 366 days. A caller using
    a token can only create tokens that expire no later and reach no further than its own.
    Exit 1 not allowed; 2 bad expiry, scope or principal.
    """
    creds = Caller(as_, token, key_file, passphrase_file)
    with access_errors():
        now = _now()
        expires = _expiry(expires_in, expires_at, now)
        with session(home, db, creds) as (ledger, state, identity):
            made = create_token(
                ledger, identity, for_, expires=expires, now=now, scopes=scope, state=state
            )
    if fmt is Format.json:
        emit_json({**made.token.to_dict(now), "token": made.secret, "ledger_index": made.index})
        return
    stdout.print(
        f"token {made.token.token_id} for {made.token.principal}, expires "
        f"{made.token.expires_text} (entry {made.index})",
        markup=False,
    )
    stdout.print("[bold]Keep it now: it is shown only this once.[/]", markup=True)
    stdout.print(made.secret, markup=False)


@token_app.command("list")
def token_list(
    for_: Annotated[
        str | None,
        typer.Option("--for", metavar="PRINCIPAL", help="This principal's (default: own)."),
    ] = None,
    everyone: Annotated[bool, typer.Option("--all", help="Every principal's tokens.")] = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Tokens with their status (active, expired, revoked); never their secrets or hashes.

    Own tokens for anyone; others' need audit.read or tokens.manage. Exit 1 not allowed.
    """
    creds = Caller(as_, token, key_file, passphrase_file)
    with access_errors():
        if for_ and everyone:
            raise AccessInputError("give --for or --all, not both")
        with session(home, db, creds) as (_, state, identity):
            tokens = list_tokens(state, identity, for_, everyone=everyone)
    now = _now()
    if fmt is Format.json:
        emit_json({"tokens": [t.to_dict(now) for t in tokens]})
        return
    _token_table(tokens, now)


def _token_table(tokens: list[Token], now: datetime) -> None:
    table = Table(
        Column("token", no_wrap=True, min_width=16),
        "principal",
        "status",
        Column("expires", no_wrap=True),
        "scopes",
        "created by",
    )
    for t in tokens:
        scopes = "all" if t.scopes is None else ", ".join(sorted(t.scopes))
        table.add_row(t.token_id, t.principal, t.status(now), t.expires_text, scopes, t.created_by)
    stdout.print(table, markup=False)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token id (16 hex digits).")],
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why (recorded in the ledger).")
    ] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Revoke a token (token.revoked): it stops working at once.

    Own tokens need tokens.manage.own, others' tokens.manage. Exit 2 when there is no such
    token of yours (the same answer whether it does not exist or is someone else's).
    """
    creds = Caller(as_, token, key_file, passphrase_file)
    with access_errors(), session(home, db, creds) as (ledger, state, identity):
        revoked, index = revoke_token(ledger, identity, token_id, reason=reason, state=state)
    if fmt is Format.json:
        emit_json({**revoked.to_dict(_now()), "ledger_index": index})
    else:
        stdout.print(
            f"revoked token {revoked.token_id} of {revoked.principal} (entry {index})",
            markup=False,
        )


__all__ = [
    "AsOption",
    "Caller",
    "KeyFileOption",
    "TokenOption",
    "access_errors",
    "bootstrap_admin",
    "principal_app",
    "role_app",
    "session",
    "token_app",
]
