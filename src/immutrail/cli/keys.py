"""`immutrail keys …`: principals' signing keys, kept encrypted here, announced in the ledger."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from immutrail.access.actor import authorize_key_change
from immutrail.access.authenticate import Identity
from immutrail.access.errors import AccessInputError
from immutrail.access.model import Action
from immutrail.keys.errors import KeyInputError, KeysError
from immutrail.keys.keystore import (
    KeyInfo,
    generate_key,
    get_key,
    list_keys,
    revoke_key,
)
from immutrail.ledger.ledger import Ledger

from .common import (
    DEFAULT_HOME,
    EXIT_CODES_HELP,
    ActorOption,
    AsOption,
    Caller,
    DbOption,
    Format,
    FormatOption,
    HomeOption,
    KeyFileOption,
    PassphraseFileOption,
    TokenOption,
    authorized,
    emit_json,
    errors_to_exit_codes,
    passphrase_source,
    stdout,
)

app = typer.Typer(
    no_args_is_help=True,
    help="Principals' signing keys (Ed25519, ECDSA P-256): generated here, encrypted at rest, "
    f"announced and revoked in the ledger. {EXIT_CODES_HELP}",
)


class Algorithm(StrEnum):
    ed25519 = "ed25519"
    ecdsa_p256 = "ecdsa-p256"


def _print_key(info: KeyInfo) -> None:
    stdout.print(f"key        {info.keyid}", markup=False)
    stdout.print(f"principal  {info.principal}", markup=False)
    stdout.print(f"algorithm  {info.algorithm}", markup=False)
    stdout.print(f"purpose    {info.purpose or '(none)'}", markup=False)
    stdout.print(
        f"created    {info.created_at} by {info.created_by} (entry {info.created_index})",
        markup=False,
    )
    if info.revoked:
        stdout.print(
            f"REVOKED    {info.revoked_at} (entry {info.revoked_index}): {info.revoked_reason}",
            markup=False,
        )
    stdout.print(f"private    {info.local_path or 'not here'}", markup=False)


def _may_revoke(home: Path, ledger: Ledger, identity: Identity, keyid: str) -> None:
    """keys.manage for any key; else keys.manage.own (checked before the key is looked up), and
    the same answer for another's key as for one that does not exist."""
    if identity.can(Action.KEYS_MANAGE):
        return
    authorize_key_change(identity, identity.principal, creating=False)
    try:
        owner = get_key(home, ledger, keyid).principal
    except KeysError:
        owner = None
    if owner != identity.principal:
        raise AccessInputError(f"you have no key {keyid}")


@app.command()
def generate(
    principal: Annotated[
        str,
        typer.Option(
            "--principal",
            help="Whose key: 1-128 of a-z 0-9 . _ @ : - (first a letter or digit), e.g. alice.",
        ),
    ],
    algorithm: Annotated[
        Algorithm, typer.Option("--algorithm", help="The key type.")
    ] = Algorithm.ed25519,
    purpose: Annotated[
        str,
        typer.Option("--purpose", help="What the key is for: signing, approval, … (recorded)."),
    ] = "signing",
    no_passphrase: Annotated[
        bool,
        typer.Option(
            "--no-passphrase", help="Store the private key unencrypted (only when asked)."
        ),
    ] = False,
    passphrase_file: PassphraseFileOption = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Make a key for a principal, encrypt it at rest, and announce it in the ledger (key.created).

    The private key is written to $IMMUTRAIL_HOME/keys/PRINCIPAL/KEYID.key (mode 0600), encrypted
    with the passphrase unless --no-passphrase (--passphrase-file is the NEW key's; the caller's
    own key is unlocked with $IMMUTRAIL_KEY_PASSPHRASE or a prompt). Once access control is set
    up: another principal's key needs keys.manage (admin); one's own keys.manage.own and
    authenticating with a key (a token cannot mint a key). Exit 1 not authenticated or not
    allowed; 2 a bad principal or purpose, no passphrase (nothing written).
    """
    caller = Caller(as_, token, key_file, None, actor)
    with errors_to_exit_codes():
        if no_passphrase and passphrase_file is not None:
            raise KeyInputError("give either --no-passphrase or --passphrase-file, not both")
        with authorized(home, db, None, caller=caller) as (ledger, who):
            if who.identity is not None:
                authorize_key_change(who.identity, principal, creating=True)
            secret = (
                None
                if no_passphrase
                else passphrase_source(passphrase_file).get(
                    f"the new key of {principal}", confirm=True
                )
            )
            made = generate_key(
                home,
                ledger,
                principal,
                actor=who.name,
                algorithm=algorithm.value,
                purpose=purpose,
                passphrase=secret,
                auth=None if who.identity is None else who.identity.auth_payload(),
            )
    if fmt is Format.json:
        emit_json(
            {
                **made.info.to_dict(),
                "path": str(made.path),
                "encrypted": made.encrypted,
                "ledger_index": made.ledger_index,
            }
        )
        return
    state = "encrypted" if made.encrypted else "NOT encrypted"
    stdout.print(f"generated {made.info.algorithm} key {made.info.keyid}", markup=False)
    stdout.print(f"  principal {made.info.principal}", markup=False)
    stdout.print(f"  file      {made.path} ({state})", markup=False)
    stdout.print(f"  ledger    entry {made.ledger_index} (key.created)", markup=False)


@app.command("list")
def list_(
    principal: Annotated[
        str | None, typer.Option("--principal", help="Only this principal's keys.")
    ] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Every key the ledger announced: principal, algorithm, purpose, revoked, private key here.

    Needs ledger.read once access control is set up (exit 1 if not)."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _),
    ):
        keys = [k for k in list_keys(home, ledger) if principal in (None, k.principal)]
    if fmt is Format.json:
        emit_json({"keys": [k.to_dict() for k in keys]})
        return
    table = Table("key", "principal", "algorithm", "purpose", "created", "revoked", "here")
    for key in keys:
        table.add_row(
            key.keyid[:16],
            key.principal,
            key.algorithm,
            key.purpose,
            f"{key.created_at} (#{key.created_index})",
            f"{key.revoked_at} (#{key.revoked_index})" if key.revoked else "",
            "yes" if key.local_path else "no",
        )
    stdout.print(table, markup=False)


@app.command()
def export(
    keyid: Annotated[str, typer.Argument(help="The key id (or its first 8+ hex digits).")],
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Print a key's public half: PEM (text), or what the ledger says about it (json).

    Needs ledger.read once access control is set up (exit 1 if not); exit 2 unknown key."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _),
    ):
        info = get_key(home, ledger, keyid)
    if fmt is Format.json:
        emit_json(info.to_dict())
    else:
        typer.echo(info.public_key_pem, nl=False)


@app.command()
def revoke(
    keyid: Annotated[str, typer.Argument(help="The key id (or its first 8+ hex digits).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger).")],
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Revoke a key (key.revoked): nothing it signed counts any more, before or after.

    Once access control is set up: keys.manage (admin), or keys.manage.own for one's own key.
    Exit 1 not authenticated or not allowed; 2 an unknown key, or one already revoked (nothing
    is recorded); someone without keys.manage gets the same answer for another's key as for
    one that does not exist.
    """
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with errors_to_exit_codes(), authorized(home, db, None, caller=caller) as (ledger, who):
        if who.identity is not None:
            _may_revoke(home, ledger, who.identity, keyid)
        info, index = revoke_key(home, ledger, keyid, reason=reason, actor=who.name)
    if fmt is Format.json:
        emit_json({**info.to_dict(), "ledger_index": index})
    else:
        stdout.print(f"revoked key {info.keyid} of {info.principal}", markup=False)
        stdout.print(f"  ledger    entry {index} (key.revoked)", markup=False)
        _print_key(info)
