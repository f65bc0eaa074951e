"""Drift commands: drift check ENV [--remediate], drift watch ENV, drift rules set|show|clear."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from immutrail.access.model import Action
from immutrail.deploy.engine import RECONCILER
from immutrail.drift.check import DriftReport, drift_check, remediate
from immutrail.drift.rules import (
    MAX_RULES_BYTES,
    RulesError,
    check_environment,
    clear_rules,
    current_rules,
    parse_rules,
    set_rules,
)
from immutrail.drift.watch import DriftWatch
from immutrail.files import read_capped

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
from .deploy import DEFAULT_DOCKER_HOST, DockerHostOption, deploy_context
from .numbers import MAX_DURATION_S, MAX_INTERVAL_S, seconds, seconds_help

drift_app = typer.Typer(
    no_args_is_help=True,
    help=f"Is what runs exactly what was approved? {EXIT_CODES_HELP}",
)


@drift_app.command("check")
def check(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    fix: Annotated[
        bool,
        typer.Option(
            "--remediate",
            help="Keep each drifted instance's evidence, replace it (new first), check again.",
        ),
    ] = False,
    full: Annotated[
        bool, typer.Option("--full", help="Hash every file (no shortcut from the last check).")
    ] = False,
    docker_host: DockerHostOption = DEFAULT_DOCKER_HOST,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Compare every instance of ENVIRONMENT with what was approved and deployed; record it.

    Exit 0 no drift (or, with --remediate, none left after the replacement), 1 drift found.
    """
    with errors_to_exit_codes():
        check_environment(environment)
    with (
        errors_to_exit_codes(),
        deploy_context(
            home,
            db,
            RECONCILER,
            docker_host,
            fmt is Format.json,
            caller=Caller(as_, token, key_file, passphrase_file),
            action=Action.DRIFT_REMEDIATE if fix else Action.DRIFT_CHECK,
            environment=environment,
        ) as ctx,
    ):
        report = drift_check(ctx, environment, full=full)
        after = None
        if fix and report.findings:
            remediate(ctx, report)
            after = drift_check(ctx, environment)
    if fmt is Format.json:
        body = report.to_json()
        if after is not None:
            body["after_remediation"] = after.to_json()
        emit_json(body)
    else:
        _print(report)
        if after is not None:
            for service, replaced in report.remediated.items():
                if replaced:
                    stdout.print(f"replaced in {service}: {', '.join(replaced)}", markup=False)
            stdout.print("after remediation:", markup=False)
            _print(after)
    left = after if after is not None else report
    if left.findings:
        raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))


@drift_app.command("watch")
def watch(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            help=f"Seconds between full checks ({seconds_help(MAX_INTERVAL_S)}).",
            callback=seconds(MAX_INTERVAL_S),
        ),
    ] = 10.0,
    passes: Annotated[
        int | None, typer.Option("--passes", help="Stop after N full checks [default: never].")
    ] = None,
    duration: Annotated[
        float | None,
        typer.Option(
            "--duration",
            help=f"Stop after this many seconds ({seconds_help(MAX_DURATION_S)}) [default: never].",
            callback=seconds(MAX_DURATION_S),
        ),
    ] = None,
    process_interval: Annotated[
        float,
        typer.Option(
            "--process-interval",
            help="Seconds between scans of local instances' processes "
            f"({seconds_help(MAX_INTERVAL_S)}).",
            callback=seconds(MAX_INTERVAL_S),
        ),
    ] = 0.5,
    fix: Annotated[bool, typer.Option("--remediate", help="Replace drifted instances.")] = False,
    docker_host: DockerHostOption = DEFAULT_DOCKER_HOST,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Check continuously: a full check every --interval seconds, exec sessions from the Docker
    engine's event stream and local processes as they appear; each finding is recorded at once.

    Prints one report per check or signal (a JSON line each with --format json). Stops after
    --passes or --duration, or on Ctrl-C. Exit 0 when stopped, 2/3 as everywhere.
    """
    with errors_to_exit_codes():
        check_environment(environment)
    if passes is not None and passes < 1:
        fail("--passes must be >= 1")

    def emit(report: DriftReport) -> None:
        if fmt is Format.json:
            emit_json(report.to_json())
            sys.stdout.flush()  # a reader follows the stream line by line
        else:
            _print(report)

    with (
        errors_to_exit_codes(),
        deploy_context(
            home,
            db,
            RECONCILER,
            docker_host,
            True,
            caller=Caller(as_, token, key_file, passphrase_file),
            action=Action.DRIFT_REMEDIATE if fix else Action.DRIFT_CHECK,
            environment=environment,
        ) as ctx,
    ):
        watcher = DriftWatch(
            ctx,
            environment,
            interval=interval,
            remediate=fix,
            process_interval=process_interval,
            emit=emit,
        )
        with contextlib.suppress(KeyboardInterrupt):
            watcher.run(passes=passes, duration=duration)


# --- rules -------------------------------------------------------------------------------------

rules_app = typer.Typer(
    no_args_is_help=True,
    help=f"Runtime rules (Rego) evaluated on every drift check. {EXIT_CODES_HELP}",
)
drift_app.add_typer(rules_app, name="rules")


@rules_app.command("set")
def rules_set(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    file: Annotated[Path, typer.Argument(help="The rule file: Rego, package immutrail.drift.")],
    actor: ActorOption = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Check FILE and make it ENVIRONMENT's runtime rules (a drift.rules.changed event).

    Exit 0 recorded; 2 the file is unreadable or its rules are invalid (nothing recorded).
    """
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.POLICY_SET, environment, caller=caller) as (ledger, who),
    ):
        try:
            data = read_capped(file, MAX_RULES_BYTES)
        except OSError as exc:
            raise RulesError(str(file), f"cannot read it: {exc.strerror or exc}") from exc
        check_environment(environment)
        made = set_rules(ledger, who.name, environment, parse_rules(data, file.name))
    if fmt is Format.json:
        emit_json({"environment": environment, "rules": made.to_json(source=False)})
    else:
        stdout.print(
            f"{environment}: drift rules {made.name} ({made.digest}) set at ledger index "
            f"{made.ledger_index}",
            markup=False,
        )


@rules_app.command("clear")
def rules_clear(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    actor: ActorOption = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Remove ENVIRONMENT's runtime rules (recorded as drift.rules.changed with no rules)."""
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.POLICY_SET, environment, caller=caller) as (ledger, who),
    ):
        index = clear_rules(ledger, who.name, environment)
    if fmt is Format.json:
        emit_json({"environment": environment, "rules": None, "ledger_index": index})
    else:
        stdout.print(
            f"{environment}: no drift rules from now on (ledger index {index})", markup=False
        )


@rules_app.command("show")
def rules_show(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Print ENVIRONMENT's runtime rules as recorded (name, digest, who, when, the text)."""
    with errors_to_exit_codes():
        check_environment(environment)
        caller = Caller(as_, token, key_file, passphrase_file)
        with authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _):
            rules = current_rules(ledger, environment)
    if fmt is Format.json:
        emit_json({"environment": environment, "rules": rules.to_json() if rules else None})
    elif rules is None:
        stdout.print(f"{environment}: no drift rules", markup=False)
    else:
        stdout.print(
            f"{environment}: {rules.name} ({rules.digest}), set by {rules.set_by} at "
            f"{rules.set_at} (ledger index {rules.ledger_index})",
            markup=False,
        )
        stdout.print(rules.source, markup=False)


def _print(report: DriftReport) -> None:
    if not report.findings:
        stdout.print(
            f"{report.environment}: no drift ({report.instances_checked} instances, "
            f"{report.files_hashed} files hashed)",
            markup=False,
        )
        return
    table = Table("severity", "kind", "service", "instance", "what", "control")
    for finding in report.findings:
        table.add_row(
            finding.severity,
            finding.kind,
            finding.service,
            finding.instance or "-",
            finding.message,
            finding.control,
        )
    stdout.print(table, markup=False)
