"""Every route against every caller: the six roles, no token, a malformed, unknown, expired or
revoked token, and the token of a disabled principal. No unauthorized success, and refusals
that tell nothing: one 401 body for every failed authentication, a 403 that names only the
caller and the action, and the same refusal whether what was asked for exists or not.

``ALLOWED`` is written out here by hand (docs/api.md has the same table): the test fails when a
route's action or a role's actions change without the contract changing with them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from immutrail.api.problems import PROBLEM_MEDIA_TYPE, UNAUTHENTICATED

from .conftest import CALLERS_WITHOUT_ACCESS, ENV, SERVICE, World, auth

ROLES = ("admin", "builder", "reviewer", "deployer", "operator", "auditor")
ALLOWED: dict[str, set[str]] = {
    "any": set(ROLES),
    "ledger.read": set(ROLES),
    "ledger.append": {"admin"},
    "audit.read": {"admin", "reviewer", "auditor"},
    "audit.export": {"admin", "auditor"},
}
OTHER_DIGEST = "sha256:" + "e" * 64
OTHER_EVENT = "01234567-89ab-7cde-8f01-23456789abcd"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    action: str
    body: dict[str, Any] | None = None
    missing: str | None = None
    """The same route asking for something that does not exist (same refusal expected)."""

    def call(self, client: TestClient, token: str | None, path: str | None = None) -> Any:
        return client.request(self.method, path or self.path, headers=auth(token), json=self.body)


def routes(world: World) -> list[Route]:
    digest, moment = world.digest, world.between
    window = f"env={ENV}&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z"
    return [
        Route("GET", "/api/v1/whoami", "any"),
        Route(
            "POST",
            "/api/v1/ledger/entries",
            "ledger.append",
            body={"type": "note.added", "subject": "matrix", "payload": {"n": 1}},
        ),
        Route("GET", "/api/v1/ledger/entries?limit=2&type=artifact.built", "ledger.read"),
        Route(
            "GET",
            f"/api/v1/ledger/entries/{world.event_id}",
            "ledger.read",
            missing=f"/api/v1/ledger/entries/{OTHER_EVENT}",
        ),
        Route(
            "GET",
            "/api/v1/ledger/entries/3/inclusion",
            "ledger.read",
            missing="/api/v1/ledger/entries/99999999/inclusion",
        ),
        Route("GET", "/api/v1/ledger/consistency?old=3", "ledger.read"),
        Route("GET", "/api/v1/ledger/checkpoint", "ledger.read"),
        Route("GET", "/api/v1/artifacts", "ledger.read"),
        Route(
            "GET",
            f"/api/v1/artifacts/{digest}",
            "ledger.read",
            missing=f"/api/v1/artifacts/{OTHER_DIGEST}",
        ),
        Route(
            "GET",
            f"/api/v1/artifacts/{digest}/attestations/{world.attestation}",
            "ledger.read",
            missing=f"/api/v1/artifacts/{digest}/attestations/{OTHER_DIGEST}",
        ),
        Route("GET", "/api/v1/environments", "ledger.read"),
        Route(
            "GET",
            f"/api/v1/environments/{ENV}",
            "ledger.read",
            missing="/api/v1/environments/nowhere",
        ),
        Route(
            "GET",
            f"/api/v1/environments/{ENV}/deployments",
            "ledger.read",
            missing="/api/v1/environments/nowhere/deployments",
        ),
        Route("GET", f"/api/v1/audit/at?env={ENV}&time={moment}", "audit.read"),
        Route(
            "GET",
            f"/api/v1/audit/trace?ref={digest}",
            "audit.read",
            missing=f"/api/v1/audit/trace?ref={OTHER_DIGEST}",
        ),
        Route("GET", f"/api/v1/audit/changes?{window}", "audit.read"),
        Route("GET", f"/api/v1/audit/at/evidence?env={ENV}&time={moment}", "audit.export"),
        Route(
            "GET",
            f"/api/v1/audit/trace/evidence?ref={world.instance}",
            "audit.export",
            missing="/api/v1/audit/trace/evidence?ref=local-0000000000000000",
        ),
        Route("GET", f"/api/v1/audit/changes/evidence?{window}", "audit.export"),
        Route(
            "GET",
            "/tlog/tile/entries/000.p/5",
            "ledger.read",
            missing="/tlog/tile/entries/x001/000",
        ),
    ]


CALLERS = (*ROLES, *CALLERS_WITHOUT_ACCESS)


def _leaks(text: str, world: World, caller: str) -> list[str]:
    """What an error body must never name: the world's digests, environment, service, event
    ids, instances and any principal but the caller's own."""
    secrets = [
        world.digest.removeprefix("sha256:"),
        world.attestation.removeprefix("sha256:"),
        world.event_id,
        world.instance,
        world.deployment,
        ENV,
        SERVICE,
        "root",
    ]
    own = world.principals.get(caller)
    secrets += [name for name in re.findall(r"p-[a-z]+", text) if name != own]
    return [s for s in secrets if s in text]


@pytest.mark.parametrize("caller", CALLERS)
def test_every_route_for_every_caller(client: TestClient, world: World, caller: str) -> None:
    token = world.tokens[caller]
    for route in routes(world):
        response = route.call(client, token)
        where = f"{caller} {route.method} {route.path}"
        if caller in CALLERS_WITHOUT_ACCESS:
            assert response.status_code == 401, (where, response.text)
            assert response.headers["www-authenticate"].startswith("Bearer")
        elif caller in ALLOWED[route.action]:
            assert response.status_code in (200, 201), (where, response.text)
            continue
        else:
            assert response.status_code == 403, (where, response.text)
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE, where
        body = response.json()
        assert set(body) == {"type", "title", "status", "detail"}, where
        assert body["status"] == response.status_code
        if response.status_code == 401:
            assert body["detail"] == UNAUTHENTICATED, where
        else:
            principal = world.principals[caller]
            assert body["detail"] == f"access denied: {principal} may not {route.action}", where
        assert not _leaks(response.text, world, caller), (where, response.text)
        if route.missing is not None:
            other = route.call(client, token, route.missing)
            assert (other.status_code, other.text) == (response.status_code, response.text), where


def test_allowed_callers_learn_what_is_missing(client: TestClient, world: World) -> None:
    """The counterpart: to a caller allowed to ask, a missing thing is a 404 problem."""
    for route in routes(world):
        if route.missing is None:
            continue
        token = world.tokens["admin"]
        response = route.call(client, token, route.missing)
        assert response.status_code == 404, (route.missing, response.text)
        assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
        assert response.json()["type"] == "urn:immutrail:problem:not-found"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/ledger/entries?limit=0", None),
        ("GET", "/api/v1/ledger/entries/not-an-index", None),
        ("GET", "/api/v1/audit/at?env=NOT_AN_ENV&time=yesterday", None),
        ("GET", "/api/v1/artifacts/sha256:short", None),
        ("POST", "/api/v1/ledger/entries", {"type": "Bad Type"}),
        ("POST", "/api/v1/ledger/entries", "not json at all"),
    ],
)
def test_invalid_requests_are_refused_before_they_are_judged(
    client: TestClient, world: World, method: str, path: str, body: object
) -> None:
    """A malformed request from someone who may not call the route is a 401/403, not a 422
    that would describe the route's parameters to them; the allowed caller gets the 422."""
    content = body if isinstance(body, str) else None
    data = None if isinstance(body, str) else body

    def call(caller: str) -> Any:
        return client.request(
            method, path, headers=auth(world.tokens[caller]), json=data, content=content
        )

    assert call("none").status_code == 401
    refused = call("auditor" if method == "POST" else "none")
    assert refused.status_code in (401, 403)
    if "audit" in path:
        assert call("builder").status_code == 403
    allowed = call("admin")
    assert allowed.status_code in (400, 422), allowed.text
    assert allowed.headers["content-type"] == PROBLEM_MEDIA_TYPE
