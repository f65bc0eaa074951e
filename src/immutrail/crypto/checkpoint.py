"""C2SP transparency-log checkpoints (c2sp.org/tlog-checkpoint) inside signed notes.

A checkpoint body is ``origin\\nsize\\nbase64(root hash)\\n`` followed by optional extension
lines. Parsing is strict so that a body has exactly one spelling: ``Checkpoint.parse(t).body()``
is ``t`` for every accepted ``t``, and anything else is a NoteError.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from .errors import NoteError
from .note import NoteSigner, NoteVerifier, open_note, sign_note

__all__ = ["HASH_SIZE", "MAX_TREE_SIZE", "Checkpoint", "open_checkpoint", "sign_checkpoint"]

HASH_SIZE = 32
"""Bytes in a root hash: SHA-256, as RFC 6962 trees use."""

MAX_TREE_SIZE = 2**64 - 1
"""Largest tree size a checkpoint may state (an unsigned 64-bit integer, as Go parses it)."""

_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_CONTROL = re.compile("[\x00-\x1f]")


@dataclass(frozen=True)
class Checkpoint:
    """A log's signed statement of its tree: origin (log identity), size and root hash."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise NoteError("a checkpoint origin must be a non-empty string")
        if _CONTROL.search(self.origin):
            raise NoteError(f"checkpoint origin {self.origin!r} holds a control character")
        if (
            isinstance(self.size, bool)
            or not isinstance(self.size, int)
            or not 0 <= self.size <= MAX_TREE_SIZE
        ):
            raise NoteError(f"checkpoint size {self.size!r} is not an integer in 0..2**64-1")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise NoteError(f"a checkpoint root hash is {HASH_SIZE} bytes")
        if not isinstance(self.extensions, tuple):
            raise NoteError("checkpoint extensions must be a tuple of lines")
        for line in self.extensions:
            if not isinstance(line, str) or not line or _CONTROL.search(line):
                raise NoteError(f"checkpoint extension line {line!r} is empty or not one line")

    def body(self) -> str:
        """The note text: origin, size, base64 root hash and extension lines, each ending in \\n."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        return "".join(
            f"{line}\n" for line in (self.origin, str(self.size), root, *self.extensions)
        )

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (the note text), refusing anything but its one spelling."""
        if not isinstance(text, str) or not text.endswith("\n"):
            raise NoteError("malformed checkpoint: the text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteError("malformed checkpoint: fewer than three lines (origin, size, root)")
        origin, size, root, *extensions = lines
        if not origin:
            raise NoteError("malformed checkpoint: empty origin line")
        if not _SIZE.fullmatch(size):
            raise NoteError(
                f"malformed checkpoint: size {size!r} is not a decimal without leading zeros"
            )
        try:
            root_hash = base64.b64decode(root, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise NoteError(f"malformed checkpoint: root hash {root!r} is not base64") from exc
        if len(root_hash) != HASH_SIZE or base64.b64encode(root_hash).decode("ascii") != root:
            raise NoteError(
                f"malformed checkpoint: root hash {root!r} is not the base64 of {HASH_SIZE} bytes"
            )
        if any(not line for line in extensions):
            raise NoteError("malformed checkpoint: empty extension line")
        return cls(origin, int(size), root_hash, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: NoteSigner) -> str:
    """The checkpoint as a signed note, signed by ``signer`` (whose name should be the origin)."""
    return sign_note(checkpoint.body(), [signer])


def open_checkpoint(
    note_text: str | bytes, verifier: NoteVerifier, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint with ``verifier`` and parse it.

    SignatureError when it is not validly signed by that key; NoteError when it is malformed or,
    with ``origin`` given, when it is a checkpoint of another log.
    """
    note = open_note(note_text, [verifier])
    checkpoint = Checkpoint.parse(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError(
            f"checkpoint is for the log {checkpoint.origin!r}, not {origin!r}",
            hint="It was signed by the trusted key, but for another log: do not use it here.",
        )
    return checkpoint
