"""Evidence (which events back each kind of control) and exceptions, from the window's events."""

from __future__ import annotations

from collections.abc import Callable

from .. import vocabulary as v
from ..source import Indexed
from .auth import Authentication
from .frameworks import EVIDENCE, Framework
from .metrics import remediation
from .model import Evidence, Finding, cite
from .patching import PatchMetrics
from .window import (
    ACCESS_EVENTS,
    RECOVERY_REASONS,
    VULNDB_IMPORTED,
    Window,
    drift_findings,
    failed_rules,
)

_TYPES: dict[str, tuple[str, ...]] = {
    "access_changes": ACCESS_EVENTS,
    "key_events": (v.KEY_CREATED, v.KEY_REVOKED),
    "builds": (v.BUILT, v.IMPORTED),
    "vulndb_updates": (VULNDB_IMPORTED,),
    "scans": (v.SCANNED,),
    "baseline_checks": (v.BASELINE,),
    "tests": (v.TESTED,),
    "signatures": (v.SIGNED,),
    "approvals": (v.APPROVED,),
    "gate_decisions": (v.PROMOTION,),
    "policy_changes": (v.POLICY_CHANGED,),
    "deployments": (v.DEPLOYMENT_STARTED,),
    "replacements": (v.INSTANCE_DESTROYED,),
    "admission_refusals": (v.ADMISSION_REFUSED, v.DEPLOYMENT_REFUSED),
    "drift_checks": (v.DRIFT_CHECKED,),
    "drift_findings": (v.DRIFT_DETECTED,),
    "drift_remediations": (v.DRIFT_REMEDIATED,),
    "vuln_exceptions": (v.EXCEPTION_GRANTED,),
    "logs_kept": (v.LOGS_KEPT,),
}
"""Evidence kinds that are simply the window's events of some types."""


def _recovery(item: Indexed) -> bool:
    if item.type == v.ROLLED_BACK:
        return True
    return item.type == v.DEPLOYMENT_STARTED and (
        item.text("strategy") == "heal" or item.text("reason") in RECOVERY_REASONS
    )


def collect_evidence(
    window: Window, auth: Authentication, signed: bool, patches: PatchMetrics
) -> dict[str, Evidence]:
    """Every evidence kind's events in the window (``signed``: a signed checkpoint covers it)."""
    events = window.events
    special: dict[str, Callable[[], list[Indexed]]] = {
        "events_recorded": lambda: events,
        "authenticated_events": lambda: [e for e in events if auth.method(e) is not None],
        "provenance": lambda: [
            e
            for e in window.of(v.ATTACHED)
            if e.text("artifact_type") == v.IN_TOTO_PAYLOAD_TYPE
            and window.source.artifact_kind(e.text("artifact") or "") == v.SLSA_PROVENANCE
        ],
        "sboms": lambda: [
            e for e in window.of(v.ATTACHED) if e.text("artifact_type") == v.SBOM_TYPE
        ],
        "recoveries": lambda: [e for e in events if _recovery(e)],
        "patches": lambda: [
            e.fixed for e in patches.exposures if e.fixed is not None and window.inside(e.fixed.us)
        ],
    }
    found: dict[str, Evidence] = {}
    for kind, description in EVIDENCE.items():
        if kind == "ledger_checkpoint":
            found[kind] = Evidence(kind, description, 1 if signed else 0, ())
            continue
        items = special[kind]() if kind in special else window.of(*_TYPES[kind])
        found[kind] = Evidence(kind, description, len(items), cite(items))
    return found


# --- exceptions ---------------------------------------------------------------------------------


def collect_exceptions(
    window: Window, auth: Authentication, framework: Framework, patches: PatchMetrics
) -> list[Finding]:
    bears: dict[str, list[str]] = {}
    for control in framework.controls:
        for kind in control.exceptions:
            bears.setdefault(kind, []).append(control.id)

    def finding(kind: str, item: Indexed, message: str, cited: list[Indexed]) -> Finding:
        return Finding(
            kind,
            item.index,
            item.event.time,
            item.event.subject,
            item.event.actor,
            item.text("environment"),
            message,
            cite(cited),
            tuple(bears.get(kind, ())),
        )

    found: list[Finding] = []
    decisions = window.source.of_type(v.PROMOTION)
    for item in window.of(v.PROMOTION):
        where = (item.event.subject, item.text("environment"))
        failed = ", ".join(failed_rules(item)) or "none recorded"
        if item.payload.get("override") is True:
            refusals = [d for d in decisions if d.index < item.index and _refused(d, where)]
            found.append(
                finding(
                    "override",
                    item,
                    f"{_short(item.event.subject)} promoted to {where[1]} under break-glass by "
                    f"{item.event.actor} ({item.text('override_reason') or 'no reason'}); "
                    f"failed checks: {failed}",
                    [item, *refusals],
                )
            )
        elif _refused(item, where):
            later = next(
                (
                    d
                    for d in decisions
                    if d.index > item.index
                    and d.payload.get("override") is True
                    and (d.event.subject, d.text("environment")) == where
                ),
                None,
            )
            if later is not None:
                found.append(
                    finding(
                        "refusal-overridden",
                        item,
                        f"{_short(item.event.subject)} refused for {where[1]} (failed checks: "
                        f"{failed}), then promoted under break-glass by {later.event.actor} "
                        f"at {later.event.time}",
                        [item, later],
                    )
                )
    for item in window.of(v.DRIFT_DETECTED):
        fix = remediation(window, item)
        shown = "; ".join(
            f"{f.get('kind')} {f.get('path') or ''}".strip()
            + f" ({f.get('severity')}, {f.get('control')})"
            for f in drift_findings(item)
        )
        state = (
            f"remediated by replacement at {fix.event.time}"
            if fix is not None and fix.us <= window.end_us
            else "still open at the end of the window"
        )
        found.append(
            finding(
                "drift",
                item,
                f"instance {item.event.subject}: {shown or 'no findings listed'}; {state}",
                [item] if fix is None else [item, fix],
            )
        )
    for exposure in patches.exposures:
        if not exposure.late:
            continue
        days = exposure.exposed_us / 86_400_000_000
        state = "fixed" if exposure.fixed is not None else "still exposed at the end of the window"
        found.append(
            Finding(
                "late-patch",
                exposure.known.index,
                exposure.known.event.time,
                exposure.id,
                exposure.known.event.actor,
                patches.environment,
                f"critical {exposure.id} ({', '.join(exposure.packages)}) exposed in "
                f"{patches.environment} for {days:.1f} days, over the {patches.threshold_days}-"
                f"day threshold; {state}",
                exposure.citations,
                tuple(bears.get("late-patch", ())),
            )
        )
    found.extend(_unauthenticated(window, auth, bears.get("unauthenticated", [])))
    return found


def _unauthenticated(window: Window, auth: Authentication, controls: list[str]) -> list[Finding]:
    """One exception per actor that acted without authenticating, with what it did."""
    by_actor: dict[str, list[Indexed]] = {}
    for item in window.events:
        if auth.method(item) is None:
            by_actor.setdefault(item.event.actor, []).append(item)
    found = []
    for actor, items in sorted(by_actor.items()):
        kinds: dict[str, int] = {}
        for item in items:
            kinds[item.type] = kinds.get(item.type, 0) + 1
        listed = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
        found.append(
            Finding(
                "unauthenticated",
                items[0].index,
                items[0].event.time,
                f"actor:{actor}",
                actor,
                None,
                f"{len(items)} event(s) by {actor} carry neither a signature by its key nor a "
                f"live token: {listed}",
                cite(items),
                tuple(controls),
            )
        )
    return found


def _refused(item: Indexed, where: tuple[str, str | None]) -> bool:
    return (
        item.payload.get("allowed") is not True
        and (item.event.subject, item.text("environment")) == where
    )


def _short(digest: str) -> str:
    return digest.removeprefix("sha256:")[:12]
