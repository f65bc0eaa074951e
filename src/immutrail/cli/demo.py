"""`immutrail demo`: the end-to-end story on the embedded defaults, narrated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from immutrail import demo as story

from .common import ExitCode, Format, FormatOption, emit_json, errors_to_exit_codes, stdout


def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the demo keeps its ledger (recreated each run).")
    ] = Path("immutrail-demo"),
    fmt: FormatOption = Format.text,
) -> None:
    """Run the story: record, checkpoint, prove, then catch a tampered and a rolled-back ledger."""
    last_title: list[str] = [""]

    def say(title: str, detail: str) -> None:
        if fmt is Format.json:
            return
        if title != last_title[0]:
            stdout.rule(f"[bold]{title}", align="left")
            last_title[0] = title
        stdout.print(detail, markup=False)

    with errors_to_exit_codes():
        try:
            result = story.run(directory, say)
        except FileExistsError as exc:
            stdout.print(str(exc))
            raise typer.Exit(int(ExitCode.USAGE)) from exc
    caught = (
        result.clean_verify_ok
        and result.tamper_detected_at == result.tampered_index
        and result.rollback_detected
    )
    if fmt is Format.json:
        emit_json(
            {
                "ok": caught,
                "home": str(result.home),
                "witness": str(result.witness),
                "entries": result.entries,
                "inclusion_verified": result.inclusion_verified,
                "clean_verify_ok": result.clean_verify_ok,
                "tampered_index": result.tampered_index,
                "tamper_detected_at": result.tamper_detected_at,
                "rollback_detected": result.rollback_detected,
            }
        )
    else:
        home = result.home
        verdict = "tampering caught" if caught else "UNEXPECTED: tampering was not caught"
        stdout.rule(f"[bold]{verdict}", align="left")
        stdout.print(
            f"The ledger: {home}\nThe witness folder: {result.witness}\nExplore it:\n"
            f"  immutrail ledger list --home {home}\n"
            f"  immutrail ledger prove inclusion 3 --home {home} --format tlog-proof\n"
            f"  immutrail ledger verify --home {home} --witness {result.witness}",
            markup=False,
        )
    if not caught:
        raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))
