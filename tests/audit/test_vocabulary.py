"""The audit package spells the event types and predicates it reads once, without importing the
parts that write them (the offline verifier must not load them); these pins keep both in step."""

from __future__ import annotations

from immutrail.access import registry as access
from immutrail.artifacts import attach, attestations, builder, importer, provenance, statements
from immutrail.audit import vocabulary as v
from immutrail.baseline import attestation as baseline
from immutrail.baseline import runner
from immutrail.deploy import admission, declaration, engine, keep_logs, observe, reconcile
from immutrail.drift import check as drift
from immutrail.policy import desired, evidence, exceptions, imagetest, registry
from immutrail.scan import attestation as scan_attestation
from immutrail.scan import scanner
from immutrail.signing import approve, sign


def test_event_types_are_the_writers_own() -> None:
    pairs = [
        (v.BUILT, builder.EVENT_BUILT),
        (v.IMPORTED, importer.EVENT_IMPORTED),
        (v.ATTACHED, attach.EVENT_ATTACHED),
        (v.SCANNED, scanner.EVENT_SCAN_COMPLETED),
        (v.BASELINE, runner.EVENT_CHECKED),
        (v.TESTED, imagetest.EVENT_TESTED),
        (v.SIGNED, sign.EVENT_SIGNED),
        (v.APPROVED, approve.EVENT_APPROVED),
        (v.KEY_CREATED, statements.EVENT_KEY_CREATED),
        (v.KEY_REVOKED, statements.EVENT_KEY_REVOKED),
        (v.PROMOTION, evidence.EVENT_PROMOTION),
        (v.PROMOTION, desired.EVENT_PROMOTION),
        (v.ROLLED_BACK, desired.EVENT_ROLLED_BACK),
        (v.POLICY_CHANGED, registry.EVENT_POLICY_CHANGED),
        (v.EXCEPTION_GRANTED, exceptions.EVENT_EXCEPTION),
        (v.DECLARED, declaration.EVENT_DECLARED),
        (v.DEPLOYMENT_STARTED, engine.EVENT_STARTED),
        (v.DEPLOYMENT_COMPLETED, engine.EVENT_COMPLETED),
        (v.DEPLOYMENT_FAILED, engine.EVENT_FAILED),
        (v.DEPLOYMENT_INTERRUPTED, engine.EVENT_INTERRUPTED),
        (v.DEPLOYMENT_REFUSED, engine.EVENT_REFUSED),
        (v.CANARY_STEP, engine.EVENT_CANARY_STEP),
        (v.TRAFFIC_SWITCHED, engine.EVENT_SWITCHED),
        (v.ADMISSION_REFUSED, admission.EVENT_REFUSED),
        (v.INSTANCE_CREATED, observe.EVENT_CREATED),
        (v.INSTANCE_DESTROYED, observe.EVENT_DESTROYED),
        (v.INSTANCE_LOST, observe.EVENT_LOST),
        (v.CHAOS_TERMINATED, reconcile.EVENT_CHAOS),
        (v.LOGS_KEPT, keep_logs.EVENT_LOGS_KEPT),
        (v.DRIFT_DETECTED, drift.EVENT_DETECTED),
        (v.DRIFT_REMEDIATED, drift.EVENT_REMEDIATED),
        (v.DRIFT_CHECKED, drift.EVENT_CHECKED),
        (v.PRINCIPAL_CREATED, access.EVENT_PRINCIPAL_CREATED),
    ]
    assert [a for a, b in pairs if a != b] == []
    assert set(v.DEPLOYMENT_ENDS) == set(engine.FINISHED)


def test_attestation_kinds_are_the_writers_own() -> None:
    pairs = [
        (v.IN_TOTO_PAYLOAD_TYPE, provenance.IN_TOTO_PAYLOAD_TYPE),
        (v.STATEMENT_V1, provenance.STATEMENT_V1),
        (v.SBOM_TYPE, attestations.SBOM_TYPE),
        (v.PREDICATE_ANNOTATION, statements.PREDICATE_ANNOTATION),
        (v.SLSA_PROVENANCE, attestations.SLSA_PROVENANCE_V1),
        (v.VULNS_PREDICATE, scan_attestation.VULNS_PREDICATE),
        (v.BASELINE_PREDICATE, baseline.BASELINE_PREDICATE),
        (v.TEST_RESULT_PREDICATE, imagetest.TEST_RESULT_PREDICATE),
        (v.SIGNATURE_PREDICATE, sign.SIGNATURE_PREDICATE),
        (v.APPROVAL_PREDICATE, approve.APPROVAL_PREDICATE),
    ]
    assert [a for a, b in pairs if a != b] == []
