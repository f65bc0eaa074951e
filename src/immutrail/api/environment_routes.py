"""``/api/v1/environments``: environments, each service's desired state and declaration, and
recent deployments, all replayed from the ledger (the truth; the desired-state git repository
is not read or repaired here). Needs ``ledger.read``: nothing here goes beyond the events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request

from immutrail.access import Action, Identity
from immutrail.artifacts.store import STORE_DIR, Store
from immutrail.audit import vocabulary as v
from immutrail.deploy.declaration import EVENT_DECLARED
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter
from immutrail.policy.desired import EVENT_PROMOTION, replay

from .auth import LedgerDep, Permit
from .ledger_routes import read_event
from .models import (
    ENVIRONMENT_PATTERN,
    DeclarationOut,
    DeploymentEnd,
    DeploymentList,
    DeploymentOut,
    DesiredOut,
    EnvironmentList,
    EnvironmentOut,
    EnvironmentSummary,
    ServiceOut,
    Stamp,
)
from .problems import NotFound
from .responses import errors
from .settings import settings_of

router = APIRouter(prefix="/api/v1/environments", tags=["environments"])
Reader = Annotated[Identity | None, Depends(Permit(Action.LEDGER_READ))]
Environment = Annotated[str, Path(pattern=ENVIRONMENT_PATTERN, description="e.g. prod")]
_ENDS = (v.DEPLOYMENT_COMPLETED, v.DEPLOYMENT_FAILED, v.DEPLOYMENT_INTERRUPTED)


def services_by_environment(ledger: Ledger) -> dict[str, set[str]]:
    """Every environment a service was declared in or allowed into, with those services."""
    found: dict[str, set[str]] = {}
    for kind in (EVENT_DECLARED, EVENT_PROMOTION):
        for row in ledger.entries(EntryFilter(type=kind)):
            payload = read_event(row).payload
            environment, service = payload.get("environment"), payload.get("service")
            if not isinstance(environment, str) or not isinstance(service, str):
                continue
            if kind == EVENT_PROMOTION and payload.get("allowed") is not True:
                found.setdefault(environment, set())
                continue
            found.setdefault(environment, set()).add(service)
    return found


def _declarations(ledger: Ledger, environment: str) -> dict[str, DeclarationOut]:
    """The latest declaration of each service, as recorded (any event appended by hand that
    does not look like one is passed over, never an error)."""
    found: dict[str, DeclarationOut] = {}
    for row in ledger.entries(EntryFilter(type=EVENT_DECLARED)):
        event = read_event(row)
        payload = event.payload
        service, spec = payload.get("service"), payload.get("spec")
        if payload.get("environment") != environment or not isinstance(service, str):
            continue
        if isinstance(spec, dict):
            found[service] = DeclarationOut(
                spec=spec, declared_by=event.actor, declared_at=event.time, ledger_index=row.index
            )
    return found


def _services(ledger: Ledger, environment: str) -> list[str]:
    services = services_by_environment(ledger).get(environment)
    if services is None:
        raise NotFound("the ledger records no such environment")
    return sorted(services)


@router.get(
    "", summary="List environments", response_model=EnvironmentList, responses=errors(401, 403)
)
def list_environments(ledger: LedgerDep, identity: Reader) -> EnvironmentList:
    """Every environment the ledger knows of (a service declared there, or a promotion decided
    for it) and its services. Needs `ledger.read`."""
    return EnvironmentList(
        environments=[
            EnvironmentSummary(name=name, services=sorted(services))
            for name, services in sorted(services_by_environment(ledger).items())
        ]
    )


@router.get(
    "/{environment}",
    summary="Desired state per service",
    response_model=EnvironmentOut,
    responses=errors(401, 403, 404, 422),
)
def get_environment(
    request: Request, ledger: LedgerDep, identity: Reader, environment: Environment
) -> EnvironmentOut:
    """Per service: the digest the gate allowed there (with who promoted it, the policy, and
    what a rollback returns to) and the latest declaration. Needs `ledger.read`."""
    services = _services(ledger, environment)
    settings = settings_of(request.app)
    # Without a store yet, images are shown untagged (the store is only read for tags).
    store = settings.store() or Store(settings.home / STORE_DIR)
    declarations = _declarations(ledger, environment)
    out = []
    for service in services:
        desired = replay(ledger, store, environment, service)
        declaration = declarations.get(service)
        out.append(
            ServiceOut(
                service=service,
                desired=None if desired is None else DesiredOut.model_validate(desired.to_json()),
                declaration=declaration,
            )
        )
    return EnvironmentOut(name=environment, services=out)


@router.get(
    "/{environment}/deployments",
    summary="Recent deployments",
    response_model=DeploymentList,
    responses=errors(401, 403, 404, 422),
)
def list_deployments(
    ledger: LedgerDep,
    identity: Reader,
    environment: Environment,
    limit: Annotated[int, Query(ge=1, le=200, description="At most this many, newest first.")] = 20,
) -> DeploymentList:
    """The latest deployments in the environment, newest first, each with how it ended
    (`deployment.completed`, `.failed` or `.interrupted`; null while it runs). Needs
    `ledger.read`."""
    found: list[DeploymentOut] = []
    for service in _services(ledger, environment):
        ends: dict[str, DeploymentEnd] = {}
        starts = []
        for row in ledger.entries(EntryFilter(subject=f"{environment}/{service}")):
            event = read_event(row)
            deployment = event.payload.get("deployment")
            if not isinstance(deployment, str):
                continue
            if event.type == v.DEPLOYMENT_STARTED:
                starts.append((row.index, event))
            elif event.type in _ENDS:
                reason = event.payload.get("reason")
                ends[deployment] = DeploymentEnd(
                    index=row.index,
                    time=event.time,
                    actor=event.actor,
                    type=event.type,
                    reason=reason if isinstance(reason, str) else None,
                )
        for index, event in starts:
            payload = event.payload
            deployment = str(payload["deployment"])
            found.append(
                DeploymentOut(
                    deployment=deployment,
                    service=service,
                    digest=_text(payload.get("digest")),
                    strategy=_text(payload.get("strategy")),
                    reason=_text(payload.get("reason")),
                    started=Stamp(index=index, time=event.time, actor=event.actor),
                    end=ends.get(deployment),
                )
            )
    found.sort(key=lambda d: d.started.index, reverse=True)
    return DeploymentList(environment=environment, deployments=found[:limit])


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None
