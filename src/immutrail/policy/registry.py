"""Which policy governs an environment: the last ``policy.changed`` event, or the default.

``immutrail policy set ENV FILE`` validates the file, keeps a copy under its SHA-256 in
``$IMMUTRAIL_HOME/policies/`` (write-once) and records ``policy.changed`` signed by the actor.
The gate always evaluates the copy whose digest the ledger names; a copy that no longer matches
that digest is an error, never a silent fallback to something else.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from immutrail import names
from immutrail.artifacts.statements import LedgerKey
from immutrail.crypto.keys import PrivateKey
from immutrail.files import read_capped
from immutrail.ledger.event import Event, parse_entry
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter

from .authenticated import authenticated_actor, signed_by_principal
from .errors import PolicyError, PolicyInputError
from .evaluate import Check, check_rego, evaluate, evaluate_rego, rego_break_glass
from .evidence import Evidence
from .model import Policy, default_policy, parse_policy

EVENT_POLICY_CHANGED = "policy.changed"
POLICY_DIR = "policies"
MAX_POLICY_BYTES = 256 * 1024


@dataclass(frozen=True)
class ActivePolicy:
    environment: str
    digest: str
    format: str
    """``yaml``, ``rego`` or ``built-in``."""
    source: str
    ledger_index: int | None
    policy: Policy | None = None
    rego: str | None = None

    @property
    def break_glass(self) -> tuple[str, ...]:
        if self.policy is not None:
            return self.policy.break_glass
        assert self.rego is not None
        return rego_break_glass(self.rego, self.source)


def check_environment(environment: str) -> str:
    return names.check_environment(environment, PolicyInputError)


def load_policy_file(path: Path, environment: str) -> tuple[bytes, str, Policy | None]:
    """Read and validate a policy file; (bytes, format, parsed YAML policy or None for Rego)."""
    try:
        data = read_capped(path, MAX_POLICY_BYTES)
    except OSError as exc:
        raise PolicyInputError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyInputError(f"{path} is not UTF-8") from exc
    if path.suffix == ".rego":
        check_rego(text, str(path), environment)
        return data, "rego", None
    if path.suffix not in (".yaml", ".yml"):
        raise PolicyInputError(f"{path}: a policy is a .yaml/.yml file or a .rego module")
    return data, "yaml", parse_policy(text, str(path), environment)


def set_policy(
    home: Path,
    ledger: Ledger,
    keys: Mapping[str, LedgerKey],
    key: PrivateKey,
    actor: str,
    environment: str,
    path: Path,
) -> ActivePolicy:
    check_environment(environment)
    data, kind, policy = load_policy_file(path, environment)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    event = Event.create(
        EVENT_POLICY_CHANGED,
        actor,
        f"env:{environment}",
        {"environment": environment, "digest": digest, "format": kind, "file": path.name},
    )
    event = signed_by_principal(event, key, keys)  # refuses before anything is written
    _keep_copy(home, digest, data)
    index = ledger.append(event).index
    return ActivePolicy(
        environment,
        digest,
        kind,
        str(path),
        index,
        policy,
        data.decode() if kind == "rego" else None,
    )


def active_policy(
    home: Path, ledger: Ledger, keys: Mapping[str, LedgerKey], environment: str
) -> ActivePolicy:
    check_environment(environment)
    rows = list(
        ledger.entries(EntryFilter(type=EVENT_POLICY_CHANGED, subject=f"env:{environment}"))
    )
    if not rows:
        policy = default_policy(environment)
        return ActivePolicy(environment, policy.digest(), "built-in", "built-in", None, policy)
    row = rows[-1]
    event = parse_entry(row.data)
    problem = authenticated_actor(event, keys)
    if problem:
        raise PolicyError(
            f"the policy change at ledger index {row.index} does not count: {problem}"
        )
    digest = str(event.payload.get("digest"))
    copy = _copy_path(home, digest)
    try:
        data = copy.read_bytes()
    except OSError as exc:
        raise PolicyError(
            f"the policy {digest} recorded at index {row.index} is missing: {copy}"
        ) from exc
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise PolicyError(f"the kept policy {copy} no longer matches its digest {digest}")
    kind = str(event.payload.get("format"))
    source = f"{event.payload.get('file')} ({digest[:19]}…)"
    text = data.decode("utf-8")
    if kind == "rego":
        return ActivePolicy(environment, digest, kind, source, row.index, None, text)
    return ActivePolicy(
        environment, digest, kind, source, row.index, parse_policy(text, source, environment)
    )


def evaluate_active(active: ActivePolicy, evidence: Evidence) -> list[Check]:
    if active.policy is not None:
        return evaluate(active.policy, evidence)
    assert active.rego is not None
    return evaluate_rego(active.rego, active.source, evidence)


def _copy_path(home: Path, digest: str) -> Path:
    return home / POLICY_DIR / digest.replace(":", "-")


def _keep_copy(home: Path, digest: str, data: bytes) -> None:
    target = _copy_path(home, digest)
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(".tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, target)
