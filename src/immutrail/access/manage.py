"""Changing access: principals, roles and tokens, each change an event appended by its actor.

Every function takes the authenticated :class:`Identity` of the caller, authorizes it first
(so a refused caller learns nothing about the target), validates the change against the current
:class:`AccessState` with the very rules the replay applies, signs the events with the caller's
key when it authenticated with one, appends them in one batch, and then replays what was
appended to confirm that it counts (a concurrent change can make it not count: AccessError).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from immutrail.crypto.keys import load_private_key
from immutrail.keys.keystore import Generated, generate_key
from immutrail.ledger.event import Event, format_time, sign_event
from immutrail.ledger.ledger import Ledger

from .authenticate import Identity, Method, authorize
from .errors import AccessError, AccessInputError
from .model import Action, Grant, Role, normalize_environments, parse_action
from .registry import (
    AUTH_BOOTSTRAP,
    EVENT_PRINCIPAL_CREATED,
    EVENT_PRINCIPAL_DISABLED,
    EVENT_ROLE_GRANTED,
    EVENT_ROLE_REVOKED,
    EVENT_TOKEN_CREATED,
    EVENT_TOKEN_REVOKED,
    MAX_DISPLAY_NAME,
    MAX_REASON,
    AccessState,
    Kind,
    Principal,
    Token,
    UnauthorizedEventError,
    check_email,
    check_principal_name,
    check_text,
    grant_payload,
    parse_kind,
    principal_subject,
    replayed,
)
from .tokens import check_expiry, check_token_id, new_token

__all__ = [
    "Bootstrapped",
    "NewPrincipal",
    "authorize_token_change",
    "bootstrap",
    "create_principal",
    "create_token",
    "disable_principal",
    "grant_role",
    "list_grants",
    "list_principals",
    "list_tokens",
    "revoke_role",
    "revoke_token",
    "show_principal",
]


@dataclass(frozen=True)
class NewPrincipal:
    """The details of a principal to create, checked before anything is written."""

    name: str
    kind: Kind
    display_name: str
    email: str | None = None

    @classmethod
    def check(
        cls, name: str, kind: str, display_name: str | None, email: str | None = None
    ) -> NewPrincipal:
        check_principal_name(name)
        return cls(
            name,
            parse_kind(kind),
            check_text(display_name or name, "the display name", MAX_DISPLAY_NAME),
            None if email is None else check_email(email),
        )

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "display_name": self.display_name}
        if self.email is not None:
            out["email"] = self.email
        return out


@dataclass(frozen=True)
class Bootstrapped:
    principal: Principal
    key: Generated
    indices: list[int]


@dataclass(frozen=True)
class CreatedToken:
    token: Token
    secret: str
    """The whole ``imt_…`` token: show it once, it is kept nowhere."""
    index: int


def _event(identity: Identity, kind: str, name: str, payload: dict[str, Any]) -> Event:
    event = Event.create(
        kind,
        identity.principal,
        principal_subject(name),
        {**payload, "auth": identity.auth_payload()},
    )
    if identity.method is Method.KEY:
        if identity.signing_key is None:
            raise AccessInputError("a key identity without its unlocked key cannot sign")
        event = sign_event(event, identity.signing_key.private)
    return event


def _current(ledger: Ledger, state: AccessState | None) -> AccessState:
    """``state`` brought up to date (or the store's shared replay): a change is checked against
    the latest ledger, never against what some earlier call saw."""
    if state is None:
        return replayed(ledger)
    state.refresh(ledger)
    return state


def _commit(ledger: Ledger, state: AccessState, events: Sequence[Event]) -> list[int]:
    """Check ``events`` in order on a copy of ``state``; append; confirm they all count."""
    preview = state.copy()
    for offset, event in enumerate(events):
        try:
            preview.check(state.size + offset, event)
        except UnauthorizedEventError as exc:
            raise AccessError(f"the change would not count: {exc}") from None
        preview.apply(state.size + offset, event)
    appended = ledger.append_batch(events)
    outcome = state.refresh(ledger)
    for item in appended:
        reason = outcome.get(item.index)
        if reason is not None:
            raise AccessError(
                f"the change recorded at ledger index {item.index} does not count: {reason}",
                hint="Another change of access was made at the same time; look at the current "
                "state and try again.",
            )
    return [item.index for item in appended]


def bootstrap(
    home: Path,
    ledger: Ledger,
    new: NewPrincipal,
    *,
    passphrase: bytes | None,
    algorithm: str = "ed25519",
    state: AccessState | None = None,
) -> Bootstrapped:
    """Create the first principal, an admin, with a new key of its own (once, unauthenticated).

    The key is generated and announced (``key.created``) first; then ``principal.created`` and
    ``role.granted`` admin, both marked ``bootstrap`` and signed by that key, are appended
    together. On a ledger that already has principals: AccessInputError, nothing written.
    """
    current = _current(ledger, state)
    if current.bootstrapped:
        raise AccessInputError(
            "access is already set up: only an admin can create principals now",
            hint="Authenticate with --as ADMIN or --token.",
        )
    generated = generate_key(
        home, ledger, new.name, actor=new.name, algorithm=algorithm, passphrase=passphrase
    )
    current.refresh(ledger)  # learn the key just announced
    private = load_private_key(generated.path, passphrase)
    keyid = generated.info.keyid
    auth = {"method": AUTH_BOOTSTRAP, "key_id": keyid}
    subject = principal_subject(new.name)
    created = Event.create(
        EVENT_PRINCIPAL_CREATED,
        new.name,
        subject,
        {**new.payload(), "bootstrap": True, "keys": [keyid], "auth": auth},
    )
    granted = Event.create(
        EVENT_ROLE_GRANTED,
        new.name,
        subject,
        {**grant_payload(Role.ADMIN, None), "bootstrap": True, "auth": auth},
    )
    indices = _commit(ledger, current, [sign_event(created, private), sign_event(granted, private)])
    principal = current.principals[new.name]
    return Bootstrapped(principal, generated, indices)


def create_principal(
    ledger: Ledger,
    identity: Identity,
    new: NewPrincipal,
    *,
    roles: Sequence[Role] = (),
    environments: Sequence[str] | None = None,
    adopt_keys: Sequence[str] = (),
    state: AccessState | None = None,
) -> tuple[Principal, list[int]]:
    """``principal.created`` (and ``role.granted`` for each of ``roles`` in ``environments``,
    None: every environment), appended together. ``adopt_keys``: keys announced for this name
    before it existed that may authenticate it."""
    authorize(identity, Action.PRINCIPALS_MANAGE)
    current = _current(ledger, state)
    payload = new.payload()
    if adopt_keys:
        payload["keys"] = sorted({k.strip().lower().removeprefix("key:") for k in adopt_keys})
    events = [_event(identity, EVENT_PRINCIPAL_CREATED, new.name, payload)]
    for role in dict.fromkeys(roles):
        envs = normalize_environments(role, environments)
        events.append(_event(identity, EVENT_ROLE_GRANTED, new.name, grant_payload(role, envs)))
    indices = _commit(ledger, current, events)
    return current.principals[new.name], indices


def disable_principal(
    ledger: Ledger,
    identity: Identity,
    name: str,
    *,
    reason: str,
    state: AccessState | None = None,
) -> tuple[Principal, int]:
    """``principal.disabled``: its tokens and keys no longer authenticate; final."""
    authorize(identity, Action.PRINCIPALS_MANAGE)
    current = _current(ledger, state)
    check_principal_name(name)
    text = check_text(reason, "the reason (--reason)", MAX_REASON)
    (index,) = _commit(
        ledger, current, [_event(identity, EVENT_PRINCIPAL_DISABLED, name, {"reason": text})]
    )
    return current.principals[name], index


def grant_role(
    ledger: Ledger,
    identity: Identity,
    name: str,
    role: Role,
    environments: Sequence[str] | None,
    *,
    state: AccessState | None = None,
) -> tuple[Grant, int]:
    """``role.granted``: ``role`` for ``name`` in ``environments`` (None: every environment)."""
    authorize(identity, Action.PRINCIPALS_MANAGE)
    current = _current(ledger, state)
    check_principal_name(name)
    envs = normalize_environments(role, environments)
    (index,) = _commit(
        ledger, current, [_event(identity, EVENT_ROLE_GRANTED, name, grant_payload(role, envs))]
    )
    return Grant(name, role, current.grants[(name, role)]), index


def revoke_role(
    ledger: Ledger,
    identity: Identity,
    name: str,
    role: Role,
    environments: Sequence[str] | None,
    *,
    state: AccessState | None = None,
) -> tuple[Grant | None, int]:
    """``role.revoked``: ``role`` in ``environments`` (None: entirely); what remains of it."""
    authorize(identity, Action.PRINCIPALS_MANAGE)
    current = _current(ledger, state)
    check_principal_name(name)
    envs = None if environments is None else normalize_environments(role, environments)
    (index,) = _commit(
        ledger, current, [_event(identity, EVENT_ROLE_REVOKED, name, grant_payload(role, envs))]
    )
    remaining = current.grants.get((name, role), frozenset())
    return (None if remaining == frozenset() else Grant(name, role, remaining)), index


def authorize_token_change(identity: Identity, owner: str) -> None:
    """Own tokens need ``tokens.manage.own``; anyone else's ``tokens.manage``."""
    authorize(
        identity, Action.TOKENS_MANAGE_OWN if owner == identity.principal else Action.TOKENS_MANAGE
    )


def create_token(
    ledger: Ledger,
    identity: Identity,
    owner: str | None = None,
    *,
    expires: datetime,
    now: datetime,
    scopes: Sequence[str] | None = None,
    state: AccessState | None = None,
) -> CreatedToken:
    """A new token for ``owner`` (default: the caller); the secret is returned, never stored.

    A caller who authenticated with a token can create only tokens that expire no later than
    its own and have no wider scopes, so that revoking one token ends what it began.
    """
    name = identity.principal if owner is None else check_principal_name(owner)
    authorize_token_change(identity, name)
    current = _current(ledger, state)
    when = check_expiry(expires, now)
    wanted = None if scopes is None else sorted({parse_action(s).value for s in scopes})
    if wanted is not None and not wanted:
        raise AccessInputError("give at least one scope, or none for all the principal may do")
    made = new_token()
    payload: dict[str, Any] = {
        "token_id": made.token_id,
        "secret_sha256": made.secret_sha256,
        "expires": format_time(when),
        "created_by": identity.principal,
    }
    if wanted is not None:
        payload["scopes"] = wanted
    (index,) = _commit(ledger, current, [_event(identity, EVENT_TOKEN_CREATED, name, payload)])
    return CreatedToken(current.tokens[made.token_id], made.token, index)


def revoke_token(
    ledger: Ledger,
    identity: Identity,
    token_id: str,
    *,
    reason: str | None = None,
    state: AccessState | None = None,
) -> tuple[Token, int]:
    """``token.revoked``: the token stops authenticating at once.

    A caller without ``tokens.manage`` gets the same answer for another principal's token as
    for one that does not exist.
    """
    wanted = check_token_id(token_id)
    authorize(identity, Action.TOKENS_MANAGE_OWN)
    current = _current(ledger, state)
    found = current.tokens.get(wanted)
    if found is None or found.principal != identity.principal:
        if not identity.can(Action.TOKENS_MANAGE):
            raise AccessInputError(f"you have no token {wanted}")
        if found is None:
            raise AccessInputError(f"there is no token {wanted}")
    payload: dict[str, Any] = {"token_id": wanted}
    if reason is not None:
        payload["reason"] = check_text(reason, "the reason", MAX_REASON)
    (index,) = _commit(
        ledger, current, [_event(identity, EVENT_TOKEN_REVOKED, found.principal, payload)]
    )
    return current.tokens[wanted], index


# -- reading -------------------------------------------------------------------------------------


def _may_read(identity: Identity, name: str | None) -> None:
    """Anyone reads about themselves; reading about others (or everyone) needs audit.read."""
    if name != identity.principal:
        authorize(identity, Action.AUDIT_READ)


def list_principals(state: AccessState, identity: Identity) -> list[Principal]:
    _may_read(identity, None)
    return sorted(state.principals.values(), key=lambda p: p.created_index)


def show_principal(state: AccessState, identity: Identity, name: str) -> dict[str, Any]:
    check_principal_name(name)
    _may_read(identity, name)
    found = state.principal(name)
    if found is None:
        raise AccessInputError(f"there is no principal {name}")
    keys = [
        {
            "keyid": k.keyid,
            "purpose": k.purpose,
            "counts": state.key_counts(k.keyid, name) is not None,
        }
        for k in sorted(state.keys.values(), key=lambda k: k.created_index)
        if k.principal == name
    ]
    return {
        **found.to_dict(),
        "roles": [g.to_dict() for g in state.grants_of(name)],
        "keys": keys,
        "tokens": [t.token_id for t in state.tokens_of(name)],
    }


def list_grants(state: AccessState, identity: Identity, name: str | None = None) -> list[Grant]:
    if name is not None:
        check_principal_name(name)
    _may_read(identity, name)
    names = sorted(state.principals) if name is None else [name]
    return [g for n in names for g in state.grants_of(n)]


def list_tokens(
    state: AccessState, identity: Identity, owner: str | None = None, *, everyone: bool = False
) -> list[Token]:
    """The caller's tokens; ``owner``'s or ``everyone``'s need audit.read or tokens.manage."""
    name = None if everyone else (owner or identity.principal)
    if name is not None:
        check_principal_name(name)
    if name != identity.principal and not identity.can(Action.TOKENS_MANAGE):
        authorize(identity, Action.AUDIT_READ)
    tokens = state.tokens.values() if name is None else state.tokens_of(name)
    return sorted(tokens, key=lambda t: t.created_index)
