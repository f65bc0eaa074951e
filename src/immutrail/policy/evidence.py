"""Everything the gate knows about one image for one environment, gathered from store and ledger.

Only evidence that verifies counts: statements are read through
:func:`immutrail.artifacts.statements.read_attestations` (signed by a non-revoked ledger key,
naming this digest), approvals and signatures through the signing package's checks. What was
attached but did not verify is kept in ``rejected`` with the reason, so a refusal can say "the
approval by bob was signed by a revoked key" instead of just "one approval is missing".

The same document (``to_json``) is the ``input`` of Rego policies; docs/policy.md describes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from immutrail.artifacts.attestations import SLSA_PROVENANCE_V1
from immutrail.artifacts.builder import EVENT_BUILT
from immutrail.artifacts.provenance import ProvenanceError, read_provenance, split_source_uri
from immutrail.artifacts.statements import (
    Attestation,
    LedgerKey,
    RejectedAttestation,
    read_attestations,
)
from immutrail.artifacts.store import Store
from immutrail.baseline.attestation import BASELINE_PREDICATE, baseline_outcome
from immutrail.baseline.errors import PredicateFormatError
from immutrail.ledger.event import parse_entry
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter
from immutrail.scan.attestation import VULNS_PREDICATE, findings_from_predicate
from immutrail.scan.errors import PredicateError
from immutrail.signing.approve import APPROVAL_PREDICATE, count_approvals
from immutrail.signing.sign import SIGNATURE_PREDICATE, count_signatures

from .exceptions import VulnerabilityException, active_exceptions
from .imagetest import TEST_RESULT_PREDICATE

EVENT_PROMOTION = "promotion.decided"


@dataclass(frozen=True)
class Rejected:
    kind: str
    reference: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "reference": self.reference, "reason": self.reason}


@dataclass
class Evidence:
    digest: str
    environment: str
    now: datetime
    build: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None
    scan: dict[str, Any] | None = None
    baseline: dict[str, Any] | None = None
    tests: list[dict[str, Any]] = field(default_factory=list)
    approvals: list[dict[str, Any]] = field(default_factory=list)
    signatures: list[dict[str, Any]] = field(default_factory=list)
    exceptions: list[VulnerabilityException] = field(default_factory=list)
    promotions: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "environment": self.environment,
            "now": self.now.isoformat().replace("+00:00", "Z"),
            "build": self.build,
            "provenance": self.provenance,
            "scan": self.scan,
            "baseline": self.baseline,
            "tests": self.tests,
            "approvals": self.approvals,
            "signatures": self.signatures,
            "exceptions": [e.to_json() for e in self.exceptions],
            "promotions": self.promotions,
            "rejected": [r.to_json() for r in self.rejected],
        }


def gather(
    store: Store,
    ledger: Ledger,
    keys: Mapping[str, LedgerKey],
    digest: str,
    environment: str,
    now: datetime,
) -> Evidence:
    digest = store.resolve(digest).digest
    evidence = Evidence(digest, environment, now)
    evidence.build = _build(ledger, digest)
    statements, rejected = read_attestations(store, digest, keys)
    by_type: dict[str, list[Attestation]] = {}
    for statement in statements:
        by_type.setdefault(statement.predicate_type, []).append(statement)
    refused: dict[str, list[RejectedAttestation]] = {}
    for item in rejected:
        refused.setdefault(item.predicate_type, []).append(item)
    evidence.rejected.extend(
        Rejected(r.predicate_type, r.manifest, r.reason)
        for r in rejected
        if r.predicate_type not in (APPROVAL_PREDICATE, SIGNATURE_PREDICATE)
    )
    evidence.provenance = _provenance(by_type.get(SLSA_PROVENANCE_V1, []), evidence)
    evidence.scan = _latest_scan(by_type.get(VULNS_PREDICATE, []), evidence)
    evidence.baseline = _latest_baseline(by_type.get(BASELINE_PREDICATE, []), evidence)
    evidence.tests = _tests(by_type.get(TEST_RESULT_PREDICATE, []))
    # Approvals and signatures come from the statements read above: one pass over the referrers.
    approvals, bad_approvals = count_approvals(
        by_type.get(APPROVAL_PREDICATE, []), refused.get(APPROVAL_PREDICATE, []), environment
    )
    evidence.approvals = [a.to_dict() for a in approvals]
    evidence.rejected.extend(Rejected("approval", r.attestation, r.reason) for r in bad_approvals)
    signatures, bad_signatures = count_signatures(
        by_type.get(SIGNATURE_PREDICATE, []), refused.get(SIGNATURE_PREDICATE, [])
    )
    evidence.signatures = [s.to_dict() for s in signatures]
    evidence.rejected.extend(Rejected("signature", r.attestation, r.reason) for r in bad_signatures)
    evidence.exceptions = active_exceptions(ledger, keys, environment, now)
    evidence.promotions = _promotions(ledger, digest)
    return evidence


def _build(ledger: Ledger, digest: str) -> dict[str, Any] | None:
    rows = list(ledger.entries(EntryFilter(type=EVENT_BUILT, subject=digest)))
    if not rows:
        return None
    event = parse_entry(rows[0].data)
    source = event.payload.get("source")
    if not isinstance(source, dict):  # built before the author and branch were recorded
        source = {}
    return {
        "builder": event.actor,
        "ledger_index": rows[0].index,
        "commit": event.payload.get("commit"),
        "dirty": bool(event.payload.get("dirty")),
        "branch": source.get("branch"),
        "author": source.get("author"),
    }


def _provenance(found: Sequence[Attestation], evidence: Evidence) -> dict[str, Any] | None:
    """The newest provenance signed by a builder key (others are rejected with the reason)."""
    chosen: dict[str, Any] | None = None
    for statement in found:
        if statement.signer.purpose != "builder":
            evidence.rejected.append(
                Rejected(
                    SLSA_PROVENANCE_V1,
                    statement.manifest,
                    f"signed by {statement.signer.principal}'s {statement.signer.purpose or 'un'}"
                    "-purpose key, not by a builder key",
                )
            )
            continue
        try:
            summary = read_provenance(statement.statement)
        except ProvenanceError as exc:
            evidence.rejected.append(Rejected(SLSA_PROVENANCE_V1, statement.manifest, str(exc)))
            continue
        base, ref = split_source_uri(summary.source_uri or "")
        internal = statement.predicate.get("buildDefinition", {}).get("internalParameters", {})
        chosen = {
            "attestation": statement.manifest,
            "builder_id": summary.builder_id,
            "signer": {"keyid": statement.signer.keyid, "principal": statement.signer.principal},
            "source_uri": base or None,
            "ref": ref,
            "branch": ref.removeprefix("refs/heads/")
            if ref and ref.startswith("refs/heads/")
            else None,
            "commit": summary.source_commit,
            "dirty": bool(internal.get("dirty")) if isinstance(internal, Mapping) else False,
        }
    return chosen


def _latest_scan(found: Sequence[Attestation], evidence: Evidence) -> dict[str, Any] | None:
    if not found:
        return None
    latest = found[-1]
    try:
        findings = findings_from_predicate(latest.predicate)
    except PredicateError as exc:
        evidence.rejected.append(Rejected(VULNS_PREDICATE, latest.manifest, str(exc)))
        return None
    scanner = latest.predicate.get("scanner", {})
    database = scanner.get("db", {}) if isinstance(scanner, Mapping) else {}
    return {
        "attestation": latest.manifest,
        "scanner": scanner.get("uri") if isinstance(scanner, Mapping) else None,
        "database": database.get("version") if isinstance(database, Mapping) else None,
        "findings": [
            {
                "id": f.id,
                "aliases": list(f.aliases),
                "package": f.package,
                "version": f.version,
                "level": f.level,
                "score": f.score,
                "fixed": list(f.fixed),
            }
            for f in findings
        ],
    }


def _latest_baseline(found: Sequence[Attestation], evidence: Evidence) -> dict[str, Any] | None:
    if not found:
        return None
    latest = found[-1]
    try:
        outcome = baseline_outcome(latest.predicate)
    except PredicateFormatError as exc:
        evidence.rejected.append(Rejected(BASELINE_PREDICATE, latest.manifest, str(exc)))
        return None
    return {
        "attestation": latest.manifest,
        "passed": outcome.passed,
        "failed": list(outcome.failed),
    }


def _tests(found: Sequence[Attestation]) -> list[dict[str, Any]]:
    """The latest result of every named test (a re-run after a fix replaces the failure)."""
    latest: dict[str, dict[str, Any]] = {}
    for statement in found:
        details = statement.predicate.get("immutrail", {})
        if not isinstance(details, Mapping):
            continue
        name = str(details.get("name", ""))
        latest[name] = {
            "name": name,
            "result": statement.predicate.get("result"),
            "exit_code": details.get("exit_code"),
            "attestation": statement.manifest,
            "signer": statement.signer.principal,
        }
    return sorted(latest.values(), key=lambda t: t["name"])


def _promotions(ledger: Ledger, digest: str) -> list[dict[str, Any]]:
    history = []
    for row in ledger.entries(EntryFilter(type=EVENT_PROMOTION, subject=digest)):
        payload = parse_entry(row.data).payload
        history.append(
            {
                "ledger_index": row.index,
                "environment": payload.get("environment"),
                "allowed": payload.get("allowed"),
                "override": payload.get("override", False),
            }
        )
    return history
