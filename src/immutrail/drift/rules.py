"""Runtime rules: what users say about running instances, in Rego, in the spirit of Falco.

One rule file per environment, ``package immutrail.drift`` (Rego v1, evaluated with regopy in
a child process with limits, :mod:`immutrail.rego`, like the gate's and the baseline's rules),
defines two sets over ``input``, the document :func:`immutrail.drift.check` builds for each
instance (documented in docs/drift.md)::

    package immutrail.drift

    alert contains msg if {
        some p in input.processes
        p.shell
        msg := sprintf("a shell runs in %s: %v", [input.instance.id, p.cmdline])
    }

    replace contains {"msg": "configuration differs", "severity": "high"} if {
        some f in input.findings
        f.kind == "config"
    }

An entry is a message, or an object with a string ``msg`` and optionally ``severity``
(``low``..``critical``), ``rule`` (a name) and any other fields (kept as evidence). ``alert``
outcomes are findings that need a person; ``replace`` outcomes are findings that remediation
heals by replacement, like the built-in ones.

Rules are set with :func:`set_rules` (a ``drift.rules.changed`` event carrying the file's name,
digest and text: the ledger is where they are kept, so what was in force at any moment can be
proved) and read back with :func:`current_rules`. A file that is not UTF-8, too large, of another
package, does not compile, defines neither set, exceeds the limits of :mod:`immutrail.rego`
(nesting, memory, time) or gives entries of the wrong shape on the sample documents is refused
with :class:`RulesError` (exit 2) and nothing is recorded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from immutrail import names
from immutrail.ledger.errors import EventFormatError
from immutrail.ledger.event import Event, parse_entry
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter
from immutrail.rego import (
    DEFAULT_LIMITS,
    Limits,
    Module,
    RegoLimitError,
    RegoSession,
    RegoSourceError,
    RegoUnavailableError,
)

from .errors import DriftError, DriftInputError

RULES_PACKAGE = "immutrail.drift"
EVENT_RULES_CHANGED = "drift.rules.changed"
EVENT_RULE_MATCHED = "drift.rule.matched"
MAX_RULES_BYTES = 32 * 1024
OUTCOMES = ("alert", "replace")
SEVERITIES = ("low", "medium", "high", "critical")
DEFAULT_SEVERITY = {"alert": "medium", "replace": "high"}
MAX_OUTCOMES = 50
"""Per instance and outcome: a rule matching every process must not flood the ledger."""
INPUT_SCHEMA_VERSION = 1

_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_][\w.]*)\s*$", re.MULTILINE)


class RulesError(DriftInputError):
    """A rule file that cannot be used; nothing was recorded."""

    def __init__(self, name: str, problem: str):
        self.name = name
        self.problem = problem
        super().__init__(f"{name}: {problem}")

    def diagnostics(self) -> str:
        return f"invalid drift rules {self.name}:\n  {self.problem}"


class RuleEvaluationError(DriftError):
    """Rules that were accepted failed on a real instance's document (a built-in's error)."""


@dataclass(frozen=True)
class RuleSet:
    name: str
    """The file name given when the rules were set (for people; the digest names the content)."""
    source: str
    digest: str
    ledger_index: int | None = None
    set_by: str | None = None
    set_at: str | None = None

    def to_json(self, *, source: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "digest": self.digest,
            "ledger_index": self.ledger_index,
            "set_by": self.set_by,
            "set_at": self.set_at,
        }
        if source:
            body["source"] = self.source
        return body


@dataclass(frozen=True)
class Outcome:
    """One entry of ``alert`` or ``replace`` for one instance."""

    outcome: str
    message: str
    severity: str
    rule: str | None
    evidence: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "message": self.message,
            "severity": self.severity,
            "rule": self.rule,
            "evidence": dict(self.evidence),
        }


# --- sample documents: what a rule file must cope with before it is accepted -----------------

_SHELL = {
    "pid": 4242,
    "ppid": 4100,
    "comm": "sh",
    "cmdline": ["/bin/sh"],
    "uid": 0,
    "tty": "pts/0",
    "from_entrypoint": False,
    "shell": True,
    "interactive": True,
    "ssh_server": False,
    "listening": [],
}
SAMPLE_INPUT: dict[str, Any] = {
    "schema_version": INPUT_SCHEMA_VERSION,
    "environment": "prod",
    "now": "2026-11-23T12:00:00Z",
    "instance": {
        "id": "immutrail-prod-web-0a1b2c3d",
        "service": "web",
        "runtime": "docker",
        "digest": "sha256:" + "a" * 64,
        "created_at": "2026-11-23T11:00:00Z",
        "age_s": 3600,
        "health": "healthy",
        "managed": True,
        "recorded": True,
        "port": 8080,
        "labels": {"immutrail.environment": "prod", "immutrail.service": "web"},
    },
    "image": {
        "digest": "sha256:" + "a" * 64,
        "desired": "sha256:" + "a" * 64,
        "user": "",
        "entrypoint": ["/bin/busybox"],
        "cmd": ["sleep", "3600"],
        "env": {"PATH": "/bin"},
    },
    "config": {
        "expected": {
            "env": {"MODE": "strict", "PORT": "8080"},
            "files": {},
            "command": None,
            "config_digest": "sha256:" + "b" * 64,
        },
        "observed": {
            "env": {"MODE": "debug", "PORT": "8080"},
            "files": {},
            "command": ["/bin/busybox", "sleep", "3600"],
            "config_digest": "sha256:" + "b" * 64,
            "user": "",
            "read_only_root": True,
            "privileged": False,
            "capabilities_dropped": True,
            "no_new_privileges": True,
        },
    },
    "processes": [
        {
            **_SHELL,
            "pid": 4101,
            "ppid": 4100,
            "comm": "busybox",
            "cmdline": ["/bin/busybox", "httpd", "-f"],
            "tty": None,
            "from_entrypoint": True,
            "shell": False,
            "interactive": False,
            "listening": [{"protocol": "tcp", "address": "127.0.0.1", "port": 8080}],
        },
        _SHELL,
    ],
    "findings": [
        {
            "kind": "config",
            "severity": "high",
            "control": "SOC 2 CC8.1",
            "message": "the environment differs in MODE",
            "evidence": {"keys": ["MODE"]},
        },
        {
            "kind": "shell",
            "severity": "high",
            "control": "NIST SP 800-190 4.4.4",
            "message": "a shell runs",
            "evidence": _SHELL,
        },
    ],
}
EMPTY_INPUT: dict[str, Any] = {
    **SAMPLE_INPUT,
    "instance": {**SAMPLE_INPUT["instance"], "runtime": "local", "port": None, "labels": {}},
    "image": {**SAMPLE_INPUT["image"], "desired": None, "entrypoint": [], "cmd": []},
    "config": {"expected": None, "observed": None},
    "processes": [],
    "findings": [],
}


# --- parsing and evaluating ------------------------------------------------------------------


class Evaluator:
    """A rule file compiled once; :meth:`evaluate` runs it over one instance's document.

    The interpreter is a child process with limits (:mod:`immutrail.rego`), started here and
    reused for every instance of a check: close the evaluator when done (it is also stopped
    when garbage-collected). A rule file over a limit is a :class:`RulesError`; rules that
    exceed one on a real instance's document, a :class:`RuleEvaluationError`.
    """

    def __init__(self, rules: RuleSet, *, limits: Limits = DEFAULT_LIMITS) -> None:
        self.rules = rules
        try:
            # Strict built-in errors: a failing built-in is loud, not a rule that never matches.
            modules = [Module(rules.name, rules.source)]
            self._session = RegoSession(modules, strict=True, limits=limits)
            self._session.compile()
        except RegoSourceError as exc:
            raise RulesError(rules.name, exc.problem) from exc
        except RegoLimitError as exc:
            raise RulesError(rules.name, f"compiling the rules {exc.reason}") from exc
        except RegoUnavailableError as exc:
            raise DriftError(str(exc)) from exc

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    def evaluate(self, document: Mapping[str, Any]) -> list[Outcome]:
        which = f"the drift rules {self.rules.name} ({self.rules.digest[:19]}…)"
        try:
            (value,) = self._session.evaluate([f"data.{RULES_PACKAGE}"], dict(document))
        except RegoLimitError as exc:
            raise RuleEvaluationError(f"{which}: evaluation {exc.reason}") from exc
        except RegoUnavailableError as exc:
            raise DriftError(str(exc)) from exc
        if value.error is not None:
            raise RuleEvaluationError(f"{which} failed: {value.error[:500]}")
        return _outcomes(self.rules.name, value.value if value.defined else None)


def _outcomes(name: str, value: object) -> list[Outcome]:
    if not isinstance(value, dict) or not any(k in value for k in OUTCOMES):
        raise RulesError(
            name, f"package {RULES_PACKAGE} must define `alert` or `replace` (or both)"
        )
    found: list[Outcome] = []
    for outcome in OUTCOMES:
        entries = value.get(outcome, [])
        if not isinstance(entries, list):
            raise RulesError(
                name,
                f"{outcome} must be a set: write `{outcome} contains msg if {{ ... }}` (Rego v1); "
                f"`{outcome}[msg] {{ ... }}` defines an object and would never match",
            )
        parsed = [_entry(name, outcome, e) for e in entries]
        parsed.sort(key=lambda o: (o.message, o.rule or ""))
        found += parsed[:MAX_OUTCOMES]
    return found


def _entry(name: str, outcome: str, entry: object) -> Outcome:
    if isinstance(entry, str):
        return Outcome(outcome, entry, DEFAULT_SEVERITY[outcome], None, {})
    if not isinstance(entry, dict) or not isinstance(entry.get("msg"), str):
        raise RulesError(name, f"each {outcome} entry must be a string or an object with `msg`")
    severity = entry.get("severity", DEFAULT_SEVERITY[outcome])
    if severity not in SEVERITIES:
        raise RulesError(name, f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    rule = entry.get("rule")
    if rule is not None and not isinstance(rule, str):
        raise RulesError(name, "`rule` must be a string (the rule's name)")
    evidence = {k: v for k, v in entry.items() if k not in ("msg", "severity", "rule")}
    return Outcome(outcome, entry["msg"], str(severity), rule, evidence)


def parse_rules(data: bytes, name: str, *, limits: Limits = DEFAULT_LIMITS) -> RuleSet:
    """Check a rule file completely (compiles, evaluates on the sample documents, within
    ``limits``)."""
    if len(data) > MAX_RULES_BYTES:
        raise RulesError(name, f"larger than {MAX_RULES_BYTES} bytes")
    try:
        source = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RulesError(name, f"not UTF-8 text: {exc}") from exc
    packages = _PACKAGE.findall(source)
    if packages != [RULES_PACKAGE]:
        found = ", ".join(packages) or "none"
        raise RulesError(name, f"must declare `package {RULES_PACKAGE}` once (found: {found})")
    rules = RuleSet(name, source, "sha256:" + hashlib.sha256(data).hexdigest())
    with Evaluator(rules, limits=limits) as evaluator:
        for document in (SAMPLE_INPUT, EMPTY_INPUT):
            try:
                evaluator.evaluate(document)
            except RuleEvaluationError as exc:
                raise RulesError(name, f"fails on the sample document: {exc}") from exc
    return rules


# --- recording -------------------------------------------------------------------------------


def check_environment(environment: str) -> None:
    names.check_environment(environment, DriftInputError)


def set_rules(ledger: Ledger, actor: str, environment: str, rules: RuleSet) -> RuleSet:
    """Record ``rules`` as the environment's; the recorded set, with its index, who and when."""
    payload = {
        "environment": environment,
        "name": rules.name,
        "digest": rules.digest,
        "source": rules.source,
    }
    index, event = _record(ledger, actor, environment, payload, rules.name)
    return RuleSet(rules.name, rules.source, rules.digest, index, actor, event.time)


def clear_rules(ledger: Ledger, actor: str, environment: str) -> int:
    """Record that the environment has no rules any more; the event's ledger index."""
    payload = {"environment": environment, "name": None, "digest": None, "source": None}
    return _record(ledger, actor, environment, payload, "-")[0]


def _record(
    ledger: Ledger, actor: str, environment: str, payload: dict[str, Any], name: str
) -> tuple[int, Event]:
    check_environment(environment)
    event = Event.create(EVENT_RULES_CHANGED, actor, environment, payload)
    try:
        event.entry_bytes()  # too large once escaped: refused before anything is written
    except EventFormatError as exc:
        raise RulesError(name, str(exc)) from exc
    return ledger.append(event).index, event


def current_rules(ledger: Ledger, environment: str) -> RuleSet | None:
    """The rules the last ``drift.rules.changed`` of ``environment`` set (None: none)."""
    found: RuleSet | None = None
    for row in ledger.entries(EntryFilter(type=EVENT_RULES_CHANGED, subject=environment)):
        event = parse_entry(row.data)
        payload = event.payload
        if payload.get("environment") != environment:
            continue
        source, digest = payload.get("source"), payload.get("digest")
        if source is None:
            found = None
            continue
        if "sha256:" + hashlib.sha256(str(source).encode()).hexdigest() != digest:
            raise DriftError(
                f"the drift rules recorded at ledger index {row.index} do not match their digest"
            )
        found = RuleSet(
            str(payload.get("name")), str(source), str(digest), row.index, event.actor, event.time
        )
    return found
