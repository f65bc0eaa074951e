"""Keys, canonical JSON, C2SP signed notes and checkpoints, and DSSE signatures.

The building blocks every other part signs and verifies with. Standards only, so that an auditor
can check our output with other tools: RFC 8785 (JCS), c2sp.org/signed-note (as Go's
``golang.org/x/mod/sumdb/note``), c2sp.org/tlog-checkpoint and DSSE v1. This package imports
nothing else of immutrail.
"""

from __future__ import annotations

from .canonical import canonical_json, parse_canonical
from .checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from .dsse import pae, sign_detached, sign_envelope, verify_detached, verify_envelope
from .errors import (
    CanonicalizationError,
    CryptoError,
    EnvelopeError,
    KeyFileError,
    NoteError,
    SignatureError,
)
from .keys import (
    PrivateKey,
    PublicKey,
    generate_ecdsa_p256,
    generate_ed25519,
    key_id,
    load_private_key,
    load_public_key_pem,
    public_key_pem,
    public_key_raw,
    save_private_key,
)
from .note import (
    ECDSANoteVerifier,
    Ed25519NoteVerifier,
    Note,
    NoteSigner,
    NoteVerifier,
    SignatureRef,
    open_note,
    sign_note,
)

__all__ = [
    "CanonicalizationError",
    "Checkpoint",
    "CryptoError",
    "ECDSANoteVerifier",
    "Ed25519NoteVerifier",
    "EnvelopeError",
    "KeyFileError",
    "Note",
    "NoteError",
    "NoteSigner",
    "NoteVerifier",
    "PrivateKey",
    "PublicKey",
    "SignatureError",
    "SignatureRef",
    "canonical_json",
    "generate_ecdsa_p256",
    "generate_ed25519",
    "key_id",
    "load_private_key",
    "load_public_key_pem",
    "open_checkpoint",
    "open_note",
    "pae",
    "parse_canonical",
    "public_key_pem",
    "public_key_raw",
    "save_private_key",
    "sign_checkpoint",
    "sign_detached",
    "sign_envelope",
    "sign_note",
    "verify_detached",
    "verify_envelope",
]
