"""The built-in service endpoint: lossless switches under load, drain, retry, weights, loopback.

Backends are real HTTP servers (standard library, threads) on free loopback ports that answer with
their name; clients are real sockets with keep-alive off, so every request is a new connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from immutrail.deploy.proxy import (
    Backend,
    Proxy,
    ProxyAddressError,
    ProxyServer,
    ProxyStateError,
    backend_set,
)

BIG = hashlib.sha256(b"seed").digest() * (8 * 1024 * 1024 // 32)  # 8 MiB


class _Named(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection

    def do_GET(self) -> None:
        body = self.server.name.encode()  # type: ignore[attr-defined]
        if self.path == "/big":
            body = BIG
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        pass


class _QuietServer(ThreadingHTTPServer):
    request_queue_size = 128

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client the proxy cut off on stop(): expected in these tests, not worth a trace


class NamedBackend:
    """A named HTTP backend on a free loopback port, in a thread; kill() closes its socket."""

    def __init__(self, name: str) -> None:
        self.server = _QuietServer(("127.0.0.1", 0), _Named)
        self.server.name = name  # type: ignore[attr-defined]
        self.name = name
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.alive = True

    @property
    def addr(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def kill(self) -> None:
        if self.alive:
            self.alive = False
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()


@pytest.fixture
def backends() -> Iterator[dict[str, NamedBackend]]:
    made = {name: NamedBackend(name) for name in ("A", "B", "C")}
    yield made
    for b in made.values():
        b.kill()


def get(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read().decode()
        if resp.status != 200:
            raise AssertionError(f"status {resp.status}")
        return body
    finally:
        conn.close()


def dead_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Load:
    """Bounded load: ``threads`` clients until ``total`` requests or ``seconds`` have passed
    (generous, for a busy machine: 2,000 requests take about 3 s here)."""

    def __init__(self, port: int, threads: int = 4, total: int = 2000, seconds: float = 30.0):
        self.port, self.total, self.deadline = port, total, time.monotonic() + seconds
        self.names: Counter[str] = Counter()
        self.errors: list[str] = []
        self.done = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while time.monotonic() < self.deadline:
            with self.lock:
                if self.done >= self.total:
                    return
                self.done += 1
            try:
                name = get(self.port)
            except Exception as exc:  # every failure is recorded, the load goes on
                with self.lock:
                    self.errors.append(repr(exc))
            else:
                with self.lock:
                    self.names[name] += 1

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def wait_for(self, count: int) -> None:
        while self.done < count and time.monotonic() < self.deadline:
            time.sleep(0.005)

    def join(self) -> None:
        for t in self.threads:
            t.join()


def test_switches_under_load_lose_no_request(backends: dict[str, NamedBackend]) -> None:
    a, b, c = backends["A"], backends["B"], backends["C"]
    with ProxyServer([a.addr]) as proxy:
        load = Load(proxy.port).start()
        order = [b, a, b, a, b]
        for step, new in enumerate(order, start=1):
            load.wait_for(step * 200)
            old = proxy.switch([new.addr])
            assert proxy.drain(old, timeout=10) == 0
            assert proxy.stats().backend(*old[0].address).active == 0  # type: ignore[union-attr]
        # A was switched away from and drained: destroying it now must cost nothing.
        a.kill()
        load.wait_for(1200)
        # C joins; B leaves, and B is killed only after the drain.
        old = proxy.switch([c.addr])
        assert proxy.drain(old, timeout=10) == 0
        b.kill()
        load.join()
    stats = proxy.stats()  # final counts, after stop

    assert load.errors == []
    assert load.done >= 1300, load.done  # the load ran long enough to see every switch
    assert set(load.names) == {"A", "B", "C"}
    assert stats.failures == 0
    assert stats.connections == sum(load.names.values())
    assert stats.active == 0
    assert len(stats.backends) == 3
    for bs in stats.backends:
        assert bs.connect_failures == 0
        assert bs.active == 0
        assert bs.bytes_to_backend > 0 and bs.bytes_from_backend > 0


def test_connect_failure_retried_on_another_backend(backends: dict[str, NamedBackend]) -> None:
    live = backends["A"]
    dead = ("127.0.0.1", dead_port())
    # The dead backend gets most new connections: most clients hit it first and are retried.
    with ProxyServer([(*dead, 9), (*live.addr, 1)], rng=random.Random(7)) as proxy:
        names = [get(proxy.port) for _ in range(40)]
        stats = proxy.stats()
    assert names == ["A"] * 40
    assert stats.failures == 0
    dead_stats = stats.backend(*dead)
    assert dead_stats is not None and dead_stats.connect_failures > 20
    assert dead_stats.connections == 0


def test_no_backend_left_is_a_counted_failure(backends: dict[str, NamedBackend]) -> None:
    with ProxyServer([("127.0.0.1", dead_port())]) as proxy:
        with pytest.raises((http.client.HTTPException, OSError)):
            get(proxy.port)
        proxy.switch([])
        with pytest.raises((http.client.HTTPException, OSError)):
            get(proxy.port)
        proxy.switch([backends["B"].addr])
        assert get(proxy.port) == "B"
        stats = proxy.stats()
    assert stats.failures == 2
    assert stats.connections == 3


def test_weighted_split(backends: dict[str, NamedBackend]) -> None:
    a, b = backends["A"], backends["B"]
    with ProxyServer([(*a.addr, 80), (*b.addr, 20)], rng=random.Random(1)) as proxy:
        seen = Counter(get(proxy.port) for _ in range(600))
        # a canary at 0 % keeps its backend in the set but sends it nothing
        proxy.switch([(*a.addr, 1), (*b.addr, 0)])
        after = Counter(get(proxy.port) for _ in range(50))
    assert 0.14 <= seen["B"] / 600 <= 0.26, seen
    assert after == {"A": 50}


def test_drain_waits_for_open_connection(backends: dict[str, NamedBackend]) -> None:
    a, b = backends["A"], backends["B"]
    with ProxyServer([a.addr]) as proxy:
        held = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        held.sendall(b"GET / HTTP/1.0\r\n")  # the request is not finished: A waits for it
        deadline = time.monotonic() + 10
        while proxy.stats().backend(*a.addr) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        old = proxy.switch([b.addr])
        assert get(proxy.port) == "B"  # new connections go to the new set at once
        assert proxy.drain(old, timeout=0.2) == 1  # the old connection is still open
        held.sendall(b"\r\n")  # it finishes on its old backend
        reply = b""
        while chunk := held.recv(4096):
            reply += chunk
        held.close()
        assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"A")
        assert proxy.drain(old, timeout=10) == 0
        stats = proxy.stats()
    assert stats.failures == 0


def test_stop_closes_everything(backends: dict[str, NamedBackend]) -> None:
    proxy = ProxyServer([backends["A"].addr]).start()
    port = proxy.port
    held = socket.create_connection(("127.0.0.1", port), timeout=10)
    held.sendall(b"GET / HTTP/1.0\r\n")
    deadline = time.monotonic() + 10
    while proxy.stats().active == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    proxy.stop()
    # the proxy aborts open connections: the client sees a reset, or an end of stream
    with contextlib.suppress(ConnectionResetError):
        assert held.recv(4096) == b""
    held.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    with pytest.raises(ProxyStateError):
        proxy.switch([backends["B"].addr])
    proxy.stop()  # idempotent


@pytest.mark.parametrize(
    "bad",
    [
        [("10.0.0.1", 80)],
        [("192.168.1.10", 8080)],
        [("0.0.0.0", 80)],
        [("example.com", 80)],
        [("::", 80)],
        [("127.0.0.1", 0)],
        [("127.0.0.1", 70000)],
        [("127.0.0.1", 80, -1)],
        [("127.0.0.1", 80), ("127.0.0.1", 80)],
        [("127.0.0.1",)],
    ],
)
def test_non_loopback_or_malformed_backend_refused(
    bad: list[tuple[object, ...]], backends: dict[str, NamedBackend]
) -> None:
    with pytest.raises(ProxyAddressError):
        backend_set(bad)  # type: ignore[arg-type]
    with pytest.raises(ProxyAddressError):
        ProxyServer(bad)  # type: ignore[arg-type]
    with ProxyServer([backends["A"].addr]) as proxy:
        with pytest.raises(ProxyAddressError):
            proxy.switch(bad)  # type: ignore[arg-type]
        assert proxy.backends == (Backend("127.0.0.1", backends["A"].port),)  # unchanged
        assert get(proxy.port) == "A"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.1.2.3", "::", "example.com"])
def test_non_loopback_listen_refused(host: str) -> None:
    with pytest.raises(ProxyAddressError):
        ProxyServer(host=host)
    with pytest.raises(ProxyAddressError):
        Proxy(host=host)


def test_localhost_and_ipv6_loopback_accepted() -> None:
    assert backend_set([("localhost", 8080), ("::1", 8081, 3)]) == (
        Backend("127.0.0.1", 8080, 1),
        Backend("::1", 8081, 3),
    )


def test_large_reply_to_slow_reader_arrives_intact(backends: dict[str, NamedBackend]) -> None:
    """Flow control: a client reading slower than the backend sends gets every byte, in order."""
    with ProxyServer([backends["A"].addr]) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
            s.sendall(b"GET /big HTTP/1.0\r\n\r\n")
            reply = bytearray()
            while chunk := s.recv(65536):
                reply += chunk
                if len(reply) < 1024 * 1024:
                    time.sleep(0.002)  # slow at first, so the proxy's buffers fill up
        stats = proxy.stats()
    head, _, body = bytes(reply).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200")
    assert body == BIG
    a = stats.backend(*backends["A"].addr)
    assert a is not None and a.bytes_from_backend == len(reply)


def test_client_gone_mid_request_closes_backend_connection(
    backends: dict[str, NamedBackend],
) -> None:
    a = backends["A"]
    with ProxyServer([a.addr]) as proxy:
        held = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        held.sendall(b"GET / HTTP/1.0\r\n")
        deadline = time.monotonic() + 10
        while proxy.stats().backend(*a.addr) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        held.close()  # a reset, not a clean close
        assert proxy.drain([a.addr], timeout=10) == 0
        stats = proxy.stats()
    assert stats.active == 0
    assert stats.failures == 0  # it reached a backend: not a proxy failure
