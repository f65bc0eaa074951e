"""`immutrail test DIGEST -- COMMAND…`: run a test command against an instance of the image.

Until the runtime drivers exist the instance is the image's root filesystem unpacked, verified
and read-only in a temporary folder. The command runs on the host with that folder as its working
directory and learns where the instance is from the environment:

* ``IMMUTRAIL_ROOTFS``: the unpacked root;
* ``IMMUTRAIL_IMAGE``: the manifest digest;
* the image's own ``Env``, so a test sees the configuration the image would run with.

The outcome is an in-toto test-result statement (PASSED when the command exits 0) that carries the
command, its exit code, its duration and the digest of its combined output; the output itself is
attached to the image as a referrer, so it can be read back and checked against that digest.

The request is checked before anything runs or is recorded (:func:`check_test_request`): a
non-empty command, a test name of at most ``MAX_NAME_CHARS`` printable characters and a timeout
above 0 and at most ``MAX_TIMEOUT_S``. The output is read as it comes; only its first
``MAX_OUTPUT_BYTES`` are kept (the rest is read and dropped, so the command is not blocked on a
full pipe and runs to its end or its timeout), which the result records as ``truncated``.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import subprocess
import tempfile
import time
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from immutrail.artifacts.attach import attach_and_record
from immutrail.artifacts.digests import sha256_digest
from immutrail.artifacts.imageconfig import image_env
from immutrail.artifacts.provenance import rfc3339
from immutrail.artifacts.statements import attest
from immutrail.artifacts.store import Store
from immutrail.artifacts.unpack import make_writable, remove_tree, unpack_image
from immutrail.ledger.event import Event
from immutrail.ledger.ledger import Ledger

from .errors import PolicyInputError

TEST_RESULT_PREDICATE = "https://in-toto.io/attestation/test-result/v0.1"
TEST_OUTPUT_TYPE = "application/vnd.immutrail.test-output.v1+text"
EVENT_TESTED = "image.tested"
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
"""Output beyond this is cut (and the cut is recorded): test logs are evidence, not archives."""
MAX_TIMEOUT_S = 24 * 3600.0
"""The longest ``timeout_s`` accepted: a day; a longer test is a mistake, not a test."""
MAX_NAME_CHARS = 200
"""The longest test name: it is in the ledger event, the attestation and every listing."""
_READ_CHUNK = 64 * 1024


@dataclass(frozen=True)
class TestRun:
    name: str
    passed: bool
    exit_code: int
    duration_s: float
    output_digest: str
    output_truncated: bool
    attestation: str
    ledger_index: int


def check_test_request(command: Sequence[str], name: str | None, timeout_s: float) -> str:
    """The test's name, once ``command``, ``name`` and ``timeout_s`` are known to be usable.

    Called before anything is unpacked, run or recorded (the CLI calls it before it even opens
    the ledger); PolicyInputError names what is wrong.
    """
    if not command or not command[0]:
        raise PolicyInputError("give the test command after --, e.g. immutrail test D -- ./t.sh")
    if any("\0" in word for word in command):
        raise PolicyInputError("the test command contains a NUL character")
    # `not 0 < t` also refuses NaN, which compares false with everything
    if isinstance(timeout_s, bool) or not 0 < timeout_s <= MAX_TIMEOUT_S:
        shown = timeout_s if math.isfinite(timeout_s) else str(timeout_s)
        raise PolicyInputError(
            f"--timeout {shown}: give the seconds the test may take, "
            f"more than 0 and at most {MAX_TIMEOUT_S:g}"
        )
    if name is None:
        derived = Path(command[0]).name
        problem = _name_problem(derived)
        if problem is not None:
            raise PolicyInputError(
                f"the command's file name {derived!r} cannot name the test ({problem}): give --name"
            )
        return derived
    problem = _name_problem(name)
    if problem is not None:
        raise PolicyInputError(f"--name {_shown(name)}: {problem}")
    return name


def _name_problem(name: str) -> str | None:
    if not name.strip():
        return "a test name cannot be empty"
    if len(name) > MAX_NAME_CHARS:
        return f"a test name has at most {MAX_NAME_CHARS} characters (this one has {len(name)})"
    # control, format (bidi overrides), surrogate and unassigned characters: a name is printed
    # in listings and reports, where they would hide or reorder what is shown
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        return "a test name cannot contain control or invisible characters"
    return None


def _shown(text: str) -> str:
    return repr(text if len(text) <= 60 else text[:60] + "…")


def run_image_test(
    store: Store,
    ledger: Ledger,
    home: Path,
    actor: str,
    digest: str,
    command: Sequence[str],
    *,
    name: str | None = None,
    timeout_s: float = 600.0,
) -> TestRun:
    """Run ``command`` against an unpacked instance of ``digest``; attest and record the result."""
    test_name = check_test_request(command, name, timeout_s)
    record = store.resolve(digest)
    config = image_env(store.image_config(record.digest))
    started = datetime.now(UTC)
    scratch = Path(tempfile.mkdtemp(prefix="immutrail-test-"))
    try:
        root = unpack_image(store, record.digest, scratch / "rootfs")
        env = {**os.environ, **config, "IMMUTRAIL_ROOTFS": str(root)}
        env["IMMUTRAIL_IMAGE"] = record.digest
        clock = time.monotonic()
        output, truncated, exit_code = _run_bounded(command, root, env, timeout_s)
        duration = time.monotonic() - clock
    finally:
        if (scratch / "rootfs").exists():
            make_writable(scratch / "rootfs")
        with contextlib.suppress(OSError):  # a leftover temporary folder is not the test's fault
            remove_tree(scratch)
    output_digest = sha256_digest(output)
    attach_and_record(store, ledger, actor, record.digest, TEST_OUTPUT_TYPE, output, "text/plain")
    passed = exit_code == 0
    predicate: dict[str, Any] = {
        "result": "PASSED" if passed else "FAILED",
        "configuration": [
            {"name": "command", "annotations": {"argv": " ".join(command)}},
        ],
        "passedTests": [test_name] if passed else [],
        "warnedTests": [],
        "failedTests": [] if passed else [test_name],
        "immutrail": {
            "name": test_name,
            "command": list(command),
            "exit_code": exit_code,
            "duration_s": round(duration, 3),
            "started_on": rfc3339(started),
            "output": {"digest": output_digest, "size": len(output), "truncated": truncated},
        },
    }
    manifest = attest(store, ledger, home, actor, record.digest, TEST_RESULT_PREDICATE, predicate)
    appended = ledger.append(
        Event.create(
            EVENT_TESTED,
            actor,
            record.digest,
            {
                "name": test_name,
                "result": predicate["result"],
                "exit_code": exit_code,
                "duration_s": round(duration, 3),
                "output": output_digest,
                "attestation": manifest.digest,
            },
        )
    )
    return TestRun(
        test_name,
        passed,
        exit_code,
        round(duration, 3),
        output_digest,
        truncated,
        manifest.digest,
        appended.index,
    )


def _run_bounded(
    command: Sequence[str], cwd: Path, env: dict[str, str], timeout_s: float
) -> tuple[bytes, bool, int]:
    """Run ``command``: its first ``MAX_OUTPUT_BYTES`` of output, whether more came, its exit code.

    The output is read as it comes and what is past the cap is dropped, so memory stays bounded
    whatever the command writes. The command gets a process group of its own, so that a timeout
    (or an interrupted immutrail) ends whatever it started too, not only the command itself.
    """
    try:
        process = subprocess.Popen(  # noqa: S603 - the user's own test command
            list(command),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        raise PolicyInputError(f"test command not found: {command[0]}") from exc
    except OSError as exc:  # a folder, a file that is not executable, a bad interpreter line
        raise PolicyInputError(f"cannot run the test command {command[0]}: {exc.strerror}") from exc
    kept = bytearray()
    truncated = timed_out = False
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    pipe = process.stdout.fileno()
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([pipe], [], [], left)
            if not ready:
                continue
            chunk = os.read(pipe, _READ_CHUNK)
            if not chunk:  # every writer closed the pipe: the command (and its children) ended
                break
            room = MAX_OUTPUT_BYTES - len(kept)
            if len(chunk) > room:
                truncated = True
            if room > 0:
                kept += chunk[:room]
        if not timed_out:
            try:
                exit_code = process.wait(timeout=max(deadline - time.monotonic(), 0.001))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        if timed_out or process.poll() is None:
            _kill_group(process)
        process.stdout.close()
    if timed_out:
        kept += f"\n[timed out after {timeout_s:g} s]\n".encode()
        exit_code = -1
    return bytes(kept), truncated, exit_code


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already gone
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
