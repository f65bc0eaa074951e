"""`immutrail ledger …`: append, checkpoint, read, prove and verify the tamper-evident ledger."""

from __future__ import annotations

import base64
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from immutrail.access.actor import Actor
from immutrail.access.errors import AccessInputError
from immutrail.access.model import Action
from immutrail.crypto.keys import load_private_key
from immutrail.files import read_capped, read_capped_text
from immutrail.ledger.errors import EventFormatError, LedgerInputError
from immutrail.ledger.event import Event, parse_entry, sign_event, time_us
from immutrail.ledger.proofs import b64
from immutrail.ledger.storage.interface import EntryFilter

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
    load_json_object,
    named_path,
    progress,
    stdout,
)

MAX_PAYLOAD_FILE = 1024 * 1024
MAX_BATCH_FILE = 256 * 1024 * 1024
MAX_INDEX = 2**63 - 1
"""The largest index a store can hold (a signed 64-bit integer in SQLite and PostgreSQL)."""

app = typer.Typer(
    no_args_is_help=True,
    help=f"The tamper-evident ledger (RFC 6962 Merkle log, C2SP checkpoints). {EXIT_CODES_HELP}",
)
prove_app = typer.Typer(no_args_is_help=True, help="RFC 6962 proofs (hashes in base64).")
app.add_typer(prove_app, name="prove")


def _key_passphrase() -> bytes | None:
    return os.environb.get(b"IMMUTRAIL_KEY_PASSPHRASE") or None  # the bytes as given


def _read_payload(value: str) -> dict[str, Any]:
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = read_capped_text(path, MAX_PAYLOAD_FILE)
        except OSError as exc:
            raise LedgerInputError(
                f"cannot read the payload file {path}: {exc.strerror or exc}"
            ) from exc
        except UnicodeDecodeError as exc:
            raise LedgerInputError(f"the payload file {path} is not UTF-8: {exc}") from exc
        return load_json_object(text, f"payload file {path}")
    return load_json_object(value, "--payload")


def _read_batch(source: str) -> list[Event]:
    """Parse and validate a whole JSONL batch before anything is written."""
    if source == "-":
        data = sys.stdin.buffer.read(MAX_BATCH_FILE + 1)
        if len(data) > MAX_BATCH_FILE:
            raise LedgerInputError(f"the batch is larger than {MAX_BATCH_FILE} bytes")
    else:
        path = Path(source)
        try:
            data = read_capped(path, MAX_BATCH_FILE)
        except OSError as exc:
            raise LedgerInputError(
                f"cannot read the batch file {path}: {exc.strerror or exc}"
            ) from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LedgerInputError(f"the batch is not UTF-8: {exc}") from exc
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            events.append(Event.from_dict(load_json_object(line, f"line {number}"), line=number))
        except EventFormatError:
            raise
        except LedgerInputError as exc:
            raise EventFormatError(str(exc)) from exc
    if not events:
        raise LedgerInputError("the batch holds no events")
    return events


@app.command()
def append(
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
    event_type: Annotated[
        str | None, typer.Option("--type", help="Dotted event type, e.g. artifact.built.")
    ] = None,
    subject: Annotated[
        str | None, typer.Option(help="What it is about: a digest, an instance id, an env.")
    ] = None,
    actor: Annotated[
        str | None,
        typer.Option(help="Setup mode only: the principal id that acted (else: the caller)."),
    ] = None,
    payload: Annotated[str, typer.Option(help="A JSON object, or @FILE holding one.")] = "{}",
    time: Annotated[
        str | None, typer.Option(help="RFC 3339 time of the event [default: now].")
    ] = None,
    batch: Annotated[
        str | None,
        typer.Option(
            help="A JSONL file (or - for stdin), one event object per line, "
            "appended atomically as one batch."
        ),
    ] = None,
    sign_key: Annotated[
        Path | None,
        typer.Option(
            help="Setup mode only: the actor's private key (PEM; passphrase from "
            "IMMUTRAIL_KEY_PASSPHRASE): each event carries the actor's DSSE signature."
        ),
    ] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Append one event, or a batch; prints the index, id and leaf hash of each.

    Once access control is set up it needs ledger.append (admin): the actor of every event is
    the caller (a batch naming anyone else is refused, exit 2) and a key-authenticated caller's
    events carry its signature. Exit 1 not authenticated or not allowed (nothing appended).
    """
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        with authorized(home, db, Action.LEDGER_APPEND, caller=caller) as (ledger, who):
            events = _events(who, event_type, subject, actor, payload, time, batch, sign_key)
            results = ledger.append_batch(events)
        rows = [{"index": r.index, "id": r.id, "leaf_hash": b64(r.leaf_hash)} for r in results]
        if fmt is Format.json:
            emit_json(rows[0] if batch is None else {"appended": rows})
        elif batch is None:
            stdout.print(f"appended entry {rows[0]['index']}  id {rows[0]['id']}", markup=False)
        else:
            stdout.print(f"appended {len(rows)} entries, {rows[0]['index']}..{rows[-1]['index']}")


def _events(
    who: Actor,
    event_type: str | None,
    subject: str | None,
    actor: str | None,
    payload: str,
    time: str | None,
    batch: str | None,
    sign_key: Path | None,
) -> list[Event]:
    if who.authenticated and (actor is not None or sign_key is not None):
        raise AccessInputError(
            "--actor and --sign-key are for setup mode only: the actor is who authenticated",
            hint="Drop them: a key-authenticated caller's events are signed with its key.",
        )
    if batch is not None:
        if any(v is not None for v in (event_type, subject, actor, time)):
            raise LedgerInputError("--batch cannot be combined with single-event options")
        events = _read_batch(batch)
        strangers = sorted({e.actor for e in events if who.authenticated and e.actor != who.name})
        if strangers:
            raise AccessInputError(
                f"you are authenticated as {who.name}: the batch names other actors "
                f"({', '.join(strangers)})"
            )
    else:
        name = who.name if who.authenticated else actor
        missing = [
            n
            for n, v in (("--type", event_type), ("--subject", subject), ("--actor", name))
            if v is None
        ]
        if missing:
            raise LedgerInputError(f"missing {', '.join(missing)} (or use --batch FILE)")
        events = [
            Event.from_dict(
                {
                    "type": event_type,
                    "subject": subject,
                    "actor": name,
                    "payload": _read_payload(payload),
                    **({"time": time} if time else {}),
                }
            )
        ]
    if sign_key is not None:
        key = load_private_key(sign_key, _key_passphrase())
        events = [sign_event(e, key) for e in events]
    return events


@app.command()
def checkpoint(
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
    publish: Annotated[
        Path | None,
        typer.Option(
            parser=named_path,
            help="Also add the checkpoint to this witness folder (or git work tree).",
        ),
    ] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Sign the current tree head as a C2SP checkpoint and print the signed note.

    Needs ledger.read once access control is set up: a checkpoint changes no entry."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        with authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _):
            stored = ledger.checkpoint(publish)
        if fmt is Format.json:
            emit_json(
                {
                    "size": stored.size,
                    "root": b64(stored.root),
                    "note": stored.note,
                    "published": str(publish) if publish else None,
                }
            )
        else:
            sys.stdout.write(stored.note)


@app.command()
def vkey(
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Print the verifier key of the ledger's checkpoints (signed-note name+hash+key form)."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _),
    ):
        if fmt is Format.json:
            emit_json({"origin": ledger.origin, "vkey": ledger.vkey})
        else:
            stdout.print(ledger.vkey, markup=False)


@app.command()
def entry(
    ref: Annotated[str, typer.Argument(help="Entry index, or event id.")],
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
    raw: Annotated[
        bool, typer.Option(help="Print base64 of the exact hashed entry bytes.")
    ] = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Show one event (needs ledger.read once access control is set up)."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        with authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _):
            row = ledger.entry(ledger.resolve(ref))
        if raw:
            encoded = base64.b64encode(row.data).decode()
            if fmt is Format.json:
                emit_json({"index": row.index, "entry": encoded, "leaf_hash": b64(row.leaf_hash)})
            else:
                stdout.print(encoded, markup=False)
            return
        event = parse_entry(row.data)
        if fmt is Format.json:
            emit_json(
                {"index": row.index, "leaf_hash": b64(row.leaf_hash), "event": event.to_dict()}
            )
        else:
            stdout.print(f"entry {row.index}  leaf {b64(row.leaf_hash)}", markup=False)
            sys.stdout.write(json.dumps(event.to_dict(), indent=2, ensure_ascii=False) + "\n")


@app.command("list")
def list_entries(
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
    event_type: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
    subject: Annotated[str | None, typer.Option(help="Only this subject.")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor.")] = None,
    since: Annotated[str | None, typer.Option(help="RFC 3339: at or after.")] = None,
    until: Annotated[str | None, typer.Option(help="RFC 3339: at or before.")] = None,
    start: Annotated[int, typer.Option(min=0, max=MAX_INDEX, help="First index to consider.")] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """List events in ledger order; JSON output is one object per line (JSON Lines).

    Needs ledger.read once access control is set up."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        flt = EntryFilter(
            type=event_type,
            subject=subject,
            actor=actor,
            start=start,
            limit=limit,
            since_us=time_us(since) if since else None,
            until_us=time_us(until) if until else None,
        )
        with authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _):
            rows = ledger.entries(flt)
            if fmt is Format.json:
                for row in rows:
                    emit_json({"index": row.index, "event": parse_entry(row.data).to_dict()})
                return
            table = Table("index", "time", "type", "actor", "subject", box=None)
            for row in rows:
                event = parse_entry(row.data)
                # Types, actors and subjects are whatever was appended: plain text, never markup.
                table.add_row(
                    str(row.index),
                    Text(event.time),
                    Text(event.type),
                    Text(event.actor),
                    Text(event.subject),
                )
            stdout.print(table)


class ProofFormat(StrEnum):
    text = "text"
    json = "json"
    tlog_proof = "tlog-proof"


@prove_app.command("inclusion")
def prove_inclusion(
    ref: Annotated[str, typer.Argument(help="Entry index, or event id.")],
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: Annotated[
        ProofFormat,
        typer.Option("--format", help="text, json, or tlog-proof (C2SP, against a checkpoint)."),
    ] = ProofFormat.text,
    size: Annotated[int | None, typer.Option(min=1, help="Tree size [default: current].")] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """The audit path from an entry to the root of the tree of SIZE entries (ledger.read)."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        with authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _):
            index = ledger.resolve(ref)
            if fmt is ProofFormat.tlog_proof:
                sys.stdout.write(ledger.tlog_proof(index, size).format())
                return
            proof = ledger.inclusion_proof(index, size)
        if fmt is ProofFormat.json:
            emit_json(proof.to_json())
        else:
            data = proof.to_json()
            stdout.print(f"index {data['index']} in tree size {data['size']}")
            stdout.print(f"leaf  {data['leaf_hash']}\nroot  {data['root']}")
            for h in data["proof"]:
                stdout.print(f"  {h}")


@prove_app.command("consistency")
def prove_consistency(
    old: Annotated[int, typer.Argument(min=0, help="The earlier tree size.")],
    new: Annotated[int, typer.Argument(min=0, help="The later tree size.")],
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Prove that the tree of OLD entries is a prefix of the tree of NEW entries (ledger.read)."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        with authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _):
            proof = ledger.consistency_proof(old, new)
        data = proof.to_json()
        if fmt is Format.json:
            emit_json(data)
        else:
            stdout.print(
                f"size {old} -> {new}\nold root  {data['old_root']}\nnew root  {data['new_root']}"
            )
            for h in data["proof"]:
                stdout.print(f"  {h}")


@app.command()
def verify(
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
    witness: Annotated[
        list[Path] | None,
        typer.Option(
            parser=named_path,
            help="A witness folder or checkpoint file the ledger must still extend (repeatable).",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Processes checking entry contents [default: one per core from 50,000 entries].",
            show_default=False,
        ),
    ] = None,
    integrity_only: Annotated[
        bool,
        typer.Option(
            "--integrity-only",
            help="Check hashes, tree, checkpoints, witnesses and actor signatures only: skip "
            "re-validating every entry as a canonical event against its indexed columns and "
            "the derived indexes (several times faster).",
        ),
    ] = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
) -> None:
    """Recompute every entry hash and the tree; check checkpoints, signatures and witnesses.

    By default every entry is also re-validated as the canonical JSON of a valid event that
    agrees with its indexed columns, and the derived indexes are checked. Needs ledger.read
    once access control is set up. Exits 1 and names the first bad place when anything does
    not verify (or when the caller may not read).
    """
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        with authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _):
            total = ledger.head().size
            with progress("verifying", total) as bar:
                report = ledger.verify(
                    witness or [],
                    lambda done, _all: bar.update(bar.task_ids[0], completed=done),
                    workers=workers,
                    entry_format=not integrity_only,
                )
        if fmt is Format.json:
            emit_json(
                {
                    "ok": report.ok,
                    "size": report.size,
                    "root": b64(report.root),
                    "entries": report.entries,
                    "signatures_verified": report.signatures,
                    "signatures_unknown_key": report.unknown_signers,
                    "nodes": report.nodes,
                    "checkpoints": report.checkpoints,
                    "witnessed": report.witnessed,
                    "entry_format_checked": report.entry_format,
                    "first_bad_index": report.first_bad_index,
                    "problems": [p.to_json() for p in report.problems],
                }
            )
        elif report.ok:
            stdout.print(
                f"[green]ok[/]: {report.entries} entries, {report.nodes} tree nodes, "
                f"{report.checkpoints} checkpoints, {report.witnessed} witnessed checkpoints, "
                f"{report.signatures} actor signatures"
                f"{'' if report.entry_format else ' (integrity only)'}; "
                f"root {b64(report.root)}",
                markup=True,
            )
        else:
            stdout.print(f"[red]FAILED[/]: {len(report.problems)} problem(s)", markup=True)
            for p in report.problems:  # a message may quote stored bytes
                stdout.print(f"  {p.where}: {p.message}", markup=False)
        if not report.ok:
            raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))
