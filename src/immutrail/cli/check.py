"""`immutrail check`: the security baseline (and the user's Rego rules) applied to an image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table
from rich.text import Text

from immutrail.access.model import Action
from immutrail.artifacts.store import Store
from immutrail.baseline.rules import DEFAULT_FAIL_ON, Severity
from immutrail.baseline.runner import check_image, setuid_allowlist

from .common import (
    DEFAULT_HOME,
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
    progress,
    stdout,
)

MAX_EVIDENCE_SHOWN = 3


class _Bar:
    """Draws the check's phases on stderr (rich hides it when stderr is not a terminal)."""

    def __init__(self, bar: Progress):
        self.bar = bar
        self.task: TaskID = bar.task_ids[0]

    def phase(self, description: str, total: int | None) -> None:
        self.bar.update(self.task, description=description, total=total, completed=0)

    def advance(self, done: int) -> None:
        self.bar.update(self.task, completed=done)


def _evidence_text(item: dict[str, Any]) -> str:
    where = str(item.get("path") or item.get("package") or item.get("reference") or "")
    if item.get("layer") is not None:
        where += f" (layer {item['layer']}"
        where += ", deleted or replaced later)" if item.get("shadowed") else ")"
    what = item.get("message") or item.get("detail") or item.get("pattern") or ""
    if item.get("fingerprint"):
        what = f"{item.get('pattern')} {item['fingerprint']}"
    return f"{where}: {what}" if where and what else where or str(what)


def _print(predicate: dict[str, Any], digest: str, attestation: str, index: int) -> None:
    table = Table(title=f"baseline of {escape(digest)}", show_lines=False)
    for column in ("rule", "severity", "status", "title", "evidence"):
        table.add_column(column, overflow="fold")
    for result in predicate["results"]:
        evidence = result["evidence"]
        shown = [_evidence_text(e) for e in evidence[:MAX_EVIDENCE_SHOWN]]
        more = len(evidence) - len(shown) + int(result.get("evidence_omitted", 0))
        if more > 0:
            shown.append(f"… and {more} more")
        status = "[green]pass[/]" if result["status"] == "pass" else "[red]FAIL[/]"
        # Rule ids and titles (user rules) and evidence (the image's files) are plain text.
        table.add_row(
            Text(str(result["id"])),
            Text(str(result["severity"])),
            status,
            Text(str(result["title"])),
            Text("\n".join(shown)),
        )
    stdout.print(table)
    verdict = "[green]passed[/]" if predicate["passed"] else "[bold red]FAILED[/]"
    stdout.print(f"{verdict} (fails on {escape(str(predicate['fail_on']))} and above)", markup=True)
    stdout.print(f"  attestation {attestation}\n  ledger      entry {index}", markup=False)


def check(
    image: Annotated[str, typer.Argument(help="The image to check: sha256:… or a tag.")],
    rules: Annotated[
        Path | None,
        typer.Option(
            "--rules",
            help="A folder of user rules in Rego (*.rego, see docs/baseline.md), run after "
            "the built-in baseline.",
            show_default=False,
        ),
    ] = None,
    fail_on: Annotated[
        Severity,
        typer.Option(
            "--fail-on", help="The image fails when a rule of this severity or above fails."
        ),
    ] = DEFAULT_FAIL_ON,
    allow_setuid: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-setuid",
            help="A setuid/setgid file the image is expected to have, as an absolute path "
            "such as /usr/bin/passwd (repeatable; recorded in the attestation).",
            show_default=False,
        ),
    ] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Check an image against the security baseline and user rules; attest and record the result.

    The signed statement (predicate https://immutrail.dev/attestation/baseline/v1) is attached
    to the image and a baseline.checked event is appended, whether the image passes or not.
    Needs baseline.check once access control is set up.
    Exit codes: 0 passed; 1 a rule of --fail-on severity or above failed (recorded), or not
    authenticated or not allowed (nothing recorded); 2 usage or
    input error, such as an unknown image or a rule file that does not compile (nothing was
    written); 3 operational error (store or ledger damaged or not initialized).
    """
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with errors_to_exit_codes():
        setuid_allowlist(allow_setuid or ())  # refused before the ledger is opened
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.BASELINE_CHECK, caller=caller) as (ledger, who),
        progress("checking", None) as bar,
    ):
        result = check_image(
            Store.for_home(home),
            ledger,
            home,
            image,
            who.name,
            rules_dir=rules,
            fail_on=fail_on,
            allow_setuid=allow_setuid or (),
            observer=_Bar(bar),
        )
    if fmt is Format.json:
        emit_json(
            {
                "digest": result.digest,
                "passed": result.passed,
                "attestation": result.attestation,
                "ledger_index": result.ledger_index,
                "predicate": result.predicate,
            }
        )
    else:
        _print(result.predicate, result.digest, result.attestation, result.ledger_index)
    if not result.passed:
        raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))
