"""Who exists, holds which role and token: state replayed from the ledger's access events.

The ledger is the truth. :class:`AccessState` reads, in ledger order, ``principal.created``,
``principal.disabled``, ``role.granted``, ``role.revoked``, ``token.created``, ``token.revoked``
and the key store's ``key.created`` / ``key.revoked``, and applies each access event only when
it counts:

- its actor is an enabled principal who, at that point of the ledger, holds the permission the
  change needs (``principals.manage`` for principals and roles, ``tokens.manage`` or
  ``tokens.manage.own`` for tokens);
- the actor proved who they were: the event carries a DSSE signature by a key that counted for
  the actor at that point, or (unsigned) names in ``payload.auth`` a token of the actor that was
  live at the event's time and whose scopes allow the change;
- the change makes sense (the principal exists, the role is held, the last admin stays ...).

A ``key.created`` counts by the same rules once a principal exists (``keys.manage``, or
``keys.manage.own`` and a signature for one's own key): otherwise whoever could append an event
could announce a key of their own for an admin and then authenticate as that admin.

An event that does not count changes nothing and is listed in :attr:`AccessState.rejected` with
the reason, so a forged or tampered event can neither grant nor hide anything. The one exception
to the actor rule is the bootstrap: on a ledger with no principal, a ``principal.created`` with
``bootstrap: true`` signed by a key announced for that new principal, followed at the very next
index by its own ``role.granted`` admin (also signed).

The state is rebuilt on every open (no cache to go stale); :meth:`AccessState.refresh` applies
only what was appended since, and equals a full replay (the tests check it). :func:`replayed`
keeps one replay per opened store current for a command's several checks; :func:`counting_keys`
is what every signature check trusts (attestations, approvals, policy): the keys whose
announcement counts.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from email_validator import EmailNotValidError, validate_email

from immutrail.artifacts.statements import EVENT_KEY_CREATED, EVENT_KEY_REVOKED
from immutrail.crypto.errors import CryptoError
from immutrail.crypto.keys import PublicKey, key_id, load_public_key_pem
from immutrail.keys.names import PRINCIPAL_GRAMMAR, PURPOSE_BUILDER
from immutrail.ledger.errors import LedgerInputError
from immutrail.ledger.event import Event, parse_entry, parse_time, verify_event_signature
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter, EntryRow

from .errors import AccessInputError
from .model import (
    ALL_ENVIRONMENTS,
    Action,
    Grant,
    Role,
    environments_from_json,
    environments_to_json,
    normalize_environments,
    parse_action,
    parse_role,
)
from .tokens import TOKEN_ID_RE

__all__ = [
    "ACCESS_EVENTS",
    "EVENT_PRINCIPAL_CREATED",
    "EVENT_PRINCIPAL_DISABLED",
    "EVENT_ROLE_GRANTED",
    "EVENT_ROLE_REVOKED",
    "EVENT_TOKEN_CREATED",
    "EVENT_TOKEN_REVOKED",
    "AccessState",
    "KeyRecord",
    "Kind",
    "Principal",
    "Rejected",
    "Token",
    "check_principal_name",
    "permitted",
    "principal_subject",
]

EVENT_PRINCIPAL_CREATED = "principal.created"
EVENT_PRINCIPAL_DISABLED = "principal.disabled"
EVENT_ROLE_GRANTED = "role.granted"
EVENT_ROLE_REVOKED = "role.revoked"
EVENT_TOKEN_CREATED = "token.created"  # noqa: S105 - an event type
EVENT_TOKEN_REVOKED = "token.revoked"  # noqa: S105 - an event type
ACCESS_EVENTS = (
    EVENT_PRINCIPAL_CREATED,
    EVENT_PRINCIPAL_DISABLED,
    EVENT_ROLE_GRANTED,
    EVENT_ROLE_REVOKED,
    EVENT_TOKEN_CREATED,
    EVENT_TOKEN_REVOKED,
)
REPLAYED_EVENTS = (*ACCESS_EVENTS, EVENT_KEY_CREATED, EVENT_KEY_REVOKED)
"""The event types the access state is replayed from."""

SUBJECT_PREFIX = "principal:"
MAX_DISPLAY_NAME = 200
MAX_REASON = 1000
MAX_KEYS = 20

AUTH_BOOTSTRAP = "bootstrap"
AUTH_KEY = "key"
AUTH_TOKEN = "token"  # noqa: S105 - a method name

_PRINCIPAL_RE = re.compile(PRINCIPAL_GRAMMAR)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")


class Kind(StrEnum):
    PERSON = "person"
    AUTOMATION = "automation"


def check_principal_name(name: str) -> str:
    if not isinstance(name, str) or not _PRINCIPAL_RE.fullmatch(name):
        raise AccessInputError(
            f"{name!r} is not a principal name",
            hint="Use 1-128 characters: a lower-case letter or digit first, then lower-case "
            "letters, digits and . _ @ : - (for example alice or ci@example.org).",
        )
    return name


def principal_subject(name: str) -> str:
    return SUBJECT_PREFIX + name


def check_text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise AccessInputError(f"{what} must not be empty")
    text = value.strip()
    if len(text) > limit or _CONTROL_RE.search(text):
        raise AccessInputError(f"{what} must be at most {limit} characters, without control codes")
    return text


def check_email(value: str) -> str:
    """The normalized address; syntax only (nothing is sent, no DNS is asked)."""
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise AccessInputError(f"{value!r} is not an e-mail address: {exc}") from None


@dataclass(frozen=True)
class Principal:
    name: str
    kind: Kind
    display_name: str
    email: str | None
    created_index: int
    created_at: str
    created_by: str
    bootstrap: bool = False
    adopted_keys: frozenset[str] = frozenset()
    """Keys announced before the principal existed that its creator vouched for."""
    disabled_index: int | None = None
    disabled_at: str | None = None
    disabled_by: str | None = None
    disabled_reason: str | None = None

    @property
    def enabled(self) -> bool:
        return self.disabled_index is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "display_name": self.display_name,
            "email": self.email,
            "enabled": self.enabled,
            "bootstrap": self.bootstrap,
            "created": {
                "index": self.created_index,
                "time": self.created_at,
                "by": self.created_by,
            },
            "disabled": None
            if self.disabled_index is None
            else {
                "index": self.disabled_index,
                "time": self.disabled_at,
                "by": self.disabled_by,
                "reason": self.disabled_reason,
            },
        }


@dataclass(frozen=True)
class Token:
    """A token as the ledger knows it: never the secret, only its SHA-256."""

    token_id: str
    principal: str
    secret_sha256: str
    expires: datetime
    expires_text: str
    scopes: frozenset[Action] | None
    created_index: int
    created_at: str
    created_by: str
    revoked_index: int | None = None
    revoked_at: str | None = None
    revoked_by: str | None = None
    revoked_reason: str | None = None

    def status(self, now: datetime) -> str:
        if self.revoked_index is not None:
            return "revoked"
        return "active" if now < self.expires else "expired"

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "principal": self.principal,
            "status": self.status(now),
            "expires": self.expires_text,
            "scopes": None if self.scopes is None else sorted(s.value for s in self.scopes),
            "created": {
                "index": self.created_index,
                "time": self.created_at,
                "by": self.created_by,
            },
            "revoked": None
            if self.revoked_index is None
            else {
                "index": self.revoked_index,
                "time": self.revoked_at,
                "by": self.revoked_by,
                "reason": self.revoked_reason,
            },
        }


@dataclass(frozen=True)
class KeyRecord:
    """A key as ``key.created`` announced it, and when ``key.revoked`` withdrew it."""

    keyid: str
    principal: str
    purpose: str
    public: PublicKey
    created_index: int
    revoked_index: int | None = None


@dataclass(frozen=True)
class Rejected:
    """An access event that does not count, and why."""

    index: int
    type: str
    actor: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "type": self.type, "actor": self.actor, "reason": self.reason}


class UnauthorizedEventError(Exception):
    """The event's actor did not prove who they are or lacks the permission (replay only)."""


def permitted(
    grants: Iterable[Grant],
    scopes: frozenset[Action] | None,
    action: Action,
    environment: str | None,
) -> bool:
    """Whether ``grants`` (narrowed to ``scopes`` when given) allow ``action`` there."""
    if scopes is not None and action not in scopes:
        return False
    return any(grant.allows(action, environment) for grant in grants)


@dataclass
class AccessState:
    """The replayed state; build with :meth:`replay`, keep current with :meth:`refresh`."""

    principals: dict[str, Principal] = field(default_factory=dict)
    grants: dict[tuple[str, Role], frozenset[str] | None] = field(default_factory=dict)
    tokens: dict[str, Token] = field(default_factory=dict)
    keys: dict[str, KeyRecord] = field(default_factory=dict)
    rejected: list[Rejected] = field(default_factory=list)
    roles: dict[str, frozenset[Role]] = field(default_factory=dict)
    """Each principal's roles: an index of ``grants``, which every authorization reads."""
    size: int = 0
    """Ledger entries read so far: the next refresh starts here."""

    # -- reading the ledger ----------------------------------------------------------------------

    @classmethod
    def replay(cls, ledger: Ledger) -> AccessState:
        state = cls()
        state.refresh(ledger)
        return state

    def refresh(self, ledger: Ledger) -> dict[int, str | None]:
        """Apply the access events appended since; {index: None if it counts, else why not}."""
        size = ledger.head().size  # read first: an entry appended meanwhile waits for next time
        rows: list[EntryRow] = []
        for kind in REPLAYED_EVENTS:
            rows.extend(
                row
                for row in ledger.entries(EntryFilter(type=kind, start=self.size))
                if row.index < size
            )
        rows.sort(key=lambda row: row.index)
        outcome: dict[int, str | None] = {}
        for row in rows:
            try:
                event = parse_entry(row.data)
            except LedgerInputError as exc:  # `ledger verify` names such an entry too
                why = f"the entry is not a valid event: {exc}"
                if row.type in ACCESS_EVENTS:
                    self.rejected.append(Rejected(row.index, row.type, row.actor, why))
                reason: str | None = why
            else:
                reason = self.feed(row.index, event)
            if row.type in ACCESS_EVENTS:
                outcome[row.index] = reason
        self.size = max(self.size, size)
        return outcome

    def feed(self, index: int, event: Event) -> str | None:
        """Apply one event at ledger ``index`` if it counts; else why it does not."""
        if event.type == EVENT_KEY_CREATED:
            try:
                self._check_key_announcement(event)
            except UnauthorizedEventError as exc:
                reason = f"the key announcement does not count: {exc}"
                self.rejected.append(Rejected(index, event.type, event.actor, reason))
                return reason
            self._learn_key(index, event)
            return None
        if event.type == EVENT_KEY_REVOKED:
            self._forget_key(index, event)
            return None
        try:
            self.check(index, event)
        except (UnauthorizedEventError, AccessInputError) as exc:
            reason = str(exc)
            self.rejected.append(Rejected(index, event.type, event.actor, reason))
            return reason
        self.apply(index, event)
        return None

    def copy(self) -> AccessState:
        """An independent copy, to try a batch of events before appending it."""
        return replace(
            self,
            principals=dict(self.principals),
            grants=dict(self.grants),
            roles=dict(self.roles),
            tokens=dict(self.tokens),
            keys=dict(self.keys),
            rejected=list(self.rejected),
        )

    # -- questions -------------------------------------------------------------------------------

    @property
    def bootstrapped(self) -> bool:
        """Whether any principal exists: before that, only the bootstrap can change access."""
        return bool(self.principals)

    def principal(self, name: str) -> Principal | None:
        return self.principals.get(name)

    def grants_of(self, name: str) -> tuple[Grant, ...]:
        return tuple(
            Grant(name, role, self.grants[(name, role)])
            for role in sorted(self.roles.get(name, ()))
        )

    def tokens_of(self, name: str) -> list[Token]:
        return [t for t in self.tokens.values() if t.principal == name]

    def enabled_admins(self) -> list[str]:
        return sorted(
            name
            for (name, role) in self.grants
            if role is Role.ADMIN and self.principals[name].enabled
        )

    def key_counts(self, keyid: str, principal: str) -> KeyRecord | None:
        """The key, when it may speak for ``principal`` now: announced for it, not revoked, not
        the build key, and announced after the principal was created or vouched for then."""
        record = self.keys.get(keyid)
        holder = self.principals.get(principal)
        if record is None or holder is None or record.principal != principal:
            return None
        if record.revoked_index is not None or record.purpose == PURPOSE_BUILDER:
            return None  # the home's build key is a machine's, never a principal's proof
        if record.created_index < holder.created_index and keyid not in holder.adopted_keys:
            return None
        return record

    def to_dict(self, now: datetime) -> dict[str, Any]:
        """Everything, in a stable order: what an auditor reads, what the tests compare."""
        return {
            "principals": [
                {**p.to_dict(), "roles": [g.to_dict() for g in self.grants_of(p.name)]}
                for p in sorted(self.principals.values(), key=lambda p: p.created_index)
            ],
            "tokens": [
                t.to_dict(now) for t in sorted(self.tokens.values(), key=lambda t: t.created_index)
            ],
            "rejected": [r.to_dict() for r in sorted(self.rejected, key=lambda r: r.index)],
            "size": self.size,
        }

    # -- rules -----------------------------------------------------------------------------------

    def check(self, index: int, event: Event) -> None:
        """Raise unless ``event`` would count at ``index``: AccessInputError when the change
        itself is wrong, UnauthorizedEventError when its actor is not entitled to make it."""
        if event.type not in ACCESS_EVENTS:
            raise AccessInputError(f"{event.type} is not an access event")
        name = _subject_principal(event)
        payload = event.payload
        if event.type == EVENT_PRINCIPAL_CREATED and payload.get("bootstrap") is True:
            self._check_bootstrap_principal(event, name)
            self._check_new_principal(index, event, name)
            return
        if event.type == EVENT_ROLE_GRANTED and payload.get("bootstrap") is True:
            self._check_bootstrap_grant(index, event, name)
            return
        if "bootstrap" in payload:
            raise AccessInputError("only the first principal and its admin grant are a bootstrap")
        if event.type in (EVENT_TOKEN_CREATED, EVENT_TOKEN_REVOKED):
            needed = Action.TOKENS_MANAGE_OWN if name == event.actor else Action.TOKENS_MANAGE
        else:
            needed = Action.PRINCIPALS_MANAGE
        token = self._check_actor(event, needed)
        if event.type == EVENT_PRINCIPAL_CREATED:
            self._check_new_principal(index, event, name)
        elif event.type == EVENT_PRINCIPAL_DISABLED:
            holder = self._existing(name)
            if not holder.enabled:
                raise AccessInputError(f"{name} is already disabled")
            check_text(payload.get("reason"), "the reason", MAX_REASON)
            self._keep_an_admin(without_principal=name)
        elif event.type == EVENT_ROLE_GRANTED:
            self._check_grant(event, name)
        elif event.type == EVENT_ROLE_REVOKED:
            self._check_revoke(event, name)
        elif event.type == EVENT_TOKEN_CREATED:
            self._check_new_token(event, name, token)
        else:
            self._check_token_revoke(event, name)

    def _check_key_announcement(self, event: Event) -> None:
        """Once a principal exists, a ``key.created`` counts only when its actor proved itself
        and may add that key, as :func:`immutrail.access.actor.authorize_key_change` decides
        live: another principal's key needs ``keys.manage``; one's own ``keys.manage.own`` and a
        signature (a token cannot mint a key of its own principal). Otherwise anyone allowed to
        append could announce a key of their own for an admin and then speak as that admin.

        Before the bootstrap (setup mode) nothing can be authenticated yet: the bootstrap's own
        key is announced then. A home's build key is never a principal's proof (see
        :meth:`key_counts`), so its announcement needs none either.
        """
        payload = event.payload
        if not self.bootstrapped or payload.get("purpose") == PURPOSE_BUILDER:
            return
        # A signed announcement names its key by its signature: ``keys generate`` signs with
        # the caller's key (SigningLedger); a token-made one names its token in payload.auth.
        auth = payload.get("auth")
        if auth is None and event.signature is not None:
            auth = {"method": AUTH_KEY, "key_id": event.signature["keyid"]}
        owner = str(payload.get("principal") or event.actor)
        try:
            self._check_actor(event, Action.KEYS_MANAGE, auth)
            return
        except UnauthorizedEventError:
            if owner != event.actor:
                raise
        if self._check_actor(event, Action.KEYS_MANAGE_OWN, auth) is not None:
            raise UnauthorizedEventError("a token cannot announce a key of its own principal")

    def _check_actor(self, event: Event, needed: Action, auth: object = None) -> Token | None:
        """The actor is enabled, proved itself and holds ``needed``; the token it used, if any.
        ``auth``: how it authenticated, when not the event's ``payload.auth``."""
        actor = self.principals.get(event.actor)
        if actor is None or not actor.enabled:
            raise UnauthorizedEventError(f"its actor {event.actor} is not an enabled principal")
        if auth is None:
            auth = event.payload.get("auth")
        if not isinstance(auth, Mapping):
            raise UnauthorizedEventError(
                "it does not say how its actor authenticated (payload.auth)"
            )
        scopes: frozenset[Action] | None = None
        token: Token | None = None
        if event.signature is not None:
            keyid = event.signature["keyid"]
            if auth.get("method") != AUTH_KEY or auth.get("key_id") != keyid:
                raise UnauthorizedEventError("payload.auth does not name the key that signed it")
            record = self.key_counts(keyid, event.actor)
            if record is None:
                raise UnauthorizedEventError(
                    f"it is signed by key {keyid[:16]}, which does not count for {event.actor}"
                )
            try:
                verify_event_signature(event, record.public)
            except CryptoError as exc:
                raise UnauthorizedEventError(
                    f"its actor's signature does not verify: {exc}"
                ) from None
        else:
            if auth.get("method") != AUTH_TOKEN:
                raise UnauthorizedEventError(
                    "it is neither signed by its actor nor made with a token"
                )
            token = self.tokens.get(str(auth.get("token_id")))
            moment = parse_time(event.time)
            if (
                token is None
                or token.principal != event.actor
                or token.revoked_index is not None
                or not moment < token.expires
            ):
                raise UnauthorizedEventError(f"it names no live token of {event.actor}")
            scopes = token.scopes
        if not permitted(self.grants_of(event.actor), scopes, needed, None):
            raise UnauthorizedEventError(f"{event.actor} did not hold {needed.value}")
        return token

    def _check_bootstrap_principal(self, event: Event, name: str) -> None:
        if self.principals:
            raise UnauthorizedEventError("a bootstrap on a ledger that already has principals")
        if event.actor != name:
            raise UnauthorizedEventError("the bootstrap's actor is not the principal it creates")
        keyid = self._bootstrap_key(event)
        record = self.keys.get(keyid)
        if record is None or record.principal != name or record.revoked_index is not None:
            raise UnauthorizedEventError(
                f"the bootstrap key {keyid[:16]} is not announced for {name}"
            )
        try:
            verify_event_signature(event, record.public)
        except CryptoError as exc:
            raise UnauthorizedEventError(
                f"the bootstrap signature does not verify: {exc}"
            ) from None
        keys = event.payload.get("keys")
        if not isinstance(keys, list) or keyid not in keys:
            raise UnauthorizedEventError("the bootstrap key is not among the principal's keys")

    def _check_bootstrap_grant(self, index: int, event: Event, name: str) -> None:
        holder = self.principals.get(name)
        if (
            holder is None
            or not holder.bootstrap
            or holder.created_index != index - 1
            or len(self.principals) != 1
            or self.grants
        ):
            raise UnauthorizedEventError(
                "a bootstrap grant that does not follow the bootstrap principal"
            )
        if event.actor != name:
            raise UnauthorizedEventError(
                "the bootstrap grant's actor is not the bootstrap principal"
            )
        payload = event.payload
        if payload.get("role") != Role.ADMIN or payload.get("environments") != ALL_ENVIRONMENTS:
            raise UnauthorizedEventError(
                "the bootstrap grants admin for every environment, nothing else"
            )
        record = self.key_counts(self._bootstrap_key(event), name)
        if record is None:
            raise UnauthorizedEventError("the bootstrap grant is not signed by the bootstrap key")
        try:
            verify_event_signature(event, record.public)
        except CryptoError as exc:
            raise UnauthorizedEventError(
                f"the bootstrap signature does not verify: {exc}"
            ) from None

    @staticmethod
    def _bootstrap_key(event: Event) -> str:
        auth = event.payload.get("auth")
        if event.signature is None or not isinstance(auth, Mapping):
            raise UnauthorizedEventError("the bootstrap is not signed")
        keyid = event.signature["keyid"]
        if auth.get("method") != AUTH_BOOTSTRAP or auth.get("key_id") != keyid:
            raise UnauthorizedEventError("payload.auth does not name the bootstrap key")
        return keyid

    def _check_new_principal(self, index: int, event: Event, name: str) -> None:
        if name in self.principals:
            raise AccessInputError(
                f"the principal {name} already exists",
                hint="Names are never reused, not even after a principal is disabled.",
            )
        payload = event.payload
        parse_kind(payload.get("kind"))
        check_text(payload.get("display_name"), "the display name", MAX_DISPLAY_NAME)
        email = payload.get("email")
        if email is not None and (not isinstance(email, str) or check_email(email) != email):
            raise AccessInputError(f"{email!r} is not a normalized e-mail address")
        for keyid in _keyids(payload.get("keys", [])):
            record = self.keys.get(keyid)
            if record is None or record.created_index >= index:
                raise AccessInputError(f"key {keyid} is not announced in the ledger")
            if record.principal != name or record.revoked_index is not None:
                raise AccessInputError(
                    f"key {keyid} is announced for {record.principal}, not for {name}"
                    if record.principal != name
                    else f"key {keyid} is revoked"
                )

    def _existing(self, name: str) -> Principal:
        holder = self.principals.get(name)
        if holder is None:
            raise AccessInputError(f"there is no principal {name}")
        return holder

    def _keep_an_admin(self, *, without_principal: str | None = None) -> None:
        """Refuse a change that leaves no enabled admin: nobody could change access again."""
        if not [a for a in self.enabled_admins() if a != without_principal]:
            raise AccessInputError(
                "that would leave no enabled admin",
                hint="Grant admin to another principal first.",
            )

    def _check_grant(self, event: Event, name: str) -> None:
        holder = self._existing(name)
        if not holder.enabled:
            raise AccessInputError(f"{name} is disabled")
        role = parse_role(str(event.payload.get("role")))
        envs = _grant_environments(role, event.payload.get("environments"))
        held = self.grants.get((name, role), frozenset())
        if held is None or (envs is not None and envs <= held):
            raise AccessInputError(f"{name} already holds {role.value} there")

    def _check_revoke(self, event: Event, name: str) -> None:
        self._existing(name)
        role = parse_role(str(event.payload.get("role")))
        envs = environments_from_json(event.payload.get("environments"))
        if (name, role) not in self.grants:
            raise AccessInputError(f"{name} does not hold {role.value}")
        held = self.grants[(name, role)]
        if envs is not None:
            if held is None:
                raise AccessInputError(
                    f"{name} holds {role.value} in every environment: revoke it with "
                    "every environment, then grant the ones to keep"
                )
            if not envs <= held:
                missing = ", ".join(sorted(envs - held))
                raise AccessInputError(f"{name} does not hold {role.value} in {missing}")
        if role is Role.ADMIN:
            self._keep_an_admin(without_principal=name)

    def _check_new_token(self, event: Event, name: str, used: Token | None) -> None:
        holder = self._existing(name)
        if not holder.enabled:
            raise AccessInputError(f"{name} is disabled")
        payload = event.payload
        token_id = payload.get("token_id")
        if not isinstance(token_id, str) or not TOKEN_ID_RE.fullmatch(token_id):
            raise AccessInputError("token_id must be 16 hex digits")
        if token_id in self.tokens:
            raise AccessInputError(f"a token {token_id} already exists")
        digest = payload.get("secret_sha256")
        if not isinstance(digest, str) or not _HEX64_RE.fullmatch(digest):
            raise AccessInputError("secret_sha256 must be 64 hex digits")
        if payload.get("created_by") != event.actor:
            raise AccessInputError("created_by must be the event's actor")
        expires = _expiry(payload.get("expires"))
        scopes = _scopes(payload.get("scopes"))
        if used is not None:
            # A token never mints a longer-lived or wider token: revoking it ends what it began.
            if expires > used.expires:
                raise AccessInputError(
                    "a token-authenticated caller cannot create a token that outlives its own "
                    f"(which expires {used.expires_text})"
                )
            if used.scopes is not None and (scopes is None or not scopes <= used.scopes):
                raise AccessInputError(
                    "a token-authenticated caller cannot create a token wider than its own scopes"
                )

    def _check_token_revoke(self, event: Event, name: str) -> None:
        token_id = str(event.payload.get("token_id"))
        token = self.tokens.get(token_id)
        if token is None or token.principal != name:
            raise AccessInputError(f"{name} has no token {token_id}")
        if token.revoked_index is not None:
            raise AccessInputError(f"token {token_id} was already revoked")
        if "reason" in event.payload:
            check_text(event.payload["reason"], "the reason", MAX_REASON)

    # -- changes (only after check) --------------------------------------------------------------

    def apply(self, index: int, event: Event) -> None:
        name = _subject_principal(event)
        payload = event.payload
        if event.type == EVENT_PRINCIPAL_CREATED:
            email = payload.get("email")
            self.principals[name] = Principal(
                name=name,
                kind=parse_kind(payload.get("kind")),
                display_name=str(payload["display_name"]).strip(),
                email=email if isinstance(email, str) else None,
                created_index=index,
                created_at=event.time,
                created_by=event.actor,
                bootstrap=payload.get("bootstrap") is True,
                adopted_keys=frozenset(_keyids(payload.get("keys", []))),
            )
        elif event.type == EVENT_PRINCIPAL_DISABLED:
            self.principals[name] = replace(
                self.principals[name],
                disabled_index=index,
                disabled_at=event.time,
                disabled_by=event.actor,
                disabled_reason=str(payload.get("reason", "")).strip(),
            )
        elif event.type == EVENT_ROLE_GRANTED:
            role = Role(str(payload["role"]))
            envs = environments_from_json(payload["environments"])
            held = self.grants.get((name, role), frozenset())
            self.grants[(name, role)] = None if envs is None or held is None else held | envs
            self.roles[name] = self.roles.get(name, frozenset()) | {role}
        elif event.type == EVENT_ROLE_REVOKED:
            role = Role(str(payload["role"]))
            envs = environments_from_json(payload["environments"])
            held = self.grants[(name, role)]
            remaining = frozenset() if envs is None or held is None else held - envs
            if remaining:
                self.grants[(name, role)] = remaining
            else:
                del self.grants[(name, role)]
                self.roles[name] = self.roles[name] - {role}
        elif event.type == EVENT_TOKEN_CREATED:
            expires_text = str(payload["expires"])
            self.tokens[str(payload["token_id"])] = Token(
                token_id=str(payload["token_id"]),
                principal=name,
                secret_sha256=str(payload["secret_sha256"]),
                expires=_expiry(expires_text),
                expires_text=expires_text,
                scopes=_scopes(payload.get("scopes")),
                created_index=index,
                created_at=event.time,
                created_by=event.actor,
            )
        elif event.type == EVENT_TOKEN_REVOKED:
            token_id = str(payload["token_id"])
            self.tokens[token_id] = replace(
                self.tokens[token_id],
                revoked_index=index,
                revoked_at=event.time,
                revoked_by=event.actor,
                revoked_reason=str(payload.get("reason", "")).strip() or None,
            )

    def _learn_key(self, index: int, event: Event) -> None:
        """Record the key a counting ``key.created`` announces (the first one for its key id)."""
        try:
            public = load_public_key_pem(str(event.payload.get("public_key", "")))
        except CryptoError:
            return  # `ledger verify` reports it; such a key can never vouch for anything
        keyid = key_id(public)
        if event.subject != f"key:{keyid}" or keyid in self.keys:
            return
        owner = str(event.payload.get("principal") or event.actor)
        purpose = str(event.payload.get("purpose", ""))
        self.keys[keyid] = KeyRecord(keyid, owner, purpose, public, index)

    def _forget_key(self, index: int, event: Event) -> None:
        keyid = event.subject.removeprefix("key:")
        record = self.keys.get(keyid)
        if record is not None and record.revoked_index is None:
            self.keys[keyid] = replace(record, revoked_index=index)


_REPLAYS: weakref.WeakKeyDictionary[object, AccessState] = weakref.WeakKeyDictionary()
"""One replay per opened store, brought up to date by each :func:`replayed` call: a command
authenticates its caller and then checks signatures, several times, and replaying from the start
each time would cost the whole access history each time. Keyed by the store, which every view
of one ledger shares."""
_REPLAYS_LOCK = threading.Lock()
"""Serialises refreshes: a replayed state is mutable, and a server may check from threads."""


def replayed(ledger: Ledger) -> AccessState:
    """The access state of ``ledger`` as it stands now, shared by every caller in this process
    that reads the same opened store: read it, never feed it (:meth:`AccessState.copy` first)."""
    with _REPLAYS_LOCK:
        state = _REPLAYS.get(ledger.store)
        if state is None:
            state = _REPLAYS[ledger.store] = AccessState.replay(ledger)
        else:
            state.refresh(ledger)
        return state


def counting_keys(ledger: Ledger) -> dict[str, KeyRecord]:
    """Every key whose ``key.created`` counts, by key id, with its revocation if any.

    The keys that verify signatures on attestations, approvals and policy changes: an
    announcement its actor was not entitled to make (see :meth:`AccessState.feed`) vouches for
    nothing, so whoever can append an event cannot plant a key for someone else and sign as
    them. A key counting here says who holds it; whether it may speak for its principal now
    (revoked, the build key, announced before the principal existed) is
    :meth:`AccessState.key_counts`'s question.
    """
    return dict(replayed(ledger).keys)


def _subject_principal(event: Event) -> str:
    if not event.subject.startswith(SUBJECT_PREFIX):
        raise AccessInputError(f"the subject of {event.type} must be principal:<name>")
    return check_principal_name(event.subject.removeprefix(SUBJECT_PREFIX))


def parse_kind(value: object) -> Kind:
    try:
        return Kind(str(value))
    except ValueError:
        raise AccessInputError(
            f"{value!r} is not a kind of principal (person, automation)"
        ) from None


def _keyids(value: object) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_KEYS:
        raise AccessInputError(f"keys must be a list of at most {MAX_KEYS} key ids")
    for keyid in value:
        if not isinstance(keyid, str) or not _HEX64_RE.fullmatch(keyid):
            raise AccessInputError(f"{keyid!r} is not a key id (64 hex digits)")
    return list(value)


def _grant_environments(role: Role, value: object) -> frozenset[str] | None:
    envs = environments_from_json(value)
    return normalize_environments(role, None if envs is None else sorted(envs))


def _expiry(value: object) -> datetime:
    if not isinstance(value, str):
        raise AccessInputError("expires must be an RFC 3339 time")
    try:
        return parse_time(value, field="expires")
    except LedgerInputError as exc:
        raise AccessInputError(str(exc)) from None


def _scopes(value: object) -> frozenset[Action] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise AccessInputError("scopes must be a non-empty list of actions")
    scopes = [parse_action(str(v)) for v in value]
    if len(set(scopes)) != len(scopes):
        raise AccessInputError("an action is named twice in scopes")
    return frozenset(scopes)


def grant_payload(role: Role, environments: frozenset[str] | None) -> dict[str, Any]:
    return {"role": role.value, "environments": environments_to_json(environments)}
