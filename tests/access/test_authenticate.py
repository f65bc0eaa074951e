"""Authentication: tokens (format, hash only, expiry on the caller's clock, revocation, scopes)
and keys (possession of an announced, unrevoked key of an enabled principal)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from immutrail.access import (
    AccessDenied,
    AccessInputError,
    AccessState,
    Action,
    AuthenticationError,
    Identity,
    Method,
    NewPrincipal,
    Role,
    authenticate,
    authorize,
    create_principal,
    create_token,
    disable_principal,
    require,
    revoke_token,
    whoami,
)
from immutrail.access.actor import Actor, announce_key
from immutrail.access.errors import INVALID_TOKEN, cannot_authenticate
from immutrail.access.tokens import (
    MAX_LIFETIME,
    hash_secret,
    new_token,
    parse_duration,
    split_token,
)
from immutrail.crypto.errors import KeyFileError
from immutrail.crypto.keys import generate_ed25519, key_id, public_key_pem, save_private_key
from immutrail.keys.errors import KeyInputError
from immutrail.keys.keystore import revoke_key
from immutrail.ledger.event import Event
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter

from .conftest import ADMIN as ADMIN_NAME
from .conftest import add_principal, by_token, login, now

Setup = tuple[Path, Ledger, Identity]


def test_token_format_and_randomness() -> None:
    made = new_token()
    assert re.fullmatch(r"imt_[0-9a-f]{16}_[0-9a-f]{64}", made.token)
    token_id, secret = split_token(made.token)
    assert token_id == made.token_id and len(bytes.fromhex(secret)) == 32  # 256 bits
    assert made.secret_sha256 == hash_secret(secret) != secret
    assert len({new_token().token for _ in range(50)}) == 50


@pytest.mark.parametrize(
    "text",
    [
        "",
        "imt_",
        "imt_zz_00",
        "IMT_0123456789abcdef_" + "0" * 64,
        "imt_0123456789abcdef_" + "0" * 63,
    ],
)
def test_malformed_tokens_get_the_one_message(text: str) -> None:
    with pytest.raises(AuthenticationError) as caught:
        split_token(text)
    assert str(caught.value) == INVALID_TOKEN


def test_durations() -> None:
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("0d", "-1d", "1y", "d", "1.5h", "1000000d"):
        with pytest.raises(AccessInputError, match="not a duration"):
            parse_duration(bad)


def test_only_the_hash_is_in_the_ledger(admin_home: Setup) -> None:
    _, ledger, admin = admin_home
    made = create_token(ledger, admin, expires=now() + timedelta(hours=1), now=now())
    _, secret = split_token(made.secret)
    data = b"".join(row.data for row in ledger.entries(EntryFilter()))
    assert secret.encode() not in data and made.secret.encode() not in data
    assert hash_secret(secret).encode() in data
    assert made.token.secret_sha256 == hash_secret(secret)


def test_expiry_is_enforced_with_the_callers_clock(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    start = datetime(2030, 1, 1, tzinfo=UTC)
    made = create_token(ledger, admin, expires=start + timedelta(hours=1), now=start)
    assert by_token(home, ledger, made.secret, start).principal == "root"
    almost = start + timedelta(minutes=59, seconds=59)
    assert by_token(home, ledger, made.secret, almost).token_id == made.token.token_id
    for moment in (start + timedelta(hours=1), start + timedelta(days=3)):
        with pytest.raises(AuthenticationError) as caught:
            by_token(home, ledger, made.secret, moment)
        assert str(caught.value) == INVALID_TOKEN
    assert made.token.status(start + timedelta(hours=1)) == "expired"


def test_expiry_must_be_future_bounded_and_zoned(admin_home: Setup) -> None:
    _, ledger, admin = admin_home
    size = ledger.head().size
    t = now()
    for expires, message in (
        (t - timedelta(seconds=1), "already have expired"),
        (t, "already have expired"),
        (t + MAX_LIFETIME + timedelta(seconds=1), "at most 366 days"),
        (datetime(2099, 1, 1), "time zone"),
    ):
        with pytest.raises(AccessInputError, match=message):
            create_token(ledger, admin, expires=expires, now=t)
    assert ledger.head().size == size


def test_every_token_failure_says_the_same(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    add_principal(home, ledger, admin, "bob", [Role.DEPLOYER], ["staging"], key=False)
    add_principal(home, ledger, admin, "carol", [Role.DEPLOYER], ["staging"], key=False)
    t = now()
    live = create_token(ledger, admin, "bob", expires=t + timedelta(hours=1), now=t)
    revoked = create_token(ledger, admin, "bob", expires=t + timedelta(hours=1), now=t)
    revoke_token(ledger, admin, revoked.token.token_id, reason="rotated")
    gone = create_token(ledger, admin, "carol", expires=t + timedelta(hours=1), now=t)
    disable_principal(ledger, admin, "carol", reason="left")
    token_id, secret = split_token(live.secret)
    forged = f"imt_{token_id}_{'0' * 64}"
    unknown = f"imt_{'a' * 16}_{secret}"
    assert by_token(home, ledger, live.secret).principal == "bob"
    messages = set()
    for token in (revoked.secret, gone.secret, forged, unknown, "imt_nonsense"):
        with pytest.raises(AuthenticationError) as caught:
            by_token(home, ledger, token)
        messages.add(caught.value.diagnostics())
    # a token with a principal it does not belong to
    with pytest.raises(AuthenticationError) as caught:
        authenticate(
            home,
            ledger,
            principal="root",
            token=live.secret,
            key_file=None,
            passphrase_file=None,
            now=t,
        )
    messages.add(caught.value.diagnostics())
    assert messages == {INVALID_TOKEN}


def test_key_authentication(admin_home: Setup, tmp_path: Path) -> None:
    home, ledger, admin = admin_home
    assert admin.method is Method.KEY and admin.key_id and admin.signing_key is not None
    assert admin.roles == (Role.ADMIN,)
    add_principal(home, ledger, admin, "bob", [Role.BUILDER])
    bob = login(home, ledger, "bob")
    assert bob.principal == "bob" and bob.roles == (Role.BUILDER,)
    # an encrypted key needs its passphrase, from the file given
    secret = tmp_path / "pw"
    secret.write_text("correct horse\n")
    add_principal(home, ledger, admin, "dana", [Role.AUDITOR], key=False)
    made = announce_key(home, ledger, admin, "dana", passphrase=b"correct horse")
    args = {"principal": "dana", "token": None, "key_file": None, "now": now()}
    with pytest.raises(KeyInputError, match="needs a passphrase"):
        authenticate(home, ledger, passphrase_file=None, **args)  # type: ignore[arg-type]
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    with pytest.raises(KeyFileError):
        authenticate(home, ledger, passphrase_file=wrong, **args)  # type: ignore[arg-type]
    dana = authenticate(home, ledger, passphrase_file=secret, **args)  # type: ignore[arg-type]
    assert dana.key_id == made.info.keyid
    # the same key from a file outside the key store
    outside = tmp_path / "dana.key"
    outside.write_bytes(made.path.read_bytes())
    kept = authenticate(
        home,
        ledger,
        principal="dana",
        token=None,
        key_file=outside,
        passphrase_file=secret,
        now=now(),
    )
    assert kept.key_id == made.info.keyid
    # bob's key file does not make anyone dana
    with pytest.raises(AuthenticationError) as caught:
        authenticate(
            home,
            ledger,
            principal="dana",
            token=None,
            key_file=home / "keys" / "bob" / f"{bob.key_id}.key",
            passphrase_file=None,
            now=now(),
        )
    assert str(caught.value) == cannot_authenticate("dana")


def test_unknown_disabled_keyless_and_revoked_say_the_same(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    add_principal(home, ledger, admin, "bob", [Role.BUILDER])
    add_principal(home, ledger, admin, "carol", [Role.BUILDER])
    add_principal(home, ledger, admin, "erin", [Role.BUILDER], key=False)
    add_principal(home, ledger, admin, "frank", [Role.BUILDER])
    disable_principal(ledger, admin, "bob", reason="left")
    carol = login(home, ledger, "carol")
    assert carol.key_id is not None
    revoke_key(home, ledger, carol.key_id, reason="lost laptop", actor="root")
    # a key announced for frank but removed from the key store
    frank = login(home, ledger, "frank")
    assert frank.signing_key is not None
    frank.signing_key.path.unlink()
    for name in ("nobody", "bob", "carol", "erin", "frank"):
        with pytest.raises(AuthenticationError) as caught:
            login(home, ledger, name)
        assert str(caught.value) == cannot_authenticate(name)


def test_no_credentials_means_no_identity(admin_home: Setup) -> None:
    home, ledger, _ = admin_home
    with pytest.raises(AuthenticationError, match="authentication required"):
        authenticate(
            home, ledger, principal=None, token=None, key_file=None, passphrase_file=None, now=now()
        )


def test_key_announced_before_the_principal_counts_only_when_adopted(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    early = announce_key(home, ledger, admin, "gina", passphrase=None)
    create_principal(
        ledger, admin, NewPrincipal.check("gina", "person", None), roles=[Role.AUDITOR]
    )
    with pytest.raises(AuthenticationError):
        login(home, ledger, "gina")
    adopted = announce_key(home, ledger, admin, "hal", passphrase=None)
    create_principal(
        ledger,
        admin,
        NewPrincipal.check("hal", "automation", "CI"),
        roles=[Role.BUILDER],
        adopt_keys=[adopted.info.keyid],
    )
    assert login(home, ledger, "hal").key_id == adopted.info.keyid
    assert early.info.keyid not in AccessState.replay(ledger).principals["gina"].adopted_keys
    with pytest.raises(AccessInputError, match="announced for gina, not for ivy"):
        create_principal(
            ledger,
            admin,
            NewPrincipal.check("ivy", "person", None),
            adopt_keys=[early.info.keyid],
        )


def test_scoped_tokens_and_what_tokens_may_mint(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    add_principal(home, ledger, admin, "bob", [Role.DEPLOYER], ["staging", "prod"], key=False)
    t = now()
    scoped = create_token(
        ledger,
        admin,
        "bob",
        expires=t + timedelta(hours=2),
        now=t,
        scopes=["deploy", "ledger.read"],
    )
    bob = by_token(home, ledger, scoped.secret)
    authorize(bob, Action.DEPLOY, "prod")
    with pytest.raises(AccessDenied, match="bob may not rollback in environment prod"):
        authorize(bob, Action.ROLLBACK, "prod")
    # a scoped token cannot mint itself a token at all (tokens.manage.own is not in its scopes)
    with pytest.raises(AccessDenied, match=r"tokens\.manage\.own"):
        create_token(ledger, bob, expires=t + timedelta(hours=1), now=t)
    wide = create_token(ledger, admin, "bob", expires=t + timedelta(hours=2), now=t)
    bob_wide = by_token(home, ledger, wide.secret)
    size = ledger.head().size
    with pytest.raises(AccessInputError, match="outlives its own"):
        create_token(ledger, bob_wide, expires=t + timedelta(hours=3), now=t)
    assert ledger.head().size == size
    child = create_token(ledger, bob_wide, expires=t + timedelta(hours=1), now=t, scopes=["deploy"])
    assert child.token.created_by == "bob" and child.token.scopes == frozenset({Action.DEPLOY})
    with pytest.raises(AccessInputError, match="not an action"):
        create_token(ledger, admin, "bob", expires=t + timedelta(hours=1), now=t, scopes=["fly"])


def test_require_and_whoami(admin_home: Setup) -> None:
    home, ledger, admin = admin_home
    add_principal(home, ledger, admin, "bob", [Role.DEPLOYER], ["staging"])
    args = {"principal": "bob", "token": None, "key_file": None, "passphrase_file": None}
    bob = require(home, ledger, Action.DEPLOY, "staging", now=now(), **args)  # type: ignore[arg-type]
    with pytest.raises(AccessDenied, match="bob may not deploy in environment prod"):
        require(home, ledger, "deploy", "prod", now=now(), **args)  # type: ignore[arg-type]
    with pytest.raises(AccessDenied, match="bob may not deploy in every environment"):
        require(home, ledger, "deploy", None, now=now(), **args)  # type: ignore[arg-type]
    info = whoami(bob)
    allowed = {item["action"]: item["environments"] for item in info["allowed"]}
    assert allowed["deploy"] == ["staging"] and allowed["ledger.read"] is None
    assert "audit.read" not in allowed and info["method"] == "key"
    assert whoami(admin)["allowed"][0] == {"action": "artifact.build", "environments": None}
    assert {"action": "deploy", "environments": "*"} in whoami(admin)["allowed"]


def test_the_build_key_never_authenticates(admin_home: Setup, tmp_path: Path) -> None:
    home, ledger, admin = admin_home
    add_principal(home, ledger, admin, "bob", [Role.BUILDER], key=False)
    private = generate_ed25519()
    path = tmp_path / "builder.key"
    save_private_key(private, path)
    public = private.public_key()
    ledger.append(
        Event.create(
            "key.created",
            "bob",
            f"key:{key_id(public)}",
            {"principal": "bob", "purpose": "builder", "public_key": public_key_pem(public)},
        )
    )
    with pytest.raises(AuthenticationError) as caught:
        authenticate(
            home,
            ledger,
            principal="bob",
            token=None,
            key_file=path,
            passphrase_file=None,
            now=now(),
        )
    assert str(caught.value) == cannot_authenticate("bob")


def _forged_key_file(tmp_path: Path, name: str) -> tuple[Path, str, str]:
    """A key pair of the attacker's: its file, key id and public PEM."""
    private = generate_ed25519()
    path = tmp_path / f"{name}.key"
    save_private_key(private, path)
    public = private.public_key()
    return path, key_id(public), public_key_pem(public)


def test_a_key_announced_for_someone_else_without_the_right_does_not_count(
    admin_home: Setup, tmp_path: Path
) -> None:
    """Whoever may append events (a builder) announces a key of their own for the admin, unsigned
    or signed with their own key, and tries to speak as the admin with it: the announcement does
    not count, is listed as rejected, and the key authenticates no one."""
    home, ledger, admin = admin_home
    add_principal(home, ledger, admin, "mallory", [Role.BUILDER])
    mallory = login(home, ledger, "mallory")
    path, keyid, pem = _forged_key_file(tmp_path, "forged")
    claim = {"principal": ADMIN_NAME, "purpose": "signing", "public_key": pem}
    forged = Event.create("key.created", "mallory", f"key:{keyid}", claim)
    signed_path, signed_keyid, signed_pem = _forged_key_file(tmp_path, "forged-signed")
    signed_claim = {**claim, "public_key": signed_pem, "auth": mallory.auth_payload()}
    signed = Event.create("key.created", "mallory", f"key:{signed_keyid}", signed_claim)
    appended = ledger.append(forged).index
    appended_signed = Actor("mallory", mallory).ledger(ledger).append(signed).index
    state = AccessState.replay(ledger)
    assert keyid not in state.keys and signed_keyid not in state.keys
    reasons = {r.index: r.reason for r in state.rejected}
    assert "does not say how its actor authenticated" in reasons[appended]
    assert "mallory did not hold keys.manage" in reasons[appended_signed]
    for key_file in (path, signed_path):
        with pytest.raises(AuthenticationError) as caught:
            login(home, ledger, ADMIN_NAME, key_file)
        assert str(caught.value) == cannot_authenticate(ADMIN_NAME)
    # the same keys, announced by the admin, count
    for pem_text, wanted in ((pem, keyid), (signed_pem, signed_keyid)):
        announcement = Event.create(
            "key.created",
            ADMIN_NAME,
            f"key:{wanted}",
            {**claim, "public_key": pem_text, "auth": admin.auth_payload()},
        )
        Actor(ADMIN_NAME, admin).ledger(ledger).append(announcement)
    assert login(home, ledger, ADMIN_NAME, path).key_id == keyid


def test_own_keys_need_a_signature_others_keys_need_keys_manage(
    admin_home: Setup, tmp_path: Path
) -> None:
    home, ledger, admin = admin_home
    add_principal(home, ledger, admin, "bob", [Role.BUILDER])
    bob = login(home, ledger, "bob")
    # with its key, bob adds a key of its own (keys.manage.own): it counts
    second = announce_key(home, ledger, bob, "bob", passphrase=None)
    assert second.info.keyid in AccessState.replay(ledger).keys
    # with a token, bob cannot: refused live, and not counted when appended anyway
    token = create_token(ledger, admin, "bob", expires=now() + timedelta(hours=1), now=now())
    bob_by_token = by_token(home, ledger, token.secret)
    with pytest.raises(AuthenticationError, match="a token cannot create keys"):
        announce_key(home, ledger, bob_by_token, "bob", passphrase=None)
    _, keyid, pem = _forged_key_file(tmp_path, "bob-token")
    index = ledger.append(
        Event.create(
            "key.created",
            "bob",
            f"key:{keyid}",
            {"principal": "bob", "public_key": pem, "auth": bob_by_token.auth_payload()},
        )
    ).index
    state = AccessState.replay(ledger)
    assert keyid not in state.keys
    assert [r.reason for r in state.rejected if r.index == index] == [
        "the key announcement does not count: a token cannot announce a key of its own principal"
    ]
    # nor a key of another principal (keys.manage is the admin's)
    with pytest.raises(AccessDenied):
        announce_key(home, ledger, bob, ADMIN_NAME, passphrase=None)
    # the admin may, with a token too: the announcement names the token
    admin_token = create_token(
        ledger, admin, ADMIN_NAME, expires=now() + timedelta(hours=1), now=now()
    )
    by_admin_token = by_token(home, ledger, admin_token.secret)
    made = announce_key(home, ledger, by_admin_token, "bob", passphrase=None)
    event = ledger.entry(made.ledger_index)
    assert event.type == "key.created"
    state = AccessState.replay(ledger)
    assert made.info.keyid in state.keys and state.keys[made.info.keyid].principal == "bob"
    # refresh gives what a full replay gives
    partial = AccessState()
    partial.refresh(ledger)
    assert partial.to_dict(now()) == state.to_dict(now())
