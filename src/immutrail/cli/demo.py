"""`immutrail demo`: the end-to-end story on the embedded defaults, narrated.

Exit codes: 0 the story ran and every outcome is as expected; 1 an outcome was not (e.g. the
tampered ledger was not caught); 2 the folder exists and was not made by the demo; 3 a step failed.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from immutrail import demo as story

from .common import ExitCode, Format, FormatOption, emit_json, errors_to_exit_codes, stderr, stdout

# What would make a command act as someone else than the cast member it runs as.
_AMBIENT = ("IMMUTRAIL_PRINCIPAL", "IMMUTRAIL_TOKEN", "IMMUTRAIL_ACTOR", "IMMUTRAIL_KEY_PASSPHRASE")


@contextlib.contextmanager
def _as(principal: str | None) -> Iterator[None]:
    """IMMUTRAIL_PRINCIPAL (what --as reads) set to ``principal`` for one command, and no other
    credential from the user's environment; restored afterwards."""
    saved = {name: os.environ.pop(name, None) for name in _AMBIENT}
    if principal is not None:
        os.environ["IMMUTRAIL_PRINCIPAL"] = principal
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


@functools.cache
def _command() -> Any:
    """The app as one click command, built once: building it costs a third of a second.

    (Typed Any: typer vendors click and names no public type for it.)"""
    from .main import app  # here, not at import time: main imports this module

    return typer.main.get_command(app)


def _invoke(args: list[str], principal: str | None) -> tuple[int, dict[str, Any]]:
    """Run one `immutrail` command line in-process as ``principal``, as JSON; its stdout is
    captured, not shown."""
    command = _command()
    at = args.index("--") if "--" in args else len(args)  # options go before a test command
    words = [*args[:at], "--format", "json", *args[at:]]
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), _as(principal):
        try:
            code = command.main(words, standalone_mode=False)
        except typer.Exit as exc:
            code = exc.exit_code
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return (code if isinstance(code, int) else 0), _parse(captured.getvalue())


def _parse(text: str) -> dict[str, Any]:
    """The command's JSON document: the whole output, or its last line that is one."""
    for candidate in (text, *reversed(text.splitlines())):
        with contextlib.suppress(ValueError):
            data = json.loads(candidate)
            if isinstance(data, dict):
                return data
    return {"output": text}


def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo keeps everything (recreated each run).")
    ] = Path("immutrail-demo"),
    keep: Annotated[
        bool,
        typer.Option("--keep", help="Leave prod running (instances and endpoint) to explore."),
    ] = False,
    fmt: FormatOption = Format.text,
) -> None:
    """Build, refuse, release, deploy under load, heal drift and chaos, catch a tampered ledger."""
    last_title: list[str] = [""]

    def say(title: str, detail: str) -> None:
        if fmt is Format.json:
            return
        if title != last_title[0]:
            stdout.rule(Text(title, style="bold"), align="left")
            last_title[0] = title
        stdout.print(detail, markup=False)

    with errors_to_exit_codes():
        try:
            result = story.run(directory, _invoke, say, keep=keep)
        except FileExistsError as exc:
            stderr.print(str(exc), markup=False)
            raise typer.Exit(int(ExitCode.USAGE)) from exc
        except story.DemoError as exc:
            stderr.print(f"error: {exc}", markup=False)
            raise typer.Exit(int(ExitCode.OPERATIONAL)) from exc
    home = result.home.resolve()
    if fmt is Format.json:
        emit_json(
            {
                "ok": result.ok,
                "seconds": round(result.seconds, 1),
                "kept_running": keep,
                "directory": str(result.directory),
                "home": str(result.home),
                "repository": str(result.repository),
                "desired_state": str(result.home / "desired-state"),
                "store": str(result.home / "store"),
                **result.steps,
            }
        )
    else:
        verdict = "the whole story checks out" if result.ok else "UNEXPECTED: see the steps above"
        stdout.rule(Text(f"{verdict} ({result.seconds:.0f} s)", style="bold"), align="left")
        running = (
            "Prod is still running (--keep)" if keep else "Everything the demo started is stopped"
        )
        auditor = result.steps.get("auditor") or {}
        evidence, report = auditor.get("evidence"), auditor.get("report")
        moment = auditor.get("at", "2026-01-01T00:00:00Z")
        stdout.print(
            f"The ledger: {home}/ledger.db\n"
            f"The desired-state repository: {home}/desired-state\n"
            f"The image store: {home}/store\n"
            f"The example repository: {result.repository.resolve()}\n"
            + (f"The evidence bundle: {Path(evidence).resolve()}\n" if evidence else "")
            + (f"The SOC 2 report: {Path(report).resolve()}\n" if report else "")
            + f"{running}. Explore it as one of the cast (examples/demo/principals.yaml), e.g.\n"
            f"  export IMMUTRAIL_HOME={home} IMMUTRAIL_PRINCIPAL={story.AUDITOR}\n"
            f"  immutrail audit at {moment} --env prod\n"
            f"  immutrail audit changes --env prod --from 2026-01-01T00:00:00Z --to "
            f"2100-01-01T00:00:00Z\n"
            f"  immutrail ledger list\n"
            f"  immutrail ledger verify\n"
            f"  immutrail status prod\n"
            f"  IMMUTRAIL_PRINCIPAL={story.OPERATOR} immutrail drift check prod\n"
            f"  immutrail serve            # the API and the web UI at http://127.0.0.1:8700/ui/;\n"
            f"  IMMUTRAIL_PRINCIPAL={story.ADMIN} immutrail token create --for {story.AUDITOR} "
            f"--expires-in 8h   # its login token",
            markup=False,
        )
    if not result.ok:
        raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))
