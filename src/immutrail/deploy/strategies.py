"""How a set of instances is replaced: heal, blue/green, rolling, canary.

Each strategy gets the service's classified instances (:class:`~immutrail.deploy.observe.Observed`)
and the run's primitives (:class:`~immutrail.deploy.engine.Run`): create, wait until healthy,
serve (switch the endpoint in one step), retire (drain, keep logs, destroy). The invariant they
all keep: an instance leaves the endpoint's backend set before it is drained and destroyed, and a
new instance joins it only once healthy. A :class:`DeploymentFailedError` raised here is undone
by the engine.
"""

from __future__ import annotations

import time

from .engine import EVENT_CANARY_STEP, Run
from .errors import DeploymentFailedError
from .observe import Observed
from .proxy import ProxyStats
from .runtime import Health, Instance

REPLACED = "replaced by deployment"


def run_strategy(name: str, run: Run, observed: Observed) -> None:
    strategies = {"heal": heal, "blue-green": blue_green, "rolling": rolling, "canary": canary}
    strategies[name](run, observed)


def heal(run: Run, observed: Observed) -> None:
    """Same image and configuration: replace missing and expired instances, new ones first."""
    replicas = run.spec.replicas
    keep, surplus = observed.good[:replicas], observed.good[replicas:]
    new = run.create(replicas - len(keep))
    run.wait_healthy(new)
    run.serve([*keep, *new])
    run.retire(observed.expired, "past its maximum lifetime")
    for instance, reason in observed.drifted:
        run.retire([instance], reason)
    run.retire(surplus, "surplus replica")


def blue_green(run: Run, observed: Observed) -> None:
    """Start the whole new set, wait for its health, switch in one step, then retire the old."""
    replicas = run.spec.replicas
    keep = observed.good[:replicas]
    new = run.create(replicas - len(keep))
    run.wait_healthy(new)
    run.serve([*keep, *new])
    run.retire([*observed.outgoing, *observed.good[replicas:]], REPLACED)


def rolling(run: Run, observed: Observed) -> None:
    """Replace in batches: at most ``max_surge`` extra instances, ``max_unavailable`` fewer."""
    target = run.spec.replicas
    surge, unavailable = run.spec.rolling.max_surge, run.spec.rolling.max_unavailable
    new = observed.good[:target]
    old = [*observed.outgoing, *observed.good[target:]]
    while len(new) < target:
        down = min(unavailable, len(old))
        first, old = old[:down], old[down:]
        if first:
            run.serve([*new, *old])
            run.retire(first, REPLACED)
        made = run.create(min(target - len(new), max(1, surge + down)))
        run.wait_healthy(made)
        new += made
        extra = max(0, len(new) + len(old) - target)
        victims, old = old[:extra], old[extra:]
        run.serve([*new, *old])
        run.retire(victims, REPLACED)
    if old:
        run.serve(new)
        run.retire(old, REPLACED)


def canary(run: Run, observed: Observed) -> None:
    """Shift new connections to the new set in steps, each gated on health and error rate."""
    target = run.spec.replicas
    keep = observed.good[:target]
    old = [*observed.outgoing, *observed.good[target:]]
    made = run.create(target - len(keep))
    run.wait_healthy(made)
    new = [*keep, *made]
    if old and new:
        for percent in run.spec.canary.steps:
            if percent >= 100:
                break
            _canary_step(run, old, new, percent)
    run.serve(new)
    run.retire(old, REPLACED)


def _canary_step(run: Run, old: list[Instance], new: list[Instance], percent: int) -> None:
    # Weights per backend so that the *sets* get percent / 100 - percent of new connections.
    weights = [(100 - percent) * len(new)] * len(old) + [percent * len(old)] * len(new)
    run.serve([*old, *new], weights)
    before = run.endpoint.stats()
    deadline = time.monotonic() + run.spec.canary.step_seconds
    unhealthy: list[str] = []
    while time.monotonic() < deadline and not unhealthy:
        unhealthy = [
            f"{i.id} is {health.value}"
            for i in new
            if (health := run.runtime.health(i.id)) is not Health.healthy
        ]
        time.sleep(min(0.25, max(0.0, deadline - time.monotonic())))
    connections, failures = _delta(before, run.endpoint.stats(), new)
    attempts = connections + failures
    rate = failures / attempts if attempts else 0.0
    run.record(
        EVENT_CANARY_STEP,
        f"{run.spec.environment}/{run.spec.service}",
        {
            "deployment": run.deployment,
            "percent": percent,
            "connections": connections,
            "connect_failures": failures,
            "error_rate": round(rate, 6),
            "unhealthy": unhealthy,
        },
    )
    run.ctx.report(
        f"canary {percent}%: {connections} connection(s), error rate {rate:.2%}"
        + (f", {'; '.join(unhealthy)}" if unhealthy else "")
    )
    if unhealthy:
        raise DeploymentFailedError(f"canary at {percent}%: {'; '.join(unhealthy)}")
    if rate > run.spec.canary.max_error_rate:
        raise DeploymentFailedError(
            f"canary at {percent}%: error rate {rate:.2%} over the allowed "
            f"{run.spec.canary.max_error_rate:.2%} ({failures} of {attempts} connects failed)"
        )


def _delta(before: ProxyStats, after: ProxyStats, instances: list[Instance]) -> tuple[int, int]:
    connections = failures = 0
    for instance in instances:
        if instance.port is None:
            continue
        now, then = (
            after.backend("127.0.0.1", instance.port),
            before.backend("127.0.0.1", instance.port),
        )
        if now is None:
            continue
        connections += now.connections - (then.connections if then else 0)
        failures += now.connect_failures - (then.connect_failures if then else 0)
    return connections, failures
