"""Who a command acts as: the authenticated principal once access control is set up.

:func:`act` is what every command (CLI, API) does before it reads or writes anything:

- on a ledger whose access state is **bootstrapped** (a principal exists), the caller is
  authenticated (:func:`authenticate`) and authorized for the command's action in its
  environment (:func:`authorize`); the actor of every event the command appends is that
  principal, and a free-text actor (``--actor`` / ``IMMUTRAIL_ACTOR``) is refused;
- before the bootstrap (**setup mode**: a fresh ledger, one user), nothing can be authenticated
  and the actor is the free-text name the caller gives (``--as``, ``--actor``, else the local
  login), as events have always recorded it. ``immutrail init --admin NAME`` ends setup mode at
  creation.

A key-authenticated caller's events are signed with its key (:meth:`Actor.ledger`), so
``ledger verify`` proves who appended them, as it does for access events.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from immutrail.keys.keystore import Generated, SigningKey, generate_key, keyid_prefix
from immutrail.keys.passphrase import PassphraseSource
from immutrail.ledger.event import Event, sign_event
from immutrail.ledger.ledger import Appended, Ledger

from .authenticate import Identity, Method, authenticate, authorize
from .errors import AccessInputError, AuthenticationError
from .model import Action
from .registry import AccessState, replayed

__all__ = [
    "Actor",
    "SigningLedger",
    "act",
    "announce_key",
    "authorize_key_change",
    "setup_actor",
]


class SigningLedger(Ledger):
    """The same ledger (same store), but every unsigned event whose actor is ``principal`` is
    signed with ``key`` as it is appended: library code that appends events as the caller
    produces signed events without knowing about keys. Key announcements too: a verifier then
    follows the chain of keys that announced each other back to the first admin's, announced
    at the bootstrap (evidence bundles carry that chain)."""

    def __init__(self, ledger: Ledger, principal: str, key: SigningKey) -> None:
        # The same store and checkpoint signer: one ledger, one more behaviour.
        super().__init__(ledger.store, ledger.origin, ledger.vkey, ledger._load_signer)
        self.principal = principal
        self.key = key

    def append_batch(self, events: Sequence[Event]) -> list[Appended]:
        signed = [
            sign_event(e, self.key.private)
            if e.signature is None and e.actor == self.principal
            else e
            for e in events
        ]
        return super().append_batch(signed)


@dataclass(frozen=True)
class Actor:
    """Who the events of a command name as their actor, and how that was established."""

    name: str
    identity: Identity | None
    """The authenticated caller; None in setup mode (the name is then only what was typed)."""

    @property
    def authenticated(self) -> bool:
        return self.identity is not None

    @property
    def signing_key(self) -> SigningKey | None:
        """The caller's unlocked key when it authenticated with one."""
        return None if self.identity is None else self.identity.signing_key

    def ledger(self, ledger: Ledger) -> Ledger:
        """``ledger``, signing the caller's events when it authenticated with a key."""
        key = self.signing_key
        if key is None or self.identity is None:
            return ledger
        return SigningLedger(ledger, self.identity.principal, key)

    def signer(self, *, principal: str | None = None, key: str | None = None) -> SigningKey:
        """The key a signing command signs with: the caller's own, never another principal's.

        ``principal`` and ``key`` are what the command line named (``--principal``, ``--key``):
        each must name the caller and the key it authenticated with.
        """
        identity = self.identity
        if identity is None:
            raise AccessInputError("setup mode: the signing key is chosen by the command")
        if principal is not None and principal != identity.principal:
            raise AccessInputError(
                f"you are authenticated as {identity.principal}: you cannot sign as {principal}",
                hint="A signature is always the caller's own: authenticate with --as "
                f"{principal} (and its key) to sign as {principal}.",
            )
        if identity.method is Method.TOKEN or identity.signing_key is None:
            raise AccessInputError(
                "this command signs, and a token cannot sign",
                hint=f"Authenticate with a key: --as {identity.principal} (its key in the key "
                "store, or --key-file).",
            )
        if key is not None and not identity.signing_key.keyid.startswith(keyid_prefix(key)):
            raise AccessInputError(
                f"you authenticated with key {identity.signing_key.keyid[:16]}…, not {key}",
                hint="Give the key you sign with as --key-file PATH: it is also the key you "
                "authenticate with.",
            )
        return identity.signing_key


def setup_actor(
    *, principal: str | None, token: str | None, actor: str | None, fallback: str
) -> Actor:
    """The actor in setup mode (no principal exists): the name given, unproved."""
    if token:
        raise AuthenticationError(
            "access control is not set up on this ledger: there is no token to check",
            hint="Run `immutrail init --admin NAME` or `immutrail principal create NAME --role "
            "admin` (the bootstrap) first, or drop --token / IMMUTRAIL_TOKEN.",
        )
    return Actor(principal or actor or fallback, None)


def act(
    home: Path,
    ledger: Ledger,
    action: Action | None,
    environment: str | None = None,
    *,
    principal: str | None,
    token: str | None,
    key_file: Path | None,
    passphrase_file: Path | None,
    actor: str | None,
    fallback: str,
    now: datetime,
    passphrase: PassphraseSource | None = None,
    state: AccessState | None = None,
) -> Actor:
    """Authenticate and authorize the caller for ``action`` (in ``environment``), or, in setup
    mode, name the actor ``principal`` or ``actor`` or ``fallback``.

    ``action`` None authenticates only: for commands whose permission depends on whom they are
    about (one's own keys), which authorize right after, before anything else.

    Everything is decided from the access state before anything else is looked up, so a refused
    caller (AuthenticationError, AccessDenied: exit 1) learns nothing about the target and the
    command appends nothing. ``actor`` (a free-text name) after the bootstrap is an
    AccessInputError.
    """
    current = replayed(ledger) if state is None else state
    if not current.bootstrapped:
        return setup_actor(principal=principal, token=token, actor=actor, fallback=fallback)
    if actor is not None:
        raise AccessInputError(
            "--actor (or IMMUTRAIL_ACTOR) is not accepted once access control is set up: the "
            "ledger records who authenticated, never a typed name",
            hint="Authenticate with --as PRINCIPAL (a key of it here) or --token (or "
            "IMMUTRAIL_PRINCIPAL / IMMUTRAIL_TOKEN), and unset IMMUTRAIL_ACTOR.",
        )
    identity = authenticate(
        home,
        ledger,
        principal=principal,
        token=token,
        key_file=key_file,
        passphrase_file=passphrase_file,
        now=now,
        state=current,
        passphrase=passphrase,
    )
    if action is not None:
        authorize(identity, action, environment)
    return Actor(identity.principal, identity)


def authorize_key_change(identity: Identity, owner: str, *, creating: bool) -> None:
    """Another principal's keys need ``keys.manage``; one's own ``keys.manage.own``, and a new
    key of one's own only when authenticated with a key: a token expires, so it must not be
    able to mint a credential that does not."""
    if owner != identity.principal or identity.can(Action.KEYS_MANAGE):
        authorize(identity, Action.KEYS_MANAGE)
        return
    authorize(identity, Action.KEYS_MANAGE_OWN)
    if creating and identity.method is Method.TOKEN:
        raise AuthenticationError(
            "a token cannot create keys: authenticate with a key of yours (--as "
            f"{identity.principal}) to add another"
        )


def announce_key(
    home: Path,
    ledger: Ledger,
    identity: Identity,
    principal: str,
    *,
    passphrase: bytes | None,
    algorithm: str = "ed25519",
    purpose: str = "signing",
) -> Generated:
    """``keys generate`` once access control is set up: a new key of ``principal``, announced
    by ``identity`` (who must be allowed to, as :func:`authorize_key_change` says), signed with
    its key when it authenticated with one and naming how it authenticated, so that the access
    replay counts the key."""
    authorize_key_change(identity, principal, creating=True)
    return generate_key(
        home,
        Actor(identity.principal, identity).ledger(ledger),
        principal,
        actor=identity.principal,
        algorithm=algorithm,
        purpose=purpose,
        passphrase=passphrase,
        auth=identity.auth_payload(),
    )
