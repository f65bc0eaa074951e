"""The auditor's three questions, answered from ledger events alone.

* :class:`AtQuery`: every instance running in an environment at one moment, with the image it ran
  and that image's evidence *as it stood when it was deployed*;
* :class:`TraceQuery`: the chain of one image (or one instance) from its commit to its
  destruction;
* :class:`ChangesQuery`: every change recorded for an environment in a time window, refused gate
  decisions and break-glass overrides included (a SOC 2 CC8.1 / PCI DSS 6.5 change log).

Each answer is a JSON object that *cites* the events it rests on: every integer field named
``index`` or ending in ``_index`` is a ledger index. A field named ``attached_index`` is the
``artifact.attached`` event of an attestation the answer relies on (an evidence bundle carries the
attestation itself). The functions read through an :class:`~immutrail.audit.source.EventSource`
and only look at what they cite, so the answer computed from the cited events alone is the answer
computed from the whole ledger: that is what lets an offline verifier re-derive it from a bundle.

Times: an event's ``time``, compared in microseconds. An instance runs at T when its
``instance.created`` is at or before T and no ``instance.destroyed``, ``chaos.terminated`` or
``instance.lost`` for it is at or before T. "At the time of the deployment" means the events
before (in ledger order) the ``deployment.started`` that created the instance.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from immutrail import names
from immutrail.ledger.errors import EventFormatError
from immutrail.ledger.event import format_time, parse_time, time_us

from . import vocabulary as v
from .errors import AuditInputError
from .source import EventSource, Indexed, attachments, member

DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_REF = 1024


# --- the questions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AtQuery:
    environment: str
    at: str
    """RFC 3339 in the ledger's one spelling (UTC, ``Z``)."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": "at", "environment": self.environment, "at": self.at}

    def describe(self) -> str:
        return f"at {self.at} in {self.environment}"


@dataclass(frozen=True)
class TraceQuery:
    ref: str
    """An image digest or an instance id."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": "trace", "ref": self.ref}

    def describe(self) -> str:
        return f"trace of {self.ref}"


@dataclass(frozen=True)
class ChangesQuery:
    environment: str
    since: str
    until: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "changes",
            "environment": self.environment,
            "from": self.since,
            "to": self.until,
        }

    def describe(self) -> str:
        return f"changes in {self.environment} from {self.since} to {self.until}"


Query = AtQuery | TraceQuery | ChangesQuery


def check_environment(name: object, what: str = "") -> str:
    return names.check_environment(name, AuditInputError, what)


def normalize_moment(text: object, what: str) -> str:
    """An RFC 3339 time in the ledger's spelling (UTC, ``Z``, fractions only when non-zero)."""
    if not isinstance(text, str):
        raise AuditInputError(f"{what} must be an RFC 3339 time such as 2026-03-14T09:00:00Z")
    try:
        return format_time(parse_time(text, field=what))
    except EventFormatError as exc:
        raise AuditInputError(f"{what}: {exc}") from exc


def check_ref(ref: object) -> str:
    if not isinstance(ref, str) or not ref or len(ref) > MAX_REF or _CONTROL.search(ref):
        raise AuditInputError(
            "a trace needs an image digest (sha256:<64 hex digits>) or an instance id"
        )
    if ref.lower().startswith("sha256:") and not DIGEST.fullmatch(ref):
        raise AuditInputError(f"{ref!r} is not a digest of the form sha256:<64 lower-case hex>")
    return ref


def at_query(at: str, environment: str) -> AtQuery:
    return AtQuery(check_environment(environment), normalize_moment(at, "the time"))


def trace_query(ref: str) -> TraceQuery:
    return TraceQuery(check_ref(ref))


def changes_query(environment: str, since: str, until: str) -> ChangesQuery:
    query = ChangesQuery(
        check_environment(environment),
        normalize_moment(since, "--from"),
        normalize_moment(until, "--to"),
    )
    if time_us(query.since) > time_us(query.until):
        raise AuditInputError(f"--from {query.since} is after --to {query.until}")
    return query


def query_from_json(data: object) -> Query:
    """A query as a bundle states it; only the one spelling :meth:`to_json` writes is accepted."""
    if not isinstance(data, Mapping):
        raise AuditInputError("the query must be a JSON object")
    kind = data.get("kind")
    query: Query
    if kind == "at":
        query = at_query(_str(data, "at"), _str(data, "environment"))
    elif kind == "trace":
        query = trace_query(_str(data, "ref"))
    elif kind == "changes":
        query = changes_query(_str(data, "environment"), _str(data, "from"), _str(data, "to"))
    else:
        raise AuditInputError(f"unknown query kind {kind!r} (at, trace or changes)")
    if query.to_json() != dict(data):
        raise AuditInputError(
            "the query is not written in its one spelling "
            f"(expected {query.to_json()}, not {dict(data)})"
        )
    return query


def _str(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise AuditInputError(f"the query's {key!r} must be a string")
    return value


# --- answers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    query: Query
    data: dict[str, Any]
    """The answer as JSON; what an evidence bundle states and a verifier re-derives."""
    cited: frozenset[int]
    """The ledger indices of every event the answer rests on."""
    attested: frozenset[int]
    """The ``artifact.attached`` events whose attestation the answer relies on."""


@dataclass
class _Citations:
    events: dict[int, Indexed] = field(default_factory=dict)
    attested: set[int] = field(default_factory=set)

    def cite(self, item: Indexed) -> Indexed:
        self.events[item.index] = item
        return item

    def stamp(self, item: Indexed) -> dict[str, Any]:
        """Where and when, and who acted: what every cited fact carries."""
        self.cite(item)
        return {"index": item.index, "time": item.event.time, "actor": item.event.actor}

    def timeline(self) -> list[dict[str, Any]]:
        return [
            {
                "index": item.index,
                "time": item.event.time,
                "type": item.type,
                "actor": item.event.actor,
                "subject": item.event.subject,
            }
            for _, item in sorted(self.events.items())
        ]


def run_query(query: Query, source: EventSource) -> Answer:
    """Answer ``query`` from ``source``; AuditInputError when it names nothing in the ledger."""
    cites = _Citations()
    if isinstance(query, AtQuery):
        data = _at(query, source, cites)
    elif isinstance(query, TraceQuery):
        data = _trace(query, source, cites)
    else:
        data = _changes(query, source, cites)
    return Answer(query, data, frozenset(cites.events), frozenset(cites.attested))


# --- at -----------------------------------------------------------------------------------------


def _at(query: AtQuery, src: EventSource, cites: _Citations) -> dict[str, Any]:
    moment = time_us(query.at)
    instances = []
    seen: set[str] = set()
    for created in src.of_type(v.INSTANCE_CREATED, member("environment", query.environment)):
        instance = created.event.subject
        if (
            created.text("environment") != query.environment
            or created.us > moment
            or instance in seen
        ):
            continue
        seen.add(instance)
        ends = _ends(src, created)
        if any(end.us <= moment for end in ends):
            continue
        instances.append(_deployed_instance(src, created, ends, cites, drift_at=moment))
    return {
        "kind": "at",
        "environment": query.environment,
        "at": query.at,
        "as_of_size": src.size,
        "instances": instances,
    }


def _ends(src: EventSource, created: Indexed) -> list[Indexed]:
    return [
        e
        for e in src.about(created.event.subject)
        if e.type in v.INSTANCE_ENDS and e.index > created.index
    ]


def _deployed_instance(
    src: EventSource,
    created: Indexed,
    ends: Sequence[Indexed],
    cites: _Citations,
    *,
    drift_at: int | None,
) -> dict[str, Any]:
    """An instance with the deployment that made it and the image's evidence at that time."""
    environment = created.text("environment") or ""
    service = created.text("service") or ""
    digest = created.text("digest") or ""
    start = _deployment_start(src, created)
    before = start.index if start is not None else created.index
    decision = _decision(src, start, digest, environment, service, before, cites)
    row = _instance_facts(src, created, ends, cites, drift_at=drift_at)
    row["deployment"] = None if start is None else _deployment(src, start, cites)
    row["image"] = _image(src, digest, before, environment, cites)
    row["image"]["promotion"] = decision["promotion"]
    row["image"]["rollback"] = decision["rollback"]
    return row


def _instance_facts(
    src: EventSource,
    created: Indexed,
    ends: Sequence[Indexed],
    cites: _Citations,
    *,
    drift_at: int | None,
) -> dict[str, Any]:
    payload = created.payload
    return {
        "instance": created.event.subject,
        "environment": created.text("environment"),
        "service": created.text("service"),
        "digest": created.text("digest"),
        "runtime": created.text("runtime"),
        "port": payload.get("port"),
        "config_digest": created.text("config_digest"),
        "created": cites.stamp(created),
        "ended": [
            {**cites.stamp(end), "type": end.type, "reason": end.text("reason")} for end in ends
        ],
        "drift": _drift(src, created, cites, drift_at),
    }


def _drift(
    src: EventSource, created: Indexed, cites: _Citations, at: int | None
) -> list[dict[str, Any]]:
    """Drift findings on the instance: those open at ``at``, or (``at`` None) every report."""
    events = [
        e
        for e in src.about(created.event.subject)
        if e.type in (v.DRIFT_DETECTED, v.DRIFT_REMEDIATED) and e.index > created.index
    ]
    found = []
    for item in events:
        if at is not None:
            if item.type != v.DRIFT_DETECTED or item.us > at:
                continue
            closed = any(
                r.type == v.DRIFT_REMEDIATED and r.index > item.index and r.us <= at for r in events
            )
            if closed:
                continue
        findings = item.payload.get("findings")
        found.append(
            {
                **cites.stamp(item),
                "type": item.type,
                "findings": findings if isinstance(findings, list) else [],
                "replaced_by": item.payload.get("replaced_by"),
            }
        )
    return found


def _deployment_start(src: EventSource, created: Indexed) -> Indexed | None:
    deployment = created.text("deployment")
    if not deployment:
        return None
    where = f"{created.text('environment')}/{created.text('service')}"
    return next(
        (
            e
            for e in src.about(where)
            if e.type == v.DEPLOYMENT_STARTED
            and e.text("deployment") == deployment
            and e.index < created.index
        ),
        None,
    )


def _deployment(src: EventSource, start: Indexed, cites: _Citations) -> dict[str, Any]:
    deployment = start.text("deployment")
    where = f"{start.text('environment')}/{start.text('service')}"
    end = next(
        (
            e
            for e in src.about(where)
            if e.type in v.DEPLOYMENT_ENDS
            and e.text("deployment") == deployment
            and e.index > start.index
        ),
        None,
    )
    return {
        **cites.stamp(start),
        "deployment": deployment,
        "environment": start.text("environment"),
        "service": start.text("service"),
        "digest": start.text("digest"),
        "strategy": start.text("strategy"),
        "reason": start.text("reason"),
        "replicas": start.payload.get("replicas"),
        "end": None
        if end is None
        else {**cites.stamp(end), "type": end.type, "reason": end.text("reason")},
    }


def _decision(
    src: EventSource,
    start: Indexed | None,
    digest: str,
    environment: str,
    service: str,
    before: int,
    cites: _Citations,
) -> dict[str, Any]:
    """The promotion (and rollback) that made ``digest`` desired for the deployment."""
    made: Indexed | None = None
    pointer = start.payload.get("promotion_index") if start is not None else None
    if isinstance(pointer, int) and not isinstance(pointer, bool):
        candidate = src.at_index(pointer)
        if (
            candidate is not None
            and candidate.type in (v.PROMOTION, v.ROLLED_BACK)
            and candidate.event.subject == digest
            and candidate.index < before
        ):
            made = candidate
    rollback = made if made is not None and made.type == v.ROLLED_BACK else None
    promotion = made if made is not None and made.type == v.PROMOTION else None
    if promotion is None:
        limit = rollback.index if rollback is not None else before
        promotion = _last(
            e
            for e in src.about(digest)
            if e.type == v.PROMOTION
            and e.index < limit
            and e.payload.get("allowed") is True
            and e.text("environment") == environment
            and e.text("service") in (service, None)
        )
    return {
        "promotion": None if promotion is None else _promotion(promotion, cites),
        "rollback": None if rollback is None else _rollback(rollback, cites),
    }


def _promotion(item: Indexed, cites: _Citations) -> dict[str, Any]:
    checks = item.payload.get("checks")
    failed = [
        c["rule"]
        for c in (checks if isinstance(checks, list) else [])
        if isinstance(c, Mapping) and c.get("passed") is False and isinstance(c.get("rule"), str)
    ]
    policy = item.payload.get("policy")
    return {
        **cites.stamp(item),
        "digest": item.event.subject,
        "environment": item.text("environment"),
        "service": item.text("service"),
        "allowed": item.payload.get("allowed") is True,
        "override": item.payload.get("override") is True,
        "override_reason": item.text("override_reason"),
        "policy": policy.get("digest") if isinstance(policy, Mapping) else None,
        "failed_checks": failed,
        "signed": item.event.signature is not None,
    }


def _rollback(item: Indexed, cites: _Citations) -> dict[str, Any]:
    return {
        **cites.stamp(item),
        "environment": item.text("environment"),
        "service": item.text("service"),
        "from": item.text("from"),
        "to": item.event.subject,
        "reason": item.text("reason"),
        "automatic": item.payload.get("automatic") is True,
    }


# --- an image's evidence ------------------------------------------------------------------------


def _image(
    src: EventSource, digest: str, before: int, environment: str | None, cites: _Citations
) -> dict[str, Any]:
    """What the ledger knew about ``digest`` before index ``before``; approvals for
    ``environment`` only (all of them when None)."""
    about = [e for e in src.about(digest) if e.index < before]
    attached = attachments(about)

    def attestation(item: Indexed) -> dict[str, Any] | None:
        artifact = item.text("attestation")
        if artifact is None:
            return None
        found = attached.get(artifact)
        if found is None or found.index > item.index:
            return {"artifact": artifact, "attached_index": None}
        cites.cite(found)
        cites.attested.add(found.index)
        return {"artifact": artifact, "attached_index": found.index}

    def document(item: Indexed) -> dict[str, Any]:
        cites.cite(item)
        cites.attested.add(item.index)
        return {
            "artifact": item.text("artifact"),
            "attached_index": item.index,
            "time": item.event.time,
            "actor": item.event.actor,
        }

    built = next((e for e in about if e.type in (v.BUILT, v.IMPORTED)), None)
    scan = _last(e for e in about if e.type == v.SCANNED)
    baseline = _last(e for e in about if e.type == v.BASELINE)
    tests: dict[str, Indexed] = {}
    for item in about:
        if item.type == v.TESTED:
            tests[item.text("name") or ""] = item
    return {
        "digest": digest,
        "build": None if built is None else _build(built, cites),
        "sbom": [document(e) for e in attached.values() if e.text("artifact_type") == v.SBOM_TYPE],
        "provenance": [
            document(e)
            for e in attached.values()
            if e.text("artifact_type") == v.IN_TOTO_PAYLOAD_TYPE
            and src.artifact_kind(e.text("artifact") or "") == v.SLSA_PROVENANCE
        ],
        "scan": None
        if scan is None
        else {
            **cites.stamp(scan),
            "counts": scan.payload.get("counts"),
            "vulnerabilities": scan.payload.get("vulnerabilities"),
            "findings": scan.payload.get("findings"),
            "db": scan.text("db"),
            "attestation": attestation(scan),
        },
        "baseline": None
        if baseline is None
        else {
            **cites.stamp(baseline),
            "passed": baseline.payload.get("passed") is True,
            "failed": baseline.payload.get("failed"),
            "counts": baseline.payload.get("counts"),
            "attestation": attestation(baseline),
        },
        "tests": [
            {
                **cites.stamp(item),
                "name": item.text("name"),
                "result": item.text("result"),
                "exit_code": item.payload.get("exit_code"),
                "attestation": attestation(item),
            }
            for item in sorted(tests.values(), key=lambda e: e.index)
        ],
        "signatures": [
            {
                **cites.stamp(item),
                "signer": item.text("signer"),
                "keyid": item.text("keyid"),
                "attestation": attestation(item),
            }
            for item in about
            if item.type == v.SIGNED
        ],
        "approvals": [
            {
                **cites.stamp(item),
                "approver": item.text("approver"),
                "environment": item.text("environment"),
                "keyid": item.text("keyid"),
                "attestation": attestation(item),
            }
            for item in about
            if item.type == v.APPROVED
            and (environment is None or item.text("environment") == environment)
        ],
    }


def _build(item: Indexed, cites: _Citations) -> dict[str, Any]:
    source = item.payload.get("source")
    source = source if isinstance(source, Mapping) else {}
    builder = item.payload.get("builder")
    return {
        **cites.stamp(item),
        "type": item.type,
        "repository": item.text("repository"),
        "commit": item.text("commit"),
        "branch": source.get("branch") if isinstance(source.get("branch"), str) else None,
        "author": source.get("author") if isinstance(source.get("author"), str) else None,
        "dirty": item.payload.get("dirty") is True,
        "tag": item.text("tag"),
        "definition": item.text("definition"),
        "builder": builder if isinstance(builder, Mapping) else None,
    }


def _last(items: Iterable[Indexed]) -> Indexed | None:
    found = None
    for item in items:
        found = item
    return found


# --- trace --------------------------------------------------------------------------------------


def _trace(query: TraceQuery, src: EventSource, cites: _Citations) -> dict[str, Any]:
    if DIGEST.fullmatch(query.ref):
        body = _trace_digest(query.ref, src, cites)
    else:
        body = _trace_instance(query.ref, src, cites)
    return {
        "kind": "trace",
        "ref": query.ref,
        "as_of_size": src.size,
        **body,
        "timeline": cites.timeline(),
    }


def _trace_digest(digest: str, src: EventSource, cites: _Citations) -> dict[str, Any]:
    about = src.about(digest)
    if not about:
        raise AuditInputError(f"the ledger holds no event about {digest} (as of size {src.size})")
    for item in about:  # the whole chain: every event about the image is part of the trace
        cites.cite(item)
    mentions = member("digest", digest)
    starts = [e for e in src.of_type(v.DEPLOYMENT_STARTED, mentions) if e.text("digest") == digest]
    instances = []
    seen: set[str] = set()
    for created in src.of_type(v.INSTANCE_CREATED, mentions):
        if created.text("digest") != digest or created.event.subject in seen:
            continue
        seen.add(created.event.subject)
        instances.append(_traced_instance(src, created, cites))
    return {
        "digest": digest,
        "image": _image(src, digest, src.size, None, cites),
        "promotions": [_promotion(e, cites) for e in about if e.type == v.PROMOTION],
        "rollbacks": [
            _rollback(e, cites)
            for e in src.of_type(v.ROLLED_BACK, f'"{digest}"')
            if digest in (e.event.subject, e.text("from"))
        ],
        "deployments": [_deployment(src, start, cites) for start in starts],
        "instances": instances,
        "refusals": [
            {
                **cites.stamp(e),
                "type": e.type,
                "environment": e.text("environment"),
                "reason": e.text("reason"),
            }
            for e in sorted(
                [
                    *(e for e in about if e.type == v.ADMISSION_REFUSED),
                    *(
                        e
                        for e in src.of_type(v.DEPLOYMENT_REFUSED, mentions)
                        if e.text("digest") == digest
                    ),
                ],
                key=lambda e: e.index,
            )
        ],
    }


def _trace_instance(instance: str, src: EventSource, cites: _Citations) -> dict[str, Any]:
    created = next((e for e in src.about(instance) if e.type == v.INSTANCE_CREATED), None)
    if created is None:
        raise AuditInputError(
            f"the ledger holds no instance.created for {instance!r} (as of size {src.size})"
        )
    digest = created.text("digest") or ""
    start = _deployment_start(src, created)
    before = start.index if start is not None else created.index
    decision = _decision(
        src,
        start,
        digest,
        created.text("environment") or "",
        created.text("service") or "",
        before,
        cites,
    )
    image = _image(src, digest, before, created.text("environment"), cites)
    return {
        "digest": digest,
        "image": image,
        "promotions": [] if decision["promotion"] is None else [decision["promotion"]],
        "rollbacks": [] if decision["rollback"] is None else [decision["rollback"]],
        "deployments": [] if start is None else [_deployment(src, start, cites)],
        "instances": [_traced_instance(src, created, cites)],
        "refusals": [],
    }


def _traced_instance(src: EventSource, created: Indexed, cites: _Citations) -> dict[str, Any]:
    row = _instance_facts(src, created, _ends(src, created), cites, drift_at=None)
    row["logs"] = [
        {
            **cites.stamp(e),
            "artifact": e.text("artifact"),
            "stdout": e.payload.get("stdout"),
            "stderr": e.payload.get("stderr"),
        }
        for e in src.about(created.event.subject)
        if e.type == v.LOGS_KEPT
    ]
    row["traffic"] = _traffic(src, created, cites)
    return row


def _traffic(src: EventSource, created: Indexed, cites: _Citations) -> dict[str, Any]:
    """The switch that first sent the instance connections, and the next one that stopped."""
    instance = created.event.subject
    where = f"{created.text('environment')}/{created.text('service')}"
    switches = [
        e for e in src.about(where) if e.type == v.TRAFFIC_SWITCHED and e.index > created.index
    ]
    first = next((e for e in switches if instance in _backends(e)), None)
    last = (
        None
        if first is None
        else next(
            (e for e in switches if e.index > first.index and instance not in _backends(e)), None
        )
    )
    return {
        "in_service": None if first is None else cites.stamp(first),
        "out_of_service": None if last is None else cites.stamp(last),
    }


def _backends(item: Indexed) -> set[str]:
    backends = item.payload.get("backends")
    return {
        str(b["instance"])
        for b in (backends if isinstance(backends, list) else [])
        if isinstance(b, Mapping) and isinstance(b.get("instance"), str)
    }


# --- changes ------------------------------------------------------------------------------------

_DETAILS: dict[str, tuple[str, ...]] = {
    v.PROMOTION: ("service", "override_reason"),
    v.ROLLED_BACK: ("service", "from", "reason", "automatic", "deployment"),
    v.DECLARED: ("service", "config_digest"),
    v.DEPLOYMENT_STARTED: ("service", "deployment", "digest", "strategy", "reason", "replicas"),
    v.DEPLOYMENT_COMPLETED: ("service", "deployment", "digest"),
    v.DEPLOYMENT_FAILED: ("service", "deployment", "digest", "reason"),
    v.DEPLOYMENT_INTERRUPTED: ("service", "deployment", "digest", "reason"),
    v.DEPLOYMENT_REFUSED: ("service", "deployment", "digest", "reason"),
    v.ADMISSION_REFUSED: ("service", "reason"),
    v.INSTANCE_CREATED: ("service", "digest", "deployment", "runtime", "config_digest"),
    v.INSTANCE_DESTROYED: ("service", "digest", "deployment", "reason"),
    v.INSTANCE_LOST: ("service", "digest", "health"),
    v.CHAOS_TERMINATED: ("service", "digest", "runtime"),
    v.TRAFFIC_SWITCHED: ("service", "deployment"),
    v.CANARY_STEP: ("service", "deployment"),
    v.DRIFT_DETECTED: ("service", "digest"),
    v.DRIFT_REMEDIATED: ("service", "replaced_by"),
    v.POLICY_CHANGED: ("digest", "format"),
    v.EXCEPTION_GRANTED: ("digest", "expires", "reason"),
    v.APPROVED: ("approver", "keyid"),
    v.LOGS_KEPT: ("service", "image", "artifact"),
}


def _category(item: Indexed) -> str:
    kind = item.type
    if kind == v.PROMOTION:
        if item.payload.get("override") is True:
            return "override"
        return "promotion" if item.payload.get("allowed") is True else "promotion-refused"
    simple: dict[str, str] = {
        v.ROLLED_BACK: "rollback",
        v.DECLARED: "declaration",
        v.DEPLOYMENT_STARTED: "deployment",
        v.DEPLOYMENT_COMPLETED: "deployment",
        v.DEPLOYMENT_FAILED: "deployment-failed",
        v.DEPLOYMENT_INTERRUPTED: "deployment-failed",
        v.DEPLOYMENT_REFUSED: "refused",
        v.ADMISSION_REFUSED: "refused",
        v.INSTANCE_CREATED: "instance",
        v.INSTANCE_DESTROYED: "instance",
        v.INSTANCE_LOST: "incident",
        v.CHAOS_TERMINATED: "incident",
        v.TRAFFIC_SWITCHED: "traffic",
        v.CANARY_STEP: "traffic",
        v.DRIFT_DETECTED: "drift",
        v.DRIFT_REMEDIATED: "drift",
        v.POLICY_CHANGED: "policy",
        v.EXCEPTION_GRANTED: "exception",
        v.APPROVED: "approval",
        v.LOGS_KEPT: "evidence",
    }
    return simple.get(kind, "other")


def _details(item: Indexed) -> dict[str, Any]:
    payload = item.payload
    details = {k: payload[k] for k in _DETAILS.get(item.type, ()) if k in payload}
    if item.type == v.PROMOTION:
        policy = payload.get("policy")
        details["policy"] = policy.get("digest") if isinstance(policy, Mapping) else None
        details["failed_checks"] = _promotion(item, _Citations())["failed_checks"]
    elif item.type in (v.TRAFFIC_SWITCHED, v.CANARY_STEP):
        details["backends"] = sorted(_backends(item))
    elif item.type == v.DRIFT_DETECTED:
        findings = payload.get("findings")
        details["findings"] = findings if isinstance(findings, list) else []
    elif item.type == v.DECLARED:
        spec = payload.get("spec")
        if isinstance(spec, Mapping):
            details.update({k: spec[k] for k in ("replicas", "strategy", "runtime") if k in spec})
    return details


def environment_of(item: Indexed) -> str | None:
    environment = item.text("environment")
    if environment is None and item.event.subject.startswith("env:"):
        return item.event.subject.removeprefix("env:")
    return environment


def _changes(query: ChangesQuery, src: EventSource, cites: _Citations) -> dict[str, Any]:
    rows = []
    counts: dict[str, int] = {}
    for item in src.window(time_us(query.since), time_us(query.until)):
        if environment_of(item) != query.environment:
            continue
        category = _category(item)
        counts[category] = counts.get(category, 0) + 1
        rows.append(
            {
                **cites.stamp(item),
                "type": item.type,
                "subject": item.event.subject,
                "category": category,
                "signed": item.event.signature is not None,
                "details": _details(item),
            }
        )
    return {
        "kind": "changes",
        "environment": query.environment,
        "from": query.since,
        "to": query.until,
        "as_of_size": src.size,
        "counts": dict(sorted(counts.items())),
        "changes": rows,
    }


# --- helpers for the verifier -------------------------------------------------------------------


def cited_in(answer: object) -> dict[int, str]:
    """Every ledger index an answer cites (integer members named ``index`` or ending in
    ``_index``), with the JSON path of one place that cites it."""
    found: dict[int, str] = {}

    def walk(value: object, path: str) -> None:
        if isinstance(value, Mapping):
            for name, item in value.items():
                here = f"{path}.{name}"
                cites = name == "index" or name.endswith("_index")
                if cites and isinstance(item, int) and not isinstance(item, bool):
                    found.setdefault(item, here)
                else:
                    walk(item, here)
        elif isinstance(value, list):
            for number, item in enumerate(value):
                walk(item, f"{path}[{number}]")

    walk(answer, "answer")
    return found
