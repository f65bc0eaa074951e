"""``build_report``: one framework's controls judged from one window of the ledger."""

from __future__ import annotations

from immutrail.ledger.event import time_us
from immutrail.ledger.proofs import b64

from ..errors import AuditInputError
from ..queries import check_environment, normalize_moment
from ..reading import LedgerSource
from . import metrics
from .auth import Authentication
from .evidence import collect_evidence, collect_exceptions
from .frameworks import BY_ID, FRAMEWORKS, Control
from .model import Basis, ControlResult, Evidence, Finding, Report
from .patching import time_to_patch
from .window import Window

DEFAULT_PATCH_DAYS = 30
"""Critical patches within one month: PCI DSS 4.0 requirement 6.3.3's bound for critical ones."""
MAX_PATCH_DAYS = 3650


def _basis(source: LedgerSource) -> Basis:
    ledger = source.ledger
    stored = next((c for c in ledger.checkpoints() if c.size == source.size), None)
    if stored is not None:
        return Basis(ledger.origin, source.size, b64(stored.root), True, stored.note)
    return Basis(ledger.origin, source.size, b64(ledger.root(source.size)), False, None)


def _judge(
    control: Control, evidence: dict[str, Evidence], exceptions: list[Finding]
) -> ControlResult:
    required = tuple(evidence[k] for k in control.required)
    missing = tuple(e.kind for e in required if e.count == 0)
    counts: dict[str, int] = {}
    for item in exceptions:
        if item.kind in control.exceptions:
            counts[item.kind] = counts.get(item.kind, 0) + 1
    if not required or len(missing) == len(required):
        status = "no evidence"
    elif missing or counts:
        status = "partial"
    else:
        status = "satisfied"
    return ControlResult(
        control.id,
        control.title,
        control.text,
        status,
        required,
        tuple(evidence[k] for k in control.supporting),
        missing,
        tuple(sorted(counts.items())),
        control.note,
    )


def build_report(
    source: LedgerSource,
    framework: str,
    start: str,
    end: str,
    environment: str | None = None,
    *,
    patch_days: int = DEFAULT_PATCH_DAYS,
) -> Report:
    """The compliance report for ``framework`` over ``[start, end]`` (RFC 3339, both included),
    limited to ``environment`` when given, as of the source's tree size.

    AuditInputError (exit 2) for an unknown framework, a malformed time or environment, a window
    that ends before it starts, or a patch threshold out of range. Reads only; the same ledger
    state and arguments give the same report.
    """
    chosen = BY_ID.get(framework)
    if chosen is None:
        raise AuditInputError(
            f"unknown framework {framework!r}; choose one of {', '.join(FRAMEWORKS)}"
        )
    since = normalize_moment(start, "--from")
    until = normalize_moment(end, "--to")
    if time_us(since) > time_us(until):
        raise AuditInputError(f"--from {since} is after --to {until}")
    if environment is not None:
        check_environment(environment, "--env")
    if isinstance(patch_days, bool) or not 1 <= patch_days <= MAX_PATCH_DAYS:
        raise AuditInputError(f"the patch threshold must be 1 to {MAX_PATCH_DAYS} days")
    basis = _basis(source)
    window = Window(source, time_us(since), time_us(until), environment, source.store)
    auth = Authentication(source)
    patch_env = environment or "prod"
    patches = time_to_patch(window, auth, patch_env, patch_days)
    evidence = collect_evidence(window, auth, basis.signed, patches)
    exceptions = collect_exceptions(window, auth, chosen, patches)
    exceptions.sort(key=lambda f: (f.index, f.kind))
    return Report(
        framework=chosen.id,
        framework_title=chosen.title,
        start=since,
        end=until,
        environment=environment,
        patch_environment=patch_env,
        patch_days=patch_days,
        basis=basis,
        controls=tuple(_judge(c, evidence, exceptions) for c in chosen.controls),
        exceptions=tuple(exceptions),
        metrics={
            "time_to_patch": patches.to_json(),
            "deployments": metrics.deployments(window),
            "gate": metrics.gate(window),
            "instance_age": metrics.instance_ages(window),
            "drift": metrics.drift(window),
            "events": {
                "in_window": len(window.events),
                "authenticated": evidence["authenticated_events"].count,
            },
        },
    )
