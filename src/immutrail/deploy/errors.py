"""The deployment's errors, on top of the runtime drivers' (:mod:`immutrail.deploy.runtime`)."""

from __future__ import annotations

from .runtime import AdmissionError, RuntimeDriverError


class DeployInputError(RuntimeDriverError):
    """The request is wrong (a malformed declaration, an undeclared service): nothing changed."""


class DeploymentRefusedError(AdmissionError):
    """A guardrail refused the deployment before anything started (recorded)."""


class DeploymentFailedError(RuntimeDriverError):
    """The new instances did not become healthy or the canary failed: rolled back (recorded)."""
