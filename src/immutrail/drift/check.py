"""`immutrail drift check ENV`: is what runs exactly what was approved and deployed?

For every declared service of an environment the check observes the runtime and reports, per
instance, each way it differs from what immutrail deployed: the image (desired digest, known to
the store), who created it (immutrail, recorded in the ledger), its filesystem (file by file
against the image, :func:`check_root` / :func:`check_container`), its configuration (env,
configuration files, command, lock-down settings), mutability signals (``docker exec``
sessions, age beyond the declared lifetime), and per service the replica count. Each finding
has a severity, the control it threatens and its evidence; each instance's findings are one
``drift.detected`` event. ``remediate`` keeps the evidence in the store and replaces the
drifted instances through the deployment engine (new instances first, never a patch).
"""

from __future__ import annotations

import hashlib
import json
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
from immutrail.ledger.event import Event, parse_time
from immutrail.policy.desired import desired_state

from .container import check_container
from .errors import DriftError
from .expected import drift_key, expected_files
from .integrity import check_root

EVENT_DETECTED = "drift.detected"
EVENT_REMEDIATED = "drift.remediated"
EVIDENCE_TYPE = "application/vnd.immutrail.drift-evidence.v1+json"

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
    "exec-session": ("high", "NIST SP 800-190 4.4.4: no interactive access to instances"),
    "lifetime-exceeded": ("medium", "immutable infrastructure: instances are replaced, not kept"),
    "exited": ("medium", "availability (SOC 2 A1.2): the declared replicas run"),
    "replicas-missing": ("medium", "availability (SOC 2 A1.2): the declared replicas run"),
    "replicas-surplus": ("medium", "SOC 2 CC8.1: nothing runs that was not declared"),
}
MAX_EVIDENCE_FINDINGS = 200


@dataclass(frozen=True)
class Finding:
    kind: str
    service: str
    instance: str | None
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return KINDS[self.kind][0]

    @property
    def control(self) -> str:
        return KINDS[self.kind][1]

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

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "clean": not self.findings,
            "instances_checked": self.instances_checked,
            "files_hashed": self.files_hashed,
            "findings": [f.to_json() for f in self.findings],
            "remediated": self.remediated,
        }


def drift_check(ctx: Context, environment: str, *, full: bool = False) -> DriftReport:
    """Observe every declared service of ``environment``; record and return the findings."""
    report = DriftReport(environment)
    view = recorded(ctx.ledger, environment)
    services = declared(ctx.ledger, environment)
    for name, item in services.items():
        spec = item.spec
        desired = desired_state(ctx.home, ctx.ledger, ctx.store, environment, name)
        runtime = ctx.runtime_for(spec.runtime)
        instances = [i for i in runtime.list(environment) if i.service == name]
        for instance in instances:
            wanted = desired.digest if desired is not None else None
            found = _instance_findings(ctx, runtime, spec, wanted, view, instance, full, report)
            report.findings += found
            report.instances_checked += 1
            if found:
                _record(ctx, environment, instance, found)
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
                _record(ctx, environment, instance, [finding])
    return report


def remediate(ctx: Context, report: DriftReport) -> None:
    """Keep each drifted instance's evidence, then replace it through the engine."""
    by_service: dict[str, dict[str, str]] = {}
    for finding in report.findings:
        if finding.instance is None or finding.kind in ("replicas-missing", "replicas-surplus"):
            continue
        by_service.setdefault(finding.service, {})[finding.instance] = f"drift: {finding.kind}"
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


def _instance_findings(
    ctx: Context,
    runtime: Runtime,
    spec: ServiceSpec,
    desired: str | None,
    view: Recorded,
    instance: Instance,
    full: bool,
    report: DriftReport,
) -> list[Finding]:
    found: list[Finding] = []

    def add(kind: str, message: str, **evidence: Any) -> None:
        found.append(Finding(kind, spec.service, instance.id, message, evidence))

    if not instance.managed:
        add("unmanaged", f"{instance.id} was not created by immutrail", digest=instance.digest)
    elif instance.id not in view.created:
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
        found += _docker_findings(ctx, runtime, spec, instance)
    else:
        folder = ctx.home / "runtime" / "local" / instance.id
        integrity = check_root(
            expected,
            folder / "rootfs",
            state=ctx.home / "drift" / "state" / f"{instance.id}.json",
            seal_key=drift_key(ctx.store),
            full=full,
        )
        found += _local_config_findings(spec, instance, folder)
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
    return found


def _local_config_findings(spec: ServiceSpec, instance: Instance, folder: Path) -> list[Finding]:
    """The instance's recorded env, files and command, and its config files' bytes now."""
    try:
        record = json.loads((folder / "instance.json").read_text())["spec"]
    except (OSError, ValueError, KeyError) as exc:
        raise DriftError(f"cannot read the record of {instance.id}: {exc}") from exc
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


def _docker_findings(
    ctx: Context, runtime: DockerRuntime, spec: ServiceSpec, instance: Instance
) -> list[Finding]:
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
    created = int(parse_time(instance.created_at).timestamp())
    now = int(ctx.clock().timestamp()) + 1
    execs = [
        event
        for event in runtime.client.events(
            since=created,
            until=now,
            decode=True,
            filters={"container": container.id, "type": "container"},
        )
        if str(event.get("Action", "")).startswith("exec_start")
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
                        {"time": e.get("time"), "command": e.get("Action", "").partition(": ")[2]}
                        for e in execs[:20]
                    ]
                },
            )
        )
    return found


def _record(ctx: Context, environment: str, instance: Instance, found: list[Finding]) -> None:
    ctx.ledger.append(
        Event.create(
            EVENT_DETECTED,
            ctx.actor,
            instance.id,
            {
                "environment": environment,
                "service": instance.service,
                "digest": instance.digest,
                "findings": [
                    {k: v for k, v in f.to_json().items() if k not in ("service", "instance")}
                    for f in found
                ][:50],
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
