"""The key store: keys generated, encrypted at rest, announced, listed, exported, revoked, loaded.

Every refusal must leave the home as it was: no key file and no ledger event.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from immutrail.crypto.errors import KeyFileError
from immutrail.crypto.keys import (
    generate_ed25519,
    key_id,
    load_private_key,
    load_public_key_pem,
    save_private_key,
)
from immutrail.keys.errors import KeyInputError, RevokedKeyError, UnknownKeyError
from immutrail.keys.keystore import (
    KEYS_DIR,
    generate_key,
    get_key,
    key_path,
    list_keys,
    load_signing_key,
    revoke_key,
)
from immutrail.keys.passphrase import PASSPHRASE_ENV, PassphraseSource
from immutrail.ledger.event import parse_entry
from immutrail.ledger.home import open_ledger
from immutrail.ledger.ledger import Ledger

SECRET = b"correct horse battery staple"
NO_SECRET = PassphraseSource()


@pytest.fixture
def ledger(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Ledger]:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    opened = open_ledger(home)
    yield opened
    opened.close()


def given(secret: bytes) -> PassphraseSource:
    return PassphraseSource(prompt=lambda what, confirm: secret)


@pytest.mark.parametrize("algorithm", ["ed25519", "ecdsa-p256"])
def test_generate_encrypted_announced_listed_exported(
    home: Path, ledger: Ledger, algorithm: str
) -> None:
    made = generate_key(
        home, ledger, "alice", actor="user:ops", algorithm=algorithm, passphrase=SECRET
    )
    path = key_path(home, "alice", made.info.keyid)
    assert made.path == path and made.encrypted
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pem = path.read_bytes()
    # Encrypted at rest: PKCS#8 EncryptedPrivateKeyInfo, never the plain PRIVATE KEY block.
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert b"-----BEGIN PRIVATE KEY-----" not in pem
    with pytest.raises(KeyFileError, match="encrypted and no passphrase"):
        load_private_key(path)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(path, b"not it")
    private = load_private_key(path, SECRET)
    assert key_id(private.public_key()) == made.info.keyid

    event = parse_entry(ledger.entry(made.ledger_index).data)
    assert event.type == "key.created" and event.actor == "user:ops"
    assert event.subject == f"key:{made.info.keyid}"
    assert event.payload["principal"] == "alice" and event.payload["algorithm"] == algorithm
    assert event.payload["purpose"] == "signing"
    assert key_id(load_public_key_pem(event.payload["public_key"])) == made.info.keyid

    (listed,) = [k for k in list_keys(home, ledger) if k.principal == "alice"]
    assert listed.algorithm == algorithm and listed.local_path == path and not listed.revoked
    assert listed.created_index == made.ledger_index and listed.created_by == "user:ops"
    exported = get_key(home, ledger, made.info.keyid[:8])
    assert exported.public_key_pem == event.payload["public_key"]
    assert exported.to_dict()["private_key_here"] is True


def test_no_passphrase_stores_plain_pkcs8(home: Path, ledger: Ledger) -> None:
    made = generate_key(home, ledger, "ci@example.org", actor="user:ops", passphrase=None)
    assert not made.encrypted
    assert made.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_signing_key(home, ledger, passphrase=NO_SECRET, principal="ci@example.org")
    assert loaded.keyid == made.info.keyid and loaded.principal == "ci@example.org"


def _untouched(home: Path, ledger: Ledger, size: int) -> None:
    assert ledger.head().size == size
    assert not (home / KEYS_DIR).exists() or not any((home / KEYS_DIR).rglob("*.key"))


@pytest.mark.parametrize(
    "principal", ["", "Alice", "../x", "a/b", ".hidden", "-x", "x" * 129, "al ice", "é"]
)
def test_bad_principal_is_refused_and_nothing_written(
    home: Path, ledger: Ledger, principal: str
) -> None:
    size = ledger.head().size
    with pytest.raises(KeyInputError, match="not a principal id"):
        generate_key(home, ledger, principal, actor="user:ops", passphrase=SECRET)
    _untouched(home, ledger, size)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"purpose": "builder"}, "reserved"),
        ({"purpose": "Release!"}, "not a key purpose"),
        ({"algorithm": "rsa"}, "unknown algorithm"),
        ({"passphrase": b""}, "empty passphrase"),
    ],
)
def test_bad_generate_requests_change_nothing(
    home: Path, ledger: Ledger, kwargs: dict[str, object], fragment: str
) -> None:
    size = ledger.head().size
    arguments: dict[str, object] = {"passphrase": SECRET, **kwargs}
    with pytest.raises(KeyInputError, match=fragment):
        generate_key(home, ledger, "alice", actor="user:ops", **arguments)  # type: ignore[arg-type]
    _untouched(home, ledger, size)


def test_key_file_removed_when_the_announcement_fails(home: Path) -> None:
    ledger = open_ledger(home)
    ledger.close()  # appending to a closed store fails after the key file was written
    with pytest.raises(Exception):  # noqa: B017 - the backend's own error type
        generate_key(home, ledger, "alice", actor="user:ops", passphrase=None)
    assert not any((home / KEYS_DIR / "alice").glob("*.key"))


def test_revoke_then_refuse_twice_and_unknown(home: Path, ledger: Ledger) -> None:
    made = generate_key(home, ledger, "alice", actor="user:ops", passphrase=None)
    info, index = revoke_key(home, ledger, made.info.keyid, reason="laptop lost", actor="user:sec")
    event = parse_entry(ledger.entry(index).data)
    assert event.type == "key.revoked" and event.subject == f"key:{made.info.keyid}"
    assert event.actor == "user:sec" and event.payload["reason"] == "laptop lost"
    assert info.revoked and info.revoked_index == index and info.revoked_reason == "laptop lost"
    size = ledger.head().size
    with pytest.raises(RevokedKeyError, match="already revoked"):
        revoke_key(home, ledger, made.info.keyid, reason="again", actor="user:sec")
    with pytest.raises(UnknownKeyError, match="no key"):
        revoke_key(home, ledger, "ab" * 32, reason="x", actor="user:sec")
    with pytest.raises(KeyInputError, match="not a key id"):
        revoke_key(home, ledger, "abc", reason="x", actor="user:sec")
    with pytest.raises(KeyInputError, match="reason"):
        revoke_key(home, ledger, made.info.keyid, reason="  ", actor="user:sec")
    assert ledger.head().size == size
    # A revoked key cannot be loaded to sign.
    with pytest.raises(RevokedKeyError, match="revoked at ledger entry"):
        load_signing_key(home, ledger, passphrase=NO_SECRET, keyid=made.info.keyid)
    with pytest.raises(UnknownKeyError, match="no usable key"):
        load_signing_key(home, ledger, passphrase=NO_SECRET, principal="alice")


def test_loading_keys_for_signing(home: Path, ledger: Ledger, tmp_path: Path) -> None:
    first = generate_key(home, ledger, "alice", actor="user:ops", passphrase=SECRET)
    loaded = load_signing_key(home, ledger, passphrase=given(SECRET), principal="alice")
    assert loaded.keyid == first.info.keyid
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_signing_key(home, ledger, passphrase=given(b"nope"), principal="alice")
    with pytest.raises(KeyInputError, match="needs a passphrase"):
        load_signing_key(home, ledger, passphrase=NO_SECRET, principal="alice")

    second = generate_key(home, ledger, "alice", actor="user:ops", passphrase=None)
    with pytest.raises(KeyInputError, match="2 usable keys"):
        load_signing_key(home, ledger, passphrase=NO_SECRET, principal="alice")
    assert (
        load_signing_key(home, ledger, passphrase=NO_SECRET, keyid=second.info.keyid).keyid
        == second.info.keyid
    )
    with pytest.raises(KeyInputError, match="belongs to alice, not to bob"):
        load_signing_key(
            home, ledger, passphrase=NO_SECRET, keyid=second.info.keyid, principal="bob"
        )
    with pytest.raises(KeyInputError, match="say which key"):
        load_signing_key(home, ledger, passphrase=NO_SECRET)

    # A key file the ledger never announced can sign nothing that counts.
    stranger = tmp_path / "stranger.key"
    save_private_key(generate_ed25519(), stranger)
    with pytest.raises(UnknownKeyError, match="not announced"):
        load_signing_key(home, ledger, passphrase=NO_SECRET, key_file=stranger)
    # An announced key kept elsewhere is fine, and its principal comes from the ledger.
    elsewhere = tmp_path / "alice.key"
    elsewhere.write_bytes(second.path.read_bytes())
    assert load_signing_key(home, ledger, passphrase=NO_SECRET, key_file=elsewhere).principal == (
        "alice"
    )

    # A key file swapped for another key under the same name is refused.
    os.chmod(second.path, 0o600)
    second.path.unlink()
    save_private_key(generate_ed25519(), second.path)
    with pytest.raises(KeyInputError, match="the key file was replaced"):
        load_signing_key(home, ledger, passphrase=NO_SECRET, keyid=second.info.keyid)


def test_passphrase_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    secret_file = tmp_path / "pw"
    secret_file.write_bytes(b"s3cret\n")
    asked: list[tuple[str, bool]] = []

    def prompt(what: str, confirm: bool) -> bytes:
        asked.append((what, confirm))
        return b"typed"

    assert PassphraseSource(secret_file, prompt).get("k") == b"s3cret"
    secret_file.write_bytes(b"s3cret\r\n")
    assert PassphraseSource(secret_file).get("k") == b"s3cret"
    monkeypatch.setenv(PASSPHRASE_ENV, "from-env")
    assert PassphraseSource(None, prompt).get("k") == b"from-env"
    monkeypatch.delenv(PASSPHRASE_ENV)
    assert PassphraseSource(None, prompt).get("the key", confirm=True) == b"typed"
    assert asked == [("the key", True)]
    secret_file.write_bytes(b"\n")
    with pytest.raises(KeyInputError, match="empty"):
        PassphraseSource(secret_file).get("k")
    with pytest.raises(KeyInputError, match="cannot read"):
        PassphraseSource(tmp_path / "missing").get("k")
    with pytest.raises(KeyInputError, match="empty passphrase"):
        PassphraseSource(None, lambda what, confirm: b"").get("k")
    with pytest.raises(KeyInputError, match="needs a passphrase"):
        PassphraseSource().get("k")
