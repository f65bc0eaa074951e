"""`audit at`, `audit trace` and `audit changes` on a real ledger (see conftest.World)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from immutrail.artifacts.store import Store
from immutrail.audit.errors import AuditInputError
from immutrail.audit.queries import Query, at_query, changes_query, run_query, trace_query
from immutrail.audit.reading import LedgerSource
from immutrail.audit.source import ListSource
from immutrail.ledger.event import time_us as us
from immutrail.ledger.home import open_ledger

from .conftest import World, audit


def by_instance(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["instance"]: row for row in answer["instances"]}


def test_before_any_deployment_nothing_ran(world: World) -> None:
    answer = audit(world.home, "at", world.before_any, "--env", "prod")
    assert answer["instances"] == [] and answer["at"] == world.before_any
    assert "0 instance(s) running" in audit(
        world.home, "at", world.before_any, "--env", "prod", fmt="text"
    )


def test_between_deployments_v1_runs_with_its_evidence(world: World) -> None:
    answer = audit(world.home, "at", world.between, "--env", "prod")
    rows = by_instance(answer)
    assert set(rows) == set(world.v1_deploy.created)
    row = rows[world.drifted]
    assert row["digest"] == world.v1 and row["service"] == "hello"
    image = row["image"]
    assert image["build"]["actor"] == "user:test" and image["build"]["branch"] == "main"
    assert len(image["build"]["commit"]) == 40
    assert image["build"]["repository"] == "https://git.example.org/shop/hello"
    assert [p["attached_index"] is not None for p in image["provenance"]] == [True]
    assert image["scan"]["counts"]["critical"] == 0 and image["scan"]["attestation"]["artifact"]
    assert image["baseline"]["passed"] is True
    assert [(t["name"], t["result"]) for t in image["tests"]] == [("smoke", "PASSED")]
    assert [s["signer"] for s in image["signatures"]] == ["rel"]
    assert sorted(a["approver"] for a in image["approvals"]) == ["alice", "bob"]
    assert all(us(a["time"]) < us(row["created"]["time"]) for a in image["approvals"])
    promotion = image["promotion"]
    assert promotion["index"] == world.v1_promotion
    assert promotion["allowed"] and not promotion["override"] and promotion["failed_checks"] == []
    deployment = row["deployment"]
    assert deployment["actor"] == "user:deployer" and deployment["index"] == world.v1_deploy.started
    assert deployment["end"]["type"] == "deployment.completed"
    # destroyed later, by the v2 deployment, which the answer says with its reason
    [ended] = row["ended"]
    assert ended["type"] == "instance.destroyed" and us(ended["time"]) > us(world.between)
    assert ended["index"] == world.v2_deploy.indices[f"instance.destroyed:{world.drifted}"]
    # the drift finding is open at that moment, on that instance only
    [drift] = row["drift"]
    assert drift["findings"][0]["path"] == "/opt/hello/server.py"
    other = next(r for i, r in rows.items() if i != world.drifted)
    assert other["drift"] == []


def test_after_the_override_v2_runs_and_the_bypass_shows(world: World) -> None:
    rows = by_instance(audit(world.home, "at", world.after, "--env", "prod"))
    survivor = world.v2_deploy.created[0]
    assert set(rows) == {survivor, *world.heal.created}
    assert world.killed not in rows and world.drifted not in rows
    promotion = rows[survivor]["image"]["promotion"]
    assert promotion["override"] and promotion["override_reason"] == "INC-42 hotfix"
    assert promotion["actor"] == "ops" and promotion["signed"] is True
    assert "approvals" in promotion["failed_checks"]
    assert [a["approver"] for a in rows[survivor]["image"]["approvals"]] == ["alice"]
    assert rows[survivor]["deployment"]["actor"] == "user:deployer-2"
    [healed] = world.heal.created
    assert rows[healed]["deployment"]["actor"] == "immutrail:reconciler"
    assert rows[survivor]["ended"] == [] and rows[survivor]["drift"] == []


def test_at_the_exact_moment_of_creation_counts_as_running(world: World) -> None:
    created = audit(world.home, "trace", world.drifted)["instances"][0]["created"]
    rows = by_instance(audit(world.home, "at", created["time"], "--env", "prod"))
    assert world.drifted in rows


def test_trace_of_a_digest_runs_from_commit_to_destruction(world: World) -> None:
    answer = audit(world.home, "trace", world.v1)
    assert answer["digest"] == world.v1
    types = [item["type"] for item in answer["timeline"]]
    assert types[0] == "artifact.built"
    for expected in (
        "scan.completed",
        "baseline.checked",
        "image.tested",
        "image.signed",
        "image.approved",
        "promotion.decided",
        "deployment.started",
        "instance.created",
        "traffic.switched",
        "drift.detected",
        "instance.destroyed",
        "drift.remediated",
    ):
        assert expected in types, expected
    indices = [item["index"] for item in answer["timeline"]]
    assert indices == sorted(indices)
    assert {row["instance"] for row in answer["instances"]} == set(world.v1_deploy.created)
    assert all(row["ended"] for row in answer["instances"])
    assert [d["actor"] for d in answer["deployments"]] == ["user:deployer"]
    traffic = by_instance(answer)[world.drifted]["traffic"]
    assert traffic["in_service"]["index"] < traffic["out_of_service"]["index"]
    text = audit(world.home, "trace", world.v1, fmt="text")
    assert "artifact.built" in text and "instance.destroyed" in text


def test_trace_of_an_instance(world: World) -> None:
    answer = audit(world.home, "trace", world.drifted)
    assert answer["digest"] == world.v1
    [row] = answer["instances"]
    assert [d["type"] for d in row["drift"]] == ["drift.detected", "drift.remediated"]
    assert row["drift"][1]["replaced_by"] == world.v2_deploy.created[0]
    assert [p["index"] for p in answer["promotions"]] == [world.v1_promotion]
    assert row["ended"][0]["type"] == "instance.destroyed"
    killed = audit(world.home, "trace", world.killed)["instances"][0]["ended"]
    assert [e["type"] for e in killed] == ["chaos.terminated"]


def test_changes_list_refusals_overrides_and_failures(world: World) -> None:
    answer = audit(
        world.home, "changes", "--env", "prod", "--from", world.before_any, "--to", world.end
    )
    rows = answer["changes"]
    categories = {row["category"] for row in rows}
    assert {
        "promotion-refused",
        "override",
        "deployment",
        "deployment-failed",
        "instance",
        "incident",
        "traffic",
        "drift",
        "approval",
    } <= categories
    refused = next(r for r in rows if r["category"] == "promotion-refused")
    assert refused["index"] == world.refused_index and refused["subject"] == world.v2
    assert "approvals" in refused["details"]["failed_checks"]
    override = next(r for r in rows if r["category"] == "override")
    assert override["index"] == world.override_index and override["signed"] is True
    assert override["details"]["override_reason"] == "INC-42 hotfix"
    assert all(us(world.before_any) <= us(r["time"]) <= us(world.end) for r in rows)
    assert [r["index"] for r in rows] == sorted(r["index"] for r in rows)
    assert answer["counts"]["override"] == 1
    # v1's promotion happened before the window; widen it and it is there, as is the policy
    wide = audit(
        world.home, "changes", "--env", "prod", "--from", "2000-01-01T00:00:00Z", "--to", world.end
    )
    assert {"promotion", "policy"} <= {r["category"] for r in wide["changes"]}
    assert all(r["details"] is not None for r in wide["changes"])
    text = audit(
        world.home,
        "changes",
        "--env",
        "prod",
        "--from",
        world.before_any,
        "--to",
        world.end,
        fmt="text",
    )
    assert "override" in text and "promotion-refused" in text


def test_an_answer_from_its_cited_events_alone_is_the_same(world: World) -> None:
    """The property bundles rest on: the cited events suffice to re-derive the answer."""
    queries: list[Query] = [
        at_query(world.between, "prod"),
        at_query(world.after, "prod"),
        trace_query(world.v1),
        trace_query(world.drifted),
        changes_query("prod", world.before_any, world.end),
    ]
    with open_ledger(world.home) as ledger:
        source = LedgerSource(ledger, Store.for_home(world.home))
        for query in queries:
            full = run_query(query, source)
            manifests = {}
            for index in full.attested:
                item = source.at_index(index)
                assert item is not None
                artifact = str(item.payload["artifact"])
                manifests[artifact] = Store.for_home(world.home).read_blob(artifact)
            cited = [e for i in full.cited if (e := source.at_index(i)) is not None]
            again = run_query(query, ListSource(cited, source.size, manifests))
            assert again.data == full.data, query
            assert again.cited == full.cited and again.attested == full.attested


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["at", "yesterday", "--env", "prod"], "not an RFC 3339 time"),
        (["at", "2026-01-01T00:00:00Z", "--env", "Prod!"], "not an environment name"),
        (["trace", "sha256:abc"], "not a digest"),
        (["trace", "sha256:" + "0" * 64], "no event about"),
        (["trace", "local-doesnotexist"], "no instance.created"),
        (
            [
                "changes",
                "--env",
                "prod",
                "--from",
                "2026-01-02T00:00:00Z",
                "--to",
                "2026-01-01T00:00:00Z",
            ],
            "is after --to",
        ),
    ],
)
def test_bad_queries_exit_2(world: World, args: list[str], message: str) -> None:
    out = audit(world.home, *args, code=2, fmt="text")
    assert message in out


def test_query_input_is_normalized() -> None:
    query = at_query("2026-03-14T10:00:00+01:00", "prod")
    assert query.at == "2026-03-14T09:00:00Z"
    with pytest.raises(AuditInputError, match="environment"):
        changes_query("PROD", "2026-03-14T10:00:00Z", "2026-03-14T11:00:00Z")


def test_queries_need_an_initialized_home(tmp_path: Path) -> None:
    out = audit(
        tmp_path / "nothing", "at", "2026-01-01T00:00:00Z", "--env", "prod", code=3, fmt="text"
    )
    assert "holds no ledger" in out or "immutrail init" in out
