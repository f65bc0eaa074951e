"""``immutrail check``: judge an image by the baseline and the user's rules, attest, record.

The order is the guarantee: the user rules are read and compiled, the image is read and judged,
and only when all of that worked is the signed statement attached (``artifact.attached``) and
``baseline.checked`` appended. A bad rule file or an unknown image changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from immutrail.artifacts.statements import attest, ledger_keys
from immutrail.artifacts.store import Store
from immutrail.ledger.event import Event
from immutrail.ledger.ledger import Ledger

from . import rules
from .attestation import BASELINE_PREDICATE, passes
from .checks import CheckContext, run_checks
from .errors import BaselineInputError
from .image_input import ImageInput, load_image_input
from .rego import MAX_EVIDENCE, RuleFile, evaluate_rules, load_rules
from .secrets import scan_env, scan_layers

log = logging.getLogger(__name__)

EVENT_CHECKED = "baseline.checked"


class CheckObserver(Protocol):
    """Progress of a check; the CLI draws it."""

    def phase(self, description: str, total: int | None) -> None: ...

    def advance(self, done: int) -> None: ...


class _Silent:
    def phase(self, description: str, total: int | None) -> None:
        log.info("%s", description)

    def advance(self, done: int) -> None:
        """Nothing to draw."""


@dataclass(frozen=True)
class CheckResult:
    digest: str
    predicate: dict[str, Any]
    attestation: str
    """The manifest digest of the attached, signed statement."""
    ledger_index: int

    @property
    def passed(self) -> bool:
        return bool(self.predicate["passed"])

    @property
    def results(self) -> list[dict[str, Any]]:
        return list(self.predicate["results"])


def _result(
    rule_id: str,
    title: str,
    severity: rules.Severity,
    controls: Sequence[str],
    evidence: Sequence[dict[str, Any]],
    source: str,
    omitted: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rule_id,
        "title": title,
        "severity": str(severity),
        "status": "fail" if evidence else "pass",
        "controls": list(controls),
        "evidence": list(evidence[:MAX_EVIDENCE]),
        "source": source,
    }
    omitted += max(0, len(evidence) - MAX_EVIDENCE)
    if omitted:
        out["evidence_omitted"] = omitted
    out.update(extra)
    return out


MAX_SETUID_PATH = 4096


def setuid_allowlist(paths: Sequence[str]) -> frozenset[str]:
    """The root-relative form of each ``--allow-setuid`` path, which names one file in the image.

    BaselineInputError unless each is absolute and normal (``/usr/bin/passwd``): no ``.``,
    ``..`` or empty components, not ``/`` itself. A relative or empty path would be recorded in
    the attestation as an exemption that names nothing the reader can check.
    """
    allowed = []
    for path in paths:
        if (
            not path.startswith("/")
            or len(path) > MAX_SETUID_PATH
            or "\x00" in path
            or any(part in ("", ".", "..") for part in path[1:].split("/"))
        ):
            raise BaselineInputError(
                f"--allow-setuid {path!r} is not an absolute path to a file in the image "
                "(for example /usr/bin/passwd: no '.', '..' or empty parts)"
            )
        allowed.append(path[1:])
    return frozenset(allowed)


def evaluate(
    image: ImageInput,
    user_rules: Sequence[RuleFile] = (),
    *,
    fail_on: rules.Severity = rules.DEFAULT_FAIL_ON,
    allow_setuid: Sequence[str] = (),
    observer: CheckObserver | None = None,
) -> dict[str, Any]:
    """The baseline predicate for ``image``: built-in rules, then the user's."""
    observer = observer or _Silent()
    observer.phase("scanning layers for secrets", len(image.layer_paths))
    entries = {entry.path: entry.layer for entry in image.rootfs.entries()}
    secrets = scan_layers(
        image.layer_paths,
        lambda path, layer: entries.get(path) == layer,
        lambda done, _total: observer.advance(done),
    )
    secrets.extend(scan_env(image.settings.env))
    allowed = setuid_allowlist(allow_setuid)
    context = CheckContext(image, secrets, allowed)
    observer.phase("checking the baseline", None)
    results = [
        _result(rule.id, rule.title, rule.severity, rule.controls, evidence, "builtin")
        for rule, evidence in run_checks(context)
    ]
    if user_rules:
        observer.phase("evaluating user rules", None)
        for user in evaluate_rules(user_rules, image.to_document()):
            results.append(
                _result(
                    user.id,
                    user.title,
                    user.severity,
                    user.controls,
                    list(user.evidence),
                    "user",
                    user.omitted,
                    path=user.path,
                )
            )
    return {
        "passed": passes(results, fail_on),
        "fail_on": str(fail_on),
        "rule_pack": rules.rule_pack(),
        "user_rules": [{"path": f.path, "digest": f.digest} for f in user_rules],
        "allow_setuid": sorted("/" + p for p in allowed),
        "results": results,
    }


def check_image(
    store: Store,
    ledger: Ledger,
    home: Path,
    reference: str,
    actor: str,
    *,
    rules_dir: Path | None = None,
    fail_on: rules.Severity = rules.DEFAULT_FAIL_ON,
    allow_setuid: Sequence[str] = (),
    observer: CheckObserver | None = None,
    on_input: Callable[[ImageInput], None] | None = None,
) -> CheckResult:
    """Judge ``reference``, attach the signed statement, record ``baseline.checked``."""
    setuid_allowlist(allow_setuid)  # bad input is refused before anything is read
    observer = observer or _Silent()
    user_rules = load_rules(rules_dir) if rules_dir is not None else []
    observer.phase("reading the image", None)
    image = load_image_input(store, reference, ledger_keys(ledger))
    if on_input is not None:
        on_input(image)
    predicate = evaluate(
        image, user_rules, fail_on=fail_on, allow_setuid=allow_setuid, observer=observer
    )
    descriptor = attest(store, ledger, home, actor, image.digest, BASELINE_PREDICATE, predicate)
    failed = [r for r in predicate["results"] if r["status"] == "fail"]
    payload = {
        "passed": predicate["passed"],
        "fail_on": predicate["fail_on"],
        "attestation": descriptor.digest,
        "rule_pack": predicate["rule_pack"],
        "user_rules": len(user_rules),
        "counts": {
            "rules": len(predicate["results"]),
            "passed": len(predicate["results"]) - len(failed),
            "failed": len(failed),
            "failed_by_severity": {
                str(s): sum(1 for r in failed if r["severity"] == s) for s in rules.Severity
            },
        },
        "failed": [r["id"] for r in failed],
    }
    entry = ledger.append(Event.create(EVENT_CHECKED, actor, image.digest, payload))
    return CheckResult(image.digest, predicate, descriptor.digest, entry.index)
