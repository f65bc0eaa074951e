"""``/api/v1/ledger``: append (``ledger.append``); entries, proofs, checkpoints (``ledger.read``)"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from immutrail.access import Action, Identity
from immutrail.crypto.canonical import parse_strict_json
from immutrail.ledger.errors import EventFormatError, LedgerInputError, VerificationError
from immutrail.ledger.event import Event, normalize_time, parse_entry, time_us
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.proofs import b64
from immutrail.ledger.storage.interface import EntryFilter, EntryRow, StoredCheckpoint

from .auth import LedgerDep, Permit, caller
from .models import (
    ENTRY_REF_PATTERN,
    RFC3339_PATTERN,
    Appended,
    AppendIn,
    CheckpointOut,
    ConsistencyProofOut,
    EntryOut,
    EntryPage,
    EventOut,
    InclusionProofOut,
)
from .problems import ApiError, NotFound, PayloadTooLarge
from .responses import errors

MAX_BODY = 256 * 1024
"""Largest append request body: an entry is at most 64 KiB of canonical JSON."""
MAX_PAGE = 1000

router = APIRouter(prefix="/api/v1/ledger", tags=["ledger"])
Reader = Annotated[Identity | None, Depends(Permit(Action.LEDGER_READ))]
Appender = Annotated[Identity | None, Depends(Permit(Action.LEDGER_APPEND))]
EntryRef = Annotated[
    str,
    Path(pattern=ENTRY_REF_PATTERN, description="An entry index, or an event id (UUID)."),
]
Moment = Annotated[str | None, Query(pattern=RFC3339_PATTERN, description="RFC 3339.")]


def read_event(row: EntryRow) -> Event:
    """The stored entry as an event; a stored entry that is not one is damage, not bad input."""
    try:
        return parse_entry(row.data)
    except EventFormatError as exc:
        raise VerificationError(f"entry {row.index} is not a valid event: {exc}") from exc


def entry_out(row: EntryRow) -> EntryOut:
    return EntryOut.of(row, read_event(row))


def resolve(ledger: Ledger, ref: str) -> int:
    """An entry index by index or event id; 404 when the ledger holds no such entry."""
    index = int(ref) if ref.isdigit() else ledger.store.index_of(ref)
    if index is None or not index < ledger.head().size:
        raise NotFound(f"the ledger holds no entry {ref}")
    return index


def latest_checkpoint(ledger: Ledger) -> StoredCheckpoint:
    """The latest signed checkpoint, signed now when the ledger grew past it and this server
    holds the ledger key (once per size: concurrent servers store one and the same)."""
    stored = ledger.checkpoints()
    latest = stored[-1] if stored else None
    if latest is None or latest.size < ledger.head().size:
        try:
            latest = ledger.checkpoint()
        except LedgerInputError:
            if latest is None:
                raise NotFound(
                    "the ledger has no signed checkpoint yet and this server cannot sign one "
                    "(no ledger key in its home): run `immutrail ledger checkpoint`"
                ) from None
    return latest


def checkpoint_out(ledger: Ledger, stored: StoredCheckpoint) -> CheckpointOut:
    return CheckpointOut(
        origin=ledger.origin,
        size=stored.size,
        root=b64(stored.root),
        note=stored.note,
        vkey=ledger.vkey,
        created=stored.created,
    )


# --- append -------------------------------------------------------------------------------------


async def _read_body(request: Request) -> bytes:
    """The request body, refused past :data:`MAX_BODY` even when no Content-Length is sent."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise PayloadTooLarge(f"the request body is larger than {MAX_BODY} bytes")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY:
            raise PayloadTooLarge(f"the request body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _append(ledger: Ledger, identity: Identity, body: AppendIn) -> Appended:
    if "auth" in body.payload:
        raise ApiError("payload.auth is set by the server: it records how you authenticated")
    payload = {**body.payload, "auth": identity.auth_payload()}
    event = Event.create(body.type, identity.principal, body.subject, payload, id=body.id)
    appended = ledger.append(event)
    return Appended(
        index=appended.index,
        id=appended.id,
        leaf_hash=b64(appended.leaf_hash),
        event=EventOut.of(event),
    )


@router.post(
    "/entries",
    status_code=201,
    summary="Append an event as the authenticated caller",
    response_model=Appended,
    responses=errors(400, 401, 403, 409, 413, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AppendIn"}}},
        }
    },
)
async def append_entry(
    request: Request, response: Response, ledger: LedgerDep, identity: Appender
) -> Appended:
    """Append one event. Its `actor` is the caller's principal and its `payload.auth` how the
    caller authenticated (`{"method": "token", "token_id": …}`); neither comes from the body.
    The body is parsed strictly (no duplicate keys, no NaN). Needs `ledger.append`."""
    who = caller(identity)
    data = await _read_body(request)
    try:
        value = parse_strict_json(data)
        body = AppendIn.model_validate(value)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    appended = await run_in_threadpool(_append, ledger, who, body)
    response.headers["Location"] = f"{router.prefix}/entries/{appended.index}"
    return appended


# --- read ---------------------------------------------------------------------------------------


def _moment(text: str | None) -> int | None:
    # Parsed (EventFormatError for 2026-13-01) before time_us, whose fast path takes any
    # normalized-looking text and would fail on it with a bare ValueError.
    return None if text is None else time_us(normalize_time(text, field="time filter"))


@router.get(
    "/entries",
    summary="List entries, paged and filtered",
    response_model=EntryPage,
    responses=errors(400, 401, 403, 422),
)
def list_entries(
    ledger: LedgerDep,
    identity: Reader,
    start: Annotated[int, Query(ge=0, le=2**62, description="First index to consider.")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="At most this many.")] = 100,
    type: Annotated[str | None, Query(max_length=128)] = None,  # noqa: A002 - the field's name
    subject: Annotated[str | None, Query(max_length=1024)] = None,
    actor: Annotated[str | None, Query(max_length=256)] = None,
    since: Moment = None,
    until: Moment = None,
) -> EntryPage:
    """Entries in ledger order from `start`, filtered by type, subject, actor and time (both
    ends included). Needs `ledger.read`."""
    flt = EntryFilter(
        type=type,
        subject=subject,
        actor=actor,
        start=start,
        limit=limit,
        since_us=_moment(since),
        until_us=_moment(until),
    )
    size = ledger.head().size
    rows = [row for row in ledger.entries(flt) if row.index < size]
    full = len(rows) == limit
    return EntryPage(
        entries=[entry_out(row) for row in rows],
        next_start=rows[-1].index + 1 if full and rows[-1].index + 1 < size else None,
        size=size,
    )


@router.get(
    "/entries/{ref}",
    summary="One entry",
    response_model=EntryOut,
    responses=errors(401, 403, 404, 422),
)
def get_entry(ledger: LedgerDep, identity: Reader, ref: EntryRef) -> EntryOut:
    """The entry at an index, or the one holding an event id. Needs `ledger.read`."""
    return entry_out(ledger.entry(resolve(ledger, ref)))


@router.get(
    "/entries/{ref}/inclusion",
    summary="Inclusion proof of an entry",
    response_model=InclusionProofOut,
    responses=errors(400, 401, 403, 404, 422),
)
def inclusion_proof(
    ledger: LedgerDep,
    identity: Reader,
    ref: EntryRef,
    size: Annotated[
        int | None, Query(ge=1, le=2**62, description="Tree size [default: current].")
    ] = None,
) -> InclusionProofOut:
    """The RFC 6962 audit path from the entry to the root of the tree of `size` entries.
    Needs `ledger.read`."""
    proof = ledger.inclusion_proof(resolve(ledger, ref), size)
    return InclusionProofOut.model_validate(proof.to_json())


@router.get(
    "/consistency",
    summary="Consistency proof between two tree sizes",
    response_model=ConsistencyProofOut,
    responses=errors(400, 401, 403, 422),
)
def consistency_proof(
    ledger: LedgerDep,
    identity: Reader,
    old: Annotated[int, Query(ge=0, le=2**62, description="The earlier size.")],
    new: Annotated[
        int | None, Query(ge=0, le=2**62, description="The later size [default: current].")
    ] = None,
) -> ConsistencyProofOut:
    """Proof that the tree of `old` entries is a prefix of the tree of `new`. Needs
    `ledger.read`."""
    newer = ledger.head().size if new is None else new
    if newer > ledger.head().size:
        raise ApiError(f"size {newer} is beyond the ledger's {ledger.head().size} entries")
    return ConsistencyProofOut.model_validate(ledger.consistency_proof(old, newer).to_json())


@router.get(
    "/checkpoint",
    summary="The latest signed checkpoint",
    response_model=CheckpointOut,
    responses=errors(401, 403, 404),
)
def get_checkpoint(ledger: LedgerDep, identity: Reader) -> CheckpointOut:
    """The latest C2SP checkpoint (signed now if the ledger grew past the last one and this
    server holds the ledger key). Needs `ledger.read`; `/tlog/checkpoint` serves the same note
    to anyone."""
    return checkpoint_out(ledger, latest_checkpoint(ledger))
