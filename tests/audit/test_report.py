"""Compliance reports over a real history whose every event time is known.

Seven weeks of one service in prod, through the real CLI (build, scan, check, test, sign,
approve, promote, vulndb import) and the deploy engine's event sequence (``fleet.py``), with the
ledger's clock set step by step so every figure can be asserted exactly:

* D0 (Mon 2026-10-05) v1 (acmeweb 1.0, acmeparse 3.1) is built clean and promoted; D1 deployed.
* D2 a drift finding on one v1 instance.
* D8 09:00 a critical advisory for acmeparse < 4.0 (A) is imported; v1 rescanned: critical.
* D15 09:00 a critical advisory for acmeweb < 2.0 (B) is imported; v1 rescanned.
* D17 v2 (acmeweb 2.0) is refused (one approval, A still there), overridden (break-glass) and
  deployed at 12:00: B fixed after 2 d 3 h; the drifted instance replaced after 15 d 2 h.
* D20 a chaos kill and the reconciler's heal.
* D45 (Thu 2026-11-19) v3 (acmeparse 4.0) promoted and deployed at 12:00: A fixed after
  37 d 3 h, a late patch. D46 a deployment of v3 fails and is undone.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from artifacts.conftest import git, isolate, make_repo
from audit.conftest import EXAMPLE, PROD_POLICY, audit, cli
from audit.fleet import RECONCILER, Fleet
from immutrail.artifacts.store import Store
from immutrail.audit.errors import AuditInputError
from immutrail.audit.reading import LedgerSource
from immutrail.audit.report import (
    CSV_COLUMNS,
    FRAMEWORKS,
    Finding,
    Report,
    build_report,
    render_csv,
    render_html,
    render_json,
)
from immutrail.audit.report.window import ACCESS_EVENTS, VULNDB_IMPORTED
from immutrail.ledger.event import format_time
from immutrail.ledger.home import init_ledger, open_ledger
from immutrail.scan.scanner import EVENT_VULNDB_IMPORTED
from scan.conftest import OSV

D0 = datetime(2026, 10, 5, tzinfo=UTC)
START = "2026-10-05T00:00:00Z"
END = "2026-11-22T23:59:59Z"
DEFINITION = """\
base: scratch
layers:
  - source: app
    destination: /opt/hello
  - source: rootfs
    destination: /
entrypoint: ["python3", "/opt/hello/server.py"]
user: "1000:1000"
workdir: /opt/hello
"""
CRITICAL = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
HOUR = 3600
DAY = 86_400


def at(day: int, hour: int) -> str:
    return format_time(D0 + timedelta(days=day, hours=hour))


class Clock:
    """The ledger's clock (``immutrail.ledger.event.now``), moved by hand."""

    def __init__(self) -> None:
        self.moment = at(0, 9)

    def set(self, day: int, hour: int) -> str:
        self.moment = at(day, hour)
        return self.moment

    def __call__(self) -> str:
        return self.moment


def advisory(folder: Path, vuln_id: str, package: str, fixed: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "schema_version": "1.6.0",
        "id": vuln_id,
        "modified": "2026-10-01T00:00:00Z",
        "published": "2026-10-01T00:00:00Z",
        "summary": f"remote code execution in {package}",
        "severity": [{"type": "CVSS_V3", "score": CRITICAL}],
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": package},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}
                ],
            }
        ],
    }
    path = folder / f"{vuln_id}.json"
    path.write_text(json.dumps(record))
    return path


def imported(home: Path, record: Path) -> int:
    return int(cli(home, "vulndb", "import", str(record))["ledger_index"])


def dist_info(name: str, version: str) -> dict[str, str]:
    path = f"rootfs/usr/lib/python3/dist-packages/{name}-{version}.dist-info/METADATA"
    return {path: f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"}


def image(home: Path, root: Path, version: str, web: str, parse: str) -> str:
    server = EXAMPLE.read_text().replace('VERSION = "1"', f'VERSION = "{version}"')
    files = {
        "image.yaml": DEFINITION,
        "app/server.py": server,
        **dist_info("acmeweb", web),
        **dist_info("acmeparse", parse),
    }
    repo = make_repo(root / f"v{version}", files)
    git(repo, "remote", "add", "origin", "https://git.example.org/shop/hello.git")
    digest = str(
        cli(home, "build", str(repo / "image.yaml"), "--tag", f"hello:{version}")["digest"]
    )
    cli(home, "scan", digest)
    cli(home, "check", digest)
    cli(home, "test", digest, "--name", "smoke", "--", "sh", "-c", 'test -d "$IMMUTRAIL_ROOTFS"')
    cli(home, "sign", digest, "--principal", "rel")
    return digest


@dataclass
class History:
    home: Path
    v1: str
    v2: str
    v3: str
    index: dict[str, int]
    """Ledger indexes of the events the assertions name."""
    drifted: str
    size: int


def make_history(root: Path, clock: Clock) -> History:
    home = root / "home"
    init_ledger(home)[0].close()
    index: dict[str, int] = {}
    for principal in ("ops", "rel", "alice", "bob"):
        cli(home, "keys", "generate", "--principal", principal, "--no-passphrase")
    cli(home, "vulndb", "import", str(OSV))
    policy = root / "prod.yaml"
    policy.write_text(PROD_POLICY)
    cli(home, "policy", "set", "prod", str(policy), "--principal", "ops")

    clock.set(0, 10)
    v1 = image(home, root, "1", "1.0", "3.1")
    for approver in ("alice", "bob"):
        cli(home, "approve", v1, "--env", "prod", "--principal", approver)
    index["promote-v1"] = int(cli(home, "promote", v1, "--to", "prod")["ledger_index"])

    with open_ledger(home) as ledger:
        fleet = Fleet(ledger, Store.for_home(home))
        clock.set(1, 9)
        fleet.declare("prod", "hello")
        v1_deploy = fleet.deploy("prod", "hello", "user:deployer")
        drifted = v1_deploy.created[0]
        clock.set(2, 10)
        index["drift"] = fleet.drift("prod", "hello", drifted, "/opt/hello/server.py")
        index["drift-check"] = fleet.checked("prod", 2, ["file-changed"])

    clock.set(8, 9)
    found = cli(
        home, "vulndb", "import", str(advisory(root / "a", "IMT-2026-0001", "acmeparse", "4.0"))
    )
    index["known-a"] = int(found["ledger_index"])
    clock.set(8, 10)
    index["scan-a"] = int(cli(home, "scan", v1)["ledger_index"])
    clock.set(15, 9)
    found = cli(
        home, "vulndb", "import", str(advisory(root / "b", "IMT-2026-0002", "acmeweb", "2.0"))
    )
    index["known-b"] = int(found["ledger_index"])
    clock.set(15, 10)
    index["scan-b"] = int(cli(home, "scan", v1)["ledger_index"])

    clock.set(17, 10)
    v2 = image(home, root, "2", "2.0", "3.1")
    cli(home, "approve", v2, "--env", "prod", "--principal", "alice")
    index["refused"] = int(cli(home, "promote", v2, "--to", "prod", code=1)["ledger_index"])
    override = cli(
        home, "promote", v2, "--to", "prod", "--override", "--reason", "INC-42 hotfix",
        "--principal", "ops",
    )  # fmt: skip
    index["override"] = int(override["ledger_index"])

    with open_ledger(home) as ledger:
        fleet.ledger = ledger
        clock.set(17, 12)
        v2_deploy = fleet.deploy("prod", "hello", "user:deployer-2")
        index["fix-b"] = v2_deploy.indices["deployment.completed"]
        index["remediated"] = fleet.remediated("prod", "hello", drifted, v2_deploy.created[0])
        clock.set(20, 3)
        fleet.chaos("prod", "hello", v2_deploy.created[1])
        fleet.heal("prod", "hello")

    clock.set(45, 10)
    v3 = image(home, root, "3", "2.0", "4.0")
    for approver in ("alice", "bob"):
        cli(home, "approve", v3, "--env", "prod", "--principal", approver)
    cli(home, "promote", v3, "--to", "prod")

    with open_ledger(home) as ledger:
        fleet.ledger = ledger
        clock.set(45, 12)
        index["fix-a"] = fleet.deploy("prod", "hello", "user:deployer").indices[
            "deployment.completed"
        ]
        clock.set(46, 10)
        fleet.deploy("prod", "hello", "user:deployer", fail="not healthy within 60 s")
        clock.set(60, 0)  # after the window: must not count
        fleet.deploy("prod", "hello", "user:deployer")
        size = ledger.checkpoint().size
    return History(home, v1, v2, v3, index, drifted, size)


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as patch:
        isolate(patch, root)
        clock = Clock()
        patch.setattr("immutrail.ledger.event.now", clock)
        yield make_history(root, clock)


def report_of(history: History, framework: str, env: str | None = "prod", **kw: Any) -> Report:
    with open_ledger(history.home) as ledger:
        source = LedgerSource(ledger, Store.for_home(history.home), history.size)
        return build_report(source, framework, START, END, env, **kw)


@pytest.fixture(scope="module")
def soc2(history: History) -> Report:
    return report_of(history, "soc2")


@pytest.fixture(scope="module")
def pci(history: History) -> Report:
    return report_of(history, "pci-dss-4")


# --- figures ------------------------------------------------------------------------------------


def test_time_to_patch_is_measured_from_the_import_to_the_fix_running_in_prod(
    soc2: Report, history: History
) -> None:
    ttp = soc2.metrics["time_to_patch"]
    assert ttp["environment"] == "prod"
    assert (ttp["fixed"], ttp["open"], ttp["late"]) == (2, 0, 1)
    rows = {r["id"]: r for r in ttp["vulnerabilities"]}
    a, b = rows["IMT-2026-0001"], rows["IMT-2026-0002"]
    assert a["known"] == at(8, 9) and a["fixed"] == at(45, 12)
    assert a["seconds"] == 37 * DAY + 3 * HOUR and a["late"] is True
    assert b["known"] == at(15, 9) and b["fixed"] == at(17, 12)
    assert b["seconds"] == 2 * DAY + 3 * HOUR and b["late"] is False
    assert a["packages"] == ["acmeparse@3.1"] and b["packages"] == ["acmeweb@1.0"]
    assert a["images"] == sorted([history.v1, history.v2]) and b["images"] == [history.v1]
    index = history.index
    assert (a["known_index"], a["first_scan_index"], a["fixed_index"]) == (
        index["known-a"],
        index["scan-a"],
        index["fix-a"],
    )
    assert (b["known_index"], b["first_scan_index"], b["fixed_index"]) == (
        index["known-b"],
        index["scan-b"],
        index["fix-b"],
    )
    assert ttp["median_seconds"] == (37 * DAY + 2 * DAY + 6 * HOUR) / 2
    assert ttp["p90_seconds"] == 2 * DAY + 3 * HOUR + 0.9 * (35 * DAY)
    assert ttp["unreadable_scans"] == []


def test_a_shorter_threshold_makes_both_patches_late(history: History) -> None:
    report = report_of(history, "pci-dss-4", patch_days=1)
    assert report.metrics["time_to_patch"]["late"] == 2
    assert [e.subject for e in report.exceptions if e.kind == "late-patch"] == [
        "IMT-2026-0001",
        "IMT-2026-0002",
    ]


def test_deployments_gate_drift_and_instance_ages(soc2: Report) -> None:
    m = soc2.metrics
    assert m["deployments"] == {
        "started": 5,
        "completed": 4,
        "failed": 1,
        "by_principal": {RECONCILER: 1, "user:deployer": 3, "user:deployer-2": 1},
        "per_week": [
            {"week": "2026-W41", "deployments": 1},
            {"week": "2026-W42", "deployments": 0},
            {"week": "2026-W43", "deployments": 2},
            {"week": "2026-W44", "deployments": 0},
            {"week": "2026-W45", "deployments": 0},
            {"week": "2026-W46", "deployments": 0},
            {"week": "2026-W47", "deployments": 2},
        ],
    }
    gate = m["gate"]
    assert (gate["decisions"], gate["allowed"], gate["refused"], gate["overrides"]) == (4, 2, 1, 1)
    assert gate["by_environment"] == {"prod": 4}
    assert gate["refusals_by_check"] == {"approvals": 1, "vulnerabilities": 1}
    drift = m["drift"]
    assert (drift["reports"], drift["findings"], drift["remediated"], drift["open"]) == (1, 1, 1, 0)
    assert drift["by_kind"] == {"file-changed": 1} and drift["by_severity"] == {"high": 1}
    assert drift["median_seconds_to_remediate"] == 15 * DAY + 2 * HOUR
    assert drift["max_seconds_to_remediate"] == 15 * DAY + 2 * HOUR
    ages = m["instance_age"]
    assert ages["at"] == END and ages["running"] == 2
    age = 3 * DAY + 11 * HOUR + 59 * 60 + 59
    assert [i["age_seconds"] for i in ages["instances"]] == [age, age]
    assert [b["instances"] for b in ages["buckets"]] == [0, 2, 0, 0, 0]
    assert ages["median_seconds"] == age and ages["oldest_seconds"] == age


def test_exceptions_name_the_override_the_refusal_the_drift_and_the_late_patch(
    soc2: Report, history: History
) -> None:
    index = history.index
    kinds = [(e.kind, e.index) for e in soc2.exceptions if e.kind != "unauthenticated"]
    assert kinds == [
        ("drift", index["drift"]),
        ("late-patch", index["known-a"]),
        ("refusal-overridden", index["refused"]),
        ("override", index["override"]),
    ]
    by_kind = {e.kind: e for e in soc2.exceptions}
    override = by_kind["override"]
    assert override.actor == "ops" and "INC-42 hotfix" in override.message
    assert [c.index for c in override.citations] == [index["refused"], index["override"]]
    assert override.controls == ("CC6.3", "CC6.8", "CC8.1")
    refused = by_kind["refusal-overridden"]
    assert [c.index for c in refused.citations] == [index["refused"], index["override"]]
    drift = by_kind["drift"]
    assert drift.subject == history.drifted and "/opt/hello/server.py" in drift.message
    assert [c.index for c in drift.citations] == [index["drift"], index["remediated"]]
    late = by_kind["late-patch"]
    assert late.subject == "IMT-2026-0001" and "37.1 days" in late.message
    assert [c.index for c in late.citations] == [index["known-a"], index["scan-a"], index["fix-a"]]


def test_unauthenticated_actors_are_exceptions_and_signed_events_are_not(soc2: Report) -> None:
    actors = {e.actor: e.message for e in soc2.exceptions if e.kind == "unauthenticated"}
    # Builds, scans, deployments and the reconciler act under claimed names; signatures,
    # approvals, the policy change and the break-glass override are signed by their actors'
    # announced keys (the artifact.attached events carrying their statements are not).
    assert set(actors) == {
        "user:test", "user:deployer", "user:deployer-2", RECONCILER, "sre", "ops", "rel",
        "alice", "bob",
    }  # fmt: skip
    assert actors["alice"].endswith(": artifact.attached 3")
    assert actors["ops"].endswith(": service.declared 1")
    assert "promotion.decided 3" in actors["user:test"]  # the allowed ones and the refusal
    assert "image.signed" not in " ".join(actors.values())
    assert "image.approved" not in " ".join(actors.values())
    events = soc2.metrics["events"]
    assert (events["in_window"], events["authenticated"]) == (95, 10)


def test_control_statuses(history: History, soc2: Report, pci: Report) -> None:
    status = {c.id: c.status for c in soc2.controls}
    assert status == dict.fromkeys(
        ("CC6.1", "CC6.2", "CC6.3", "CC6.8", "CC7.1", "CC7.2", "CC8.1"), "partial"
    )
    cc62 = next(c for c in soc2.controls if c.id == "CC6.2")
    assert cc62.missing == ("access_changes",) and cc62.exceptions == ()
    cc81 = next(c for c in soc2.controls if c.id == "CC8.1")
    assert cc81.missing == () and dict(cc81.exceptions) == {"override": 1, "refusal-overridden": 1}
    assert {e.kind: e.count for e in cc81.required} == {
        "builds": 3,
        "tests": 3,
        "approvals": 5,
        "gate_decisions": 4,
        "deployments": 5,
    }
    status = {c.id: c.status for c in pci.controls}
    assert status == {
        "6.3.1": "satisfied",
        "6.3.2": "satisfied",
        "6.3.3": "partial",
        "6.4.1": "no evidence",
        "6.4.2": "no evidence",
        "6.5.1": "partial",
        "6.5.2": "satisfied",
        "6.5.3": "satisfied",
        "6.5.4": "partial",
        "6.5.5": "no evidence",
        "6.5.6": "no evidence",
        "10.2.1": "satisfied",
        "10.2.2": "partial",
        "10.3.2": "satisfied",
        "10.3.4": "satisfied",
        "11.5.2": "satisfied",
    }
    # change detection is shown by the checks that ran, clean or not, not by findings alone
    (fim,) = [c for c in pci.controls if c.id == "11.5.2"]
    assert [(e.kind, e.count, [c.index for c in e.citations]) for e in fim.required] == [
        ("drift_checks", 1, [history.index["drift-check"]])
    ]
    assert pci.status_counts() == {"satisfied": 8, "partial": 4, "no evidence": 4}


def test_evidence_cites_representative_events(soc2: Report, history: History) -> None:
    cc81 = next(c for c in soc2.controls if c.id == "CC8.1")
    gate = next(e for e in cc81.required if e.kind == "gate_decisions")
    cited = [c.index for c in gate.citations]
    assert history.index["promote-v1"] == cited[0] and history.index["refused"] in cited
    with open_ledger(history.home) as ledger:
        for citation in gate.citations:
            row = ledger.entry(citation.index)
            assert (row.type, row.id) == ("promotion.decided", citation.id)
    events = next(e for c in soc2.controls for e in c.required if e.kind == "events_recorded")
    assert len(events.citations) == 5 and events.count > 5  # first three and last two


def test_the_basis_is_the_signed_checkpoint(soc2: Report, history: History) -> None:
    with open_ledger(history.home) as ledger:
        stored = next(c for c in ledger.checkpoints() if c.size == history.size)
        origin = ledger.origin
    assert soc2.basis.origin == origin and soc2.basis.tree_size == history.size
    assert soc2.basis.signed and soc2.basis.checkpoint == stored.note
    assert soc2.basis.root_hash in stored.note


def test_every_framework_reports_and_environments_narrow(history: History) -> None:
    for framework in FRAMEWORKS:
        report = report_of(history, framework, None)
        assert report.controls and report.environment is None
        assert report.patch_environment == "prod"
        render_html(report)
    staging = report_of(history, "soc2", "staging")
    assert staging.metrics["deployments"]["started"] == 0
    assert staging.metrics["time_to_patch"]["vulnerabilities"] == []


def test_many_instances_are_read_in_bulk_with_the_same_result(
    history: History, soc2: Report, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("immutrail.audit.report.window._PER_INSTANCE", 0)
    assert render_json(report_of(history, "soc2")) == render_json(soc2)
    everywhere = report_of(history, "soc2", None)
    assert everywhere.metrics["instance_age"]["running"] == 2


# --- formats --------------------------------------------------------------------------------------


class Page(HTMLParser):
    """What the tests look at in the HTML: sections, charts and their bars, forbidden tags."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: list[str] = []
        self.svgs: list[str] = []
        self.bars: dict[str, int] = {}
        self.tags: set[str] = set()
        self.urls: list[str] = []
        self._figure = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.add(tag)
        self.urls += [
            v or "" for k, v in attrs if k in ("src", "href") and not (v or "#").startswith("#")
        ]
        if tag == "section":
            self.sections.append(found.get("id") or "")
        elif tag == "figure":
            self._figure = (found.get("id") or "").removeprefix("chart-")
        elif tag == "svg":
            self.svgs.append(self._figure)
            self.bars[self._figure] = 0
        elif tag == "rect" and found.get("class") == "bar":
            self.bars[self._figure] += 1


def test_html_is_one_printable_file_with_its_charts(soc2: Report) -> None:
    html = render_html(soc2)
    page = Page()
    page.feed(html)
    assert page.sections == ["summary", "controls", "exceptions", "metrics", "charts", "basis"]
    assert page.svgs == ["deployments-per-week", "instance-age", "exposure-window"]
    assert page.bars == {"deployments-per-week": 7, "instance-age": 5, "exposure-window": 2}
    assert not page.tags & {"script", "link", "img", "iframe", "object"}
    assert page.urls == []
    assert "@media print" in html and "break-before: page" in html
    assert "@import" not in html and "url(" not in html
    assert "IMT-2026-0001" in html and "INC-42 hotfix" in html
    assert soc2.basis.root_hash in html and render_json(soc2)["report_digest"] in html


def test_html_escapes_what_the_ledger_says(history: History) -> None:
    report = report_of(history, "soc2")
    evil = '<script>alert("x")</script>'
    forged = Finding("drift", 1, END, evil, evil, "prod", evil, (), ("CC7.2",))
    html = render_html(Report(**{**report.__dict__, "exceptions": (forged,)}))
    assert evil not in html and "&lt;script&gt;" in html


def test_csv_has_one_row_per_control_then_the_exceptions(soc2: Report) -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(soc2))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert rows[0]["kind"] == "source" and f"tree_size={soc2.basis.tree_size}" in rows[0]["detail"]
    controls = [r for r in rows if r["kind"] == "control"]
    assert [r["control"] for r in controls] == [c.id for c in soc2.controls]
    cc81 = next(r for r in controls if r["control"] == "CC8.1")
    assert cc81["status"] == "partial" and "gate_decisions=4" in cc81["evidence"]
    assert cc81["exceptions"] == "override=1; refusal-overridden=1"
    exceptions = [r for r in rows if r["kind"] == "exception"]
    assert len(exceptions) == len(soc2.exceptions)
    override = next(r for r in exceptions if r["exceptions"] == "override")
    assert override["control"] == "CC6.3 CC6.8 CC8.1" and override["actor"] == "ops"


def test_json_is_the_whole_report(soc2: Report) -> None:
    data = render_json(soc2)
    assert data["format"] == "immutrail-compliance-report/v1"
    assert data["window"] == {"from": START, "to": END} and data["environment"] == "prod"
    assert data["summary"]["controls"] == soc2.status_counts()
    assert data["metrics"]["time_to_patch"]["fixed"] == 2
    assert json.loads(json.dumps(data)) == data


def test_same_ledger_and_window_give_the_same_bytes(history: History, soc2: Report) -> None:
    again = report_of(history, "soc2")
    assert render_html(again) == render_html(soc2)
    assert render_csv(again) == render_csv(soc2)
    assert render_json(again) == render_json(soc2)


# --- bad input and the command ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("framework", "start", "end", "env", "message"),
    [
        ("iso27001", START, END, "prod", "unknown framework"),
        ("soc2", END, START, "prod", "is after"),
        ("soc2", "yesterday", END, "prod", "--from"),
        ("soc2", START, "2026-13-01T00:00:00Z", "prod", "--to"),
        ("soc2", START, END, "Prod!", "--env"),
    ],
)
def test_bad_input_is_refused(
    history: History, framework: str, start: str, end: str, env: str, message: str
) -> None:
    with open_ledger(history.home) as ledger, pytest.raises(AuditInputError, match=message):
        build_report(LedgerSource(ledger, None, history.size), framework, start, end, env)


def test_the_command_writes_each_format_and_refuses_bad_input(
    history: History, tmp_path: Path
) -> None:
    home = history.home
    common = ["--framework", "pci-dss-4", "--from", START, "--to", END, "--env", "prod"]
    out = audit(home, "report", *common, "-o", str(tmp_path / "r.html"))
    assert out["output_format"] == "html" and out["basis"]["tree_size"] >= history.size
    assert out["controls"]["no evidence"] == 4 and out["exceptions"]["late-patch"] == 1
    first = (tmp_path / "r.html").read_bytes()
    audit(home, "report", *common, "-o", str(tmp_path / "r.html"), "--overwrite")
    assert (tmp_path / "r.html").read_bytes() == first
    audit(home, "report", *common, "-o", str(tmp_path / "r.json"))
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["report_digest"] == out["report_digest"]
    audit(home, "report", *common, "-o", str(tmp_path / "r.txt"), "--output-format", "csv")
    assert (tmp_path / "r.txt").read_text().startswith(",".join(CSV_COLUMNS))
    text = audit(home, "report", *common, "-o", str(tmp_path / "t.csv"), fmt="text")
    assert "controls: 8 satisfied, 4 partial, 4 no evidence" in text

    audit(home, "report", *common, "-o", str(tmp_path / "r.html"), code=2)  # exists
    audit(home, "report", *common, "-o", str(tmp_path / "r.pdf"), code=2)  # unknown format
    bad = ["--framework", "soc3", "--from", START, "--to", END]
    audit(home, "report", *bad, "-o", str(tmp_path / "x.html"), code=2)
    backwards = ["--framework", "soc2", "--from", END, "--to", START]
    audit(home, "report", *backwards, "-o", str(tmp_path / "x.html"), code=2)
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "r.pdf").exists()


def test_event_types_are_the_writers_own() -> None:
    from immutrail.access import registry

    assert VULNDB_IMPORTED == EVENT_VULNDB_IMPORTED
    written = {value for name, value in vars(registry).items() if name.startswith("EVENT_")}
    assert set(ACCESS_EVENTS) <= written
