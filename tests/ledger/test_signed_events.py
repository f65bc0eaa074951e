"""Actor signatures on events: verified from keys the ledger itself announces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from immutrail.cli.main import app
from immutrail.crypto.errors import CryptoError
from immutrail.crypto.keys import (
    generate_ed25519,
    key_id,
    public_key_pem,
    save_private_key,
)
from immutrail.ledger.errors import EventFormatError
from immutrail.ledger.event import Event, sign_event, verify_event_signature
from immutrail.ledger.ledger import Ledger

# Actor signatures are checked with and without the entry format check: without it, the entries
# to replay are found by their bytes.
ENTRY_FORMAT = pytest.mark.parametrize("entry_format", [True, False], ids=["full", "integrity"])


def announce(ledger: Ledger, key: object, actor: str = "admin:root") -> None:
    public = key.public_key()  # type: ignore[attr-defined]
    ledger.append(
        Event.create(
            "key.created",
            actor,
            f"key:{key_id(public)}",
            {"purpose": "approver", "public_key": public_key_pem(public)},
        )
    )


def approval(subject: str = "sha256:" + "e" * 64) -> Event:
    return Event.create("approval.granted", "user:alice", subject, {"environment": "prod"})


def test_a_signed_event_verifies_and_a_changed_one_does_not() -> None:
    key = generate_ed25519()
    signed = sign_event(approval(), key)
    verify_event_signature(signed, key.public_key())
    with pytest.raises(CryptoError):
        verify_event_signature(signed, generate_ed25519().public_key())
    replayed = Event.create(
        signed.type,
        signed.actor,
        "sha256:" + "f" * 64,
        dict(signed.payload),
        time=signed.time,
        signature=signed.signature,
    )
    with pytest.raises(CryptoError):  # the signature does not carry over to another digest
        verify_event_signature(replayed, key.public_key())
    with pytest.raises(EventFormatError):
        verify_event_signature(approval(), key.public_key())


@ENTRY_FORMAT
def test_verify_checks_signatures_against_announced_keys(
    ledger: Ledger, entry_format: bool
) -> None:
    alice = generate_ed25519()
    announce(ledger, alice)
    ledger.append(sign_event(approval(), alice))
    ledger.append(sign_event(approval(), generate_ed25519()))  # a key nobody announced
    report = ledger.verify(entry_format=entry_format)
    assert report.ok, report.problems
    assert (report.signatures, report.unknown_signers) == (1, 1)


@ENTRY_FORMAT
def test_a_forged_signature_is_a_verification_problem(ledger: Ledger, entry_format: bool) -> None:
    alice, mallory = generate_ed25519(), generate_ed25519()
    announce(ledger, alice)
    forged = sign_event(approval(), mallory)
    claimed = {"keyid": key_id(alice.public_key()), "sig": forged.signature["sig"]}  # type: ignore[index]
    ledger.append(
        Event.create(
            forged.type,
            forged.actor,
            forged.subject,
            dict(forged.payload),
            time=forged.time,
            signature=claimed,
        )
    )
    report = ledger.verify(entry_format=entry_format)
    assert not report.ok
    assert report.problems[0].index == 1
    assert "signature does not verify" in report.problems[0].message


@ENTRY_FORMAT
def test_signatures_after_revocation_fail(ledger: Ledger, entry_format: bool) -> None:
    alice = generate_ed25519()
    announce(ledger, alice)
    ledger.append(sign_event(approval(), alice))
    ledger.append(Event.create("key.revoked", "admin:root", f"key:{key_id(alice.public_key())}"))
    ledger.append(sign_event(approval(), alice))
    report = ledger.verify(entry_format=entry_format)
    assert [p.index for p in report.problems] == [3]
    assert "revoked" in report.problems[0].message


def test_cli_append_with_sign_key(tmp_path: Path) -> None:
    runner = CliRunner()
    home = tmp_path / "home"
    assert runner.invoke(app, ["init", "--home", str(home)]).exit_code == 0
    key = generate_ed25519()
    save_private_key(key, tmp_path / "alice.pem")
    public = key.public_key()
    payload = json.dumps({"public_key": public_key_pem(public)})
    base = ["ledger", "append", "--home", str(home), "--format", "json"]
    assert (
        runner.invoke(
            app,
            [
                *base,
                "--type",
                "key.created",
                "--actor",
                "admin:root",
                "--subject",
                f"key:{key_id(public)}",
                "--payload",
                payload,
            ],
        ).exit_code
        == 0
    )
    out = runner.invoke(
        app,
        [
            *base,
            "--type",
            "approval.granted",
            "--actor",
            "user:alice",
            "--subject",
            "img:a",
            "--sign-key",
            str(tmp_path / "alice.pem"),
        ],
    )
    assert out.exit_code == 0, out.stderr
    shown = json.loads(
        runner.invoke(app, ["ledger", "entry", "1", "--home", str(home), "--format", "json"]).stdout
    )
    assert shown["event"]["signature"]["keyid"] == key_id(public)
    verified = json.loads(
        runner.invoke(app, ["ledger", "verify", "--home", str(home), "--format", "json"]).stdout
    )
    assert verified["ok"] and verified["signatures_verified"] == 1
