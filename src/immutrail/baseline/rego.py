"""User rules in Rego, evaluated with regopy (rego-cpp, Rego v1) in a child process with limits.

The contract (docs/baseline.md has examples): every ``*.rego`` file under the rules folder
(recursively, ``*_test.rego`` excluded) is loaded into one interpreter, so rules may import
helper packages from each other. A file whose package is ``immutrail.rules.<name>`` is a rule:

* ``metadata := {"id": ..., "title": ..., "severity": "low|medium|high|critical"}``, optionally
  with ``rationale``, ``remediation`` and ``controls`` (a list of strings);
* ``deny contains msg if { ... }`` over ``input`` (the image description): the rule fails when
  ``deny`` is not empty. ``msg`` is a string, or an object with a string ``msg`` and any other
  evidence fields (``path``, ``layer``, …).

Every problem is a :class:`RuleFileError` naming the file: a syntax error (the interpreter's
message, with line and column), a missing or malformed ``metadata``, a ``deny`` that is not a
set (Rego v0's ``deny[msg] { … }`` means something else in v1 and would never deny), an id that
is used twice, and a built-in function that fails at evaluation (strict built-in errors are on,
so a rule that divides by zero fails loudly instead of silently never denying).

The rules run in a child process with limits (:mod:`immutrail.rego`: size, nesting depth,
memory, time), which also handles regopy's traps (a ``false`` rule read as undefined, errors
printed on standard output, error output that is not JSON). A rule file over a limit, or that
crashes the interpreter, is a :class:`RuleFileError` like any other broken rule.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from immutrail.files import FileTooLargeError, read_capped
from immutrail.rego import (
    Module,
    RegoLimitError,
    RegoSession,
    RegoSourceError,
    RegoUnavailableError,
)

from .errors import BaselineError, BaselineInputError, RuleFileError
from .rules import RULES_BY_ID, Severity

RULES_PACKAGE = "immutrail.rules"
MAX_RULE_FILE_BYTES = 1024 * 1024
MAX_RULE_FILES = 1000
MAX_EVIDENCE = 100

_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_][\w.]*)\s*$", re.MULTILINE)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_T = TypeVar("_T")


@dataclass(frozen=True)
class RuleFile:
    path: str
    """Relative to the rules folder, ``/``-separated: what results and errors name."""
    digest: str
    package: str
    source: str

    @property
    def is_rule(self) -> bool:
        return self.package.startswith(RULES_PACKAGE + ".")


@dataclass(frozen=True)
class UserRuleResult:
    path: str
    id: str
    title: str
    severity: Severity
    rationale: str
    remediation: str
    controls: tuple[str, ...]
    evidence: tuple[dict[str, Any], ...]
    omitted: int


def load_rules(folder: Path) -> list[RuleFile]:
    """Read every rule file of ``folder`` and check that all of them compile together."""
    if not folder.is_dir():
        raise BaselineInputError(f"--rules {folder}: not a folder")
    paths = sorted(
        p for p in folder.rglob("*.rego") if p.is_file() and not p.name.endswith("_test.rego")
    )
    if len(paths) > MAX_RULE_FILES:
        raise BaselineInputError(f"--rules {folder}: more than {MAX_RULE_FILES} rule files")
    files: list[RuleFile] = []
    owners: dict[str, str] = {}
    for path in paths:
        name = path.relative_to(folder).as_posix()
        try:
            data = read_capped(path, MAX_RULE_FILE_BYTES)
        except FileTooLargeError as exc:
            raise RuleFileError(name, f"larger than {MAX_RULE_FILE_BYTES} bytes") from exc
        except OSError as exc:
            raise RuleFileError(name, f"cannot be read: {exc.strerror or exc}") from exc
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RuleFileError(name, f"not UTF-8 text: {exc}") from exc
        match = _PACKAGE.search(source)
        if match is None:
            raise RuleFileError(name, "no `package` declaration")
        package = match.group(1)
        if package.startswith(RULES_PACKAGE + ".") and package in owners:
            raise RuleFileError(
                name,
                f"package {package} is already the rule of {owners[package]}: one rule, one file",
            )
        owners.setdefault(package, name)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        files.append(RuleFile(name, digest, package, source))
    if not any(f.is_rule for f in files):
        raise BaselineInputError(
            f"--rules {folder}: no rule found (a rule is a .rego file whose package is "
            f"{RULES_PACKAGE}.<name>)"
        )
    with _session(files) as session:  # compile now: a syntax error is found before the image
        _run(files, session.compile)
    return files


def _session(files: Sequence[RuleFile]) -> RegoSession:
    # Strict built-in errors: a rule that divides by zero fails loudly instead of never denying.
    modules = [Module(f.path, f.source) for f in files]
    return _run(files, lambda: RegoSession(modules, strict=True))


def _run(files: Sequence[RuleFile], step: Callable[[], _T]) -> _T:
    """``step()``, its :mod:`immutrail.rego` errors told as errors of the rule file at fault."""
    try:
        return step()
    except RegoSourceError as exc:
        raise RuleFileError(exc.module, exc.problem) from exc
    except RegoLimitError as exc:
        packages = {f"data.{f.package}": f.path for f in files}
        path = exc.module or packages.get(exc.ref or "")
        what = "compiling it" if exc.module else "evaluating it"
        if path is None:
            raise BaselineInputError(f"the user rules: evaluation {exc.reason}") from exc
        raise RuleFileError(path, f"{what} {exc.reason}") from exc
    except RegoUnavailableError as exc:
        raise BaselineError(str(exc)) from exc


def evaluate_rules(files: Sequence[RuleFile], document: Mapping[str, Any]) -> list[UserRuleResult]:
    """Evaluate every rule of ``files`` over ``document`` (the image description), in one child."""
    rules = [item for item in files if item.is_rule]
    with _session(files) as session:
        values = _run(
            files, lambda: session.evaluate([f"data.{r.package}" for r in rules], dict(document))
        )
    results: list[UserRuleResult] = []
    seen: dict[str, str] = {}
    for item, value in zip(rules, values, strict=True):
        if value.error is not None:
            raise RuleFileError(
                item.path,
                f"evaluation failed ({value.error}); for example a built-in function failed "
                "(a division by zero, a conversion of a bad value) or a function is not defined",
            )
        result = _result(item, value.value if value.defined else None)
        if result.id in seen:
            raise RuleFileError(item.path, f"id {result.id} is also the id of {seen[result.id]}")
        seen[result.id] = item.path
        results.append(result)
    return results


def _result(item: RuleFile, value: object) -> UserRuleResult:
    if not isinstance(value, dict):
        raise RuleFileError(item.path, f"package {item.package} defines no rules")
    metadata = value.get("metadata")
    if not isinstance(metadata, dict):
        raise RuleFileError(item.path, "no `metadata := {...}` object")
    rule_id = metadata.get("id")
    if not isinstance(rule_id, str) or not _ID.fullmatch(rule_id):
        raise RuleFileError(
            item.path, "metadata.id must be a string of letters, digits, '.', '_' and '-'"
        )
    if rule_id in RULES_BY_ID or rule_id.upper().startswith("IMT-"):
        raise RuleFileError(item.path, f"metadata.id {rule_id}: IMT- ids are the built-in rules'")
    title = metadata.get("title")
    if not isinstance(title, str) or not title.strip():
        raise RuleFileError(item.path, "metadata.title must be a non-empty string")
    try:
        severity = Severity(str(metadata.get("severity")))
    except ValueError as exc:
        raise RuleFileError(
            item.path, "metadata.severity must be one of low, medium, high, critical"
        ) from exc
    controls = metadata.get("controls", [])
    if not isinstance(controls, list) or not all(isinstance(c, str) for c in controls):
        raise RuleFileError(item.path, "metadata.controls must be a list of strings")
    texts = {}
    for key in ("rationale", "remediation"):
        text = metadata.get(key, "")
        if not isinstance(text, str):
            raise RuleFileError(item.path, f"metadata.{key} must be a string")
        texts[key] = text
    deny = value.get("deny")
    if deny is None:
        raise RuleFileError(item.path, "no `deny contains msg if { ... }` rule")
    if not isinstance(deny, list):
        raise RuleFileError(
            item.path,
            "deny must be a set: write `deny contains msg if { ... }` (Rego v1); v0's "
            "`deny[msg] { ... }` defines an object here and would never deny",
        )
    evidence = [_evidence(item, entry) for entry in deny]
    evidence.sort(key=lambda e: json.dumps(e, sort_keys=True))
    return UserRuleResult(
        item.path,
        rule_id,
        title.strip(),
        severity,
        texts["rationale"],
        texts["remediation"],
        tuple(controls),
        tuple(evidence[:MAX_EVIDENCE]),
        max(0, len(evidence) - MAX_EVIDENCE),
    )


def _evidence(item: RuleFile, entry: object) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"message": entry}
    if isinstance(entry, dict) and isinstance(entry.get("msg"), str):
        out = {k: v for k, v in entry.items() if k != "msg"}
        return {"message": entry["msg"], **out}
    raise RuleFileError(
        item.path, "each deny entry must be a string or an object with a string `msg`"
    )
