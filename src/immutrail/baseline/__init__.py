"""The security baseline: CIS-style checks of an image and user rules in Rego (docs/baseline.md)."""

from .attestation import BASELINE_PREDICATE, Outcome, baseline_outcome

__all__ = ["BASELINE_PREDICATE", "Outcome", "baseline_outcome"]
