"""Events whose actor proved who they are: signed with a ledger key bound to that principal.

Overrides, exceptions and policy changes weaken or change the gate. Their events must carry the
actor's signature by a key the ledger announced for that principal and has not revoked, so that a
name typed on the command line is never enough to open the gate.
"""

from __future__ import annotations

from collections.abc import Mapping

from immutrail.artifacts.statements import LedgerKey
from immutrail.crypto.errors import CryptoError
from immutrail.crypto.keys import PrivateKey, key_id
from immutrail.ledger.event import Event, sign_event, verify_event_signature

from .errors import PolicyInputError


def signed_by_principal(event: Event, key: PrivateKey, keys: Mapping[str, LedgerKey]) -> Event:
    """``event`` signed with ``key``, which must be the actor's announced, unrevoked key."""
    keyid = key_id(key.public_key())
    known = keys.get(keyid)
    if known is None:
        raise PolicyInputError(
            f"key {keyid} is not announced in the ledger: generate it with `immutrail keys "
            "generate` so that what it signs can be verified"
        )
    if known.revoked:
        raise PolicyInputError(f"key {keyid} was revoked at ledger index {known.revoked_index}")
    if known.principal != event.actor:
        raise PolicyInputError(
            f"key {keyid} belongs to {known.principal!r}, not to the actor {event.actor!r}"
        )
    return sign_event(event, key)


def authenticated_actor(event: Event, keys: Mapping[str, LedgerKey]) -> str | None:
    """Why ``event``'s actor is not authenticated by its signature, or None when it is."""
    if event.signature is None:
        return "the event is not signed by its actor"
    known = keys.get(event.signature.get("keyid", ""))
    if known is None:
        return "signed by a key the ledger does not know"
    if known.revoked:
        return f"signed by key {known.keyid}, revoked at ledger index {known.revoked_index}"
    if known.principal != event.actor:
        return f"signed by {known.principal!r}'s key, not by the actor {event.actor!r}"
    try:
        verify_event_signature(event, known.public)
    except CryptoError as exc:
        return f"the actor's signature does not verify: {exc}"
    return None
