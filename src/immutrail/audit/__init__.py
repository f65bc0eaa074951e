"""The auditor's side: point-in-time queries and offline-verifiable evidence bundles.

Public API:

* :func:`~immutrail.audit.queries.at_query`, :func:`~immutrail.audit.queries.trace_query`,
  :func:`~immutrail.audit.queries.changes_query` build a question;
  :func:`~immutrail.audit.queries.run_query` answers it from an
  :class:`~immutrail.audit.source.EventSource`: a :class:`~immutrail.audit.source.ListSource`
  (events in memory) or a :class:`~immutrail.audit.reading.LedgerSource` (a live ledger);
* :func:`~immutrail.audit.bundle.build_bundle` writes the answer, its events, proofs,
  attestations and keys into one deterministic file;
* :func:`~immutrail.audit.verify.verify_bundle` checks such a file with nothing but its bytes.

``verify`` and ``queries`` import no storage and no network code (see their docstrings).
"""

from __future__ import annotations

from .errors import AuditError, AuditInputError, BundleVerificationError, Problem
from .queries import (
    Answer,
    AtQuery,
    ChangesQuery,
    Query,
    TraceQuery,
    at_query,
    changes_query,
    run_query,
    trace_query,
)
from .source import EventSource, Indexed, ListSource
from .verify import BundleReport, verify_bundle

__all__ = [
    "Answer",
    "AtQuery",
    "AuditError",
    "AuditInputError",
    "BundleReport",
    "BundleVerificationError",
    "ChangesQuery",
    "EventSource",
    "Indexed",
    "ListSource",
    "Problem",
    "Query",
    "TraceQuery",
    "at_query",
    "changes_query",
    "run_query",
    "trace_query",
    "verify_bundle",
]
