"""The desired state of an environment: which image digest the gate last allowed to run there.

The ledger is the truth: the ``promotion.decided`` event is appended first, then
``$IMMUTRAIL_HOME/desired/<env>.json`` is replaced atomically to say the same, naming the event's
index. A crash between the two leaves a file one promotion behind, which :func:`desired_state`
detects by comparing with the ledger and repairs from it. (The deployment part turns this file
into a commit in the desired-state git repository.)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutrail.artifacts.errors import ArtifactError
from immutrail.artifacts.store import Store
from immutrail.ledger.event import Event, parse_entry
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter

from .errors import PolicyError

DESIRED_DIR = "desired"
EVENT_PROMOTION = "promotion.decided"


@dataclass(frozen=True)
class DesiredState:
    environment: str
    digest: str
    image: str | None
    promoted_by: str
    promoted_at: str
    ledger_index: int
    policy_digest: str
    override: bool
    previous: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "digest": self.digest,
            "image": self.image,
            "promoted_by": self.promoted_by,
            "promoted_at": self.promoted_at,
            "ledger_index": self.ledger_index,
            "policy_digest": self.policy_digest,
            "override": self.override,
            "previous": self.previous,
        }


def record_promotion(
    home: Path, ledger: Ledger, store: Store, event: Event, policy_digest: str
) -> DesiredState:
    environment = str(event.payload["environment"])
    before = _from_ledger(ledger, store, environment)
    index = ledger.append(event).index
    state = _state(store, event, index, _previous(before, event.subject))
    _write(home, state)
    return state


def desired_state(
    home: Path, ledger: Ledger, store: Store, environment: str
) -> DesiredState | None:
    """The environment's desired state, repaired from the ledger if the file lags behind it."""
    truth = _from_ledger(ledger, store, environment)
    if truth is None:
        return None
    path = home / DESIRED_DIR / f"{environment}.json"
    try:
        on_disk = json.loads(path.read_text())
    except (OSError, ValueError):
        on_disk = None
    if on_disk != truth.to_json():
        _write(home, truth)
    return truth


def _from_ledger(ledger: Ledger, store: Store, environment: str) -> DesiredState | None:
    """Replay the allowed promotions of ``environment`` in ledger order."""
    state: DesiredState | None = None
    for row in ledger.entries(EntryFilter(type=EVENT_PROMOTION)):
        event = parse_entry(row.data)
        payload = event.payload
        if payload.get("environment") == environment and payload.get("allowed") is True:
            state = _state(store, event, row.index, _previous(state, event.subject))
    return state


def _previous(before: DesiredState | None, digest: str) -> str | None:
    """The digest that ran before this one (a re-promotion keeps the earlier answer)."""
    if before is None:
        return None
    return before.digest if before.digest != digest else before.previous


def _state(store: Store, event: Event, index: int, previous: str | None) -> DesiredState:
    policy = event.payload.get("policy")
    try:
        tags = store.resolve(event.subject).tags
    except ArtifactError:
        tags = ()
    return DesiredState(
        str(event.payload["environment"]),
        event.subject,
        tags[0] if tags else None,
        event.actor,
        event.time,
        index,
        str(policy.get("digest", "")) if isinstance(policy, dict) else "",
        bool(event.payload.get("override")),
        previous,
    )


def _write(home: Path, state: DesiredState) -> None:
    folder = home / DESIRED_DIR
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{state.environment}.json"
    temporary = target.with_suffix(".tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(state.to_json(), handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except OSError as exc:
        raise PolicyError(f"cannot write the desired state {target}: {exc.strerror}") from exc
