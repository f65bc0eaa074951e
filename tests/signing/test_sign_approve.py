"""Release signatures and approvals: what counts, what is refused, and why.

The attacks of the issue, each against the real store and ledger: a forged statement (payload
changed after signing), a signature or approval copied to another image, an approval replayed
for another environment, approvals by an unannounced or revoked key, the same principal twice,
a statement naming someone other than the key's principal, the build key approving, and a key
planted for someone else by whoever could append an event.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from immutrail.access import AccessState, NewPrincipal, authenticate, bootstrap
from immutrail.access.actor import Actor
from immutrail.artifacts.attestations import DSSE_MEDIA_TYPE
from immutrail.artifacts.provenance import IN_TOTO_PAYLOAD_TYPE
from immutrail.artifacts.statements import PREDICATE_ANNOTATION, attest, ledger_keys
from immutrail.crypto.canonical import canonical_json
from immutrail.crypto.keys import generate_ed25519, key_id, public_key_pem, save_private_key
from immutrail.keys.errors import RevokedKeyError, UnknownKeyError
from immutrail.keys.keystore import load_signing_key, revoke_key
from immutrail.ledger.event import Event, parse_entry
from immutrail.ledger.storage.interface import EntryFilter
from immutrail.signing.approve import (
    APPROVAL_PREDICATE,
    EVENT_APPROVED,
    approve_image,
    valid_approvals,
)
from immutrail.signing.errors import ReplayError, SigningInputError
from immutrail.signing.sign import EVENT_SIGNED, SIGNATURE_PREDICATE, sign_image, valid_signatures

from .helpers import NO_SECRET, statement_of, with_statement, world


def reasons(rejected: list) -> list[str]:  # type: ignore[type-arg]
    return [item.reason for item in rejected]


def test_sign_and_approve_are_attached_recorded_and_counted(home: Path, repo: Path) -> None:
    with world(home, repo) as w:
        digest = w.build("app:1")
        alice, bob = w.key("alice"), w.key("bob", purpose="approval")
        signed = sign_image(w.store, w.ledger, home, "app:1", alice)
        assert signed.digest == digest and signed.signature.principal == "alice"
        approved = approve_image(
            w.store, w.ledger, home, digest, "prod", bob, comment="tests green"
        )
        assert (
            approved.approval.environment == "prod" and approved.approval.comment == "tests green"
        )

        (signature,), none = valid_signatures(w.store, w.ledger, digest)
        assert none == [] and signature.keyid == alice.keyid and signature.purpose == "release"
        (approval,), none = valid_approvals(w.store, w.ledger, digest, "prod")
        assert none == [] and approval == approved.approval

        statement = statement_of(w.envelope_of(approval.attestation))
        assert statement["subject"][0]["digest"]["sha256"] == digest.removeprefix("sha256:")
        assert statement["predicateType"] == APPROVAL_PREDICATE
        assert set(statement["predicate"]) == {
            "environment",
            "approver",
            "approved_at",
            "nonce",
            "comment",
        }

        for index, kind, who in (
            (signed.ledger_index, EVENT_SIGNED, "alice"),
            (approved.ledger_index, EVENT_APPROVED, "bob"),
        ):
            event = parse_entry(w.ledger.entry(index).data)
            assert (event.type, event.actor, event.subject) == (kind, who, digest)
            assert event.signature is not None  # signed by the principal's own key
        report = w.ledger.verify()
        assert report.ok and report.signatures == 2  # ledger verify checked both signatures


def test_forged_and_copied_statements_do_not_count(home: Path, repo: Path) -> None:
    with world(home, repo) as w:
        first = w.build("app:1")
        second = w.build("app:2", change="v2")
        alice, bob = w.key("alice"), w.key("bob")
        signed = sign_image(w.store, w.ledger, home, first, alice)
        approved = approve_image(w.store, w.ledger, home, first, "prod", bob)

        # Forged: the payload names carol after bob signed it.
        envelope = w.envelope_of(approved.approval.attestation)
        statement = statement_of(envelope)
        statement["predicate"]["approver"] = "carol"
        forged = with_statement(envelope, statement)
        w.store.attach(
            first,
            IN_TOTO_PAYLOAD_TYPE,
            canonical_json(forged),
            DSSE_MEDIA_TYPE,
            {PREDICATE_ANNOTATION: APPROVAL_PREDICATE},
        )
        counted, rejected = valid_approvals(w.store, w.ledger, first, "prod")
        assert [a.principal for a in counted] == ["bob"]
        assert any("does not verify" in r or "valid signature" in r for r in reasons(rejected))

        # Copied to another image: signed over the first digest, so it names the wrong subject.
        for manifest, predicate in (
            (signed.signature.attestation, SIGNATURE_PREDICATE),
            (approved.approval.attestation, APPROVAL_PREDICATE),
        ):
            w.store.attach(
                second,
                IN_TOTO_PAYLOAD_TYPE,
                canonical_json(w.envelope_of(manifest)),
                DSSE_MEDIA_TYPE,
                {PREDICATE_ANNOTATION: predicate},
            )
        counted, rejected = valid_approvals(w.store, w.ledger, second, "prod")
        assert counted == [] and len(rejected) == 1
        assert first.removeprefix("sha256:") in rejected[0].reason
        signatures, rejected = valid_signatures(w.store, w.ledger, second)
        assert signatures == []
        assert reasons(rejected) == [f"the statement covers {first} but not {second}"]


def test_replayed_for_another_environment(home: Path, repo: Path) -> None:
    with world(home, repo) as w:
        digest = w.build("app:1")
        bob = w.key("bob")
        approve_image(w.store, w.ledger, home, digest, "staging", bob)
        counted, rejected = valid_approvals(w.store, w.ledger, digest, "prod")
        assert counted == []
        assert reasons(rejected) == ["approves environment 'staging', not 'prod'"]
        # The same principal may approve prod separately: a new signed statement.
        approve_image(w.store, w.ledger, home, digest, "prod", bob)
        assert [a.environment for a in valid_approvals(w.store, w.ledger, digest, "prod")[0]] == [
            "prod"
        ]


def test_same_principal_twice(home: Path, repo: Path) -> None:
    with world(home, repo) as w:
        digest = w.build("app:1")
        bob = w.key("bob")
        approve_image(w.store, w.ledger, home, digest, "prod", bob)
        size = w.ledger.head().size
        with pytest.raises(ReplayError, match="bob already approved"):
            approve_image(w.store, w.ledger, home, digest, "prod", bob)
        assert w.ledger.head().size == size
        sign_image(w.store, w.ledger, home, digest, bob)
        size = w.ledger.head().size
        with pytest.raises(ReplayError, match="bob already signed"):
            sign_image(w.store, w.ledger, home, digest, bob)
        assert w.ledger.head().size == size
        # Bypassing the refusal (a second statement attached directly) still counts once.
        predicate = {
            "environment": "prod",
            "approver": "bob",
            "approved_at": "2026-01-01T00:00:00Z",
            "nonce": "another",
        }
        attest(
            w.store, w.ledger, home, "bob", digest, APPROVAL_PREDICATE, predicate, key=bob.private
        )
        counted, rejected = valid_approvals(w.store, w.ledger, digest, "prod")
        assert [a.principal for a in counted] == ["bob"]
        assert reasons(rejected) == ["bob already approved this image for prod"]
        assert w.ledger.head().size == size + 1  # only the attach event of the bypass


def test_unknown_and_revoked_keys(home: Path, repo: Path, tmp_path: Path) -> None:
    with world(home, repo) as w:
        digest = w.build("app:1")
        bob = w.key("bob")
        approve_image(w.store, w.ledger, home, digest, "prod", bob)

        # A key file the ledger never announced cannot even be loaded to approve...
        stranger = generate_ed25519()
        path = tmp_path / "stranger.key"
        save_private_key(stranger, path)
        with pytest.raises(UnknownKeyError, match="not announced"):
            load_signing_key(home, w.ledger, passphrase=NO_SECRET, key_file=path)
        # ...and a statement it signed and attached anyway does not count.
        predicate = {
            "environment": "prod",
            "approver": "mallory",
            "approved_at": "2026-01-01T00:00:00Z",
            "nonce": "n",
        }
        attest(
            w.store, w.ledger, home, "mallory", digest, APPROVAL_PREDICATE, predicate, key=stranger
        )
        counted, rejected = valid_approvals(w.store, w.ledger, digest, "prod")
        assert [a.principal for a in counted] == ["bob"]
        assert reasons(rejected) == ["signed by no ledger key"]

        # After revocation, the key can approve nothing and its approvals stop counting, even
        # when it was loaded before the revocation.
        revoke_key(home, w.ledger, bob.keyid, reason="compromised", actor="user:sec")
        with pytest.raises(RevokedKeyError):
            load_signing_key(home, w.ledger, passphrase=NO_SECRET, keyid=bob.keyid)
        size = w.ledger.head().size
        referrers = len(w.store.referrers(digest))
        with pytest.raises(RevokedKeyError, match="revoked"):
            approve_image(w.store, w.ledger, home, digest, "staging", bob)
        with pytest.raises(RevokedKeyError, match="revoked"):
            sign_image(w.store, w.ledger, home, digest, bob)
        assert w.ledger.head().size == size and len(w.store.referrers(digest)) == referrers
        counted, rejected = valid_approvals(w.store, w.ledger, digest, "prod")
        assert counted == []
        assert f"signed by revoked key {bob.keyid}" in reasons(rejected)
        assert key_id(stranger.public_key()) not in {a.keyid for a in counted}


def test_claimed_principal_must_be_the_keys(home: Path, repo: Path) -> None:
    with world(home, repo) as w:
        digest = w.build("app:1")
        alice = w.key("alice")
        predicate = {
            "environment": "prod",
            "approver": "bob",
            "approved_at": "2026-01-01T00:00:00Z",
            "nonce": "n",
        }
        attest(
            w.store,
            w.ledger,
            home,
            "alice",
            digest,
            APPROVAL_PREDICATE,
            predicate,
            key=alice.private,
        )
        # The build key (key=None) approving: never counts as a person.
        attest(w.store, w.ledger, home, "user:ops", digest, APPROVAL_PREDICATE, predicate)
        bad_shape = {
            "environment": "prod",
            "approver": "alice",
            "approved_at": "yesterday",
            "nonce": "n",
        }
        attest(
            w.store,
            w.ledger,
            home,
            "alice",
            digest,
            APPROVAL_PREDICATE,
            bad_shape,
            key=alice.private,
        )
        counted, rejected = valid_approvals(w.store, w.ledger, digest, "prod")
        assert counted == []
        got = reasons(rejected)
        assert any("names 'bob' as approver" in r and "'alice'" in r for r in got)
        assert any(r.startswith("signed by the build key") for r in got)
        assert any("not an RFC 3339 time" in r for r in got)


def test_bad_requests_change_nothing(home: Path, repo: Path) -> None:
    with world(home, repo) as w:
        digest = w.build("app:1")
        bob = w.key("bob")
        size = w.ledger.head().size
        referrers = len(w.store.referrers(digest))
        with pytest.raises(SigningInputError, match="not an environment name"):
            approve_image(w.store, w.ledger, home, digest, "Prod!", bob)
        with pytest.raises(SigningInputError, match="comment"):
            approve_image(w.store, w.ledger, home, digest, "prod", bob, comment="a\x00b")
        with pytest.raises(Exception, match="no image"):
            approve_image(w.store, w.ledger, home, "sha256:" + "0" * 64, "prod", bob)
        sbom = w.store.referrers(digest)[0].digest
        with pytest.raises(SigningInputError, match="not an image"):
            sign_image(w.store, w.ledger, home, sbom, bob)
        assert w.ledger.head().size == size and len(w.store.referrers(digest)) == referrers
        events = list(w.ledger.entries(EntryFilter(type=EVENT_APPROVED)))
        assert events == []


def test_a_key_planted_for_someone_else_signs_nothing_that_counts(
    home: Path, repo: Path, tmp_path: Path
) -> None:
    """With access set up, whoever can append events announces a key of their own for the admin
    and approves with it: the approval is signed by no ledger key, because the announcement
    does not count; the same key announced by the admin (keys.manage) approves."""
    with world(home, repo) as w:
        digest = w.build("app:1")
        bootstrap(home, w.ledger, NewPrincipal.check("root", "person", None), passphrase=None)
        admin = authenticate(
            home,
            w.ledger,
            principal="root",
            token=None,
            key_file=None,
            passphrase_file=None,
            now=datetime.now(UTC),
        )
        planted = generate_ed25519()
        keyid = key_id(planted.public_key())
        claim = {
            "principal": "root",
            "purpose": "approval",
            "public_key": public_key_pem(planted.public_key()),
        }
        index = w.ledger.append(Event.create("key.created", "root", f"key:{keyid}", claim)).index
        predicate = {
            "environment": "prod",
            "approver": "root",
            "approved_at": "2026-01-01T00:00:00Z",
            "nonce": "n",
        }
        attest(w.store, w.ledger, home, "root", digest, APPROVAL_PREDICATE, predicate, key=planted)
        assert keyid not in ledger_keys(w.ledger)
        counted, rejected = valid_approvals(w.store, w.ledger, digest, "prod")
        assert counted == [] and reasons(rejected) == ["signed by no ledger key"]
        assert "does not say how its actor authenticated" in next(
            r.reason for r in AccessState.replay(w.ledger).rejected if r.index == index
        )

        Actor("root", admin).ledger(w.ledger).append(
            Event.create(
                "key.created",
                "root",
                f"key:{keyid}",
                {**claim, "auth": admin.auth_payload()},
            )
        )
        assert ledger_keys(w.ledger)[keyid].principal == "root"
        counted, rejected = valid_approvals(w.store, w.ledger, digest, "prod")
        assert [a.principal for a in counted] == ["root"] and rejected == []
