"""Schemathesis (v4) against our own OpenAPI document, in process: for every operation, valid
and invalid requests with an auditor's and an admin's token; no 5xx, and every response (status,
content type, headers, body) as the document says. Deterministic (derandomized hypothesis) and
bounded: a few examples per operation, the whole run well under a minute."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from immutrail.api.app import create_app
from immutrail.api.settings import ServerSettings

from .conftest import World, auth

EXAMPLES = 12
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture(scope="module")
def app(world: World) -> FastAPI:
    return create_app(ServerSettings(world.home, None))


@pytest.mark.parametrize("role", ["auditor", "admin"])
def test_the_api_keeps_its_openapi_promises(app: FastAPI, world: World, role: str) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = auth(world.tokens[role])
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=CHECKS)

        run()
