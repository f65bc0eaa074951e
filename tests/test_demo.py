"""`immutrail demo` end to end: its outcomes, not its wording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from immutrail.access import AccessState
from immutrail.artifacts.store import Store
from immutrail.cli.main import app
from immutrail.demo import (
    ADMIN,
    AUDITOR,
    BUILDER,
    CAST_FILE,
    DEPLOYER,
    OPERATOR,
    REVIEWERS,
    SIGNER,
    VULNERABILITY,
    Load,
    stop_everything,
)
from immutrail.deploy.endpoint import list_endpoints
from immutrail.deploy.local import LocalRuntime
from immutrail.ledger.event import parse_entry
from immutrail.ledger.home import open_ledger
from immutrail.ledger.storage.interface import EntryFilter


def test_demo_tells_the_whole_story_and_reruns_clean(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    home = target / "home"
    try:
        # The first run keeps prod running; the re-run stops it, starts clean, and stops all.
        for keep in (True, False):
            args = ["demo", "--dir", str(target), "--format", "json"]
            result = CliRunner().invoke(app, [*args, "--keep"] if keep else args)
            assert result.exit_code == 0, (result.stdout, result.stderr)
            out = json.loads(result.stdout)
            assert out["ok"] is True and out["seconds"] < 120
            assert out["build"]["provenance"] and out["build"]["sbom"]
            refusal = out["refusal"]
            assert refusal["refused"] and any(VULNERABILITY in r for r in refusal["reasons"])
            release = out["release"]
            assert release["promoted"] and release["scan_findings"] == 0
            assert release["ledger_index"] > refusal["ledger_index"]
            assert release["digest"] != out["build"]["digest"]
            deploy = out["deploy"]
            assert deploy["failed_requests"] == 0 and deploy["requests"] > 0
            assert deploy["old_instances_gone"]
            assert sorted(deploy["destroyed"]) == sorted(deploy["first"])
            assert deploy["answer"] == "hello v2 greeting=hello"
            drift = out["drift"]
            assert "filesystem" in drift["kinds"] and drift["remediated"]
            assert not drift["still_running"]
            chaos = out["chaos"]
            assert chaos["replaced"] and len(chaos["victims"]) == 1 and chaos["healthy"] == 2
            auditor = out["auditor"]
            assert auditor["v2_named"] and auditor["digests"] == [release["digest"]]
            assert auditor["approvers"] == sorted(REVIEWERS) and auditor["instances"] == 2
            assert auditor["evidence_verified"] and Path(auditor["evidence"]).is_file()
            assert auditor["report_change_management"] == "satisfied"
            report = json.loads(Path(auditor["report"]).with_suffix(".json").read_text())
            # every actor proved who they were (key announcements included, signed by the
            # announcer; the first admin's by the bootstrap): the one exception is the drift
            assert [e["kind"] for e in report["exceptions"]] == ["drift"]
            controls = {c["id"]: c["status"] for c in report["controls"]}
            assert controls["CC6.1"] == controls["CC6.2"] == "satisfied"
            tamper = out["tamper"]
            assert tamper["clean_verify_ok"]
            assert tamper["caught"] and tamper["detected_at"] == tamper["tampered_index"]
            running = LocalRuntime(home, Store.for_home(home)).list()
            if keep:
                assert len(running) == 2 and len(list_endpoints(home)) == 1
                assert Load.get(deploy["endpoint_port"]) == "hello v2 greeting=hello"
                first_port = deploy["endpoint_port"]
            else:  # nothing left running, not even what the first run kept
                assert running == [] and list_endpoints(home) == []
                with pytest.raises(OSError):
                    Load.get(first_port)
            assert (home / "ledger.db").exists() and (home / "desired-state" / "prod").is_dir()
            _every_event_names_a_principal_of_the_cast(home)
    finally:
        if home.exists():
            stop_everything(home)


def _every_event_names_a_principal_of_the_cast(home: Path) -> None:
    """Access control is on from the first event: every actor is an authenticated principal."""
    cast = yaml.safe_load(CAST_FILE.read_text(encoding="utf-8"))
    assert cast["admin"] == ADMIN
    assert {BUILDER, SIGNER, DEPLOYER, OPERATOR, AUDITOR, *REVIEWERS} == set(cast["principals"])
    with open_ledger(home) as ledger:
        state = AccessState.replay(ledger)
        assert state.rejected == []
        assert {p.name for p in state.principals.values() if p.enabled} == {
            ADMIN,
            *cast["principals"],
        }
        events = [parse_entry(row.data) for row in ledger.entries(EntryFilter())]
    assert {e.actor for e in events} <= {ADMIN, *cast["principals"]}
    first: dict[str, str] = {}
    for event in events:
        first.setdefault(event.type, event.actor)
    assert first["image.approved"] in REVIEWERS and first["image.signed"] == SIGNER
    assert first["deployment.started"] == DEPLOYER and first["promotion.decided"] == DEPLOYER
    assert first["artifact.built"] == BUILDER and first["vulndb.imported"] == OPERATOR
    assert sum(e.signature is not None for e in events) > len(events) / 2


def test_demo_refuses_to_remove_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    result = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path)])
    assert result.exit_code == 2
    assert (tmp_path / "precious.txt").read_text() == "keep me"
