"""Drift commands: drift check ENV [--remediate], drift watch ENV."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from immutrail.deploy.engine import RECONCILER
from immutrail.drift.check import DriftReport, drift_check, remediate

from .common import (
    DEFAULT_HOME,
    EXIT_CODES_HELP,
    DbOption,
    ExitCode,
    Format,
    FormatOption,
    HomeOption,
    emit_json,
    errors_to_exit_codes,
    fail,
    stdout,
)
from .deploy import DEFAULT_DOCKER_HOST, DockerHostOption, deploy_context

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
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Compare every instance of ENVIRONMENT with what was approved and deployed; record it.

    Exit 0 no drift (or, with --remediate, none left after the replacement), 1 drift found.
    """
    with (
        errors_to_exit_codes(),
        deploy_context(home, db, RECONCILER, docker_host, fmt is Format.json) as ctx,
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
                    stdout.print(f"replaced in {service}: {', '.join(replaced)}")
            stdout.print("after remediation:")
            _print(after)
    left = after if after is not None else report
    if left.findings:
        raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))


@drift_app.command("watch")
def watch(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    interval: Annotated[float, typer.Option("--interval", help="Seconds between checks.")] = 10.0,
    passes: Annotated[
        int | None, typer.Option("--passes", help="Stop after N checks [default: never].")
    ] = None,
    fix: Annotated[bool, typer.Option("--remediate", help="Replace drifted instances.")] = False,
    docker_host: DockerHostOption = DEFAULT_DOCKER_HOST,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Run the check every --interval seconds; each finding is recorded as it is found."""
    if interval <= 0 or (passes is not None and passes < 1):
        fail("--interval must be > 0 and --passes >= 1")
    done = 0
    with errors_to_exit_codes(), deploy_context(home, db, RECONCILER, docker_host, True) as ctx:
        try:
            while passes is None or done < passes:
                started = time.monotonic()
                report = drift_check(ctx, environment)
                if fix and report.findings:
                    remediate(ctx, report)
                if fmt is Format.json:
                    emit_json(report.to_json())
                else:
                    _print(report)
                done += 1
                if passes is None or done < passes:
                    time.sleep(max(0.0, interval - (time.monotonic() - started)))
        except KeyboardInterrupt:
            pass


def _print(report: DriftReport) -> None:
    if not report.findings:
        stdout.print(
            f"{report.environment}: no drift ({report.instances_checked} instances, "
            f"{report.files_hashed} files hashed)"
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
    stdout.print(table)
