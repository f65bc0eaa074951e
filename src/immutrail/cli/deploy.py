"""Deployment commands: env declare|show, deploy, rollback, status, reconcile, chaos."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from immutrail import names
from immutrail.access.model import Action
from immutrail.artifacts.store import Store
from immutrail.deploy.declaration import declare, declared, parse_declaration
from immutrail.deploy.docker_driver import DockerRuntime
from immutrail.deploy.engine import RECONCILER, Context, Outcome, converge, rollback
from immutrail.deploy.errors import DeployInputError
from immutrail.deploy.local import LocalRuntime
from immutrail.deploy.reconcile import Pass, chaos, reconcile, status, watch
from immutrail.deploy.runtime import Runtime
from immutrail.ledger.home import open_ledger
from immutrail.ledger.ledger import Ledger
from immutrail.policy.desired import desired_state

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
    acting,
    authorized,
    emit_json,
    errors_to_exit_codes,
    fail,
    stderr,
    stdout,
)
from .numbers import MAX_INTERVAL_S, seconds, seconds_help

env_app = typer.Typer(
    no_args_is_help=True, help=f"Environments and their declared services. {EXIT_CODES_HELP}"
)

DockerHostOption = Annotated[
    str,
    typer.Option(
        "--docker-host",
        envvar=["IMMUTRAIL_DOCKER_HOST", "DOCKER_HOST"],
        help="The Docker engine for services declared on the docker runtime.",
    ),
]
DEFAULT_DOCKER_HOST = "unix:///run/docker.sock"
ServiceOption = Annotated[str | None, typer.Option("--service", help="Only this service.")]


def _check_environment(environment: str) -> None:
    """Refuse what is not an environment name before anything is opened, with the rule and
    message of `env declare` (deploy.declaration.check_names): names become folder and file
    names, so '../../etc' must never get that far."""
    with errors_to_exit_codes():
        names.check_environment(environment, DeployInputError)


@contextlib.contextmanager
def deploy_context(
    home: Path,
    db: str | None,
    actor: str | None,
    docker_host: str,
    quiet: bool,
    *,
    caller: Caller | None = None,
    action: Action | None = None,
    environment: str | None = None,
) -> Iterator[Context]:
    """The deployment engine's context, after the caller's access check (when ``caller`` is
    given: for ``action`` in ``environment``, before anything is looked up or created).

    Its actor is the authenticated principal once access control is set up; in setup mode,
    ``actor`` (e.g. immutrail:reconciler), else the --as/--actor name.
    """
    with open_ledger(home, db) as opened:
        ledger, name = opened, actor
        if caller is not None:
            who = acting(home, opened, action, environment, caller=caller)
            ledger = who.ledger(opened)
            name = who.name if who.authenticated or actor is None else actor
        if name is None:
            raise DeployInputError("no actor: give --as (or --actor before the bootstrap)")
        yield _context(home, ledger, name, docker_host, quiet)


def _context(home: Path, ledger: Ledger, actor: str, docker_host: str, quiet: bool) -> Context:
    store = Store.for_home(home, create=True)
    runtimes: dict[str, Runtime] = {}

    def runtime_for(name: str) -> Runtime:
        if name not in runtimes:
            if name == "docker":
                runtimes[name] = DockerRuntime.connect(store, docker_host, home=home)
            else:
                runtimes[name] = LocalRuntime(home, store)
        return runtimes[name]

    def report(message: str) -> None:
        if not quiet:
            stderr.print(f"  {message}", highlight=False, markup=False)

    return Context(home, ledger, store, actor, runtime_for, report)


@env_app.command("declare")
def env_declare(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    service: Annotated[str, typer.Argument(help="The service's name, e.g. hello.")],
    file: Annotated[Path, typer.Argument(help="The declaration (YAML), see docs/deploy.md.")],
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Declare (or change) SERVICE in ENVIRONMENT: replicas, strategy, runtime, port, config.

    Recorded as service.declared and committed to the desired-state repository. A changed
    configuration is a new deployment: the next `deploy` replaces every instance. Needs
    env.declare in ENVIRONMENT once access control is set up (exit 1 if not).
    """
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.ENV_DECLARE, environment, caller=caller) as (ledger, who),
    ):
        spec, files = parse_declaration(file, environment, service)
        made = declare(home, ledger, who.name, spec, files)
    if fmt is Format.json:
        emit_json(
            {
                "environment": environment,
                "service": service,
                "declaration": spec.to_json(),
                "config_digest": spec.config_digest,
                "ledger_index": made.ledger_index,
            }
        )
    else:
        stdout.print(
            f"declared {environment}/{service}: {spec.replicas} x {spec.strategy} on "
            f"{spec.runtime}, endpoint 127.0.0.1:{spec.port}; config {spec.config_digest}; "
            f"ledger index {made.ledger_index}",
            markup=False,
        )


@env_app.command("show")
def env_show(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """The declared services of ENVIRONMENT with their desired image (needs ledger.read)."""
    _check_environment(environment)
    caller = Caller(as_, token, key_file, passphrase_file)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _),
    ):
        store = Store.for_home(home, create=True)
        services: list[dict[str, Any]] = []
        for name, item in declared(ledger, environment).items():
            desired = desired_state(home, ledger, store, environment, name)
            services.append(
                {
                    "service": name,
                    "declaration": item.spec.to_json(),
                    "config_digest": item.spec.config_digest,
                    "declared_by": item.declared_by,
                    "declared_at": item.declared_at,
                    "ledger_index": item.ledger_index,
                    "desired": desired.to_json() if desired else None,
                }
            )
    if fmt is Format.json:
        emit_json({"environment": environment, "services": services})
        return
    if not services:
        stdout.print(f"no service is declared in {environment}", markup=False)
    for shown in services:
        spec, desired = shown["declaration"], shown["desired"]
        image = f"{desired['digest']} ({desired['image']})" if desired else "-"
        stdout.print(
            f"{environment}/{shown['service']}: {spec['replicas']} x {spec['strategy']} on "
            f"{spec['runtime']}, endpoint 127.0.0.1:{spec['port']}\n"
            f"  image   {image}"
            f"\n  config  {shown['config_digest']}\n  declared by {shown['declared_by']} at "
            f"{shown['declared_at']} (ledger index {shown['ledger_index']})",
            markup=False,
        )


def deploy(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    service: ServiceOption = None,
    strategy: Annotated[
        str | None,
        typer.Option(
            "--strategy", help="blue-green, rolling or canary [default: the declared one]."
        ),
    ] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    docker_host: DockerHostOption = DEFAULT_DOCKER_HOST,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Converge ENVIRONMENT's services to their desired image and configuration.

    New instances are started from the admitted image, traffic is switched by the service's
    endpoint, the old instances are drained, their logs kept, and destroyed. Needs deploy in
    ENVIRONMENT once access control is set up. Exit 1: not authenticated or not allowed
    (nothing done), admission or a guardrail refused, or the deployment failed and was undone
    (both recorded).
    """
    _check_environment(environment)
    if strategy is not None and strategy not in ("blue-green", "rolling", "canary"):
        fail("--strategy is blue-green, rolling or canary")
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with (
        errors_to_exit_codes(),
        deploy_context(
            home,
            db,
            None,
            docker_host,
            fmt is Format.json,
            caller=caller,
            action=Action.DEPLOY,
            environment=environment,
        ) as ctx,
    ):
        names = _services(ctx, environment, service)
        outcomes = [converge(ctx, environment, name, strategy=strategy) for name in names]
    _print_outcomes(environment, outcomes, fmt)


def rollback_command(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    service: Annotated[str, typer.Option("--service", help="The service to roll back.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded).")] = "rollback requested",
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    docker_host: DockerHostOption = DEFAULT_DOCKER_HOST,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Deploy the image that was desired before the current one: new instances, never a patch.

    Needs rollback in ENVIRONMENT once access control is set up (exit 1 if not)."""
    _check_environment(environment)
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with (
        errors_to_exit_codes(),
        deploy_context(
            home,
            db,
            None,
            docker_host,
            fmt is Format.json,
            caller=caller,
            action=Action.ROLLBACK,
            environment=environment,
        ) as ctx,
    ):
        outcome = rollback(ctx, environment, service, reason)
    _print_outcomes(environment, [outcome], fmt)


def status_command(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    docker_host: DockerHostOption = DEFAULT_DOCKER_HOST,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Desired against observed: per service and per instance (id, digest, age, health).

    Needs ledger.read once access control is set up."""
    _check_environment(environment)
    caller = Caller(as_, token, key_file, passphrase_file)
    with (
        errors_to_exit_codes(),
        deploy_context(
            home, db, RECONCILER, docker_host, True, caller=caller, action=Action.LEDGER_READ
        ) as ctx,
    ):
        report = status(ctx, environment)
    if fmt is Format.json:
        emit_json(report)
        return
    for item in report["services"]:
        desired = item["desired"]
        verdict = ("converged", "green") if item["converged"] else ("not converged", "yellow")
        # Text.assemble styles the verdict and takes the names and digests as plain text.
        stdout.print(
            Text.assemble(
                f"{environment}/{item['service']}: ",
                verdict,
                f"; desired {desired['replicas']} x "
                f"{desired['digest'] or '(nothing promoted)'} on {desired['runtime']}, endpoint "
                f"127.0.0.1:{item['endpoint']['port']}"
                + ("" if item["endpoint"]["running"] else " (not running)"),
            )
        )
        table = Table("instance", "digest", "age", "health", "serving", "up to date")
        for row in item["instances"]:
            table.add_row(
                row["id"],
                row["digest"][:19],
                f"{row['age_s']:.0f} s",
                row["health"],
                "yes" if row["serving"] else "no",
                "yes" if row["up_to_date"] else "no",
            )
        stdout.print(table, markup=False)
    for stray in report["undeclared"]:
        stdout.print(
            Text.assemble(("undeclared", "red"), f" {stray['id']} ({stray['service'] or '?'})")
        )


def reconcile_command(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    watch_: Annotated[
        bool, typer.Option("--watch", help="Keep reconciling every --interval seconds.")
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval",
            help=f"Seconds between passes ({seconds_help(MAX_INTERVAL_S)}).",
            callback=seconds(MAX_INTERVAL_S),
        ),
    ] = 5.0,
    passes: Annotated[
        int | None, typer.Option("--passes", help="With --watch: stop after N passes.")
    ] = None,
    docker_host: DockerHostOption = DEFAULT_DOCKER_HOST,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Observe ENVIRONMENT and converge it to its desired state.

    Creates missing instances, destroys unknown, surplus, dead and expired ones (replaced first),
    rolls out a changed desired image. The actor is the caller (needs reconcile in
    ENVIRONMENT) once access control is set up, immutrail:reconciler before. Exit 1 not
    authenticated or not allowed; 3 if a service could not be converged.
    """
    _check_environment(environment)
    caller = Caller(as_, token, key_file, passphrase_file)
    if passes is not None and passes < 1:
        fail("--passes must be >= 1")
    failed = False

    def show(result: Pass) -> None:
        nonlocal failed
        failed = failed or bool(result.errors)
        if fmt is Format.json:
            emit_json(result.to_json())
            return
        for outcome in result.outcomes:
            if outcome.status != "unchanged":
                stdout.print(_outcome_line(environment, outcome), markup=False)
        for removed in result.removed:
            stdout.print(f"removed {removed}: its service is not declared", markup=False)
        for error in result.errors:
            stdout.print(Text.assemble(("error", "red"), f" {error}"))
        if not result.changed and not result.errors:
            stdout.print(f"{environment}: converged, nothing to do", markup=False)

    with (
        errors_to_exit_codes(),
        deploy_context(
            home,
            db,
            RECONCILER,
            docker_host,
            fmt is Format.json,
            caller=caller,
            action=Action.RECONCILE,
            environment=environment,
        ) as ctx,
    ):
        if watch_:
            with contextlib.suppress(KeyboardInterrupt):
                watch(ctx, environment, interval_s=interval, passes=passes, on_pass=show)
        else:
            show(reconcile(ctx, environment))
    if failed:
        raise typer.Exit(3)


def chaos_command(
    environment: Annotated[str, typer.Argument(help="The environment, e.g. prod.")],
    terminate: Annotated[int, typer.Option("--terminate", help="How many instances to kill.")],
    seed: Annotated[
        int | None, typer.Option("--seed", help="Pick the same instances again.")
    ] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    docker_host: DockerHostOption = DEFAULT_DOCKER_HOST,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Kill random instances of ENVIRONMENT without warning; the reconciler must heal it.

    Needs chaos in ENVIRONMENT once access control is set up (exit 1 if not)."""
    _check_environment(environment)
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with (
        errors_to_exit_codes(),
        deploy_context(
            home,
            db,
            None,
            docker_host,
            True,
            caller=caller,
            action=Action.CHAOS,
            environment=environment,
        ) as ctx,
    ):
        killed = chaos(ctx, environment, terminate, random.Random(seed))  # noqa: S311  # picks victims, not secrets
    if fmt is Format.json:
        emit_json(
            {
                "environment": environment,
                "terminated": [
                    {"id": i.id, "service": i.service, "digest": i.digest} for i in killed
                ],
            }
        )
    else:
        for instance in killed:
            stdout.print(
                f"killed {instance.id} ({instance.service}, {instance.digest[:19]})", markup=False
            )


def _services(ctx: Context, environment: str, service: str | None) -> list[str]:
    names = list(declared(ctx.ledger, environment))
    if service is not None:
        if service not in names:
            raise DeployInputError(f"{service} is not declared in {environment}")
        return [service]
    if not names:
        raise DeployInputError(f"no service is declared in {environment}")
    return names


def _print_outcomes(environment: str, outcomes: list[Outcome], fmt: Format) -> None:
    if fmt is Format.json:
        emit_json({"environment": environment, "services": [o.to_json() for o in outcomes]})
        return
    for outcome in outcomes:
        stdout.print(_outcome_line(environment, outcome), markup=False)


def _outcome_line(environment: str, outcome: Outcome) -> str:
    where = f"{environment}/{outcome.service}"
    if outcome.status == "unchanged":
        return f"{where}: up to date ({outcome.digest})"
    return (
        f"{where}: {outcome.status} ({outcome.strategy}) {outcome.digest} in "
        f"{outcome.seconds:.1f} s; {len(outcome.created)} created, {len(outcome.destroyed)} "
        f"destroyed; endpoint 127.0.0.1:{outcome.endpoint_port}; deployment {outcome.deployment}"
    )
