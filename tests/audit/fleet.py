"""Appends deployment events as the deploy engine records them (the vocabulary in docs/audit.md).

The audit queries read events, not runtimes: this writes the sequence a real blue-green
deployment, a reconciler heal, a chaos kill, a failed rollout and a drift report leave in the
ledger, with the same subjects, actors and payloads, without starting any process.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from immutrail.artifacts.store import Store
from immutrail.ledger.event import Event, new_event_id
from immutrail.ledger.ledger import Ledger
from immutrail.policy.desired import replay

RECONCILER = "immutrail:reconciler"


@dataclass
class Deployment:
    id: str
    started: int
    created: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    indices: dict[str, int] = field(default_factory=dict)
    """Ledger index of each event this deployment appended, by ``type:subject``."""


@dataclass
class Fleet:
    """The instances of each ``env/service`` as the appended events say they are."""

    ledger: Ledger
    store: Store
    running: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """``env/service`` -> [(instance id, digest)] currently running."""
    config_digest: str = "sha256:" + "c" * 64

    def _append(self, kind: str, actor: str, subject: str, payload: dict[str, Any]) -> int:
        event = Event.create(kind, actor, subject, payload)
        return self.ledger.append(event).index

    def declare(self, environment: str, service: str, actor: str = "ops") -> int:
        return self._append(
            "service.declared",
            actor,
            f"{environment}/{service}",
            {
                "environment": environment,
                "service": service,
                "spec": {
                    "replicas": 2,
                    "strategy": "blue-green",
                    "runtime": "local",
                    "port": 18080,
                    "env": {"GREETING": "hi"},
                    "files": {},
                    "max_lifetime_s": None,
                },
                "config_digest": self.config_digest,
            },
        )

    def deploy(
        self,
        environment: str,
        service: str,
        actor: str,
        *,
        replicas: int = 2,
        reason: str = "deploy",
        fail: str | None = None,
    ) -> Deployment:
        """Blue-green: start new instances, switch traffic to them, destroy the old ones.

        With ``fail``, the first new instance never becomes healthy: the deployment fails and
        what it created is destroyed; the old instances keep serving.
        """
        where = f"{environment}/{service}"
        desired = replay(self.ledger, self.store, environment, service)
        assert desired is not None, f"nothing promoted to {where}"
        old = list(self.running.get(where, []))
        deployment = new_event_id()
        base = {"environment": environment, "service": service}
        started = self.ledger.append(
            Event.create(
                "deployment.started",
                actor,
                where,
                {
                    **base,
                    "deployment": deployment,
                    "digest": desired.digest,
                    "strategy": "blue-green" if reason == "deploy" else "heal",
                    "reason": reason,
                    "replicas": replicas,
                    "runtime": "local",
                    "config_digest": self.config_digest,
                    "promotion_index": desired.ledger_index,
                    "previous_digests": sorted({d for _, d in old if d != desired.digest}),
                },
                id=deployment,
            )
        ).index
        run = Deployment(deployment, started)
        count = 1 if fail else replicas
        for _ in range(count):
            instance = f"local-{secrets.token_hex(8)}"
            run.indices[f"instance.created:{instance}"] = self._append(
                "instance.created",
                actor,
                instance,
                {
                    **base,
                    "deployment": deployment,
                    "digest": desired.digest,
                    "runtime": "local",
                    "port": 20000 + len(run.created),
                    "config_digest": self.config_digest,
                },
            )
            run.created.append(instance)
        if fail:
            run.indices["deployment.failed"] = self._append(
                "deployment.failed",
                actor,
                where,
                {**base, "deployment": deployment, "digest": desired.digest, "reason": fail},
            )
            for instance in run.created:
                self._destroy(run, actor, base, instance, desired.digest, "its deployment failed")
            return run
        serving = [(i, desired.digest) for i in run.created]
        if reason != "deploy":  # a heal keeps the healthy old instances
            serving = [*old, *serving]
        self._switch(run, actor, base, where, [i for i, _ in serving])
        if reason == "deploy":
            for instance, digest in old:
                self._destroy(run, actor, base, instance, digest, "replaced by " + deployment)
        self.running[where] = serving
        run.indices["deployment.completed"] = self._append(
            "deployment.completed",
            actor,
            where,
            {
                **base,
                "deployment": deployment,
                "digest": desired.digest,
                "created": run.created,
                "destroyed": run.destroyed,
            },
        )
        return run

    def _switch(
        self, run: Deployment, actor: str, base: dict[str, str], where: str, instances: list[str]
    ) -> None:
        run.indices["traffic.switched"] = self._append(
            "traffic.switched",
            actor,
            where,
            {
                **base,
                "deployment": run.id,
                "endpoint_port": 18080,
                "backends": [{"instance": i, "port": 20000, "weight": 1} for i in instances],
            },
        )

    def _destroy(
        self,
        run: Deployment,
        actor: str,
        base: dict[str, str],
        instance: str,
        digest: str,
        reason: str,
    ) -> None:
        run.indices[f"instance.destroyed:{instance}"] = self._append(
            "instance.destroyed",
            actor,
            instance,
            {
                **base,
                "deployment": run.id,
                "digest": digest,
                "runtime": "local",
                "reason": reason,
            },
        )
        run.destroyed.append(instance)

    def chaos(self, environment: str, service: str, instance: str, actor: str = "sre") -> int:
        where = f"{environment}/{service}"
        digest = dict(self.running[where])[instance]
        self.running[where] = [(i, d) for i, d in self.running[where] if i != instance]
        return self._append(
            "chaos.terminated",
            actor,
            instance,
            {"environment": environment, "service": service, "digest": digest, "runtime": "local"},
        )

    def heal(self, environment: str, service: str) -> Deployment:
        """The reconciler replaces a missing instance (one new instance, same digest)."""
        return self.deploy(environment, service, RECONCILER, replicas=1, reason="heal")

    def drift(self, environment: str, service: str, instance: str, path: str) -> int:
        where = f"{environment}/{service}"
        return self._append(
            "drift.detected",
            RECONCILER,
            instance,
            {
                "environment": environment,
                "service": service,
                "digest": dict(self.running[where])[instance],
                "findings": [
                    {
                        "kind": "file-changed",
                        "severity": "high",
                        "control": "CIS-5.2",
                        "path": path,
                        "expected": "sha256:" + "1" * 64,
                        "observed": "sha256:" + "2" * 64,
                    }
                ],
            },
        )

    def checked(self, environment: str, instances: int, kinds: list[str]) -> int:
        """A whole drift check's ``drift.checked`` (its findings are recorded apart)."""
        return self._append(
            "drift.checked",
            RECONCILER,
            environment,
            {
                "environment": environment,
                "source": "check",
                "instances_checked": instances,
                "files_hashed": 0,
                "findings": len(kinds),
                "kinds": sorted(set(kinds)),
                "rules": None,
            },
        )

    def remediated(self, environment: str, service: str, instance: str, replaced_by: str) -> int:
        return self._append(
            "drift.remediated",
            RECONCILER,
            instance,
            {
                "environment": environment,
                "service": service,
                "replaced_by": replaced_by,
                "evidence": "sha256:" + "3" * 64,
            },
        )
