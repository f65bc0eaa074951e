"""The key store: principals' private keys on disk, their public halves announced in the ledger.

``$IMMUTRAIL_HOME/keys/<principal>/<keyid>.key`` holds a PKCS#8 PEM private key, mode 0600,
encrypted with a passphrase unless the user explicitly chose not to. The ledger is the registry:
``key.created`` (subject ``key:<keyid>``, payload ``principal``, ``purpose``, ``algorithm``,
``public_key``) binds a key to its principal, ``key.revoked`` withdraws it. A key counts only
when the ledger announces it and has not revoked it, so a key file alone can sign nothing that
counts, and a key cannot be moved to another principal.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from immutrail.artifacts.attestations import BUILDER_KEY_FILE
from immutrail.artifacts.statements import (
    EVENT_KEY_CREATED,
    EVENT_KEY_REVOKED,
    LedgerKey,
    ledger_keys,
)
from immutrail.crypto.errors import CryptoError
from immutrail.crypto.keys import (
    MAX_KEY_FILE_BYTES,
    PrivateKey,
    PublicKey,
    generate_ecdsa_p256,
    generate_ed25519,
    key_id,
    load_private_key,
    public_key_pem,
    save_private_key,
)
from immutrail.files import read_capped
from immutrail.ledger.event import Event, parse_entry
from immutrail.ledger.ledger import Ledger

from .errors import KeyInputError, RevokedKeyError, UnknownKeyError
from .names import PURPOSE_BUILDER, check_principal, check_purpose
from .passphrase import PassphraseSource

__all__ = [
    "ALGORITHMS",
    "KEYS_DIR",
    "Generated",
    "KeyInfo",
    "SigningKey",
    "algorithm_of",
    "check_current",
    "generate_key",
    "get_key",
    "key_path",
    "list_keys",
    "load_signing_key",
    "revoke_key",
]

KEYS_DIR = "keys"
ALGORITHMS: dict[str, Callable[[], PrivateKey]] = {
    "ed25519": generate_ed25519,
    "ecdsa-p256": generate_ecdsa_p256,
}
MIN_KEYID_PREFIX = 8
MAX_REASON = 1000

_HEX_RE = re.compile(r"[0-9a-f]+")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def algorithm_of(public: PublicKey) -> str:
    """The algorithm as the key itself says, never as a payload claims."""
    return "ed25519" if isinstance(public, Ed25519PublicKey) else "ecdsa-p256"


def key_path(home: Path, principal: str, keyid: str) -> Path:
    return home / KEYS_DIR / check_principal(principal) / f"{keyid}.key"


@dataclass(frozen=True)
class KeyInfo:
    """A key as the ledger announced it, and whether its private half is here."""

    keyid: str
    principal: str
    algorithm: str
    purpose: str
    public_key_pem: str
    created_index: int
    created_at: str
    created_by: str
    revoked_index: int | None
    revoked_at: str | None
    revoked_reason: str | None
    local_path: Path | None

    @property
    def revoked(self) -> bool:
        return self.revoked_index is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "keyid": self.keyid,
            "principal": self.principal,
            "algorithm": self.algorithm,
            "purpose": self.purpose,
            "public_key": self.public_key_pem,
            "created": {
                "index": self.created_index,
                "time": self.created_at,
                "by": self.created_by,
            },
            "revoked": None
            if self.revoked_index is None
            else {
                "index": self.revoked_index,
                "time": self.revoked_at,
                "reason": self.revoked_reason,
            },
            "private_key_here": self.local_path is not None,
        }


@dataclass(frozen=True)
class Generated:
    info: KeyInfo
    path: Path
    encrypted: bool
    ledger_index: int


@dataclass(frozen=True)
class SigningKey:
    """A private key loaded for signing, with what the ledger says about it."""

    private: PrivateKey
    key: LedgerKey
    path: Path

    @property
    def keyid(self) -> str:
        return self.key.keyid

    @property
    def principal(self) -> str:
        return self.key.principal


def _info(home: Path, ledger: Ledger, key: LedgerKey) -> KeyInfo:
    created = parse_entry(ledger.entry(key.created_index).data)
    revoked_at = reason = None
    if key.revoked_index is not None:
        revocation = parse_entry(ledger.entry(key.revoked_index).data)
        revoked_at, reason = revocation.time, str(revocation.payload.get("reason", ""))
    return KeyInfo(
        keyid=key.keyid,
        principal=key.principal,
        algorithm=algorithm_of(key.public),
        purpose=key.purpose,
        public_key_pem=public_key_pem(key.public),
        created_index=key.created_index,
        created_at=created.time,
        created_by=created.actor,
        revoked_index=key.revoked_index,
        revoked_at=revoked_at,
        revoked_reason=reason,
        local_path=_local_path(home, key),
    )


def _local_path(home: Path, key: LedgerKey) -> Path | None:
    """Where the private half is kept here, if it is: the key store, or the builder key file."""
    with contextlib.suppress(KeyInputError):
        path = key_path(home, key.principal, key.keyid)
        if path.is_file():
            return path
    if key.purpose == PURPOSE_BUILDER:
        builder = home / BUILDER_KEY_FILE
        with contextlib.suppress(CryptoError):
            if builder.is_file() and key_id(load_private_key(builder).public_key()) == key.keyid:
                return builder
    return None


def list_keys(home: Path, ledger: Ledger) -> list[KeyInfo]:
    """Every key the ledger announced, in the order it announced them."""
    keys = sorted(ledger_keys(ledger).values(), key=lambda k: k.created_index)
    return [_info(home, ledger, key) for key in keys]


def keyid_prefix(ref: str) -> str:
    """The lower-case hex a key reference (``<id>``, ``key:<id>``, or a prefix of at least 8 hex
    digits) stands for; KeyInputError for anything else, so that '' never matches every key."""
    wanted = ref.strip().lower().removeprefix("key:")
    if len(wanted) < MIN_KEYID_PREFIX or not _HEX_RE.fullmatch(wanted):
        raise KeyInputError(
            f"{ref!r} is not a key id",
            hint=f"Give the key id (64 hex digits) or at least its first {MIN_KEYID_PREFIX}; "
            "`immutrail keys list` shows them.",
        )
    return wanted


def _resolve(keys: dict[str, LedgerKey], ref: str) -> LedgerKey:
    """A key by its id, ``key:<id>``, or a unique prefix of at least 8 hex digits."""
    wanted = keyid_prefix(ref)
    found = [key for keyid, key in keys.items() if keyid.startswith(wanted)]
    if not found:
        raise UnknownKeyError(
            f"the ledger announces no key {ref}",
            hint="`immutrail keys list` shows the announced keys.",
        )
    if len(found) > 1:
        raise KeyInputError(f"{ref} names {len(found)} keys; give more of the key id")
    return found[0]


def get_key(home: Path, ledger: Ledger, ref: str) -> KeyInfo:
    return _info(home, ledger, _resolve(ledger_keys(ledger), ref))


def generate_key(
    home: Path,
    ledger: Ledger,
    principal: str,
    *,
    actor: str,
    algorithm: str = "ed25519",
    purpose: str = "signing",
    passphrase: bytes | None,
    auth: Mapping[str, str] | None = None,
) -> Generated:
    """Make a key for ``principal``, keep it encrypted here and announce it in the ledger.

    ``auth``: how the announcing actor authenticated (``payload.auth``, as access events record
    it), once access control is set up: the access replay counts the key only then.
    ``passphrase`` None stores the key unencrypted (the caller asked for that explicitly). The
    key file is written first and removed again if the announcement cannot be appended, so a
    failure leaves neither an orphan key nor an announced key without its private half.
    """
    check_principal(principal)
    check_purpose(purpose)
    if purpose == PURPOSE_BUILDER:
        raise KeyInputError(
            "the builder purpose is reserved for the home's build key",
            hint="Use signing, approval or another purpose of your own.",
        )
    make = ALGORITHMS.get(algorithm)
    if make is None:
        raise KeyInputError(
            f"unknown algorithm {algorithm!r}; use one of {', '.join(sorted(ALGORITHMS))}"
        )
    if passphrase is not None and not passphrase:
        raise KeyInputError("an empty passphrase was given")
    private = make()
    public = private.public_key()
    keyid = key_id(public)
    event = Event.create(
        EVENT_KEY_CREATED,
        actor,
        f"key:{keyid}",
        {
            "principal": principal,
            "purpose": purpose,
            "algorithm": algorithm,
            "public_key": public_key_pem(public),
            **({"auth": dict(auth)} if auth is not None else {}),
        },
    )
    event.entry_bytes()  # a malformed event is refused before anything is written
    path = key_path(home, principal, keyid)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    save_private_key(private, path, passphrase)
    try:
        index = ledger.append(event).index
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return Generated(
        get_key(home, ledger, keyid), path, encrypted=passphrase is not None, ledger_index=index
    )


def check_reason(reason: str) -> str:
    text = reason.strip()
    if not text:
        raise KeyInputError("give the reason for the revocation with --reason")
    if len(text) > MAX_REASON or _CONTROL_RE.search(text):
        raise KeyInputError(
            f"the reason must be at most {MAX_REASON} characters, without control characters"
        )
    return text


def revoke_key(
    home: Path, ledger: Ledger, ref: str, *, reason: str, actor: str
) -> tuple[KeyInfo, int]:
    """Append ``key.revoked``: from then on nothing the key signed counts, earlier or later."""
    text = check_reason(reason)
    key = _resolve(ledger_keys(ledger), ref)
    if key.revoked:
        raise RevokedKeyError(
            f"key {key.keyid} ({key.principal}) was already revoked at ledger entry "
            f"{key.revoked_index}"
        )
    event = Event.create(
        EVENT_KEY_REVOKED,
        actor,
        f"key:{key.keyid}",
        {"principal": key.principal, "reason": text},
    )
    index = ledger.append(event).index
    return get_key(home, ledger, key.keyid), index


def load_key_file(path: Path, passphrase: PassphraseSource) -> PrivateKey:
    """A private key file; the passphrase is asked for only when the PEM says it is encrypted."""
    try:
        head = read_capped(path, MAX_KEY_FILE_BYTES)[:4096]
    except OSError as exc:
        raise KeyInputError(f"cannot read the key file {path}: {exc.strerror}") from exc
    secret = passphrase.get(f"the key {path}") if b"ENCRYPTED" in head else None
    return load_private_key(path, secret)


def load_signing_key(
    home: Path,
    ledger: Ledger,
    *,
    passphrase: PassphraseSource,
    keyid: str | None = None,
    principal: str | None = None,
    key_file: Path | None = None,
) -> SigningKey:
    """The key to sign with: by id, by its principal's only key here, or from a file.

    Whatever the way, the key must be announced in the ledger and not revoked, and it must be the
    key the ledger names (a swapped key file is refused), so an unknown key signs nothing.
    """
    if principal is not None:
        check_principal(principal)
    keys = ledger_keys(ledger)
    if key_file is not None:
        if keyid is not None:
            raise KeyInputError("give either --key or --key-file, not both")
        private = load_key_file(key_file, passphrase)
        found = keys.get(key_id(private.public_key()))
        if found is None:
            raise UnknownKeyError(
                f"the key in {key_file} ({key_id(private.public_key())}) is not announced in "
                "the ledger, or by no one entitled to: it cannot sign anything that counts",
                hint="Create keys with `immutrail keys generate`, which announces them; "
                "`immutrail principal list` shows announcements that did not count.",
            )
        chosen, path = found, key_file
    else:
        chosen = _resolve(keys, keyid) if keyid is not None else _only_key(home, keys, principal)
        path = key_path(home, chosen.principal, chosen.keyid)
        if not path.is_file():
            raise UnknownKeyError(
                f"the private half of key {chosen.keyid} ({chosen.principal}) is not in "
                f"{path.parent}",
                hint="Use --key-file if it is kept elsewhere.",
            )
        private = None
    _check_usable(chosen, principal)
    if private is None:
        private = load_key_file(path, passphrase)
    if key_id(private.public_key()) != chosen.keyid:
        raise KeyInputError(
            f"{path} holds key {key_id(private.public_key())}, not {chosen.keyid}: the key "
            "file was replaced"
        )
    return SigningKey(private, chosen, path)


def check_current(ledger: Ledger, key: SigningKey) -> None:
    """Refuse a key loaded earlier that the ledger has revoked (or never announced) since."""
    current = ledger_keys(ledger).get(key.keyid)
    if current is None:
        raise UnknownKeyError(f"the ledger announces no key {key.keyid}")
    _check_usable(current, key.principal)


def _check_usable(key: LedgerKey, principal: str | None) -> None:
    if key.revoked:
        raise RevokedKeyError(
            f"key {key.keyid} ({key.principal}) was revoked at ledger entry {key.revoked_index}",
            hint="Generate a new key with `immutrail keys generate`.",
        )
    if principal is not None and key.principal != principal:
        raise KeyInputError(f"key {key.keyid} belongs to {key.principal}, not to {principal}")


def _only_key(home: Path, keys: dict[str, LedgerKey], principal: str | None) -> LedgerKey:
    if principal is None:
        raise KeyInputError("say which key signs: --key KEYID, --principal NAME or --key-file PATH")
    usable = [
        key
        for key in keys.values()
        if key.principal == principal
        and not key.revoked
        and key_path(home, principal, key.keyid).is_file()
    ]
    if not usable:
        raise UnknownKeyError(
            f"{principal} has no usable key here (announced, not revoked, private half in "
            f"{home / KEYS_DIR / principal})",
            hint=f"Create one with `immutrail keys generate --principal {principal}`.",
        )
    if len(usable) > 1:
        ids = ", ".join(sorted(key.keyid[:16] for key in usable))
        raise KeyInputError(f"{principal} has {len(usable)} usable keys ({ids}); choose with --key")
    return usable[0]
