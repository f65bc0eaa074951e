"""Errors as RFC 9457 problem details, and the map from the project's typed errors to HTTP.

Every error response is ``application/problem+json`` with ``type``, ``title``, ``status`` and
``detail`` (plus ``errors`` for a request that does not match the schema). The families map as
the CLI's exit codes do: an ``*InputError`` is the caller's mistake (400, nothing was written),
a verification failure of the server's own data is a 500 that says so, an unreachable or
uninitialized store is a 503. Details of server-side failures go to the log, not to the caller.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from immutrail.access.errors import AccessDenied, AccessError, AccessInputError, AuthenticationError
from immutrail.artifacts.errors import (
    ArtifactError,
    ArtifactInputError,
    BlobVerificationError,
    NotFoundError,
)
from immutrail.crypto.errors import CryptoError
from immutrail.deploy.errors import DeployInputError
from immutrail.deploy.runtime import RuntimeDriverError
from immutrail.ledger.errors import (
    DuplicateEventError,
    LedgerError,
    LedgerInputError,
    VerificationError,
)
from immutrail.policy.errors import PolicyError, PolicyInputError

log = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:immutrail:problem:"

UNAUTHENTICATED = "missing, invalid or expired token"
"""The one 401 detail: a caller learns nothing about which tokens or principals exist."""

_TITLES: dict[str, str] = {
    "bad-request": "The request is wrong",
    "invalid-request": "The request does not match the API schema",
    "unauthenticated": "Authentication required",
    "forbidden": "Access denied",
    "not-found": "Not found",
    "method-not-allowed": "Method not allowed",
    "conflict": "Conflict",
    "payload-too-large": "Request body too large",
    "ledger-inconsistent": "The ledger does not verify",
    "unavailable": "The ledger or the image store is unavailable",
    "internal": "Internal error",
}
_SLUG_BY_STATUS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    422: "invalid-request",
    503: "unavailable",
}


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = Field(examples=[TYPE_PREFIX + "not-found"])
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    errors: list[ValidationIssue] | None = Field(
        default=None, description="What does not match the schema (422 only)."
    )


class ApiError(Exception):
    """An error the API raises itself: a status, a problem slug and a detail for the caller."""

    status = 400
    slug = "bad-request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class NotFound(ApiError):  # noqa: N818 - named after the HTTP status
    status = 404
    slug = "not-found"


class Unauthenticated(ApiError):  # noqa: N818 - named after the HTTP status
    status = 401
    slug = "unauthenticated"

    def __init__(self) -> None:
        super().__init__(UNAUTHENTICATED, headers={"WWW-Authenticate": 'Bearer realm="immutrail"'})


class PayloadTooLarge(ApiError):  # noqa: N818 - named after the HTTP status
    status = 413
    slug = "payload-too-large"


def problem(
    status: int,
    slug: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": _TITLES[slug],
        "status": status,
        "detail": detail,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def _diagnostics(exc: Exception) -> str:
    diagnostics = getattr(exc, "diagnostics", None)
    return str(diagnostics()) if callable(diagnostics) else str(exc)


# --- handlers -----------------------------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return problem(exc.status, exc.slug, exc.detail, headers=exc.headers)


async def _unauthenticated(request: Request, exc: Exception) -> JSONResponse:
    return await _api_error(request, Unauthenticated())


async def _denied(request: Request, exc: Exception) -> JSONResponse:
    # AccessDenied's text names only the caller, the action and the environment it asked for.
    return problem(403, "forbidden", str(exc))


async def _input(request: Request, exc: Exception) -> JSONResponse:
    return problem(400, "bad-request", _diagnostics(exc))


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    # The store's own message names its folder on the server: say only what was asked for.
    return problem(404, "not-found", "no such image or attestation in the store")


async def _duplicate(request: Request, exc: Exception) -> JSONResponse:
    return problem(409, "conflict", _diagnostics(exc))


async def _inconsistent(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: %s", request.method, request.url.path, _diagnostics(exc))
    return problem(
        500,
        "ledger-inconsistent",
        "the server's ledger or image store does not verify; its operator must run "
        "`immutrail ledger verify` (details are in the server log)",
    )


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s %s: %s", request.method, request.url.path, _diagnostics(exc))
    return problem(
        503,
        "unavailable",
        "the ledger or the image store cannot be read right now (details are in the server log)",
    )


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug = _SLUG_BY_STATUS.get(
        exc.status_code, "bad-request" if exc.status_code < 500 else "internal"
    )
    detail = exc.detail if isinstance(exc.detail, str) else _TITLES[slug]
    return problem(exc.status_code, slug, detail, headers=dict(exc.headers or {}))


def validation_problem(exc: RequestValidationError) -> JSONResponse:
    issues = [
        {
            "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "")),
            "type": str(error.get("type", "")),
        }
        for error in exc.errors()
    ]
    first = issues[0] if issues else {"loc": [], "msg": "invalid"}
    where = ".".join(str(p) for p in first["loc"])
    return problem(422, "invalid-request", f"{where}: {first['msg']}", errors=issues)


def install(app: FastAPI) -> None:
    """Register the handlers: Starlette picks the most specific class along the MRO."""
    handlers: list[tuple[type[Exception], Any]] = [
        (ApiError, _api_error),
        (AuthenticationError, _unauthenticated),
        (AccessDenied, _denied),
        (DuplicateEventError, _duplicate),
        (NotFoundError, _not_found),
        (LedgerInputError, _input),
        (AccessInputError, _input),
        (ArtifactInputError, _input),
        (PolicyInputError, _input),
        (DeployInputError, _input),
        (CryptoError, _input),
        (VerificationError, _inconsistent),
        (BlobVerificationError, _inconsistent),
        (LedgerError, _unavailable),
        (ArtifactError, _unavailable),
        (PolicyError, _unavailable),
        (AccessError, _unavailable),
        (RuntimeDriverError, _unavailable),
        (StarletteHTTPException, _http),
    ]
    for kind, handler in handlers:
        app.add_exception_handler(kind, handler)
