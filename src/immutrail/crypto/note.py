"""C2SP signed notes (c2sp.org/signed-note), byte-compatible with golang.org/x/mod/sumdb/note.

A signed note is a text ending in a newline, a blank line, and signature lines
``— <key name> base64(key hash[4] || signature)``. Our checkpoints are signed notes, so a third
party can check them with Go's ``note.Open`` (or any other implementation) and we can check
theirs. Where Go makes a choice the spec leaves open we make the same one:

* key names are non-empty, valid UTF-8, and hold neither ``+`` nor a Unicode space (Go's
  ``unicode.IsSpace``, which is narrower than Python's ``str.isspace``);
* a note may carry at most 100 signature lines; repeats of a known key's signature after the
  first are ignored, and repeats of an identical unknown signature line are dropped;
* a signature by a known key (same name *and* key hash) that does not verify rejects the note
  (SignatureError), signatures by unknown keys are reported as unverified, and a note with no
  verified signature is rejected (SignatureError);
* notes larger than ``MAX_NOTE_BYTES`` are refused outright (a local guard; Go has none).

One deliberate difference: signature base64 must be canonical (zero padding bits), which Go's
decoder does not insist on. Every encoder writes canonical base64, so no real note is refused,
and a stored note then has exactly one spelling: re-spelling a signature is a detected change.

Key hashes: Ed25519 (type 0x01) is SHA-256(name || "\\n" || 0x01 || key)[:4], as in Go; ECDSA
(Rekor's checkpoints, C2SP type 0x02) is SHA-256(DER SubjectPublicKeyInfo)[:4] without the name,
and the signature is ASN.1 DER ECDSA over SHA-256 of the note text, as sigstore/rekor signs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from .errors import NoteError, SignatureError
from .keys import public_key_raw, spki_der

__all__ = [
    "ALG_ED25519",
    "MAX_NOTE_BYTES",
    "MAX_SIGNATURES",
    "ECDSANoteVerifier",
    "Ed25519NoteVerifier",
    "Note",
    "NoteSigner",
    "NoteVerifier",
    "SignatureRef",
    "is_valid_name",
    "open_note",
    "sign_note",
]

ALG_ED25519 = 0x01
"""The signed-note signature type byte of Ed25519, the first byte of a verifier key's key data."""

MAX_SIGNATURES = 100
"""Most signature lines a note may carry (Go's ``note.Open`` limit; C2SP requires >= 16)."""

MAX_NOTE_BYTES = 1 << 20
"""Largest signed note accepted or produced: 1 MiB, far above any checkpoint."""

_SIG_PREFIX = "\N{EM DASH} "

# Go's unicode.IsSpace: the Unicode White_Space property (Python's isspace() adds U+001C-U+001F).
_GO_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_BAD_CONTROL = re.compile("[\x00-\x09\x0b-\x1f]")
_HASH_HEX = re.compile("[0-9A-Fa-f]{8}")


def is_valid_name(name: str) -> bool:
    """Whether ``name`` may be a note key name: non-empty UTF-8, no ``+``, no Unicode space."""
    if not name or "+" in name or not _GO_SPACES.isdisjoint(name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not is_valid_name(name):
        raise NoteError(
            f"invalid key name {name!r}",
            hint="A key name must be non-empty and hold neither '+' nor spaces, "
            "e.g. example.com/log.",
        )


def _ed25519_key_hash(name: str, public_key: Ed25519PublicKey) -> int:
    data = name.encode("utf-8") + b"\n" + bytes([ALG_ED25519]) + public_key_raw(public_key)
    return int.from_bytes(hashlib.sha256(data).digest()[:4], "big")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class NoteVerifier(ABC):
    """One trusted key: its name, its 32-bit key hash, and a check of its signatures."""

    @property
    @abstractmethod
    def name(self) -> str:
        """The key name that signature lines carry."""

    @property
    @abstractmethod
    def key_hash(self) -> int:
        """The 32-bit key hash (key ID) in the first four bytes of each signature."""

    @abstractmethod
    def verify(self, msg: bytes, sig: bytes) -> bool:
        """Whether ``sig`` (without the key hash) is a valid signature of ``msg``; never raises."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, key_hash={self.key_hash:08x})"


class Ed25519NoteVerifier(NoteVerifier):
    """An Ed25519 note key, usually built from its ``name+hash+base64`` verifier key string."""

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        _check_name(name)
        self._name = name
        self._public_key = public_key
        self._key_hash = _ed25519_key_hash(name, public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> Ed25519NoteVerifier:
        """Parse a verifier key ``<name>+<8 hex digits>+<base64(0x01 || 32-byte key)>``.

        Validated as Go's ``note.NewVerifier`` does: the name, the hash digits, the base64, the
        algorithm byte, the key length, and that the hash is the hash of that name and key.
        """
        if not isinstance(vkey, str):
            raise NoteError("a verifier key must be a string")
        name, _, rest = vkey.partition("+")
        hash16, _, key64 = rest.partition("+")
        try:
            key = base64.b64decode(key64, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if not _HASH_HEX.fullmatch(hash16) or not key or not is_valid_name(name):
            raise NoteError(
                f"malformed verifier key {vkey!r}",
                hint="A verifier key looks like name+1234abcd+<base64 key>.",
            )
        digest = hashlib.sha256(name.encode("utf-8") + b"\n" + key).digest()
        if int(hash16, 16) != int.from_bytes(digest[:4], "big"):
            raise NoteError(f"verifier key {vkey!r}: the key hash does not match its name and key")
        if key[0] != ALG_ED25519:
            raise NoteError(f"verifier key {vkey!r}: unknown signature algorithm {key[0]:#04x}")
        if len(key) != 33:
            raise NoteError(
                f"verifier key {vkey!r}: an Ed25519 key is 32 bytes, not {len(key) - 1}"
            )
        return cls(name, Ed25519PublicKey.from_public_bytes(key[1:]))

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_hash(self) -> int:
        return self._key_hash

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public_key

    @property
    def vkey(self) -> str:
        """The verifier key string, as Go's ``note.NewEd25519VerifierKey`` writes it."""
        key = bytes([ALG_ED25519]) + public_key_raw(self._public_key)
        return f"{self._name}+{self._key_hash:08x}+{_b64(key)}"

    def verify(self, msg: bytes, sig: bytes) -> bool:
        try:
            self._public_key.verify(sig, msg)
        except (InvalidSignature, ValueError):
            return False
        return True


class ECDSANoteVerifier(NoteVerifier):
    """An ECDSA P-256 note key, as Rekor (and C2SP signature type 0x02) sign checkpoints.

    The key hash is the first four bytes of SHA-256 of the DER SubjectPublicKeyInfo; the
    signature is ASN.1 DER ECDSA over SHA-256 of the note text (raw r||s is not accepted here,
    matching Go's ``ecdsa.VerifyASN1``).
    """

    def __init__(self, name: str, public_key: ec.EllipticCurvePublicKey) -> None:
        _check_name(name)
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
            public_key.curve, ec.SECP256R1
        ):
            raise NoteError(f"ECDSA note key {name!r} must be an ECDSA key on P-256")
        self._name = name
        self._public_key = public_key
        self._key_hash = int.from_bytes(hashlib.sha256(spki_der(public_key)).digest()[:4], "big")

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_hash(self) -> int:
        return self._key_hash

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public_key

    def verify(self, msg: bytes, sig: bytes) -> bool:
        try:
            self._public_key.verify(sig, msg, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


class NoteSigner:
    """Signs notes with an Ed25519 key under a key name (for checkpoints: the log's origin)."""

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        _check_name(name)
        if not isinstance(key, Ed25519PrivateKey):
            raise NoteError("a note signer needs an Ed25519 private key")
        self._name = name
        self._key = key
        self._verifier = Ed25519NoteVerifier(name, key.public_key())

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_hash(self) -> int:
        return self._verifier.key_hash

    @property
    def vkey(self) -> str:
        """The verifier key string to give to whoever must check our notes."""
        return self._verifier.vkey

    def verifier(self) -> Ed25519NoteVerifier:
        """The verifier for this signer's notes."""
        return self._verifier

    def sign(self, text: bytes) -> bytes:
        """The bare Ed25519 signature of ``text`` (the note text, final newline included)."""
        return self._key.sign(text)

    def __repr__(self) -> str:
        return f"NoteSigner({self._name!r}, key_hash={self.key_hash:08x})"


class SignatureRef(NamedTuple):
    """Who signed: the key name and 32-bit key hash from a signature line."""

    name: str
    key_hash: int

    def __str__(self) -> str:
        return f"{self.name}+{self.key_hash:08x}"


@dataclass(frozen=True)
class Note:
    """An opened note: its text, and the signatures that did and did not verify."""

    text: str
    verified: tuple[SignatureRef, ...]
    unverified: tuple[SignatureRef, ...] = ()


def _check_text(text: str) -> bytes:
    if not isinstance(text, str):
        raise NoteError("note text must be a string")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NoteError("note text is not valid UTF-8 (it holds a lone surrogate)") from exc
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if match := _BAD_CONTROL.search(text):
        raise NoteError(
            f"note text holds the control character {match.group()!r} at {match.start()}; "
            "only newlines are allowed"
        )
    return data


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """Sign ``text`` with each signer, in order, and return the signed note."""
    data = _check_text(text)
    if not signers:
        raise NoteError("a note needs at least one signer")
    if len(signers) > MAX_SIGNATURES:
        raise NoteError(f"a note carries at most {MAX_SIGNATURES} signatures")
    lines = []
    for signer in signers:
        sig = signer.key_hash.to_bytes(4, "big") + signer.sign(data)
        lines.append(f"{_SIG_PREFIX}{signer.name} {_b64(sig)}\n")
    note = f"{text}\n{''.join(lines)}"
    if len(note.encode("utf-8")) > MAX_NOTE_BYTES:
        raise NoteError(f"the signed note would exceed {MAX_NOTE_BYTES} bytes")
    return note


def open_note(message: str | bytes, verifiers: Sequence[NoteVerifier]) -> Note:
    """Parse a signed note and check its signatures against the trusted ``verifiers``.

    NoteError when it is malformed; SignatureError when a trusted key's signature fails or when
    no trusted key signed it. See the module docstring for the exact rules (Go's).
    """
    if isinstance(message, str):
        try:
            msg = message.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise NoteError("malformed note: not valid UTF-8") from exc
    else:
        msg = bytes(message)
    if len(msg) > MAX_NOTE_BYTES:
        raise NoteError(f"malformed note: larger than {MAX_NOTE_BYTES} bytes")
    try:
        decoded = msg.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteError(f"malformed note: not valid UTF-8 at byte {exc.start}") from exc
    if match := _BAD_CONTROL.search(decoded):
        raise NoteError(f"malformed note: control character {match.group()!r}")
    split = msg.rfind(b"\n\n")
    if split < 0:
        raise NoteError("malformed note: no blank line before the signatures")
    text, sigs = msg[: split + 1], msg[split + 2 :]
    if not sigs or not sigs.endswith(b"\n"):
        raise NoteError("malformed note: the signature block is empty or lacks a final newline")

    known: dict[SignatureRef, list[NoteVerifier]] = {}
    for verifier in verifiers:
        known.setdefault(SignatureRef(verifier.name, verifier.key_hash), []).append(verifier)

    verified: list[SignatureRef] = []
    unverified: list[SignatureRef] = []
    seen: set[SignatureRef] = set()
    seen_unverified: set[str] = set()
    for count, line in enumerate(sigs[:-1].decode("utf-8").split("\n"), start=1):
        ref, sig = _parse_signature_line(line)
        if count > MAX_SIGNATURES:
            raise NoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")
        candidates = known.get(ref)
        if candidates is None:
            if line not in seen_unverified:
                seen_unverified.add(line)
                unverified.append(ref)
            continue
        if len(candidates) > 1:
            raise NoteError(f"ambiguous key {ref}: more than one trusted verifier has it")
        if ref in seen:
            continue
        seen.add(ref)
        if not candidates[0].verify(text, sig):
            raise SignatureError(
                f"invalid signature for key {ref}",
                hint="The note was altered after signing, or signed by another key of that name.",
            )
        verified.append(ref)

    if not verified:
        found = ", ".join(str(ref) for ref in unverified) or "none"
        trusted = ", ".join(str(ref) for ref in known) or "none"
        raise SignatureError(
            "note has no signature from a trusted key",
            hint=f"Signatures found: {found}. Trusted keys: {trusted}.",
        )
    return Note(text.decode("utf-8"), tuple(verified), tuple(unverified))


def _parse_signature_line(line: str) -> tuple[SignatureRef, bytes]:
    if not line.startswith(_SIG_PREFIX):
        raise NoteError(f"malformed note: signature line {line!r} does not start with '— '")
    name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
    try:
        sig = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        sig = b""
    if not b64 or len(sig) < 5 or not is_valid_name(name):
        raise NoteError(f"malformed note: bad signature line {line!r}")
    if _b64(sig) != b64:
        raise NoteError(f"malformed note: signature base64 {b64!r} is not in canonical form")
    return SignatureRef(name, int.from_bytes(sig[:4], "big")), sig[4:]
