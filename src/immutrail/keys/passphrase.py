"""Where a key's passphrase comes from: a file, the environment, or a person at a terminal.

The order is fixed and documented: ``--passphrase-file`` first, then ``IMMUTRAIL_KEY_PASSPHRASE``,
then an interactive prompt (only when one was offered, i.e. stdin is a terminal). A passphrase is
asked for only when a key actually needs one, so an unencrypted key never triggers a prompt.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import KeyInputError

PASSPHRASE_ENV = "IMMUTRAIL_KEY_PASSPHRASE"  # noqa: S105 - the variable's name, not a secret
MAX_PASSPHRASE_FILE = 64 * 1024

Prompt = Callable[[str, bool], bytes]
"""Asks a person for a passphrase: (what it is for, whether to ask twice) -> the passphrase."""


@dataclass(frozen=True)
class PassphraseSource:
    """A callback for secrets (securesystemslib's habit): nothing is read until it is needed."""

    file: Path | None = None
    prompt: Prompt | None = None

    def get(self, what: str, *, confirm: bool = False) -> bytes:
        """The passphrase for ``what``; KeyInputError when no source gives a non-empty one."""
        if self.file is not None:
            return _read_file(self.file)
        value = os.environb.get(PASSPHRASE_ENV.encode())  # the bytes as given, UTF-8 or not
        if value:
            return value
        if self.prompt is not None:
            secret = self.prompt(what, confirm)
            if not secret:
                raise KeyInputError("an empty passphrase was given")
            return secret
        raise KeyInputError(
            f"{what} needs a passphrase and none was given",
            hint=f"Use --passphrase-file FILE or set {PASSPHRASE_ENV}"
            " (or run in a terminal to be asked).",
        )


def _read_file(path: Path) -> bytes:
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_PASSPHRASE_FILE + 1)
    except OSError as exc:
        raise KeyInputError(f"cannot read the passphrase file {path}: {exc.strerror}") from exc
    if len(data) > MAX_PASSPHRASE_FILE:
        raise KeyInputError(f"the passphrase file {path} is over {MAX_PASSPHRASE_FILE} bytes")
    # One trailing line break is what `echo secret > file` adds; it is not part of the secret.
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise KeyInputError(f"the passphrase file {path} is empty")
    return data
