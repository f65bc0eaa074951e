"""The reconciler, chaos, and the status of an environment.

``reconcile`` converges every declared service of an environment (creates missing instances,
destroys unknown or surplus ones, replaces dead ones and those past their lifetime, rolls out a
new desired digest with the declared strategy) and destroys managed instances of services that
are no longer declared. Every action is a ledger event whose actor is ``immutrail:reconciler``.
``chaos`` kills instances without warning, recorded, so that the healing can be watched.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from immutrail.ledger.event import Event, parse_time
from immutrail.policy.desired import desired_state

from .declaration import RUNTIMES, declared
from .engine import Context, Outcome, converge, destroy_instance
from .errors import DeployInputError, DeploymentFailedError
from .observe import LABEL_CONFIG, recorded
from .runtime import Health, Instance, RuntimeDriverError

EVENT_CHAOS = "chaos.terminated"


@dataclass
class Pass:
    """One reconciliation pass over an environment."""

    environment: str
    outcomes: list[Outcome] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    """Managed instances of services that are not declared, destroyed."""
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.removed) or any(o.status != "unchanged" for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "services": [o.to_json() for o in self.outcomes],
            "removed": self.removed,
            "errors": self.errors,
            "changed": self.changed,
        }


def reconcile(ctx: Context, environment: str) -> Pass:
    """One pass: every declared service converged; undeclared services' instances destroyed.

    A service that cannot be converged (its image no longer admitted, a failed rollout) is
    reported in ``errors`` and the pass goes on with the others.
    """
    result = Pass(environment)
    services = declared(ctx.ledger, environment)
    for name in services:
        if desired_state(ctx.home, ctx.ledger, ctx.store, environment, name) is None:
            continue  # declared, never promoted: nothing to run yet
        try:
            result.outcomes.append(converge(ctx, environment, name, reason="reconcile"))
        except (DeploymentFailedError, RuntimeDriverError) as exc:
            result.errors.append(f"{environment}/{name}: {exc}")
    for runtime_name in runtimes_in_use(ctx, environment):
        runtime = ctx.runtime_for(runtime_name)
        for instance in runtime.list(environment):
            if instance.managed and instance.service not in services:
                _remove(ctx, runtime_name, instance)
                result.removed.append(instance.id)
    return result


def watch(
    ctx: Context,
    environment: str,
    *,
    interval_s: float,
    passes: int | None,
    on_pass: Callable[[Pass], None],
) -> None:
    """Reconcile every ``interval_s`` seconds, ``passes`` times (None: until interrupted)."""
    done = 0
    while passes is None or done < passes:
        started = time.monotonic()
        on_pass(reconcile(ctx, environment))
        done += 1
        if passes is None or done < passes:
            time.sleep(max(0.0, interval_s - (time.monotonic() - started)))


def chaos(ctx: Context, environment: str, count: int, rng: random.Random) -> list[Instance]:
    """Kill ``count`` random running managed instances of the environment, without warning."""
    if count < 1:
        raise DeployInputError("--terminate needs a number of instances >= 1")
    candidates: list[tuple[str, Instance]] = []
    for runtime_name in runtimes_in_use(ctx, environment):
        for instance in ctx.runtime_for(runtime_name).list(environment):
            if instance.managed and instance.health is not Health.exited:
                candidates.append((runtime_name, instance))
    if not candidates:
        raise DeployInputError(f"no running instance in {environment} to terminate")
    victims = rng.sample(candidates, min(count, len(candidates)))
    for runtime_name, instance in victims:
        ctx.runtime_for(runtime_name).kill(instance.id)
        ctx.ledger.append(
            Event.create(
                EVENT_CHAOS,
                ctx.actor,
                instance.id,
                {
                    "environment": environment,
                    "service": instance.service,
                    "digest": instance.digest,
                    "runtime": runtime_name,
                },
            )
        )
        ctx.report(f"killed {instance.id} ({instance.service})")
    return [instance for _, instance in victims]


# --- status ------------------------------------------------------------------------------------


def status(ctx: Context, environment: str) -> dict[str, Any]:
    """Desired against observed, per service and per instance; changes nothing but reads."""
    from .endpoint import Endpoint

    now = ctx.clock()
    services = declared(ctx.ledger, environment)
    ledger_view = recorded(ctx.ledger, environment)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for name, item in services.items():
        spec = item.spec
        desired = desired_state(ctx.home, ctx.ledger, ctx.store, environment, name)
        info = Endpoint(ctx.home, environment, name).running()
        serving = {b.port for b in info.backends if b.weight > 0} if info else set()
        instances = []
        for instance in ctx.runtime_for(spec.runtime).list(environment):
            if instance.service != name:
                continue
            seen.add(instance.id)
            instances.append(
                {
                    "id": instance.id,
                    "digest": instance.digest,
                    "age_s": round((now - parse_time(instance.created_at)).total_seconds(), 1),
                    "created_at": instance.created_at,
                    "health": instance.health.value,
                    "port": instance.port,
                    "serving": instance.port in serving,
                    "recorded": instance.id in ledger_view.created,
                    "up_to_date": desired is not None
                    and instance.digest == desired.digest
                    and instance.labels.get(LABEL_CONFIG) == spec.config_digest,
                }
            )
        healthy = [i for i in instances if i["up_to_date"] and i["health"] == "healthy"]
        out.append(
            {
                "service": name,
                "desired": {
                    "digest": desired.digest if desired else None,
                    "image": desired.image if desired else None,
                    "replicas": spec.replicas,
                    "strategy": spec.strategy,
                    "runtime": spec.runtime,
                    "config_digest": spec.config_digest,
                },
                "endpoint": {"port": spec.port, "running": info is not None},
                "converged": desired is not None
                and len(healthy) == spec.replicas == len(instances)
                and all(i["serving"] for i in healthy),
                "instances": instances,
            }
        )
    strays = [
        {"id": i.id, "service": i.service, "digest": i.digest, "managed": i.managed}
        for runtime_name in runtimes_in_use(ctx, environment)
        for i in ctx.runtime_for(runtime_name).list(environment)
        if i.id not in seen
    ]
    return {"environment": environment, "services": out, "undeclared": strays}


def runtimes_in_use(ctx: Context, environment: str) -> list[str]:
    """The runtimes this environment's services are declared on (local always looked at)."""
    used = {item.spec.runtime for item in declared(ctx.ledger, environment).values()}
    return [name for name in RUNTIMES if name in used or name == "local"]


def _remove(ctx: Context, runtime_name: str, instance: Instance) -> None:
    reason = "its service is not declared in this environment"
    destroy_instance(ctx, ctx.runtime_for(runtime_name), instance, reason, None)
