"""The endpoint process: one long-running proxy per service, driven by short-lived commands.

Everything here is real: endpoint processes started as deploy starts them, TCP on 127.0.0.1,
HTTP backends (standard library, threads) that answer with their name. Every test's endpoint
processes are stopped in the fixture's teardown, which also checks that none is left running.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from immutrail.cli.endpoint import endpoint_app
from immutrail.deploy.endpoint import (
    Endpoint,
    EndpointError,
    EndpointInputError,
    Files,
    alive,
    list_endpoints,
    proc_start,
)
from immutrail.deploy.errors import DeployInputError
from immutrail.deploy.proxy import Backend
from immutrail.deploy.runtime import RuntimeDriverError

runner = CliRunner()


# --- backends and clients ---------------------------------------------------------------------


class _Named(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: every request picks a backend

    def do_GET(self) -> None:
        body = self.server.name.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True


class NamedBackend:
    def __init__(self, name: str) -> None:
        self.server = _Server(("127.0.0.1", 0), _Named)
        self.server.name = name  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def get(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status == 200, resp.status
        return body
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def backends() -> Iterator[dict[str, NamedBackend]]:
    made = {name: NamedBackend(name) for name in ("A", "B", "C")}
    yield made
    for b in made.values():
        b.close()


def _pids(home: Path) -> set[tuple[int, int]]:
    """(pid, start time) of every endpoint process a state file in ``home`` names."""
    found = set()
    for state in (home / "runtime" / "endpoints").glob("*.json"):
        try:
            with_pid = json.loads(state.read_text())
            found.add((int(with_pid["pid"]), int(with_pid["proc_start"])))
        except (ValueError, KeyError, TypeError):
            continue  # a test damaged it on purpose
    return found


@pytest.fixture
def ehome(tmp_path: Path) -> Iterator[Path]:
    """A home whose endpoint processes are all stopped afterwards, and checked to be gone."""
    home = tmp_path / "home"
    seen: set[tuple[int, int]] = set()
    yield home
    if not (home / "runtime" / "endpoints").is_dir():
        return
    seen |= _pids(home)
    for state in (home / "runtime" / "endpoints").glob("*.json"):
        environment, _, service = state.stem.partition(".")
        Endpoint(home, environment, service).stop()
    seen |= _pids(home)
    left = [pid for pid, started in seen if alive(pid, started)]
    assert not left, f"endpoint processes outlived the test: {left}"


@pytest.fixture
def long_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / ("h" * 60) / ("o" * 60) / ("me" * 30)
    yield home
    seen = _pids(home) if (home / "runtime" / "endpoints").is_dir() else set()
    for state in (home / "runtime" / "endpoints").glob("*.json"):
        environment, _, service = state.stem.partition(".")
        Endpoint(home, environment, service).stop()
    assert not [pid for pid, started in seen if alive(pid, started)]


# --- the lifecycle ----------------------------------------------------------------------------


def test_ensure_switch_drain_stats_stop(ehome: Path, backends: dict[str, NamedBackend]) -> None:
    a, b = backends["A"], backends["B"]
    port = free_port()
    endpoint = Endpoint(ehome, "prod", "web")
    assert endpoint.running() is None

    info = endpoint.ensure(port, [a.addr])
    assert (info.environment, info.service, info.port) == ("prod", "web", port)
    assert info.backends == (Backend("127.0.0.1", a.port),)
    assert info.started_at.endswith("Z") and "T" in info.started_at
    assert alive(info.pid, proc_start(info.pid) or -1) and info.pid != os.getpid()
    assert endpoint.running() == info
    assert [get(port) for _ in range(3)] == ["A", "A", "A"]

    previous = endpoint.switch([b.addr])
    assert previous == (Backend("127.0.0.1", a.port),)
    assert get(port) == "B"
    assert endpoint.drain(previous, timeout=5) == 0
    state = json.loads(endpoint.files.state.read_text())
    assert state["backends"] == [{"host": "127.0.0.1", "port": b.port, "weight": 1}]
    assert state["port"] == port and state["pid"] == info.pid

    stats = endpoint.stats()
    assert (stats.connections, stats.failures, stats.active) == (4, 0, 0)
    by_port = {s.port: s for s in stats.backends}
    assert by_port[a.port].connections == 3 and by_port[b.port].connections == 1
    assert by_port[b.port].bytes_from_backend > 0

    assert list_endpoints(ehome) == [endpoint.running()]

    endpoint.stop()
    assert endpoint.running() is None
    assert not alive(info.pid, state["proc_start"])
    assert not endpoint.files.socket.exists()  # removed on a clean stop
    assert refused(port)
    assert list_endpoints(ehome) == []
    endpoint.stop()  # no-op when not running


def test_ensure_again_returns_the_running_one_untouched(
    ehome: Path, backends: dict[str, NamedBackend]
) -> None:
    port = free_port()
    endpoint = Endpoint(ehome, "prod", "web")
    first = endpoint.ensure(port, [backends["A"].addr])
    again = endpoint.ensure(port, [backends["B"].addr])  # running: backends are not changed
    assert again == first
    assert get(port) == "A"
    with pytest.raises(EndpointInputError, match=f"runs on port {port}, not {port + 1}"):
        endpoint.ensure(port + 1)
    assert endpoint.running() == first


def test_port_taken_by_another_program(ehome: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        endpoint = Endpoint(ehome, "prod", "web")
        with pytest.raises(EndpointInputError, match=f"port {port} is in use by another program"):
            endpoint.ensure(port)
    assert endpoint.running() is None
    assert not endpoint.files.state.exists()  # the failed start changed nothing
    # the lock was released with the failed process: the next ensure starts normally
    assert endpoint.ensure(port).port == port


def test_port_taken_by_another_endpoint_is_named(ehome: Path) -> None:
    port = free_port()
    Endpoint(ehome, "prod", "web").ensure(port)
    with pytest.raises(EndpointInputError, match="in use by the endpoint of prod/web"):
        Endpoint(ehome, "prod", "api").ensure(port)


@pytest.mark.parametrize("name", ["Prod", "a.b", "", "-x", "x" * 64, "a/b", "é"])
def test_bad_names_are_input_errors(ehome: Path, name: str) -> None:
    with pytest.raises(EndpointInputError, match="invalid environment name"):
        Endpoint(ehome, name, "web")
    with pytest.raises(EndpointInputError, match="invalid service name"):
        Endpoint(ehome, "prod", name)
    assert not ehome.exists()


def test_errors_belong_to_the_families_the_cli_maps() -> None:
    # input -> exit 2 (DeployInputError), the rest -> exit 3 (RuntimeDriverError)
    assert issubclass(EndpointInputError, DeployInputError)
    assert issubclass(EndpointInputError, EndpointError)
    assert issubclass(EndpointError, RuntimeDriverError)
    assert not issubclass(EndpointError, DeployInputError)


@pytest.mark.parametrize("port", [0, -1, 65536, True, "8080", 8080.0])
def test_bad_port_is_refused_before_anything_starts(ehome: Path, port: object) -> None:
    with pytest.raises(EndpointInputError, match="invalid endpoint port"):
        Endpoint(ehome, "prod", "web").ensure(port)  # type: ignore[arg-type]
    assert not ehome.exists()


def test_bad_backend_sets_change_nothing(ehome: Path, backends: dict[str, NamedBackend]) -> None:
    endpoint = Endpoint(ehome, "prod", "web")
    port = free_port()
    with pytest.raises(EndpointInputError, match="loopback"):
        endpoint.ensure(port, [("10.0.0.1", 80)])
    assert endpoint.running() is None and not ehome.exists()

    endpoint.ensure(port, [backends["A"].addr])
    before = endpoint.files.state.read_text()
    for bad in (
        [("192.168.1.1", 80)],
        [("example.com", 80)],
        [("127.0.0.1", 0)],
        [("127.0.0.1", 8000, -1)],
        [backends["B"].addr, backends["B"].addr],
    ):
        with pytest.raises(EndpointInputError):
            endpoint.switch(bad)
    with pytest.raises(EndpointInputError, match="drain timeout"):
        endpoint.drain([backends["A"].addr], -1)
    assert endpoint.files.state.read_text() == before
    assert get(port) == "A"


def test_a_service_without_endpoint_process(ehome: Path) -> None:
    endpoint = Endpoint(ehome, "prod", "web", timeout=2)
    assert endpoint.running() is None
    assert list_endpoints(ehome) == []
    endpoint.stop()  # no-op
    for call in (
        lambda: endpoint.switch([]),
        endpoint.stats,
        lambda: endpoint.drain([], 1),
    ):
        with pytest.raises(EndpointError, match="no endpoint process runs for prod/web") as err:
            call()
        assert not isinstance(err.value, EndpointInputError)


# --- one process per service ------------------------------------------------------------------


def test_concurrent_ensure_in_threads_starts_one_process(ehome: Path) -> None:
    port = free_port()
    barrier = threading.Barrier(6)
    results: list[int] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            barrier.wait()
            results.append(Endpoint(ehome, "prod", "web").ensure(port).pid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results) == 6 and len(set(results)) == 1
    log = Files(ehome, "prod", "web").log.read_text()
    assert log.count("endpoint prod/web (pid") == 1, log


def test_concurrent_ensure_in_processes_starts_one_process(ehome: Path) -> None:
    port = free_port()
    go = ehome.parent / "go"
    script = (
        "import sys, time, pathlib\n"
        "from immutrail.deploy.endpoint import Endpoint\n"
        "go = pathlib.Path(sys.argv[2])\n"
        "while not go.exists(): time.sleep(0.005)\n"
        "print(Endpoint(pathlib.Path(sys.argv[1]), 'prod', 'web').ensure(int(sys.argv[3])).pid)\n"
    )
    callers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(ehome), str(go), str(port)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    time.sleep(0.5)  # let every caller import and wait on the go file
    go.touch()
    pids = [int(c.communicate(timeout=60)[0]) for c in callers]
    assert all(c.returncode == 0 for c in callers)
    assert len(set(pids)) == 1
    assert Files(ehome, "prod", "web").log.read_text().count("endpoint prod/web (pid") == 1


# --- surviving, crashing, restarting ----------------------------------------------------------


def test_sigkill_then_ensure_resumes_port_and_backends(
    ehome: Path, backends: dict[str, NamedBackend]
) -> None:
    port = free_port()
    endpoint = Endpoint(ehome, "prod", "web")
    first = endpoint.ensure(port, [backends["A"].addr])
    endpoint.switch([backends["B"].addr, (*backends["C"].addr, 0)])
    started = proc_start(first.pid)
    assert started is not None

    os.kill(first.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while alive(first.pid, started) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert endpoint.running() is None  # the state file names a dead pid
    assert endpoint.files.socket.exists()  # left behind by the killed process

    second = endpoint.ensure(port)
    assert second.pid != first.pid and second.port == port
    assert second.backends == (
        Backend("127.0.0.1", backends["B"].port),
        Backend("127.0.0.1", backends["C"].port, 0),
    )
    assert {get(port) for _ in range(5)} == {"B"}


def test_stale_state_file_with_a_reused_pid(ehome: Path, backends: dict[str, NamedBackend]) -> None:
    port = free_port()
    endpoint = Endpoint(ehome, "prod", "web")
    endpoint.ensure(port, [backends["A"].addr])
    endpoint.stop()
    state = json.loads(endpoint.files.state.read_text())
    # The pid now belongs to another live process (this test's): its start time differs.
    state["pid"] = os.getpid()
    endpoint.files.state.write_text(json.dumps(state))
    assert endpoint.running() is None
    assert list_endpoints(ehome) == []
    endpoint.stop()  # must not signal the process that reuses the pid (this one)

    info = endpoint.ensure(port)
    assert info.pid != os.getpid()
    assert info.backends == (Backend("127.0.0.1", backends["A"].port),)


def test_stale_state_file_with_a_dead_pid(ehome: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = int(done.stdout)
    endpoint = Endpoint(ehome, "prod", "web")
    endpoint.files.make_folder()
    endpoint.files.write_state(
        {
            "pid": dead,
            "proc_start": 1,
            "port": 1,
            "started_at": "2026-01-01T00:00:00Z",
            "backends": [],
        }
    )
    assert endpoint.running() is None
    port = free_port()
    assert endpoint.ensure(port).port == port


def test_damaged_state_file_is_a_clear_error(ehome: Path) -> None:
    endpoint = Endpoint(ehome, "prod", "web")
    endpoint.files.make_folder()
    endpoint.files.state.write_text('{"pid": "nope"}')
    started = time.monotonic()
    with pytest.raises(EndpointError, match=r"state file .* is damaged .* remove the file"):
        endpoint.ensure(free_port())
    assert time.monotonic() - started < 5  # fails at once, not after the start timeout


def test_sigterm_stops_cleanly(ehome: Path, backends: dict[str, NamedBackend]) -> None:
    port = free_port()
    endpoint = Endpoint(ehome, "prod", "web")
    info = endpoint.ensure(port, [backends["A"].addr])
    started = proc_start(info.pid)
    assert started is not None
    client = socket.create_connection(("127.0.0.1", port), timeout=10)  # an open connection
    deadline = time.monotonic() + 10
    while endpoint.stats().active < 1 and time.monotonic() < deadline:
        time.sleep(0.01)

    os.kill(info.pid, signal.SIGTERM)
    while alive(info.pid, started) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not alive(info.pid, started)
    try:
        assert client.recv(1) == b""  # the endpoint closed it
    except ConnectionResetError:
        pass
    finally:
        client.close()
    assert not endpoint.files.socket.exists()
    assert refused(port)
    assert "endpoint prod/web stopped" in endpoint.files.log.read_text()


def test_the_process_is_detached(ehome: Path) -> None:
    info = Endpoint(ehome, "prod", "web").ensure(free_port())
    assert os.getsid(info.pid) != os.getsid(0)  # a session of its own
    stat_fields = Path(f"/proc/{info.pid}/stat").read_text().rsplit(")", 1)[1].split()
    assert int(stat_fields[1]) != os.getpid()  # re-parented: never our zombie
    assert os.readlink(f"/proc/{info.pid}/fd/0") == "/dev/null"
    log = str(Files(ehome, "prod", "web").log)
    assert os.readlink(f"/proc/{info.pid}/fd/1") == log
    assert os.readlink(f"/proc/{info.pid}/fd/2") == log
    assert os.readlink(f"/proc/{info.pid}/cwd") == "/"


def test_files_are_private(ehome: Path) -> None:
    endpoint = Endpoint(ehome, "prod", "web")
    endpoint.ensure(free_port())
    assert stat.S_IMODE(endpoint.files.folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(endpoint.files.socket.stat().st_mode) == 0o600
    assert stat.S_IMODE(endpoint.files.state.stat().st_mode) == 0o600
    assert stat.S_ISSOCK(endpoint.files.socket.stat().st_mode)


def test_a_linked_endpoints_folder_is_refused(ehome: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (ehome / "runtime").mkdir(parents=True)
    (ehome / "runtime" / "endpoints").symlink_to(elsewhere)
    with pytest.raises(EndpointError, match="not a folder"):
        Endpoint(ehome, "prod", "web").ensure(free_port())
    assert list(elsewhere.iterdir()) == []


def test_long_home_path(long_home: Path, backends: dict[str, NamedBackend]) -> None:
    endpoint = Endpoint(long_home, "production", "a-rather-long-service-name")
    assert len(str(endpoint.files.socket).encode()) > 107  # too long for a sockaddr_un
    port = free_port()
    info = endpoint.ensure(port, [backends["A"].addr])
    started = proc_start(info.pid)
    assert get(port) == "A"
    endpoint.switch([backends["B"].addr])
    assert get(port) == "B"
    assert endpoint.files.socket.exists()
    assert list_endpoints(long_home) == [endpoint.running()]
    endpoint.stop()
    assert endpoint.running() is None and started is not None and not alive(info.pid, started)


# --- errors from a process that misbehaves ----------------------------------------------------


@pytest.fixture
def impostor(ehome: Path) -> Iterator[Callable[[bytes | None], Endpoint]]:
    """A state file naming a live process (a sleep) and a control socket we answer ourselves:
    with ``reply`` (None: never answer)."""
    sleeper = subprocess.Popen(["sleep", "60"])
    listener = socket.socket(socket.AF_UNIX)
    stop = threading.Event()

    def make(reply: bytes | None) -> Endpoint:
        endpoint = Endpoint(ehome, "prod", "web", timeout=0.5)
        endpoint.files.make_folder()
        started = proc_start(sleeper.pid)
        endpoint.files.write_state(
            {
                "pid": sleeper.pid,
                "proc_start": started,
                "port": 1,
                "started_at": "2026-01-01T00:00:00Z",
                "backends": [],
            }
        )
        with endpoint.files.socket_address() as address:
            listener.bind(address)
        listener.listen()
        listener.settimeout(0.1)

        def serve() -> None:
            held = []
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                conn.recv(4096)
                if reply is None:
                    held.append(conn)
                else:
                    conn.sendall(reply)
                    conn.close()
            for conn in held:
                conn.close()

        server.append(threading.Thread(target=serve, daemon=True))
        server[0].start()
        return endpoint

    server: list[threading.Thread] = []
    yield make
    stop.set()
    for thread in server:
        thread.join(10)
    listener.close()
    sleeper.kill()
    sleeper.wait()


def test_a_malformed_answer_is_an_endpoint_error(
    impostor: Callable[[bytes | None], Endpoint],
) -> None:
    endpoint = impostor(b"this is not json\n")
    with pytest.raises(EndpointError, match="answered to 'info'"):
        endpoint.running()
    with pytest.raises(EndpointError, match="answered to 'stats'"):
        endpoint.stats()


def test_a_wrong_shaped_answer_is_an_endpoint_error(
    impostor: Callable[[bytes | None], Endpoint],
) -> None:
    endpoint = impostor(b'{"ok": true, "result": {"port": "x"}}\n')
    with pytest.raises(EndpointError, match="malformed answer"):
        endpoint.running()


def test_no_answer_is_an_endpoint_error_and_stop_falls_back_to_signals(
    impostor: Callable[[bytes | None], Endpoint],
) -> None:
    endpoint = impostor(None)
    started = time.monotonic()
    with pytest.raises(EndpointError, match=r"did not answer 'info' within 0.5 s"):
        endpoint.running()
    assert time.monotonic() - started < 3
    assert list_endpoints(endpoint.home) == []  # left out, with a warning
    state = json.loads(endpoint.files.state.read_text())
    endpoint.stop()  # the "process" does not answer: SIGTERM ends it
    assert not alive(state["pid"], state["proc_start"])


# --- the control protocol ---------------------------------------------------------------------


def _raw(endpoint: Endpoint, payload: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX) as sock, endpoint.files.socket_address() as address:
        sock.settimeout(5)
        sock.connect(address)
        sock.sendall(payload)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    answer: dict[str, Any] = json.loads(reply)
    return answer


def test_control_protocol_refuses_bad_requests(ehome: Path) -> None:
    endpoint = Endpoint(ehome, "prod", "web")
    endpoint.ensure(free_port())
    for payload, message in (
        (b"not json\n", "Expecting value"),
        (b"[1, 2]\n", "a request is a JSON object"),
        (b'{"command": "reboot"}\n', "unknown command 'reboot'"),
        (b'{"command": "switch", "backends": [{"host": "8.8.8.8", "port": 53}]}\n', "loopback"),
        (
            b'{"command": "switch", "backends": [{"host": "127.0.0.1", "port": 5, "x": 1}]}\n',
            "a backend is",
        ),
        (b'{"command": "drain", "backends": [], "timeout": "soon"}\n', "drain timeout"),
        (b"x" * (1024 * 1024 + 10) + b"\n", "request too long"),
    ):
        answer = _raw(endpoint, payload)
        assert answer["ok"] is False and answer["kind"] == "input", answer
        assert message in answer["error"], answer
    assert endpoint.running() is not None and endpoint.running().backends == ()  # type: ignore[union-attr]
    # several requests on one connection
    with socket.socket(socket.AF_UNIX) as sock, endpoint.files.socket_address() as address:
        sock.connect(address)
        sock.sendall(b'{"command": "info"}\n{"command": "stats"}\n')
        reader = sock.makefile("rb")
        first, second = json.loads(reader.readline()), json.loads(reader.readline())
    assert first["result"]["service"] == "web" and "connections" in second["result"]


# --- load -------------------------------------------------------------------------------------


def test_no_request_fails_across_switches_under_load(
    ehome: Path, backends: dict[str, NamedBackend]
) -> None:
    port = free_port()
    endpoint = Endpoint(ehome, "prod", "web")
    names = ["A", "B", "C"]
    endpoint.ensure(port, [backends["A"].addr])
    seen: Counter[str] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + 2.0  # bounded: 2 s of requests

    def client() -> None:
        while time.monotonic() < deadline:
            try:
                name = get(port)
            except (OSError, AssertionError, http.client.HTTPException) as exc:
                with lock:
                    errors.append(repr(exc))
                continue
            with lock:
                seen[name] += 1

    clients = [threading.Thread(target=client) for _ in range(4)]
    for c in clients:
        c.start()
    switch_times: list[float] = []
    undrained = 0
    i = 0
    while time.monotonic() < deadline - 0.2:
        time.sleep(0.15)
        i += 1
        t0 = time.perf_counter()
        old = endpoint.switch([backends[names[i % 3]].addr])
        switch_times.append(time.perf_counter() - t0)
        undrained += endpoint.drain(old, timeout=10)
    for c in clients:
        c.join(30)
    assert errors == []
    assert undrained == 0
    assert len(switch_times) >= 5
    assert set(seen) == set(names), seen
    assert sum(seen.values()) >= 50, seen
    stats = endpoint.stats()
    assert stats.failures == 0 and stats.connections == sum(seen.values())


# --- the CLI ----------------------------------------------------------------------------------


def cli(home: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(endpoint_app, [*args, "--home", str(home)])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout


def cli_json(home: Path, *args: str, code: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(cli(home, *args, "--format", "json", code=code))
    assert data["schema_version"] == 1
    return data


def test_cli_start_list_show_stop(ehome: Path, backends: dict[str, NamedBackend]) -> None:
    port = free_port()
    a = backends["A"]
    assert cli_json(ehome, "list") == {"schema_version": 1, "endpoints": []}
    assert "no endpoint process runs" in cli(ehome, "list")

    started = cli_json(
        ehome, "start", "prod", "web", "--port", str(port), "--backend", f"127.0.0.1:{a.port}:3"
    )
    assert started["started"] is True
    assert started["endpoint"]["backends"] == [{"host": "127.0.0.1", "port": a.port, "weight": 3}]
    assert "already running" in cli(ehome, "start", "prod", "web", "--port", str(port))
    assert get(port) == "A"

    listed = cli_json(ehome, "list")["endpoints"]
    assert [(e["environment"], e["service"], e["port"]) for e in listed] == [("prod", "web", port)]
    text = cli(ehome, "list")
    assert "prod/web" in text and f"127.0.0.1:{port}" in text

    shown = cli_json(ehome, "show", "prod", "web")
    assert shown["running"] is True and shown["endpoint"]["port"] == port
    assert shown["stats"]["connections"] == 1
    assert shown["files"]["log"].endswith("prod.web.log")
    text = cli(ehome, "show", "prod", "web")
    assert "running" in text and f"127.0.0.1:{a.port}" in text

    stopped = cli_json(ehome, "stop", "prod", "web")
    assert stopped["stopped"] is True and stopped["pid"] == started["endpoint"]["pid"]
    assert "not running" in cli(ehome, "stop", "prod", "web")
    assert cli_json(ehome, "stop", "prod", "web")["stopped"] is False
    shown = cli_json(ehome, "show", "prod", "web")
    assert shown["running"] is False and shown["stats"] is None
    assert "not running" in cli(ehome, "show", "prod", "web")


def test_cli_errors_have_exit_codes(ehome: Path) -> None:
    port = free_port()
    cli(ehome, "show", "Prod", "web", code=2)
    cli(ehome, "start", "prod", "web", "--port", "0", code=2)
    cli(ehome, "start", "prod", "web", "--port", str(port), "--backend", "10.1.1.1:80", code=2)
    cli(ehome, "start", "prod", "web", "--port", str(port), "--backend", "127.0.0.1", code=2)
    cli(ehome, "start", "prod", "web", "--port", str(port), "--backend", "127.0.0.1:x", code=2)
    assert list_endpoints(ehome) == []
    cli(ehome, "start", "prod", "web", "--port", str(port))
    cli(ehome, "start", "prod", "web", "--port", str(port + 1), code=2)  # runs on another port
    endpoint = Endpoint(ehome, "prod", "web")
    pid = endpoint.running().pid  # type: ignore[union-attr]
    started = proc_start(pid)
    endpoint.files.state.write_text("{")
    result = runner.invoke(endpoint_app, ["show", "prod", "web", "--home", str(ehome)])
    assert result.exit_code == 3 and "damaged" in result.stderr
    # stop still works: asked over the socket, waited for by the lock
    assert cli_json(ehome, "stop", "prod", "web")["stopped"] is True
    assert started is not None and not alive(pid, started)


def test_cli_caller_pipe_closes_when_the_cli_exits(ehome: Path) -> None:
    """The endpoint process must not keep the caller's stdout: run() would hang until timeout."""
    port = free_port()
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from immutrail.cli.endpoint import endpoint_app; endpoint_app()",
            "start",
            "prod",
            "web",
            "--port",
            str(port),
            "--home",
            str(ehome),
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)["endpoint"]
    assert Endpoint(ehome, "prod", "web").running() is not None  # it outlived its caller
    assert info["port"] == port
