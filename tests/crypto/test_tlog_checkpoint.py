"""C2SP tlog-checkpoint bodies: one spelling each, signed and opened as notes; the Rekor vector."""

from __future__ import annotations

import base64
from pathlib import Path

import hypothesis.strategies as st
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given

from immutrail.crypto.checkpoint import (
    MAX_TREE_SIZE,
    Checkpoint,
    open_checkpoint,
    sign_checkpoint,
)
from immutrail.crypto.errors import NoteError, SignatureError
from immutrail.crypto.keys import generate_ed25519
from immutrail.crypto.note import (
    ECDSANoteVerifier,
    Ed25519NoteVerifier,
    NoteSigner,
    open_note,
    sign_note,
)

ROOT = bytes(range(32))
ROOT64 = base64.b64encode(ROOT).decode()
REKOR_ORIGIN = "rekor.sigstore.dev - 1193050959916656506"
REKOR_ROOT64 = "b9PqWdvjFibQVr/AxhtI5QtxZRDsyawcQjhN/t/l2hs="


def test_body_is_origin_size_root_and_extensions() -> None:
    assert Checkpoint("example.com/log", 20852163, ROOT).body() == (
        f"example.com/log\n20852163\n{ROOT64}\n"
    )
    with_ext = Checkpoint("o", 0, ROOT, ("ext one", "ext two"))
    assert with_ext.body() == f"o\n0\n{ROOT64}\next one\next two\n"
    assert Checkpoint.parse(with_ext.body()) == with_ext


@given(
    origin=st.text(
        alphabet=st.characters(min_codepoint=0x20, exclude_categories=("Cs",)), min_size=1
    ),
    size=st.integers(0, MAX_TREE_SIZE),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(
        st.text(alphabet=st.characters(min_codepoint=0x20, exclude_categories=("Cs",)), min_size=1),
        max_size=3,
    ),
)
def test_parse_inverts_body(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    checkpoint = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(checkpoint.body()) == checkpoint
    assert Checkpoint.parse(checkpoint.body()).body() == checkpoint.body()


BAD_BODIES = {
    "no final newline": f"o\n1\n{ROOT64}",
    "two lines": "o\n1\n",
    "empty origin": f"\n1\n{ROOT64}\n",
    "leading zero": f"o\n01\n{ROOT64}\n",
    "plus sign": f"o\n+1\n{ROOT64}\n",
    "minus sign": f"o\n-1\n{ROOT64}\n",
    "space": f"o\n 1\n{ROOT64}\n",
    "underscore": f"o\n1_000\n{ROOT64}\n",
    "arabic-indic digit": f"o\n\u0661\n{ROOT64}\n",
    "empty size": f"o\n\n{ROOT64}\n",
    "too many digits": f"o\n{'9' * 21}\n{ROOT64}\n",
    "short root": f"o\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",
    "long root": f"o\n1\n{base64.b64encode(ROOT + b'x').decode()}\n",
    "unpadded root": f"o\n1\n{ROOT64.rstrip('=')}\n",
    "url-safe root": f"o\n1\n{base64.urlsafe_b64encode(bytes([255]) * 32).decode()}\n",
    "non-canonical root": f"o\n1\n{ROOT64[:-2]}9=\n",
    "empty extension": f"o\n1\n{ROOT64}\n\n",
    "empty middle extension": f"o\n1\n{ROOT64}\na\n\nb\n",
}


@pytest.mark.parametrize("text", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_malformed_bodies_are_note_errors(text: str) -> None:
    with pytest.raises(NoteError, match="checkpoint"):
        Checkpoint.parse(text)


def test_the_non_canonical_root_is_a_real_twin() -> None:
    assert base64.b64decode(f"{ROOT64[:-2]}9=") == ROOT


def test_size_bounds() -> None:
    assert Checkpoint.parse(f"o\n{MAX_TREE_SIZE}\n{ROOT64}\n").size == 2**64 - 1
    with pytest.raises(NoteError, match=r"0\.\.2\*\*64-1"):
        Checkpoint.parse(f"o\n{MAX_TREE_SIZE + 1}\n{ROOT64}\n")
    assert Checkpoint.parse(f"o\n0\n{ROOT64}\n").size == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("", 1, ROOT), "origin must be a non-empty string"),
        (("a\nb", 1, ROOT), "control character"),
        (("o", -1, ROOT), "not an integer"),
        (("o", True, ROOT), "not an integer"),
        (("o", 2**64, ROOT), "not an integer"),
        (("o", 1, ROOT[:31]), "32 bytes"),
        (("o", 1, bytearray(ROOT)), "32 bytes"),
        (("o", 1, ROOT, ("",)), "extension line"),
        (("o", 1, ROOT, ("a\nb",)), "extension line"),
        (("o", 1, ROOT, ["a"]), "tuple"),
    ],
)
def test_invalid_checkpoints_cannot_be_built(args: tuple[object, ...], message: str) -> None:
    with pytest.raises(NoteError, match=message):
        Checkpoint(*args)  # type: ignore[arg-type]


def test_sign_and_open_round_trip() -> None:
    signer = NoteSigner("example.com/log", generate_ed25519())
    checkpoint = Checkpoint("example.com/log", 12345, ROOT)
    note = sign_checkpoint(checkpoint, signer)
    assert note.startswith(checkpoint.body() + "\n\u2014 example.com/log ")
    verifier = Ed25519NoteVerifier.from_vkey(signer.vkey)
    assert open_checkpoint(note, verifier) == checkpoint
    assert open_checkpoint(note.encode(), verifier, origin="example.com/log") == checkpoint
    # Ed25519 is deterministic: one checkpoint, one note.
    assert sign_checkpoint(checkpoint, signer) == note


def test_open_checkpoint_refuses_another_log_or_key() -> None:
    signer = NoteSigner("example.com/log", generate_ed25519())
    note = sign_checkpoint(Checkpoint("example.com/log", 1, ROOT), signer)
    with pytest.raises(
        NoteError, match=r"for the log 'example\.com/log', not 'example\.com/other'"
    ):
        open_checkpoint(note, signer.verifier(), origin="example.com/other")
    stranger = NoteSigner("example.com/log", generate_ed25519())
    with pytest.raises(SignatureError, match="no signature from a trusted key"):
        open_checkpoint(note, stranger.verifier())
    with pytest.raises(SignatureError, match="invalid signature"):
        open_checkpoint(note.replace("\n1\n", "\n2\n"), signer.verifier())


def test_a_validly_signed_note_that_is_not_a_checkpoint_is_a_note_error() -> None:
    signer = NoteSigner("example.com/log", generate_ed25519())
    note = sign_note("example.com/log\n01\n" + ROOT64 + "\n", [signer])
    assert open_note(note, [signer.verifier()]).verified
    with pytest.raises(NoteError, match="leading zeros"):
        open_checkpoint(note, signer.verifier())


def test_rekor_checkpoint(data_dir: Path, rekor_public_key: ec.EllipticCurvePublicKey) -> None:
    note = (data_dir / "rekor.sigstore.dev-66718601.checkpoint").read_text(encoding="utf-8")
    verifier = ECDSANoteVerifier("rekor.sigstore.dev", rekor_public_key)
    checkpoint = open_checkpoint(note, verifier, origin=REKOR_ORIGIN)
    assert checkpoint == Checkpoint(REKOR_ORIGIN, 66718601, base64.b64decode(REKOR_ROOT64), ())
    assert note.startswith(checkpoint.body() + "\n")
    with pytest.raises(NoteError, match=r"not 'rekor\.sigstore\.dev'"):
        open_checkpoint(note, verifier, origin="rekor.sigstore.dev")
