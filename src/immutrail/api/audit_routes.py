"""``/api/v1/audit``: the auditor's three questions (``audit.read``) and evidence bundles that
prove their answers offline (``audit.export``); the same answers as ``immutrail audit``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from immutrail.access import Action, Identity
from immutrail.audit import AtQuery, ChangesQuery, TraceQuery, run_query
from immutrail.audit.bundle import build_bundle
from immutrail.audit.queries import Query as AuditQuery
from immutrail.audit.queries import at_query, changes_query, trace_query
from immutrail.audit.reading import LedgerSource
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter

from .auth import LedgerDep, Permit
from .models import ENVIRONMENT_PATTERN, RFC3339_PATTERN, AuditAnswer
from .problems import NotFound
from .responses import errors
from .settings import settings_of

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])
Auditor = Annotated[Identity | None, Depends(Permit(Action.AUDIT_READ))]
Exporter = Annotated[Identity | None, Depends(Permit(Action.AUDIT_EXPORT))]
Env = Annotated[str, Query(pattern=ENVIRONMENT_PATTERN, description="The environment.")]
Moment = Annotated[str, Query(pattern=RFC3339_PATTERN, description="RFC 3339.")]
AsOf = Annotated[
    int | None,
    Query(
        ge=0,
        le=2**62,
        description="Answer as of this stored checkpoint's size [default: the latest, signed "
        "now if the ledger grew].",
    ),
]


def at_params(env: Env, time: Moment) -> AtQuery:
    return at_query(time, env)


def trace_params(
    ref: Annotated[
        str,
        Query(min_length=1, max_length=1024, description="An image digest or an instance id."),
    ],
) -> TraceQuery:
    return trace_query(ref)


def changes_params(
    env: Env,
    since: Annotated[str, Query(alias="from", pattern=RFC3339_PATTERN, description="From.")],
    until: Annotated[str, Query(alias="to", pattern=RFC3339_PATTERN, description="To.")],
) -> ChangesQuery:
    return changes_query(env, since, until)


def _known(ledger: Ledger, query: AuditQuery) -> None:
    """A trace of something the ledger never mentions is a 404, not a bad request."""
    if isinstance(query, TraceQuery) and not any(
        ledger.entries(EntryFilter(subject=query.ref, limit=1))
    ):
        raise NotFound("the ledger holds nothing about that reference")


def _answer(request: Request, ledger: Ledger, query: AuditQuery) -> AuditAnswer:
    _known(ledger, query)
    answer = run_query(query, LedgerSource(ledger, settings_of(request.app).store()))
    return AuditAnswer(query=query.to_json(), answer=answer.data)


def _evidence(request: Request, ledger: Ledger, query: AuditQuery, as_of: int | None) -> Response:
    _known(ledger, query)
    built = build_bundle(ledger, settings_of(request.app).store(), query, as_of=as_of)
    kind = query.to_json()["kind"]
    return Response(
        built.data,
        media_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="evidence-{kind}.json"',
            "Cache-Control": "no-store",
        },
    )


_BUNDLE = {
    200: {
        "description": "The evidence bundle (docs/evidence-bundle.md): canonical JSON, verified "
        "before it is sent; check it offline with `immutrail audit verify FILE --vkey …`.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    },
    **errors(400, 401, 403, 404, 422),
}


@router.get(
    "/at",
    summary="What ran in an environment at a moment",
    response_model=AuditAnswer,
    responses=errors(400, 401, 403, 422),
)
def audit_at(
    request: Request,
    identity: Auditor,
    ledger: LedgerDep,
    query: Annotated[AtQuery, Depends(at_params)],
) -> AuditAnswer:
    """Every instance running in `env` at `time`, with its image's evidence as it stood at
    deployment. Needs `audit.read`."""
    return _answer(request, ledger, query)


@router.get(
    "/trace",
    summary="The chain of an image or instance",
    response_model=AuditAnswer,
    responses=errors(400, 401, 403, 404, 422),
)
def audit_trace(
    request: Request,
    identity: Auditor,
    ledger: LedgerDep,
    query: Annotated[TraceQuery, Depends(trace_params)],
) -> AuditAnswer:
    """From commit to destruction: build, scan, baseline, tests, signatures, approvals,
    promotions, deployments, instances. Needs `audit.read`."""
    return _answer(request, ledger, query)


@router.get(
    "/changes",
    summary="Every change in an environment in a window",
    response_model=AuditAnswer,
    responses=errors(400, 401, 403, 422),
)
def audit_changes(
    request: Request,
    identity: Auditor,
    ledger: LedgerDep,
    query: Annotated[ChangesQuery, Depends(changes_params)],
) -> AuditAnswer:
    """Promotions (refused and overridden ones too), rollbacks, declarations, deployments,
    instances, traffic, drift and policy changes. Needs `audit.read`."""
    return _answer(request, ledger, query)


@router.get(
    "/at/evidence",
    summary="Evidence bundle for an `at` question",
    response_class=Response,
    responses=_BUNDLE,
)
def evidence_at(
    request: Request,
    identity: Exporter,
    ledger: LedgerDep,
    query: Annotated[AtQuery, Depends(at_params)],
    as_of: AsOf = None,
) -> Response:
    """Needs `audit.export`."""
    return _evidence(request, ledger, query, as_of)


@router.get(
    "/trace/evidence",
    summary="Evidence bundle for a trace",
    response_class=Response,
    responses=_BUNDLE,
)
def evidence_trace(
    request: Request,
    identity: Exporter,
    ledger: LedgerDep,
    query: Annotated[TraceQuery, Depends(trace_params)],
    as_of: AsOf = None,
) -> Response:
    """Needs `audit.export`."""
    return _evidence(request, ledger, query, as_of)


@router.get(
    "/changes/evidence",
    summary="Evidence bundle for a change log",
    response_class=Response,
    responses=_BUNDLE,
)
def evidence_changes(
    request: Request,
    identity: Exporter,
    ledger: LedgerDep,
    query: Annotated[ChangesQuery, Depends(changes_params)],
    as_of: AsOf = None,
) -> Response:
    """Needs `audit.export`."""
    return _evidence(request, ledger, query, as_of)
