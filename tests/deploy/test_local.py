"""The local runtime: a real image, a real process on a loopback port, destroyed without a trace."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from immutrail.artifacts.store import Store
from immutrail.deploy.local import UNKNOWN_DIGEST, LocalRuntime
from immutrail.deploy.runtime import Health, InstanceSpec, Runtime, RuntimeDriverError

from .conftest import free_port, wait_for

SLEEPER = ["python3", "-c", "import time; print('ready', flush=True); time.sleep(120)"]


def runtime_for(home: Path, **options: float) -> LocalRuntime:
    return LocalRuntime(home, Store.for_home(home, create=True), **options)


def get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
        body: bytes = response.read()
    return body.decode()


def record_of(home: Path, instance_id: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (home / "runtime" / "local" / instance_id / "instance.json").read_text()
    )
    return data


def pid_gone(pid: int) -> bool:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return text[text.rindex(")") + 2] in "ZX"


def test_instance_serves_is_listed_logged_and_destroyed(home: Path, hello: str) -> None:
    runtime = runtime_for(home)
    assert isinstance(runtime, Runtime) and runtime.name == "local"
    port = free_port()
    spec = InstanceSpec(
        "dev",
        "hello",
        hello,
        env={"GREETING": "yo"},
        files={"/etc/hello/app.toml": b"colour = 'blue'\n"},
        port=port,
        labels={"deployment": "d1"},
    )
    instance = runtime.create(spec)
    folder = home / "runtime" / "local" / instance.id
    try:
        wait_for(runtime, instance.id, Health.healthy)
        assert get(port) == "hello v1 greeting=yo\n"

        listed = runtime.list()
        assert [(i.id, i.digest, i.health) for i in listed] == [
            (instance.id, hello, Health.healthy)
        ]
        assert listed[0].environment == "dev" and listed[0].labels == {"deployment": "d1"}
        assert listed[0].managed and listed[0].port == port
        assert runtime.list("dev") == listed and runtime.list("prod") == []

        # The image's own server.py runs from the read-only root; config sits beside it.
        root = folder / "rootfs"
        server = root / "opt" / "hello" / "server.py"
        assert stat.S_IMODE(server.stat().st_mode) & 0o222 == 0
        assert stat.S_IMODE(root.stat().st_mode) & 0o222 == 0
        record = record_of(home, instance.id)
        pid = record["pid"]
        assert isinstance(pid, int)
        assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1] == str(server).encode()
        assert Path(f"/proc/{pid}/cwd").resolve() == server.parent
        config = folder / "config" / "etc" / "hello" / "app.toml"
        assert config.read_bytes() == b"colour = 'blue'\n"
        assert stat.S_IMODE(config.stat().st_mode) & 0o222 == 0
        assert (folder / "scratch").is_dir()
        assert (folder / "image.digest").read_text().strip() == hello
        assert record["spec"]["digest"] == hello  # type: ignore[index]

        logs = runtime.logs(instance.id)
        assert b'"GET / HTTP/1.1" 200' in logs.stderr
    finally:
        runtime.destroy(instance.id)
    assert pid_gone(pid)
    assert not folder.exists()
    assert runtime.list() == []
    with pytest.raises(RuntimeDriverError, match="no local instance"):
        runtime.health(instance.id)
    with pytest.raises(RuntimeDriverError, match="no local instance"):
        runtime.destroy(instance.id)


def test_environment_scratch_and_argument_mapping(home: Path, hello: str) -> None:
    runtime = runtime_for(home)
    script = (
        "import json, os, sys; "
        "open(os.path.join(os.environ['TMPDIR'], 'note'), 'w').write('x'); "
        "names = ['PORT', 'GREETING', 'IMMUTRAIL_INSTANCE', 'IMMUTRAIL_ROOTFS', "
        "'IMMUTRAIL_CONFIG_DIR', 'TMPDIR', 'HOME', 'EXTRA']; "
        "print(json.dumps({'env': {n: os.environ.get(n) for n in names}, 'argv': sys.argv, "
        "'scratch': os.listdir(os.environ['TMPDIR'])}))"
    )
    port = free_port()
    spec = InstanceSpec(
        "dev",
        "probe",
        hello,
        env={"EXTRA": "1"},
        port=port,
        command=["python3", "-c", script, "/opt/hello/server.py", "/opt/hello/missing", "/etc"],
    )
    instance = runtime.create(spec)
    folder = home / "runtime" / "local" / instance.id
    try:
        wait_for(runtime, instance.id, Health.exited)
        seen = json.loads(runtime.logs(instance.id).stdout)
    finally:
        runtime.destroy(instance.id)
    root = folder / "rootfs"
    assert seen["env"] == {
        "PORT": str(port),
        "GREETING": "hi",  # from the image
        "IMMUTRAIL_INSTANCE": instance.id,
        "IMMUTRAIL_ROOTFS": str(root.resolve()),
        "IMMUTRAIL_CONFIG_DIR": str(folder / "config"),
        "TMPDIR": str(folder / "scratch"),
        "HOME": str(folder / "scratch"),
        "EXTRA": "1",
    }
    # A file of the image is mapped; a missing one and a folder are left as they were.
    assert seen["argv"][1:] == [
        str(root.resolve() / "opt" / "hello" / "server.py"),
        "/opt/hello/missing",
        "/etc",
    ]
    assert seen["scratch"] == ["note"]
    assert not folder.exists()


def wait_ready(runtime: LocalRuntime, instance_id: str) -> None:
    deadline = time.monotonic() + 30
    while runtime.logs(instance_id).stdout != b"ready\n" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.logs(instance_id).stdout == b"ready\n", runtime.logs(instance_id)


def test_reused_or_missing_pid_shows_exited(home: Path, hello: str) -> None:
    runtime = runtime_for(home, grace_seconds=2)
    instance = runtime.create(InstanceSpec("dev", "sleeper", hello, command=SLEEPER))
    path = home / "runtime" / "local" / instance.id / "instance.json"
    record = json.loads(path.read_text())
    pid, start_time = record["pid"], record["start_time"]
    assert runtime.health(instance.id) == Health.healthy  # no port: alive is healthy
    # Python must be past its start-up (which reads the working directory) before the folder
    # goes: only then does the process's survival say something about destroy.
    wait_ready(runtime, instance.id)

    # Another process with the same pid (its start time differs) is not the instance.
    path.write_text(json.dumps({**record, "start_time": start_time + 1}))
    fresh = runtime_for(home)
    assert fresh.health(instance.id) == Health.exited
    assert [i.health for i in fresh.list()] == [Health.exited]
    # ...and destroying the instance must not signal that other process.
    fresh.destroy(instance.id)
    assert not pid_gone(pid), runtime._children[instance.id].poll()
    os.killpg(pid, signal.SIGKILL)
    runtime._children[instance.id].wait()  # reap it (this test started it)

    # A pid that no longer exists.
    second = runtime.create(InstanceSpec("dev", "sleeper", hello, command=SLEEPER))
    path = home / "runtime" / "local" / second.id / "instance.json"
    record = json.loads(path.read_text())
    gone = subprocess.Popen(["true"])
    gone.wait()
    path.write_text(json.dumps({**record, "pid": gone.pid}))
    assert runtime_for(home).health(second.id) == Health.exited
    path.write_text(json.dumps(record))
    assert runtime.health(second.id) == Health.healthy
    runtime.destroy(second.id)
    assert pid_gone(record["pid"])


def test_sigterm_ignored_is_killed_after_grace(home: Path, hello: str) -> None:
    runtime = runtime_for(home, grace_seconds=0.5)
    stubborn = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        "print(child.pid, flush=True); time.sleep(120)"
    )
    instance = runtime.create(
        InstanceSpec("dev", "stubborn", hello, command=["python3", "-c", stubborn])
    )
    pid = record_of(home, instance.id)["pid"]
    assert isinstance(pid, int)
    while not runtime.logs(instance.id).stdout:
        assert runtime.health(instance.id) == Health.healthy
        time.sleep(0.05)
    child = int(runtime.logs(instance.id).stdout)
    runtime.destroy(instance.id)
    assert pid_gone(pid)
    # The group is killed, not only its leader.
    for _ in range(100):
        if pid_gone(child):
            break
        time.sleep(0.05)
    assert pid_gone(child)


def test_port_not_open_is_starting_then_unhealthy(home: Path, hello: str) -> None:
    port = free_port()
    instance = runtime_for(home).create(
        InstanceSpec("dev", "mute", hello, port=port, command=SLEEPER)
    )
    try:
        assert runtime_for(home).health(instance.id) == Health.starting
        assert runtime_for(home, start_period=0).health(instance.id) == Health.unhealthy
    finally:
        runtime_for(home).destroy(instance.id)


def test_tampered_digest_file_is_observed(home: Path, hello: str) -> None:
    runtime = runtime_for(home)
    instance = runtime.create(InstanceSpec("dev", "sleeper", hello, command=SLEEPER))
    digest_file = home / "runtime" / "local" / instance.id / "image.digest"
    digest_file.chmod(0o644)
    digest_file.write_text("sha256:" + "0" * 64 + "\n")
    try:
        assert [i.digest for i in runtime.list()] == [UNKNOWN_DIGEST]
    finally:
        runtime.destroy(instance.id)


def test_leftover_folder_is_listed_unmanaged_and_destroyable(home: Path, hello: str) -> None:
    runtime = runtime_for(home)
    leftover = home / "runtime" / "local" / "local-0123456789abcdef"
    (leftover / "rootfs").mkdir(parents=True)
    (leftover / "rootfs").chmod(0o555)
    [seen] = runtime.list()
    assert (seen.id, seen.managed, seen.health, seen.digest) == (
        leftover.name,
        False,
        Health.exited,
        UNKNOWN_DIGEST,
    )
    assert runtime.list("dev") == []
    runtime.destroy(leftover.name)
    assert not leftover.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"files": {"../escape": b"x"}}, "without '..'"),
        ({"files": {"/": b"x"}}, "must name a file"),
        ({"files": {"/a": b"x", "/a/b": b"y"}}, "inside another config file"),
        ({"port": 70000}, "between 1 and 65535"),
        ({"env": {"A=B": "1"}}, "cannot be set"),
        ({"env": {"A": "nul\0"}}, "cannot be set"),
        ({"digest": "sha256:" + "1" * 64}, "cannot be started"),
        ({"command": []}, "no entrypoint or cmd"),
        ({"command": ["/no/such/program"]}, "cannot start"),
    ],
)
def test_bad_spec_refused_and_leaves_nothing(
    home: Path, hello: str, change: dict[str, object], message: str
) -> None:
    fields: dict[str, object] = {"environment": "dev", "service": "s", "digest": hello}
    spec = InstanceSpec(**{**fields, **change})  # type: ignore[arg-type]
    runtime = runtime_for(home)
    with pytest.raises(RuntimeDriverError, match=message):
        runtime.create(spec)
    root = home / "runtime" / "local"
    assert not root.exists() or list(root.iterdir()) == []


def test_bad_instance_ids(home: Path) -> None:
    runtime = runtime_for(home)
    for bad in ("../../etc", "local-xyz", ""):
        with pytest.raises(RuntimeDriverError, match="not a local instance id"):
            runtime.destroy(bad)
        with pytest.raises(RuntimeDriverError, match="not a local instance id"):
            runtime.logs(bad)
