"""One realistic history, built once per test module through the real CLI.

Two images of the example service are built, scanned, checked against the baseline, tested,
signed and approved; v1 passes the prod gate, v2 is refused (one approval of two) and then
promoted by a signed break-glass override. Deployments, a drift report, a chaos kill, a reconciler
heal and a failed rollout are appended as the deploy engine records them (``fleet.py``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from artifacts.conftest import git, isolate, make_repo
from audit.fleet import Deployment, Fleet
from immutrail.artifacts.store import Store
from immutrail.cli.audit import audit_app
from immutrail.cli.main import app
from immutrail.ledger.event import now
from immutrail.ledger.home import init_ledger, open_ledger
from scan.conftest import OSV

EXAMPLE = Path(__file__).parent.parent.parent / "examples" / "hello" / "app" / "server.py"
DEFINITION = """\
base: scratch
layers:
  - source: app
    destination: /opt/hello
env: {GREETING: hi, PORT: "8080"}
entrypoint: ["python3", "/opt/hello/server.py"]
user: "1000:1000"
workdir: /opt/hello
"""
PROD_POLICY = """\
provenance: {required: true, branches: [main]}
vulnerabilities: {require_scan: true, block: [critical]}
baseline: {required: true}
tests: {required: true}
signature: {required: true}
approvals: {count: 2}
break_glass: [ops]
"""

runner = CliRunner()


def cli(home: Path, *args: str, code: int = 0) -> dict[str, Any]:
    """Run an `immutrail` command in-process with --home and --format json; its JSON output."""
    words = list(args)
    at = words.index("--") if "--" in words else len(words)
    result = runner.invoke(app, [*words[:at], "--home", str(home), "--format", "json", *words[at:]])
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    data: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {}
    return data


def audit(home: Path | None, *args: str, code: int = 0, fmt: str = "json") -> Any:
    """Run an `immutrail audit` command in-process; its JSON output (or text, for fmt=text)."""
    options = ["--format", fmt] + (["--home", str(home)] if home is not None else [])
    result = runner.invoke(audit_app, [*args, *options])
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    if fmt != "json":
        return result.stdout + result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else {}


def pause() -> str:
    """A moment strictly between the events before and after it (times are in microseconds)."""
    time.sleep(0.003)
    moment = now()
    time.sleep(0.003)
    return moment


@dataclass
class World:
    home: Path
    vkey: str
    v1: str
    v2: str
    before_any: str
    """Before the first deployment."""
    between: str
    """v1 runs (two instances), one with an open drift finding; v2 refused, then overridden."""
    after: str
    """v2 runs: one survivor of the chaos kill and the reconciler's replacement."""
    end: str
    v1_deploy: Deployment
    v2_deploy: Deployment
    heal: Deployment
    failed: Deployment
    killed: str
    drifted: str
    refused_index: int
    override_index: int
    v1_promotion: int
    extra: dict[str, Any] = field(default_factory=dict)


def build(home: Path, root: Path, version: str) -> str:
    server = EXAMPLE.read_text().replace('VERSION = "1"', f'VERSION = "{version}"')
    repo = make_repo(root, {"image.yaml": DEFINITION, "app/server.py": server})
    git(repo, "remote", "add", "origin", "https://git.example.org/shop/hello.git")
    digest = str(
        cli(home, "build", str(repo / "image.yaml"), "--tag", f"hello:{version}")["digest"]
    )
    cli(home, "scan", digest)
    cli(home, "check", digest)
    cli(home, "test", digest, "--name", "smoke", "--", "sh", "-c", 'test -d "$IMMUTRAIL_ROOTFS"')
    cli(home, "sign", digest, "--principal", "rel")
    return digest


def make_world(root: Path) -> World:
    home = root / "home"
    ledger, _ = init_ledger(home)
    vkey = ledger.vkey
    ledger.close()
    for principal in ("ops", "rel", "alice", "bob"):
        cli(home, "keys", "generate", "--principal", principal, "--no-passphrase")
    cli(home, "vulndb", "import", str(OSV))
    policy = root / "prod.yaml"
    policy.write_text(PROD_POLICY)
    cli(home, "policy", "set", "prod", str(policy), "--principal", "ops")

    v1 = build(home, root / "v1", "1")
    for approver in ("alice", "bob"):
        cli(home, "approve", v1, "--env", "prod", "--principal", approver)
    v1_promotion = int(cli(home, "promote", v1, "--to", "prod")["ledger_index"])

    with open_ledger(home) as ledger:
        fleet = Fleet(ledger, Store.for_home(home))
        fleet.declare("prod", "hello")
        before_any = pause()
        v1_deploy = fleet.deploy("prod", "hello", "user:deployer")
        drifted = v1_deploy.created[0]
        fleet.drift("prod", "hello", drifted, "/opt/hello/server.py")
        between = pause()

    v2 = build(home, root / "v2", "2")
    cli(home, "approve", v2, "--env", "prod", "--principal", "alice")
    refused = cli(home, "promote", v2, "--to", "prod", code=1)
    override = cli(
        home,
        "promote",
        v2,
        "--to",
        "prod",
        "--override",
        "--reason",
        "INC-42 hotfix",
        "--principal",
        "ops",
    )
    assert override["override"] is True

    with open_ledger(home) as ledger:
        fleet.ledger = ledger
        v2_deploy = fleet.deploy("prod", "hello", "user:deployer-2")
        fleet.remediated("prod", "hello", drifted, v2_deploy.created[0])
        killed = v2_deploy.created[1]
        fleet.chaos("prod", "hello", killed)
        heal = fleet.heal("prod", "hello")
        after = pause()
        failed = fleet.deploy("prod", "hello", "user:deployer-2", fail="not healthy within 60 s")
        end = pause()
    return World(
        home=home,
        vkey=vkey,
        v1=v1,
        v2=v2,
        before_any=before_any,
        between=between,
        after=after,
        end=end,
        v1_deploy=v1_deploy,
        v2_deploy=v2_deploy,
        heal=heal,
        failed=failed,
        killed=killed,
        drifted=drifted,
        refused_index=int(refused["ledger_index"]),
        override_index=int(override["ledger_index"]),
        v1_promotion=v1_promotion,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("world")
    with pytest.MonkeyPatch.context() as patch:
        isolate(patch, root)
        yield make_world(root)
