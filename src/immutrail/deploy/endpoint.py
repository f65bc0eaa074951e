"""A service's endpoint as a process of its own: the proxy outlives the command that deploys.

``immutrail deploy``, ``reconcile`` and ``chaos`` are short-lived processes, while the endpoint of
a service (the :mod:`immutrail.deploy.proxy` on its fixed loopback port) must keep forwarding
between and after them. So every (environment, service) gets one long-running endpoint process
(:mod:`immutrail.deploy.endpoint_daemon`), and :class:`Endpoint` is its client: it starts the
process when none runs, and drives it over a control socket.

Files, all in ``$IMMUTRAIL_HOME/runtime/endpoints/`` (a folder of mode 0700, owned by us)::

    <env>.<service>.json   state: port, pid, start time, the current backend set (atomic rewrite)
    <env>.<service>.lock   flock held by the process for its whole life: one process per service
    <env>.<service>.sock   control socket (Unix, mode 0600): JSON lines, request -> answer
    <env>.<service>.log    the process's stdout and stderr

The control socket is always reached through ``/proc/self/fd/<fd of the folder>/<name>.sock``,
so the 107-byte limit of Unix socket paths never applies, however long the home's path: no
socket in a shared folder such as /tmp, and no ``chdir`` (which would move every thread of the
caller). Linux only, as the ``local`` runtime already is.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import immutrail

from .errors import DeployInputError
from .proxy import Backend, BackendLike, BackendStats, ProxyAddressError, ProxyStats, backend_set
from .runtime import RuntimeDriverError

logger = logging.getLogger(__name__)

STATE_SCHEMA_VERSION = 1
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
DEFAULT_TIMEOUT = 5.0
"""Seconds to wait for the endpoint process's answer to one request (drain: plus its timeout)."""
START_TIMEOUT = 15.0
"""Seconds for a new endpoint process to answer (a Python start on a busy machine)."""
STOP_TIMEOUT = 10.0
MAX_MESSAGE = 1024 * 1024
"""Largest request or answer line on the control socket, in bytes."""
LOG_ROTATE_BYTES = 1024 * 1024
"""A log bigger than this is moved to ``.log.1`` when the next process starts."""
MAX_DRAIN_TIMEOUT = 24 * 3600.0


class EndpointError(RuntimeDriverError):
    """The endpoint process did not start, answer, or do what was asked (operational, exit 3)."""


class EndpointInputError(EndpointError, DeployInputError):
    """A bad environment or service name, port, backend set, or a port in use: nothing changed."""


@dataclass(frozen=True)
class EndpointInfo:
    """A live endpoint process, as it answers itself."""

    environment: str
    service: str
    port: int
    pid: int
    started_at: str
    """RFC 3339 UTC."""
    backends: tuple[Backend, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "service": self.service,
            "port": self.port,
            "pid": self.pid,
            "started_at": self.started_at,
            "backends": backends_to_json(self.backends),
        }


# --- names, files, processes (shared with the endpoint process) --------------------------------


def check_name(value: object, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise EndpointInputError(
            f"invalid {what} name {value!r}: lowercase letters, digits and '-', "
            "starting with a letter or digit, at most 63 characters"
        )
    return value


def check_port(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not (1 <= value <= 65535):
        raise EndpointInputError(f"invalid endpoint port {value!r}: an integer from 1 to 65535")
    return value


def checked_backends(backends: Iterable[BackendLike]) -> tuple[Backend, ...]:
    try:
        return backend_set(backends)
    except ProxyAddressError as exc:
        raise EndpointInputError(f"invalid backend set: {exc}") from exc


def backends_to_json(backends: Iterable[Backend]) -> list[dict[str, Any]]:
    return [{"host": b.host, "port": b.port, "weight": b.weight} for b in backends]


def backends_from_json(value: object) -> tuple[Backend, ...]:
    """The wire and state-file form back to a validated set; ProxyAddressError if malformed."""
    if not isinstance(value, list):
        raise ProxyAddressError("backends must be a list")
    items: list[BackendLike] = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"host", "port", "weight"}:
            raise ProxyAddressError(f"a backend is {{host, port, weight}}, not {item!r}")
        items.append((item.get("host"), item.get("port"), item.get("weight", 1)))  # type: ignore[arg-type]
    return backend_set(items)


def rfc3339_now() -> str:
    return datetime.now(UTC).replace(microsecond=0, tzinfo=None).isoformat() + "Z"


def proc_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot, field 22 of /proc/<pid>/stat), or None when
    no live process has that pid (a zombie has exited: it counts as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces and parentheses.
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(pid: int, started: int) -> bool:
    """Whether ``pid`` is still the process that started at ``started`` (not a reused pid)."""
    return pid > 0 and proc_start(pid) == started


def endpoints_folder(home: Path) -> Path:
    return Path(os.path.abspath(home)) / "runtime" / "endpoints"


class Files:
    """Where one service's endpoint keeps its state, lock, socket and log."""

    def __init__(self, home: Path, environment: str, service: str) -> None:
        self.folder = endpoints_folder(home)
        self.name = f"{environment}.{service}"
        self.state = self.folder / f"{self.name}.json"
        self.lock = self.folder / f"{self.name}.lock"
        self.socket = self.folder / f"{self.name}.sock"
        self.log = self.folder / f"{self.name}.log"

    def make_folder(self) -> None:
        """Create the folder 0700, or check that the one there is a folder of ours, not a link."""
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            self.folder.mkdir(mode=0o700)
        self.check_folder()

    def check_folder(self) -> bool:
        """False when the folder does not exist; EndpointError when it is not safe to use."""
        try:
            st = self.folder.lstat()
        except FileNotFoundError:
            return False
        if not self.folder.is_dir() or self.folder.is_symlink():
            raise EndpointError(f"{self.folder} is not a folder (a link or a file?): refusing it")
        if st.st_uid != os.getuid():
            raise EndpointError(
                f"{self.folder} belongs to uid {st.st_uid}, not to us ({os.getuid()}): refusing it"
            )
        if st.st_mode & 0o077:
            os.chmod(self.folder, 0o700)  # ours, but others could reach the control sockets
        return True

    @contextlib.contextmanager
    def socket_address(self) -> Iterator[str]:
        """A short path to the control socket, valid while the block runs (see module doc)."""
        try:
            fd = os.open(self.folder, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise  # nothing was ever started here: the caller says so
        except OSError as exc:
            raise EndpointError(f"cannot open {self.folder}: {exc.strerror}") from exc
        try:
            yield f"/proc/self/fd/{fd}/{self.socket.name}"
        finally:
            os.close(fd)

    def write_state(self, state: dict[str, Any]) -> None:
        """Atomically: a crash (even SIGKILL) leaves the old file or the new one, never a mix.

        Not fsynced: the file only has to survive the endpoint process, and after a power loss
        the instances it names are gone too (the next deploy or reconcile sets the backends)."""
        tmp = self.folder / f".{self.name}.{os.getpid()}.tmp"
        data = json.dumps(state, indent=1, sort_keys=True).encode() + b"\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, self.state)

    def read_state(self) -> dict[str, Any] | None:
        """The state file, checked; None when there is none; EndpointError when it is damaged."""
        try:
            text = self.state.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise EndpointError(f"cannot read {self.state}: {exc.strerror}") from exc
        try:
            state = json.loads(text)
            if not isinstance(state, dict):
                raise ValueError("not a JSON object")
            for key, kind in (("pid", int), ("proc_start", int), ("port", int)):
                if not isinstance(state.get(key), kind) or isinstance(state.get(key), bool):
                    raise ValueError(f"{key!r} is missing or not an integer")
            if not isinstance(state.get("started_at"), str):
                raise ValueError("'started_at' is missing")
            state["backends"] = backends_from_json(state.get("backends"))
        except (ValueError, ProxyAddressError) as exc:
            raise EndpointError(
                f"the endpoint state file {self.state} is damaged ({exc}); "
                "stop the endpoint and remove the file to start afresh"
            ) from exc
        return state


# --- the client --------------------------------------------------------------------------------


class Endpoint:
    """Client of one service's endpoint process: $IMMUTRAIL_HOME/runtime/endpoints/<env>.<service>.*

    ``timeout`` bounds each request (a drain waits its own timeout on top).
    """

    def __init__(
        self, home: Path, environment: str, service: str, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.environment = check_name(environment, "environment")
        self.service = check_name(service, "service")
        self.home = Path(os.path.abspath(home))
        self.timeout = timeout
        self.files = Files(self.home, environment, service)

    def __repr__(self) -> str:
        return f"Endpoint({self.environment}/{self.service})"

    @property
    def where(self) -> str:
        return f"{self.environment}/{self.service}"

    # -- lifecycle -------------------------------------------------------------------------------

    def ensure(self, port: int, backends: Iterable[BackendLike] = ()) -> EndpointInfo:
        """Start the daemon if it is not running (detached: its own session, survives the caller),
        wait until it answers, return its info. If it runs already on ``port``, just return the
        info (backends untouched). If it runs on another port: EndpointInputError. Port in use by
        another program: EndpointInputError.

        A new process starts with ``backends`` or, when none are given, the last set of the
        previous process (from the state file), so an endpoint that was killed resumes.
        """
        port = check_port(port)
        initial = checked_backends(backends)
        self.files.make_folder()
        deadline = time.monotonic() + START_TIMEOUT
        last_error: EndpointError | None = None
        while True:
            self.files.read_state()  # a damaged state file fails now, not after the wait
            try:
                info = self.running()
            except EndpointError as exc:  # alive but not answering (yet): wait for it, bounded
                info, last_error = None, exc
            if info is not None:
                if info.port != port:
                    raise EndpointInputError(
                        f"the endpoint of {self.where} runs on port {info.port}, not {port}; "
                        f"stop it first (immutrail endpoint stop {self.environment} "
                        f"{self.service})"
                    )
                return info
            lock = self._try_lock()
            if lock is not None:
                try:
                    self._spawn(lock, port, initial)
                finally:
                    os.close(lock)  # the endpoint process holds the lock from now on
                return self._info()
            # Another caller holds the lock: its process is starting, stopping or stuck.
            if time.monotonic() > deadline:
                raise EndpointError(
                    f"the endpoint process of {self.where} holds its lock but did not answer "
                    f"within {START_TIMEOUT:g} s"
                    + (f" ({last_error})" if last_error else "")
                    + f"; see {self.files.log}"
                )
            time.sleep(0.05)

    def running(self) -> EndpointInfo | None:
        """The live endpoint process's info; None when no endpoint process is alive.

        A state file naming a dead pid, or a pid now used by another process (its start time
        differs), means not running. A live process that does not answer within the timeout, or
        answers nonsense, raises EndpointError."""
        if not self.files.check_folder():
            return None
        state = self.files.read_state()
        if state is None or not alive(state["pid"], state["proc_start"]):
            return None
        try:
            info = self._info()
        except EndpointError:
            if not alive(state["pid"], state["proc_start"]):
                return None  # it stopped while we asked
            raise
        if info.pid != state["pid"]:
            raise EndpointError(
                f"the endpoint of {self.where} answers as pid {info.pid} but its state file "
                f"names pid {state['pid']}"
            )
        return info

    def stop(self) -> None:
        """Stop the endpoint process (it closes every connection); no-op when none runs.

        Asked over the control socket; a process that does not answer gets SIGTERM, then SIGKILL.
        The state file stays: the next :meth:`ensure` resumes its backend set. With a damaged
        state file the process is still asked over its socket, and waited for by its lock."""
        if not self.files.check_folder():
            return
        try:
            state = self.files.read_state()
        except EndpointError as exc:
            self._stop_without_pid(exc)
            return
        if state is None or not alive(state["pid"], state["proc_start"]):
            return
        pid, started = state["pid"], state["proc_start"]
        try:
            self._request({"command": "stop"})
        except EndpointError as exc:
            logger.warning("endpoint %s did not take the stop request (%s): SIGTERM", self, exc)
            _signal(pid, started, signal.SIGTERM)
        if _wait_gone(pid, started, STOP_TIMEOUT):
            return
        logger.warning("endpoint %s (pid %d) still runs after SIGTERM: SIGKILL", self, pid)
        _signal(pid, started, signal.SIGKILL)
        if not _wait_gone(pid, started, STOP_TIMEOUT):
            raise EndpointError(f"the endpoint process of {self.where} (pid {pid}) did not stop")

    def _stop_without_pid(self, damaged: EndpointError) -> None:
        try:
            self._request({"command": "stop"})
        except EndpointError as exc:
            if not self.locked():
                return  # nothing runs
            raise EndpointError(
                f"cannot stop the endpoint of {self.where}: {exc}; {damaged}"
            ) from exc
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.locked():
            if time.monotonic() > deadline:
                raise EndpointError(f"the endpoint process of {self.where} did not stop; {damaged}")
            time.sleep(0.02)

    def locked(self) -> bool:
        """Whether a process (an endpoint running, starting or stopping) holds the lock.

        Found out by taking the lock and releasing it at once."""
        if not self.files.check_folder():
            return False
        fd = self._try_lock()
        if fd is None:
            return True
        os.close(fd)
        return False

    # -- traffic -------------------------------------------------------------------------------

    def switch(self, backends: Iterable[BackendLike]) -> tuple[Backend, ...]:
        """Replace the backend set in one step; returns the previous set (to drain).

        When this returns, the new set is in the state file and every connection accepted from
        then on goes to it. A bad set raises EndpointInputError and changes nothing."""
        new = checked_backends(backends)
        answer = self._request({"command": "switch", "backends": backends_to_json(new)})
        return self._backends(answer.get("previous"), "previous")

    def drain(self, old: Iterable[BackendLike], timeout: float) -> int:
        """Wait up to ``timeout`` seconds until no connection to ``old`` is open; returns how many
        are still open (0: drained), as :meth:`Proxy.drain`."""
        checked = checked_backends(old)
        if (
            not isinstance(timeout, int | float)
            or isinstance(timeout, bool)
            or not (0 <= timeout <= MAX_DRAIN_TIMEOUT)
        ):
            raise EndpointInputError(f"invalid drain timeout {timeout!r}")
        answer = self._request(
            {"command": "drain", "backends": backends_to_json(checked), "timeout": timeout},
            timeout=self.timeout + timeout,
        )
        remaining = answer.get("open")
        if not isinstance(remaining, int) or isinstance(remaining, bool) or remaining < 0:
            raise self._malformed(answer)
        return remaining

    def stats(self) -> ProxyStats:
        answer = self._request({"command": "stats"})
        try:
            return ProxyStats(
                connections=_count(answer, "connections"),
                failures=_count(answer, "failures"),
                active=_count(answer, "active"),
                backends=tuple(
                    BackendStats(
                        host=str(b["host"]),
                        port=_count(b, "port"),
                        connections=_count(b, "connections"),
                        connect_failures=_count(b, "connect_failures"),
                        active=_count(b, "active"),
                        bytes_to_backend=_count(b, "bytes_to_backend"),
                        bytes_from_backend=_count(b, "bytes_from_backend"),
                    )
                    for b in answer["backends"]
                ),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise self._malformed(answer) from exc

    # -- internals -----------------------------------------------------------------------------

    def _info(self) -> EndpointInfo:
        answer = self._request({"command": "info"})
        try:
            info = EndpointInfo(
                environment=str(answer["environment"]),
                service=str(answer["service"]),
                port=_count(answer, "port"),
                pid=_count(answer, "pid"),
                started_at=str(answer["started_at"]),
                backends=self._backends(answer["backends"], "backends"),
            )
        except (KeyError, ValueError) as exc:
            raise self._malformed(answer) from exc
        if (info.environment, info.service) != (self.environment, self.service):
            raise EndpointError(
                f"the control socket of {self.where} is answered by the endpoint of "
                f"{info.environment}/{info.service}"
            )
        return info

    def _backends(self, value: object, what: str) -> tuple[Backend, ...]:
        try:
            return backends_from_json(value)
        except ProxyAddressError as exc:
            raise EndpointError(
                f"malformed answer from the endpoint of {self.where}: {what}: {exc}"
            ) from exc

    def _malformed(self, answer: object) -> EndpointError:
        return EndpointError(
            f"malformed answer from the endpoint of {self.where}: {str(answer)[:200]}"
        )

    def _request(self, request: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """One JSON line out, one JSON line back, on a fresh connection to the control socket."""
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        command = request["command"]
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.settimeout(limit)
                with self.files.socket_address() as address:
                    sock.connect(address)
                sock.sendall(json.dumps(request).encode() + b"\n")
                reply = b""
                while not reply.endswith(b"\n"):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    sock.settimeout(left)
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    reply += chunk
                    if len(reply) > MAX_MESSAGE:
                        raise EndpointError(
                            f"the endpoint of {self.where} answered more than {MAX_MESSAGE} bytes"
                        )
            except (FileNotFoundError, ConnectionRefusedError) as exc:
                raise EndpointError(
                    f"no endpoint process runs for {self.where} (nothing listens on "
                    f"{self.files.socket})"
                ) from exc
            except TimeoutError as exc:
                raise EndpointError(
                    f"the endpoint process of {self.where} did not answer {command!r} within "
                    f"{limit:g} s"
                ) from exc
            except OSError as exc:
                raise EndpointError(
                    f"the control socket of {self.where} failed during {command!r}: {exc}"
                ) from exc
        try:
            answer = json.loads(reply)
        except ValueError as exc:
            what = "closed the connection without an answer" if not reply else "answered"
            raise EndpointError(
                f"the endpoint process of {self.where} {what} to {command!r}: {reply[:200]!r}"
            ) from exc
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            raise self._malformed(answer)
        if not answer["ok"]:
            message = f"endpoint {self.where}: {answer.get('error', '(no message)')}"
            if answer.get("kind") == "input":
                raise EndpointInputError(message)
            raise EndpointError(message)
        result = answer.get("result")
        if not isinstance(result, dict):
            raise self._malformed(answer)
        return result

    def _try_lock(self) -> int | None:
        """The lock file's fd, locked; None when someone holds it (a process runs or starts)."""
        fd = os.open(self.files.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _spawn(self, lock: int, port: int, initial: tuple[Backend, ...]) -> None:
        """Start the endpoint process with our lock (it inherits it) and wait for it to be ready.

        The process reports on a pipe: one JSON line once it listens on both sockets and wrote
        its state, or why it could not start. It double-forks (its own session, reparented), so
        it outlives the caller and never becomes the caller's zombie."""
        self._rotate_log()
        read_end, write_end = os.pipe()
        argv = [
            sys.executable,
            "-m",
            "immutrail.deploy.endpoint_daemon",
            "--home",
            str(self.home),
            "--environment",
            self.environment,
            "--service",
            self.service,
            "--port",
            str(port),
            "--lock-fd",
            str(lock),
            "--ready-fd",
            str(write_end),
            "--detach",
        ]
        if initial:
            argv += ["--backends", json.dumps(backends_to_json(initial))]
        env = dict(os.environ)
        # The same immutrail as ours, whatever way it was installed or put on the path.
        package_root = str(Path(immutrail.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (package_root, env.get("PYTHONPATH", "")) if p
        )
        try:
            with open(self.files.log, "ab") as log:
                intermediate = subprocess.Popen(  # noqa: S603 - our own module, fixed argv
                    argv,
                    stdin=subprocess.DEVNULL,  # never the caller's stdin, stdout or stderr:
                    stdout=log,  # a CLI caller's pipe must close when the CLI exits
                    stderr=log,
                    pass_fds=(lock, write_end),
                    start_new_session=True,
                    cwd="/",
                    env=env,
                )
        except OSError as exc:
            os.close(read_end)
            raise EndpointError(f"cannot start the endpoint process: {exc}") from exc
        finally:
            os.close(write_end)
        try:
            report = _read_ready(read_end, START_TIMEOUT)
        finally:
            os.close(read_end)
            with contextlib.suppress(subprocess.TimeoutExpired):
                intermediate.wait(timeout=START_TIMEOUT)
        if report is None:
            raise EndpointError(
                f"the endpoint process of {self.where} exited or hung while starting; "
                f"its log {self.files.log} ends with: {self._log_tail()}"
            )
        if report.get("ok") is True:
            return
        message = str(report.get("message", "(no message)"))
        if report.get("kind") == "port_in_use":
            raise EndpointInputError(self._port_taken(port, message))
        if report.get("kind") == "input":
            raise EndpointInputError(f"endpoint {self.where}: {message}")
        raise EndpointError(f"the endpoint process of {self.where} did not start: {message}")

    def _port_taken(self, port: int, message: str) -> str:
        text = f"port {port} is in use by another program ({message})"
        for other in list_endpoints(self.home):
            if other.port == port:
                text = (
                    f"port {port} is in use by the endpoint of {other.environment}/{other.service}"
                )
        return f"cannot start the endpoint of {self.where}: {text}"

    def _rotate_log(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.files.log.stat().st_size > LOG_ROTATE_BYTES:
                os.replace(self.files.log, self.files.log.with_name(self.files.log.name + ".1"))

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.files.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty)"


def list_endpoints(home: Path) -> list[EndpointInfo]:
    """The live endpoint processes of ``home``, by environment and service.

    One that does not answer is left out, with a warning in the log."""
    folder = endpoints_folder(home)
    try:
        names = sorted(p.stem for p in folder.glob("*.json"))
    except OSError:
        return []
    found: list[EndpointInfo] = []
    for name in names:
        environment, _, service = name.partition(".")
        if not NAME_RE.fullmatch(environment) or not NAME_RE.fullmatch(service):
            continue
        try:
            info = Endpoint(home, environment, service).running()
        except EndpointError as exc:
            logger.warning("endpoint %s/%s: %s", environment, service, exc)
            continue
        if info is not None:
            found.append(info)
    return found


def _count(data: Any, key: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} is not a count: {value!r}")
    return value


def _read_ready(fd: int, timeout: float) -> dict[str, Any] | None:
    """The endpoint process's one-line report; None on EOF or timeout without one."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    try:
        report = json.loads(data.split(b"\n", 1)[0])
    except ValueError:
        return None
    return report if isinstance(report, dict) else None


def _signal(pid: int, started: int, sig: signal.Signals) -> None:
    # checked just before: a pid reused by another process is never signalled
    if alive(pid, started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pid: int, started: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid, started):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def port_in_use_error(exc: OSError) -> bool:
    return exc.errno == errno.EADDRINUSE
