"""What every command shares: home/db/format options, output, errors mapped to exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from immutrail.access.errors import AccessDenied, AccessError, AccessInputError, AuthenticationError
from immutrail.artifacts.errors import ArtifactError, ArtifactInputError, BlobVerificationError
from immutrail.baseline.errors import BaselineError, BaselineInputError
from immutrail.crypto.canonical import parse_strict_json
from immutrail.crypto.errors import CanonicalizationError, CryptoError, DuplicateKeyError
from immutrail.deploy.errors import DeployInputError, DeploymentFailedError
from immutrail.deploy.runtime import AdmissionError, RuntimeDriverError
from immutrail.drift.errors import DriftError, DriftInputError, ImageVerificationError
from immutrail.keys.errors import KeyInputError, KeysError
from immutrail.ledger.errors import (
    LedgerError,
    LedgerInputError,
    NotInitializedError,
    VerificationError,
)
from immutrail.policy.errors import PolicyError, PolicyInputError
from immutrail.scan.errors import ScanError, ScanInputError
from immutrail.signing.errors import SigningError, SigningInputError

SCHEMA_VERSION = 1


class ExitCode(IntEnum):
    OK = 0
    VERIFICATION_FAILED = 1
    USAGE = 2
    OPERATIONAL = 3


EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 verification failed, refused, or a deployment failed and was undone; "
    "2 usage or input error (nothing was written); "
    "3 operational error (storage unreachable or damaged, home not initialized)."
)


class Format(StrEnum):
    text = "text"
    json = "json"


HomeOption = Annotated[
    Path,
    typer.Option(
        "--home",
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

DEFAULT_HOME = Path(".immutrail")

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False)


def emit_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps({"schema_version": SCHEMA_VERSION, **data}, indent=None) + "\n")


def fail(message: str, code: ExitCode = ExitCode.USAGE) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
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
