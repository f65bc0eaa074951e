"""The desired state of an environment: which image digest the gate last allowed to run there.

The ledger is the truth: the ``promotion.decided`` event is appended first, then the
desired-state git repository (``$IMMUTRAIL_HOME/desired-state``, GitOps style) gets a commit that
writes ``<env>.json``, authored by the promoting principal, whose message names the digest, the
decision, the policy and the ledger index. A crash between the two leaves the repository one
promotion behind, which :func:`desired_state` detects by comparing with the ledger and repairs
with a commit of its own. So the git history and the ledger can always be cross-checked.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutrail.artifacts.errors import ArtifactError, SourceError
from immutrail.artifacts.git import run_git
from immutrail.artifacts.store import Store
from immutrail.ledger.event import Event, parse_entry
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter

from .errors import PolicyError

DESIRED_REPO = "desired-state"
EVENT_PROMOTION = "promotion.decided"
COMMITTER = ("immutrail", "immutrail@localhost")


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
    _commit(home, state, repaired=False)
    return state


def desired_state(
    home: Path, ledger: Ledger, store: Store, environment: str
) -> DesiredState | None:
    """The environment's desired state, repaired from the ledger if the repository lags."""
    truth = _from_ledger(ledger, store, environment)
    if truth is None:
        return None
    try:
        on_disk = json.loads((home / DESIRED_REPO / f"{environment}.json").read_text())
    except (OSError, ValueError):
        on_disk = None
    if on_disk != truth.to_json():
        _commit(home, truth, repaired=True)
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


def _commit(home: Path, state: DesiredState, *, repaired: bool) -> str:
    """Write ``<env>.json`` into the desired-state repository and commit it; the commit id."""
    root = home / DESIRED_REPO
    try:
        if not (root / ".git").is_dir():
            root.mkdir(parents=True, exist_ok=True)
            run_git(root, "init", "-q", "-b", "main")
        target = root / f"{state.environment}.json"
        temporary = target.with_suffix(".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump(state.to_json(), handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        run_git(root, "add", "--", target.name)
        if run_git(root, "status", "--porcelain", "--", target.name).strip():
            run_git(
                root,
                "-c",
                f"user.name={COMMITTER[0]}",
                "-c",
                f"user.email={COMMITTER[1]}",
                "commit",
                "-q",
                "--author",
                _author(state.promoted_by),
                "-m",
                _message(state, repaired),
            )
        return run_git(root, "rev-parse", "HEAD").decode().strip()
    except (OSError, SourceError) as exc:
        raise PolicyError(
            f"cannot record the desired state of {state.environment} in {root}: {exc}"
        ) from exc


def _author(principal: str) -> str:
    email = principal if "@" in principal else f"{principal.replace(':', '.')}@immutrail.local"
    return f"{principal} <{email}>"


def _message(state: DesiredState, repaired: bool) -> str:
    decision = "allowed under BREAK-GLASS override" if state.override else "allowed by policy"
    lines = [
        f"promote {state.image or state.digest} to {state.environment}",
        "",
        f"digest: {state.digest}",
        f"decision: {decision}",
        f"policy: {state.policy_digest}",
        f"ledger-index: {state.ledger_index}",
        f"promoted-by: {state.promoted_by}",
    ]
    if state.previous:
        lines.append(f"previous: {state.previous}")
    if repaired:
        lines.append("repaired-from-ledger: true")
    return "\n".join(lines) + "\n"
