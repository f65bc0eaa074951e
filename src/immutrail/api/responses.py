"""The OpenAPI side of errors: which problem responses a route documents, and the document's
final touches (problem details under ``application/problem+json``, 422 in the same shape)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from .models import AppendIn
from .problems import PROBLEM_MEDIA_TYPE, Problem

_DESCRIPTIONS = {
    400: "The request is wrong (nothing was written).",
    401: "No token, or a token that is malformed, unknown, expired or revoked, or whose "
    "principal is disabled (one message for all).",
    403: "The caller's roles (or token scopes) do not allow the route's action.",
    404: "Nothing of that name (only said to callers allowed to ask).",
    409: "The event id is in the ledger already.",
    413: "The request body is larger than 256 KiB.",
    422: "The request does not match this schema.",
    503: "The ledger or the image store cannot be read right now.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: each status as a problem document (and 503 always)."""
    return {
        status: {"model": Problem, "description": _DESCRIPTIONS[status]}
        for status in (*statuses, 503)
    }


def install_openapi(app: FastAPI) -> None:
    """Generate the document once, with error bodies as ``application/problem+json``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        # The append body is parsed by hand (strict JSON), so FastAPI did not list its schema.
        for name, schema in (
            AppendIn.model_json_schema(ref_template="#/components/schemas/{model}")
            .get("$defs", {})
            .items()
        ):
            schemas.setdefault(name, schema)
        append_schema = AppendIn.model_json_schema(ref_template="#/components/schemas/{model}")
        append_schema.pop("$defs", None)
        schemas["AppendIn"] = append_schema
        problem_ref = {"$ref": "#/components/schemas/Problem"}
        for item in document.get("paths", {}).values():
            for operation in item.values():
                for status, response in operation.get("responses", {}).items():
                    if not status.isdigit() or int(status) < 400:
                        continue
                    if int(status) == 422:
                        response["description"] = _DESCRIPTIONS[422]
                    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": problem_ref}}
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        app.openapi_schema = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]
