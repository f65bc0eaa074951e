"""Compliance reports: one framework's controls judged from one window of the ledger.

Public API (docs/reports.md):

* :data:`FRAMEWORKS`: the framework ids (``soc2``, ``pci-dss-4``, ``nist-800-190``, ``gdpr-32``,
  ``hipaa``);
* :func:`build_report` reads a :class:`~immutrail.audit.reading.LedgerSource` and returns a
  :class:`Report`: per control its status, evidence (counts and cited events) and the
  exceptions bearing on it; the exceptions; the metrics (time to patch, deployments, gate,
  instance ages, drift); and what it was computed from (ledger origin, tree size, root, checkpoint);
* :func:`render_html`, :func:`render_json`, :func:`render_csv` write it out, deterministically.
"""

from __future__ import annotations

from .build import DEFAULT_PATCH_DAYS, build_report
from .frameworks import EVIDENCE, EXCEPTIONS, FRAMEWORKS, STATUSES
from .model import Basis, Citation, ControlResult, Evidence, Finding, Report
from .render import CSV_COLUMNS, FORMAT, render_csv, render_html, render_json, report_digest

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_PATCH_DAYS",
    "EVIDENCE",
    "EXCEPTIONS",
    "FORMAT",
    "FRAMEWORKS",
    "STATUSES",
    "Basis",
    "Citation",
    "ControlResult",
    "Evidence",
    "Finding",
    "Report",
    "build_report",
    "render_csv",
    "render_html",
    "render_json",
    "report_digest",
]
