"""The UI's routes: log in and out, the pages, the evidence bundle download.

Every page authenticates the session and authorizes ``audit.read`` (the bundle ``audit.export``
too, a raw ledger entry ``ledger.read``) before it reads anything else, parses its parameters
only then, and answers an unknown path the same way: so a caller without access learns nothing
about what exists. Handlers are plain functions (FastAPI runs them in its thread pool) because
the ledger's storage is blocking.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import RedirectResponse

from immutrail.access import Action, authorize
from immutrail.access.errors import AccessDenied, AccessError, AccessInputError, AuthenticationError
from immutrail.api.settings import ServerSettings, settings_of
from immutrail.artifacts.errors import ArtifactError
from immutrail.artifacts.store import Store
from immutrail.audit.bundle import build_bundle
from immutrail.audit.errors import AuditInputError
from immutrail.audit.queries import at_query, changes_query, run_query, trace_query
from immutrail.audit.reading import LedgerSource, optional_store
from immutrail.ledger.errors import LedgerError, LedgerInputError
from immutrail.ledger.event import parse_entry
from immutrail.ledger.ledger import Ledger

from . import views
from .chain import build_chain
from .paths import HOME, LOGIN, PREFIX
from .render import STYLESHEET, page, secure
from .session import (
    MAX_TOKEN_CHARS,
    SESSION_COOKIE,
    CsrfRefused,
    LoginRequired,
    Viewer,
    check_form,
    csrf_of,
    end_session,
    identify,
    keep_csrf,
    now,
    safe_next,
    start_session,
    token_of,
    viewer_for,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix=PREFIX, include_in_schema=False)

READ = (Action.AUDIT_READ,)
EXPORT = (Action.AUDIT_READ, Action.AUDIT_EXPORT)
RAW = (Action.AUDIT_READ, Action.LEDGER_READ)

Work = Callable[[Viewer, Ledger, ServerSettings], Response]


def store_of(settings: ServerSettings) -> Store | None:
    return optional_store(settings.home)


def _diagnostics(exc: Exception) -> str:
    described = getattr(exc, "diagnostics", None)
    return str(described()) if callable(described) else str(exc)


def _error(viewer: Viewer | None, status: int, heading: str, message: str) -> Response:
    return page("error.html", status, viewer=viewer, heading=heading, message=message, env=None)


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    response = RedirectResponse(f"{LOGIN}?next={quote(target, safe='')}", status_code=303)
    if request.cookies.get(SESSION_COOKIE):
        end_session(response)  # a token that stopped working: forget it
    return secure(response)


@contextmanager
def _ledger(request: Request) -> Iterator[tuple[ServerSettings, Ledger]]:
    settings = settings_of(request.app)
    with settings.ledger() as ledger:
        yield settings, ledger


def guarded(request: Request, actions: tuple[Action, ...], work: Work) -> Response:
    """Authenticate and authorize first, then ``work``; every failure becomes a page."""
    try:
        token_of(request)  # no session: straight to the login page, without opening the ledger
        with _ledger(request) as (settings, ledger):
            viewer = viewer_for(request, ledger)
            try:
                for action in actions:
                    authorize(viewer.identity, action)
                response = work(viewer, ledger, settings)
                keep_csrf(request, response, viewer.csrf)
                return response
            except AccessDenied as exc:
                return _error(viewer, 403, "Access denied", str(exc))
            except (LedgerInputError, AccessInputError) as exc:
                return _error(viewer, 400, "Cannot answer that", _diagnostics(exc))
            except CsrfRefused:
                return _error(viewer, 403, "Refused", "the form is stale or from another site")
            except (LedgerError, ArtifactError, AccessError) as exc:
                log.warning("UI request %s failed: %s", request.url.path, exc)
                return _error(viewer, 503, "The ledger cannot answer", _diagnostics(exc))
    except LoginRequired:
        return _to_login(request)
    except (LedgerError, ArtifactError, AccessError) as exc:
        # Before authentication: say nothing about the server's files or state.
        log.warning("UI request %s failed before authentication: %s", request.url.path, exc)
        return _error(None, 503, "Unavailable", "the ledger cannot be read; try again later")


def _source(ledger: Ledger, settings: ServerSettings) -> LedgerSource:
    return LedgerSource(ledger, store_of(settings))


# --- assets and sessions ------------------------------------------------------------------------


@router.get("/static/style.css")
def stylesheet() -> Response:
    return secure(Response(STYLESHEET, media_type="text/css"), cache=True)


@router.get("")
def root() -> Response:
    return secure(RedirectResponse(HOME, status_code=303))


def _login_page(
    request: Request, status: int = 200, message: str | None = None, target: str = ""
) -> Response:
    csrf = csrf_of(request)
    response = page(
        "login.html",
        status,
        viewer=None,
        env=None,
        csrf=csrf,
        message=message,
        next=safe_next(target or request.query_params.get("next", "")),
    )
    keep_csrf(request, response, csrf)
    return response


@router.get("/login")
def login_form(request: Request) -> Response:
    return _login_page(request)


@router.post("/login")
def login(
    request: Request,
    token: Annotated[str, Form()] = "",
    csrf: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",  # noqa: A002 - the form field's name
) -> Response:
    try:
        check_form(request, csrf)
    except CsrfRefused:
        return _login_page(request, 403, "The form was stale or sent from another site.", next)
    try:
        if not token.strip() or len(token) > MAX_TOKEN_CHARS:
            raise AuthenticationError("invalid or expired token")
        with _ledger(request) as (_, ledger):
            identity = identify(request, ledger, token)
            authorize(identity, Action.AUDIT_READ)
    except AuthenticationError as exc:
        log.info("UI login refused: %s", exc)
        return _login_page(request, 401, str(exc), next)
    except AccessDenied as exc:
        log.info("UI login refused: %s", exc)
        return _login_page(request, 403, str(exc), next)
    except (LedgerError, AccessError) as exc:
        log.warning("UI login failed: %s", exc)
        return _login_page(request, 503, "The ledger cannot be read; try again later.", next)
    log.info("UI login: %s (token %s)", identity.principal, identity.token_id)
    response = RedirectResponse(safe_next(next), status_code=303)
    start_session(request, response, token, identity)
    return secure(response)


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    try:
        check_form(request, csrf)
    except CsrfRefused:
        return _error(None, 403, "Refused", "the form is stale or from another site")
    response = RedirectResponse(LOGIN, status_code=303)
    end_session(response)
    return secure(response)


# --- pages --------------------------------------------------------------------------------------


@router.get("/")
def home(request: Request) -> Response:
    def work(viewer: Viewer, ledger: Ledger, settings: ServerSettings) -> Response:
        source = _source(ledger, settings)
        return page(
            "home.html",
            viewer=viewer,
            env=None,
            environments=views.environments(source),
            size=source.size,
            identity=viewer.identity.to_dict(),
        )

    return guarded(request, READ, work)


@router.get("/env/{environment}/timeline")
def timeline(request: Request, environment: str) -> Response:
    def work(viewer: Viewer, ledger: Ledger, settings: ServerSettings) -> Response:
        params = request.query_params
        env = views.check_environment_name(environment)
        start, end = views.default_window(now())
        query = changes_query(
            env,
            views.moment_or(params.get("from"), start, "from"),
            views.moment_or(params.get("to"), end, "to"),
        )
        answer = run_query(query, _source(ledger, settings)).data
        category = params.get("category", "")
        rows = [r for r in answer["changes"] if not category or r["category"] == category]
        paged = views.paginate(rows, params.get("page"), params.get("per"))
        return page(
            "timeline.html",
            viewer=viewer,
            env=env,
            answer=answer,
            paged=paged,
            category=category,
            since=views.picker_value(query.since),
            until=views.picker_value(query.until),
            details=views.details_text,
            traceable=views.traceable,
            attention=views.ATTENTION,
            per=params.get("per", ""),
        )

    return guarded(request, READ, work)


@router.get("/env/{environment}/at")
def what_ran(request: Request, environment: str) -> Response:
    def work(viewer: Viewer, ledger: Ledger, settings: ServerSettings) -> Response:
        env = views.check_environment_name(environment)
        moment = views.moment_or(request.query_params.get("t"), now(), "the time")
        query = at_query(moment, env)
        answer = run_query(query, _source(ledger, settings)).data
        return page(
            "at.html",
            viewer=viewer,
            env=env,
            answer=answer,
            picker=views.picker_value(query.at),
        )

    return guarded(request, READ, work)


@router.get("/env/{environment}/drift")
def drift(request: Request, environment: str) -> Response:
    def work(viewer: Viewer, ledger: Ledger, settings: ServerSettings) -> Response:
        env = views.check_environment_name(environment)
        reports = views.drift_reports(_source(ledger, settings), env)
        only_open = request.query_params.get("open") == "1"
        shown = [r for r in reports if r.open or not only_open]
        return page(
            "drift.html",
            viewer=viewer,
            env=env,
            reports=shown,
            total=len(reports),
            still_open=sum(1 for r in reports if r.open),
            only_open=only_open,
            size=ledger.head().size,
        )

    return guarded(request, READ, work)


@router.get("/trace")
def trace(request: Request) -> Response:
    def work(viewer: Viewer, ledger: Ledger, settings: ServerSettings) -> Response:
        query = trace_query(request.query_params.get("ref", "").strip())
        answer = run_query(query, _source(ledger, settings)).data
        return page(
            "trace.html",
            viewer=viewer,
            env=None,
            answer=answer,
            chain=build_chain(answer),
        )

    return guarded(request, READ, work)


@router.get("/entry/{index}")
def entry(request: Request, index: str) -> Response:
    def work(viewer: Viewer, ledger: Ledger, settings: ServerSettings) -> Response:
        if not index.isdigit() or len(index) > 18:
            raise AuditInputError(f"{index!r} is not a ledger index")
        row = ledger.entry(int(index))
        event = parse_entry(row.data)
        return page(
            "entry.html",
            viewer=viewer,
            env=None,
            index=row.index,
            event=event,
            leaf_hash=row.leaf_hash.hex(),
            payload=json.dumps(event.payload, indent=2, sort_keys=True, ensure_ascii=False),
            traceable=views.traceable(event.type, event.subject),
            size=ledger.head().size,
        )

    return guarded(request, RAW, work)


@router.post("/bundle")
def bundle(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "",
    env: Annotated[str, Form()] = "",
    at: Annotated[str, Form()] = "",
    ref: Annotated[str, Form()] = "",
    since: Annotated[str, Form(alias="from")] = "",
    until: Annotated[str, Form(alias="to")] = "",
) -> Response:
    form = {"kind": kind, "env": env, "at": at, "ref": ref, "from": since, "to": until}

    def work(viewer: Viewer, ledger: Ledger, settings: ServerSettings) -> Response:
        check_form(request, csrf)
        query = views.bundle_query(form)
        built = build_bundle(ledger, store_of(settings), query)
        log.info(
            "UI evidence bundle for %s: %s, %d bytes", viewer.principal, query, len(built.data)
        )
        name = views.bundle_filename(query)
        response = Response(
            built.data,
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
        return secure(response)

    return guarded(request, EXPORT, work)


def not_found(request: Request) -> Response:
    """Any other path: authenticate first, so a missing page and a forbidden one look alike."""

    def work(viewer: Viewer, ledger: Ledger, settings: ServerSettings) -> Response:
        return _error(viewer, 404, "Not found", "there is no such page")

    return guarded(request, READ, work)
