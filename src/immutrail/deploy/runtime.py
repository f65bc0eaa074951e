"""The one interface every runtime driver implements: create, health, list, logs, destroy.

Instances are never modified: there is no exec, no update, no restart in place. A change is a new
instance from a verified image, and the old one is destroyed as a recorded event. A Kubernetes
driver can follow by implementing this protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class Health(StrEnum):
    starting = "starting"
    healthy = "healthy"
    unhealthy = "unhealthy"
    exited = "exited"
    unknown = "unknown"


@dataclass(frozen=True)
class InstanceSpec:
    """What to start: the admitted image and everything that makes the instance's identity.

    ``env`` and ``files`` (path in the instance -> content) are configuration; a change of either
    is a new deployment. ``labels`` tie the instance to its deployment and ledger index.
    """

    environment: str
    service: str
    digest: str
    env: Mapping[str, str] = field(default_factory=dict)
    files: Mapping[str, bytes] = field(default_factory=dict)
    port: int | None = None
    """The loopback port the instance must listen on (given to it as ``PORT``)."""
    labels: Mapping[str, str] = field(default_factory=dict)
    command: Sequence[str] | None = None
    """Overrides the image's entrypoint + cmd; None: the image's own."""


@dataclass(frozen=True)
class Instance:
    """A running (or exited) instance as the runtime observes it."""

    id: str
    environment: str
    service: str
    digest: str
    """The image digest the runtime says this instance runs (observed, not assumed)."""
    created_at: str
    """RFC 3339 UTC."""
    port: int | None
    labels: Mapping[str, str]
    health: Health = Health.unknown
    managed: bool = True
    """False for an instance that carries no immutrail labels (created by someone else)."""


@dataclass(frozen=True)
class Logs:
    """An instance's captured output: kept in the store before the instance is destroyed."""

    stdout: bytes
    stderr: bytes


class RuntimeDriverError(Exception):
    """A runtime failed to do what was asked (the engine is down, the instance vanished…)."""

    def diagnostics(self) -> str:
        return str(self)


class AdmissionError(RuntimeDriverError):
    """The image may not run here: not the promoted digest, a bad signature, damaged blobs."""


@runtime_checkable
class Runtime(Protocol):
    """A place instances run: the ``local`` host processes, ``docker`` containers, …"""

    name: str

    def create(self, spec: InstanceSpec) -> Instance:
        """Start one instance of ``spec.digest``; it must already have passed admission."""
        ...

    def health(self, instance_id: str) -> Health:
        """Probe the instance now (its healthcheck, else its port, else whether it runs)."""
        ...

    def list(self, environment: str | None = None) -> list[Instance]:
        """Every instance this runtime can see, immutrail's and others', with observed digests."""
        ...

    def logs(self, instance_id: str) -> Logs:
        """What the instance wrote so far."""
        ...

    def destroy(self, instance_id: str) -> None:
        """Stop the instance and remove everything it had (its scratch space too)."""
        ...

    def kill(self, instance_id: str) -> None:
        """Kill the instance's processes at once, without warning or cleanup (chaos testing).

        The instance stays, exited, for the reconciler to find, record and replace.
        """
        ...
