"""`immutrail keys …`: principals' signing keys, kept encrypted here, announced in the ledger."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from immutrail.artifacts.builder import default_actor
from immutrail.keys.errors import KeyInputError
from immutrail.keys.keystore import (
    KeyInfo,
    generate_key,
    get_key,
    list_keys,
    revoke_key,
)
from immutrail.keys.passphrase import PASSPHRASE_ENV, PassphraseSource
from immutrail.ledger.home import open_ledger

from .artifacts import ActorOption
from .common import (
    DEFAULT_HOME,
    EXIT_CODES_HELP,
    DbOption,
    Format,
    FormatOption,
    HomeOption,
    emit_json,
    errors_to_exit_codes,
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


PassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        metavar="FILE",
        help=f"Read the key's passphrase from FILE (one trailing newline is dropped) "
        f"[default: ${PASSPHRASE_ENV}, else a prompt when run in a terminal].",
        show_default=False,
    ),
]


def _prompt(what: str, confirm: bool) -> bytes:
    text = typer.prompt(
        f"Passphrase for {what}", hide_input=True, confirmation_prompt=confirm, err=True
    )
    return str(text).encode("utf-8")


def passphrase_source(passphrase_file: Path | None) -> PassphraseSource:
    """File, then environment, then a prompt only when stdin is a terminal."""
    interactive = typer.get_text_stream("stdin").isatty()
    return PassphraseSource(passphrase_file, _prompt if interactive else None)


def _print_key(info: KeyInfo) -> None:
    stdout.print(f"key        {info.keyid}")
    stdout.print(f"principal  {info.principal}", markup=False)
    stdout.print(f"algorithm  {info.algorithm}")
    stdout.print(f"purpose    {info.purpose or '(none)'}", markup=False)
    stdout.print(f"created    {info.created_at} by {info.created_by} (entry {info.created_index})")
    if info.revoked:
        stdout.print(
            f"REVOKED    {info.revoked_at} (entry {info.revoked_index}): {info.revoked_reason}",
            markup=False,
        )
    stdout.print(f"private    {info.local_path or 'not here'}", markup=False)


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
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Make a key for a principal, encrypt it at rest, and announce it in the ledger (key.created).

    The private key is written to $IMMUTRAIL_HOME/keys/PRINCIPAL/KEYID.key (mode 0600), encrypted
    with the passphrase unless --no-passphrase. Exit 2: a bad principal or purpose, no passphrase.
    """
    with errors_to_exit_codes():
        if no_passphrase and passphrase_file is not None:
            raise KeyInputError("give either --no-passphrase or --passphrase-file, not both")
        secret = (
            None
            if no_passphrase
            else passphrase_source(passphrase_file).get(f"the new key of {principal}", confirm=True)
        )
        with open_ledger(home, db) as ledger:
            made = generate_key(
                home,
                ledger,
                principal,
                actor=actor or default_actor(),
                algorithm=algorithm.value,
                purpose=purpose,
                passphrase=secret,
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
    stdout.print(f"generated {made.info.algorithm} key {made.info.keyid}")
    stdout.print(f"  principal {made.info.principal}", markup=False)
    stdout.print(f"  file      {made.path} ({state})", markup=False)
    stdout.print(f"  ledger    entry {made.ledger_index} (key.created)")


@app.command("list")
def list_(
    principal: Annotated[
        str | None, typer.Option("--principal", help="Only this principal's keys.")
    ] = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Every key the ledger announced: principal, algorithm, purpose, revoked, private key here."""
    with errors_to_exit_codes(), open_ledger(home, db) as ledger:
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
    stdout.print(table)


@app.command()
def export(
    keyid: Annotated[str, typer.Argument(help="The key id (or its first 8+ hex digits).")],
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Print a key's public half: PEM (text), or what the ledger says about it (json)."""
    with errors_to_exit_codes(), open_ledger(home, db) as ledger:
        info = get_key(home, ledger, keyid)
    if fmt is Format.json:
        emit_json(info.to_dict())
    else:
        typer.echo(info.public_key_pem, nl=False)


@app.command()
def revoke(
    keyid: Annotated[str, typer.Argument(help="The key id (or its first 8+ hex digits).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the ledger).")],
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Revoke a key (key.revoked): nothing it signed counts any more, before or after.

    Exit 2: an unknown key, or one already revoked (nothing is recorded).
    """
    with errors_to_exit_codes(), open_ledger(home, db) as ledger:
        info, index = revoke_key(home, ledger, keyid, reason=reason, actor=actor or default_actor())
    if fmt is Format.json:
        emit_json({**info.to_dict(), "ledger_index": index})
    else:
        stdout.print(f"revoked key {info.keyid} of {info.principal}", markup=False)
        stdout.print(f"  ledger    entry {index} (key.revoked)")
        _print_key(info)
