"""The desired state of a service in an environment: which image digest may run there.

The ledger is the truth. A digest becomes desired by an allowed ``promotion.decided`` event (the
gate) and stops being desired by a later promotion or by ``desired.rolled-back`` (a rollback to
the digest that ran before it, never to an image the gate did not allow there). After the event
is appended, the desired-state git repository (``$IMMUTRAIL_HOME/desired-state``, GitOps style)
gets a commit that rewrites ``<env>/<service>.json``, authored by the principal who made the
change, whose message names the digest, the decision, the policy and the ledger index. A crash
between the two leaves the repository one change behind, which :func:`desired_state` detects by
comparing with the ledger and repairs with a commit of its own, so the git history and the ledger
can always be cross-checked. The service's declaration (replicas, strategy, configuration) lives
in the same file: :mod:`immutrail.deploy.declaration` writes it through :func:`commit_service`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immutrail.artifacts.errors import ArtifactError, SourceError
from immutrail.artifacts.git import run_git
from immutrail.artifacts.store import Store
from immutrail.ledger.event import Event, parse_entry
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter

from .errors import PolicyError, PolicyInputError

DESIRED_REPO = "desired-state"
EVENT_PROMOTION = "promotion.decided"
EVENT_ROLLED_BACK = "desired.rolled-back"
COMMITTER = ("immutrail", "immutrail@localhost")
SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")


@dataclass(frozen=True)
class DesiredState:
    environment: str
    service: str
    digest: str
    image: str | None
    promoted_by: str
    promoted_at: str
    ledger_index: int
    """The ledger index of the event that made ``digest`` desired (a promotion or a rollback)."""
    policy_digest: str
    override: bool
    previous: str | None
    """The digest a rollback would return to (the one desired before this one), if any."""
    rolled_back_by: str | None = None
    history: tuple[str, ...] = field(default=(), compare=False)
    """Every digest allowed here so far, oldest first (each once, at its latest promotion)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "service": self.service,
            "digest": self.digest,
            "image": self.image,
            "promoted_by": self.promoted_by,
            "promoted_at": self.promoted_at,
            "ledger_index": self.ledger_index,
            "policy_digest": self.policy_digest,
            "override": self.override,
            "previous": self.previous,
            "rolled_back_by": self.rolled_back_by,
        }


def service_for(store: Store, digest: str, service: str | None) -> str:
    """The service a promotion is for: ``service`` if given, else the name in the image's tag."""
    if service is None:
        try:
            tags = store.resolve(digest).tags
        except ArtifactError:
            tags = ()
        names = {tag.rsplit("/", 1)[-1].split(":", 1)[0] for tag in tags}
        if len(names) != 1:
            raise PolicyInputError(
                f"name the service {digest} is promoted for (--service): its tags "
                f"({', '.join(tags) or 'none'}) do not name exactly one"
            )
        service = names.pop()
    check_service(service)
    return service


def check_service(service: str) -> None:
    if not SERVICE_NAME.fullmatch(service):
        raise PolicyInputError(
            f"{service!r} is not a service name (lower-case letters, digits and '-', "
            "starting with a letter, at most 63 characters)"
        )


def record_promotion(
    home: Path, ledger: Ledger, store: Store, event: Event, policy_digest: str
) -> DesiredState:
    """Append an allowed promotion and commit the new desired state."""
    environment, service = str(event.payload["environment"]), str(event.payload["service"])
    index = ledger.append(event).index
    state = replay(ledger, store, environment, service)
    assert state is not None and state.ledger_index == index
    commit_service(home, environment, service, {"image": state.to_json()}, _message(state))
    return state


def record_rollback(
    home: Path,
    ledger: Ledger,
    store: Store,
    environment: str,
    service: str,
    actor: str,
    *,
    reason: str,
    automatic: bool,
    deployment: str | None = None,
) -> DesiredState:
    """Make the previously desired digest desired again (``desired.rolled-back``)."""
    current = replay(ledger, store, environment, service)
    if current is None:
        raise PolicyInputError(f"nothing has been promoted to {environment}/{service}")
    if current.previous is None:
        raise PolicyInputError(
            f"{environment}/{service} has no earlier image to roll back to "
            f"(only {current.digest} was ever promoted there)"
        )
    payload: dict[str, Any] = {
        "environment": environment,
        "service": service,
        "from": current.digest,
        "to": current.previous,
        "reason": reason[:2000],
        "automatic": automatic,
    }
    if deployment is not None:
        payload["deployment"] = deployment
    ledger.append(Event.create(EVENT_ROLLED_BACK, actor, current.previous, payload))
    state = replay(ledger, store, environment, service)
    assert state is not None
    commit_service(home, environment, service, {"image": state.to_json()}, _message(state))
    return state


def desired_state(
    home: Path, ledger: Ledger, store: Store, environment: str, service: str
) -> DesiredState | None:
    """The service's desired state, the repository repaired from the ledger if it lags."""
    truth = replay(ledger, store, environment, service)
    if truth is None:
        return None
    on_disk = read_service_file(home, environment, service)
    if on_disk.get("image") != truth.to_json():
        commit_service(
            home, environment, service, {"image": truth.to_json()}, _message(truth, repaired=True)
        )
    return truth


def desired_services(ledger: Ledger, environment: str) -> list[str]:
    """Every service something was ever promoted to in ``environment``, sorted."""
    found = set()
    for row in ledger.entries(EntryFilter(type=EVENT_PROMOTION)):
        payload = parse_entry(row.data).payload
        if payload.get("environment") == environment and payload.get("allowed") is True:
            found.add(str(payload.get("service")))
    return sorted(found)


def replay(ledger: Ledger, store: Store, environment: str, service: str) -> DesiredState | None:
    """Replay the allowed promotions and rollbacks of ``environment/service`` in ledger order."""
    state: DesiredState | None = None
    history: list[str] = []
    promotions: dict[str, tuple[Event, int]] = {}
    changes = [
        *ledger.entries(EntryFilter(type=EVENT_PROMOTION)),
        *ledger.entries(EntryFilter(type=EVENT_ROLLED_BACK)),
    ]
    for row in sorted(changes, key=lambda r: r.index):
        event = parse_entry(row.data)
        payload = event.payload
        if payload.get("environment") != environment or payload.get("service") != service:
            continue
        if event.type == EVENT_PROMOTION:
            if payload.get("allowed") is not True:
                continue
            promotions[event.subject] = (event, row.index)
            if event.subject in history:
                history.remove(event.subject)
            history.append(event.subject)
            state = _state(store, event, row.index, history, None)
        elif state is not None and event.subject == state.previous and event.subject in promotions:
            # A rollback names the digest it returns to; it is honoured only if that digest was
            # allowed here before and is the one before the current one (what record_rollback
            # writes). The digest rolled back from leaves the history.
            history.remove(state.digest)
            promoted, _ = promotions[event.subject]
            state = _state(store, promoted, row.index, history, event.actor)
    return state


def _state(
    store: Store, event: Event, index: int, history: list[str], rolled_back_by: str | None
) -> DesiredState:
    policy = event.payload.get("policy")
    try:
        tags = store.resolve(event.subject).tags
    except ArtifactError:
        tags = ()
    position = history.index(event.subject)
    return DesiredState(
        str(event.payload["environment"]),
        str(event.payload["service"]),
        event.subject,
        tags[0] if tags else None,
        event.actor,
        event.time,
        index,
        str(policy.get("digest", "")) if isinstance(policy, dict) else "",
        bool(event.payload.get("override")),
        history[position - 1] if position > 0 else None,
        rolled_back_by,
        tuple(history),
    )


# --- the git repository ----------------------------------------------------------------------


def service_file(home: Path, environment: str, service: str) -> Path:
    return home / DESIRED_REPO / environment / f"{service}.json"


def read_service_file(home: Path, environment: str, service: str) -> dict[str, Any]:
    try:
        document = json.loads(service_file(home, environment, service).read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}


def commit_service(
    home: Path,
    environment: str,
    service: str,
    changes: dict[str, Any],
    message: tuple[str, str],
    extra_files: dict[str, bytes] | None = None,
) -> str:
    """Update ``<env>/<service>.json`` with ``changes`` and commit it; the commit id.

    ``message`` is (author principal, commit message). ``extra_files`` (repository path ->
    bytes) are written in the same commit (a service's configuration files). Pushes to the
    repository's ``origin`` remote when one is configured.
    """
    root = home / DESIRED_REPO
    author, text = message
    try:
        if not (root / ".git").is_dir():
            root.mkdir(parents=True, exist_ok=True)
            run_git(root, "init", "-q", "-b", "main")
        document = {
            "environment": environment,
            "service": service,
            "image": None,
            "declaration": None,
            **read_service_file(home, environment, service),
            **changes,
        }
        target = service_file(home, environment, service)
        paths = [_write(target, (json.dumps(document, indent=2, sort_keys=True) + "\n").encode())]
        for name, data in (extra_files or {}).items():
            paths.append(_write(root / name, data))
        relative = [str(path.relative_to(root)) for path in paths]
        run_git(root, "add", "--", *relative)
        if run_git(root, "status", "--porcelain", "--", *relative).strip():
            run_git(
                root,
                "-c",
                f"user.name={COMMITTER[0]}",
                "-c",
                f"user.email={COMMITTER[1]}",
                "commit",
                "-q",
                "--author",
                _author(author),
                "-m",
                text,
            )
            if run_git(root, "remote").split():
                run_git(root, "push", "-q", "origin", "HEAD:main")
        return run_git(root, "rev-parse", "HEAD").decode().strip()
    except (OSError, SourceError) as exc:
        raise PolicyError(
            f"cannot record the desired state of {environment}/{service} in {root}: {exc}"
        ) from exc


def _write(target: Path, data: bytes) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
    return target


def _author(principal: str) -> str:
    email = principal if "@" in principal else f"{principal.replace(':', '.')}@immutrail.local"
    return f"{principal} <{email}>"


def _message(state: DesiredState, *, repaired: bool = False) -> tuple[str, str]:
    where = f"{state.environment}/{state.service}"
    if state.rolled_back_by is not None:
        author = state.rolled_back_by
        lines = [f"roll back {where} to {state.image or state.digest}", ""]
        decision = "rollback to an earlier allowed image"
    else:
        author = state.promoted_by
        lines = [f"promote {state.image or state.digest} to {where}", ""]
        decision = "allowed under BREAK-GLASS override" if state.override else "allowed by policy"
    lines += [
        f"digest: {state.digest}",
        f"decision: {decision}",
        f"policy: {state.policy_digest}",
        f"ledger-index: {state.ledger_index}",
        f"promoted-by: {state.promoted_by}",
    ]
    if state.rolled_back_by is not None:
        lines.append(f"rolled-back-by: {state.rolled_back_by}")
    if state.previous:
        lines.append(f"previous: {state.previous}")
    if repaired:
        lines.append("repaired-from-ledger: true")
    return author, "\n".join(lines) + "\n"
