"""The event types and attestation kinds the audit queries read, spelled once.

Copied here rather than imported from the parts that write them: the offline verifier must not
import the artifact store, the deploy engine or anything that reaches a database or a network.
``tests/audit/test_vocabulary.py`` pins every constant to the writer's own.
"""

from __future__ import annotations

# -- the image pipeline ----------------------------------------------------------------------------
BUILT = "artifact.built"
IMPORTED = "artifact.imported"
ATTACHED = "artifact.attached"
SCANNED = "scan.completed"
BASELINE = "baseline.checked"
TESTED = "image.tested"
SIGNED = "image.signed"
APPROVED = "image.approved"
KEY_CREATED = "key.created"
KEY_REVOKED = "key.revoked"

# -- the gate and the desired state ----------------------------------------------------------------
PROMOTION = "promotion.decided"
ROLLED_BACK = "desired.rolled-back"
POLICY_CHANGED = "policy.changed"
EXCEPTION_GRANTED = "vulnerability.exception.granted"

# -- deployments -----------------------------------------------------------------------------------
DECLARED = "service.declared"
DEPLOYMENT_STARTED = "deployment.started"
DEPLOYMENT_COMPLETED = "deployment.completed"
DEPLOYMENT_FAILED = "deployment.failed"
DEPLOYMENT_INTERRUPTED = "deployment.interrupted"
DEPLOYMENT_REFUSED = "deployment.refused"
DEPLOYMENT_ENDS = (
    DEPLOYMENT_COMPLETED,
    DEPLOYMENT_FAILED,
    DEPLOYMENT_INTERRUPTED,
    DEPLOYMENT_REFUSED,
)
CANARY_STEP = "deployment.canary.step"
ADMISSION_REFUSED = "deploy.admission.refused"
INSTANCE_CREATED = "instance.created"
INSTANCE_DESTROYED = "instance.destroyed"
INSTANCE_LOST = "instance.lost"
CHAOS_TERMINATED = "chaos.terminated"
INSTANCE_ENDS = (INSTANCE_DESTROYED, CHAOS_TERMINATED, INSTANCE_LOST)
"""Any of these at or before T means the instance was not running at T."""
TRAFFIC_SWITCHED = "traffic.switched"
LOGS_KEPT = "instance.logs.kept"
DRIFT_DETECTED = "drift.detected"
DRIFT_REMEDIATED = "drift.remediated"
DRIFT_CHECKED = "drift.checked"
PRINCIPAL_CREATED = "principal.created"

# -- attestations ----------------------------------------------------------------------------------
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SBOM_TYPE = "application/vnd.cyclonedx+json"
PREDICATE_ANNOTATION = "in-toto.io/predicate-type"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
VULNS_PREDICATE = "https://in-toto.io/attestation/vulns/v0.1"
BASELINE_PREDICATE = "https://immutrail.dev/attestation/baseline/v1"
TEST_RESULT_PREDICATE = "https://in-toto.io/attestation/test-result/v0.1"
SIGNATURE_PREDICATE = "https://immutrail.dev/attestation/signature/v1"
APPROVAL_PREDICATE = "https://immutrail.dev/attestation/approval/v1"
