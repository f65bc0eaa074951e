"""The story `immutrail demo` tells, on the embedded defaults (SQLite ledger, local store, `local`).

0. access control is on from the start (`init --admin`): the admin creates the cast of
   examples/demo/principals.yaml, each with a role and a key, and every later command runs as
   the principal whose job it is, so the ledger records who authenticated;
1. a builder builds v1 of the hello service (provenance and SBOM recorded);
2. the scan finds a known vulnerability in a dependency and the prod gate refuses v1, saying why;
3. the dependency is bumped in git; v2 is built, scanned clean, checked, tested, approved by two
   reviewers who did not write it, signed, and promoted;
4. v2 is deployed blue/green to prod, then re-deployed with a new setting under steady load;
5. a file is written into a running instance: drift check finds it, remediation replaces it;
6. chaos kills an instance; the reconciler replaces it;
7. the auditor asks what ran in prod at a moment T taken between steps 4 and 5 (v2, approved by
   both reviewers), writes the evidence bundle for that answer, verifies it offline, and writes
   the SOC 2 report of the whole story;
8. a copy of the ledger is tampered with and verification catches it.

Every step runs the same commands a user runs (``invoke``, given by the CLI layer, so this module
never imports the CLI) and returns facts, not prose, so a test checks outcomes, not wording.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from .artifacts.store import Store
from .deploy.endpoint import Endpoint, list_endpoints
from .deploy.local import LocalRuntime
from .ledger.event import format_time
from .ledger.home import DB_FILE, open_ledger

MARKER = ".immutrail-demo"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CAST_FILE = EXAMPLES / "demo" / "principals.yaml"
ADMIN, AUTHOR = "admin", "dev"
BUILDER, REVIEWERS, SIGNER, DEPLOYER, OPERATOR, AUDITOR = (
    "ci",
    ("alice", "bob"),
    "release",
    "dana",
    "ops",
    "audra",
)
VULNERABILITY = "GHSA-x84v-xcm2-53pg"

Narrator = Callable[[str, str], None]
"""Called with (step title, detail) as the story goes."""

Invoke = Callable[[list[str], str | None], tuple[int, dict[str, Any]]]
"""Runs one `immutrail` command line in-process with ``--format json``, authenticated as the
principal given (None: nobody): (exit code, output)."""


class DemoError(RuntimeError):
    """A step of the story did not turn out as the story needs (an operational failure)."""


@dataclass
class DemoResult:
    directory: Path
    home: Path
    repository: Path
    steps: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        s = self.steps
        try:
            return bool(
                s["build"]["provenance"]
                and s["build"]["sbom"]
                and s["refusal"]["refused"]
                and s["refusal"]["vulnerability_named"]
                and s["release"]["promoted"]
                and s["deploy"]["failed_requests"] == 0
                and s["deploy"]["old_instances_gone"]
                and s["drift"]["remediated"]
                and s["chaos"]["replaced"]
                and s["auditor"]["v2_named"]
                and s["auditor"]["approvers_named"]
                and s["auditor"]["evidence_verified"]
                and s["auditor"]["report_change_management"] == "satisfied"
                and s["tamper"]["caught"]
            )
        except KeyError:
            return False


def prepare(directory: Path) -> None:
    """Start clean: stop what a previous run left running, remove its folder (only one we made)."""
    if directory.exists():
        if not (directory / MARKER).exists():
            raise FileExistsError(f"{directory} exists and was not made by `immutrail demo`")
        if (directory / "home").exists():
            stop_everything(directory / "home")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    (directory / MARKER).write_text("made by immutrail demo; removed by the next run\n")


def stop_everything(home: Path | str) -> list[str]:
    """Destroy every instance through the runtime and stop every endpoint of the demo's home."""
    home = Path(home)
    runtime = LocalRuntime(home, Store.for_home(home, create=True))
    destroyed = []
    for instance in runtime.list():
        runtime.destroy(instance.id)
        destroyed.append(instance.id)
    for info in list_endpoints(home):
        Endpoint(home, info.environment, info.service).stop()
    return destroyed


def run(directory: Path, invoke: Invoke, say: Narrator, *, keep: bool = False) -> DemoResult:
    started = time.monotonic()
    prepare(directory)
    home = directory / "home"
    result = DemoResult(directory, home, directory / "hello-repo")
    story = _Story(directory, home, result.repository, invoke, say)
    try:
        result.steps["build"] = story.build_v1()
        result.steps["refusal"] = story.refuse_v1()
        result.steps["release"] = story.release_v2()
        result.steps["deploy"] = story.deploy()
        moment = story.remember_now()
        result.steps["drift"] = story.drift()
        result.steps["chaos"] = story.chaos()
        result.steps["auditor"] = story.audit(moment)
        result.steps["tamper"] = story.tamper()
    finally:
        if not keep and home.exists():
            stop_everything(home)
    result.seconds = time.monotonic() - started
    return result


class _Story:
    def __init__(
        self, directory: Path, home: Path, repo: Path, invoke: Invoke, say: Narrator
    ) -> None:
        self.directory, self.home, self.repo, self.say = directory, home, repo, say
        self._invoke = invoke
        self.port = _free_port()
        self.began = format_time(datetime.now(UTC))
        self.v1 = self.v2 = ""

    def cli(
        self, *words: str, by: str | None, codes: tuple[int, ...] = (0,), offline: bool = False
    ) -> dict[str, Any]:
        """Run a command as principal ``by`` (None: the bootstrap), in the demo's home (not when
        ``offline``: a check that needs no home)."""
        args = list(words)
        at = args.index("--") if "--" in args else len(args)  # options go before a test command
        home = [] if offline else ["--home", str(self.home)]
        code, out = self._invoke([*args[:at], *home, *args[at:]], by)
        if code not in codes:
            who = f" as {by}" if by else ""
            raise DemoError(f"`immutrail {' '.join(words)}`{who} exited {code}: {out}")
        return out

    def cast(self) -> list[str]:
        """Access control at creation; the admin creates every principal and its key."""
        self.cli("init", "--admin", ADMIN, "--no-passphrase", by=None)
        cast = yaml.safe_load(CAST_FILE.read_text(encoding="utf-8"))
        names = []
        for name, spec in cast["principals"].items():
            where = (
                ["--env", "prod"] if spec["role"] in ("reviewer", "deployer", "operator") else []
            )
            kind = ["--kind", spec["kind"]] if "kind" in spec else []
            self.cli("principal", "create", name, "--role", spec["role"], *where, *kind, by=ADMIN)
            self.cli("keys", "generate", "--principal", name, "--no-passphrase", by=ADMIN)
            names.append(f"{name} ({spec['role']})")
        self.say(
            "0. Access control is on from the start",
            f"{ADMIN} bootstrapped at init; created {', '.join(names)}, each with a key",
        )
        return names

    def remember_now(self) -> str:
        """A moment strictly between the events before and after it (they carry microseconds)."""
        time.sleep(0.01)
        moment = format_time(datetime.now(UTC))
        time.sleep(0.01)
        return moment

    def git(self, *args: str) -> str:
        env = {
            **os.environ,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": AUTHOR,
            "GIT_AUTHOR_EMAIL": f"{AUTHOR}@example.org",
            "GIT_COMMITTER_NAME": AUTHOR,
            "GIT_COMMITTER_EMAIL": f"{AUTHOR}@example.org",
        }
        done = subprocess.run(  # noqa: S603 - fixed git command lines on the demo's own folder
            ["git", *args],  # noqa: S607
            cwd=self.repo,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    # --- 1 ----------------------------------------------------------------------------------

    def build_v1(self) -> dict[str, Any]:
        self.cast()
        osv = sorted((EXAMPLES / "demo" / "osv").glob("*.json"))
        self.cli("vulndb", "import", *map(str, osv), by=OPERATOR)
        shutil.copytree(EXAMPLES / "hello" / "app", self.repo / "app")
        shutil.copy(EXAMPLES / "demo" / "image.yaml", self.repo / "image.yaml")
        _write_dist_info(self.repo, "requests", "2.19.0")
        self.git("init", "-q", "-b", "main")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "hello v1")
        built = self.cli("build", str(self.repo / "image.yaml"), "--tag", "hello:1", by=BUILDER)
        self.v1 = built["digest"]
        self.say(
            "1. A builder builds v1 of the hello service",
            f"{self.v1} from commit {self.git('rev-parse', 'HEAD')} by {BUILDER}; "
            "provenance and SBOM recorded",
        )
        return {
            "digest": self.v1,
            "provenance": str(built.get("provenance", "")).startswith("sha256:"),
            "sbom": str(built.get("sbom", "")).startswith("sha256:"),
            "ledger_index": built.get("ledger_index"),
        }

    # --- 2 ----------------------------------------------------------------------------------

    def refuse_v1(self) -> dict[str, Any]:
        self._vet(self.v1)
        decision = self.cli("promote", self.v1, "--to", "prod", by=DEPLOYER, codes=(1,))
        reasons = [f"{c['rule']}: {c['message']}" for c in decision["checks"] if not c["passed"]]
        self.say("2. The scan finds a known vulnerability; the gate refuses v1", "\n".join(reasons))
        return {
            "refused": decision["allowed"] is False,
            "reasons": reasons,
            "vulnerability_named": any(VULNERABILITY in r for r in reasons),
            "ledger_index": decision.get("ledger_index"),
        }

    # --- 3 ----------------------------------------------------------------------------------

    def release_v2(self) -> dict[str, Any]:
        shutil.rmtree(self.repo / _dist_info_dir("requests", "2.19.0"))
        _write_dist_info(self.repo, "requests", "2.31.0")
        server = self.repo / "app" / "server.py"
        server.write_text(server.read_text().replace('VERSION = "1"', 'VERSION = "2"'))
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "bump requests to 2.31.0 (GHSA-x84v-xcm2-53pg)")
        self.v2 = self.cli("build", str(self.repo / "image.yaml"), "--tag", "hello:2", by=BUILDER)[
            "digest"
        ]
        scan = self._vet(self.v2)
        self.cli("sign", self.v2, by=SIGNER)
        for reviewer in REVIEWERS:
            self.cli("approve", self.v2, "--env", "prod", by=reviewer)
        decision = self.cli("promote", self.v2, "--to", "prod", by=DEPLOYER)
        self.say(
            "3. requests bumped in git; v2 built, scanned clean, checked, tested, approved, signed",
            f"{self.v2} approved by {', '.join(REVIEWERS)}, signed by {SIGNER}; "
            f"promoted to prod by {DEPLOYER} at ledger index {decision.get('ledger_index')}",
        )
        return {
            "digest": self.v2,
            "scan_findings": scan,
            "promoted": decision["allowed"] is True,
            "ledger_index": decision.get("ledger_index"),
        }

    def _vet(self, digest: str) -> int:
        """Scan, baseline check and a smoke test; returns the number of scan findings."""
        scanned = self.cli("scan", digest, by=BUILDER, codes=(0, 1))
        self.cli("check", digest, by=BUILDER, codes=(0, 1))
        self.cli(
            "test", digest, "--name", "smoke", "--", "test", "-f", "opt/hello/server.py",
            by=BUILDER,
        )  # fmt: skip
        return _count_findings(scanned)

    # --- 4 ----------------------------------------------------------------------------------

    def deploy(self) -> dict[str, Any]:
        self._declare("hi")
        first = self.cli("deploy", "prod", by=DEPLOYER)["services"][0]
        answer = Load.get(self.port)
        self.say(
            "4. v2 is the first prod deployment (blue/green, 2 replicas)",
            f"{first['status']}: created {', '.join(first['created'])}; it answers '{answer}'",
        )
        self._declare("hello")  # a new setting: new instances, never a change in place
        with Load(self.port) as load:
            time.sleep(0.3)
            second = self.cli("deploy", "prod", by=DEPLOYER)["services"][0]
            time.sleep(0.3)
        running = {i.id for i in self._runtime().list("prod")}
        gone = not (set(first["created"]) & running)
        after = Load.get(self.port)
        self.say(
            "4. A new setting is rolled out blue/green under steady load",
            f"{sum(load.answers.values())} requests, {len(load.failures)} failed; "
            f"replaced {', '.join(second['destroyed'])} by {', '.join(second['created'])}; "
            f"old instances gone: {gone}; it now answers '{after}'",
        )
        return {
            "first": first["created"],
            "created": second["created"],
            "destroyed": second["destroyed"],
            "requests": sum(load.answers.values()),
            "failed_requests": len(load.failures),
            "old_instances_gone": gone and sorted(second["destroyed"]) == sorted(first["created"]),
            "answer": after,
            "endpoint_port": self.port,
        }

    def _declare(self, greeting: str) -> None:
        text = (EXAMPLES / "demo" / "hello.yaml").read_text()
        path = self.directory / "hello.yaml"
        path.write_text(text.format(port=self.port, greeting=greeting))
        self.cli("env", "declare", "prod", "hello", str(path), by=DEPLOYER)

    def _runtime(self) -> LocalRuntime:
        return LocalRuntime(self.home, Store.for_home(self.home))

    # --- 5 ----------------------------------------------------------------------------------

    def drift(self) -> dict[str, Any]:
        victim = self._runtime().list("prod")[0]
        folder = self.home / "runtime" / "local" / victim.id / "rootfs" / "opt" / "hello"
        folder.chmod(0o755)  # the attacker makes the read-only root writable, then writes
        (folder / "backdoor.py").write_text("print('owned')\n")
        found = self.cli("drift", "check", "prod", "--remediate", by=OPERATOR, codes=(0, 1))
        kinds = sorted({f["kind"] for f in found["findings"] if f["instance"] == victim.id})
        replaced = found["remediated"].get("hello", [])
        evidence = self.home / "drift"
        self.say(
            "5. Someone writes a file into a running instance",
            f"drift check: {', '.join(kinds)} on {victim.id}; replaced: {', '.join(replaced)}",
        )
        return {
            "instance": victim.id,
            "kinds": kinds,
            "remediated": victim.id in replaced,
            "still_running": victim.id in {i.id for i in self._runtime().list("prod")},
            "evidence": str(evidence) if evidence.exists() else None,
        }

    # --- 6 ----------------------------------------------------------------------------------

    def chaos(self) -> dict[str, Any]:
        killed = self.cli("chaos", "prod", "--terminate", "1", "--seed", "7", by=OPERATOR)
        victims = [_victim_id(v) for v in killed.get("killed", killed.get("terminated", []))]
        healed = self.cli("reconcile", "prod", by=OPERATOR)
        created = [i for s in healed["services"] for i in s["created"]]
        running = self._runtime().list("prod")
        healthy = [i.id for i in running if i.health.value == "healthy"]
        self.say(
            "6. Chaos kills an instance; the reconciler replaces it",
            f"killed {', '.join(victims)}; reconciler created {', '.join(created)}; "
            f"{len(healthy)} healthy",
        )
        return {
            "victims": victims,
            "created": created,
            "replaced": bool(victims) and bool(created) and not set(victims) & set(healthy),
            "healthy": len(healthy),
        }

    # --- 7 ----------------------------------------------------------------------------------

    def audit(self, moment: str) -> dict[str, Any]:
        """As the auditor: what ran in prod at ``moment``, the evidence for it, verified."""
        answer = self.cli("audit", "at", moment, "--env", "prod", by=AUDITOR)
        instances = answer.get("instances") or []
        digests = sorted({row["digest"] for row in instances})
        approvers = sorted(
            {
                approval["approver"]
                for row in instances
                for approval in row["image"]["approvals"]
                if approval.get("environment") == "prod"
            }
        )
        evidence = self.directory / "evidence.json"
        self.cli(
            "audit", "evidence", "--at", moment, "--env", "prod", "-o", str(evidence), by=AUDITOR
        )
        vkey = self.cli("ledger", "vkey", by=AUDITOR)["vkey"]
        checked = self.cli(
            "audit", "verify", str(evidence), "--vkey", vkey, by=None, codes=(0, 1), offline=True
        )
        report = self.directory / "soc2-report.html"
        figures = self.directory / "soc2-report.json"
        window = ("--from", self.began, "--to", format_time(datetime.now(UTC)), "--env", "prod")
        written = self.cli("audit", "report", "--framework", "soc2", *window, "-o", str(report),
                           by=AUDITOR)  # fmt: skip
        self.cli("audit", "report", "--framework", "soc2", *window, "-o", str(figures),
                 by=AUDITOR)  # fmt: skip
        controls = json.loads(figures.read_text(encoding="utf-8"))["controls"]
        change_management = next((c["status"] for c in controls if c["id"] == "CC8.1"), "missing")
        self.say(
            f"7. The auditor ({AUDITOR}) asks what ran in prod at {moment}",
            f"{len(instances)} instance(s) of {', '.join(digests) or 'nothing'}, approved by "
            f"{', '.join(approvers) or 'nobody'}; evidence {evidence} "
            + ("verifies offline" if checked.get("ok") else "DOES NOT VERIFY")
            + f"; SOC 2 report {report}: change management (CC8.1) {change_management}, "
            + ", ".join(f"{n} {status}" for status, n in written["controls"].items()),
        )
        return {
            "at": moment,
            "instances": len(instances),
            "digests": digests,
            "v2_named": digests == [self.v2],
            "approvers": approvers,
            "approvers_named": approvers == sorted(REVIEWERS),
            "evidence": str(evidence),
            "evidence_events": checked.get("events"),
            "evidence_verified": checked.get("ok") is True,
            "report": str(report),
            "report_controls": written["controls"],
            "report_change_management": change_management,
        }

    # --- 8 ----------------------------------------------------------------------------------

    def tamper(self) -> dict[str, Any]:
        with open_ledger(self.home) as ledger:
            ledger.checkpoint()
            clean = ledger.verify([])
            index = _first_index(ledger, "image.approved")
        tampered = self.directory / "tampered"
        _copy_ledger(self.home, tampered)
        _flip_payload_byte(tampered / DB_FILE, index, REVIEWERS[0].encode())
        with open_ledger(tampered) as copy:
            bad = copy.verify([])
        problems = [f"{p.where}: {p.message}" for p in bad.problems]
        self.say(
            f"8. Someone edits a copy of the ledger: {REVIEWERS[0]}'s approval (#{index}) changed",
            "\n".join(problems) or "NOT CAUGHT",
        )
        return {
            "clean_verify_ok": clean.ok,
            "tampered_index": index,
            "detected_at": bad.first_bad_index,
            "caught": clean.ok and bad.first_bad_index == index,
            "copy": str(tampered),
        }


# --- helpers -------------------------------------------------------------------------------


def _dist_info_dir(name: str, version: str) -> str:
    # Where the scanner finds installed Python distributions in an image.
    return f"rootfs/usr/lib/python3/dist-packages/{name}-{version}.dist-info"


def _write_dist_info(repo: Path, name: str, version: str) -> None:
    folder = repo / _dist_info_dir(name, version)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def _count_findings(scanned: dict[str, Any]) -> int:
    summary = scanned.get("summary")
    return int(summary.get("findings", 0)) if isinstance(summary, dict) else 0


def _victim_id(victim: Any) -> str:
    return str(victim["id"]) if isinstance(victim, dict) else str(victim)


def _first_index(ledger: Any, kind: str) -> int:
    from .ledger.storage.interface import EntryFilter

    for row in ledger.entries(EntryFilter(type=kind)):
        return int(row.index)
    raise DemoError(f"no {kind} event in the ledger")


def _copy_ledger(home: Path, target: Path) -> None:
    shutil.copytree(home, target, ignore=shutil.ignore_patterns("runtime", "store", "vulndb"))


def _flip_payload_byte(db: Path, index: int, who: bytes) -> None:
    """Edit an entry the way an attacker with database access would: triggers dropped first."""
    conn = sqlite3.connect(db)
    try:
        conn.execute("DROP TRIGGER entries_no_update")
        data = conn.execute("SELECT data FROM entries WHERE idx = ?", (index,)).fetchone()[0]
        forged = who[:-1] + bytes([who[-1] ^ 1])  # 'alice' becomes 'alicd'
        conn.execute(
            "UPDATE entries SET data = ? WHERE idx = ?",
            (bytes(data).replace(who, forged), index),
        )
        conn.commit()
    finally:
        conn.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Load:
    """Steady HTTP GETs, a new connection each, from one thread, bounded in time and count
    (the deployment tests use it too, with longer bounds)."""

    port: int
    seconds: float = 60.0
    requests: int = 50_000
    pause: float = 0.005
    answers: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @staticmethod
    def get(port: int) -> str:
        """One GET of the service's answer, stripped."""
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", "/")
            return connection.getresponse().read().decode().strip()
        finally:
            connection.close()

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        for _ in range(self.requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                connection.request("GET", "/")
                response = connection.getresponse()
                body = response.read().decode()
                connection.close()
                if response.status == 200:
                    self.answers[body.split()[1]] += 1
                else:
                    self.failures.append(f"status {response.status}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
            time.sleep(self.pause)
