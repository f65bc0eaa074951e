"""Signing keys: Ed25519 (checkpoints, actors) and ECDSA P-256 (actors whose keys live in KMSes).

Private keys are stored as PKCS#8 PEM, encrypted with the best scheme ``cryptography`` offers when
a passphrase is given, in a file created with mode 0600 that is never overwritten: a key file is
the identity of a ledger or an actor, and replacing one by accident cannot be undone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from immutrail.files import read_capped

from .errors import KeyFileError

MAX_KEY_FILE_BYTES = 64 * 1024
"""A PEM key file, public or private (a PEM Ed25519 or P-256 key is under 1 KiB)."""

__all__ = [
    "MAX_KEY_FILE_BYTES",
    "PrivateKey",
    "PublicKey",
    "check_private_key",
    "check_public_key",
    "generate_ecdsa_p256",
    "generate_ed25519",
    "key_id",
    "load_private_key",
    "load_public_key_pem",
    "public_key_pem",
    "public_key_raw",
    "save_private_key",
    "spki_der",
]

PrivateKey: TypeAlias = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
"""A private key we sign with: Ed25519, or ECDSA on P-256 (other curves are refused on load)."""

PublicKey: TypeAlias = Ed25519PublicKey | ec.EllipticCurvePublicKey
"""A public key we verify with: Ed25519, or ECDSA on P-256."""


def generate_ed25519() -> Ed25519PrivateKey:
    """A new Ed25519 key: the default, and the only type a C2SP signed note can carry."""
    return Ed25519PrivateKey.generate()


def generate_ecdsa_p256() -> ec.EllipticCurvePrivateKey:
    """A new ECDSA key on NIST P-256, for signers whose keys must be FIPS curves or in a KMS."""
    return ec.generate_private_key(ec.SECP256R1())


def save_private_key(key: PrivateKey, path: Path | str, passphrase: bytes | None = None) -> None:
    """Write ``key`` as PKCS#8 PEM to a new file with mode 0600; KeyFileError if it exists.

    The file is created with ``O_CREAT | O_EXCL`` (which also refuses to follow a symlink at
    ``path``), written, flushed to disk, and removed again if writing fails, so a crash never
    leaves a half-written key behind. An empty passphrase is refused rather than taken to mean
    "no encryption".
    """
    check_private_key(key, str(path))
    if passphrase is not None and not passphrase:
        raise KeyFileError(
            "an empty passphrase was given",
            hint="Give a passphrase, or none to store it unencrypted.",
        )
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase)
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    target = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError as exc:
        raise KeyFileError(
            f"{target} already exists; refusing to overwrite a key",
            hint="Move the old key away first if you really mean to replace it.",
        ) from exc
    except OSError as exc:
        raise KeyFileError(f"cannot create {target}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            target.unlink()
        if isinstance(exc, OSError):
            raise KeyFileError(f"cannot write {target}: {exc.strerror or exc}") from exc
        raise


def load_private_key(path: Path | str, passphrase: bytes | None = None) -> PrivateKey:
    """Read a PEM private key (PKCS#8 or traditional); KeyFileError says exactly what is wrong."""
    target = Path(path)
    try:
        data = read_capped(target, MAX_KEY_FILE_BYTES)
    except OSError as exc:
        raise KeyFileError(f"cannot read {target}: {exc.strerror or exc}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=passphrase)
    except TypeError as exc:
        # cryptography signals a passphrase that is missing or superfluous with TypeError.
        if passphrase is None:
            raise KeyFileError(
                f"{target} is encrypted and no passphrase was given",
                hint="Set the passphrase it was saved with.",
            ) from exc
        raise KeyFileError(
            f"{target} is not encrypted but a passphrase was given",
            hint="Unset the passphrase to load it.",
        ) from exc
    except UnsupportedAlgorithm as exc:
        raise KeyFileError(f"{target} holds a key of an unsupported type: {exc}") from exc
    except ValueError as exc:
        if passphrase is not None and b"ENCRYPTED" in data:
            raise KeyFileError(
                f"cannot decrypt {target}: wrong passphrase",
                hint="Check the passphrase the key was saved with.",
            ) from exc
        raise KeyFileError(f"{target} is not a PEM private key") from exc
    return check_private_key(key, str(target))


def check_private_key(key: object, where: str = "private key") -> PrivateKey:
    """``key`` as a PrivateKey, or KeyFileError when it is not Ed25519 or ECDSA P-256."""
    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return key
        raise KeyFileError(f"{where}: ECDSA keys must be on P-256, not {key.curve.name}")
    raise KeyFileError(f"{where}: unsupported key type {type(key).__name__}; use Ed25519 or P-256")


def check_public_key(key: object, where: str = "public key") -> PublicKey:
    """``key`` as a PublicKey, or KeyFileError when it is not Ed25519 or ECDSA P-256."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if isinstance(key.curve, ec.SECP256R1):
            return key
        raise KeyFileError(f"{where}: ECDSA keys must be on P-256, not {key.curve.name}")
    raise KeyFileError(f"{where}: unsupported key type {type(key).__name__}; use Ed25519 or P-256")


def public_key_raw(public_key: PublicKey) -> bytes:
    """The bare public key: 32 bytes for Ed25519, the 65-byte uncompressed point for P-256."""
    if isinstance(public_key, Ed25519PublicKey):
        return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def spki_der(public_key: PublicKey) -> bytes:
    """The DER SubjectPublicKeyInfo: the one encoding that names both algorithm and key."""
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(public_key: PublicKey) -> str:
    """Lower-case hex SHA-256 of the DER SubjectPublicKeyInfo: 64 hex digits.

    Hashing the SPKI rather than the raw key binds the algorithm too, and any tool can recompute
    it (``openssl pkey -pubin -outform DER | sha256sum``). It is the ``keyid`` of our DSSE
    signatures and of ledger event signatures.
    """
    return hashlib.sha256(spki_der(public_key)).hexdigest()


def public_key_pem(public_key: PublicKey) -> str:
    """The public key as a SubjectPublicKeyInfo PEM text, the form people exchange."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_public_key_pem(text: str | bytes) -> PublicKey:
    """Parse a SubjectPublicKeyInfo PEM; KeyFileError unless it is an Ed25519 or P-256 key."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    try:
        key = serialization.load_pem_public_key(data)
    except UnsupportedAlgorithm as exc:
        raise KeyFileError(f"unsupported public key type: {exc}") from exc
    except ValueError as exc:
        raise KeyFileError("not a PEM public key") from exc
    return check_public_key(key, "public key")
