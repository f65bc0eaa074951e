"""Whether an event's actor proved who they are, judged from the ledger alone.

An actor is authenticated by an event when the event carries the actor's signature by a key that
``key.created`` announced for that principal before the event and that was not revoked before
it (the keys as they stood at the event's index), or, unsigned, when its payload's ``auth``
names a token that ``token.created`` issued to the actor before the event, not revoked before it
and not expired at its time. Only announcements and tokens that count are used: the access
replay of docs/access.md decides (a ``key.created`` or ``token.created`` whose actor was not
entitled to make it vouches for no one), so the report and the live checks agree. The first
admin's key is announced before anyone could sign: its unsigned ``key.created`` counts when the
bootstrap's ``principal.created`` names that key and carries a valid signature by it (proof of
possession, the one trust-on-first-use step). Anything else is a claimed name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from immutrail.access.registry import REPLAYED_EVENTS, AccessState
from immutrail.crypto.errors import CryptoError
from immutrail.crypto.keys import PublicKey
from immutrail.ledger.event import time_us, verify_event_signature

from .. import vocabulary as v
from ..source import EventSource, Indexed


@dataclass(frozen=True)
class _Key:
    public: PublicKey
    principal: str
    created: int
    revoked: int | None


@dataclass(frozen=True)
class _Token:
    owner: str
    created: int
    expires_us: int
    revoked: int | None


def _live(created: int, revoked: int | None, at: int) -> bool:
    # The revocation itself may be signed with the key it revokes (as `ledger verify` and the
    # bundle verifier accept): it counts up to and including its own index.
    return created < at and (revoked is None or revoked >= at)


class Authentication:
    """The keys and tokens the source's ledger announced, to judge events against."""

    def __init__(self, source: EventSource) -> None:
        access = _access(source)
        self.keys = _keys(access)
        self.tokens = _tokens(access)
        self.bootstrap_key = _bootstrap_key(source, self.keys)
        self._judged: dict[int, str | None] = {}

    def method(self, item: Indexed) -> str | None:
        """``key`` or ``token`` when the event authenticates its actor, else None."""
        if item.index not in self._judged:
            self._judged[item.index] = self._method(item)
        return self._judged[item.index]

    def _method(self, item: Indexed) -> str | None:
        event = item.event
        if (
            event.signature is None
            and item.type == v.KEY_CREATED
            and event.subject == f"key:{self.bootstrap_key}"
        ):
            return "bootstrap"
        if event.signature is not None:
            key = self.keys.get(event.signature.get("keyid", ""))
            if (
                key is not None
                and key.principal == event.actor
                and _live(key.created, key.revoked, item.index)
            ):
                try:
                    verify_event_signature(event, key.public)
                except CryptoError:
                    return None
                return "key"
        auth = item.payload.get("auth")
        if isinstance(auth, Mapping) and auth.get("method") == "token":
            token = self.tokens.get(str(auth.get("token_id")))
            if (
                token is not None
                and token.owner == event.actor
                and _live(token.created, token.revoked, item.index)
                and item.us <= token.expires_us
            ):
                return "token"
        return None

    def public_keys(self, at: int) -> dict[str, PublicKey]:
        """The keys that counted at ledger index ``at``, by key id (for DSSE statements)."""
        return {
            keyid: key.public
            for keyid, key in self.keys.items()
            if _live(key.created, key.revoked, at)
        }


def _access(source: EventSource) -> AccessState:
    """The access state replayed from the source's events, in ledger order."""
    items = sorted(
        (item for kind in REPLAYED_EVENTS for item in source.of_type(kind)),
        key=lambda item: item.index,
    )
    state = AccessState()
    for item in items:
        state.feed(item.index, item.event)
    return state


def _keys(state: AccessState) -> dict[str, _Key]:
    return {
        keyid: _Key(key.public, key.principal, key.created_index, key.revoked_index)
        for keyid, key in state.keys.items()
    }


def _bootstrap_key(source: EventSource, keys: dict[str, _Key]) -> str | None:
    """The key of the bootstrap's ``principal.created``, when that event is signed by it."""
    for item in source.of_type(v.PRINCIPAL_CREATED):
        if item.payload.get("bootstrap") is not True or item.event.signature is None:
            continue
        keyid = str(item.event.signature.get("keyid", ""))
        key = keys.get(keyid)
        if key is None or key.principal != item.event.actor or key.created >= item.index:
            return None
        try:
            verify_event_signature(item.event, key.public)
        except CryptoError:
            return None
        return keyid
    return None


def _tokens(state: AccessState) -> dict[str, _Token]:
    return {
        token_id: _Token(
            token.principal, token.created_index, time_us(token.expires_text), token.revoked_index
        )
        for token_id, token in state.tokens.items()
    }
