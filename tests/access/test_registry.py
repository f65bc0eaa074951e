"""State is the replay of the ledger: rebuilt equals incremental, and an event that was forged,
tampered with or made by someone not entitled to it changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from immutrail.access import (
    AccessDenied,
    AccessError,
    AccessInputError,
    AccessState,
    Identity,
    NewPrincipal,
    Role,
    create_principal,
    create_token,
    disable_principal,
    grant_role,
    revoke_role,
    revoke_token,
)
from immutrail.access.actor import announce_key
from immutrail.access.manage import bootstrap
from immutrail.access.registry import (
    EVENT_PRINCIPAL_CREATED,
    EVENT_ROLE_GRANTED,
    principal_subject,
)
from immutrail.keys.keystore import revoke_key
from immutrail.ledger.event import Event, sign_event
from immutrail.ledger.ledger import Appended, Ledger

from .conftest import add_principal, by_token, login, now

Setup = tuple[Path, Ledger, Identity]


def _signed(identity: Identity, kind: str, name: str, payload: dict[str, Any]) -> Event:
    assert identity.signing_key is not None
    event = Event.create(
        kind,
        identity.principal,
        principal_subject(name),
        {**payload, "auth": identity.auth_payload()},
    )
    return sign_event(event, identity.signing_key.private)


def _grant(identity: Identity, name: str, role: str = "admin", envs: Any = "*") -> Event:
    return _signed(identity, EVENT_ROLE_GRANTED, name, {"role": role, "environments": envs})


def test_rebuilt_state_equals_incremental_state(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    state = AccessState.replay(ledger)
    t = now()

    def same() -> None:
        state.refresh(ledger)
        assert state.to_dict(t) == AccessState.replay(ledger).to_dict(t)

    create_principal(
        ledger, admin, NewPrincipal.check("bob", "person", "Bob", "bob@example.org"), state=state
    )
    same()
    grant_role(ledger, admin, "bob", Role.DEPLOYER, ["staging"], state=state)
    same()
    grant_role(ledger, admin, "bob", Role.DEPLOYER, ["prod"], state=state)
    same()
    grant_role(ledger, admin, "bob", Role.AUDITOR, None, state=state)
    same()
    revoke_role(ledger, admin, "bob", Role.DEPLOYER, ["staging"], state=state)
    same()
    made = create_token(ledger, admin, "bob", expires=t + timedelta(hours=1), now=t, state=state)
    same()
    revoke_token(ledger, admin, made.token.token_id, reason="done", state=state)
    same()
    announce_key(home, ledger, admin, "bob", passphrase=None)
    ledger.append(_grant(admin, "nobody"))  # does not count: there is no principal nobody
    same()
    disable_principal(ledger, admin, "bob", reason="left", state=state)
    same()
    snapshot = state.to_dict(t)
    assert [p["name"] for p in snapshot["principals"]] == ["root", "bob"]
    bob = snapshot["principals"][1]
    assert bob["email"] == "bob@example.org" and not bob["enabled"]
    assert bob["roles"] == [
        {"role": "auditor", "environments": "*"},
        {"role": "deployer", "environments": ["prod"]},
    ]
    assert snapshot["tokens"][0]["status"] == "revoked"
    assert [r["type"] for r in snapshot["rejected"]] == ["role.granted"]
    assert "there is no principal nobody" in snapshot["rejected"][0]["reason"]


def test_a_tampered_signature_is_refused_when_replaying(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    add_principal(home, ledger, admin, "bob", [Role.BUILDER])
    honest = _grant(admin, "bob", "deployer", ["staging"])
    # the same signature over another payload: deployer everywhere instead of staging
    tampered = Event.create(
        honest.type,
        honest.actor,
        honest.subject,
        {**honest.payload, "environments": "*"},
        signature=honest.signature,
    )
    index = ledger.append(tampered).index
    state = AccessState.replay(ledger)
    assert ("bob", Role.DEPLOYER) not in state.grants
    (rejected,) = state.rejected
    assert rejected.index == index and "signature does not verify" in rejected.reason
    # ledger verify sees it too: the actor's signature is part of the entry
    assert not ledger.verify().ok


def test_forged_and_unentitled_events_change_nothing(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    add_principal(home, ledger, admin, "bob", [Role.DEPLOYER], ["staging"])
    bob = login(home, ledger, "bob")
    before = AccessState.replay(ledger).to_dict(now())
    forged: Sequence[Event] = [
        # signed by bob's own valid key, but bob may not manage principals
        _grant(bob, "bob"),
        # claims to be root, unsigned, with no token
        Event.create(
            EVENT_ROLE_GRANTED,
            "root",
            "principal:bob",
            {"role": "admin", "environments": "*", "auth": {"method": "key", "key_id": "0" * 64}},
        ),
        # claims to be root with a token id that does not exist
        Event.create(
            EVENT_ROLE_GRANTED,
            "root",
            "principal:bob",
            {
                "role": "admin",
                "environments": "*",
                "auth": {"method": "token", "token_id": "a" * 16},
            },
        ),
        # signed by bob, but claiming to be root
        sign_event(
            Event.create(
                EVENT_ROLE_GRANTED,
                "root",
                "principal:bob",
                {"role": "admin", "environments": "*", "auth": bob.auth_payload()},
            ),
            bob.signing_key.private,  # type: ignore[union-attr]
        ),
        # a second bootstrap
        sign_event(
            Event.create(
                EVENT_PRINCIPAL_CREATED,
                "bob",
                "principal:mallory",
                {
                    "kind": "person",
                    "display_name": "m",
                    "bootstrap": True,
                    "keys": [bob.key_id],
                    "auth": {"method": "bootstrap", "key_id": bob.key_id},
                },
            ),
            bob.signing_key.private,  # type: ignore[union-attr]
        ),
    ]
    ledger.append_batch(forged)
    state = AccessState.replay(ledger)
    after = state.to_dict(now())
    assert after["principals"] == before["principals"]
    reasons = [r.reason for r in state.rejected]
    assert len(reasons) == len(forged)
    assert "bob did not hold principals.manage" in reasons[0]
    assert "neither signed by its actor nor made with a token" in reasons[1]
    assert "names no live token of root" in reasons[2]
    assert f"signed by key {bob.key_id[:16]}, which does not count for root" in reasons[3]
    assert "already has principals" in reasons[4]


def test_a_token_made_event_counts_only_while_the_token_lives(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    t = now()
    made = create_token(ledger, admin, expires=t + timedelta(hours=1), now=t)
    by_tok = by_token(home, ledger, made.secret)
    create_principal(
        ledger, by_tok, NewPrincipal.check("bob", "person", None), roles=[Role.AUDITOR]
    )
    state = AccessState.replay(ledger)
    assert "bob" in state.principals and not state.rejected
    revoke_token(ledger, admin, made.token.token_id)
    # replaying the same unsigned change with the revoked token's id does not count
    stale = Event.create(
        EVENT_ROLE_GRANTED,
        "root",
        "principal:bob",
        {"role": "builder", "environments": "*", "auth": by_tok.auth_payload()},
    )
    ledger.append(stale)
    state = AccessState.replay(ledger)
    assert ("bob", Role.BUILDER) not in state.grants
    assert "names no live token of root" in state.rejected[-1].reason


def test_a_revoked_key_keeps_what_it_signed_before(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    add_principal(home, ledger, admin, "bob", [Role.ADMIN])
    bob = login(home, ledger, "bob")
    grant_role(ledger, bob, "root", Role.AUDITOR, None)
    assert bob.key_id is not None
    revoke_key(home, ledger, bob.key_id, reason="rotated", actor="root")
    state = AccessState.replay(ledger)
    assert ("root", Role.AUDITOR) in state.grants
    ledger.append(_grant(bob, "root", "builder"))
    state = AccessState.replay(ledger)
    assert ("root", Role.BUILDER) not in state.grants
    assert "does not count for bob" in state.rejected[-1].reason


def test_the_last_admin_stays(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    size = ledger.head().size
    with pytest.raises(AccessInputError, match="no enabled admin"):
        disable_principal(ledger, admin, "root", reason="oops")
    with pytest.raises(AccessInputError, match="no enabled admin"):
        revoke_role(ledger, admin, "root", Role.ADMIN, None)
    assert ledger.head().size == size
    add_principal(home, ledger, admin, "bob", [Role.ADMIN])
    revoke_role(ledger, admin, "root", Role.ADMIN, None)
    with pytest.raises(AccessDenied, match=r"may not principals\.manage"):
        grant_role(ledger, login(home, ledger, "root"), "root", Role.ADMIN, None)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda led, a: grant_role(led, a, "nobody", Role.AUDITOR, None), "there is no principal"),
        (lambda led, a: grant_role(led, a, "root", Role.ADMIN, None), "already holds admin"),
        (lambda led, a: grant_role(led, a, "root", Role.ADMIN, ["prod"]), "every environment only"),
        (
            lambda led, a: grant_role(led, a, "root", Role.BUILDER, ["prod"]),
            "no environment-scoped",
        ),
        (lambda led, a: grant_role(led, a, "root", Role.DEPLOYER, ["Prod"]), "not an environment"),
        (lambda led, a: revoke_role(led, a, "root", Role.DEPLOYER, None), "does not hold deployer"),
        (lambda led, a: disable_principal(led, a, "nobody", reason="x"), "there is no principal"),
        (lambda led, a: disable_principal(led, a, "root", reason=" "), "must not be empty"),
        (
            lambda led, a: create_principal(led, a, NewPrincipal.check("root", "person", None)),
            "already exists",
        ),
        (lambda led, a: NewPrincipal.check("Bad Name", "person", None), "not a principal name"),
        (lambda led, a: NewPrincipal.check("x", "robot", None), "not a kind"),
        (lambda led, a: NewPrincipal.check("x", "person", None, "not-mail"), "not an e-mail"),
        (lambda led, a: NewPrincipal.check("x", "person", "a\x07b"), "control"),
        (lambda led, a: revoke_token(led, a, "0123456789abcdef"), "there is no token"),
        (lambda led, a: revoke_token(led, a, "xyz"), "not a token id"),
    ],
)
def test_bad_requests_are_input_errors_and_write_nothing(
    admin_home: Setup, call: Any, message: str
) -> None:
    _, ledger, admin = admin_home
    size = ledger.head().size
    with pytest.raises(AccessInputError, match=message):
        call(ledger, admin)
    assert ledger.head().size == size


def test_revoking_part_of_an_everywhere_grant_is_refused(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    add_principal(home, ledger, admin, "bob", [Role.OPERATOR], None, key=False)
    with pytest.raises(AccessInputError, match="every environment: revoke it"):
        revoke_role(ledger, admin, "bob", Role.OPERATOR, ["prod"])
    grant_role(ledger, admin, "bob", Role.DEPLOYER, ["a", "b"])
    with pytest.raises(AccessInputError, match="does not hold deployer in c"):
        revoke_role(ledger, admin, "bob", Role.DEPLOYER, ["b", "c"])
    remaining, _ = revoke_role(ledger, admin, "bob", Role.DEPLOYER, ["b"])
    assert remaining is not None and remaining.environments == frozenset({"a"})
    remaining, _ = revoke_role(ledger, admin, "bob", Role.DEPLOYER, ["a"])
    assert remaining is None


class RacingLedger(Ledger):
    """A ledger where another admin's change lands just before ours (a real concurrent write)."""

    competitor: Event | None = None

    def append_batch(self, events: Sequence[Event]) -> list[Appended]:
        if self.competitor is not None:
            first, self.competitor = self.competitor, None
            super().append_batch([first])
        return super().append_batch(events)


def test_a_concurrent_change_is_detected(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    add_principal(home, ledger, admin, "bob", [Role.AUDITOR], key=False)
    racing = RacingLedger(ledger.store, ledger.origin, ledger.vkey)
    racing.competitor = _grant(admin, "bob", "deployer", ["staging"])
    with pytest.raises(AccessError, match="does not count: bob already holds deployer"):
        grant_role(racing, admin, "bob", Role.DEPLOYER, ["staging"])
    state = AccessState.replay(ledger)
    assert state.grants[("bob", Role.DEPLOYER)] == frozenset({"staging"})


def test_bootstrap_happens_once(admin_home: Setup) -> None:
    home, ledger, _ = admin_home
    size = ledger.head().size
    with pytest.raises(AccessInputError, match="already set up"):
        bootstrap(home, ledger, NewPrincipal.check("eve", "person", None), passphrase=None)
    assert ledger.head().size == size


def test_ledger_verify_checks_the_admins_signatures(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    add_principal(home, ledger, admin, "bob", [Role.DEPLOYER], ["staging"])
    report = ledger.verify()
    assert report.ok and report.signatures >= 3  # bootstrap (2) and bob's creation
