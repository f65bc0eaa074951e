"""The auditor's web UI: server-rendered pages mounted on the API app (see :func:`mount`).

Pages live under ``/ui`` (docs/web-ui.md): log in with an API token, an environment's timeline,
what ran at a moment, the evidence chain of an image or an instance, drift findings, compliance
reports, and evidence bundles to download. Every page needs ``audit.read``; bundles need
``audit.export`` as well.
"""

from __future__ import annotations

from fastapi import FastAPI

from immutrail.api.auth import AccessCache

from . import reports
from .pages import not_found, router
from .paths import PREFIX

__all__ = ["PREFIX", "mount"]


def mount(app: FastAPI) -> None:
    """Add the UI's routes to ``app`` (whose ``state.settings`` is a ServerSettings)."""
    if not isinstance(getattr(app.state, "access", None), AccessCache):
        app.state.access = AccessCache()  # the API's app has one already; share it
    app.include_router(router)
    app.include_router(reports.router)
    # Last: any other path under /ui authenticates first, then answers "not found".
    app.add_api_route(PREFIX + "/{rest:path}", not_found, methods=["GET"], include_in_schema=False)
