"""`immutrail serve`: the HTTP API (OpenAPI), the ledger as C2SP tlog tiles, and the web UI."""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from immutrail.api.settings import ServerSettings
from immutrail.ledger.errors import LedgerError, LedgerInputError
from immutrail.ledger.home import open_ledger

from .common import (
    DEFAULT_HOME,
    DbOption,
    Format,
    FormatOption,
    HomeOption,
    emit_json,
    errors_to_exit_codes,
    stderr,
    stdout,
)

log = logging.getLogger(__name__)


class ServeError(LedgerError):
    """The server cannot start (the address cannot be bound)."""


_SHOWN = 80
"""At most this many characters of a bad --host are repeated in the error."""


def _bind(host: str, port: int) -> socket.socket:
    """Bind before uvicorn starts, so a taken port is an error with an exit code, not a log."""
    shown = repr(host if len(host) <= _SHOWN else host[:_SHOWN] + "…")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise LedgerInputError(f"cannot resolve --host {shown}: {exc}") from exc
    except ValueError as exc:  # UnicodeError from the idna codec: a label over 63, a bad byte
        raise LedgerInputError(f"--host {shown}: not a valid host name") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def _stopped(signum: int, frame: object) -> None:
    raise typer.Exit(0)


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: Annotated[
        str, typer.Option(help="The address to listen on.", envvar="IMMUTRAIL_SERVE_HOST")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="The port (0: any free one).", envvar="IMMUTRAIL_SERVE_PORT"
        ),
    ] = 8700,
    public_log: Annotated[
        bool,
        typer.Option(
            "--public-log",
            help="Serve the tlog-tiles entry bundles without a token (events name actors and "
            "digests; hash tiles and the checkpoint are always public).",
        ),
    ] = False,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Serve the HTTP API (/api/v1, OpenAPI at /openapi.json), the ledger as a C2SP tlog-tiles
    log (/tlog/) and the auditor's web UI (/ui) until interrupted (Ctrl-C, SIGTERM).

    Every /api/v1 request needs `Authorization: Bearer imt_…` (`immutrail token create`).
    Several servers may share one PostgreSQL ledger (--db). Serve plain HTTP on loopback, or
    behind a proxy that terminates TLS: tokens travel in a header.

    Exit 0 stopped (after finishing the requests in flight), 2 bad input (not a host name, or an
    address that does not resolve), 3 the ledger is not initialized or unreachable, or the port
    is taken.
    """
    import uvicorn

    from immutrail.api.app import create_app

    with errors_to_exit_codes():
        with open_ledger(home, db) as ledger:  # fail now, not on the first request
            origin, vkey = ledger.origin, ledger.vkey
        sock = _bind(host, port)
        bound = sock.getsockname()[1]
        url = f"http://{host if ':' not in host else f'[{host}]'}:{bound}"
        if fmt is Format.json:
            emit_json(
                {
                    "url": url,
                    "openapi": f"{url}/openapi.json",
                    "tlog": f"{url}/tlog/",
                    "origin": origin,
                    "vkey": vkey,
                    "public_log": public_log,
                }
            )
        else:
            stdout.print(
                f"serving ledger {origin} at {url}\n"
                f"  api      {url}/api/v1  (OpenAPI: {url}/openapi.json)\n"
                f"  tlog     {url}/tlog/  (entries {'public' if public_log else 'need a token'})\n"
                f"  ui       {url}/ui\n"
                f"  vkey     {vkey}",
                markup=False,
            )
        if not _loopback(host):
            stderr.print(
                f"warning: listening on {host} in plain HTTP; put a TLS-terminating proxy in "
                "front, since tokens travel in the Authorization header",
                markup=False,
            )
        sys.stdout.flush()  # the address, before any request: callers read it from a pipe
        app = create_app(ServerSettings(Path(home), db, public_log=public_log))
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal with the
        # handlers it found: these turn that into a clean exit 0.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _stopped)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            sock.close()
