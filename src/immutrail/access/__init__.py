"""Access control and accountability: principals, roles, API tokens, authorization.

Every change of access is a ledger event and the state is their replay (:mod:`.registry`).
A caller is authenticated by a token or a key (:func:`authenticate`), then authorized for an
action in an environment (:func:`authorize`); the ledger records that identity as the actor.
See docs/access.md.
"""

from __future__ import annotations

from .authenticate import Identity, Method, authenticate, authorize, require, whoami
from .errors import AccessDenied, AccessError, AccessInputError, AuthenticationError
from .manage import (
    Bootstrapped,
    CreatedToken,
    NewPrincipal,
    authorize_token_change,
    bootstrap,
    create_principal,
    create_token,
    disable_principal,
    grant_role,
    list_grants,
    list_principals,
    list_tokens,
    revoke_role,
    revoke_token,
    show_principal,
)
from .model import ENV_SCOPED, ROLE_ACTIONS, Action, Grant, Role
from .registry import AccessState, Kind, Principal, Rejected, Token

__all__ = [
    "ENV_SCOPED",
    "ROLE_ACTIONS",
    "AccessDenied",
    "AccessError",
    "AccessInputError",
    "AccessState",
    "Action",
    "AuthenticationError",
    "Bootstrapped",
    "CreatedToken",
    "Grant",
    "Identity",
    "Kind",
    "Method",
    "NewPrincipal",
    "Principal",
    "Rejected",
    "Role",
    "Token",
    "authenticate",
    "authorize",
    "authorize_token_change",
    "bootstrap",
    "create_principal",
    "create_token",
    "disable_principal",
    "grant_role",
    "list_grants",
    "list_principals",
    "list_tokens",
    "require",
    "revoke_role",
    "revoke_token",
    "show_principal",
    "whoami",
]
