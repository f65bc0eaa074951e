"""(drift) Time to detect a ``docker exec`` under ``immutrail drift watch``, against the raw
Docker event stream in the same run.

A busybox web service is built from scratch (static ``/bin/busybox``), promoted and deployed on
the ``docker`` runtime (one container), and ``immutrail drift watch prod`` runs as its own
process (``--interval 300``: only the event stream and the follow-up instance checks work). Then
N times (bounded), one second apart:

* ``docker exec CONTAINER /bin/busybox sh -c ': run-<i>'`` is run with the docker CLI;
* **detected**: the moment the ``drift.detected`` event (source ``docker-events``) for that
  session is readable in the ledger (polled every 2 ms from this process);
* **baseline**: the moment the same session's first event (``exec_create``) reaches a plain
  ``client.events()`` subscriber in this process: what any detector built on the engine's
  stream could at best do.

Reported: detection time after ``docker exec`` returned (the target: < 2 s; negative when the
finding was in the ledger before the CLI returned), and after it was started, the same for the
raw stream, and the ratio detected / raw (both measured from the start of ``docker exec``).

    .venv/bin/python bench/bench_drift_exec.py [--quick] [--runs N] [--docker-host URL]

Without ``--docker-host`` a private engine is started with the test suite's helper
(``tests/artifacts/services/dockerd.py``: needs root, dockerd and a static busybox).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _common import ROOT, header, machine_info, print_table, print_targets, target, write_json
from bench_deploy import cli, free_port

sys.path.insert(0, str(ROOT / "tests"))
from deploy.test_deploy_docker import DEFINITION, SERVE  # the tests' busybox image

NAME = "drift_exec"
BUSYBOX = Path("/bin/busybox")
POLICY = """\
provenance: {required: false}
vulnerabilities: {require_scan: false}
baseline: {required: false}
"""
TARGET_S = 2.0
ENV = f"bench-drift-{os.getpid()}"
"""Its own environment: on a shared engine only its own containers are touched."""
TIMEOUT_S = 20.0


@contextlib.contextmanager
def engine(docker_host: str | None) -> Iterator[str]:
    if docker_host:
        yield docker_host
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from artifacts.services.dockerd import running_dockerd  # the test suite's private engine

    with running_dockerd() as started:
        yield started.host


def build_web(home: Path, work: Path) -> str:
    from immutrail.artifacts.builder import build

    repo = work / "web"
    (repo / "bin").mkdir(parents=True)
    (repo / "www").mkdir()
    (repo / "image.yaml").write_text(DEFINITION)
    shutil.copy(BUSYBOX, repo / "bin" / "busybox")
    (repo / "www" / "index.html").write_text("web\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@x",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@x",
    }
    for command in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "v"]):
        subprocess.run(["git", *command], cwd=repo, check=True, env=env)
    return build(repo / "image.yaml", home, tag="web:1").digest


class RawStream:
    """A plain subscriber to the engine's exec events: when each command's first event came."""

    def __init__(self, client: Any) -> None:
        self.arrivals: queue.Queue[tuple[str, float]] = queue.Queue()
        self._stream = client.events(
            decode=True, filters={"type": "container", "event": ["exec_create", "exec_start"]}
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(Exception):  # ends when the stream is closed
            for event in self._stream:
                self.arrivals.put((str(event.get("Action", "")), time.monotonic()))

    def first(self, marker: str) -> float:
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            action, at = self.arrivals.get(timeout=TIMEOUT_S)
            if marker in action:
                return at
        raise SystemExit(f"the engine sent no event for {marker}")

    def close(self) -> None:
        self._stream.close()


def detected(ledger: Any, start: int, marker: str, log: Path) -> tuple[float, int]:
    """When a docker-events drift.detected naming ``marker`` is readable; the next index."""
    from immutrail.ledger.event import parse_entry
    from immutrail.ledger.storage.interface import EntryFilter

    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        for row in ledger.entries(EntryFilter(type="drift.detected", start=start)):
            start = row.index + 1
            payload = parse_entry(row.data).payload
            if payload.get("source") == "docker-events" and marker in json.dumps(payload):
                return time.monotonic(), start
        time.sleep(0.002)
    raise SystemExit(
        f"drift watch recorded nothing for {marker} within {TIMEOUT_S} s; its log: "
        + log.read_text(errors="replace")[-4000:]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--docker-host", default=None)
    args = ap.parse_args(argv)
    runs = min(100, args.runs or (5 if args.quick else 20))
    header(NAME, "time to detect a docker exec under drift watch", args.quick)
    info = machine_info()
    import docker  # type: ignore[import-untyped]

    from immutrail.ledger.home import init_ledger, open_ledger

    with engine(args.docker_host) as host, contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(_scratch()))
        home = work / "home"
        init_ledger(home, None, None)[0].close()
        (work / "policy.yaml").write_text(POLICY)
        for principal in ("ops", "rel"):
            cli(home, "keys", "generate", "--principal", principal, "--no-passphrase")
        cli(home, "policy", "set", ENV, str(work / "policy.yaml"), "--principal", "ops")
        digest = build_web(home, work)
        cli(home, "sign", digest, "--principal", "rel")  # admission wants a release signature
        (work / "web.yaml").write_text(
            f"replicas: 1\nruntime: docker\nport: {free_port()}\ncommand: {SERVE}\n"
        )
        cli(home, "env", "declare", ENV, "web", str(work / "web.yaml"))
        cli(home, "promote", digest, "--to", ENV)
        cli(home, "deploy", ENV, "--docker-host", host)
        client = docker.DockerClient(base_url=host)
        stack.callback(_remove_all, client, home)
        [container] = [c.name for c in client.containers.list()]
        watch = subprocess.Popen(
            [
                *(sys.executable, "-m", "immutrail.cli.main", "drift", "watch", ENV),
                *("--interval", "300", "--duration", str(60 + runs * 5), "--format", "json"),
                *("--docker-host", host, "--home", str(home)),
            ],
            stdout=subprocess.PIPE,
            stderr=stack.enter_context((work / "watch.log").open("wb")),
            stdin=subprocess.DEVNULL,
        )
        stack.callback(_stop, watch)
        assert watch.stdout is not None
        watch.stdout.readline()  # the first full check is done: the stream is followed
        # keep reading its reports: a full pipe would stop the watch
        threading.Thread(target=watch.stdout.read, daemon=True).start()
        raw = RawStream(client)
        stack.callback(raw.close)
        ledger = stack.enter_context(open_ledger(home))
        start = ledger.head().size
        docker_cli = shutil.which("docker") or "docker"
        after_return, after_start, raw_after_start = [], [], []
        for run in range(runs):
            marker = f"run-{run}-{time.time_ns()}"
            began = time.monotonic()
            subprocess.run(
                [
                    docker_cli,
                    "-H",
                    host,
                    "exec",
                    container,
                    "/bin/busybox",
                    "sh",
                    "-c",
                    f": {marker}",
                ],
                check=True,
                capture_output=True,
            )
            returned = time.monotonic()
            seen, start = detected(ledger, start, marker, work / "watch.log")
            streamed = raw.first(marker)
            after_return.append(seen - returned)
            after_start.append(seen - began)
            raw_after_start.append(streamed - began)
            time.sleep(1.0)  # the follow-up instance check runs; the next exec finds it idle
    median = statistics.median
    rows = [
        ("drift.detected in the ledger, after docker exec returned", after_return),
        ("drift.detected in the ledger, after docker exec started", after_start),
        ("raw event stream (exec_create), after docker exec started", raw_after_start),
    ]
    print_table(
        f"seconds over {runs} runs",
        ("measure", "median", "max", "min"),
        [(name, median(v), max(v), min(v)) for name, v in rows],
    )
    ratio = median(after_start) / median(raw_after_start)
    targets = [
        target(
            "detection after exec returned, max (s)",
            max(after_return),
            TARGET_S,
            higher_is_better=False,
            unit="s",
        ),
    ]
    print_targets(targets)
    result = {
        "benchmark": NAME,
        "runs": runs,
        "detect_after_return_s": {"median": median(after_return), "max": max(after_return)},
        "detect_after_start_s": {"median": median(after_start), "max": max(after_start)},
        "raw_stream_after_start_s": {
            "median": median(raw_after_start),
            "max": max(raw_after_start),
        },
        "ratio_detect_vs_raw_stream": ratio,
        "target_s": TARGET_S,
        "met": max(after_return) < TARGET_S,
    }
    print(json.dumps(result))
    write_json(
        NAME,
        {
            **result,
            "machine": info,
            "loadavg_at_end": os.getloadavg(),
            "quick": args.quick,
            "samples": {
                "after_return": after_return,
                "after_start": after_start,
                "raw_after_start": raw_after_start,
            },
            "targets": targets,
        },
    )
    return 0


@contextlib.contextmanager
def _scratch() -> Iterator[str]:
    from _common import scratch_dir

    with scratch_dir(NAME) as folder:
        yield str(folder)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        process.wait(30)


def _remove_all(client: Any, home: Path) -> None:
    from immutrail.deploy.endpoint import Endpoint, list_endpoints

    for info in list_endpoints(home):
        Endpoint(home, info.environment, info.service).stop()
    for container in client.containers.list(
        all=True, filters={"label": f"immutrail.environment={ENV}"}
    ):
        container.remove(force=True, v=True)
    client.close()


if __name__ == "__main__":
    raise SystemExit(main())
