"""`immutrail audit …`: point-in-time queries, evidence bundles and their offline verification."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from immutrail.access.model import Action
from immutrail.audit.bundle import build_bundle, choose_checkpoints
from immutrail.audit.errors import AuditInputError
from immutrail.audit.queries import (
    Answer,
    Query,
    at_query,
    changes_query,
    normalize_moment,
    run_query,
    trace_query,
)
from immutrail.audit.reading import LedgerSource, optional_store
from immutrail.audit.report import (
    DEFAULT_PATCH_DAYS,
    FRAMEWORKS,
    Report,
    build_report,
    render_csv,
    render_html,
    render_json,
    report_digest,
)
from immutrail.audit.report.window import check_span
from immutrail.audit.verify import TRUST_TOFU, BundleReport, read_bundle_file, verify_bundle
from immutrail.files import atomic_output, check_output
from immutrail.ledger.event import time_us
from immutrail.ledger.proofs import b64

from .common import (
    DEFAULT_HOME,
    EXIT_CODES_HELP,
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
    named_path,
    stdout,
)

audit_app = typer.Typer(
    no_args_is_help=True,
    help="What ran where, when, from which commit, approved and deployed by whom: answers "
    f"from the ledger, and evidence bundles an auditor verifies offline. {EXIT_CODES_HELP}",
)

EnvOption = Annotated[str, typer.Option("--env", help="The environment, e.g. prod.")]
FromOption = Annotated[str, typer.Option("--from", help="RFC 3339: the window's start (included).")]
ToOption = Annotated[str, typer.Option("--to", help="RFC 3339: the window's end (included).")]


@contextlib.contextmanager
def _source(home: Path, db: str | None, caller: Caller) -> Iterator[LedgerSource]:
    """The ledger as an event source, once the caller may read everything (audit.read)."""
    with authorized(home, db, Action.AUDIT_READ, caller=caller) as (ledger, _):
        yield LedgerSource(ledger, optional_store(home))


def _short(digest: object, width: int = 12) -> str:
    if not isinstance(digest, str):
        return "-"
    return digest.removeprefix("sha256:")[:width]


def _when(fact: Mapping[str, Any] | None) -> str:
    if not fact:
        return "-"
    return f"{fact.get('time')} by {fact.get('actor')} [#{fact.get('index')}]"


# --- at -----------------------------------------------------------------------------------------


@audit_app.command("at")
def at_command(
    moment: Annotated[
        str, typer.Argument(metavar="TIME", help="RFC 3339, e.g. 2026-03-14T09:00:00Z.")
    ],
    env: EnvOption,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Every instance running in ENV at TIME: image, commit, builder, provenance, scan and
    baseline at deployment time, approvals, deployer, creation, destruction, open drift.

    Exit 0 answered (also when nothing ran), 2 bad input, 3 the ledger cannot be read.
    """
    with errors_to_exit_codes():
        query = at_query(moment, env)
        with _source(home, db, Caller(as_, token, key_file, passphrase_file)) as source:
            answer = run_query(query, source)
        _print_answer(answer, fmt)


@audit_app.command("trace")
def trace_command(
    ref: Annotated[
        str, typer.Argument(metavar="DIGEST|INSTANCE", help="An image digest or an instance id.")
    ],
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """The whole chain of an image (or of one instance) from commit to destruction.

    Exit 0 answered, 2 bad input or nothing about REF in the ledger, 3 the ledger cannot be read.
    """
    with errors_to_exit_codes():
        query = trace_query(ref)
        with _source(home, db, Caller(as_, token, key_file, passphrase_file)) as source:
            answer = run_query(query, source)
        _print_answer(answer, fmt)


@audit_app.command("changes")
def changes_command(
    env: EnvOption,
    since: FromOption,
    until: ToOption,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Every change recorded for ENV in the window: promotions (refused ones and break-glass
    overrides too), rollbacks, declarations, deployments, instances, traffic, drift, policy.

    Exit 0 answered, 2 bad input, 3 the ledger cannot be read.
    """
    with errors_to_exit_codes():
        query = changes_query(env, since, until)
        with _source(home, db, Caller(as_, token, key_file, passphrase_file)) as source:
            answer = run_query(query, source)
        _print_answer(answer, fmt)


# --- evidence -----------------------------------------------------------------------------------


def _evidence_query(
    ref: str | None, at: str | None, env: str | None, since: str | None, until: str | None
) -> Query:
    if ref is not None:
        if any(x is not None for x in (at, env, since, until)):
            raise AuditInputError("give either DIGEST|INSTANCE, or --env with --at or --from/--to")
        return trace_query(ref)
    if env is None:
        raise AuditInputError(
            "name what to prove: DIGEST|INSTANCE, --at TIME --env ENV, or "
            "--from T1 --to T2 --env ENV"
        )
    if at is not None:
        if since is not None or until is not None:
            raise AuditInputError("--at cannot be combined with --from/--to")
        return at_query(at, env)
    if since is None or until is None:
        raise AuditInputError("--env needs --at TIME, or both --from and --to")
    return changes_query(env, since, until)


def _write_new(path: Path, data: bytes, overwrite: bool) -> None:
    """Write ``data`` to ``path`` atomically; never clobber unasked, never replace anything but
    a regular file (checked again before the rename: it may have appeared meanwhile)."""
    with atomic_output(path, overwrite=overwrite) as stream:
        stream.write(data)


@audit_app.command("evidence")
def evidence_command(
    output: Annotated[Path, typer.Option("-o", "--output", help="The bundle file to write.")],
    ref: Annotated[
        str | None, typer.Argument(metavar="[DIGEST|INSTANCE]", help="Prove a trace of this.")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Prove `audit at TIME` (with --env).")
    ] = None,
    env: Annotated[str | None, typer.Option("--env", help="The environment.")] = None,
    since: Annotated[str | None, typer.Option("--from", help="Prove `audit changes` from…")] = None,
    until: Annotated[str | None, typer.Option("--to", help="…to (with --env).")] = None,
    as_of: Annotated[
        int | None,
        typer.Option(
            "--as-of",
            min=0,
            help="Answer as of this stored checkpoint's size [default: the latest, signed now "
            "if the ledger has grown].",
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")] = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Write one self-contained evidence bundle: the query, the answer, the events it cites
    with inclusion proofs against one signed checkpoint, the consistency proof to the latest
    checkpoint, the attestations and the public keys (docs/evidence-bundle.md).

    The bundle is verified before it is written. Exit 0 written, 2 bad input (nothing written),
    3 the ledger or the image store cannot supply the evidence.
    """
    with errors_to_exit_codes():
        query = _evidence_query(ref, at, env, since, until)
        check_output(output, overwrite)
        started = time.perf_counter()
        caller = Caller(as_, token, key_file, passphrase_file)
        with authorized(home, db, Action.AUDIT_EXPORT, caller=caller) as (ledger, _):
            built = build_bundle(ledger, optional_store(home), query, as_of=as_of)
        seconds = time.perf_counter() - started
        _write_new(output, built.data, overwrite)
        summary = {
            "file": str(output),
            "bytes": len(built.data),
            "query": query.to_json(),
            "checkpoint_size": built.checkpoint_size,
            "latest_size": built.latest_size,
            "signed_checkpoint": built.signed_checkpoint,
            "events": built.events,
            "attestations": built.attestations,
            "keys": built.report.keys,
            "seconds": round(seconds, 3),
        }
        if fmt is Format.json:
            emit_json(summary)
            return
        signed = " (signed now)" if built.signed_checkpoint else ""
        stdout.print(
            f"wrote {output}: {len(built.data)} bytes, {built.events} events with inclusion "
            f"proofs, {built.attestations} attestations, {built.report.keys} keys\n"
            f"  {query.describe()}, as of checkpoint {built.checkpoint_size}{signed}, "
            f"consistent with {built.latest_size}; built and verified in {seconds:.2f} s\n"
            f"  verify offline: immutrail audit verify {output} --vkey '{ledger.vkey}'",
            markup=False,
        )


# --- report -------------------------------------------------------------------------------------


class ReportFormat(StrEnum):
    html = "html"
    json = "json"
    csv = "csv"


_REPORT_SUFFIXES = {".html": "html", ".htm": "html", ".json": "json", ".csv": "csv"}


def _report_bytes(
    report: Report, output: Path, output_format: ReportFormat | None
) -> tuple[str, bytes]:
    kind = str(output_format) if output_format else _REPORT_SUFFIXES.get(output.suffix.lower())
    if kind is None:
        raise AuditInputError(
            f"cannot tell the format from {output.name!r}: name it .html, .json or .csv, "
            "or pass --output-format"
        )
    if kind == "html":
        return kind, render_html(report).encode("utf-8")
    if kind == "csv":
        return kind, render_csv(report).encode("utf-8")
    return kind, (json.dumps(render_json(report), indent=2, ensure_ascii=False) + "\n").encode()


@audit_app.command("report")
def report_command(
    framework: Annotated[
        str, typer.Option("--framework", help=f"One of: {', '.join(FRAMEWORKS)}.")
    ],
    since: FromOption,
    until: ToOption,
    output: Annotated[Path, typer.Option("-o", "--output", help="The report file to write.")],
    env: Annotated[
        str | None, typer.Option("--env", help="Limit to this environment [default: all].")
    ] = None,
    output_format: Annotated[
        ReportFormat | None,
        typer.Option("--output-format", help="The file's format [default: from the suffix of -o]."),
    ] = None,
    patch_days: Annotated[
        int,
        typer.Option(
            "--patch-days", help="A critical vulnerability exposed longer is a late patch."
        ),
    ] = DEFAULT_PATCH_DAYS,
    overwrite: Annotated[bool, typer.Option(help="Replace OUTPUT if it exists.")] = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Write a compliance report for FRAMEWORK over the window: each control's evidence
    (counts and cited ledger events), what is missing, the exceptions (overrides, drift, late
    patches, unauthenticated actors) and the metrics, with charts (docs/reports.md).

    The report is as of the latest checkpoint (signed now when the ledger has grown and the key
    is here). Exit 0 written, 2 bad input (unknown framework, bad window, existing file: nothing
    written), 3 the ledger or the image store cannot be read.
    """
    with errors_to_exit_codes():
        check_output(output, overwrite)
        # A window wider than the limit is refused before the ledger is opened.
        check_span(
            time_us(normalize_moment(since, "--from")), time_us(normalize_moment(until, "--to"))
        )
        started = time.perf_counter()
        caller = Caller(as_, token, key_file, passphrase_file)
        with authorized(home, db, Action.AUDIT_EXPORT, caller=caller) as (ledger, _):
            anchor, _, signed = choose_checkpoints(ledger, None)
            source = LedgerSource(ledger, optional_store(home), anchor.size)
            report = build_report(source, framework, since, until, env, patch_days=patch_days)
        kind, data = _report_bytes(report, output, output_format)
        _write_new(output, data, overwrite)
        seconds = time.perf_counter() - started
        summary = {
            "file": str(output),
            "output_format": kind,
            "bytes": len(data),
            "sha256": "sha256:" + hashlib.sha256(data).hexdigest(),
            "report_digest": report_digest(report),
            "framework": report.framework,
            "from": report.start,
            "to": report.end,
            "environment": report.environment,
            "basis": report.basis.to_json(),
            "signed_checkpoint": signed,
            "controls": report.status_counts(),
            "exceptions": report.exception_counts(),
            "seconds": round(seconds, 3),
        }
        if fmt is Format.json:
            emit_json(summary)
            return
        statuses = ", ".join(f"{n} {s}" for s, n in report.status_counts().items())
        exceptions = ", ".join(f"{k} {n}" for k, n in report.exception_counts().items())
        stdout.print(
            f"wrote {output} ({kind}, {len(data)} bytes): {report.framework_title}\n"
            f"  {report.start} to {report.end}, {report.environment or 'all environments'}; "
            f"as of tree size {report.basis.tree_size}"
            + (" (checkpoint signed now)" if signed else "")
            + f"\n  controls: {statuses}\n  exceptions: {exceptions or 'none'}",
            markup=False,
        )


# --- verify -------------------------------------------------------------------------------------


@audit_app.command("verify")
def verify_command(
    bundle: Annotated[Path, typer.Argument(metavar="FILE", help="An evidence bundle.")],
    vkey: Annotated[
        str | None,
        typer.Option(
            "--vkey",
            help="The ledger's verifier key (name+hash+base64, as `ledger vkey` prints), or "
            "@FILE holding it [default: trust the key in the bundle, on first use].",
        ),
    ] = None,
    witness: Annotated[
        list[Path] | None,
        typer.Option(
            parser=named_path,
            help="A witness folder (or checkpoint file) that must hold the bundle's "
            "checkpoint; its vkey file is trusted when --vkey is not given (repeatable).",
        ),
    ] = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Check every signature, proof and digest in FILE, then re-derive the answer from its
    events and compare. Needs no home, no database and no network.

    Exit 0 verified, 1 does not verify (every failing place is named), 2 bad input
    (unreadable file, malformed --vkey).
    """
    with errors_to_exit_codes():
        data = read_bundle_file(bundle)
        report = verify_bundle(data, vkey=vkey, witnesses=witness or [])
        if fmt is Format.json:
            out = report.to_json()
            out["file"] = str(bundle)
            out["checkpoint_root"] = (
                b64(report.checkpoint_root) if report.checkpoint_root is not None else None
            )
            emit_json(out)
        else:
            _print_report(bundle, report)
        if not report.ok:
            raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))


def _print_report(path: Path, report: BundleReport) -> None:
    if not report.ok:
        stdout.print(
            f"[bold red]FAILED[/]: {escape(str(path))} does not verify "
            f"({len(report.problems)} problem(s))",
            markup=True,
        )
        for problem in report.problems:
            stdout.print(f"  {problem.where}: {problem.message}", markup=False)
        return
    trust = {
        "vkey": "signed by the key given with --vkey",
        "witness": "signed by the key the witness folder holds",
        TRUST_TOFU: "signed by the key named in the bundle (trust on first use: pass --vkey "
        "to check it is the ledger you expect)",
    }[report.trust]
    answer = report.answer or {}
    stdout.print(f"[bold green]ok[/]: {escape(str(path))} verifies", markup=True)
    stdout.print(
        f"  checkpoint    {report.origin} size {report.checkpoint_size}, {trust}\n"
        f"  consistency   size {report.checkpoint_size} is a prefix of size {report.latest_size}"
        + (f"; {report.witnessed} witnessed checkpoint(s) agree" if report.witnessed else "")
        + f"\n  events        {report.events} events, each proven included; "
        f"{report.event_signatures} actor signatures\n"
        f"  attestations  {report.attestations} (digests match the ledger; "
        f"{report.dsse_signatures} DSSE signatures)\n"
        f"  keys          {report.keys}, each announced by a key.created in the bundle\n"
        f"  answer        re-derived from the events: identical ({_answer_size(answer)})",
        markup=False,
    )


def _answer_size(answer: Mapping[str, Any]) -> str:
    kind = answer.get("kind")
    if kind == "at":
        running = len(answer.get("instances") or [])
        return f"{running} instance(s) in {answer.get('environment')} at {answer.get('at')}"
    if kind == "changes":
        return f"{len(answer.get('changes') or [])} change(s) in {answer.get('environment')}"
    return f"trace of {answer.get('ref')}: {len(answer.get('timeline') or [])} events"


# --- text output --------------------------------------------------------------------------------


def _print_answer(answer: Answer, fmt: Format) -> None:
    if fmt is Format.json:
        emit_json(answer.data)
        return
    data = answer.data
    if data["kind"] == "at":
        _print_at(data)
    elif data["kind"] == "trace":
        _print_trace(data)
    else:
        _print_changes(data)


def _print_at(data: Mapping[str, Any]) -> None:
    instances = data["instances"]
    stdout.print(
        f"[bold]{escape(data['environment'])}[/] at {escape(data['at'])}: "
        f"{len(instances)} instance(s) running (ledger size {data['as_of_size']})",
        markup=True,
    )
    if not instances:
        return
    table = Table("instance", "image", "deployed by", "created", "ended", "drift", box=None)
    for row in instances:
        deployment = row["deployment"] or {}
        ended = row["ended"][0] if row["ended"] else None
        table.add_row(  # every cell comes from the ledger: plain text, never markup
            Text(row["instance"]),
            Text(_short(row["digest"])),
            Text(str(deployment.get("actor", "-"))),
            Text(str(row["created"]["time"])),
            Text(f"{ended['time']} ({ended['type'].split('.')[-1]})" if ended else "running"),
            str(sum(len(d["findings"]) for d in row["drift"])),
        )
    stdout.print(table)
    for row in instances:
        stdout.print(
            f"\n{row['instance']}  service {row['service']}  image {row['digest']}",
            markup=False,
        )
        _print_image(row["image"])
        deployment = row["deployment"]
        if deployment:
            end = deployment["end"]
            stdout.print(
                f"  deployment  {deployment['deployment']} ({deployment['strategy']}) "
                f"{_when(deployment)}"
                + (f", {end['type']} at {end['time']}" if end else ", not finished"),
                markup=False,
            )
        for drift in row["drift"]:
            for finding in drift["findings"]:
                stdout.print(
                    f"  drift       {finding.get('kind')} {finding.get('path') or ''} "
                    f"({finding.get('severity')}, {finding.get('control')}) "
                    f"[#{drift['index']}]",
                    markup=False,
                )


def _print_image(image: Mapping[str, Any]) -> None:
    lines = []
    build = image["build"]
    if build:
        lines.append(
            f"  built       {build['repository']}@{_short(build['commit'])} "
            f"({build.get('branch') or '-'}) {_when(build)}"
        )
    for item in image["provenance"]:
        lines.append(f"  provenance  {item['artifact']} [#{item['attached_index']}]")
    scan = image["scan"]
    if scan:
        counts = scan.get("counts") or {}
        shown = ", ".join(f"{k} {n}" for k, n in counts.items() if n) or "no findings"
        lines.append(f"  scan        {shown} {_when(scan)}")
    baseline = image["baseline"]
    if baseline:
        verdict = "passed" if baseline["passed"] else "FAILED"
        failed = ", ".join(baseline.get("failed") or [])
        lines.append(
            f"  baseline    {verdict}"
            + (f" (failed: {failed})" if failed else "")
            + f" {_when(baseline)}"
        )
    for test in image["tests"]:
        lines.append(f"  test        {test['name']} {test['result']} {_when(test)}")
    for signature in image["signatures"]:
        lines.append(f"  signed      by {signature['signer']} {_when(signature)}")
    for approval in image["approvals"]:
        lines.append(
            f"  approved    by {approval['approver']} for {approval['environment']} "
            f"{_when(approval)}"
        )
    promotion = image.get("promotion")
    if promotion:
        verdict = "BREAK-GLASS override" if promotion["override"] else "allowed"
        reason = f" ({promotion['override_reason']})" if promotion["override_reason"] else ""
        failed = ", ".join(promotion["failed_checks"])
        lines.append(
            f"  promoted    {verdict}{reason} {_when(promotion)}"
            + (f"; failed checks: {failed}" if failed else "")
        )
    rollback = image.get("rollback")
    if rollback:
        lines.append(f"  rolled back from {_short(rollback['from'])} {_when(rollback)}")
    for line in lines:
        stdout.print(line, markup=False)


def _print_trace(data: Mapping[str, Any]) -> None:
    stdout.print(
        f"trace of {data['ref']}: image {data['digest']} (ledger size {data['as_of_size']})",
        markup=False,
    )
    _print_image(data["image"])
    for promotion in data["promotions"]:
        verdict = (
            "override"
            if promotion["override"]
            else "allowed"
            if promotion["allowed"]
            else "REFUSED"
        )
        stdout.print(
            f"  promotion   {promotion['environment']}: {verdict} {_when(promotion)}",
            markup=False,
        )
    for row in data["instances"]:
        ended = row["ended"][0] if row["ended"] else None
        stdout.print(
            f"  instance    {row['instance']} in {row['environment']}: created "
            f"{row['created']['time']}, "
            + (f"{ended['type']} {ended['time']}" if ended else "still running"),
            markup=False,
        )
    table = Table("index", "time", "type", "actor", "subject", box=None)
    for item in data["timeline"]:
        table.add_row(
            str(item["index"]),
            Text(item["time"]),
            Text(item["type"]),
            Text(item["actor"]),
            Text(item["subject"]),
        )
    stdout.print(table)


def _print_changes(data: Mapping[str, Any]) -> None:
    rows: Sequence[Mapping[str, Any]] = data["changes"]
    counts = ", ".join(f"{k} {n}" for k, n in data["counts"].items()) or "none"
    stdout.print(
        f"[bold]{escape(data['environment'])}[/] from {escape(data['from'])} to "
        f"{escape(data['to'])}: {len(rows)} change(s) ({escape(counts)})",
        markup=True,
    )
    table = Table("index", "time", "category", "type", "actor", "subject", box=None)
    for row in rows:
        category = row["category"]
        alarming = category in ("override", "promotion-refused", "deployment-failed", "refused")
        table.add_row(
            str(row["index"]),
            Text(row["time"]),
            Text(category, style="bold red" if alarming else ""),
            Text(row["type"]),
            Text(row["actor"]),
            Text(row["subject"]),
        )
    stdout.print(table)
