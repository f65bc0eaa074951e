"""Admission: only the promoted, signed, intact digest may start; every refusal is recorded.

Images are promoted through the real gate (``policy set`` with a permissive YAML policy, then
``promote``), signed with ``sign``; a signer is revoked with ``keys revoke``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from immutrail.artifacts.store import Store
from immutrail.cli.main import app
from immutrail.deploy.admission import EVENT_REFUSED, admit
from immutrail.deploy.keep_logs import EVENT_LOGS_KEPT, LOGS_ARTIFACT_TYPE, keep_logs
from immutrail.deploy.local import LocalRuntime
from immutrail.deploy.runtime import AdmissionError, Health, InstanceSpec
from immutrail.ledger.event import parse_entry
from immutrail.ledger.home import open_ledger
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter

from .conftest import build_hello, free_port, wait_for

runner = CliRunner()

PERMISSIVE = """\
provenance: {required: false}
vulnerabilities: {require_scan: false}
baseline: {required: false}
"""


def cli(home: Path, *args: str, code: int = 0) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--home", str(home), "--format", "json"])
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    data: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {}
    return data


def events(ledger: Ledger, kind: str) -> list[dict[str, Any]]:
    found = []
    for row in ledger.entries(EntryFilter(type=kind)):
        event = parse_entry(row.data)
        found.append({"subject": event.subject, "actor": event.actor, **event.payload})
    return found


def size(ledger: Ledger) -> int:
    return len(list(ledger.entries(EntryFilter())))


class Setup:
    """v1 signed and promoted to staging and prod; v2 signed and promoted to staging only."""

    def __init__(self, home: Path, tmp_path: Path) -> None:
        self.home = home
        self.keys = {p: self.keygen(p) for p in ("ops", "rel")}
        policy = tmp_path / "policy.yaml"
        policy.write_text(PERMISSIVE)
        for environment in ("staging", "prod"):
            cli(home, "policy", "set", environment, str(policy), "--principal", "ops")
        self.v1 = build_hello(home, tmp_path, "1")
        self.v2 = build_hello(home, tmp_path, "2")
        for digest in (self.v1, self.v2):
            cli(home, "sign", digest, "--principal", "rel")
        for digest, environment in ((self.v1, "staging"), (self.v1, "prod"), (self.v2, "staging")):
            assert cli(home, "promote", digest, "--to", environment)["allowed"]
        self.store = Store.for_home(home)

    def keygen(self, principal: str) -> str:
        made = cli(self.home, "keys", "generate", "--principal", principal, "--no-passphrase")
        return str(made.get("keyid") or made["key"]["keyid"])


@pytest.fixture
def setup(home: Path, tmp_path: Path) -> Setup:
    return Setup(home, tmp_path)


@pytest.fixture
def ledger(setup: Setup) -> Iterator[Ledger]:
    opened = open_ledger(setup.home)
    try:
        yield opened
    finally:
        opened.close()


def refused(setup: Setup, ledger: Ledger, environment: str, digest: str, reason: str) -> None:
    before = size(ledger)
    with pytest.raises(AdmissionError, match=reason):
        admit(setup.home, setup.store, ledger, environment, "hello", digest, "user:deployer")
    assert size(ledger) == before + 1
    last = events(ledger, EVENT_REFUSED)[-1]
    assert last["subject"] == digest and last["actor"] == "user:deployer"
    assert last["environment"] == environment
    assert reason.replace("\\", "") in last["reason"]


def test_promoted_signed_intact_image_is_admitted_silently(setup: Setup, ledger: Ledger) -> None:
    before = size(ledger)
    admitted = admit(setup.home, setup.store, ledger, "prod", "hello", setup.v1, "user:deployer")
    assert (admitted.digest, admitted.environment, admitted.signers) == (setup.v1, "prod", ("rel",))
    assert admit(
        setup.home, setup.store, ledger, "staging", "hello", setup.v2, "user:deployer"
    ).signers
    assert size(ledger) == before and events(ledger, EVENT_REFUSED) == []


def test_promoted_only_to_staging_cannot_reach_prod(setup: Setup, ledger: Ledger) -> None:
    refused(
        setup, ledger, "prod", setup.v2, f"not the image promoted to prod/hello: that is {setup.v1}"
    )
    refused(setup, ledger, "dev", setup.v1, "no image has been promoted to dev/hello")


def test_image_changed_by_one_byte_is_refused(setup: Setup, ledger: Ledger) -> None:
    _, blobs = setup.store.image_blobs(setup.v1)
    layer = setup.store.blob_path(blobs[-1].digest)
    layer.chmod(0o644)
    data = bytearray(layer.read_bytes())
    data[len(data) // 2] ^= 0x01
    layer.write_bytes(bytes(data))
    refused(setup, ledger, "prod", setup.v1, "the stored image does not verify")


def test_unsigned_image_is_refused(setup: Setup, ledger: Ledger, tmp_path: Path) -> None:
    v3 = build_hello(setup.home, tmp_path, "3")
    assert cli(setup.home, "promote", v3, "--to", "staging")["allowed"]
    refused(setup, ledger, "staging", v3, "no valid release signature by a non-revoked key")


def test_revoked_signer_is_refused(setup: Setup, ledger: Ledger) -> None:
    cli(setup.home, "keys", "revoke", setup.keys["rel"], "--reason", "left")
    refused(setup, ledger, "prod", setup.v1, "no valid release signature by a non-revoked key")
    assert "revoked" in events(ledger, EVENT_REFUSED)[-1]["reason"]


@pytest.mark.parametrize(
    ("environment", "digest", "message"),
    [("Prod!", "sha256:" + "0" * 64, "not an environment name"), ("prod", "v1", "not a digest")],
)
def test_malformed_input_changes_nothing(
    setup: Setup, ledger: Ledger, environment: str, digest: str, message: str
) -> None:
    before = size(ledger)
    with pytest.raises(AdmissionError, match=message):
        admit(setup.home, setup.store, ledger, environment, "hello", digest, "user:deployer")
    assert size(ledger) == before


def test_admitted_instance_runs_and_its_logs_outlive_it(setup: Setup, ledger: Ledger) -> None:
    admit(setup.home, setup.store, ledger, "prod", "hello", setup.v1, "user:deployer")
    runtime = LocalRuntime(setup.home, setup.store)
    port = free_port()
    instance = runtime.create(InstanceSpec("prod", "hello", setup.v1, port=port))
    try:
        wait_for(runtime, instance.id, Health.healthy)
        [observed] = runtime.list("prod")
        logs = runtime.logs(instance.id)
        kept = keep_logs(setup.store, ledger, "user:deployer", observed, logs)
    finally:
        runtime.destroy(instance.id)
    assert runtime.list() == []

    [referrer] = setup.store.referrers(setup.v1, LOGS_ARTIFACT_TYPE)
    assert referrer.digest == kept.artifact
    layer = setup.store.get_manifest(referrer.digest)["layers"][0]["digest"]
    document = json.loads(setup.store.read_blob(layer))
    assert document["instance"] == instance.id and document["image"] == setup.v1
    assert base64.b64decode(document["stdout"]) == logs.stdout
    assert base64.b64decode(document["stderr"]) == logs.stderr

    [event] = events(ledger, EVENT_LOGS_KEPT)
    assert event["subject"] == instance.id and event["image"] == setup.v1
    assert event["artifact"] == kept.artifact and event["stderr"]["size"] == len(logs.stderr)
    assert cli(setup.home, "ledger", "verify")["ok"] is True
