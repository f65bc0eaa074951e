"""C2SP signed notes, checked against Go's known answers and Go's Open/Sign semantics."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from immutrail.crypto.errors import CryptoError, NoteError, SignatureError
from immutrail.crypto.keys import generate_ecdsa_p256, generate_ed25519
from immutrail.crypto.note import (
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    ECDSANoteVerifier,
    Ed25519NoteVerifier,
    Note,
    NoteSigner,
    SignatureRef,
    is_valid_name,
    open_note,
    sign_note,
)

REKOR_KEY_NAME = "rekor.sigstore.dev"
# From the golang.org/x/mod/sumdb/note package documentation.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_SIG_LINE = (
    "\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdng"
    "otpRZb6KE6RyyBwJnAM=\n"
)
GO_ENOCH_LINE = (
    "\u2014 EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWL"
    "ox33WWd1RvMc+QQ=\n"
)
PETER = SignatureRef("PeterNeumann", 0xC74F20A3)


def go_signer() -> NoteSigner:
    """The doc's signer key ``PRIVATE+KEY+<name>+<hash>+base64(0x01 || seed)``."""
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    return NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))


def signer(name: str = "example.com/log") -> NoteSigner:
    return NoteSigner(name, generate_ed25519())


# --- known answers ----------------------------------------------------------------------------


def test_go_known_answer_verifies(data_dir: Path) -> None:
    vkey = (data_dir / "peterneumann.vkey").read_text().strip()
    assert vkey == GO_VKEY
    message = (data_dir / "peterneumann.note").read_bytes()
    assert message == (GO_TEXT + "\n" + GO_SIG_LINE).encode()
    note = open_note(message, [Ed25519NoteVerifier.from_vkey(vkey)])
    assert note == Note(GO_TEXT, (PETER,), ())
    assert str(note.verified[0]) == "PeterNeumann+c74f20a3"


def test_our_signer_reproduces_go_bytes_from_the_same_key(data_dir: Path) -> None:
    """Ed25519 is deterministic: the doc's signer key must give the doc's note, byte for byte."""
    me = go_signer()
    assert me.vkey == GO_VKEY
    assert me.key_hash == 0xC74F20A3
    assert sign_note(GO_TEXT, [me]).encode() == (data_dir / "peterneumann.note").read_bytes()


def test_go_doubly_signed_example_reports_the_unknown_signer() -> None:
    message = GO_TEXT + "\n" + GO_SIG_LINE + GO_ENOCH_LINE
    note = open_note(message, [Ed25519NoteVerifier.from_vkey(GO_VKEY)])
    assert note.verified == (PETER,)
    assert note.unverified == (SignatureRef("EnochRoot", 0xAF0CFE78),)


def test_key_hash_is_sha256_of_name_newline_alg_and_key() -> None:
    me = signer("example.com/a")
    raw = me.verifier().public_key.public_bytes_raw()
    digest = hashlib.sha256(b"example.com/a\n\x01" + raw).digest()
    assert me.key_hash == int.from_bytes(digest[:4], "big")
    key64 = base64.b64encode(b"\x01" + raw).decode()
    assert me.vkey == f"example.com/a+{digest[:4].hex()}+{key64}"
    assert Ed25519NoteVerifier.from_vkey(me.vkey).key_hash == me.key_hash


# --- round trips and tampering ------------------------------------------------------------------


def test_sign_and_open_round_trip_with_several_signers() -> None:
    a, b = signer("a.example/log"), signer("b.example/witness")
    message = sign_note("origin\n42\n\nblank lines are allowed in the text\n", [a, b])
    note = open_note(message, [b.verifier(), a.verifier()])
    assert note.text == "origin\n42\n\nblank lines are allowed in the text\n"
    assert note.verified == (
        SignatureRef(a.name, a.key_hash),
        SignatureRef(b.name, b.key_hash),
    )
    only_b = open_note(message, [b.verifier()])
    assert only_b.verified == (SignatureRef(b.name, b.key_hash),)
    assert only_b.unverified == (SignatureRef(a.name, a.key_hash),)


def test_every_changed_text_byte_is_refused() -> None:
    me = signer()
    message = sign_note("example.com/log\n7\nAAAA\n", [me]).encode()
    split = message.rindex(b"\n\n") + 1
    for i in range(split):
        for bit in (0x01, 0x20):
            tampered = bytearray(message)
            tampered[i] ^= bit
            with pytest.raises(CryptoError):
                open_note(bytes(tampered), [me.verifier()])


def test_every_changed_signature_character_is_refused() -> None:
    me = signer()
    message = sign_note("hello\n", [me])
    head, _, b64 = message.rstrip("\n").rpartition(" ")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for i, char in enumerate(b64.rstrip("=")):
        other = alphabet[(alphabet.index(char) + 1) % 64]
        tampered = f"{head} {b64[:i]}{other}{b64[i + 1 :]}\n"
        with pytest.raises(CryptoError):
            open_note(tampered, [me.verifier()])


def test_a_bad_signature_by_a_known_key_is_a_signature_error() -> None:
    me = signer()
    other = NoteSigner(me.name, generate_ed25519())
    forged = sign_note("hello\n", [me]).replace("hello", "HELLO")
    with pytest.raises(SignatureError, match=f"invalid signature for key {me.name}"):
        open_note(forged, [me.verifier()])
    # Same name, different key (so a different hash): ignored, so nothing trusted signed it.
    with pytest.raises(SignatureError, match="no signature from a trusted key") as info:
        open_note(sign_note("hello\n", [other]), [me.verifier()])
    assert f"{me.name}+{me.key_hash:08x}" in info.value.diagnostics()


def test_wrong_name_or_hash_means_unknown_signer() -> None:
    me = signer("example.com/log")
    message = sign_note("hello\n", [me])
    renamed = message.replace("\u2014 example.com/log ", "\u2014 example.com/other ")
    with pytest.raises(SignatureError, match="no signature from a trusted key"):
        open_note(renamed, [me.verifier()])
    raw = base64.b64decode(message.rstrip("\n").rpartition(" ")[2])
    rehashed = (((me.key_hash + 1) % 2**32).to_bytes(4, "big")) + raw[4:]
    line = f"\u2014 {me.name} {base64.b64encode(rehashed).decode()}\n"
    with pytest.raises(SignatureError, match="no signature from a trusted key"):
        open_note("hello\n\n" + line, [me.verifier()])


def test_no_verifiers_at_all_is_a_signature_error() -> None:
    with pytest.raises(SignatureError, match="no signature from a trusted key") as info:
        open_note(sign_note("hello\n", [signer()]), [])
    assert "Trusted keys: none" in info.value.diagnostics()


def test_repeated_signatures_follow_go() -> None:
    """Only the first signature of a known key is checked; identical unknown lines collapse."""
    me, stranger = signer("me.example"), signer("stranger.example")
    good = sign_note("hello\n", [me])
    bad_line = sign_note("other\n", [me]).split("\n\n")[1]
    stranger_line = sign_note("hello\n", [stranger]).split("\n\n")[1]
    note = open_note(good + bad_line + stranger_line + stranger_line, [me.verifier()])
    assert note.verified == (SignatureRef(me.name, me.key_hash),)
    assert note.unverified == (SignatureRef(stranger.name, stranger.key_hash),)
    with pytest.raises(SignatureError, match="invalid signature"):
        open_note("hello\n\n" + bad_line + good.split("\n\n")[1], [me.verifier()])


def test_ambiguous_verifiers_are_refused() -> None:
    me = signer()
    with pytest.raises(NoteError, match="ambiguous key"):
        open_note(sign_note("hi\n", [me]), [me.verifier(), me.verifier()])


def test_signature_count_limit_is_gos() -> None:
    me = signer()
    line = sign_note("hi\n", [me]).split("\n\n")[1]
    stranger = signer("stranger.example")
    other = sign_note("hi\n", [stranger]).split("\n\n")[1]
    at_limit = "hi\n\n" + line + other * (MAX_SIGNATURES - 1)
    assert open_note(at_limit, [me.verifier()]).verified
    with pytest.raises(NoteError, match=f"more than {MAX_SIGNATURES} signatures"):
        open_note(at_limit + other, [me.verifier()])
    with pytest.raises(NoteError, match=f"at most {MAX_SIGNATURES}"):
        sign_note("hi\n", [me] * (MAX_SIGNATURES + 1))


def test_size_limit() -> None:
    me = signer()
    big = "x" * (MAX_NOTE_BYTES - 200) + "\n"
    assert open_note(sign_note(big, [me]), [me.verifier()]).text == big
    with pytest.raises(NoteError, match="exceed"):
        sign_note("x" * MAX_NOTE_BYTES + "\n", [me])
    with pytest.raises(NoteError, match="larger than"):
        open_note(b"x" * MAX_NOTE_BYTES + b"\n\n" + sign_note("x\n", [me]).encode(), [])


# --- malformed notes ----------------------------------------------------------------------------

SIG = GO_SIG_LINE
MALFORMED = {
    "no blank line": GO_TEXT + SIG,
    "no final newline": GO_TEXT + "\n" + SIG.rstrip("\n"),
    "empty signature block": GO_TEXT + "\n",
    "trailing blank line": GO_TEXT + "\n" + SIG + "\n",
    "carriage return": GO_TEXT.replace("\n", "\r\n", 1) + "\n" + SIG,
    "tab": "a\tb\n\n" + SIG,
    "hyphen for em dash": GO_TEXT + "\n" + SIG.replace("\u2014", "-"),
    "no space after dash": GO_TEXT + "\n" + SIG.replace("\u2014 ", "\u2014"),
    "no signature": GO_TEXT + "\n\u2014 PeterNeumann\n",
    "empty signature": GO_TEXT + "\n\u2014 PeterNeumann \n",
    "signature under 5 bytes": GO_TEXT + "\n\u2014 PeterNeumann x08gow==\n",
    "not base64": GO_TEXT + "\n\u2014 PeterNeumann x08go/ZJ!!\n",
    "space inside base64": GO_TEXT + "\n" + SIG.replace("x08go/", "x08go /"),
    "plus in name": GO_TEXT + "\n" + SIG.replace("PeterNeumann", "Peter+Neumann"),
    "empty name": GO_TEXT + "\n" + SIG.replace("PeterNeumann", ""),
    "non-canonical base64": GO_TEXT + "\n" + SIG.replace("AM=", "AN="),
}


@pytest.mark.parametrize("message", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_notes_are_note_errors(message: str) -> None:
    with pytest.raises(NoteError, match="malformed note"):
        open_note(message, [Ed25519NoteVerifier.from_vkey(GO_VKEY)])


def test_the_non_canonical_base64_case_decodes_to_the_same_bytes() -> None:
    """The re-spelled signature is a real twin, so only the canonical check refuses it."""
    good = SIG.rstrip("\n").rpartition(" ")[2]
    twin = good.replace("AM=", "AN=")
    assert base64.b64decode(twin) == base64.b64decode(good)


@pytest.mark.parametrize(
    "message", [b"hello\xff\n\n" + SIG.encode(), b"a\xed\xa0\x80\n\n" + SIG.encode()]
)
def test_invalid_utf8_is_malformed(message: bytes) -> None:
    with pytest.raises(NoteError, match="not valid UTF-8"):
        open_note(message, [Ed25519NoteVerifier.from_vkey(GO_VKEY)])
    with pytest.raises(NoteError, match="not valid UTF-8"):
        open_note("a\ud800\n\n" + SIG, [])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no newline", "must end with a newline"),
        ("", "must end with a newline"),
        ("a\r\n", "control character '\\\\r'"),
        ("a\x00\n", "control character"),
        ("a\x1f\n", "control character"),
        ("a\ud800\n", "lone surrogate"),
    ],
)
def test_sign_note_refuses_text_go_would_not_open(text: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        sign_note(text, [signer()])


def test_sign_note_needs_a_signer() -> None:
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note("hi\n", [])


def test_sign_note_accepts_del_and_non_ascii() -> None:
    me = signer()
    text = "caf\u00e9 \u2014 \U0001f600 \x7f\n"
    assert open_note(sign_note(text, [me]).encode(), [me.verifier()]).text == text


# --- names and verifier keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("example.com/log", True),
        ("rekor.sigstore.dev", True),
        ("\u00e9t\u00e9", True),
        ("a\u200bb", True),  # zero-width space is not White_Space, so Go allows it
        ("a\x1cb", True),  # Python's isspace() says True; Go's unicode.IsSpace says False
        ("", False),
        ("a+b", False),
        ("a b", False),
        ("a\tb", False),
        ("a\u00a0b", False),
        ("a\u0085b", False),
        ("a\u2003b", False),
        ("a\u3000b", False),
        ("a\ud800", False),
    ],
)
def test_key_name_rules_match_go(name: str, valid: bool) -> None:
    assert is_valid_name(name) is valid


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\u2028b"])
def test_signers_and_verifiers_refuse_bad_names(name: str) -> None:
    with pytest.raises(NoteError, match="invalid key name"):
        NoteSigner(name, generate_ed25519())
    with pytest.raises(NoteError, match="invalid key name"):
        Ed25519NoteVerifier(name, generate_ed25519().public_key())


def test_vkey_hash_digits_may_be_upper_case() -> None:
    upper = GO_VKEY.replace("c74f20a3", "C74F20A3")
    assert Ed25519NoteVerifier.from_vkey(upper).key_hash == 0xC74F20A3


def vkey_for(name: str, key: bytes) -> str:
    """A vkey with a correct hash for arbitrary key data, to reach the later checks."""
    digest = hashlib.sha256(name.encode() + b"\n" + key).digest()
    return f"{name}+{digest[:4].hex()}+{base64.b64encode(key).decode()}"


PUB32 = bytes(range(32))
BAD_VKEYS = {
    "empty": ("", "malformed verifier key"),
    "name only": ("PeterNeumann", "malformed verifier key"),
    "no key": ("PeterNeumann+c74f20a3", "malformed verifier key"),
    "empty key": ("PeterNeumann+c74f20a3+", "malformed verifier key"),
    "short hash": (
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "malformed",
    ),
    "0x hash": ("PeterNeumann+0x4f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "malformed"),
    "signed hash": (
        "PeterNeumann+-74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "malformed",
    ),
    "bad base64": (
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T!",
        "malformed",
    ),
    "bad name": (GO_VKEY.replace("PeterNeumann", "Peter Neumann"), "malformed verifier key"),
    "wrong hash": (GO_VKEY.replace("c74f20a3", "c74f20a4"), "key hash does not match"),
    "changed key": (GO_VKEY.replace("ARpc", "ARpd"), "key hash does not match"),
    "algorithm 2": (vkey_for("n", b"\x02" + PUB32), "unknown signature algorithm 0x02"),
    "31-byte key": (vkey_for("n", b"\x01" + PUB32[:31]), "32 bytes, not 31"),
    "33-byte key": (vkey_for("n", b"\x01" + PUB32 + b"\x00"), "32 bytes, not 33"),
}


@pytest.mark.parametrize(("vkey", "message"), BAD_VKEYS.values(), ids=BAD_VKEYS.keys())
def test_malformed_vkeys_are_note_errors(vkey: str, message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Ed25519NoteVerifier.from_vkey(vkey)


def test_vkey_round_trips_through_the_verifier() -> None:
    me = signer("example.com/log")
    again = Ed25519NoteVerifier.from_vkey(me.vkey)
    assert (again.name, again.key_hash, again.vkey) == (me.name, me.key_hash, me.vkey)
    assert "example.com/log" in repr(me) and f"{me.key_hash:08x}" in repr(again)


# --- ECDSA (Rekor) ----------------------------------------------------------------------------


def test_rekor_checkpoint_verifies_with_the_trusted_root_key(
    data_dir: Path, rekor_public_key: ec.EllipticCurvePublicKey, rekor_log: dict[str, object]
) -> None:
    verifier = ECDSANoteVerifier(REKOR_KEY_NAME, rekor_public_key)
    log_id = rekor_log["logId"]
    assert isinstance(log_id, dict)
    # Rekor's log id is SHA-256 of the SPKI; the note key hash is its first four bytes.
    assert verifier.key_hash.to_bytes(4, "big") == base64.b64decode(log_id["keyId"])[:4]
    message = (data_dir / "rekor.sigstore.dev-66718601.checkpoint").read_bytes()
    note = open_note(message, [verifier])
    assert note.verified == (SignatureRef(REKOR_KEY_NAME, 0xC0D23D6A),)
    assert note.text.startswith("rekor.sigstore.dev - 1193050959916656506\n66718601\n")
    with pytest.raises(SignatureError, match="invalid signature"):
        open_note(message.replace(b"66718601", b"66718602"), [verifier])


def test_ecdsa_notes_round_trip_and_reject_raw_signatures() -> None:
    key = generate_ecdsa_p256()
    verifier = ECDSANoteVerifier("ecdsa.example", key.public_key())
    text = b"ecdsa.example\n1\n" + base64.b64encode(bytes(32)) + b"\n"
    der = key.sign(text, ec.ECDSA(hashes.SHA256()))
    sig64 = base64.b64encode(verifier.key_hash.to_bytes(4, "big") + der).decode()
    line = f"\u2014 ecdsa.example {sig64}\n"
    assert open_note(text + b"\n" + line.encode(), [verifier]).verified
    assert not verifier.verify(text, b"\x00" * 64)
    assert not verifier.verify(text, b"garbage")


def test_ecdsa_verifier_needs_p256() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(NoteError, match="P-256"):
        ECDSANoteVerifier("x.example", p384)
    with pytest.raises(NoteError, match="Ed25519"):
        NoteSigner("x.example", generate_ecdsa_p256())  # type: ignore[arg-type]
