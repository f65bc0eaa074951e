"""What every command shares: home/db/format options, output, errors mapped to exit codes."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from immutrail.access.actor import Actor, act, setup_actor
from immutrail.access.errors import AccessDenied, AccessError, AccessInputError, AuthenticationError
from immutrail.access.model import Action
from immutrail.artifacts.errors import ArtifactError, ArtifactInputError, BlobVerificationError
from immutrail.baseline.errors import BaselineError, BaselineInputError
from immutrail.crypto.canonical import parse_strict_json
from immutrail.crypto.errors import CanonicalizationError, CryptoError, DuplicateKeyError
from immutrail.deploy.errors import DeployInputError, DeploymentFailedError
from immutrail.deploy.runtime import AdmissionError, RuntimeDriverError
from immutrail.drift.errors import DriftError, DriftInputError, ImageVerificationError
from immutrail.files import OutputPathError
from immutrail.keys.errors import KeyInputError, KeysError
from immutrail.keys.passphrase import PASSPHRASE_ENV, PassphraseSource
from immutrail.ledger.errors import (
    LedgerError,
    LedgerInputError,
    NotInitializedError,
    VerificationError,
)
from immutrail.ledger.home import open_ledger
from immutrail.ledger.ledger import Ledger
from immutrail.policy.errors import PolicyError, PolicyInputError
from immutrail.scan.errors import ScanError, ScanInputError
from immutrail.signing.errors import SigningError, SigningInputError

SCHEMA_VERSION = 1


class ExitCode(IntEnum):
    OK = 0
    VERIFICATION_FAILED = 1
    USAGE = 2
    OPERATIONAL = 3
    INTERNAL = 4
    """An error no command anticipated: a bug. Python's own exit code for it would be 1, which
    a script would read as "verification failed"."""
    INTERRUPTED = 130
    """Ctrl-C (SIGINT), by the shell's convention 128 + 2; never 1, which means a failed check."""


EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 verification failed, refused, or a deployment failed and was undone; "
    "2 usage or input error (nothing was written); "
    "3 operational error (storage unreachable or damaged, home not initialized, "
    "an unexpected I/O failure); 4 internal error (a bug: the traceback is printed); "
    "130 interrupted (Ctrl-C)."
)


class Format(StrEnum):
    text = "text"
    json = "json"


def named_path(value: str | Path) -> Path:
    """The parser of every path option: ``''`` is refused, where ``Path('')`` would quietly mean
    the current folder (``--home ''`` would initialize it, ``--witness ''`` would read it)."""
    if value == "":
        raise typer.BadParameter("an empty path names nothing; give a path (. for this folder)")
    return Path(value)


HomeOption = Annotated[
    Path,
    typer.Option(
        "--home",
        parser=named_path,
        envvar="IMMUTRAIL_HOME",
        help="immutrail's home folder (keys, config, the SQLite ledger).",
        show_default=True,
    ),
]
DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="IMMUTRAIL_DB",
        help="Ledger database: sqlite:///PATH or postgresql://USER@HOST:PORT/DB "
        "[default: the one given at init, else SQLite in the home]",
        show_default=False,
    ),
]
FormatOption = Annotated[
    Format, typer.Option("--format", help="text for people, json for machines.")
]

# -- who acts: the options every command takes, and the one check every command makes ----------

AsOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        envvar="IMMUTRAIL_PRINCIPAL",
        metavar="PRINCIPAL",
        help="Act as PRINCIPAL, proved by one of its keys in the local key store (or --key-file).",
        show_default=False,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="IMMUTRAIL_TOKEN",
        metavar="TOKEN",
        help="Authenticate with an API token (imt_…); prefer the environment variable, which "
        "other users cannot see in the process list.",
        show_default=False,
    ),
]
KeyFileOption = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        parser=named_path,
        metavar="PATH",
        help="The --as principal's private key kept outside the key store (it also signs, where "
        "the command signs); its public key must be announced in the ledger.",
        show_default=False,
    ),
]
PassphraseFileOption = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        parser=named_path,
        metavar="FILE",
        help=f"Read the key's passphrase from FILE (one trailing newline is dropped) "
        f"[default: ${PASSPHRASE_ENV}, else a prompt when run in a terminal].",
        show_default=False,
    ),
]
ActorOption = Annotated[
    str | None,
    typer.Option(
        "--actor",
        envvar="IMMUTRAIL_ACTOR",
        help="Setup mode only (no principal yet): who acts, as recorded in the ledger "
        "[default: user:<login name>]. Refused once access control is set up: use --as.",
        show_default=False,
    ),
]


def _prompt(what: str, confirm: bool) -> bytes:
    text = typer.prompt(
        f"Passphrase for {what}", hide_input=True, confirmation_prompt=confirm, err=True
    )
    return str(text).encode("utf-8")


def passphrase_source(passphrase_file: Path | None) -> PassphraseSource:
    """File, then environment, then a prompt only when stdin is a terminal."""
    interactive = typer.get_text_stream("stdin").isatty()
    return PassphraseSource(passphrase_file, _prompt if interactive else None)


@dataclass(frozen=True)
class Caller:
    """Who the command line says acts: credentials, and the setup-mode free-text actor."""

    principal: str | None = None
    token: str | None = None
    key_file: Path | None = None
    passphrase_file: Path | None = None
    actor: str | None = None


def now() -> datetime:
    return datetime.now(UTC)


def acting(
    home: Path,
    ledger: Ledger,
    action: Action | None,
    environment: str | None = None,
    *,
    caller: Caller,
) -> Actor:
    """The one access check of every command, made before it reads or writes anything else.

    Once access control is set up: the authenticated, authorized principal (exit 1 if not, with
    nothing appended); before (setup mode): the typed --as/--actor name, else user:<login>.
    ``action`` None only authenticates: the command authorizes at once (see access.actor.act).
    """
    from immutrail.artifacts.builder import default_actor

    return act(
        home,
        ledger,
        action,
        environment,
        principal=caller.principal,
        token=caller.token,
        key_file=caller.key_file,
        passphrase_file=caller.passphrase_file,
        actor=caller.actor,
        fallback=default_actor(),
        now=now(),
        passphrase=passphrase_source(caller.passphrase_file),
    )


@contextmanager
def authorized(
    home: Path,
    db: str | None,
    action: Action | None,
    environment: str | None = None,
    *,
    caller: Caller,
) -> Iterator[tuple[Ledger, Actor]]:
    """Open the ledger and make the access check: (the ledger, signing the caller's events when
    it authenticated with a key; who acts)."""
    with open_ledger(home, db) as ledger:
        actor = acting(home, ledger, action, environment, caller=caller)
        yield actor.ledger(ledger), actor


def check_access(
    home: Path,
    db: str | None,
    action: Action | None,
    environment: str | None = None,
    *,
    caller: Caller,
) -> Actor:
    """The access check of a command that does not otherwise use the ledger (or opens its own).

    A home without a ledger has no principal either: that is setup mode.
    """
    try:
        ledger = open_ledger(home, db)
    except NotInitializedError:
        from immutrail.artifacts.builder import default_actor

        return setup_actor(
            principal=caller.principal,
            token=caller.token,
            actor=caller.actor,
            fallback=default_actor(),
        )
    with ledger:
        return acting(home, ledger, action, environment, caller=caller)


DEFAULT_HOME = Path(".immutrail")

# emoji=False: a package named ":smile:" prints as written, markup or not.
stdout = Console(highlight=False, soft_wrap=True, emoji=False)
# soft_wrap: an error message stays one line for the scripts and logs that read it.
stderr = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def emit_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"schema_version": SCHEMA_VERSION, **data}, indent=None) + "\n")


# An error quotes user input, which can be anything: a 100 KB value, or bytes a terminal obeys.
MAX_ERROR_CHARS = 4096
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with control characters (escape sequences above all) shown as ``\\xNN``, and
    cut at :data:`MAX_ERROR_CHARS`; line breaks and tabs stay."""
    if len(text) > MAX_ERROR_CHARS:
        text = f"{text[:MAX_ERROR_CHARS]}… ({len(text) - MAX_ERROR_CHARS} more characters)"
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def print_error(message: str) -> None:
    # The message is plain text and often quotes user input: "[/x]" must print, not parse.
    stderr.print(f"[bold red]error:[/] {escape(printable(message))}", markup=True, highlight=False)


def fail(message: str, code: ExitCode = ExitCode.USAGE) -> NoReturn:
    print_error(message)
    raise typer.Exit(int(code))


# Every part's errors come in two families: its *InputError (the request or its input is wrong,
# and nothing was written: exit 2) and the rest (the home, the store or the database is damaged or
# unreachable: exit 3). Failed verifications exit 1. Listed once, here, for every command.
_VERIFICATION_FAILED: tuple[type[Exception], ...] = (
    VerificationError,
    BlobVerificationError,
    AdmissionError,
    DeploymentFailedError,
    AccessDenied,
    AuthenticationError,
    ImageVerificationError,
)
_INPUT: tuple[type[Exception], ...] = (
    OutputPathError,
    LedgerInputError,
    CryptoError,
    ArtifactInputError,
    ScanInputError,
    BaselineInputError,
    KeyInputError,
    SigningInputError,
    PolicyInputError,
    DeployInputError,
    AccessInputError,
    DriftInputError,
)
_OPERATIONAL: tuple[type[Exception], ...] = (
    LedgerError,
    ArtifactError,
    ScanError,
    BaselineError,
    KeysError,
    SigningError,
    PolicyError,
    RuntimeDriverError,
    AccessError,
    DriftError,
)


@contextmanager
def errors_to_exit_codes() -> Iterator[None]:
    """Turn the project's typed errors into a message on stderr and the documented exit code."""
    try:
        yield
    except _VERIFICATION_FAILED as exc:
        fail(exc.diagnostics(), ExitCode.VERIFICATION_FAILED)  # type: ignore[attr-defined]
    except NotInitializedError as exc:
        fail(exc.diagnostics(), ExitCode.OPERATIONAL)
    except _INPUT as exc:
        fail(exc.diagnostics(), ExitCode.USAGE)  # type: ignore[attr-defined]
    except _OPERATIONAL as exc:
        fail(exc.diagnostics(), ExitCode.OPERATIONAL)  # type: ignore[attr-defined]


def load_json_object(text: str, what: str) -> dict[str, Any]:
    """Parse one JSON object strictly: duplicate keys, NaN and Infinity are refused."""
    try:
        value = parse_strict_json(text)
    except DuplicateKeyError as exc:
        raise LedgerInputError(f"{what}: duplicate key {exc.key!r}") from exc
    except CanonicalizationError as exc:
        raise LedgerInputError(f"{what}: {exc}") from exc
    if not isinstance(value, dict):
        raise LedgerInputError(f"{what} must be a JSON object")
    return value


@contextmanager
def progress(description: str, total: int | None) -> Iterator[Progress]:
    """A progress bar on stderr; rich turns it off by itself when stderr is not a terminal."""
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
    ) as bar:
        bar.add_task(description, total=total)
        yield bar
