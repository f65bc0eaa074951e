"""Who is calling (:func:`authenticate`) and whether they may do this (:func:`authorize`).

A caller authenticates with an API token (``--token`` / ``IMMUTRAIL_TOKEN``) or as a principal
(``--as`` / ``IMMUTRAIL_PRINCIPAL``) by holding one of its keys: a key announced in the ledger for
that principal, not revoked, whose private half is in the local key store (or ``--key-file``) and
can be unlocked. The resulting :class:`Identity` is what every command records as the actor, so
the ledger never holds a name that was merely typed.

Failures say as little as possible: every token failure is "invalid or expired token", and an
unknown, disabled or key-less principal gets one and the same message.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from immutrail.artifacts.statements import LedgerKey
from immutrail.crypto.keys import key_id
from immutrail.keys.keystore import KEYS_DIR, SigningKey, load_key_file
from immutrail.keys.passphrase import PassphraseSource
from immutrail.ledger.event import format_time
from immutrail.ledger.ledger import Ledger

from .errors import (
    INVALID_TOKEN,
    AccessDenied,
    AccessInputError,
    AuthenticationError,
    cannot_authenticate,
)
from .model import ENV_SCOPED, Action, Grant, Role, check_environment, parse_action
from .registry import (
    AUTH_KEY,
    AUTH_TOKEN,
    AccessState,
    KeyRecord,
    check_principal_name,
    permitted,
    replayed,
)
from .tokens import hash_secret, split_token

__all__ = [
    "Identity",
    "Method",
    "authenticate",
    "authorize",
    "require",
    "whoami",
]

_DUMMY_HASH = hash_secret("0" * 64)


class Method(StrEnum):
    TOKEN = "token"  # noqa: S105 - a method name
    KEY = "key"


@dataclass(frozen=True)
class Identity:
    """An authenticated principal: how it proved itself, and what it was granted then."""

    principal: str
    method: Method
    token_id: str | None
    key_id: str | None
    grants: tuple[Grant, ...]
    scopes: frozenset[Action] | None = None
    """A token's scopes: it may do only these, within its principal's roles."""
    token_expires: datetime | None = None
    signing_key: SigningKey | None = field(default=None, repr=False, compare=False)
    """The unlocked key (key method only): access events are signed with it."""

    @property
    def roles(self) -> tuple[Role, ...]:
        return tuple(sorted({g.role for g in self.grants}))

    @property
    def credential(self) -> str:
        value = self.token_id if self.method is Method.TOKEN else self.key_id
        return value or ""

    def auth_payload(self) -> dict[str, str]:
        """What events record of how the actor authenticated (``payload.auth``)."""
        if self.method is Method.TOKEN:
            return {"method": AUTH_TOKEN, "token_id": self.credential}
        return {"method": AUTH_KEY, "key_id": self.credential}

    def can(self, action: Action | str, environment: str | None = None) -> bool:
        try:
            authorize(self, action, environment)
        except AccessDenied:
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "method": self.method.value,
            "token_id": self.token_id,
            "key_id": self.key_id,
            "roles": [g.to_dict() for g in self.grants],
            "scopes": None if self.scopes is None else sorted(s.value for s in self.scopes),
            "token_expires": None
            if self.token_expires is None
            else format_time(self.token_expires),
        }


def authenticate(
    home: Path,
    ledger: Ledger,
    *,
    principal: str | None,
    token: str | None,
    key_file: Path | None,
    passphrase_file: Path | None,
    now: datetime,
    state: AccessState | None = None,
    passphrase: PassphraseSource | None = None,
) -> Identity:
    """The caller, proved by a token or by a key of ``principal``; AuthenticationError if not.

    ``now`` is the caller's clock (token expiry). ``state``: a replay the caller holds, else the
    store's shared one (:func:`.registry.replayed`); ``passphrase`` replaces ``passphrase_file``
    (the CLI passes one that can prompt).
    With a token, ``principal`` (when given) must be the token's principal.
    """
    current = replayed(ledger) if state is None else state
    if token:
        if key_file is not None:
            raise AccessInputError("give either a token or a key file, not both")
        return _by_token(current, token, principal, now)
    if principal is None:
        raise AuthenticationError(
            "authentication required",
            hint="Give --as PRINCIPAL (with a key of it here) or --token "
            "(or set IMMUTRAIL_PRINCIPAL / IMMUTRAIL_TOKEN).",
        )
    source = passphrase if passphrase is not None else PassphraseSource(passphrase_file)
    return _by_key(home, current, check_principal_name(principal), key_file, source)


def _by_token(state: AccessState, token: str, principal: str | None, now: datetime) -> Identity:
    token_id, secret = split_token(token)
    found = state.tokens.get(token_id)
    # Hash and compare even for an unknown id, so the time taken does not tell which ids exist.
    matches = hmac.compare_digest(
        hash_secret(secret), found.secret_sha256 if found else _DUMMY_HASH
    )
    if found is None or not matches or found.status(now) != "active":
        raise AuthenticationError(INVALID_TOKEN)
    holder = state.principal(found.principal)
    if holder is None or not holder.enabled or principal not in (None, found.principal):
        raise AuthenticationError(INVALID_TOKEN)
    return Identity(
        principal=found.principal,
        method=Method.TOKEN,
        token_id=found.token_id,
        key_id=None,
        grants=state.grants_of(found.principal),
        scopes=found.scopes,
        token_expires=found.expires,
    )


def _by_key(
    home: Path,
    state: AccessState,
    principal: str,
    key_file: Path | None,
    passphrase: PassphraseSource,
) -> Identity:
    if key_file is not None:
        # Unlock first: until the caller proved they hold a key, the ledger is not consulted.
        private = load_key_file(key_file, passphrase)
        record = _usable(state, principal, key_id(private.public_key()))
        path = key_file
    else:
        record = _local_key(home, state, principal)
        path = home / KEYS_DIR / principal / f"{record.keyid}.key"
        private = load_key_file(path, passphrase)
        if key_id(private.public_key()) != record.keyid:
            raise AuthenticationError(f"{path} does not hold key {record.keyid}: it was replaced")
    ledger_key = LedgerKey(
        record.keyid, record.public, record.principal, record.purpose, record.created_index
    )
    return Identity(
        principal=principal,
        method=Method.KEY,
        token_id=None,
        key_id=record.keyid,
        grants=state.grants_of(principal),
        signing_key=SigningKey(private, ledger_key, path),
    )


def _usable(state: AccessState, principal: str, keyid: str) -> KeyRecord:
    holder = state.principal(principal)
    record = state.key_counts(keyid, principal)
    if holder is None or not holder.enabled or record is None:
        raise AuthenticationError(cannot_authenticate(principal))
    return record


def _local_key(home: Path, state: AccessState, principal: str) -> KeyRecord:
    """The newest key of ``principal`` that counts and whose private half is in the key store."""
    folder = home / KEYS_DIR / principal
    found: list[KeyRecord] = []
    holder = state.principal(principal)
    if holder is not None and holder.enabled and folder.is_dir():
        for path in folder.glob("*.key"):
            record = state.key_counts(path.stem, principal)
            if record is not None:
                found.append(record)
    if not found:
        raise AuthenticationError(cannot_authenticate(principal))
    return max(found, key=lambda r: r.created_index)


def authorize(identity: Identity, action: Action | str, environment: str | None = None) -> None:
    """None when ``identity`` may perform ``action`` (in ``environment``); else AccessDenied.

    For an environment-scoped action, ``environment`` None means "in every environment" and
    needs a grant for all of them. A global action ignores ``environment``.
    """
    wanted = action if isinstance(action, Action) else parse_action(action)
    scoped = wanted in ENV_SCOPED
    if environment is not None:
        check_environment(environment)
    where = environment if scoped else None
    if not permitted(identity.grants, identity.scopes, wanted, where):
        raise AccessDenied(identity.principal, wanted.value, where, scoped=scoped)


def require(
    home: Path,
    ledger: Ledger,
    action: Action | str,
    environment: str | None = None,
    *,
    principal: str | None,
    token: str | None,
    key_file: Path | None,
    passphrase_file: Path | None,
    now: datetime,
    passphrase: PassphraseSource | None = None,
) -> Identity:
    """:func:`authenticate`, then :func:`authorize`: what a command does before anything else."""
    identity = authenticate(
        home,
        ledger,
        principal=principal,
        token=token,
        key_file=key_file,
        passphrase_file=passphrase_file,
        now=now,
        passphrase=passphrase,
    )
    authorize(identity, action, environment)
    return identity


def whoami(identity: Identity) -> dict[str, Any]:
    """The caller, how it authenticated, its roles, and every action it may take (and where)."""
    allowed: list[dict[str, Any]] = []
    for action in Action:
        if action in ENV_SCOPED:
            everywhere = permitted(identity.grants, identity.scopes, action, None)
            envs = sorted(
                {
                    env
                    for g in identity.grants
                    if g.environments is not None
                    for env in g.environments
                    if permitted(identity.grants, identity.scopes, action, env)
                }
            )
            if everywhere or envs:
                allowed.append(
                    {"action": action.value, "environments": "*" if everywhere else envs}
                )
        elif permitted(identity.grants, identity.scopes, action, None):
            allowed.append({"action": action.value, "environments": None})
    return {**identity.to_dict(), "allowed": allowed}
