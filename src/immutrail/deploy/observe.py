"""What runs, compared with what should: each observed instance of a service, classified.

Both ``deploy`` and the reconciler start here. An instance is *good* when immutrail recorded its
creation, it runs the desired digest with the declared configuration, it is healthy (or still
starting) and younger than its maximum lifetime. Everything else has a reason to be replaced,
and that reason is what the ledger records when it is destroyed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from immutrail.ledger.errors import EventFormatError
from immutrail.ledger.event import parse_entry, parse_time
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter

from .declaration import ServiceSpec
from .runtime import Health, Instance

EVENT_CREATED = "instance.created"
EVENT_DESTROYED = "instance.destroyed"
EVENT_LOST = "instance.lost"
LABEL_DEPLOYMENT = "immutrail.deployment"
LABEL_CONFIG = "immutrail.config-digest"
LABEL_LEDGER_INDEX = "immutrail.ledger-index"


@dataclass(frozen=True)
class Recorded:
    """What the ledger says about the instances of one environment."""

    created: dict[str, int] = field(default_factory=dict)
    """Instance id -> ledger index of its ``instance.created``."""
    lost: set[str] = field(default_factory=set)
    """Instances already recorded as found dead (``instance.lost``)."""


def recorded(ledger: Ledger, environment: str) -> Recorded:
    found = Recorded()
    for kind in (EVENT_CREATED, EVENT_LOST):
        for row in ledger.entries(EntryFilter(type=kind)):
            event = parse_entry(row.data)
            if event.payload.get("environment") != environment:
                continue
            if kind == EVENT_CREATED:
                found.created[event.subject] = row.index
            else:
                found.lost.add(event.subject)
    return found


@dataclass
class Observed:
    """One service's instances, by what should happen to them."""

    good: list[Instance] = field(default_factory=list)
    """Recorded, desired digest and configuration, healthy or starting, not too old."""
    stale: list[Instance] = field(default_factory=list)
    """Healthy but of another digest or configuration: replaced by a deployment's strategy."""
    expired: list[Instance] = field(default_factory=list)
    """Past the declared maximum lifetime: replaced, new first."""
    broken: list[tuple[Instance, str]] = field(default_factory=list)
    """Exited, unhealthy, unrecorded or of an unknown image, with the reason: removed at once."""
    drifted: list[tuple[Instance, str]] = field(default_factory=list)
    """Asked to be replaced (drift remediation), with the reason: replaced, new first."""

    @property
    def serving(self) -> list[Instance]:
        """The instances that may take traffic until replaced."""
        return [*self.good, *self.expired, *self.stale, *(i for i, _ in self.drifted)]

    @property
    def outgoing(self) -> list[Instance]:
        """The serving instances a rollout replaces (everything but the good ones)."""
        return [*self.stale, *self.expired, *(i for i, _ in self.drifted)]

    def mark_drifted(self, replace: dict[str, str]) -> None:
        """Move the instances named in ``replace`` (id -> reason) to ``drifted``."""
        for group in (self.good, self.expired, self.stale):
            for instance in [i for i in group if i.id in replace]:
                group.remove(instance)
                self.drifted.append((instance, replace[instance.id]))


def classify(
    instances: Iterable[Instance],
    spec: ServiceSpec,
    digest: str,
    ledger_view: Recorded,
    now: datetime,
) -> Observed:
    observed = Observed()
    for instance in sorted(instances, key=lambda i: (i.created_at, i.id)):
        reason = _broken(instance, ledger_view)
        if reason is not None:
            observed.broken.append((instance, reason))
        elif instance.digest != digest or instance.labels.get(LABEL_CONFIG) != spec.config_digest:
            observed.stale.append(instance)
        elif spec.max_lifetime_s is not None and _age(instance, now) > spec.max_lifetime_s:
            observed.expired.append(instance)
        else:
            observed.good.append(instance)
    return observed


def _broken(instance: Instance, ledger_view: Recorded) -> str | None:
    if not instance.managed:
        return "not created by immutrail"
    if instance.id not in ledger_view.created:
        return "its creation is not in the ledger (an interrupted deployment, or not ours)"
    if instance.digest.startswith("unknown"):
        return "it runs an image the store does not know"
    if instance.health is Health.exited:
        return "it exited"
    if instance.health is Health.unhealthy:
        return "it is unhealthy"
    return None


def _age(instance: Instance, now: datetime) -> float:
    try:
        return (now - parse_time(instance.created_at)).total_seconds()
    except EventFormatError:
        return float("inf")  # an instance whose age cannot be read is treated as too old
