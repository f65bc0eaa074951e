"""The endpoint process of one service: the proxy on its port, driven over a control socket.

Started by :meth:`immutrail.deploy.endpoint.Endpoint.ensure`; can also be run by hand, in the
foreground, to watch it::

    python -m immutrail.deploy.endpoint_daemon --home H --environment prod --service web \\
        --port 8080 [--backends '[{"host": "127.0.0.1", "port": 8001, "weight": 1}]']

Control protocol, one JSON object per line each way on ``<env>.<service>.sock``:

    {"command": "info"}                                  -> environment, service, port, pid, ...
    {"command": "switch", "backends": [{host, port, weight}, ...]}  -> {"previous": [...], ...}
    {"command": "drain", "backends": [...], "timeout": 30}          -> {"open": 0}
    {"command": "stats"}                                 -> the proxy's counters
    {"command": "stop"}                                  -> {"stopping": true}, then it stops

Every answer is ``{"ok": true, "result": {...}}`` or ``{"ok": false, "kind": "input"|"error",
"error": "message"}``. Only processes of our own user may connect (socket 0600 in a 0700 folder,
and the peer's uid checked with SO_PEERCRED).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import struct
import sys
from pathlib import Path
from typing import Any

from .endpoint import (
    MAX_DRAIN_TIMEOUT,
    MAX_MESSAGE,
    STATE_SCHEMA_VERSION,
    EndpointError,
    EndpointInputError,
    Files,
    backends_from_json,
    backends_to_json,
    check_name,
    check_port,
    port_in_use_error,
    proc_start,
    rfc3339_now,
)
from .proxy import Backend, Proxy, ProxyAddressError

logger = logging.getLogger("immutrail.deploy.endpoint_daemon")


class StartError(Exception):
    """The endpoint process cannot start; ``kind`` tells the client which error to raise."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class _RequestError(Exception):
    """A request that is wrong: answered with kind "input", nothing changed."""


class Ready:
    """The one-line start report to the process that started us (or stderr, run by hand)."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def send(self, report: dict[str, Any]) -> None:
        line = json.dumps(report) + "\n"
        if self.fd is None:
            sys.stderr.write(line)
            sys.stderr.flush()
            return
        fd, self.fd = self.fd, None
        try:
            os.write(fd, line.encode())
        except OSError as exc:  # the starter gave up waiting; we run all the same
            logger.warning("could not report the start: %s", exc)
        finally:
            os.close(fd)


class Daemon:
    def __init__(
        self, files: Files, environment: str, service: str, port: int, backends: tuple[Backend, ...]
    ) -> None:
        self.files = files
        self.environment = environment
        self.service = service
        self.proxy = Proxy(backends, port=port)
        self.pid = os.getpid()
        self.proc_start = proc_start(self.pid)
        self.started_at = rfc3339_now()
        self.stopping = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.folder_fd: int | None = None

    def _state(self, backends: tuple[Backend, ...]) -> dict[str, Any]:
        return {
            "schema_version": STATE_SCHEMA_VERSION,
            "environment": self.environment,
            "service": self.service,
            "port": self.proxy.port,
            "pid": self.pid,
            "proc_start": self.proc_start,
            "started_at": self.started_at,
            "updated_at": rfc3339_now(),
            "backends": backends_to_json(backends),
        }

    def _socket_path(self) -> str:
        assert self.folder_fd is not None
        return f"/proc/self/fd/{self.folder_fd}/{self.files.socket.name}"

    async def start(self) -> None:
        try:
            await self.proxy.start()
        except OSError as exc:
            if port_in_use_error(exc):
                raise StartError("port_in_use", str(exc)) from exc
            raise StartError("error", f"cannot listen on the endpoint port: {exc}") from exc
        self.folder_fd = os.open(
            self.files.folder, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        )
        # We hold the lock: a socket file left there is a killed predecessor's.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._socket_path())
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            control.bind(self._socket_path())
            os.chmod(self._socket_path(), 0o600)
            control.listen(64)
            self.server = await asyncio.start_unix_server(
                self._serve_client, sock=control, limit=MAX_MESSAGE
            )
        except OSError as exc:
            control.close()
            raise StartError("error", f"cannot open the control socket: {exc}") from exc
        try:
            self.files.write_state(self._state(self.proxy.backends))
        except OSError as exc:
            raise StartError("error", f"cannot write {self.files.state}: {exc}") from exc
        logger.info(
            "endpoint %s/%s (pid %d) on 127.0.0.1:%d -> %s",
            self.environment,
            self.service,
            self.pid,
            self.proxy.port,
            _show(self.proxy.backends),
        )

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        # no controlling terminal is expected; a stray SIGHUP must not kill the endpoint
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        await self.stopping.wait()
        logger.info("stopping endpoint %s/%s", self.environment, self.service)

    async def close(self) -> None:
        """Stop listening on both sockets, close every connection, remove the socket file."""
        if self.server is not None:
            self.server.close()
        await self.proxy.stop()
        if self.folder_fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._socket_path())
            os.close(self.folder_fd)
            self.folder_fd = None

    # -- the control socket ------------------------------------------------------------------

    async def _serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            if not _same_user(writer):
                return
            while not self.stopping.is_set():
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_MESSAGE
                    await _answer(writer, _error("input", "request too long"))
                    return
                if not line:
                    return
                await _answer(writer, await self._dispatch(line))
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise _RequestError("a request is a JSON object")
            command = request.get("command")
            if command == "info":
                result = self._info()
            elif command == "switch":
                result = self._switch(request)
            elif command == "drain":
                result = await self._drain(request)
            elif command == "stats":
                result = self.proxy.stats().to_dict()
            elif command == "stop":
                self.stopping.set()
                result = {"stopping": True}
            else:
                raise _RequestError(f"unknown command {command!r}")
        except (
            ValueError,
            RecursionError,  # json recurses once per nesting level of the request
            _RequestError,
            ProxyAddressError,
        ) as exc:  # JSONDecodeError is a ValueError
            return _error("input", str(exc))
        except OSError as exc:
            logger.error("request failed: %s", exc)
            return _error("error", str(exc))
        return {"ok": True, "result": result}

    def _info(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "service": self.service,
            "port": self.proxy.port,
            "pid": self.pid,
            "started_at": self.started_at,
            "backends": backends_to_json(self.proxy.backends),
        }

    def _switch(self, request: dict[str, Any]) -> dict[str, Any]:
        new = backends_from_json(request.get("backends"))
        # State first: once the client hears "switched", a restart resumes with this set. A
        # failed write answers an error and leaves the current set in place.
        self.files.write_state(self._state(new))
        previous = self.proxy.switch(new)
        return {"previous": backends_to_json(previous), "backends": backends_to_json(new)}

    async def _drain(self, request: dict[str, Any]) -> dict[str, Any]:
        old = backends_from_json(request.get("backends"))
        timeout = request.get("timeout")
        if (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not (0 <= timeout <= MAX_DRAIN_TIMEOUT)
        ):
            raise _RequestError(f"invalid drain timeout {timeout!r}")
        return {"open": await self.proxy.drain(old, float(timeout))}


def _same_user(writer: asyncio.StreamWriter) -> bool:
    sock = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    if uid != os.getuid():
        logger.warning("refused a control connection from uid %d", uid)
        return False
    return True


async def _answer(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
    writer.write(json.dumps(answer).encode() + b"\n")
    await writer.drain()


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"ok": False, "kind": kind, "error": message}


def _show(backends: tuple[Backend, ...]) -> str:
    return ", ".join(f"{b.host}:{b.port}x{b.weight}" for b in backends) or "(nothing)"


async def _main(daemon: Daemon, ready: Ready) -> None:
    try:
        await daemon.start()
    except BaseException:
        await daemon.close()
        raise
    ready.send({"ok": True, "pid": daemon.pid, "port": daemon.proxy.port})
    try:
        await daemon.run_until_stopped()
    finally:
        await daemon.close()
    logger.info("endpoint %s/%s stopped", daemon.environment, daemon.service)


def _lock(files: Files, fd: int | None) -> int:
    """The lock, inherited from the starter (``--lock-fd``) or taken here; held until exit."""
    if fd is None:
        fd = os.open(files.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a no-op on a lock we inherited
    except BlockingIOError:
        raise StartError("error", f"another endpoint process holds {files.lock}") from None
    return fd


def _initial_backends(files: Files, given: str | None) -> tuple[Backend, ...]:
    if given is not None:
        try:
            return backends_from_json(json.loads(given))
        except (ValueError, RecursionError, ProxyAddressError) as exc:
            raise StartError("input", f"invalid --backends: {exc}") from exc
    state = files.read_state()  # the set of the previous process, if there was one
    if state is None:
        return ()
    backends: tuple[Backend, ...] = state["backends"]
    return backends


def _detach() -> None:
    """Fork once more and let the parent exit: we are re-parented and can never take a
    controlling terminal (not a session leader)."""
    if os.getsid(0) != os.getpid():
        os.setsid()
    if os.fork() > 0:
        os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m immutrail.deploy.endpoint_daemon",
        description="The endpoint process of one service (normally started by immutrail).",
    )
    parser.add_argument("--home", required=True)
    parser.add_argument("--environment", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--port", required=True, type=int)
    parser.add_argument("--backends", help="JSON list of {host, port, weight}; default: resume")
    parser.add_argument("--lock-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--detach", action="store_true", help="Run in the background.")
    args = parser.parse_args(argv)
    if args.detach:
        _detach()
    os.umask(0o077)
    logging.basicConfig(
        level=os.environ.get("IMMUTRAIL_ENDPOINT_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    ready = Ready(args.ready_fd)
    try:
        environment = check_name(args.environment, "environment")
        service = check_name(args.service, "service")
        port = check_port(args.port)
        files = Files(Path(args.home), environment, service)
        files.make_folder()
        _lock(files, args.lock_fd)
        try:
            backends = _initial_backends(files, args.backends)
        except EndpointError as exc:
            raise StartError("error", str(exc)) from exc
        daemon = Daemon(files, environment, service, port, backends)
        asyncio.run(_main(daemon, ready))
    except StartError as exc:
        logger.error("%s", exc)
        ready.send({"ok": False, "kind": exc.kind, "message": str(exc)})
        return 1
    except EndpointError as exc:
        kind = "input" if isinstance(exc, EndpointInputError) else "error"
        logger.error("%s", exc)
        ready.send({"ok": False, "kind": kind, "message": str(exc)})
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
