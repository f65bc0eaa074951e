"""The release gate: policies, evidence, decisions, exceptions, image tests; see docs/policy.md."""
