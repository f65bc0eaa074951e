"""Whether an event's actor proved who they are, judged from the ledger alone.

An actor is authenticated by an event when the event carries the actor's signature by a key that
``key.created`` announced for that principal before the event and that was not revoked before
it (the keys as they stood at the event's index, as docs/access.md replays them), or, unsigned,
when its payload's ``auth`` names a token that ``token.created`` issued to the actor before the
event, not revoked before it and not expired at its time. The first admin's key is announced
before anyone could sign: its unsigned ``key.created`` counts when the bootstrap's
``principal.created`` names that key and carries a valid signature by it (proof of possession,
the one trust-on-first-use step). Anything else is a claimed name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from immutrail.crypto.errors import CryptoError
from immutrail.crypto.keys import PublicKey, key_id, load_public_key_pem
from immutrail.ledger.errors import EventFormatError
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
        self.keys = _keys(source)
        self.tokens = _tokens(source)
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


def _keys(source: EventSource) -> dict[str, _Key]:
    keys: dict[str, _Key] = {}
    for item in source.of_type(v.KEY_CREATED):
        try:
            public = load_public_key_pem(str(item.payload.get("public_key", "")))
        except CryptoError:
            continue  # `ledger verify` reports it; such an entry can vouch for nothing
        keyid = key_id(public)
        if item.event.subject != f"key:{keyid}" or keyid in keys:
            continue
        principal = item.text("principal") or item.event.actor
        keys[keyid] = _Key(public, principal, item.index, None)
    for item in source.of_type(v.KEY_REVOKED):
        keyid = item.event.subject.removeprefix("key:")
        known = keys.get(keyid)
        if known is not None and known.revoked is None and item.index > known.created:
            keys[keyid] = _Key(known.public, known.principal, known.created, item.index)
    return keys


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


def _tokens(source: EventSource) -> dict[str, _Token]:
    tokens: dict[str, _Token] = {}
    for item in source.of_type("token.created"):
        token, expires = item.text("token_id"), item.text("expires")
        if token is None or expires is None or token in tokens:
            continue
        try:
            expires_us = time_us(expires)
        except EventFormatError:
            continue
        owner = item.event.subject.removeprefix("principal:")
        tokens[token] = _Token(owner, item.index, expires_us, None)
    for item in source.of_type("token.revoked"):
        known = tokens.get(item.text("token_id") or "")
        if known is not None and known.revoked is None and item.index > known.created:
            tokens[item.text("token_id") or ""] = _Token(
                known.owner, known.created, known.expires_us, item.index
            )
    return tokens
