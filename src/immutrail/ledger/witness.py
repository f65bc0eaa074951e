"""Witness folders: signed checkpoints kept outside the ledger, where its operator cannot reach.

Layout (one folder per ledger; plain files, so any tool can read it)::

    DIR/vkey                              the ledger's verifier key, written on first publish
    DIR/checkpoint-00000000000000001234   the signed note of the checkpoint of size 1234

A later ``verify --witness DIR`` proves the ledger still extends every checkpoint there: a ledger
rolled back, truncated or forked behind one of them fails. When DIR is a git work tree each
publish is also a commit, so the witness keeps its own tamper-evident history.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from immutrail.crypto.errors import NoteError
from immutrail.crypto.note import Ed25519NoteVerifier
from immutrail.files import FileTooLargeError, OutputPathError, atomic_output, read_capped_text

from .errors import LedgerInputError, VerificationError

VKEY_FILE = "vkey"
CHECKPOINT_PREFIX = "checkpoint-"
MAX_NOTE_BYTES = 64 * 1024
MAX_VKEY_BYTES = 4096


@dataclass(frozen=True)
class WitnessedCheckpoint:
    source: str
    note: str


def checkpoint_file(size: int) -> str:
    return f"{CHECKPOINT_PREFIX}{size:020d}"


def publish(directory: Path, note: str, size: int, vkey: str) -> Path:
    """Add a checkpoint to the witness folder; refuse one that contradicts what it already holds."""
    prepare(directory, vkey)
    if held(directory, note, size):
        return directory / checkpoint_file(size)
    return add(directory, note, size)


def add(directory: Path, note: str, size: int) -> Path:
    """Write the checkpoint into a folder :func:`prepare` and :func:`held` have checked."""
    target = directory / checkpoint_file(size)
    _write(target, note)
    if (directory / ".git").exists():  # prepare() made sure git agrees
        _git_commit(directory, [VKEY_FILE, target.name], f"checkpoint {size}")
    return target


def held(directory: Path, note: str, size: int) -> bool:
    """Whether the folder already holds ``note`` for ``size``; an error if it holds another."""
    target = directory / checkpoint_file(size)
    if not target.exists() and not target.is_symlink():
        return False
    if _read_note(target) != note:
        raise VerificationError(
            f"{target} holds a different checkpoint for size {size}: the ledger has forked"
        )
    return True


def prepare(directory: Path, vkey: str) -> None:
    """Make ``directory`` a witness of the ledger with ``vkey``, or say why it cannot be one.

    Called before a checkpoint is signed, so that a bad ``--publish`` folder changes nothing.
    """
    if directory.exists() and not directory.is_dir():
        raise LedgerInputError(f"witness {directory} is not a folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LedgerInputError(f"cannot create the witness folder {directory}: {exc}") from exc
    _check_git(directory)
    witnessed = _read_vkey(directory)
    if witnessed is None:
        _write(directory / VKEY_FILE, vkey + "\n")
    elif witnessed != vkey:
        raise VerificationError(
            f"{directory} witnesses another ledger key ({witnessed.split('+')[0]}), not {vkey}"
        )


def load(path: Path) -> tuple[str | None, list[WitnessedCheckpoint]]:
    """Read a witness folder (or one checkpoint file): its vkey, if any, and its checkpoints.

    Every ``checkpoint-*`` entry must be a readable note: one that is not (a folder, a device, a
    file too large to be a checkpoint) is an error, never silently skipped.
    """
    if path.is_file():
        return None, [WitnessedCheckpoint(str(path), _read_note(path))]
    if not path.is_dir():
        raise LedgerInputError(f"witness {path} is neither a folder nor a file")
    try:
        names = sorted(p for p in path.iterdir() if p.name.startswith(CHECKPOINT_PREFIX))
    except OSError as exc:
        raise LedgerInputError(f"cannot list the witness folder {path}: {exc}") from exc
    vkey = _read_vkey(path)
    if not names:  # an empty folder would let a rolled-back ledger pass unchallenged
        raise LedgerInputError(
            f"witness {path} holds no {CHECKPOINT_PREFIX}* file, so it witnesses nothing "
            "(`immutrail ledger checkpoint --publish DIR` adds one)"
        )
    return vkey, [WitnessedCheckpoint(str(p), _read_note(p)) for p in names]


def _read_vkey(directory: Path) -> str | None:
    path = directory / VKEY_FILE
    if not path.exists() and not path.is_symlink():
        return None
    text = _read_text(path, MAX_VKEY_BYTES, "a verifier key").strip()
    try:
        Ed25519NoteVerifier.from_vkey(text)
    except NoteError as exc:  # damaged input, not evidence that the ledger was replaced
        raise LedgerInputError(f"{path} does not hold a verifier key: {exc}") from exc
    return text


def _read_note(path: Path) -> str:
    return _read_text(path, MAX_NOTE_BYTES, "a checkpoint")


def _read_text(path: Path, limit: int, what: str) -> str:
    if not path.is_file():
        raise LedgerInputError(f"{path} is not a regular file, so it cannot hold {what}")
    try:
        return read_capped_text(path, limit)
    except FileTooLargeError as exc:
        raise LedgerInputError(f"{path} is larger than {what} can be ({limit} bytes)") from exc
    except OSError as exc:
        raise LedgerInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise LedgerInputError(f"{path} is not UTF-8 text, so it cannot hold {what}") from exc


def _write(path: Path, text: str) -> None:
    try:
        with atomic_output(path, overwrite=False, mode=0o600) as stream:
            stream.write(text.encode("utf-8"))
    except OutputPathError as exc:  # something appeared there: never written over
        raise LedgerInputError(str(exc)) from exc
    except OSError as exc:
        raise LedgerInputError(f"cannot write {path}: {exc.strerror or exc}") from exc


def _check_git(directory: Path) -> None:
    """When DIR has ``.git``, git must agree it is a work tree: checked before anything is
    written, so that a broken repository fails the publish without leaving files behind."""
    if (directory / ".git").exists():
        _git(directory, ["rev-parse", "--is-inside-work-tree"])


def _git_commit(directory: Path, names: list[str], message: str) -> None:
    _git(directory, ["add", "--", *names])
    _git(directory, ["commit", "--quiet", "-m", message, "--", *names])


def _git(directory: Path, args: list[str]) -> None:
    git = shutil.which("git")
    if git is None:
        raise LedgerInputError(f"{directory} is a git work tree but no git program was found")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": os.environ.get("GIT_AUTHOR_NAME", "immutrail"),
        "GIT_AUTHOR_EMAIL": os.environ.get("GIT_AUTHOR_EMAIL", "immutrail@localhost"),
        "GIT_COMMITTER_NAME": os.environ.get("GIT_COMMITTER_NAME", "immutrail"),
        "GIT_COMMITTER_EMAIL": os.environ.get("GIT_COMMITTER_EMAIL", "immutrail@localhost"),
    }
    result = subprocess.run(  # noqa: S603 - fixed git arguments, no shell
        [git, "-C", str(directory), *args], capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise LedgerInputError(f"git {args[0]} in {directory} failed: {result.stderr.strip()}")
