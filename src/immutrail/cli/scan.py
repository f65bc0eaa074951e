"""`immutrail scan` and `immutrail vulndb …`: the vulnerability database and image scans."""

from __future__ import annotations

import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.cells import cell_len
from rich.markup import escape
from rich.progress import Progress, TaskID

from immutrail.access.model import Action
from immutrail.artifacts.store import Store
from immutrail.scan.attestation import Finding, findings_from_predicate
from immutrail.scan.download import DEFAULT_BASE, download_archives
from immutrail.scan.errors import VulnDbError
from immutrail.scan.scanner import ScanRun, import_database, scan_image
from immutrail.scan.severity import level_rank
from immutrail.scan.versions import SCHEMES
from immutrail.scan.vulndb import ImportResult, VulnDb, db_path

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
    check_access,
    emit_json,
    errors_to_exit_codes,
    fail,
    progress,
    stdout,
)

VULNDB_EXIT_CODES = (
    "Exit codes: 0 ok; 1 `verify` found a record that does not match its digest; 2 input "
    "error (corrupt record or archive, named with its file): nothing was imported; 3 home not "
    "initialized, database damaged, or a download failed."
)

vulndb_app = typer.Typer(
    no_args_is_help=True,
    help="The local OSV vulnerability database ($IMMUTRAIL_HOME/vulndb/osv.sqlite). "
    + VULNDB_EXIT_CODES,
)


class FailOn(StrEnum):
    none = "none"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"


class _ImportBar:
    def __init__(self, bar: Progress):
        self.bar = bar
        self.task: TaskID = bar.task_ids[0]

    def record_read(self, source: str) -> None:
        self.bar.advance(self.task)


class _DownloadBar:
    def __init__(self, bar: Progress):
        self.bar = bar
        self.task: TaskID = bar.task_ids[0]

    def downloading(self, ecosystem: str, url: str, total: int | None) -> None:
        self.bar.reset(self.task, total=total, description=f"{escape(ecosystem)} all.zip")

    def received(self, size: int) -> None:
        self.bar.advance(self.task, size)


def _print_import(result: ImportResult, ledger_index: int) -> None:
    assert result.snapshot is not None
    stdout.print(f"imported {result.read} records in {result.seconds:.1f} s", markup=False)
    stdout.print(
        f"  added {result.added}, updated {result.updated}, unchanged {result.unchanged}, "
        f"older ignored {result.older}, skipped {result.skipped_count}",
        markup=False,
    )
    for skipped in result.skipped:
        stdout.print(f"  skipped  {skipped.source}: {skipped.reason}", markup=False)
    for base, count in sorted(result.without_comparator.items()):
        stdout.print(
            f"  note     {count} entries for {base}: scans cannot compare its versions",
            markup=False,
        )
    stdout.print(
        f"  snapshot {result.snapshot.digest} ({result.snapshot.records} records)", markup=False
    )
    stdout.print(f"  ledger   entry {ledger_index}", markup=False)


def _emit_import(result: ImportResult, ledger_index: int, fmt: Format) -> None:
    if fmt is Format.json:
        emit_json({**result.to_dict(), "seconds": result.seconds, "ledger_index": ledger_index})
    else:
        _print_import(result, ledger_index)


@vulndb_app.command("import")
def import_(
    paths: Annotated[
        list[Path],
        typer.Argument(help="OSV .json files, folders of them, or OSV all.zip archives."),
    ],
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid",
            help="Import the valid records and list the invalid ones, instead of refusing all.",
        ),
    ] = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Import OSV records in one transaction; record `vulndb.imported` in the ledger.

    A corrupt record or archive refuses the whole import (exit 2, naming the file and field)
    unless --skip-invalid is given. A record replaces a stored one with the same id when its
    `modified` time is the same or newer. Needs vulndb.update once access control is set up
    (exit 1 if not).
    """
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.VULNDB_UPDATE, caller=caller) as (ledger, who),
        progress("importing", None) as bar,
    ):
        result, index = import_database(
            home,
            ledger,
            paths,
            actor=who.name,
            skip_invalid=skip_invalid,
            observer=_ImportBar(bar),
        )
    _emit_import(result, index, fmt)


@vulndb_app.command()
def update(
    ecosystem: Annotated[
        list[str] | None,
        typer.Option(
            "--ecosystem",
            metavar="E",
            help="An OSV ecosystem to fetch (repeatable) [default: "
            + ", ".join(sorted(set(SCHEMES)))
            + "].",
            show_default=False,
        ),
    ] = None,
    url: Annotated[
        str, typer.Option("--url", metavar="BASE", help="Where BASE/<ecosystem>/all.zip are.")
    ] = DEFAULT_BASE,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Download OSV's per-ecosystem all.zip archives and import them (needs network access).

    Needs vulndb.update once access control is set up (exit 1 if not). Exit 3 when an archive
    cannot be downloaded (nothing is imported then).
    """
    ecosystems = ecosystem or sorted(set(SCHEMES))
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.VULNDB_UPDATE, caller=caller) as (ledger, who),
        tempfile.TemporaryDirectory(prefix="immutrail-osv-") as folder,
    ):
        with progress("downloading", None) as bar:
            paths = download_archives(ecosystems, url, Path(folder), _DownloadBar(bar))
        with progress("importing", None) as bar:
            result, index = import_database(
                home,
                ledger,
                paths,
                actor=who.name,
                origin=[f"{url.rstrip('/')}/{e}/all.zip" for e in ecosystems],
                observer=_ImportBar(bar),
            )
    _emit_import(result, index, fmt)


@vulndb_app.command()
def status(
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """The database's snapshot digest, size and last update (needs ledger.read)."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        check_access(home, db, Action.LEDGER_READ, caller=caller)
    with errors_to_exit_codes(), VulnDb.open(home) as vulndb:
        snapshot = vulndb.snapshot()
    if fmt is Format.json:
        emit_json({"path": str(db_path(home)), **snapshot.to_dict()})
        return
    stdout.print(f"database {db_path(home)}", markup=False)
    stdout.print(f"  snapshot    {snapshot.digest}", markup=False)
    stdout.print(f"  records     {snapshot.records} ({snapshot.withdrawn} withdrawn)", markup=False)
    stdout.print(f"  last update {snapshot.last_update or 'never'}", markup=False)


@vulndb_app.command()
def verify(
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Re-hash every stored record and recompute the snapshot digest (exit 1 on a mismatch, or
    when the caller is not authenticated or lacks ledger.read)."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        check_access(home, db, Action.LEDGER_READ, caller=caller)
    with errors_to_exit_codes(), VulnDb.open(home) as vulndb:
        stored = vulndb.snapshot()
        try:
            computed = vulndb.compute_snapshot()
        except VulnDbError as exc:
            fail(exc.diagnostics(), ExitCode.VERIFICATION_FAILED)
    ok = computed.digest == stored.digest
    if fmt is Format.json:
        emit_json({"ok": ok, "stored": stored.digest, "computed": computed.digest})
    else:
        stdout.print(f"{'verified' if ok else 'MISMATCH'}: {computed.digest}", markup=False)
    if not ok:
        raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))


def _scan_json(run: ScanRun) -> dict[str, Any]:
    return {
        "digest": run.digest,
        "source": run.outcome.source,
        "summary": dict(run.summary),
        "attestation": run.attestation,
        "sbom": run.sbom,
        "sbom_generated": run.sbom_generated,
        "ledger_index": run.ledger_index,
        "predicate": dict(run.predicate),
    }


def _print_scan(run: ScanRun) -> None:
    # Scanner reports, OSV records and image contents are user text: printed, never markup.
    summary = run.summary
    stdout.print(
        f"scanned {run.digest} ({run.outcome.source}, {run.outcome.packages} packages)",
        markup=False,
    )
    stdout.print(f"  database    {summary['db']}", markup=False)
    counts = summary["counts"]
    stdout.print(
        "  found       "
        + ", ".join(f"{counts[level]} {level}" for level in counts)
        + f" ({summary['vulnerabilities']} vulnerabilities, {summary['findings']} findings)",
        markup=False,
    )
    findings = findings_from_predicate(run.predicate)
    if findings:
        stdout.file.write(_findings_table(findings))
        stdout.file.flush()
    if summary["withdrawn"]:
        stdout.print(
            f"  withdrawn   {summary['withdrawn']} matching records withdrawn (ignored)",
            markup=False,
        )
    for item in run.outcome.not_evaluated:
        record = f" [{item.id}]" if item.id else ""
        stdout.print(f"  not checked {item.purl}{record}: {item.reason}", markup=False)
    stdout.print(f"  attestation {run.attestation}", markup=False)
    stdout.print(f"  ledger      entry {run.ledger_index}", markup=False)


_FINDING_COLUMNS = ("id", "package", "installed", "fixed", "level", "score")


def _findings_table(findings: list[Finding]) -> str:
    """Every finding, one line each in aligned columns (as grype prints them).

    Not a rich Table: rich measures and renders each cell on its own, about a millisecond a row,
    so a report with 200,000 findings took minutes. This is one pass to measure, one to write.
    """
    rows = [_FINDING_COLUMNS] + [
        (
            _cell(f.id),
            _cell(f.package),
            _cell(f.version),
            _cell(", ".join(f.fixed) or "-"),
            _cell(f.level),
            "" if f.score is None else f"{f.score:.1f}",
        )
        for f in findings
    ]
    sizes = [[_width(cell) for cell in row] for row in rows]
    widths = [max(column) for column in zip(*sizes, strict=True)]
    lines = (
        "  ".join(
            cell + " " * (width - size)
            for cell, size, width in zip(row, row_sizes, widths, strict=True)
        ).rstrip()
        for row, row_sizes in zip(rows, sizes, strict=True)
    )
    return "".join(f"  {line}\n" for line in lines)


def _cell(text: str) -> str:
    """A cell as it is written to the terminal: control characters (a newline, an escape
    sequence from a hostile report) are shown escaped, never sent."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _width(cell: str) -> int:
    return len(cell) if cell.isascii() else cell_len(cell)


def scan(
    ref: Annotated[str, typer.Argument(metavar="DIGEST", help="The image: sha256:… or a tag.")],
    from_report: Annotated[
        Path | None,
        typer.Option(
            "--from-report",
            metavar="FILE",
            help="Take the findings from a Trivy or Grype JSON report about this image "
            "instead of scanning (a report naming another image is refused).",
        ),
    ] = None,
    fail_on: Annotated[
        FailOn | None,
        typer.Option(
            "--fail-on",
            metavar="LEVEL",
            help="Exit 1 when a finding is at or above LEVEL (none|low|medium|high|critical); "
            "findings of unknown severity count as above every level.",
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
    """Scan an image's SBOM against the vulnerability database; attach a signed attestation.

    The result is an in-toto statement (predicate https://in-toto.io/attestation/vulns/v0.1)
    attached to the image, and a scan.completed ledger event.

    Exit codes: 0 scanned (whether or not vulnerabilities were found: the gate decides); 1 a
    finding at or above --fail-on LEVEL, or stored bytes that do not match their digest; 2 input
    error (unknown image, malformed report, a report about another image): nothing was written;
    3 no vulnerability database, home not initialized, or storage damaged. Needs scan.run once
    access control is set up (exit 1 if not, nothing written).
    """
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.SCAN_RUN, caller=caller) as (ledger, who),
    ):
        run = scan_image(
            Store.for_home(home), ledger, home, ref, actor=who.name, report=from_report
        )
    if fmt is Format.json:
        emit_json(_scan_json(run))
    else:
        _print_scan(run)
    if fail_on is not None:
        threshold = level_rank(fail_on.value)
        levels = [f.level for f in findings_from_predicate(run.predicate)]
        if any(level_rank(level) >= threshold for level in levels):
            raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))
