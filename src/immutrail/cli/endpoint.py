"""Service endpoint commands: endpoint list|show|start|stop (the processes deploy starts)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from immutrail.access.model import Action
from immutrail.deploy.endpoint import (
    Endpoint,
    EndpointError,
    EndpointInfo,
    EndpointInputError,
    list_endpoints,
)
from immutrail.deploy.proxy import Backend, BackendLike

from .common import (
    DEFAULT_HOME,
    EXIT_CODES_HELP,
    AsOption,
    Caller,
    DbOption,
    Format,
    FormatOption,
    HomeOption,
    KeyFileOption,
    PassphraseFileOption,
    TokenOption,
    check_access,
    emit_json,
    errors_to_exit_codes,
    stdout,
)

endpoint_app = typer.Typer(
    no_args_is_help=True,
    help="The service endpoints: one long-running proxy process per service, on its fixed "
    f"loopback port. `immutrail deploy` starts them. {EXIT_CODES_HELP}",
)

EnvironmentArg = Annotated[str, typer.Argument(help="The environment, e.g. prod.")]
ServiceArg = Annotated[str, typer.Argument(help="The service, e.g. web.")]


def _backends_text(backends: tuple[Backend, ...]) -> str:
    return ", ".join(f"{b.host}:{b.port} x{b.weight}" for b in backends) or "(none)"


@endpoint_app.command("list")
def list_command(
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """The running endpoint processes: service, port, pid, backends. Exit 0 (1: the caller may
    not read, once access control is set up).

    One that does not answer is left out, with a warning on stderr."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        check_access(home, db, Action.LEDGER_READ, caller=caller)
        found = list_endpoints(home)
    if fmt is Format.json:
        emit_json({"endpoints": [info.to_json() for info in found]})
        return
    if not found:
        stdout.print("no endpoint process runs", markup=False)
        return
    table = Table("service", "endpoint", "pid", "started", "backends")
    for info in found:
        table.add_row(
            f"{info.environment}/{info.service}",
            f"127.0.0.1:{info.port}",
            str(info.pid),
            info.started_at,
            _backends_text(info.backends),
        )
    stdout.print(table, markup=False)


@endpoint_app.command("show")
def show(
    environment: EnvironmentArg,
    service: ServiceArg,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """One endpoint: whether it runs, its port, backends and counters, and its files.

    Needs ledger.read once access control is set up. Exit 0 whether it runs or not (see
    "running"); 1 not allowed; 2 bad name; 3 it does not answer."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        check_access(home, db, Action.LEDGER_READ, caller=caller)
        endpoint = Endpoint(home, environment, service)
        info = endpoint.running()
        stats = endpoint.stats() if info is not None else None
    files = endpoint.files
    report: dict[str, Any] = {
        "environment": endpoint.environment,
        "service": endpoint.service,
        "running": info is not None,
        "endpoint": info.to_json() if info else None,
        "stats": stats.to_dict() if stats else None,
        "files": {"state": str(files.state), "socket": str(files.socket), "log": str(files.log)},
    }
    if fmt is Format.json:
        emit_json(report)
        return
    if info is None or stats is None:
        stdout.print(Text.assemble(f"{endpoint.where}: ", ("not running", "yellow")))
    else:
        stdout.print(
            Text.assemble(
                f"{endpoint.where}: ",
                ("running", "green"),
                f" on 127.0.0.1:{info.port}, pid {info.pid}, since {info.started_at}; "
                f"{stats.connections} connection(s), {stats.failures} failed, {stats.active} open",
            )
        )
        table = Table("backend", "weight", "connections", "connect failures", "open")
        serving = {b.address: b for b in info.backends}
        for b in stats.backends:
            current = serving.pop((b.host, b.port), None)
            table.add_row(
                f"{b.host}:{b.port}",
                str(current.weight) if current else "(not in the set)",
                str(b.connections),
                str(b.connect_failures),
                str(b.active),
            )
        for current in serving.values():
            table.add_row(f"{current.host}:{current.port}", str(current.weight), "0", "0", "0")
        stdout.print(table, markup=False)
    stdout.print(f"log: {files.log}", markup=False)


def _parse_backend(text: str) -> BackendLike:
    """HOST:PORT[:WEIGHT]; an IPv6 host in brackets: [::1]:8001."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        numbers = rest[1:].split(":") if bracket and rest.startswith(":") else []
    else:
        host, *numbers = text.split(":")
    if not host or len(numbers) not in (1, 2):
        raise EndpointInputError(f"a backend is HOST:PORT or HOST:PORT:WEIGHT, not {text!r}")
    try:
        values = [int(n) for n in numbers]
    except ValueError:
        raise EndpointInputError(f"a backend's port and weight are numbers: {text!r}") from None
    return (host, values[0], values[1]) if len(values) == 2 else (host, values[0])


@endpoint_app.command("start")
def start(
    environment: EnvironmentArg,
    service: ServiceArg,
    port: Annotated[int, typer.Option("--port", help="The loopback port to listen on.")],
    backend: Annotated[
        list[str] | None,
        typer.Option(
            "--backend",
            help="HOST:PORT[:WEIGHT], repeatable. Default: the last set of the previous process.",
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
    """Start the endpoint process if none runs (deploy does this by itself; for exploring).

    Needs endpoint.manage in ENVIRONMENT once access control is set up. Exit 0 running
    (started now or before); 1 not allowed; 2 bad name, port or backend, the port is taken, or
    it runs on another port; 3 it did not start or answer."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        check_access(home, db, Action.ENDPOINT_MANAGE, environment, caller=caller)
        endpoint = Endpoint(home, environment, service)
        was = endpoint.running()
        info = endpoint.ensure(port, [_parse_backend(b) for b in backend or []])
    _print_info(info, started=was is None, fmt=fmt)


def _print_info(info: EndpointInfo, *, started: bool, fmt: Format) -> None:
    if fmt is Format.json:
        emit_json({"started": started, "endpoint": info.to_json()})
        return
    verb = "started" if started else "already running"
    stdout.print(
        f"{info.environment}/{info.service}: {verb} on 127.0.0.1:{info.port} (pid {info.pid}) "
        f"-> {_backends_text(info.backends)}",
        markup=False,
    )


@endpoint_app.command("stop")
def stop(
    environment: EnvironmentArg,
    service: ServiceArg,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Stop the endpoint process: it closes every connection. Its last backend set is kept for
    the next start. Needs endpoint.manage in ENVIRONMENT once access control is set up. Exit 0
    stopped or was not running; 1 not allowed; 2 bad name; 3 it would not stop."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        check_access(home, db, Action.ENDPOINT_MANAGE, environment, caller=caller)
        endpoint = Endpoint(home, environment, service)
        try:
            was = endpoint.running()
            running = was is not None
        except EndpointError:  # not answering, or a damaged state file: stop() copes with both
            was, running = None, endpoint.locked()
        endpoint.stop()
    if fmt is Format.json:
        emit_json(
            {
                "environment": endpoint.environment,
                "service": endpoint.service,
                "stopped": running,
                "pid": was.pid if was else None,
            }
        )
        return
    if not running:
        stdout.print(f"{endpoint.where}: not running", markup=False)
    else:
        stdout.print(
            f"{endpoint.where}: stopped" + (f" (pid {was.pid})" if was else ""), markup=False
        )
