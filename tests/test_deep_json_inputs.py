"""JSON from outside (registries, images, labels, control requests) nested deeper than Python's
json module recurses: 2 KB of "[" raised RecursionError, an exit 4 or a dead request handler.
Each reader treats it as the malformed JSON it is."""

from __future__ import annotations

from typing import Any

import pytest

from immutrail.artifacts import registry
from immutrail.artifacts.registry_client import RegistryContentError
from immutrail.audit.source import parse_manifest
from immutrail.deploy import endpoint_daemon, guardrails
from immutrail.signing.verify import Status, _sbom_check

DEEP = "[" * 5000 + "]" * 5000
DIGEST = "sha256:" + "0" * 64


def test_the_input_is_deep_enough_to_recurse() -> None:
    import json

    with pytest.raises(RecursionError):
        json.loads(DEEP)


def test_registry_manifest() -> None:
    with pytest.raises(RegistryContentError, match="is not JSON"):
        registry._parse_manifest(DEEP.encode(), DIGEST, "manifest")


def test_audit_manifest() -> None:
    assert parse_manifest(DEEP.encode()) is None


def test_attached_sbom_check() -> None:
    check = _sbom_check(DIGEST, DEEP.encode(), {})
    assert check.status is Status.FAILED


def test_privacy_label() -> None:
    config: dict[str, Any] = {"Labels": {guardrails.LABEL_PRIVACY: DEEP}}
    assert guardrails._privacy_entries(config) == []


def test_endpoint_backends_option() -> None:
    with pytest.raises(endpoint_daemon.StartError, match="invalid --backends"):
        endpoint_daemon._initial_backends(None, DEEP)  # type: ignore[arg-type]
