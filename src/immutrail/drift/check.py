"""`immutrail drift check ENV`: is what runs exactly what was approved and deployed?

For every declared service of an environment the check observes the runtime and reports, per
instance, each way it differs from what immutrail deployed: the image (desired digest, known to
the store), who created it (immutrail, recorded in the ledger), its filesystem (file by file
against the image, :func:`check_root` / :func:`check_container`), its configuration (env,
configuration files, command, lock-down settings), mutability signals (``docker exec``
sessions, shells, processes the entrypoint did not start, SSH servers, age beyond the declared
lifetime), and per service the replica count. Each finding has a severity, the control it
threatens and its evidence; each instance's findings are one ``drift.detected`` event. The
environment's runtime rules (:mod:`immutrail.drift.rules`) then run over each instance's
document; what they say is one ``drift.rule.matched`` event and more findings. ``remediate``
keeps the evidence in the store and replaces the drifted instances through the deployment
engine (new instances first, never a patch).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immutrail.artifacts.attach import attach_and_record
from immutrail.artifacts.imageconfig import image_env
from immutrail.crypto.canonical import canonical_json
from immutrail.deploy.declaration import ServiceSpec, declared
from immutrail.deploy.docker_driver import DockerRuntime
from immutrail.deploy.engine import Context, converge
from immutrail.deploy.observe import LABEL_CONFIG, Recorded, recorded
from immutrail.deploy.reconcile import runtimes_in_use
from immutrail.deploy.runtime import Health, Instance, Runtime
from immutrail.ledger.event import Event, format_time, parse_time
from immutrail.policy.desired import desired_state

from .container import _engine, check_container
from .errors import DriftError
from .expected import drift_key, expected_files
from .integrity import check_root
from .processes import TOP_ARGS, HostProcesses, Process, container_processes, signals
from .rules import EVENT_RULE_MATCHED, INPUT_SCHEMA_VERSION, Evaluator, Outcome, current_rules

EVENT_DETECTED = "drift.detected"
EVENT_CHECKED = "drift.checked"
EVENT_REMEDIATED = "drift.remediated"
EVIDENCE_TYPE = "application/vnd.immutrail.drift-evidence.v1+json"
INTERACTIVE_ACCESS = "NIST SP 800-190 4.4.4: no interactive access to instances"

# kind -> (severity, the control it threatens). Controls in our words, official identifiers.
KINDS: dict[str, tuple[str, str]] = {
    "unmanaged": (
        "critical",
        "NIST SP 800-190 4.4.1; PCI DSS 4.0 6.5.1: only changes through the process run",
    ),
    "unrecorded": ("high", "SOC 2 CC8.1: every change is recorded"),
    "unknown-image": (
        "critical",
        "NIST SP 800-190 4.1.5; PCI DSS 4.0 6.3.2: only known, inventoried images",
    ),
    "image-mismatch": ("high", "NIST SP 800-190 4.4.2; SOC 2 CC8.1: only the approved image runs"),
    "filesystem": ("critical", "NIST SP 800-190 4.4.3; CIS Docker 5.12: immutable root filesystem"),
    "config": ("high", "SOC 2 CC8.1; PCI DSS 4.0 2.2.1: configuration as approved"),
    "lockdown": ("high", "CIS Docker 5.3, 5.4, 5.25: no privileges, no capabilities"),
    "exec-session": ("high", INTERACTIVE_ACCESS),
    "shell": ("high", INTERACTIVE_ACCESS),
    "foreign-process": (
        "high",
        "NIST SP 800-190 4.4.4; immutable infrastructure: only the image's entrypoint runs",
    ),
    "ssh-server": ("critical", "CIS Docker 5.6: no SSH server inside an instance"),
    "lifetime-exceeded": ("medium", "immutable infrastructure: instances are replaced, not kept"),
    "exited": ("medium", "availability (SOC 2 A1.2): the declared replicas run"),
    "replicas-missing": ("medium", "availability (SOC 2 A1.2): the declared replicas run"),
    "replicas-surplus": ("medium", "SOC 2 CC8.1: nothing runs that was not declared"),
    "rule-alert": ("medium", "the environment's runtime rules"),
    "rule-replace": ("high", "the environment's runtime rules"),
}
NOT_REPLACED = frozenset({"replicas-missing", "replicas-surplus", "rule-alert"})
"""Findings remediation does not replace an instance for (counts, and what needs a person)."""
MAX_EVIDENCE_FINDINGS = 200
MAX_PROCESS_FINDINGS = 20


@dataclass(frozen=True)
class Finding:
    kind: str
    service: str
    instance: str | None
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    level: str | None = None
    """The severity when the kind's is not the one (a rule's outcome says its own)."""
    threatens: str | None = None
    """The control when the kind's is not the one."""

    @property
    def severity(self) -> str:
        return self.level or KINDS[self.kind][0]

    @property
    def control(self) -> str:
        return self.threatens or KINDS[self.kind][1]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "control": self.control,
            "service": self.service,
            "instance": self.instance,
            "message": self.message,
            "evidence": self.evidence,
        }


@dataclass
class DriftReport:
    environment: str
    findings: list[Finding] = field(default_factory=list)
    instances_checked: int = 0
    files_hashed: int = 0
    remediated: dict[str, list[str]] = field(default_factory=dict)
    """Service -> the instances replaced."""
    source: str = "check"
    """What produced it: ``check``, ``instance-check`` (watch, after a signal), ``docker-events``
    or ``process-scan`` (watch's near-real-time paths)."""
    rules: str | None = None
    """The digest of the runtime rules evaluated, if any."""

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "source": self.source,
            "clean": not self.findings,
            "instances_checked": self.instances_checked,
            "files_hashed": self.files_hashed,
            "rules": self.rules,
            "findings": [f.to_json() for f in self.findings],
            "remediated": self.remediated,
        }


@dataclass
class _Seen:
    """What the check observed of one instance besides findings: the rules' input."""

    processes: list[Process] = field(default_factory=list)
    image: dict[str, Any] = field(default_factory=dict)
    expected: dict[str, Any] | None = None
    observed: dict[str, Any] | None = None


@dataclass
class _Shared:
    """Read once per check, used for every instance."""

    view: Recorded
    rules: Evaluator | None
    full: bool
    host: HostProcesses | None = None

    def host_processes(self) -> HostProcesses:
        if self.host is None:
            self.host = HostProcesses()
        return self.host


def drift_check(
    ctx: Context,
    environment: str,
    *,
    full: bool = False,
    only: Collection[str] | None = None,
    between: Callable[[], None] | None = None,
    record: bool = True,
) -> DriftReport:
    """Observe every declared service of ``environment``; record and return the findings.

    ``only``: check these instances alone (no replica count, no search for undeclared
    services). ``between``: called after each instance (``drift watch`` handles the engine's
    events there, so that a long check does not delay them). ``record``: a whole check ends
    with a ``drift.checked`` event, clean or not, so that regular comparisons show in the
    ledger (``drift watch`` records one an hour).
    """
    ruleset = current_rules(ctx.ledger, environment)
    shared = _Shared(
        recorded(ctx.ledger, environment), Evaluator(ruleset) if ruleset else None, full
    )
    report = DriftReport(environment, rules=ruleset.digest if ruleset else None)
    if only is not None:
        report.source = "instance-check"
    services = declared(ctx.ledger, environment)
    for name, item in services.items():
        spec = item.spec
        desired = desired_state(ctx.home, ctx.ledger, ctx.store, environment, name)
        runtime = ctx.runtime_for(spec.runtime)
        instances = [i for i in runtime.list(environment) if i.service == name]
        for instance in instances:
            if only is not None and instance.id not in only:
                continue
            wanted = desired.digest if desired is not None else None
            report.findings += _check_one(ctx, runtime, spec, wanted, instance, shared, report)
            report.instances_checked += 1
            if between is not None:
                between()
        if only is not None:
            continue
        running = [i for i in instances if i.health is not Health.exited]
        if desired is not None and len(running) < spec.replicas:
            report.findings.append(
                Finding(
                    "replicas-missing",
                    name,
                    None,
                    f"{len(running)} of {spec.replicas} declared instances run",
                    {"expected": spec.replicas, "observed": len(running)},
                )
            )
        elif len(running) > spec.replicas:
            report.findings.append(
                Finding(
                    "replicas-surplus",
                    name,
                    None,
                    f"{len(running)} instances run, {spec.replicas} declared",
                    {"expected": spec.replicas, "observed": len(running)},
                )
            )
    if only is not None:
        return report
    for runtime_name in runtimes_in_use(ctx, environment):
        for instance in ctx.runtime_for(runtime_name).list(environment):
            if instance.service not in services:
                finding = Finding(
                    "unmanaged" if not instance.managed else "replicas-surplus",
                    instance.service,
                    instance.id,
                    f"{instance.id} runs in {environment} but its service is not declared",
                    {"digest": instance.digest, "managed": instance.managed},
                )
                report.findings.append(finding)
                record_detected(ctx, environment, instance, [finding])
    if record:
        record_checked(ctx, report)
    return report


def record_checked(ctx: Context, report: DriftReport) -> None:
    """The ``drift.checked`` event of one whole check: what was compared, and how it ended."""
    ctx.ledger.append(
        Event.create(
            EVENT_CHECKED,
            ctx.actor,
            report.environment,
            {
                "environment": report.environment,
                "source": report.source,
                "instances_checked": report.instances_checked,
                "files_hashed": report.files_hashed,
                "findings": len(report.findings),
                "kinds": sorted({f.kind for f in report.findings}),
                "rules": report.rules,
            },
        )
    )


def remediate(ctx: Context, report: DriftReport) -> None:
    """Keep each drifted instance's evidence, then replace it through the engine.

    Every instance with a finding is replaced except for ``rule-alert`` (the rules asked for a
    person, not a replacement) and the per-service replica counts (converging fixes those).
    """
    by_service: dict[str, dict[str, str]] = {}
    for finding in report.findings:
        if finding.instance is None or finding.kind in NOT_REPLACED:
            continue
        by_service.setdefault(finding.service, {}).setdefault(
            finding.instance, f"drift: {finding.kind}"
        )
    for service, item in declared(ctx.ledger, report.environment).items():
        replace = by_service.get(service, {})
        if replace:
            runtime = ctx.runtime_for(item.spec.runtime)
            present = {i.id: i for i in runtime.list(report.environment)}
            for instance_id in replace:
                if instance_id in present:
                    _keep_evidence(ctx, report, runtime, present[instance_id])
        outcome = converge(
            ctx, report.environment, service, reason="drift remediation", replace=replace
        )
        report.remediated[service] = sorted(set(replace) & set(outcome.destroyed))
        for instance_id in report.remediated[service]:
            ctx.ledger.append(
                Event.create(
                    EVENT_REMEDIATED,
                    ctx.actor,
                    instance_id,
                    {
                        "environment": report.environment,
                        "service": service,
                        "deployment": outcome.deployment,
                        "replaced_by": outcome.created,
                    },
                )
            )


# --- one instance ----------------------------------------------------------------------------


def _check_one(
    ctx: Context,
    runtime: Runtime,
    spec: ServiceSpec,
    desired: str | None,
    instance: Instance,
    shared: _Shared,
    report: DriftReport,
) -> list[Finding]:
    """The built-in findings of one instance, recorded; then its rules' outcomes, recorded."""
    seen = _Seen()
    found = _instance_findings(ctx, runtime, spec, desired, instance, shared, report, seen)
    if found:
        record_detected(ctx, report.environment, instance, found)
    if shared.rules is None:
        return found
    document = rule_input(ctx, report.environment, runtime.name, instance, desired, seen, found)
    document["instance"]["recorded"] = instance.id in shared.view.created
    outcomes = shared.rules.evaluate(document)
    if not outcomes:
        return found
    rules = shared.rules.rules
    ctx.ledger.append(
        Event.create(
            EVENT_RULE_MATCHED,
            ctx.actor,
            instance.id,
            {
                "environment": report.environment,
                "service": instance.service,
                "digest": instance.digest,
                "rules": {
                    "name": rules.name,
                    "digest": rules.digest,
                    "ledger_index": rules.ledger_index,
                },
                "outcomes": [o.to_json() for o in outcomes],
            },
        )
    )
    return found + [_rule_finding(instance, rules.name, rules.digest, o) for o in outcomes]


def _rule_finding(instance: Instance, name: str, digest: str, outcome: Outcome) -> Finding:
    rule = f" {outcome.rule}" if outcome.rule else ""
    return Finding(
        f"rule-{outcome.outcome}",
        instance.service,
        instance.id,
        outcome.message,
        {"rule": outcome.rule, "rules": digest, **outcome.evidence},
        level=outcome.severity,
        threatens=f"runtime rule{rule} ({name}, {digest[:19]}…)",
    )


def rule_input(
    ctx: Context,
    environment: str,
    runtime_name: str,
    instance: Instance,
    desired: str | None,
    seen: _Seen,
    found: list[Finding],
) -> dict[str, Any]:
    """The document runtime rules see as ``input`` (schema in docs/drift.md)."""
    try:
        age: int | None = round((ctx.clock() - parse_time(instance.created_at)).total_seconds())
    except ValueError:
        age = None
    return {
        "schema_version": INPUT_SCHEMA_VERSION,
        "environment": environment,
        "now": format_time(ctx.clock()),
        "instance": {
            "id": instance.id,
            "service": instance.service,
            "runtime": runtime_name,
            "digest": instance.digest,
            "created_at": instance.created_at,
            "age_s": age,
            "health": str(instance.health),
            "managed": instance.managed,
            "recorded": None,
            "port": instance.port,
            "labels": dict(instance.labels),
        },
        "image": {"digest": instance.digest, "desired": desired, **seen.image},
        "config": {"expected": seen.expected, "observed": seen.observed},
        "processes": [p.to_json() for p in seen.processes],
        "findings": bare(found),
    }


def _instance_findings(
    ctx: Context,
    runtime: Runtime,
    spec: ServiceSpec,
    desired: str | None,
    instance: Instance,
    shared: _Shared,
    report: DriftReport,
    seen: _Seen,
) -> list[Finding]:
    found: list[Finding] = []

    def add(kind: str, message: str, **evidence: Any) -> None:
        found.append(Finding(kind, spec.service, instance.id, message, evidence))

    if not instance.managed:
        add("unmanaged", f"{instance.id} was not created by immutrail", digest=instance.digest)
    elif instance.id not in shared.view.created:
        add(
            "unrecorded",
            f"{instance.id} carries immutrail's labels but its creation is not in the ledger",
        )
    if instance.digest.startswith("unknown"):
        add(
            "unknown-image",
            f"{instance.id} runs an image the store does not know",
            observed=instance.digest,
        )
        return found
    if desired is not None and instance.digest != desired:
        add(
            "image-mismatch",
            f"{instance.id} runs {instance.digest}, not the approved {desired}",
            expected=desired,
            observed=instance.digest,
        )
    image = ctx.store.image_config(instance.digest).get("config") or {}
    seen.image = {
        "user": image.get("User") or "",
        "entrypoint": list(image.get("Entrypoint") or []),
        "cmd": list(image.get("Cmd") or []),
        "env": image_env(image),
    }
    if instance.health is Health.exited:
        add("exited", f"{instance.id} is not running")
        return found
    if spec.max_lifetime_s is not None:
        age = (ctx.clock() - parse_time(instance.created_at)).total_seconds()
        if age > spec.max_lifetime_s:
            add(
                "lifetime-exceeded",
                f"{instance.id} is {age:.0f} s old; the limit is {spec.max_lifetime_s} s",
                age_s=round(age),
                max_lifetime_s=spec.max_lifetime_s,
            )
    if instance.labels.get(LABEL_CONFIG) not in (None, spec.config_digest):
        add(
            "config",
            f"{instance.id} was deployed with another configuration",
            expected=spec.config_digest,
            observed=instance.labels.get(LABEL_CONFIG),
        )
    expected = expected_files(ctx.store, instance.digest)
    if isinstance(runtime, DockerRuntime):
        integrity = check_container(runtime.client, instance.id, expected)
        found += _docker_findings(ctx, runtime, spec, instance, seen)
    else:
        folder = ctx.home / "runtime" / "local" / instance.id
        integrity = check_root(
            expected,
            folder / "rootfs",
            state=ctx.home / "drift" / "state" / f"{instance.id}.json",
            seal_key=drift_key(ctx.store),
            full=shared.full,
        )
        found += _local_findings(spec, instance, folder, shared, seen)
    report.files_hashed += integrity.files_hashed
    if not integrity.clean:
        items = [f.to_json() for f in integrity.findings]
        add(
            "filesystem",
            f"{instance.id}'s filesystem differs from its image: {integrity.counts()}",
            counts=integrity.counts(),
            files=items[:MAX_EVIDENCE_FINDINGS],
            truncated=len(items) > MAX_EVIDENCE_FINDINGS,
        )
    found += process_findings(spec.service, instance.id, seen.processes)
    return found


def process_findings(service: str, instance_id: str, processes: list[Process]) -> list[Finding]:
    """Shells, processes the entrypoint did not start, SSH servers: one finding each."""
    return [
        Finding(s.kind, service, instance_id, s.message, s.evidence())
        for s in signals(processes, instance_id)[:MAX_PROCESS_FINDINGS]
    ]


def read_local_record(folder: Path, instance_id: str) -> dict[str, Any]:
    """The local runtime's ``instance.json`` of an instance (its spec, pid, start time)."""
    try:
        record = json.loads((folder / "instance.json").read_text())
    except (OSError, ValueError) as exc:
        raise DriftError(f"cannot read the record of {instance_id}: {exc}") from exc
    if not isinstance(record, dict) or not isinstance(record.get("spec"), dict):
        raise DriftError(f"the record of {instance_id} is malformed")
    return record


def local_processes(host: HostProcesses, folder: Path, record: Mapping[str, Any]) -> list[Process]:
    pid, start = record.get("pid"), record.get("start_time")
    return host.local_instance(
        folder.name,
        folder,
        pid if isinstance(pid, int) else None,
        start if isinstance(start, int) else None,
    )


def _local_findings(
    spec: ServiceSpec, instance: Instance, folder: Path, shared: _Shared, seen: _Seen
) -> list[Finding]:
    """The instance's recorded env, files and command, its config files' bytes now, and its
    processes."""
    full_record = read_local_record(folder, instance.id)
    record = full_record["spec"]
    seen.processes = local_processes(shared.host_processes(), folder, full_record)
    observed = {
        "env": record.get("env"),
        "files": record.get("files"),
        "command": record.get("command"),
    }
    wanted = {
        "env": dict(spec.env),
        "files": dict(spec.files),
        "command": list(spec.command) if spec.command is not None else None,
    }
    seen.expected = {**wanted, "config_digest": spec.config_digest}
    seen.observed = {**observed, "config_digest": instance.labels.get(LABEL_CONFIG)}
    found = []
    differing = sorted(k for k in wanted if wanted[k] != observed[k])
    if differing:
        found.append(
            Finding(
                "config",
                spec.service,
                instance.id,
                f"{instance.id} runs with other {', '.join(differing)} than declared",
                {
                    "expected": {k: wanted[k] for k in differing},
                    "observed": {k: observed[k] for k in differing},
                },
            )
        )
    for target, digest in sorted((record.get("files") or {}).items()):
        path = folder / "config" / target.lstrip("/")
        try:
            now = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            now = None
        if now != digest:
            found.append(
                Finding(
                    "config",
                    spec.service,
                    instance.id,
                    f"the configuration file {target} of {instance.id} was changed",
                    {"path": target, "expected": digest, "observed": now},
                )
            )
    return found


def healthcheck_commands(attrs: Mapping[str, Any]) -> set[str]:
    """The command lines Docker's own healthcheck execs run (they are not exec sessions)."""
    config = attrs.get("Config") or {}
    test = list((config.get("Healthcheck") or {}).get("Test") or [])
    if not test or test[0] == "NONE":
        return set()
    if test[0] == "CMD-SHELL":
        shell = list(config.get("Shell") or ["/bin/sh", "-c"])
        return {" ".join([*shell, *test[1:]])}
    return {" ".join(test[1:] if test[0] == "CMD" else test)}


def exec_command(event: Mapping[str, Any]) -> str:
    """The command of an ``exec_create: CMD`` / ``exec_start: CMD`` engine event."""
    return str(event.get("Action", "")).partition(": ")[2]


def container_process_list(client: Any, container: Any) -> list[Process]:
    """The container's processes, without the engine's own healthcheck runs."""
    attrs = container.attrs
    init_pid = int((attrs.get("State") or {}).get("Pid") or 0)
    if init_pid <= 0:
        return []
    with _engine(f"listing the processes of {container.name}"):
        top = client.api.top(container.id, ps_args=TOP_ARGS)
    health = healthcheck_commands(attrs)
    return [
        p
        for p in container_processes(top, container.id, init_pid)
        if p.from_entrypoint or " ".join(p.cmdline) not in health
    ]


def _docker_findings(
    ctx: Context, runtime: DockerRuntime, spec: ServiceSpec, instance: Instance, seen: _Seen
) -> list[Finding]:
    with _engine(f"container {instance.id}"):
        container = runtime.client.containers.get(instance.id)
    attrs = container.attrs
    found = []
    wanted_env = {**image_env(ctx.store.image_config(instance.digest)), **spec.env}
    if instance.port is not None:
        wanted_env["PORT"] = str(instance.port)
    observed_env = dict(item.partition("=")[::2] for item in attrs["Config"].get("Env") or [])
    if observed_env != wanted_env:
        keys = sorted(
            k
            for k in set(wanted_env) | set(observed_env)
            if wanted_env.get(k) != observed_env.get(k)
        )
        found.append(
            Finding(
                "config",
                spec.service,
                instance.id,
                f"{instance.id}'s environment differs in {', '.join(keys)}",
                {
                    "keys": keys,
                    "expected": {k: wanted_env.get(k) for k in keys},
                    "observed": {k: observed_env.get(k) for k in keys},
                },
            )
        )
    host = attrs["HostConfig"]
    lockdown = {
        "read_only_root": bool(host.get("ReadonlyRootfs")),
        "capabilities_dropped": host.get("CapDrop") == ["ALL"] and not host.get("CapAdd"),
        "no_new_privileges": "no-new-privileges" in " ".join(host.get("SecurityOpt") or []),
        "not_privileged": not host.get("Privileged"),
    }
    seen.expected = {
        "env": wanted_env,
        "files": dict(spec.files),
        "command": list(spec.command) if spec.command is not None else None,
        "config_digest": spec.config_digest,
    }
    seen.observed = {
        "env": observed_env,
        "files": {m.get("Destination"): m.get("Source") for m in attrs.get("Mounts") or []},
        "command": [
            *(attrs["Config"].get("Entrypoint") or []),
            *(attrs["Config"].get("Cmd") or []),
        ],
        "config_digest": instance.labels.get(LABEL_CONFIG),
        "user": attrs["Config"].get("User") or "",
        "privileged": not lockdown["not_privileged"],
        **{k: v for k, v in lockdown.items() if k != "not_privileged"},
    }
    broken = sorted(k for k, ok in lockdown.items() if not ok)
    if broken:
        found.append(
            Finding(
                "lockdown",
                spec.service,
                instance.id,
                f"{instance.id} is not locked down: {', '.join(broken)}",
                {"settings": lockdown},
            )
        )
    seen.processes = container_process_list(runtime.client, container)
    created = int(parse_time(instance.created_at).timestamp())
    now = int(ctx.clock().timestamp()) + 1
    health = healthcheck_commands(attrs)
    with _engine(f"reading the events of {instance.id}"):
        execs = [
            event
            for event in runtime.client.events(
                since=created,
                until=now,
                decode=True,
                filters={"container": container.id, "type": "container", "event": "exec_start"},
            )
            if str(event.get("Action", "")).startswith("exec_start")
            and exec_command(event) not in health
        ]
    if execs:
        found.append(
            Finding(
                "exec-session",
                spec.service,
                instance.id,
                f"{len(execs)} exec session(s) into {instance.id}",
                {
                    "sessions": [
                        {
                            "time": e.get("time"),
                            "command": exec_command(e),
                            "exec_id": (e.get("Actor") or {}).get("Attributes", {}).get("execID"),
                        }
                        for e in execs[:20]
                    ]
                },
            )
        )
    return found


def bare(found: list[Finding]) -> list[dict[str, Any]]:
    """Findings of one instance without the service and instance they all share."""
    return [
        {k: v for k, v in f.to_json().items() if k not in ("service", "instance")} for f in found
    ]


def record_detected(
    ctx: Context, environment: str, instance: Instance, found: list[Finding], source: str = "check"
) -> None:
    """One ``drift.detected`` event for ``found``, the findings of one instance."""
    ctx.ledger.append(
        Event.create(
            EVENT_DETECTED,
            ctx.actor,
            instance.id,
            {
                "environment": environment,
                "service": instance.service,
                "digest": instance.digest,
                "source": source,
                "findings": bare(found)[:50],
            },
        )
    )


def _keep_evidence(ctx: Context, report: DriftReport, runtime: Runtime, instance: Instance) -> None:
    """Attach the findings and the instance's output to its image before it is replaced."""
    instance_id, service = instance.id, instance.service
    findings = [f.to_json() for f in report.findings if f.instance == instance_id]
    if not ctx.store.has_blob(instance.digest):
        return
    logs = runtime.logs(instance_id)
    document = canonical_json(
        {
            "instance": instance_id,
            "environment": report.environment,
            "service": service,
            "image": instance.digest,
            "findings": findings,
            "stdout_sha256": hashlib.sha256(logs.stdout).hexdigest(),
            "stderr_sha256": hashlib.sha256(logs.stderr).hexdigest(),
        }
    )
    attach_and_record(
        ctx.store,
        ctx.ledger,
        ctx.actor,
        instance.digest,
        EVIDENCE_TYPE,
        document,
        EVIDENCE_TYPE,
        {"dev.immutrail.instance": instance_id},
    )
