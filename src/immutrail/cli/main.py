"""The `immutrail` command: a thin layer over the library; one module per command group."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from immutrail import __version__
from immutrail.access.manage import NewPrincipal
from immutrail.ledger.errors import LedgerInputError
from immutrail.ledger.home import CONFIG_FILE, init_ledger

from . import access as access_cli
from . import artifacts as artifacts_cli
from . import audit as audit_cli
from . import check as check_cli
from . import demo as demo_cli
from . import deploy as deploy_cli
from . import drift as drift_cli
from . import endpoint as endpoint_cli
from . import gate as gate_cli
from . import keys as keys_cli
from . import ledger as ledger_cli
from . import scan as scan_cli
from . import serve as serve_cli
from . import signing as signing_cli
from .common import (
    DEFAULT_HOME,
    EXIT_CODES_HELP,
    DbOption,
    ExitCode,
    Format,
    FormatOption,
    HomeOption,
    PassphraseFileOption,
    emit_json,
    errors_to_exit_codes,
    print_error,
    stdout,
)

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help=f"immutrail: the verifiable audit trail for immutable infrastructure. {EXIT_CODES_HELP}",
)
app.add_typer(ledger_cli.app, name="ledger")
app.add_typer(artifacts_cli.app, name="artifact")
app.command("build")(artifacts_cli.build)
app.command("rebuild-verify")(artifacts_cli.rebuild_verify)
app.command("demo")(demo_cli.demo)
app.add_typer(scan_cli.vulndb_app, name="vulndb")
app.command("scan")(scan_cli.scan)
app.add_typer(keys_cli.app, name="keys")
app.command("sign")(signing_cli.sign)
app.command("verify")(signing_cli.verify)
app.command("approve")(signing_cli.approve)
app.command("check")(check_cli.check)
app.command("test")(gate_cli.test)
app.command("promote")(gate_cli.promote)
app.add_typer(gate_cli.policy_app, name="policy")
app.add_typer(gate_cli.exception_app, name="exception")
app.add_typer(deploy_cli.env_app, name="env")
app.command("deploy")(deploy_cli.deploy)
app.command("rollback")(deploy_cli.rollback_command)
app.command("status")(deploy_cli.status_command)
app.command("reconcile")(deploy_cli.reconcile_command)
app.command("chaos")(deploy_cli.chaos_command)
app.add_typer(endpoint_cli.endpoint_app, name="endpoint")
app.add_typer(drift_cli.drift_app, name="drift")
app.add_typer(audit_cli.audit_app, name="audit")
app.add_typer(access_cli.principal_app, name="principal")
app.add_typer(access_cli.role_app, name="role")
app.add_typer(access_cli.token_app, name="token")
app.command("serve")(serve_cli.serve)


def _version(value: bool) -> None:
    if value:
        stdout.print(f"immutrail {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=os.environ.get("IMMUTRAIL_LOG_LEVEL", "WARNING").upper(),
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def init(
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
    origin: Annotated[
        str | None,
        typer.Option(
            help="The ledger's name in its checkpoints, a schema-less URL "
            "[default: immutrail.local/<random>]."
        ),
    ] = None,
    admin: Annotated[
        str | None,
        typer.Option(
            "--admin",
            metavar="NAME",
            help="Set up access control at once: NAME becomes the first admin, with a new key "
            "(the bootstrap; see docs/access.md). Without it the ledger starts in setup mode.",
        ),
    ] = None,
    email: Annotated[str | None, typer.Option("--email", help="The admin's e-mail.")] = None,
    no_passphrase: Annotated[
        bool, typer.Option("--no-passphrase", help="Keep the admin's key unencrypted.")
    ] = False,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Create the home folder, the ledger's signing key and the database schema (idempotent);
    with --admin NAME, also the first admin and its key, so access control is on from the start.

    Exit 2: bad input (a bad name, --email or --no-passphrase without --admin, no passphrase,
    another admin set up access already); 3: the database cannot be reached.
    """
    with errors_to_exit_codes():
        if admin is None and (email is not None or no_passphrase or passphrase_file is not None):
            raise LedgerInputError("--email, --no-passphrase and --passphrase-file go with --admin")
        secret = None
        if admin is not None:  # checked before the home is created, so a typo creates nothing
            NewPrincipal.check(admin, "person", None, email)
            if no_passphrase and passphrase_file is not None:
                raise LedgerInputError("give either --no-passphrase or --passphrase-file, not both")
            if not no_passphrase and not (home / CONFIG_FILE).exists():
                # A new home: no passphrase must not leave it behind, initialized in setup mode.
                secret = access_cli.new_key_passphrase(admin, passphrase_file)
        ledger, created = init_ledger(home, db, origin)
        with ledger:
            access = (
                None
                if admin is None
                else access_cli.bootstrap_admin(
                    home,
                    ledger,
                    admin,
                    email=email,
                    no_passphrase=no_passphrase,
                    passphrase_file=passphrase_file,
                    secret=secret,
                )
            )
        if fmt is Format.json:
            emit_json(
                {
                    "home": str(home),
                    "db": ledger.store.url,
                    "origin": ledger.origin,
                    "vkey": ledger.vkey,
                    "created": created,
                    "admin": access,
                }
            )
        else:
            verb = "created" if created else "already initialized"
            stdout.print(
                f"{verb}: ledger {ledger.origin}\n  home  {Path(home).absolute()}\n"
                f"  db    {ledger.store.url}\n  vkey  {ledger.vkey}"
            )
            if access is not None:
                key = access.get("key")
                stdout.print(
                    f"  admin {access['name']}"
                    + (f" (key {key['keyid'][:16]}…, {key['path']})" if key else " (existing)"),
                    markup=False,
                )


def main() -> None:
    """Run the command; turn what no command anticipated into exit code 3 or 4, never 1."""
    try:
        app()
    except OSError as exc:  # disk full, permissions, a vanished file: the machine, not the input
        print_error(str(exc))
        sys.exit(int(ExitCode.OPERATIONAL))
    except Exception:  # a bug: the traceback is what a report needs
        sys.stderr.write(traceback.format_exc())
        print_error("internal error, a bug in immutrail: please report it")
        sys.exit(int(ExitCode.INTERNAL))


if __name__ == "__main__":
    main()
