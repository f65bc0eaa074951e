"""A report as JSON, CSV (one row per control, then one per exception) or one HTML file.

All three are deterministic: the same report gives the same bytes. The JSON carries
``report_digest``, the SHA-256 of its own RFC 8785 form without that member, which the HTML and
the CSV repeat so the three can be matched.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Mapping
from typing import Any

import jinja2

from immutrail.crypto.canonical import canonical_json

from . import charts
from .frameworks import EXCEPTIONS
from .model import Citation, Report

FORMAT = "immutrail-compliance-report/v1"
CSV_COLUMNS = (
    "kind",
    "framework",
    "control",
    "title",
    "status",
    "evidence",
    "missing",
    "exceptions",
    "time",
    "subject",
    "actor",
    "environment",
    "citations",
    "detail",
)
"""The CSV's columns (docs/reports.md, "CSV")."""


def _body(report: Report) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "framework": {"id": report.framework, "title": report.framework_title},
        "window": {"from": report.start, "to": report.end},
        "environment": report.environment,
        "basis": report.basis.to_json(),
        "summary": {
            "controls": report.status_counts(),
            "exceptions": report.exception_counts(),
        },
        "controls": [c.to_json() for c in report.controls],
        "exceptions": [e.to_json() for e in report.exceptions],
        "metrics": dict(report.metrics),
    }


def report_digest(report: Report) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(_body(report))).hexdigest()


def render_json(report: Report) -> dict[str, Any]:
    """The report as a JSON object (``format``, ``basis``, ``controls``, ``exceptions``,
    ``metrics``, ``report_digest``…)."""
    body = _body(report)
    body["report_digest"] = report_digest(report)
    return body


def _indices(citations: tuple[Citation, ...]) -> str:
    return " ".join(str(c.index) for c in citations)


def render_csv(report: Report) -> str:
    """One ``source`` row, one ``control`` row per control, one ``exception`` row per exception."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    basis = report.basis
    writer.writerow(
        {
            "kind": "source",
            "framework": report.framework,
            "title": report.framework_title,
            "time": f"{report.start}/{report.end}",
            "environment": report.environment or "",
            "detail": f"origin={basis.origin} tree_size={basis.tree_size} "
            f"root_hash={basis.root_hash} signed={str(basis.signed).lower()} "
            f"report_digest={report_digest(report)}",
        }
    )
    for control in report.controls:
        evidence = (*control.required, *control.supporting)
        writer.writerow(
            {
                "kind": "control",
                "framework": report.framework,
                "control": control.id,
                "title": control.title,
                "status": control.status,
                "evidence": "; ".join(f"{e.kind}={e.count}" for e in evidence),
                "missing": " ".join(control.missing),
                "exceptions": "; ".join(f"{k}={n}" for k, n in control.exceptions),
                "environment": report.environment or "",
                "citations": " ".join(
                    dict.fromkeys(_indices(e.citations) for e in evidence if e.citations)
                ),
                "detail": control.note,
            }
        )
    for item in report.exceptions:
        writer.writerow(
            {
                "kind": "exception",
                "framework": report.framework,
                "control": " ".join(item.controls),
                "exceptions": item.kind,
                "time": item.time,
                "subject": item.subject,
                "actor": item.actor,
                "environment": item.environment or "",
                "citations": _indices(item.citations),
                "detail": item.message,
            }
        )
    return out.getvalue()


# --- HTML -----------------------------------------------------------------------------------------


def duration(seconds: object) -> str:
    """Seconds as days, hours, minutes or seconds for a reader ("-" when there is none)."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "-"
    value = float(seconds)
    if value >= 86_400:
        return f"{value / 86_400:.1f} days"
    if value >= 3_600:
        return f"{value / 3_600:.1f} hours"
    if value >= 60:
        return f"{value / 60:.1f} minutes"
    return f"{value:.1f} seconds"


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("immutrail.audit.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_ENV.filters["duration"] = duration


def report_charts(report: Report) -> list[charts.Chart]:
    metrics: Mapping[str, Any] = report.metrics
    weekly = metrics["deployments"]["per_week"]
    ages = metrics["instance_age"]
    patches = metrics["time_to_patch"]
    return [
        charts.vertical(
            "deployments-per-week",
            "Deployments per week",
            "Deployments started in each ISO week of the window.",
            [(w["week"], float(w["deployments"])) for w in weekly],
        ),
        charts.vertical(
            "instance-age",
            "Instance age distribution",
            f"Instances running at {ages['at']}, by age.",
            [(b["label"], float(b["instances"])) for b in ages["buckets"]],
        ),
        charts.exposure(
            "exposure-window",
            "Critical vulnerability exposure window",
            f"Days from each critical vulnerability becoming known to our database to the "
            f"fixed image running in {patches['environment']} (to the end of the window when "
            "still open).",
            patches["vulnerabilities"],
            int(patches["threshold_days"]),
        ),
    ]


def render_html(report: Report) -> str:
    """One self-contained, printable HTML page: no script, no network, no external font."""
    template = _ENV.get_template("report.html.j2")
    return template.render(
        report=report,
        data=render_json(report),
        charts=report_charts(report),
        exception_kinds=EXCEPTIONS,
    )
