"""Deployments by replacement: converge a service's instances to its desired state.

One function, :func:`converge`, serves ``deploy``, ``rollback`` and the reconciler. Under the
service's lock it observes the runtime, removes what is broken, and then either heals (same image
and configuration: replace the missing, dead and expired instances, new ones first) or rolls out
a new digest or configuration with the declared strategy (:mod:`immutrail.deploy.strategies`).
Every step is a ledger event with the acting principal as actor; a failed rollout is undone
(its new instances destroyed, the desired state rolled back to the digest that still runs).

Traffic always goes through the service's endpoint process (:mod:`immutrail.deploy.endpoint`),
and an instance is destroyed only after the endpoint stopped sending it connections and the ones
it had are drained: that is what makes a replacement lose no request.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from immutrail.artifacts.errors import ArtifactError
from immutrail.artifacts.store import Store
from immutrail.ledger.event import Event, new_event_id, parse_entry
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter
from immutrail.policy.desired import DesiredState, desired_state, record_rollback
from immutrail.policy.errors import PolicyInputError

from .admission import admit
from .declaration import Declared, ServiceSpec, check_names, config_files, declaration
from .errors import DeployInputError, DeploymentFailedError
from .keep_logs import keep_logs
from .observe import (
    EVENT_CREATED,
    EVENT_DESTROYED,
    EVENT_LOST,
    LABEL_CONFIG,
    LABEL_DEPLOYMENT,
    LABEL_LEDGER_INDEX,
    Observed,
    Recorded,
    classify,
    recorded,
)
from .runtime import Health, Instance, InstanceSpec, Logs, Runtime, RuntimeDriverError

if TYPE_CHECKING:
    from .endpoint import Endpoint

EVENT_STARTED = "deployment.started"
EVENT_COMPLETED = "deployment.completed"
EVENT_FAILED = "deployment.failed"
EVENT_INTERRUPTED = "deployment.interrupted"
EVENT_REFUSED = "deployment.refused"
EVENT_SWITCHED = "traffic.switched"
EVENT_CANARY_STEP = "deployment.canary.step"
FINISHED = (EVENT_COMPLETED, EVENT_FAILED, EVENT_INTERRUPTED, EVENT_REFUSED)
RECONCILER = "immutrail:reconciler"
LOCK_WAIT_S = 120.0


def _quiet(message: str) -> None:
    del message


@dataclass
class Context:
    """What a deployment needs: the home, the ledger, the store, who acts, and the runtimes."""

    home: Path
    ledger: Ledger
    store: Store
    actor: str
    runtime_for: Callable[[str], Runtime]
    report: Callable[[str], None] = _quiet
    drain_timeout: float = 30.0
    poll_s: float = 0.05
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass
class Outcome:
    environment: str
    service: str
    status: str
    """``completed``, ``healed``, ``unchanged``, ``rolled-back`` or ``failed``."""
    digest: str
    strategy: str | None
    deployment: str | None
    endpoint_port: int
    created: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "service": self.service,
            "status": self.status,
            "digest": self.digest,
            "strategy": self.strategy,
            "deployment": self.deployment,
            "endpoint_port": self.endpoint_port,
            "created": self.created,
            "destroyed": self.destroyed,
            "seconds": round(self.seconds, 3),
            "reason": self.reason,
        }


# --- the lock ----------------------------------------------------------------------------------


@contextlib.contextmanager
def service_lock(home: Path, environment: str, service: str) -> Iterator[None]:
    """One deployment or reconciliation of a service at a time, across processes."""
    check_names(environment, service)  # the names make a file name: never a path
    folder = home / "runtime" / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{environment}.{service}.lock", "a+") as handle:
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeDriverError(
                        f"another deployment of {environment}/{service} has held its lock for "
                        f"{LOCK_WAIT_S:.0f} s; try again later"
                    ) from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --- one run -----------------------------------------------------------------------------------


class Run:
    """The primitives of one deployment (or healing pass) of one service.

    Strategies are written with these: create instances, wait for their health, send traffic,
    retire instances. Each records itself in the ledger.
    """

    def __init__(
        self,
        ctx: Context,
        declared: Declared,
        desired: DesiredState,
        runtime: Runtime,
        endpoint: Endpoint,
        deployment: str,
    ) -> None:
        self.ctx = ctx
        self.spec: ServiceSpec = declared.spec
        self.desired = desired
        self.runtime = runtime
        self.endpoint = endpoint
        self.deployment = deployment
        self.created: list[str] = []
        self.destroyed: list[str] = []
        self._files: dict[str, bytes] | None = None

    @property
    def where(self) -> str:
        return f"{self.spec.environment}/{self.spec.service}"

    def record(self, kind: str, subject: str, payload: dict[str, Any]) -> int:
        base = {"environment": self.spec.environment, "service": self.spec.service}
        event = Event.create(kind, self.ctx.actor, subject, {**base, **payload})
        return self.ctx.ledger.append(event).index

    def create(self, count: int) -> list[Instance]:
        """Start ``count`` new instances of the desired digest; each recorded as created."""
        if self._files is None:
            self._files = config_files(self.ctx.home, self.spec)
        made = []
        taken = {i.port for i in self.runtime.list() if i.port is not None}
        for _ in range(count):
            port = free_port(avoid=taken)
            taken.add(port)
            spec = InstanceSpec(
                self.spec.environment,
                self.spec.service,
                self.desired.digest,
                env=dict(self.spec.env),
                files=self._files,
                port=port,
                labels={
                    LABEL_DEPLOYMENT: self.deployment,
                    LABEL_CONFIG: self.spec.config_digest,
                    LABEL_LEDGER_INDEX: str(self.desired.ledger_index),
                },
                command=self.spec.command,
            )
            instance = self.runtime.create(spec)
            self.record(
                EVENT_CREATED,
                instance.id,
                {
                    "deployment": self.deployment,
                    "digest": self.desired.digest,
                    "runtime": self.runtime.name,
                    "port": port,
                    "config_digest": self.spec.config_digest,
                },
            )
            self.created.append(instance.id)
            self.ctx.report(f"created {instance.id} (port {port})")
            made.append(instance)
        return made

    def wait_healthy(self, instances: Sequence[Instance]) -> None:
        """Wait until every instance is healthy; DeploymentFailedError if one exits or times out."""
        waiting = {i.id for i in instances}
        deadline = time.monotonic() + self.spec.health_timeout_s
        while waiting:
            for instance_id in sorted(waiting):
                health = self.runtime.health(instance_id)
                if health is Health.healthy:
                    waiting.discard(instance_id)
                elif health in (Health.exited, Health.unhealthy):
                    raise DeploymentFailedError(f"{instance_id} is {health.value} before serving")
            if waiting and time.monotonic() > deadline:
                raise DeploymentFailedError(
                    f"{', '.join(sorted(waiting))} not healthy within "
                    f"{self.spec.health_timeout_s:g} s"
                )
            if waiting:
                time.sleep(self.ctx.poll_s)
        if instances:
            self.ctx.report(f"{len(instances)} instance(s) healthy")

    def serve(self, instances: Sequence[Instance], weights: Sequence[int] | None = None) -> None:
        """Send new connections to exactly ``instances`` (one step), recorded."""
        weights = list(weights) if weights is not None else [1] * len(instances)
        backends = [("127.0.0.1", _port(i), w) for i, w in zip(instances, weights, strict=True)]
        self.endpoint.switch(backends)
        self.ctx.report(f"traffic: {len(instances)} instance(s) behind 127.0.0.1:{self.spec.port}")
        self.record(
            EVENT_SWITCHED,
            f"{self.spec.environment}/{self.spec.service}",
            {
                "deployment": self.deployment,
                "endpoint_port": self.spec.port,
                "backends": [
                    {"instance": i.id, "port": _port(i), "weight": w}
                    for i, w in zip(instances, weights, strict=True)
                ],
            },
        )

    def retire(self, instances: Sequence[Instance], reason: str) -> None:
        """Destroy instances that no longer take new connections, after draining them."""
        if not instances:
            return
        open_connections = self.endpoint.drain(
            [("127.0.0.1", _port(i)) for i in instances if i.port], self.ctx.drain_timeout
        )
        if open_connections:
            self.ctx.report(f"{open_connections} connection(s) still open after the drain timeout")
        for instance in instances:
            self.destroy(instance, reason)

    def destroy(self, instance: Instance, reason: str) -> None:
        """Keep the instance's logs in the store, destroy it, record it."""
        destroy_instance(self.ctx, self.runtime, instance, reason, self.deployment)
        self.destroyed.append(instance.id)


def destroy_instance(
    ctx: Context, runtime: Runtime, instance: Instance, reason: str, deployment: str | None
) -> None:
    """Keep an instance's logs in the store, destroy it, record ``instance.destroyed``."""
    try:
        logs = runtime.logs(instance.id)
    except RuntimeDriverError:
        logs = Logs(b"", b"")
    kept: str | None = None
    if ctx.store.has_blob(instance.digest):
        try:
            kept = keep_logs(ctx.store, ctx.ledger, ctx.actor, instance, logs).artifact
        except ArtifactError as exc:
            ctx.report(f"the logs of {instance.id} could not be kept: {exc}")
    try:
        runtime.destroy(instance.id)
    except RuntimeDriverError as exc:
        if _still_there(runtime, instance.id):
            raise
        ctx.report(f"{instance.id} was already gone: {exc}")
    payload = {
        "environment": instance.environment,
        "service": instance.service,
        "deployment": deployment,
        "digest": instance.digest,
        "runtime": runtime.name,
        "reason": reason,
        "created_at": instance.created_at,
        "logs": kept,
    }
    ctx.ledger.append(Event.create(EVENT_DESTROYED, ctx.actor, instance.id, payload))
    ctx.report(f"destroyed {instance.id} ({reason})")


# --- converge ----------------------------------------------------------------------------------


def converge(
    ctx: Context,
    environment: str,
    service: str,
    *,
    strategy: str | None = None,
    reason: str = "deploy",
    replace: Mapping[str, str] | None = None,
) -> Outcome:
    """Make ``environment/service`` run its desired state; see the module's docstring.

    ``replace`` (instance id -> reason) names instances to replace even if they look good
    (drift remediation): new instances first, then those are drained and destroyed.
    """
    started = time.monotonic()
    with service_lock(ctx.home, environment, service):
        outcome = _converge_locked(
            ctx, environment, service, strategy, reason, replace=dict(replace or {})
        )
    outcome.seconds = time.monotonic() - started
    return outcome


def rollback(ctx: Context, environment: str, service: str, reason: str) -> Outcome:
    """Deploy the digest that was desired before the current one: new instances, no patch."""
    started = time.monotonic()
    with service_lock(ctx.home, environment, service):
        declaration(ctx.ledger, environment, service)
        try:
            record_rollback(
                ctx.home,
                ctx.ledger,
                ctx.store,
                environment,
                service,
                ctx.actor,
                reason=reason,
                automatic=False,
            )
        except PolicyInputError as exc:
            raise DeployInputError(str(exc)) from exc
        outcome = _converge_locked(
            ctx, environment, service, _rollback_strategy(ctx, environment, service), "rollback"
        )
    outcome.seconds = time.monotonic() - started
    return outcome


def _rollback_strategy(ctx: Context, environment: str, service: str) -> str:
    # A rollback is urgent and goes back to an image that already ran: no canary steps.
    declared = declaration(ctx.ledger, environment, service).spec.strategy
    return "rolling" if declared == "rolling" else "blue-green"


def _converge_locked(
    ctx: Context,
    environment: str,
    service: str,
    strategy: str | None,
    reason: str,
    *,
    undo: bool = True,
    replace: dict[str, str] | None = None,
) -> Outcome:
    from .strategies import run_strategy  # strategies use Run; import here to avoid a cycle

    declared = declaration(ctx.ledger, environment, service)
    spec = declared.spec
    desired = desired_state(ctx.home, ctx.ledger, ctx.store, environment, service)
    if desired is None:
        raise DeployInputError(
            f"nothing has been promoted to {environment}/{service} "
            f"(immutrail promote DIGEST --to {environment} --service {service})"
        )
    mark_interrupted(ctx, environment, service)
    from .endpoint import Endpoint

    runtime = ctx.runtime_for(spec.runtime)
    endpoint = Endpoint(ctx.home, environment, service)
    endpoint.ensure(spec.port)
    ledger_view = recorded(ctx.ledger, environment)
    observed = classify(
        [i for i in runtime.list(environment) if i.service == service],
        spec,
        desired.digest,
        ledger_view,
        ctx.clock(),
    )
    observed.mark_drifted(replace or {})
    outcome = Outcome(environment, service, "unchanged", desired.digest, None, None, spec.port)
    surplus = max(0, len(observed.good) - spec.replicas)
    if (
        not observed.broken
        and not observed.stale
        and not observed.expired
        and not observed.drifted
        and not surplus
        and len(observed.good) == spec.replicas
    ):
        _align_endpoint(ctx, endpoint, observed.good, spec, desired, runtime)
        return outcome

    rollout = bool(observed.stale) or not (observed.good or observed.expired or observed.drifted)
    chosen = (strategy or spec.strategy) if rollout else "heal"
    admit(ctx.home, ctx.store, ctx.ledger, environment, service, desired.digest, ctx.actor)
    if chosen == "canary":
        from .guardrails import refuse_canary_if_privacy_changes

        refuse_canary_if_privacy_changes(ctx, spec, desired, observed)
    deployment = _start(ctx, spec, desired, chosen, reason, observed)
    run = Run(ctx, declared, desired, runtime, endpoint, deployment)
    outcome.deployment, outcome.strategy = deployment, chosen
    try:
        _remove_broken(run, observed, ledger_view)
        run_strategy(chosen, run, observed)
    except DeploymentFailedError as exc:
        _record_end(run, EVENT_FAILED, str(exc))
        outcome.created, outcome.destroyed = run.created, run.destroyed
        outcome.status, outcome.reason = "failed", str(exc)
        if not undo:
            raise
        _undo(ctx, run, desired, str(exc), roll_back=rollout)
        raise DeploymentFailedError(
            f"the deployment of {desired.digest} to {environment}/{service} failed and was "
            f"undone: {exc}"
        ) from exc
    _record_end(run, EVENT_COMPLETED, None)
    outcome.created, outcome.destroyed = run.created, run.destroyed
    outcome.status = "completed" if rollout else "healed"
    return outcome


def _start(
    ctx: Context,
    spec: ServiceSpec,
    desired: DesiredState,
    strategy: str,
    reason: str,
    observed: Observed,
) -> str:
    # The deployment's id is its start event's id: unique, and found in the ledger at once.
    deployment = new_event_id()
    event = Event.create(
        EVENT_STARTED,
        ctx.actor,
        f"{spec.environment}/{spec.service}",
        {
            "deployment": deployment,
            "environment": spec.environment,
            "service": spec.service,
            "digest": desired.digest,
            "strategy": strategy,
            "reason": reason,
            "replicas": spec.replicas,
            "runtime": spec.runtime,
            "config_digest": spec.config_digest,
            "promotion_index": desired.ledger_index,
            "previous_digests": sorted({i.digest for i in observed.stale}),
        },
        id=deployment,
    )
    ctx.ledger.append(event)
    ctx.report(f"deployment {deployment}: {strategy} of {desired.digest} ({reason})")
    return deployment


def _record_end(run: Run, kind: str, reason: str | None) -> None:
    payload: dict[str, Any] = {
        "deployment": run.deployment,
        "digest": run.desired.digest,
        "created": run.created,
        "destroyed": run.destroyed,
    }
    if reason is not None:
        payload["reason"] = reason[:2000]
    run.record(kind, f"{run.spec.environment}/{run.spec.service}", payload)


def _remove_broken(run: Run, observed: Observed, ledger_view: Recorded) -> None:
    """Take broken instances out of traffic and destroy them (a dead one is recorded as lost)."""
    if not observed.broken:
        return
    run.serve(observed.serving)
    for instance, why in observed.broken:
        if instance.health is Health.exited and instance.id not in ledger_view.lost:
            run.record(
                EVENT_LOST,
                instance.id,
                {
                    "digest": instance.digest,
                    "health": instance.health.value,
                    "runtime": run.runtime.name,
                },
            )
        run.destroy(instance, why)


def _undo(ctx: Context, run: Run, failed: DesiredState, why: str, *, roll_back: bool) -> None:
    """After a failure: destroy what the run created; after a failed rollout, also go back to
    the digest that still runs (a failed heal keeps its digest: the image did not change)."""
    unfinished = set(run.created) - set(run.destroyed)
    present = run.runtime.list(run.spec.environment)
    leftovers = [i for i in present if i.id in unfinished]
    survivors = [
        i
        for i in present
        if i.service == run.spec.service
        and i.id not in unfinished
        and i.health is not Health.exited
    ]
    if survivors:
        run.serve(survivors)
    for instance in leftovers:
        run.destroy(instance, "the deployment that created it failed")
    if not roll_back or failed.previous is None:
        return
    record_rollback(
        ctx.home,
        ctx.ledger,
        ctx.store,
        run.spec.environment,
        run.spec.service,
        ctx.actor,
        reason=f"automatic: deployment {run.deployment} failed: {why}",
        automatic=True,
        deployment=run.deployment,
    )
    ctx.report(f"desired state of {run.where} rolled back to {failed.previous}")
    # The previous digest may no longer be fully running (a rolling update replaced part of it).
    _converge_locked(
        ctx, run.spec.environment, run.spec.service, None, "automatic rollback", undo=False
    )


def _align_endpoint(
    ctx: Context,
    endpoint: Endpoint,
    good: Sequence[Instance],
    spec: ServiceSpec,
    desired: DesiredState,
    runtime: Runtime,
) -> None:
    """An up-to-date service whose endpoint lost its backends (restarted) gets them back."""
    wanted = {("127.0.0.1", _port(i)) for i in good}
    info = endpoint.running()
    current = {(b.host, b.port) for b in info.backends} if info is not None else set()
    if wanted != current:
        run = Run(
            ctx,
            declaration(ctx.ledger, spec.environment, spec.service),
            desired,
            runtime,
            endpoint,
            "",
        )
        run.serve(good)


def mark_interrupted(ctx: Context, environment: str, service: str) -> list[str]:
    """Record ``deployment.interrupted`` for every started deployment that never finished.

    Called under the service lock, so no other process is running one: a deployment without an
    end event was cut off (its process killed). Its instances are then found by the observation
    that follows and kept or replaced like any other.
    """
    subject = f"{environment}/{service}"
    open_ones: dict[str, str] = {}
    for row in ctx.ledger.entries(EntryFilter(subject=subject)):
        event = parse_entry(row.data)
        deployment = event.payload.get("deployment")
        if event.type == EVENT_STARTED and isinstance(deployment, str):
            open_ones[deployment] = str(event.payload.get("digest"))
        elif event.type in FINISHED and isinstance(deployment, str):
            open_ones.pop(deployment, None)
    for deployment, digest in open_ones.items():
        ctx.ledger.append(
            Event.create(
                EVENT_INTERRUPTED,
                ctx.actor,
                subject,
                {
                    "environment": environment,
                    "service": service,
                    "deployment": deployment,
                    "digest": digest,
                    "reason": "the process running it ended before it finished",
                },
            )
        )
        ctx.report(f"deployment {deployment} was interrupted; recorded")
    return list(open_ones)


# --- helpers -----------------------------------------------------------------------------------


def free_port(avoid: Collection[int] = ()) -> int:
    """A loopback port nobody listens on now (the instance binds it a moment later), not in
    ``avoid``: the kernel may hand out a port again before the instance given it has bound it."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in avoid:
            return port
    raise RuntimeDriverError("no free loopback port outside those already given to instances")


def _port(instance: Instance) -> int:
    if instance.port is None:
        raise RuntimeDriverError(f"{instance.id} has no port: it cannot take traffic")
    return instance.port


def _still_there(runtime: Runtime, instance_id: str) -> bool:
    return any(i.id == instance_id for i in runtime.list())
