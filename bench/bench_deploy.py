"""Deploy by replacement on the local runtime: time to traffic, switch gap, endpoint throughput.

One home, the example hello service built twice (v1, v2), signed and promoted through the real
gate; deployments through the library the CLI calls (``immutrail.deploy.engine.converge``),
blue/green, with the endpoint process.

* time to traffic: for 1, 10 and 50 instances (``--quick``: 1 and 5), from the call to deploy
  until the endpoint answers with the new version (a poller asks every 5 ms), and until the
  deployment has finished (old set drained and destroyed). Baseline, same run: starting the same
  number of ``python3 server.py`` processes by hand and waiting until each accepts a TCP
  connection — the work a deployment cannot avoid. Ratio = baseline / time to traffic.
* switch gap: a load generator (4 threads, a new connection per request; bench_proxy's) runs
  against the endpoint during a blue/green replacement of 2 instances; the longest time without a
  completed request within +-100 ms of the switch, against the same statistic with no switch.
* endpoint throughput: requests/s through the endpoint process against direct connections to one
  instance, same load.

    .venv/bin/python bench/bench_deploy.py [--quick] [--seconds S]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _common import (
    header,
    machine_info,
    print_table,
    print_targets,
    scratch_dir,
    target,
    write_json,
)
from bench_proxy import _finish_load, _gap_around, _rate, _start_load

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "examples" / "hello" / "app" / "server.py"
DEFINITION = """\
base: scratch
layers:
  - source: app
    destination: /opt/hello
env: {GREETING: hi}
entrypoint: ["python3", "/opt/hello/server.py"]
"""
POLICY = """\
provenance: {required: false}
vulnerabilities: {require_scan: false}
baseline: {required: false}
"""


def cli(home: Path, *args: str) -> None:
    from typer.testing import CliRunner

    from immutrail.cli.main import app

    result = CliRunner().invoke(app, [*args, "--home", str(home), "--format", "json"])
    if result.exit_code != 0:
        raise SystemExit(f"immutrail {' '.join(args)} failed: {result.stderr}")


def build_version(home: Path, work: Path, version: str) -> str:
    from immutrail.artifacts.builder import build

    repo = work / f"hello-{version}"
    (repo / "app").mkdir(parents=True)
    (repo / "image.yaml").write_text(DEFINITION)
    (repo / "app" / "server.py").write_text(
        SERVER.read_text().replace('VERSION = "1"', f'VERSION = "{version}"')
    )
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@x",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@x",
    }
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "v"]):
        subprocess.run(["git", *command], cwd=repo, check=True, env=env)
    digest = build(repo / "image.yaml", home, tag=f"hello:{version}").digest
    cli(home, "sign", digest, "--principal", "rel")
    return digest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answer(port: int) -> str | None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        return reply.decode(errors="replace").rsplit("\r\n\r\n", 1)[-1]
    except OSError:
        return None


def baseline_start(count: int) -> float:
    """Start ``count`` servers by hand and wait until each accepts a connection."""
    started = time.perf_counter()
    processes = []
    for _ in range(count):
        port = free_port()
        proc = subprocess.Popen(
            ["python3", str(SERVER)],
            env={"PATH": os.environ["PATH"], "PORT": str(port)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append((proc, port))
    for _, port in processes:
        while answer(port) is None:
            time.sleep(0.005)
    elapsed = time.perf_counter() - started
    for proc, _ in processes:
        proc.kill()
        proc.wait()
    return elapsed


class Deployer:
    def __init__(self, home: Path) -> None:
        from immutrail.artifacts.store import Store
        from immutrail.deploy.engine import Context
        from immutrail.deploy.local import LocalRuntime
        from immutrail.ledger.home import open_ledger

        self.home = home
        self.ledger = open_ledger(home)
        store = Store.for_home(home)
        runtime = LocalRuntime(home, store)
        self.switched_at: list[float] = []
        self.ctx = Context(home, self.ledger, store, "user:bench", lambda _: runtime, self._report)

    def _report(self, message: str) -> None:
        if message.startswith("traffic:"):
            self.switched_at.append(time.monotonic())

    def deploy(self) -> Any:
        from immutrail.deploy.engine import converge

        return converge(self.ctx, "prod", "hello")


def time_to_traffic(deployer: Deployer, port: int, version: str) -> tuple[float, float]:
    """Seconds until the endpoint answers ``version``, and until the deployment returned."""
    first: list[float] = []
    done = threading.Event()
    started = time.perf_counter()

    def poll() -> None:
        while not done.is_set():
            body = answer(port)
            if body is not None and f"v{version} " in body:
                first.append(time.perf_counter() - started)
                return
            time.sleep(0.005)

    poller = threading.Thread(target=poll)
    poller.start()
    deployer.deploy()
    total = time.perf_counter() - started
    poller.join(30)
    done.set()
    return (first[0] if first else float("nan")), total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seconds", type=float, default=None, help="load phase length")
    args = ap.parse_args(argv)
    sizes = [1, 5] if args.quick else [1, 10, 50]
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    header("deploy", "time to traffic, switch gap, endpoint throughput (local runtime)", args.quick)
    info = machine_info()
    from immutrail.artifacts.store import Store
    from immutrail.deploy.endpoint import Endpoint, list_endpoints
    from immutrail.deploy.local import LocalRuntime
    from immutrail.ledger.home import init_ledger

    with scratch_dir("deploy") as work:
        home = work / "home"
        init_ledger(home, None, None)[0].close()
        for principal in ("ops", "rel"):
            cli(home, "keys", "generate", "--principal", principal, "--no-passphrase")
        (work / "policy.yaml").write_text(POLICY)
        cli(home, "policy", "set", "prod", str(work / "policy.yaml"), "--principal", "ops")
        versions = {v: build_version(home, work, v) for v in ("1", "2")}
        port = free_port()
        deployer = Deployer(home)
        current = "1"

        def declare(replicas: int) -> None:
            path = work / "hello.yaml"
            path.write_text(f"replicas: {replicas}\nport: {port}\nhealth_timeout: 120s\n")
            cli(home, "env", "declare", "prod", "hello", str(path))

        def flip() -> str:
            nonlocal current
            current = "2" if current == "1" else "1"
            cli(home, "promote", versions[current], "--to", "prod")
            return current

        try:
            declare(1)
            cli(home, "promote", versions["1"], "--to", "prod")
            deployer.deploy()  # the endpoint and a first instance: every measured run replaces
            rows, results = [], []
            for count in sizes:
                declare(count)
                version = flip()
                traffic, total = time_to_traffic(deployer, port, version)
                base = baseline_start(count)
                results.append(
                    {
                        "instances": count,
                        "time_to_traffic_s": traffic,
                        "deploy_s": total,
                        "baseline_start_s": base,
                        "ratio": base / traffic,
                    }
                )
                rows.append((count, traffic, total, base, base / traffic))
            print_table(
                "Blue/green replacement: time until the endpoint answers with the new version",
                ("instances", "to traffic s", "deploy done s", "baseline start s", "ratio"),
                rows,
            )

            # Switch gap and throughput with 2 instances.
            declare(2)
            version = flip()
            deployer.deploy()
            runtime = LocalRuntime(home, Store.for_home(home))
            instance_port = runtime.list("prod")[0].port
            assert instance_port is not None
            direct = _finish_load(_start_load(instance_port, seconds, 4))
            proxied = _finish_load(_start_load(port, seconds, 4))
            load = _start_load(port, seconds + 4, 4)
            time.sleep(2)
            deployer.switched_at.clear()
            flip()
            deployer.deploy()
            switching = _finish_load(load)
            switch_time = deployer.switched_at[0]
            gap = _gap_around(switching["completions"], switch_time)
            calm = _gap_around(proxied["completions"], proxied["completions"][0] + seconds / 2)
            failed = len(direct["errors"]) + len(proxied["errors"]) + len(switching["errors"])
            ratio = _rate(proxied) / _rate(direct)
            print_table(
                "Endpoint (4 threads, a new connection per request)",
                ("path", "requests/s", "ratio"),
                [
                    ("direct to an instance", _rate(direct), 1.0),
                    ("through the endpoint process", _rate(proxied), ratio),
                    (
                        "through the endpoint during a blue/green deploy",
                        _rate(switching),
                        _rate(switching) / _rate(direct),
                    ),
                ],
            )
            print_table(
                "Switch gap (longest time without a completed request, +-100 ms)",
                ("where", "ms"),
                [("around the switch", 1000 * gap), ("no switch, same load", 1000 * calm)],
            )
        finally:
            runtime = LocalRuntime(home, Store.for_home(home))
            for instance in runtime.list():
                runtime.destroy(instance.id)
            for endpoint in list_endpoints(home):
                Endpoint(home, endpoint.environment, endpoint.service).stop()
            deployer.ledger.close()

    largest = results[-1]
    targets = [
        target("failed requests", failed, 0, higher_is_better=False),
        target(
            f"time to traffic, {largest['instances']} instances (bar 30 s assumed)",
            largest["time_to_traffic_s"],
            30.0,
            higher_is_better=False,
            unit="s",
        ),
        target(
            "switch gap (bar 50 ms assumed)", 1000 * gap, 50.0, higher_is_better=False, unit="ms"
        ),
        target("endpoint requests/s / direct (bar 0.5 assumed)", ratio, 0.5),
    ]
    print_targets(targets)
    write_json(
        "deploy",
        {
            "machine": info,
            "quick": args.quick,
            "time_to_traffic": results,
            "rps_direct": _rate(direct),
            "rps_endpoint": _rate(proxied),
            "rps_switching": _rate(switching),
            "ratio": ratio,
            "switch_gap_ms": 1000 * gap,
            "no_switch_gap_ms": 1000 * calm,
            "failed": failed,
            "errors_sample": (direct["errors"] + proxied["errors"] + switching["errors"])[:5],
            "targets": targets,
        },
    )
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
