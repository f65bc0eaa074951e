"""`immutrail drift watch ENV`: the full check on an interval, and signals as they happen.

Three sources feed one loop (one thread does every ledger write and every replacement):

* the **full check** (:func:`drift_check`) every ``interval`` seconds, and one second after a
  container of the environment starts, dies or is removed;
* the Docker engine's **event stream** (``GET /events``, docker-py ``client.events``), followed
  by a thread that reconnects after errors and resumes where it stopped (``since`` = the last
  event's time, duplicates dropped). An ``exec_create``/``exec_start`` into a container of the
  environment is recorded at once as an ``exec-session`` finding (``drift.detected``, source
  ``docker-events``) with what the engine says of the session (command, user, terminal,
  privileged), then the container is checked on its own (``instance-check``: its processes with
  pid, tty and command line, its filesystem, the rules). Exec sessions are also handled between
  the instances of a running full check, so a long check does not delay them.
* a **process scan** of the local instances every ``process_interval`` seconds (``/proc``): a
  shell, a process the entrypoint did not start or an SSH server is recorded at once (source
  ``process-scan``), once per process, then the instance is checked.

With ``remediate``, each check's drifted instances are replaced as ``drift check --remediate``
does (evidence kept first).
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutrail.deploy.declaration import declared
from immutrail.deploy.docker_driver import (
    LABEL_DIGEST,
    LABEL_ENVIRONMENT,
    LABEL_SERVICE,
    DockerRuntime,
)
from immutrail.deploy.engine import Context
from immutrail.deploy.runtime import Instance

from .check import (
    DriftReport,
    Finding,
    drift_check,
    exec_command,
    healthcheck_commands,
    local_processes,
    process_findings,
    read_local_record,
    record_detected,
    remediate,
)
from .errors import DriftError, DriftInputError
from .processes import HostProcesses, signals

log = logging.getLogger(__name__)

EXEC_ACTIONS = ("exec_create", "exec_start")
LIFECYCLE_ACTIONS = ("start", "die", "destroy")
SETTLE_S = 0.3
"""After a signal, how long before the instance is checked (the exec'd process is visible)."""
RECHECK_S = 1.0
"""After a container starts, dies or is removed, how long before the full check."""
MAX_REMEMBERED = 10_000
RECORD_EVERY_S = 3600.0
"""How often a full check under watch is recorded as drift.checked: often enough to show
regular comparisons (PCI DSS 11.5.2 asks for weekly), rare enough not to flood the ledger."""


@dataclass(frozen=True)
class EngineLost:
    """The event stream failed; the follower reconnects by itself."""

    error: str


class EngineEvents:
    """Follows the events of one Docker engine for one environment's containers, in a thread."""

    def __init__(
        self,
        client: Any,
        environment: str,
        sink: queue.Queue[Mapping[str, Any] | EngineLost],
        *,
        since: float,
        retry_s: float = 0.5,
        max_retry_s: float = 5.0,
    ) -> None:
        self.client = client
        self.environment = environment
        self.sink = sink
        self.since = f"{since:.9f}"
        self.retry_s, self.max_retry_s = retry_s, max_retry_s
        self.connected = threading.Event()
        """Set while a stream is open: events after this moment are not missed."""
        self._stop = threading.Event()
        self._stream: Any = None
        self._seen: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        self._thread = threading.Thread(
            target=self._follow, name=f"drift-events-{environment}", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            try:
                stream.close()  # unblocks the thread's read
            except Exception as exc:  # closing a dead stream may fail in any way
                log.debug("closing the event stream: %s", exc)
        self._thread.join(timeout=5)

    def _follow(self) -> None:
        wait = self.retry_s
        filters = {
            "type": ["container"],
            "label": [f"{LABEL_ENVIRONMENT}={self.environment}"],
            "event": [*EXEC_ACTIONS, *LIFECYCLE_ACTIONS],
        }
        while not self._stop.is_set():
            try:
                self._stream = self.client.events(decode=True, since=self.since, filters=filters)
                self.connected.set()
                for event in self._stream:
                    wait = self.retry_s
                    self._pass_on(event)
                    if self._stop.is_set():
                        return
            except Exception as exc:  # the engine, requests, urllib3 or the socket
                if self._stop.is_set():
                    return
                log.warning("the Docker event stream failed (%s); reconnecting", exc)
                self.sink.put(EngineLost(str(exc)))
            self.connected.clear()
            self._stop.wait(wait)
            wait = min(self.max_retry_s, wait * 2)

    def _pass_on(self, event: Mapping[str, Any]) -> None:
        nano = int(event.get("timeNano") or 0)
        key = (str(event.get("id", "")), str(event.get("Action", "")), nano)
        if key in self._seen:
            return  # replayed after a reconnection (``since`` is inclusive)
        self._seen[key] = None
        if len(self._seen) > MAX_REMEMBERED:
            self._seen.popitem(last=False)
        if nano:
            self.since = f"{nano // 1_000_000_000}.{nano % 1_000_000_000:09d}"
        self.sink.put(event)


class DriftWatch:
    """The watch loop of one environment; :meth:`run` returns when told to stop."""

    def __init__(
        self,
        ctx: Context,
        environment: str,
        *,
        interval: float = 10.0,
        remediate: bool = False,
        process_interval: float = 0.5,
        emit: Callable[[DriftReport], None] | None = None,
    ) -> None:
        # NaN compares false with everything: "<= 0" alone let it through, and the loop spun.
        if not all(math.isfinite(s) and s > 0 for s in (interval, process_interval)):
            raise DriftInputError("the intervals must be positive, finite numbers of seconds")
        self.ctx = ctx
        self.environment = environment
        self.interval = interval
        self.fix = remediate
        self.process_interval = process_interval
        self.emit = emit or (lambda report: None)
        self.events: queue.Queue[Mapping[str, Any] | EngineLost] = queue.Queue()
        self.followers: dict[int, EngineEvents] = {}
        self.checks = 0
        self._full_due = 0.0
        self._record_due = 0.0
        """When the next full check ends with a drift.checked event: the first, then hourly."""
        self._pending: dict[str, float] = {}
        """Instance id -> when to check it on its own."""
        self._execs: OrderedDict[str, None] = OrderedDict()
        self._processes: set[tuple[str, int, int | None, str]] = set()

    # --- the loop -----------------------------------------------------------------------------

    def run(
        self,
        *,
        passes: int | None = None,
        duration: float | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Until ``passes`` full checks ran, ``duration`` seconds passed or ``stop`` is set."""
        if duration is not None and not (math.isfinite(duration) and duration > 0):
            raise DriftInputError("the duration must be a positive, finite number of seconds")
        started = time.monotonic()
        self._follow_engines(since=time.time())
        next_scan = started
        try:
            while not (stop is not None and stop.is_set()):
                now = time.monotonic()
                if duration is not None and now - started >= duration:
                    return
                if passes is not None and self.checks >= passes:
                    return
                if now >= self._full_due:
                    self._full_check()
                    continue
                due = [i for i, at in self._pending.items() if at <= now]
                if due:
                    self._instance_check(due)
                    continue
                if now >= next_scan:
                    self._scan_local()
                    next_scan = time.monotonic() + self.process_interval
                wake = min(self._full_due, next_scan, *self._pending.values())
                if duration is not None:
                    wake = min(wake, started + duration)
                try:
                    item = self.events.get(timeout=min(1.0, max(0.0, wake - time.monotonic())))
                except queue.Empty:
                    continue
                self._handle(item)
        finally:
            for follower in self.followers.values():
                follower.stop()

    def _full_check(self) -> None:
        record = time.monotonic() >= self._record_due
        report = drift_check(self.ctx, self.environment, between=self._drain, record=record)
        if record:
            self._record_due = time.monotonic() + RECORD_EVERY_S
        self._finish(report)
        self.checks += 1
        self._full_due = time.monotonic() + self.interval
        self._follow_engines(since=time.time())  # a service declared on docker since

    def _instance_check(self, instances: list[str]) -> None:
        for instance_id in instances:
            self._pending.pop(instance_id, None)
        report = drift_check(self.ctx, self.environment, only=set(instances), between=self._drain)
        self._finish(report)

    def _finish(self, report: DriftReport) -> None:
        if self.fix and report.findings:
            remediate(self.ctx, report)
        self.emit(report)

    def _drain(self) -> None:
        """Handle what the engine reported meanwhile (between the instances of a check)."""
        while True:
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(item)

    # --- Docker events ------------------------------------------------------------------------

    def _follow_engines(self, since: float) -> None:
        uses_docker = any(
            item.spec.runtime == "docker"
            for item in declared(self.ctx.ledger, self.environment).values()
        )
        if not uses_docker:
            return
        runtime = self.ctx.runtime_for("docker")
        if not isinstance(runtime, DockerRuntime) or id(runtime.client) in self.followers:
            return
        follower = EngineEvents(runtime.client, self.environment, self.events, since=since)
        self.followers[id(runtime.client)] = follower
        follower.start()

    def wait_connected(self, timeout: float) -> bool:
        """Whether every engine's event stream is open (for callers that act right after)."""
        deadline = time.monotonic() + timeout
        for follower in self.followers.values():
            if not follower.connected.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def _handle(self, item: Mapping[str, Any] | EngineLost) -> None:
        if isinstance(item, EngineLost):
            self._full_due = min(self._full_due, time.monotonic() + RECHECK_S)  # events missed?
            return
        action = str(item.get("Action", "")).partition(":")[0]
        if action in EXEC_ACTIONS:
            self._exec(item)
        elif action in LIFECYCLE_ACTIONS:
            self._full_due = min(self._full_due, time.monotonic() + RECHECK_S)

    def _exec(self, event: Mapping[str, Any]) -> None:
        attributes: Mapping[str, str] = (event.get("Actor") or {}).get("Attributes") or {}
        exec_id = attributes.get("execID", "")
        if not exec_id or exec_id in self._execs:
            return  # exec_create and exec_start of one session: recorded once
        self._execs[exec_id] = None
        if len(self._execs) > MAX_REMEMBERED:
            self._execs.popitem(last=False)
        name = attributes.get("name") or str(event.get("id", ""))
        runtime = self.ctx.runtime_for("docker")
        if not isinstance(runtime, DockerRuntime):
            return  # only a docker engine sends these
        session = _session(runtime.client, str(event.get("id", "")), exec_id)
        if session is None:
            return  # the engine's own healthcheck
        command = exec_command(event)
        instance = Instance(
            id=name,
            environment=self.environment,
            service=attributes.get(LABEL_SERVICE, ""),
            digest=attributes.get(LABEL_DIGEST, ""),
            created_at="",
            port=None,
            labels=dict(attributes),
        )
        finding = Finding(
            "exec-session",
            instance.service,
            name,
            f"an exec session was opened into {name}: {command}",
            {
                "sessions": [
                    {
                        "time": event.get("time"),
                        # a string: nanoseconds since 1970 exceed JSON's exact integers (2^53)
                        "time_nano": str(event.get("timeNano", "")),
                        "action": str(event.get("Action", "")).partition(":")[0],
                        "command": command,
                        "exec_id": exec_id,
                        **session,
                    }
                ]
            },
        )
        record_detected(self.ctx, self.environment, instance, [finding], "docker-events")
        self.emit(
            DriftReport(self.environment, [finding], instances_checked=1, source="docker-events")
        )
        self._check_soon(name)

    def _check_soon(self, instance_id: str) -> None:
        # a second signal postpones the check: what it started must be visible to it too
        self._pending[instance_id] = time.monotonic() + SETTLE_S

    # --- local processes ----------------------------------------------------------------------

    def _scan_local(self) -> None:
        root = self.ctx.home / "runtime" / "local"
        folders = sorted(root.glob("local-*")) if root.is_dir() else []
        host: HostProcesses | None = None
        for folder in folders:
            try:
                record = read_local_record(folder, folder.name)
            except DriftError:
                continue  # being created or removed: the full check judges it
            spec = record["spec"]
            if spec.get("environment") != self.environment:
                continue
            host = host or HostProcesses()
            new = [
                s
                for s in signals(local_processes(host, folder, record), folder.name)
                if (folder.name, s.process.pid, s.process.start, s.kind) not in self._processes
            ]
            if not new:
                continue
            self._processes.update(
                (folder.name, s.process.pid, s.process.start, s.kind) for s in new
            )
            self._record_local(folder, spec, new)

    def _record_local(self, folder: Path, spec: Mapping[str, Any], new: list[Any]) -> None:
        service = str(spec.get("service", ""))
        instance = Instance(
            id=folder.name,
            environment=self.environment,
            service=service,
            digest=str(spec.get("digest", "")),
            created_at="",
            port=None,
            labels=dict(spec.get("labels") or {}),
        )
        found = process_findings(service, folder.name, [s.process for s in new])
        record_detected(self.ctx, self.environment, instance, found, "process-scan")
        self.emit(DriftReport(self.environment, found, instances_checked=1, source="process-scan"))
        self._check_soon(folder.name)


def _session(client: Any, container_id: str, exec_id: str) -> dict[str, Any] | None:
    """What the engine says of an exec session; None for the engine's own healthcheck."""
    import docker.errors  # type: ignore[import-untyped]
    import requests

    try:
        details = client.api.exec_inspect(exec_id)
        health = healthcheck_commands(client.api.inspect_container(container_id))
    except (docker.errors.DockerException, requests.RequestException) as exc:
        log.warning("cannot inspect exec %s: %s", exec_id, exc)
        return {"inspect_error": str(exc)}
    config = details.get("ProcessConfig") or {}
    argv = [config.get("entrypoint") or "", *(config.get("arguments") or [])]
    if " ".join(argv) in health:
        return None
    return {
        "user": config.get("user") or "",
        "tty": bool(config.get("tty")),
        "privileged": bool(config.get("privileged")),
        "pid": details.get("Pid") or None,
        "cmdline": argv,
    }
