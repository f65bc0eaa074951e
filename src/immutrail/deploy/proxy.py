"""The built-in service endpoint: a small asyncio TCP proxy whose backend set switches in one step.

Blue/green and canary deployments on the embedded default send traffic through this proxy on a
loopback port. The backend set is one immutable tuple: :meth:`Proxy.switch` replaces it, and from
then on every new client connection goes to the new set, while connections already open keep
running to their old backend until either side closes them. :meth:`Proxy.drain` waits until no
connection to a given set is open, after which those instances can be destroyed without cutting a
request. A connect that fails is retried on another backend of the current set before the client
has seen a byte, so a backend that died between its health check and the connect costs nothing.

Hand-written on asyncio transports rather than taken from a library: the job is byte relaying
with flow control, and the switch/drain semantics (per-connection backend snapshot, open-connection
accounting per backend) are exactly what the deploy strategies need and what general proxies
(haproxy, envoy) only offer through a reload or an admin API we would have to install and drive.

Loopback only: listening on, or forwarding to, anything but a loopback address is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024
DEFAULT_CONNECT_TIMEOUT = 2.0


class ProxyError(Exception):
    """Base of the service endpoint's errors."""

    def diagnostics(self) -> str:
        return str(self)


class ProxyAddressError(ProxyError, ValueError):
    """An address that is not a loopback IP address and port, or a malformed backend set."""


class ProxyStateError(ProxyError, RuntimeError):
    """The proxy was used in a state that does not allow it (not started, started twice)."""


@dataclass(frozen=True)
class Backend:
    """One instance's loopback address, and its share of new connections (canary percentages).

    A weight of 0 keeps the backend in the set without sending it new connections.
    """

    host: str
    port: int
    weight: int = 1

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)


BackendLike: TypeAlias = Backend | tuple[str, int] | tuple[str, int, int]
Address: TypeAlias = tuple[str, int]


def loopback_host(host: str) -> str:
    """``host`` as a loopback IP literal (``localhost`` becomes ``127.0.0.1``), else refused.

    Names other than ``localhost`` are refused rather than resolved: what a name resolves to can
    change between the check and the connect.
    """
    if host == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ProxyAddressError(
            f"{host!r} is not an IP address: the service endpoint only uses loopback addresses"
        ) from None
    if not ip.is_loopback:
        raise ProxyAddressError(
            f"{host} is not a loopback address: the service endpoint never leaves this machine"
        )
    return str(ip)


def _port(port: object, *, allow_zero: bool) -> int:
    if not isinstance(port, int) or isinstance(port, bool) or not (0 <= port <= 65535):
        raise ProxyAddressError(f"invalid port {port!r}")
    if port == 0 and not allow_zero:
        raise ProxyAddressError("a backend needs a port, not 0")
    return port


def backend_set(backends: Iterable[BackendLike]) -> tuple[Backend, ...]:
    """Validate and normalise a backend set; refuse duplicates, negative weights, non-loopback."""
    out: list[Backend] = []
    seen: set[Address] = set()
    for item in backends:
        if isinstance(item, Backend):
            host, port, weight = item.host, item.port, item.weight
        elif isinstance(item, tuple) and len(item) in (2, 3):
            host, port = item[0], item[1]
            weight = item[2] if len(item) == 3 else 1
        else:
            raise ProxyAddressError(f"a backend is (host, port) or (host, port, weight): {item!r}")
        if not isinstance(host, str):
            raise ProxyAddressError(f"invalid backend host {host!r}")
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise ProxyAddressError(f"a backend weight is an integer >= 0, not {weight!r}")
        backend = Backend(loopback_host(host), _port(port, allow_zero=False), weight)
        if backend.address in seen:
            raise ProxyAddressError(f"backend {backend.host}:{backend.port} is listed twice")
        seen.add(backend.address)
        out.append(backend)
    return tuple(out)


@dataclass(frozen=True)
class BackendStats:
    host: str
    port: int
    connections: int
    """Client connections forwarded to this backend (connect succeeded)."""
    connect_failures: int
    """Connect attempts that failed (then retried elsewhere, or counted as a proxy failure)."""
    active: int
    """Connections to this backend open now, including one being connected."""
    bytes_to_backend: int
    bytes_from_backend: int


@dataclass(frozen=True)
class ProxyStats:
    connections: int
    """Client connections accepted."""
    failures: int
    """Client connections closed without reaching any backend."""
    active: int
    """Client connections open now."""
    backends: tuple[BackendStats, ...]
    """Every backend that ever took or was tried for a connection, sorted by address."""

    def backend(self, host: str, port: int) -> BackendStats | None:
        return next((b for b in self.backends if (b.host, b.port) == (host, port)), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "failures": self.failures,
            "active": self.active,
            "backends": [vars(b) for b in self.backends],
        }


class _Counters:
    __slots__ = ("active", "bytes_down", "bytes_up", "connect_failures", "connections")

    def __init__(self) -> None:
        self.connections = 0
        self.connect_failures = 0
        self.active = 0
        self.bytes_up = 0
        self.bytes_down = 0


class Proxy:
    """The proxy on an event loop. Every method must be called on that loop's thread;
    :class:`ProxyServer` runs one in a background thread for synchronous callers."""

    def __init__(
        self,
        backends: Iterable[BackendLike] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        self._host = loopback_host(host)
        self._requested_port = _port(port, allow_zero=True)
        if connect_timeout <= 0:
            raise ProxyAddressError(f"connect timeout must be > 0, not {connect_timeout!r}")
        self._connect_timeout = connect_timeout
        self._backends = backend_set(backends)
        # Spreading load, not a security decision: a seedable PRNG keeps tests reproducible.
        self._rng = rng or random.Random()  # noqa: S311
        self._server: asyncio.Server | None = None
        self._clients: set[_ClientSide] = set()
        self._counters: dict[Address, _Counters] = {}
        self._connections = 0
        self._failures = 0
        self._drain_waiters: set[asyncio.Event] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            raise ProxyStateError("the proxy is already started")
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _ClientSide(self), self._host, self._requested_port, reuse_address=True
        )
        logger.info("service endpoint listening on %s:%d", self._host, self.port)

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        if self._server is None:
            raise ProxyStateError("the proxy is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop listening and close every open connection, both sides."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        clients = list(self._clients)
        for client in clients:
            client.abort()
        if clients:
            # aborted transports report their loss on the next loop turns; bounded all the same
            await asyncio.wait([c.finished for c in clients], timeout=5)
        if server is not None:
            await server.wait_closed()

    # -- backend set -------------------------------------------------------------------------

    @property
    def backends(self) -> tuple[Backend, ...]:
        return self._backends

    def switch(self, backends: Iterable[BackendLike]) -> tuple[Backend, ...]:
        """Replace the backend set in one step; returns the previous set (to drain).

        The new set is validated first: a bad set raises and the current set stays.
        """
        new = backend_set(backends)
        old, self._backends = self._backends, new
        logger.info(
            "service endpoint %s:%s now -> %s",
            self._host,
            self._server and self.port,
            ", ".join(f"{b.host}:{b.port}x{b.weight}" for b in new) or "(nothing)",
        )
        return old

    async def drain(self, old: Iterable[BackendLike], timeout: float) -> int:
        """Wait up to ``timeout`` seconds until no connection to ``old`` is open.

        Returns the number of connections to ``old`` still open (0: drained). Backends of ``old``
        that are also in the current set keep taking new connections, so drain only what was
        switched away from.
        """
        addresses = {b.address for b in backend_set(old)}

        def remaining() -> int:
            return sum(self._counters[a].active for a in addresses if a in self._counters)

        deadline = asyncio.get_running_loop().time() + timeout
        while remaining() > 0:
            # one wake-up per closed connection while someone drains; none otherwise
            changed = asyncio.Event()
            self._drain_waiters.add(changed)
            try:
                async with asyncio.timeout_at(deadline):
                    await changed.wait()
            except TimeoutError:
                break
            finally:
                self._drain_waiters.discard(changed)
        return remaining()

    def stats(self) -> ProxyStats:
        return ProxyStats(
            connections=self._connections,
            failures=self._failures,
            active=len(self._clients),
            backends=tuple(
                BackendStats(
                    host=a[0],
                    port=a[1],
                    connections=c.connections,
                    connect_failures=c.connect_failures,
                    active=c.active,
                    bytes_to_backend=c.bytes_up,
                    bytes_from_backend=c.bytes_down,
                )
                for a, c in sorted(self._counters.items())
            ),
        )

    # -- connections -------------------------------------------------------------------------

    def _pick(self, tried: set[Address]) -> Backend | None:
        """A weighted choice among the current set's backends not tried yet for this client."""
        candidates = [b for b in self._backends if b.weight > 0 and b.address not in tried]
        if not candidates:
            return None
        return self._rng.choices(candidates, weights=[b.weight for b in candidates])[0]

    def _counters_for(self, backend: Backend) -> _Counters:
        return self._counters.setdefault(backend.address, _Counters())

    def _backend_closed(self, counters: _Counters) -> None:
        counters.active -= 1
        for changed in self._drain_waiters:
            changed.set()


class _ClientSide(asyncio.Protocol):
    """One client connection and, once connected, its backend connection.

    Written on transports and protocols rather than streams: per connection that is about a
    third of the event-loop callbacks (no reader tasks, no drain futures), and the proxy's
    requests/s are bound by exactly that (see docs/deploy-proxy.md).
    """

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.up: _BackendSide | None = None
        self.client_gone = False
        self.eof_from_client = False
        self.eof_from_backend = False
        self.connecting: asyncio.Task[None] | None = None
        self.finished = asyncio.get_running_loop().create_future()

    # client side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proxy._clients.add(self)
        self.proxy._connections += 1
        # Nothing is read from the client until a backend is connected; the kernel buffers it.
        transport.pause_reading()
        self.connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        try:
            await self._try_backends()
        finally:
            self.connecting = None
            self._maybe_finished()

    async def _try_backends(self) -> None:
        proxy, loop = self.proxy, asyncio.get_running_loop()
        tried: set[Address] = set()
        # The set is read again for each attempt: a retry after a switch goes to the new set.
        while not self.client_gone and (backend := proxy._pick(tried)) is not None:
            tried.add(backend.address)
            counters = proxy._counters_for(backend)
            # Counted as open before the first await, so a drain() that starts right after a
            # switch() sees a connection that picked the old set just before it.
            counters.active += 1
            side = _BackendSide(self, counters)
            try:
                async with asyncio.timeout(proxy._connect_timeout):
                    # the factory runs inside this call, in this iteration: binding is safe
                    await loop.create_connection(
                        lambda: side,  # noqa: B023
                        backend.host,
                        backend.port,
                    )
            except asyncio.CancelledError:
                if side.transport is None:  # else its connection_lost does the accounting
                    proxy._backend_closed(counters)
                raise
            except (OSError, TimeoutError) as exc:
                counters.connect_failures += 1
                if side.transport is None:
                    proxy._backend_closed(counters)
                logger.warning(
                    "backend %s:%d refused a connection (%s); trying another",
                    backend.host,
                    backend.port,
                    exc.__class__.__name__,
                )
                continue
            counters.connections += 1
            assert self.up is not None
            if self.client_gone:
                self.up.close(abort=False)
            elif self.transport is not None:
                self.transport.resume_reading()
            return
        if not self.client_gone:
            proxy._failures += 1
            logger.warning("no backend took a client connection (%d tried)", len(tried))
        self._close_client(abort=False)

    def data_received(self, data: bytes) -> None:
        if self.up is not None:
            self.up.counters.bytes_up += len(data)
            self.up.write(data)

    def eof_received(self) -> bool:
        # Pass the half-close on: an HTTP/1.0 client may shut its write side and still wait.
        self.eof_from_client = True
        if self.up is not None:
            self.up.write_eof()
        self._close_when_both_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client_gone = True
        if self.up is not None:
            self.up.close(abort=exc is not None)
        self._maybe_finished()

    def pause_writing(self) -> None:  # the client reads slower than the backend sends
        if self.up is not None:
            self.up.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None:
            self.up.resume_reading()

    # called by the backend side
    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.client_gone:
            self.transport.write(data)

    def _backend_eof(self) -> None:
        self.eof_from_backend = True
        if self.transport is not None and self.transport.can_write_eof():
            self.transport.write_eof()
        self._close_when_both_eof()

    def _backend_lost(self, exc: Exception | None) -> None:
        self._close_client(abort=exc is not None)
        self._maybe_finished()

    def _close_when_both_eof(self) -> None:
        if self.eof_from_client and self.eof_from_backend:
            self._close_client(abort=False)
            if self.up is not None:
                self.up.close(abort=False)

    def _close_client(self, *, abort: bool) -> None:
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def abort(self) -> None:
        if self.connecting is not None:
            self.connecting.cancel()
        if self.up is not None:
            self.up.close(abort=True)
        self._close_client(abort=True)

    def _maybe_finished(self) -> None:
        if self.client_gone and (self.up is None or self.up.gone) and self.connecting is None:
            self.proxy._clients.discard(self)
            if not self.finished.done():
                self.finished.set_result(None)


class _BackendSide(asyncio.Protocol):
    def __init__(self, client: _ClientSide, counters: _Counters) -> None:
        self.client = client
        self.counters = counters
        self.transport: asyncio.Transport | None = None
        self.gone = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.client.up = self

    def data_received(self, data: bytes) -> None:
        self.counters.bytes_down += len(data)
        self.client._write(data)

    def eof_received(self) -> bool:
        self.client._backend_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.gone = True
        self.client.proxy._backend_closed(self.counters)
        self.client._backend_lost(exc)

    def pause_writing(self) -> None:  # the backend reads slower than the client sends
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None and not self.client.client_gone:
            self.client.transport.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.gone:
            self.transport.write(data)

    def write_eof(self) -> None:
        if self.transport is not None and not self.gone and self.transport.can_write_eof():
            self.transport.write_eof()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.gone:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.gone:
            self.transport.resume_reading()

    def close(self, *, abort: bool) -> None:
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()


class ProxyServer:
    """A :class:`Proxy` on its own event loop in a background thread, for synchronous code.

    ``with ProxyServer(backends) as proxy: ... proxy.switch(new); proxy.drain(old, 10)``
    """

    def __init__(
        self,
        backends: Iterable[BackendLike] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        rng: random.Random | None = None,
    ) -> None:
        # Validated here, in the caller's thread, so a bad address fails before a thread starts.
        self._args = (backend_set(backends), loopback_host(host), _port(port, allow_zero=True))
        if connect_timeout <= 0:
            raise ProxyAddressError(f"connect timeout must be > 0, not {connect_timeout!r}")
        self._connect_timeout = connect_timeout
        self._rng = rng
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proxy: Proxy | None = None
        self._stopped: Proxy | None = None

    def start(self) -> ProxyServer:
        if self._loop is not None:
            raise ProxyStateError("the proxy is already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="immutrail-proxy", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._proxy = self._call(self._make_and_start())
        except BaseException:
            self._halt_loop()
            raise
        return self

    async def _make_and_start(self) -> Proxy:
        backends, host, port = self._args
        proxy = Proxy(
            backends, host=host, port=port, connect_timeout=self._connect_timeout, rng=self._rng
        )
        await proxy.start()
        return proxy

    def stop(self) -> None:
        """Close the listener and every open connection; the thread ends. Idempotent.

        :meth:`stats` still answers afterwards, with the final counts."""
        if self._loop is None:
            return
        try:
            if self._proxy is not None:
                self._call(self._proxy.stop())
        finally:
            self._stopped, self._proxy = self._proxy, None
            self._halt_loop()

    def _halt_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        if self._loop is None:
            coro.close()
            raise ProxyStateError("the proxy is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _running(self) -> Proxy:
        if self._proxy is None:
            raise ProxyStateError("the proxy is not started")
        return self._proxy

    @property
    def host(self) -> str:
        return self._args[1]

    @property
    def port(self) -> int:
        return self._running().port

    @property
    def backends(self) -> tuple[Backend, ...]:
        return self._running().backends

    def switch(self, backends: Iterable[BackendLike]) -> tuple[Backend, ...]:
        """Replace the backend set in one step (on the proxy's loop); returns the previous set.

        When this returns, every connection accepted afterwards goes to the new set."""
        new = backend_set(backends)  # a bad set raises here, in the caller's thread
        proxy = self._running()

        async def apply() -> tuple[Backend, ...]:
            return proxy.switch(new)

        result: tuple[Backend, ...] = self._call(apply())
        return result

    def drain(self, old: Sequence[BackendLike], timeout: float) -> int:
        """Block until no connection to ``old`` is open or ``timeout`` passed; returns how many
        are still open (0: drained, the old instances can go)."""
        checked = backend_set(old)
        remaining: int = self._call(self._running().drain(checked, timeout))
        return remaining

    def stats(self) -> ProxyStats:
        if self._proxy is None and self._stopped is not None:
            return self._stopped.stats()  # its loop has ended: nothing changes the counts now
        proxy = self._running()

        async def read() -> ProxyStats:
            return proxy.stats()

        stats: ProxyStats = self._call(read())
        return stats
