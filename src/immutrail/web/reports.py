"""The reports page: the compliance frameworks, and a report produced on request.

Producing a report needs ``audit.export`` as well as ``audit.read`` (it is a document that leaves
the system, like a bundle) and goes through a CSRF-checked form, because, like ``immutrail audit
report``, it is computed as of a signed checkpoint, signed now when the ledger has grown past the
last one (when this server holds the ledger key; otherwise as of the current size, unsigned, and
the report says so).
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response

from immutrail.api.settings import ServerSettings
from immutrail.audit.errors import AuditInputError
from immutrail.audit.reading import LedgerSource
from immutrail.audit.report import (
    FRAMEWORKS,
    build_report,
    render_csv,
    render_html,
    render_json,
)
from immutrail.audit.report.frameworks import BY_ID
from immutrail.ledger.errors import LedgerInputError
from immutrail.ledger.event import format_time
from immutrail.ledger.ledger import Ledger

from . import views
from .pages import EXPORT, READ, guarded, store_of
from .paths import PREFIX
from .render import page, secure
from .session import Viewer, check_form, now

log = logging.getLogger(__name__)

router = APIRouter(prefix=PREFIX, include_in_schema=False)

OUTPUTS = ("view", "html", "json", "csv")
"""``view`` shows the HTML report in the browser; the others download a file."""

REPORT_CSP = (
    # The report is one self-contained page with its own inline stylesheet and no script.
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; sandbox"
)


@router.get("/reports")
def reports(request: Request) -> Response:
    def work(viewer: Viewer, ledger: Ledger, settings: ServerSettings) -> Response:
        start, end = views.default_window(now())
        return page(
            "reports.html",
            viewer=viewer,
            env=None,
            frameworks=[BY_ID[name] for name in FRAMEWORKS],
            since=views.picker_value(format_time(start)),
            until=views.picker_value(format_time(end)),
            outputs=OUTPUTS,
        )

    return guarded(request, READ, work)


def _anchor(ledger: Ledger) -> int:
    """The tree size the report is as of: the latest checkpoint, signed now if need be."""
    stored = ledger.checkpoints()
    head = ledger.head().size
    if stored and stored[-1].size >= head:
        return stored[-1].size
    try:
        return ledger.checkpoint().size
    except LedgerInputError as exc:  # no ledger key here: the report states its basis unsigned
        log.info("report as of unsigned size %d: %s", head, exc)
        return head


@router.post("/reports")
def report(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    framework: Annotated[str, Form()] = "",
    since: Annotated[str, Form(alias="from")] = "",
    until: Annotated[str, Form(alias="to")] = "",
    env: Annotated[str, Form()] = "",
    output: Annotated[str, Form()] = "view",
) -> Response:
    def work(viewer: Viewer, ledger: Ledger, settings: ServerSettings) -> Response:
        check_form(request, csrf)
        if output not in OUTPUTS:
            raise AuditInputError(f"the output must be one of {', '.join(OUTPUTS)}")
        start = views.parse_moment(since, "from")
        end = views.parse_moment(until, "to")
        environment = views.check_environment_name(env) if env.strip() else None
        source = LedgerSource(ledger, store_of(settings), _anchor(ledger))
        built = build_report(source, framework, start, end, environment)
        log.info("UI report for %s: %s %s..%s", viewer.principal, framework, start, end)
        if output == "json":
            data = (json.dumps(render_json(built), indent=2, ensure_ascii=False) + "\n").encode()
            kind = "application/json"
        elif output == "csv":
            data, kind = render_csv(built).encode("utf-8"), "text/csv; charset=utf-8"
        else:
            data, kind = render_html(built).encode("utf-8"), "text/html; charset=utf-8"
        response = secure(Response(data, media_type=kind))
        response.headers["X-Content-Sha256"] = hashlib.sha256(data).hexdigest()
        if output == "view":
            response.headers["Content-Security-Policy"] = REPORT_CSP
        else:
            suffix = "html" if output == "html" else output
            name = views.safe_filename(
                f"report-{built.framework}-{environment or 'all'}-{built.start}-{built.end}"
            )
            response.headers["Content-Disposition"] = f'attachment; filename="{name}.{suffix}"'
        return response

    return guarded(request, EXPORT, work)
