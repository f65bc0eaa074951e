"""Who is looking: the session cookie, its CSRF companion, and the per-request access check.

The session cookie holds the API token itself (HttpOnly, SameSite=Strict, path ``/ui``, Secure
over HTTPS), so any number of API servers sharing a ledger serve the same sessions and nothing
is kept on the server. Every request authenticates the token again against the ledger's access
events, so revoking the token or disabling its principal ends the session at once, and its expiry
is checked on the server's clock.

Forms that change anything (log in, log out, build a bundle, which may sign a checkpoint) carry
a CSRF token that must equal the ``immutrail_ui_csrf`` cookie (double submit); a request whose
``Origin`` names another host is refused as well. SameSite=Strict already keeps other sites'
requests from carrying the cookies; the two checks do not rely on it.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from fastapi import Request, Response

from immutrail.access import Action, Identity
from immutrail.access.errors import AuthenticationError
from immutrail.api.auth import AccessCache
from immutrail.api.settings import settings_of
from immutrail.ledger.ledger import Ledger

from .paths import HOME, PREFIX

SESSION_COOKIE = "immutrail_ui_session"
CSRF_COOKIE = "immutrail_ui_csrf"
MAX_SESSION = timedelta(hours=8)
"""How long the browser keeps the session (never past the token's expiry)."""
MAX_TOKEN_CHARS = 200
"""Far above a token's 85 characters: anything longer is not read at all."""


class LoginRequired(Exception):  # noqa: N818 - a signal, not a failure
    """No session, or its token no longer authenticates: the page sends the browser to log in."""


class CsrfRefused(Exception):  # noqa: N818 - a signal, not a failure
    """A form without the right CSRF token, or sent from another origin."""


@dataclass(frozen=True)
class Viewer:
    """The authenticated principal behind a request, and what the pages may offer it."""

    identity: Identity
    csrf: str

    @property
    def principal(self) -> str:
        return self.identity.principal

    @property
    def can_export(self) -> bool:
        return self.identity.can(Action.AUDIT_EXPORT)


def now() -> datetime:
    return datetime.now(UTC)


def csrf_of(request: Request) -> str:
    """The browser's CSRF token, or a new one (set by :func:`keep_csrf` on the response)."""
    known = request.cookies.get(CSRF_COOKIE, "")
    if len(known) == 64 and all(c in "0123456789abcdef" for c in known):
        return known
    return secrets.token_hex(32)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def keep_csrf(request: Request, response: Response, token: str) -> None:
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(
            CSRF_COOKIE,
            token,
            path=PREFIX,
            httponly=True,
            samesite="strict",
            secure=_secure(request),
        )


def check_form(request: Request, submitted: str) -> None:
    """CsrfRefused unless the form's token equals the cookie and the origin is this server."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), submitted.encode()):
        raise CsrfRefused
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise CsrfRefused
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise CsrfRefused


def token_of(request: Request) -> str:
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token or len(token) > MAX_TOKEN_CHARS:
        raise LoginRequired
    return token


def identify(request: Request, ledger: Ledger, token: str) -> Identity:
    """The token's principal now; AuthenticationError (one message for every failure).

    Through the app's access cache, shared with the API: one replayed access state per
    process, refreshed with the events appended since, so a revoked token stops at once.
    """
    cache: AccessCache = request.app.state.access
    return cache.identify(settings_of(request.app), ledger, token)


def viewer_for(request: Request, ledger: Ledger) -> Viewer:
    """The request's authenticated viewer; LoginRequired without a working session.

    Nothing about the ledger's content but its access events is read before this returns.
    """
    try:
        identity = identify(request, ledger, token_of(request))
    except AuthenticationError as exc:
        raise LoginRequired from exc
    return Viewer(identity, csrf_of(request))


def start_session(request: Request, response: Response, token: str, identity: Identity) -> None:
    lifetime = MAX_SESSION
    if identity.token_expires is not None:
        lifetime = min(lifetime, identity.token_expires - now())
    response.set_cookie(
        SESSION_COOKIE,
        token.strip(),
        max_age=max(1, int(lifetime.total_seconds())),
        path=PREFIX,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )


def end_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path=PREFIX, httponly=True, samesite="strict")


def safe_next(target: str) -> str:
    """Where to go after logging in: a page of the UI, never another site (open redirect)."""
    parts = urlsplit(target)
    if (
        parts.scheme
        or parts.netloc
        or not target.startswith(PREFIX + "/")
        or target.startswith("//")
        or "\\" in target
        or any(ord(c) < 0x21 for c in target)
    ):
        return HOME
    return target
