"""`immutrail promote DIGEST --to ENV`: the gate's decision, recorded whatever it is.

The environment's active policy is evaluated over the evidence. Every decision, allowed or not,
is one ``promotion.decided`` event with each check and its reason. Only an allowed decision
changes the environment's desired state (:mod:`immutrail.policy.desired`).

Break-glass: a refused promotion may be forced with ``override`` and a reason, by a principal the
policy names under ``break_glass``, whose event must be signed with that principal's ledger key.
The decision then says ``override: true`` and keeps every failed check, so every later report
shows what was bypassed and by whom.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from immutrail.artifacts.statements import ledger_keys
from immutrail.artifacts.store import Store
from immutrail.crypto.keys import PrivateKey
from immutrail.ledger.event import Event
from immutrail.ledger.ledger import Ledger

from .authenticated import signed_by_principal
from .desired import DesiredState, record_promotion, service_for
from .errors import PolicyInputError
from .evaluate import Check
from .evidence import EVENT_PROMOTION, Evidence, gather
from .registry import ActivePolicy, active_policy, check_environment, evaluate_active

MAX_MESSAGE_CHARS = 2000
"""Each check's message is cut here in the event: entries stay small; the evidence is attached."""


@dataclass(frozen=True)
class Decision:
    digest: str
    environment: str
    service: str
    allowed: bool
    override: bool
    checks: list[Check]
    policy: ActivePolicy
    evidence: Evidence
    ledger_index: int | None
    desired: DesiredState | None

    def to_json(self) -> dict[str, Any]:
        return {
            "digest": self.digest,
            "environment": self.environment,
            "service": self.service,
            "allowed": self.allowed,
            "override": self.override,
            "policy": {
                "digest": self.policy.digest,
                "format": self.policy.format,
                "source": self.policy.source,
                "ledger_index": self.policy.ledger_index,
            },
            "checks": [c.to_json() for c in self.checks],
            "ledger_index": self.ledger_index,
            "desired_state": None if self.desired is None else self.desired.to_json(),
        }


def decide(
    store: Store, ledger: Ledger, home: Path, digest: str, environment: str, now: datetime
) -> tuple[ActivePolicy, Evidence, list[Check]]:
    """Evaluate without recording anything (``--dry-run``; also the first half of promote)."""
    check_environment(environment)
    keys = ledger_keys(ledger)
    policy = active_policy(home, ledger, keys, environment)
    evidence = gather(store, ledger, keys, digest, environment, now)
    return policy, evidence, evaluate_active(policy, evidence)


def promote(
    store: Store,
    ledger: Ledger,
    home: Path,
    actor: str,
    digest: str,
    environment: str,
    now: datetime,
    *,
    override_reason: str | None = None,
    key: PrivateKey | None = None,
    service: str | None = None,
) -> Decision:
    policy, evidence, checks = decide(store, ledger, home, digest, environment, now)
    service = service_for(store, evidence.digest, service)
    passed = all(check.passed for check in checks)
    override = False
    payload: dict[str, Any] = {
        "environment": environment,
        "service": service,
        "allowed": passed,
        "override": False,
        "policy": {"digest": policy.digest, "format": policy.format, "source": policy.source},
        "checks": [
            {**check.to_json(), "message": check.message[:MAX_MESSAGE_CHARS]} for check in checks
        ],
    }
    if override_reason is not None and not passed:
        _check_override(policy, actor, override_reason, key)
        override = True
        payload.update(allowed=True, override=True, override_reason=override_reason.strip())
    event = Event.create(EVENT_PROMOTION, actor, evidence.digest, payload)
    if key is not None:
        event = signed_by_principal(event, key, ledger_keys(ledger))
    allowed = passed or override
    if not allowed:
        index = ledger.append(event).index
        return Decision(
            evidence.digest,
            environment,
            service,
            False,
            False,
            checks,
            policy,
            evidence,
            index,
            None,
        )
    desired = record_promotion(home, ledger, store, event, policy.digest)
    return Decision(
        evidence.digest,
        environment,
        service,
        True,
        override,
        checks,
        policy,
        evidence,
        desired.ledger_index,
        desired,
    )


def _check_override(policy: ActivePolicy, actor: str, reason: str, key: PrivateKey | None) -> None:
    if not reason.strip():
        raise PolicyInputError("a break-glass override needs a reason (--reason)")
    allowed = policy.break_glass
    if actor not in allowed:
        names = ", ".join(allowed) or "nobody"
        raise PolicyInputError(
            f"{actor!r} may not override the {policy.environment} gate (the policy allows: {names})"
        )
    if key is None:
        raise PolicyInputError(
            "a break-glass override must be signed: give the overriding principal's key (--key)"
        )
