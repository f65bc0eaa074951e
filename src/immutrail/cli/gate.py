"""The release gate's commands: test, promote, policy, exception."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from immutrail.access.actor import Actor
from immutrail.access.model import Action
from immutrail.artifacts.statements import ledger_keys
from immutrail.artifacts.store import Store
from immutrail.keys.keystore import SigningKey
from immutrail.ledger.event import parse_time
from immutrail.ledger.ledger import Ledger
from immutrail.policy.desired import desired_services, desired_state
from immutrail.policy.errors import PolicyInputError
from immutrail.policy.exceptions import active_exceptions, grant_exception
from immutrail.policy.imagetest import MAX_TIMEOUT_S, check_test_request, run_image_test
from immutrail.policy.promote import decide
from immutrail.policy.promote import promote as promote_image
from immutrail.policy.registry import active_policy, set_policy

from .common import (
    DEFAULT_HOME,
    EXIT_CODES_HELP,
    ActorOption,
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
    authorized,
    emit_json,
    errors_to_exit_codes,
    fail,
    stdout,
)
from .signing import KeyOption, PrincipalOption, signer_of

policy_app = typer.Typer(
    no_args_is_help=True, help=f"Promotion policies per environment. {EXIT_CODES_HELP}"
)
exception_app = typer.Typer(
    no_args_is_help=True,
    help=f"Recorded, expiring vulnerability exceptions. {EXIT_CODES_HELP}",
)


def _actor_key(
    home: Path, ledger: Ledger, who: Actor, caller: Caller, key: str | None, principal: str | None
) -> SigningKey:
    """The caller's own key once access control is set up; in setup mode the key named by
    --key/--principal/--key-file, else the --as/--actor's only key here.

    The key's principal is then the actor, so that IMMUTRAIL_ACTOR cannot make a signature
    speak for someone else.
    """
    return signer_of(home, ledger, who, caller, key, principal, caller.principal or caller.actor)


def _now() -> datetime:
    return datetime.now(UTC)


def test(
    digest: Annotated[str, typer.Argument(help="Image digest or tag.")],
    command: Annotated[list[str], typer.Argument(help="The test command, after --.")],
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Test name, at most 200 printable characters [default: the command's file name].",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            help=f"Seconds before it is killed (more than 0, at most {MAX_TIMEOUT_S:g}).",
        ),
    ] = 600,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Run COMMAND against an unpacked, read-only instance of the image; attest the result.

    The command runs with the instance root as working directory and IMMUTRAIL_ROOTFS,
    IMMUTRAIL_IMAGE and the image's Env set. Needs image.test once access control is set up.
    Output past 16 MiB is read and dropped (the result says it was truncated).
    Exit 0 when it passed, 1 when it failed (or the caller is not authenticated or allowed),
    2 bad input (an empty command, a bad --name or --timeout: nothing run or recorded).
    """
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with errors_to_exit_codes():
        check_test_request(command, name, timeout)  # before the ledger is even opened
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.IMAGE_TEST, caller=caller) as (ledger, who),
    ):
        run = run_image_test(
            Store.for_home(home),
            ledger,
            home,
            who.name,
            digest,
            command,
            name=name,
            timeout_s=timeout,
        )
    if fmt is Format.json:
        emit_json(
            {
                "name": run.name,
                "passed": run.passed,
                "exit_code": run.exit_code,
                "duration_s": run.duration_s,
                "output": {"digest": run.output_digest, "truncated": run.output_truncated},
                "attestation": run.attestation,
                "ledger_index": run.ledger_index,
            }
        )
    else:
        verdict = "[green]PASSED[/]" if run.passed else "[red]FAILED[/]"
        stdout.print(
            f"{verdict} {escape(run.name)}: exit {run.exit_code} in {run.duration_s:.2f} s\n"
            f"  output       {run.output_digest}\n  attestation  {run.attestation}\n"
            f"  ledger index {run.ledger_index}",
            markup=True,
        )
    if not run.passed:
        raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))


def promote(
    digest: Annotated[str, typer.Argument(help="Image digest or tag.")],
    to: Annotated[str, typer.Option("--to", help="The environment, e.g. prod.")],
    service: Annotated[
        str | None,
        typer.Option(
            "--service", help="The service it is for [default: the name in the image's tag]."
        ),
    ] = None,
    override: Annotated[
        bool,
        typer.Option("--override", help="Break glass: promote despite a refusal (needs --reason)."),
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why the gate is overridden (recorded).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Evaluate and print; record nothing.")
    ] = False,
    key: KeyOption = None,
    principal: PrincipalOption = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Evaluate ENV's policy over the image's evidence; record the decision with every reason.

    Needs promote in ENV once access control is set up (--override: promote.override; the
    break-glass decision is signed with the caller's key). Exit 0 promoted (the environment's
    desired state now names DIGEST), 1 refused (nothing changed; the reasons are printed and
    recorded) or not authenticated or not allowed (nothing recorded), 2 bad input.
    """
    if override and not reason:
        fail("--override needs --reason: a break-glass promotion must say why")
    if reason and not override:
        fail("--reason is only used with --override")
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    needed = Action.PROMOTE_OVERRIDE if override else Action.PROMOTE
    with (
        errors_to_exit_codes(),
        authorized(home, db, needed, to, caller=caller) as (ledger, acting_as),
    ):
        store = Store.for_home(home)
        named = any(v is not None for v in (key, principal, key_file))
        # A key-authenticated caller signs its decision, as it signs its other events.
        signs = override or named or acting_as.signing_key is not None
        signing = _actor_key(home, ledger, acting_as, caller, key, principal) if signs else None
        who = signing.principal if signing else acting_as.name
        if dry_run:
            policy, evidence, checks = decide(store, ledger, home, digest, to, _now())
            allowed = all(c.passed for c in checks)
            result: dict[str, Any] = {
                "digest": evidence.digest,
                "environment": to,
                "allowed": allowed,
                "dry_run": True,
                "policy": {"digest": policy.digest, "source": policy.source},
                "checks": [c.to_json() for c in checks],
            }
            _print_decision(result, fmt)
            if not allowed:
                raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))
            return
        decision = promote_image(
            store,
            ledger,
            home,
            who,
            digest,
            to,
            _now(),
            override_reason=reason if override else None,
            key=signing.private if signing else None,
            service=service,
        )
    _print_decision(decision.to_json(), fmt)
    if not decision.allowed:
        raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))


def _print_decision(result: dict[str, Any], fmt: Format) -> None:
    if fmt is Format.json:
        emit_json(result)
        return
    table = Table(show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("rule")
    table.add_column("why")
    for check in result["checks"]:
        table.add_row(  # rule names and messages quote policy files and user input
            "[green]✓[/]" if check["passed"] else "[red]✗[/]",
            escape(check["rule"]),
            escape(check["message"]),
        )
    stdout.print(table)
    env = escape(result["environment"] + (f"/{result['service']}" if result.get("service") else ""))
    if result.get("dry_run"):
        verdict = "would be promoted" if result["allowed"] else "would be refused"
        stdout.print(f"{result['digest']} {verdict} to {env} (dry run, nothing recorded)")
    elif result.get("override"):
        stdout.print(
            f"[bold yellow]BREAK-GLASS[/]: {result['digest']} promoted to {env} despite the "
            f"failed checks; recorded at ledger index {result['ledger_index']}",
            markup=True,
        )
    elif result["allowed"]:
        stdout.print(
            f"[green]promoted[/] {result['digest']} to {env} "
            f"(ledger index {result['ledger_index']})",
            markup=True,
        )
    else:
        stdout.print(
            f"[red]refused[/]: {result['digest']} is not promoted to {env}; decision recorded "
            f"at ledger index {result['ledger_index']}",
            markup=True,
        )


@policy_app.command("set")
def policy_set(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    file: Annotated[Path, typer.Argument(help="The policy: a .yaml file or a .rego module.")],
    key: KeyOption = None,
    principal: PrincipalOption = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Make FILE the policy of ENVIRONMENT: validated, kept by digest, recorded and signed.

    Needs policy.set in ENVIRONMENT once access control is set up, signed with the caller's
    key (a token cannot sign). Exit 1 not authenticated or not allowed; 2 bad policy or key.
    """
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.POLICY_SET, environment, caller=caller) as (ledger, who),
    ):
        signing = _actor_key(home, ledger, who, caller, key, principal)
        active = set_policy(
            home,
            ledger,
            ledger_keys(ledger),
            signing.private,
            signing.principal,
            environment,
            file,
        )
    if fmt is Format.json:
        emit_json(
            {
                "environment": environment,
                "digest": active.digest,
                "format": active.format,
                "ledger_index": active.ledger_index,
            }
        )
    else:
        stdout.print(
            f"policy of {environment} is now {file} ({active.format}, {active.digest}); "
            f"ledger index {active.ledger_index}",
            markup=False,
        )


@policy_app.command("show")
def policy_show(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """The policy that governs ENVIRONMENT and its desired state (needs ledger.read)."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _),
    ):
        active = active_policy(home, ledger, ledger_keys(ledger), environment)
        store = Store.for_home(home, create=True)
        desired = [
            state
            for name in desired_services(ledger, environment)
            if (state := desired_state(home, ledger, store, environment, name)) is not None
        ]
    body: dict[str, Any] = {
        "environment": environment,
        "digest": active.digest,
        "format": active.format,
        "source": active.source,
        "ledger_index": active.ledger_index,
        "policy": active.policy.to_json() if active.policy is not None else None,
        "rego": active.rego,
        "services": {state.service: state.to_json() for state in desired},
    }
    if fmt is Format.json:
        emit_json(body)
        return
    # plain text: policy sources, Rego (`deny[msg]`) and names are not rich markup
    stdout.print(
        f"policy of {environment}: {active.source} ({active.format}, {active.digest})",
        markup=False,
    )
    if active.policy is not None:
        import yaml

        stdout.print(
            yaml.safe_dump(active.policy.to_json(), sort_keys=False).rstrip(), markup=False
        )
    else:
        stdout.print(active.rego or "", markup=False)
    if not desired:
        stdout.print(f"desired state: nothing promoted to {environment} yet", markup=False)
    for state in desired:
        stdout.print(
            f"desired state of {state.service}: {state.digest} ({state.image or 'untagged'}), "
            f"promoted by {state.promoted_by} at {state.promoted_at}, "
            f"ledger index {state.ledger_index}"
            + (" [BREAK-GLASS]" if state.override else "")
            + (f", rolled back by {state.rolled_back_by}" if state.rolled_back_by else ""),
            markup=False,
        )


@exception_app.command("grant")
def exception_grant(
    vulnerability: Annotated[str, typer.Argument(help="Vulnerability id or alias, e.g. CVE-…")],
    env: Annotated[str, typer.Option("--env", help="The environment it applies to.")],
    expires: Annotated[str, typer.Option("--expires", help="RFC 3339 time it ends.")],
    reason: Annotated[str, typer.Option("--reason", help="Why the risk is accepted.")],
    digest: Annotated[
        str | None, typer.Option("--digest", help="Only for this image [default: any].")
    ] = None,
    key: KeyOption = None,
    principal: PrincipalOption = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Accept one vulnerability in one environment until EXPIRES; signed and recorded.

    Needs exception.grant in ENV once access control is set up, signed with the caller's key.
    Exit 1 not authenticated or not allowed; 2 bad input (nothing recorded).
    """
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with errors_to_exit_codes():
        try:
            until = parse_time(expires, field="--expires")
        except ValueError as exc:
            raise PolicyInputError(str(exc)) from exc
        with authorized(home, db, Action.EXCEPTION_GRANT, env, caller=caller) as (ledger, who):
            signing = _actor_key(home, ledger, who, caller, key, principal)
            index = grant_exception(
                ledger,
                ledger_keys(ledger),
                signing.private,
                signing.principal,
                vulnerability,
                env,
                until,
                reason,
                _now(),
                digest,
            )
    if fmt is Format.json:
        emit_json({"vulnerability": vulnerability, "environment": env, "ledger_index": index})
    else:
        stdout.print(
            f"exception for {vulnerability} in {env} until {expires}: ledger index {index}",
            markup=False,
        )


@exception_app.command("list")
def exception_list(
    env: Annotated[str, typer.Option("--env", help="The environment.")],
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """The exceptions in force for ENV now (unexpired, signed by an unrevoked key); needs
    ledger.read."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _),
    ):
        found = active_exceptions(ledger, ledger_keys(ledger), env, _now())
    if fmt is Format.json:
        emit_json({"environment": env, "exceptions": [e.to_json() for e in found]})
        return
    table = Table("vulnerability", "digest", "expires", "granted by", "reason", "index")
    for e in found:
        row = e.to_json()
        table.add_row(  # every cell is user text: escaped, not parsed as markup
            *(
                escape(cell)
                for cell in (
                    e.vulnerability,
                    e.digest or "any",
                    str(row["expires"]),
                    e.granted_by,
                    e.reason,
                    str(e.ledger_index),
                )
            )
        )
    stdout.print(table)
