"""Key files (PKCS#8 PEM, 0600, never overwritten), public key encodings and key ids."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from immutrail.crypto.errors import CryptoError, KeyFileError
from immutrail.crypto.keys import (
    PrivateKey,
    generate_ecdsa_p256,
    generate_ed25519,
    key_id,
    load_private_key,
    load_public_key_pem,
    public_key_pem,
    public_key_raw,
    save_private_key,
)

# RFC 8032 section 7.1, TEST 1.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
ED25519_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")  # RFC 8410 SubjectPublicKeyInfo

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def same_key(a: PrivateKey, b: PrivateKey) -> bool:
    return public_key_raw(a.public_key()) == public_key_raw(b.public_key())


@pytest.mark.parametrize("generate", [generate_ed25519, generate_ecdsa_p256])
@pytest.mark.parametrize("passphrase", [None, b"correct horse battery staple"])
def test_save_and_load_round_trip(
    tmp_path: Path, generate: Callable[[], PrivateKey], passphrase: bytes | None
) -> None:
    key = generate()
    path = tmp_path / "actor.key"
    save_private_key(key, path, passphrase)
    pem = path.read_bytes()
    assert pem.startswith(
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----" if passphrase else b"-----BEGIN PRIVATE KEY-----"
    )
    loaded = load_private_key(path, passphrase)
    assert isinstance(loaded, Ed25519PrivateKey) == isinstance(key, Ed25519PrivateKey)
    assert same_key(loaded, key)


@posix_only
def test_key_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        save_private_key(generate_ed25519(), tmp_path / "k")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "ledger.key"
    first = generate_ed25519()
    save_private_key(first, path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists") as info:
        save_private_key(generate_ed25519(), path)
    assert "Move the old key away" in info.value.diagnostics()
    assert path.read_bytes() == before
    assert same_key(load_private_key(path), first)


@posix_only
def test_a_symlink_at_the_path_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    link = tmp_path / "ledger.key"
    link.symlink_to(target)
    with pytest.raises(KeyFileError, match="already exists"):
        save_private_key(generate_ed25519(), link)
    assert not target.exists()


def test_saving_into_a_missing_folder_is_a_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot create"):
        save_private_key(generate_ed25519(), tmp_path / "no" / "such" / "k")


def test_an_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="empty passphrase"):
        save_private_key(generate_ed25519(), tmp_path / "k", b"")
    assert not (tmp_path / "k").exists()


def test_unsupported_keys_are_not_saved(tmp_path: Path) -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(KeyFileError, match="P-256, not secp384r1"):
        save_private_key(p384, tmp_path / "k")  # type: ignore[arg-type]
    assert not (tmp_path / "k").exists()


def test_wrong_missing_and_superfluous_passphrases_say_so(tmp_path: Path) -> None:
    encrypted, plain = tmp_path / "enc.key", tmp_path / "plain.key"
    save_private_key(generate_ed25519(), encrypted, b"right")
    save_private_key(generate_ecdsa_p256(), plain)
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        load_private_key(encrypted, b"wrong")
    with pytest.raises(KeyFileError, match="encrypted and no passphrase was given"):
        load_private_key(encrypted)
    with pytest.raises(KeyFileError, match="not encrypted but a passphrase was given"):
        load_private_key(plain, b"right")


def write_pem(path: Path, key: object) -> Path:
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def test_unreadable_or_foreign_files_are_key_file_errors(tmp_path: Path) -> None:
    (tmp_path / "junk").write_text("not a key")
    public = tmp_path / "public.pem"
    public.write_text(public_key_pem(generate_ed25519().public_key()))
    cases = {
        tmp_path / "missing": "cannot read",
        tmp_path / "junk": "is not a PEM private key",
        public: "is not a PEM private key",
        write_pem(tmp_path / "rsa", rsa.generate_private_key(65537, 2048)): "unsupported key type",
        write_pem(tmp_path / "p384", ec.generate_private_key(ec.SECP384R1())): "must be on P-256",
    }
    for path, message in cases.items():
        with pytest.raises(KeyFileError, match=message) as info:
            load_private_key(path)
        assert isinstance(info.value, CryptoError)


def test_traditional_openssl_pem_loads_too(tmp_path: Path) -> None:
    key = generate_ecdsa_p256()
    path = tmp_path / "sec1.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    assert same_key(load_private_key(path), key)


def test_public_key_raw_encodings() -> None:
    ed = Ed25519PrivateKey.from_private_bytes(RFC8032_SEED).public_key()
    assert public_key_raw(ed) == RFC8032_PUBLIC
    p256 = generate_ecdsa_p256().public_key()
    raw = public_key_raw(p256)
    numbers = p256.public_numbers()
    assert raw == b"\x04" + numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")


def test_key_id_is_sha256_of_the_spki_der() -> None:
    ed = Ed25519PrivateKey.from_private_bytes(RFC8032_SEED).public_key()
    expected = hashlib.sha256(ED25519_SPKI_PREFIX + RFC8032_PUBLIC).hexdigest()
    assert key_id(ed) == expected
    assert len(expected) == 64 and expected == expected.lower()
    p256 = generate_ecdsa_p256().public_key()
    der = p256.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert key_id(p256) == hashlib.sha256(der).hexdigest()
    assert key_id(p256) != key_id(generate_ecdsa_p256().public_key())


@pytest.mark.parametrize("generate", [generate_ed25519, generate_ecdsa_p256])
def test_public_key_pem_round_trip(generate: Callable[[], PrivateKey]) -> None:
    public = generate().public_key()
    text = public_key_pem(public)
    assert text.startswith("-----BEGIN PUBLIC KEY-----\n")
    again = load_public_key_pem(text)
    assert key_id(again) == key_id(public)
    assert key_id(load_public_key_pem(text.encode())) == key_id(public)


def test_load_public_key_pem_refuses_others() -> None:
    rsa_pem = (
        rsa.generate_private_key(65537, 2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyFileError, match="unsupported key type RSAPublicKey"):
        load_public_key_pem(rsa_pem)
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key_pem("hello")


def test_the_shipped_vsa_pem_loads(data_dir: Path) -> None:
    key = load_public_key_pem((data_dir / "vsa_signing_public_key.pem").read_text())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert isinstance(key.curve, ec.SECP256R1)
