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
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
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
from immutrail.artifacts.unpack import make_writable, unpack_image
from immutrail.ledger.event import Event
from immutrail.ledger.ledger import Ledger

from .errors import PolicyInputError

TEST_RESULT_PREDICATE = "https://in-toto.io/attestation/test-result/v0.1"
TEST_OUTPUT_TYPE = "application/vnd.immutrail.test-output.v1+text"
EVENT_TESTED = "image.tested"
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
"""Output beyond this is cut (and the cut is recorded): test logs are evidence, not archives."""


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
    if not command:
        raise PolicyInputError("give the test command after --, e.g. immutrail test D -- ./t.sh")
    record = store.resolve(digest)
    config = image_env(store.image_config(record.digest))
    test_name = name or Path(command[0]).name
    started = datetime.now(UTC)
    scratch = Path(tempfile.mkdtemp(prefix="immutrail-test-"))
    try:
        root = unpack_image(store, record.digest, scratch / "rootfs")
        env = {**os.environ, **config, "IMMUTRAIL_ROOTFS": str(root)}
        env["IMMUTRAIL_IMAGE"] = record.digest
        clock = time.monotonic()
        try:
            completed = subprocess.run(  # noqa: S603 - the user's own test command
                list(command),
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                check=False,
            )
            output, exit_code = completed.stdout, completed.returncode
        except FileNotFoundError as exc:
            raise PolicyInputError(f"test command not found: {command[0]}") from exc
        except subprocess.TimeoutExpired as exc:
            output = (exc.output or b"") + f"\n[timed out after {timeout_s:g} s]\n".encode()
            exit_code = -1
        duration = time.monotonic() - clock
    finally:
        if (scratch / "rootfs").exists():
            make_writable(scratch / "rootfs")
        shutil.rmtree(scratch, ignore_errors=True)
    truncated = len(output) > MAX_OUTPUT_BYTES
    output = output[:MAX_OUTPUT_BYTES]
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
