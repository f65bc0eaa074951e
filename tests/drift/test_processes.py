"""Process signals on the local runtime: real instances, real processes started beside them.

A shell opened in an instance's root, a program started with the instance's identity, an
SSH-like listener (busybox ``httpd`` named ``sshd``; one on port 22 in another instance): each
is found by ``drift check`` with its evidence, under ``drift watch`` within the bound, and
healed by replacement with the evidence kept.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deploy.conftest import free_port
from deploy.test_admission import cli
from deploy.test_deploy_e2e import Env
from immutrail.artifacts.store import Store
from immutrail.drift.check import EVIDENCE_TYPE
from immutrail.drift.processes import Process, listening, tty_name

from .test_drift_check import env  # noqa: F401  # a deployed local prod, two replicas
from .watching import Watching, events, kinds, wait_event

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
DETECT_WITHIN_S = 2.0


def proc(*cmdline: str, tty: str | None = None, ours: bool = True) -> Process:
    return Process(1, 0, os.path.basename(cmdline[0]), cmdline, 0, tty, ours)


def test_shells_are_told_from_scripts_by_their_arguments() -> None:
    assert proc("/bin/sh").interactive
    assert proc("/bin/busybox", "sh").interactive
    assert proc("bash", "-i", "-c", "x").interactive
    assert proc("-bash").interactive  # a login shell
    assert proc("sh", "-c", "exec server", tty="pts/0").interactive
    assert not proc("sh", "-c", "exec server").interactive
    assert not proc("/bin/bash", "/opt/app/run.sh").interactive
    assert not proc("python3", "-i").shell
    assert proc("/bin/busybox", "ash").shell and proc("/usr/bin/zsh", "-l").shell
    # a script run by the entrypoint is no finding; the same shell from outside is
    assert [s.kind for s in _signals(proc("sh", "run.sh"))] == []
    assert [s.kind for s in _signals(proc("sh", "run.sh", ours=False))] == ["shell"]
    assert [s.kind for s in _signals(proc("sleep", "9", ours=False))] == ["foreign-process"]
    assert [s.kind for s in _signals(proc("/usr/sbin/sshd", "-D"))] == ["ssh-server"]
    assert tty_name(0) is None and tty_name((136 << 8) | 3) == "pts/3"
    assert tty_name((4 << 8) | 1) == "tty1"


def _signals(p: Process) -> list[Any]:
    from immutrail.drift.processes import signals

    return signals([p], "x")


def test_listening_sockets_are_mapped_to_their_process() -> None:
    with socket.socket(socket.AF_INET6) as six, socket.socket() as four:
        four.bind(("127.0.0.1", 0))
        four.listen()
        six.bind(("::1", 0))
        six.listen()
        ports = four.getsockname()[1], six.getsockname()[1]
        found = {(s.protocol, s.address, s.port) for s in listening(os.getpid())}
    assert ("tcp", "127.0.0.1", ports[0]) in found
    assert ("tcp6", "::1", ports[1]) in found


class Intruder:
    """Processes started beside a local instance, killed (by their pid) when the test ends."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], cwd: Path, executable: str | None = None, **env: str) -> int:
        process = subprocess.Popen(
            argv,
            executable=executable,
            cwd=cwd,
            stdin=subprocess.PIPE,  # a shell reading commands from a pipe, as `exec -i` gives
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={"PATH": os.environ["PATH"], **env},
        )
        self.started.append(process)
        return process.pid

    def sshd(self, cwd: Path, port: int) -> int:
        """A busybox server on loopback ``port``, its process named sshd (the name it was run
        by): what a hand-started dropbear looks like from outside."""
        named = self.tmp / "sbin" / "sshd"
        named.parent.mkdir(exist_ok=True)
        if not named.exists():
            named.symlink_to(BUSYBOX)
        argv = ["busybox", *listener(port, cwd)]  # httpd moves into its -h folder
        return self.start(argv, cwd, executable=str(named))

    def stop(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(10)


@pytest.fixture
def intruder(tmp_path: Path) -> Iterator[Intruder]:
    made = Intruder(tmp_path)
    yield made
    made.stop()


def listener(port: int, folder: Path) -> list[str]:
    """A TCP server on the loopback only (busybox nc cannot choose its address; httpd can)."""
    return ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", str(folder)]


def rootfs(env: Env, instance_id: str) -> Path:
    return env.home / "runtime" / "local" / instance_id / "rootfs"


def wait_listening(pid: int, port: int) -> None:
    deadline = time.monotonic() + 10
    while not any(s.port == port for s in listening(pid)):
        assert time.monotonic() < deadline, f"pid {pid} does not listen on {port}"
        time.sleep(0.02)


def test_shell_foreign_process_and_sshd_are_found_with_evidence_and_healed(
    env: Env, intruder: Intruder
) -> None:
    victim, other = env.instances()
    shell = intruder.start([BUSYBOX, "sh"], rootfs(env, victim.id))
    sleeper = intruder.start(
        ["sleep", "300"], env.tmp, IMMUTRAIL_INSTANCE=victim.id
    )  # the instance's identity, elsewhere
    port = free_port()
    sshd = intruder.sshd(rootfs(env, victim.id) / "opt", port)
    wait_listening(sshd, port)
    # any listener on port 22 is an SSH server, whatever its name (the suite runs as root)
    server = intruder.start([BUSYBOX, *listener(22, rootfs(env, other.id))], rootfs(env, other.id))
    wait_listening(server, 22)

    report = cli(env.home, "drift", "check", "prod", code=1)
    mine = {f["evidence"]["pid"]: f for f in report["findings"] if "pid" in f["evidence"]}
    assert {f["instance"] for f in mine.values()} == {victim.id, other.id}
    assert mine[server]["instance"] == other.id and mine[server]["kind"] == "ssh-server"
    assert mine[server]["evidence"]["listening"][0]["port"] == 22
    assert mine[server]["evidence"]["cmdline"][:2] == [BUSYBOX, "httpd"]
    assert mine[shell]["kind"] == "shell" and mine[shell]["severity"] == "high"
    assert mine[shell]["evidence"]["cmdline"] == [BUSYBOX, "sh"]
    assert mine[shell]["evidence"]["ppid"] == os.getpid()
    assert mine[shell]["evidence"]["uid"] == os.getuid()
    assert mine[shell]["evidence"]["tty"] is None and not mine[shell]["evidence"]["from_entrypoint"]
    assert "800-190" in mine[shell]["control"]
    assert mine[sleeper]["kind"] == "foreign-process"
    assert mine[sleeper]["evidence"]["comm"] == "sleep"
    assert mine[sshd]["kind"] == "ssh-server" and mine[sshd]["severity"] == "critical"
    assert mine[sshd]["evidence"]["comm"] == "sshd"
    assert mine[sshd]["evidence"]["listening"] == [
        {"protocol": "tcp", "address": "127.0.0.1", "port": port}
    ]
    detected = [e for e in env.events("drift.detected") if e["subject"] == victim.id][-1]
    assert {"shell", "foreign-process", "ssh-server"} <= kinds(detected["findings"])

    healed = cli(env.home, "drift", "check", "prod", "--remediate")
    assert sorted(healed["remediated"]["hello"]) == sorted([victim.id, other.id])
    # The replacement is clean; the intruders, which were never the instance's, remain
    # findings of nobody: they run outside every instance now that its folder is gone.
    assert healed["after_remediation"]["clean"], healed["after_remediation"]["findings"]
    assert not {victim.id, other.id} & {i.id for i in env.instances()}
    kept = _evidence(env, victim.id)
    assert {f["evidence"].get("pid") for f in kept["findings"]} >= {shell, sleeper, sshd}


def _evidence(env: Env, instance_id: str) -> dict[str, Any]:
    store = Store.for_home(env.home)
    for event in env.events("artifact.attached"):
        if event["artifact_type"] == EVIDENCE_TYPE:
            document = json.loads(store.read_blob(event["blob"]))
            if document["instance"] == instance_id:
                return dict(document)
    raise AssertionError(f"no evidence kept for {instance_id}")


def test_watch_finds_a_process_started_in_an_instance_within_two_seconds(
    env: Env, intruder: Intruder
) -> None:
    victim = env.instances()[0]
    with Watching(env.home, "prod", "--interval", "60") as watching:
        watching.wait_for(lambda r: r["source"] == "check")  # the first full check: clean
        assert events(env.home, "drift.detected") == []
        started = time.monotonic()
        shell = intruder.start([BUSYBOX, "sh"], rootfs(env, victim.id))
        event, seen = wait_event(
            env.home, "drift.detected", lambda e: e["source"] == "process-scan"
        )
        assert seen - started < DETECT_WITHIN_S, seen - started
        assert event["subject"] == victim.id
        [finding] = event["findings"]
        assert finding["kind"] == "shell" and finding["evidence"]["pid"] == shell
        # then the instance is checked on its own, and the shell is still there
        checked = watching.wait_for(lambda r: r["source"] == "instance-check")
        assert "shell" in kinds(checked["findings"])
    # once per process: the scans after the first did not record the same shell again
    scans = [e for e in events(env.home, "drift.detected") if e["source"] == "process-scan"]
    assert len(scans) == 1
