"""The report's authentication agrees with the access replay: a key or token planted by whoever
could append an event authenticates no one, on a ledger with access control set up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from immutrail.access import NewPrincipal, Role, bootstrap, create_principal, create_token
from immutrail.access.actor import Actor
from immutrail.access.authenticate import authenticate
from immutrail.access.tokens import ID_HEX
from immutrail.audit.reading import LedgerSource
from immutrail.audit.report.auth import Authentication
from immutrail.audit.source import Indexed
from immutrail.crypto.keys import generate_ed25519, key_id, public_key_pem
from immutrail.ledger.event import Event, parse_entry, sign_event
from immutrail.ledger.home import init_ledger


def test_planted_keys_and_tokens_authenticate_no_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ledger, _ = init_ledger(home)
    with ledger:
        bootstrap(home, ledger, NewPrincipal.check("root", "person", None), passphrase=None)
        now = datetime.now(UTC)
        admin = authenticate(
            home, ledger, principal="root", token=None, key_file=None, passphrase_file=None,
            now=now,
        )  # fmt: skip
        create_principal(
            ledger, admin, NewPrincipal.check("ci", "automation", None), roles=[Role.BUILDER]
        )
        real_token = create_token(ledger, admin, "ci", expires=now + timedelta(days=1), now=now)

        planted = generate_ed25519()
        keyid = key_id(planted.public_key())
        claim = {"principal": "root", "public_key": public_key_pem(planted.public_key())}
        ledger.append(Event.create("key.created", "ci", f"key:{keyid}", claim))
        forged_token = {
            "token_id": "f" * ID_HEX,
            "secret_sha256": "0" * 64,
            "expires": (now + timedelta(days=1)).isoformat(),
        }
        ledger.append(Event.create("token.created", "ci", "principal:ci", forged_token))

        def by_token(token_id: str) -> Event:
            return Event.create(
                "x.done", "ci", "s", {"auth": {"method": "token", "token_id": token_id}}
            )

        as_admin = Actor("root", admin).ledger(ledger)
        events = {
            "signed by the admin's key": as_admin.append(Event.create("x.done", "root", "s")),
            "signed by the planted key": ledger.append(
                sign_event(Event.create("x.done", "root", "s"), planted)
            ),
            "with the real token": ledger.append(by_token(real_token.token.token_id)),
            "with the planted token": ledger.append(by_token(forged_token["token_id"])),
        }
        source = LedgerSource(ledger, None)
        auth = Authentication(source)
        method = {
            what: auth.method(
                Indexed.of(appended.index, parse_entry(ledger.entry(appended.index).data))
            )
            for what, appended in events.items()
        }
        assert method == {
            "signed by the admin's key": "key",
            "signed by the planted key": None,
            "with the real token": "token",
            "with the planted token": None,
        }
        assert keyid not in auth.keys and forged_token["token_id"] not in auth.tokens
