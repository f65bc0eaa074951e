"""The FastAPI application: routes, token auth, problem details, tlog tiles and the web UI."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.middleware.gzip import GZipMiddleware

from immutrail import __version__, web
from immutrail.access import Identity, whoami

from . import artifact_routes, audit_routes, environment_routes, ledger_routes, problems, tlog
from .auth import AccessCache, Permit, caller, invalid_request
from .models import WhoAmI
from .responses import errors, install_openapi
from .settings import ServerSettings

API_VERSION = "v1"
DESCRIPTION = """\
The verifiable audit trail for immutable infrastructure, over HTTP: the tamper-evident ledger
(RFC 6962 proofs, C2SP checkpoints), the image store's attestations, environments and
deployments, and the auditor's queries and evidence bundles.

Every `/api/v1` route needs `Authorization: Bearer imt_…` (`immutrail token create`) and one
access action (docs/access.md); errors are RFC 9457 problem details. The ledger is also served
read-only as a C2SP tlog-tiles log under `/tlog/`. See docs/api.md.
"""


def create_app(settings: ServerSettings) -> FastAPI:
    app = FastAPI(
        title="immutrail",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
    )
    app.state.settings = settings
    app.state.access = AccessCache()
    problems.install(app)
    app.add_exception_handler(RequestValidationError, invalid_request)
    # Entry bundles SHOULD be compressed (tlog-tiles); JSON answers gain as much.
    app.add_middleware(GZipMiddleware, minimum_size=1024)

    @app.get(
        f"/api/{API_VERSION}/whoami",
        tags=["access"],
        summary="Who the token belongs to and what it may do",
        response_model=WhoAmI,
        responses=errors(401),
    )
    def get_whoami(identity: Annotated[Identity | None, Depends(Permit(None))]) -> WhoAmI:
        """The caller's principal, token, roles and every action it may take (and where).
        Any valid token."""
        return WhoAmI.model_validate(whoami(caller(identity)))

    for module in (ledger_routes, artifact_routes, environment_routes, audit_routes, tlog):
        app.include_router(module.router)
    install_openapi(app)
    web.mount(app)
    return app
