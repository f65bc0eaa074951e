"""The evidence chain of a trace answer as a picture: nodes in rows, edges, positions.

The picture is laid out here, in Python, from the JSON answer of a trace query, and drawn as
inline SVG by a template (so every string in it goes through the template's autoescaping). Rows
run from the commit down to destruction; a missing piece of the image's evidence (no SBOM, no
approval) is drawn as a dashed node, so a gap in the chain is visible rather than silently absent.
Every node that rests on an event links to that ledger entry.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NODE_W = 176
NODE_H = 58
GAP_X = 18
ROW_H = 92
MARGIN = 16
LABEL_CHARS = 24
MAX_INSTANCES = 40
"""Instances drawn for one image; the rest are listed in the trace's tables below the picture."""

# The rows, top to bottom; the first ten are the image's own evidence (the "spine").
STAGES: tuple[tuple[str, str], ...] = (
    ("commit", "Commit"),
    ("build", "Build"),
    ("provenance", "Provenance"),
    ("sbom", "SBOM"),
    ("scan", "Scan"),
    ("baseline", "Baseline"),
    ("test", "Test"),
    ("signature", "Signature"),
    ("approval", "Approval"),
    ("promotion", "Promotion"),
    ("deployment", "Deployment"),
    ("instance", "Instance"),
    ("drift", "Drift"),
    ("destruction", "Destruction"),
)
SPINE = tuple(stage for stage, _ in STAGES[:10])
TITLES = dict(STAGES)


@dataclass
class Node:
    id: str
    stage: str
    label: str
    detail: str
    index: int | None
    """The ledger entry the node rests on (None: a missing piece)."""
    state: str = "ok"
    """ok, warn (an override, a dirty tree, findings), bad (refused, failed, drift), missing."""
    tooltip: str = ""
    x: int = 0
    y: int = 0

    @property
    def title(self) -> str:
        return TITLES[self.stage]

    @property
    def short_label(self) -> str:
        return _clip(self.label)

    @property
    def short_detail(self) -> str:
        return _clip(self.detail)

    @property
    def cx(self) -> int:
        return self.x + NODE_W // 2


@dataclass(frozen=True)
class Edge:
    source: Node
    target: Node

    @property
    def path(self) -> str:
        """A vertical S-curve from the bottom of the source to the top of the target."""
        x1, y1 = self.source.cx, self.source.y + NODE_H
        x2, y2 = self.target.cx, self.target.y
        middle = (y1 + y2) // 2
        return f"M{x1},{y1} C{x1},{middle} {x2},{middle} {x2},{y2}"


@dataclass
class Chain:
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    width: int = 0
    height: int = 0
    omitted: int = 0
    """Instances left out of the picture (beyond MAX_INSTANCES)."""

    node_w: int = NODE_W
    node_h: int = NODE_H


def _clip(text: str) -> str:
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def short(digest: object, width: int = 12) -> str:
    """The start of a digest's hex (or the start of any other id), for labels."""
    if not isinstance(digest, str):
        return "-"
    return digest.removeprefix("sha256:")[:width]


def _when(fact: Mapping[str, Any]) -> str:
    return f"{fact.get('time', '')} by {fact.get('actor', '')}"


def _clock(fact: Mapping[str, Any]) -> str:
    """A fact's time to the second, for a label (the tooltip and the entry have it all)."""
    return str(fact.get("time") or "")[:19].replace("T", " ")


def _missing(stage: str, what: str) -> Node:
    return Node(f"{stage}-missing", stage, what, "not in the ledger", None, "missing", what)


def _index(fact: Mapping[str, Any], key: str = "index") -> int | None:
    value = fact.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _image_rows(image: Mapping[str, Any]) -> dict[str, list[Node]]:
    rows: dict[str, list[Node]] = {stage: [] for stage in SPINE[:-1]}
    build = image.get("build")
    if isinstance(build, Mapping):
        branch = f" ({build['branch']})" if build.get("branch") else ""
        commit = str(build.get("commit") or "")
        rows["commit"].append(
            Node(
                "commit",
                "commit",
                f"{short(commit, 12)}{branch}",
                str(build.get("repository") or "unknown repository"),
                _index(build),
                "warn" if build.get("dirty") else "ok",
                f"{build.get('repository')}@{commit}{branch}"
                + (" (uncommitted changes)" if build.get("dirty") else ""),
            )
        )
        versions = build.get("builder") or {}
        builder = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
        rows["build"].append(
            Node(
                "build",
                "build",
                f"by {build.get('actor')}",
                _clock(build),
                _index(build),
                tooltip=f"{build.get('type')} {build.get('tag') or ''} by {build.get('actor')}"
                + (f" ({builder})" if builder else ""),
            )
        )
    else:
        rows["commit"].append(_missing("commit", "no build record"))
        rows["build"].append(_missing("build", "no build record"))
    for stage, key in (("provenance", "provenance"), ("sbom", "sbom")):
        for number, doc in enumerate(image.get(key) or []):
            rows[stage].append(
                Node(
                    f"{stage}-{number}",
                    stage,
                    short(doc.get("artifact")),
                    _clock(doc),
                    _index(doc, "attached_index"),
                    tooltip=f"{TITLES[stage]} {doc.get('artifact')} attached {_when(doc)}",
                )
            )
    scan = image.get("scan")
    if isinstance(scan, Mapping):
        counts = scan.get("counts")
        counts = counts if isinstance(counts, Mapping) else {}
        severe = {k: counts.get(k, 0) for k in ("critical", "high")}
        found = scan.get("vulnerabilities") or 0
        rows["scan"].append(
            Node(
                "scan",
                "scan",
                f"{found} vulnerabilities" if found else "no findings",
                f"critical {severe['critical']} · high {severe['high']}",
                _index(scan),
                "warn" if any(severe.values()) else "ok",
                f"scanned {_when(scan)}; database {scan.get('db')}",
            )
        )
    baseline = image.get("baseline")
    if isinstance(baseline, Mapping):
        failed = ", ".join(str(rule) for rule in baseline.get("failed") or [])
        rows["baseline"].append(
            Node(
                "baseline",
                "baseline",
                "passed" if baseline.get("passed") else "FAILED",
                f"failed: {failed}" if failed else "no rule failed",
                _index(baseline),
                "ok" if baseline.get("passed") else "bad",
                f"baseline checked {_when(baseline)}",
            )
        )
    for number, test in enumerate(image.get("tests") or []):
        passed = str(test.get("result") or "").upper() == "PASSED"
        rows["test"].append(
            Node(
                f"test-{number}",
                "test",
                f"{test.get('name')} {test.get('result')}",
                _clock(test),
                _index(test),
                "ok" if passed else "bad",
                f"test {test.get('name')}: {test.get('result')} {_when(test)}",
            )
        )
    for number, signature in enumerate(image.get("signatures") or []):
        rows["signature"].append(
            Node(
                f"signature-{number}",
                "signature",
                f"by {signature.get('signer')}",
                _clock(signature),
                _index(signature),
                tooltip=f"signed by {signature.get('signer')} with key {signature.get('keyid')}",
            )
        )
    for number, approval in enumerate(image.get("approvals") or []):
        rows["approval"].append(
            Node(
                f"approval-{number}",
                "approval",
                f"{approval.get('approver')} for {approval.get('environment')}",
                _clock(approval),
                _index(approval),
                tooltip=f"approved by {approval.get('approver')} for "
                f"{approval.get('environment')} {_when(approval)}",
            )
        )
    for stage in rows:
        if not rows[stage]:
            rows[stage].append(_missing(stage, f"no {TITLES[stage].lower()}"))
    return rows


def _promotion_node(number: int, promotion: Mapping[str, Any]) -> Node:
    if promotion.get("override"):
        verdict, state = "override", "warn"
    elif promotion.get("allowed"):
        verdict, state = "allowed", "ok"
    else:
        verdict, state = "REFUSED", "bad"
    failed = ", ".join(str(c) for c in promotion.get("failed_checks") or [])
    reason = promotion.get("override_reason")
    return Node(
        f"promotion-{number}",
        "promotion",
        f"{promotion.get('environment')}: {verdict}",
        _clock(promotion),
        _index(promotion),
        state,
        f"promotion to {promotion.get('environment')} {verdict} {_when(promotion)}"
        + (f"; reason: {reason}" if reason else "")
        + (f"; failed checks: {failed}" if failed else ""),
    )


def _rollback_node(number: int, rollback: Mapping[str, Any]) -> Node:
    return Node(
        f"rollback-{number}",
        "promotion",
        f"{rollback.get('environment')}: rollback",
        _clock(rollback),
        _index(rollback),
        "warn",
        f"rolled back from {rollback.get('from')} to {rollback.get('to')}: "
        f"{rollback.get('reason')} {_when(rollback)}",
    )


def _deployment_node(number: int, deployment: Mapping[str, Any]) -> Node:
    end = deployment.get("end") if isinstance(deployment.get("end"), Mapping) else None
    outcome = "running" if end is None else str(end.get("type", "")).removeprefix("deployment.")
    return Node(
        f"deployment-{number}",
        "deployment",
        f"{deployment.get('strategy')} {outcome}",
        f"by {deployment.get('actor')}",
        _index(deployment),
        "ok" if outcome in ("completed", "running") else "bad",
        f"deployment {deployment.get('deployment')} to {deployment.get('environment')}/"
        f"{deployment.get('service')} ({deployment.get('reason')}) {_when(deployment)}; "
        f"{outcome}",
    )


def _owner(items: Sequence[tuple[Mapping[str, Any], Node]], row: Mapping[str, Any]) -> Node | None:
    """The deployment that created an instance: the last one of its service started before it."""
    created = _index(row.get("created") or {}) or 0
    found = None
    for deployment, node in items:
        same = (deployment.get("environment"), deployment.get("service")) == (
            row.get("environment"),
            row.get("service"),
        )
        if same and (_index(deployment) or 0) < created:
            found = node
    return found


def _latest_decision(
    promotions: Sequence[tuple[Mapping[str, Any], Node]], deployment: Mapping[str, Any]
) -> list[Node]:
    """The decision a deployment ran on: the last allowing one for its environment before it."""
    before = _index(deployment) or 0
    usable = [
        node
        for fact, node in promotions
        if fact.get("environment") == deployment.get("environment")
        and (_index(fact) or 0) < before
        and (fact.get("allowed") or fact.get("override") or "from" in fact)
    ]
    return usable[-1:]


def build_chain(answer: Mapping[str, Any]) -> Chain:
    """The picture of a trace answer (of an image digest or of one instance)."""
    rows = _image_rows(answer.get("image") or {})
    decisions: list[tuple[Mapping[str, Any], Node]] = [
        (p, _promotion_node(n, p)) for n, p in enumerate(answer.get("promotions") or [])
    ]
    decisions += [(r, _rollback_node(n, r)) for n, r in enumerate(answer.get("rollbacks") or [])]
    decisions.sort(key=lambda pair: _index(pair[0]) or 0)
    rows["promotion"] = [node for _, node in decisions] or [_missing("promotion", "no promotion")]
    deployments = [
        (d, _deployment_node(n, d)) for n, d in enumerate(answer.get("deployments") or [])
    ]
    instances = list(answer.get("instances") or [])
    chain = Chain(omitted=max(0, len(instances) - MAX_INSTANCES))
    spine_nodes = [rows[stage] for stage in SPINE]
    for upper, lower in itertools.pairwise(spine_nodes):
        chain.edges.extend(Edge(a, b) for a in upper for b in lower)
    last_spine = spine_nodes[-1]
    for deployment, node in deployments:
        sources = _latest_decision(decisions, deployment) or last_spine
        chain.edges.extend(Edge(source, node) for source in sources)

    # Below the spine: one column block per instance, wide enough for its drift reports.
    columns: list[tuple[Node, list[Node], list[Node], Node | None]] = []
    for number, row in enumerate(instances[:MAX_INSTANCES]):
        node = _instance_node(number, row)
        drift = [_drift_node(number, k, d) for k, d in enumerate(row.get("drift") or [])]
        ends = [_end_node(number, k, e) for k, e in enumerate(row.get("ended") or [])]
        owner = _owner(deployments, row)
        columns.append((node, drift, ends, owner))
        previous = [node]
        for item in drift:
            chain.edges.append(Edge(node, item))
        if drift:
            previous = drift[-1:]
        for end in ends:
            chain.edges.extend(Edge(p, end) for p in previous)
        if owner is not None:
            chain.edges.append(Edge(owner, node))
        elif not deployments:
            chain.edges.extend(Edge(source, node) for source in last_spine)
    _layout(chain, rows, [n for _, n in deployments], columns)
    return chain


def _instance_node(number: int, row: Mapping[str, Any]) -> Node:
    created = row.get("created") or {}
    return Node(
        f"instance-{number}",
        "instance",
        str(row.get("instance")),
        f"{row.get('environment')}/{row.get('service')}",
        _index(created),
        tooltip=f"instance {row.get('instance')} of {row.get('environment')}/"
        f"{row.get('service')} on {row.get('runtime')}, created {_when(created)}",
    )


def _drift_node(number: int, k: int, report: Mapping[str, Any]) -> Node:
    findings = [f for f in report.get("findings") or [] if isinstance(f, Mapping)]
    if report.get("type") == "drift.remediated":
        label = f"remediated → {short(report.get('replaced_by'), 16)}"
        state = "ok"
    else:
        kinds = sorted({str(f.get("kind")) for f in findings})
        label = ", ".join(kinds) or "drift detected"
        state = "bad"
    described = "; ".join(
        f"{f.get('kind')} {f.get('path') or ''} ({f.get('severity')}, {f.get('control')})"
        for f in findings
    )
    return Node(
        f"drift-{number}-{k}",
        "drift",
        label,
        _clock(report),
        _index(report),
        state,
        f"{report.get('type')} {_when(report)}" + (f": {described}" if described else ""),
    )


def _end_node(number: int, k: int, end: Mapping[str, Any]) -> Node:
    kind = str(end.get("type") or "")
    return Node(
        f"destruction-{number}-{k}",
        "destruction",
        kind.split(".")[-1],
        _clock(end),
        _index(end),
        "ok" if kind == "instance.destroyed" else "warn",
        f"{kind} {_when(end)}" + (f": {end.get('reason')}" if end.get("reason") else ""),
    )


def _layout(
    chain: Chain,
    rows: Mapping[str, list[Node]],
    deployments: list[Node],
    columns: list[tuple[Node, list[Node], list[Node], Node | None]],
) -> None:
    pitch = NODE_W + GAP_X
    # Instance blocks first: their total width decides where deployments sit.
    spans: list[tuple[int, int]] = []  # (first column, columns) per instance
    cursor = 0
    for _, drift, ends, _ in columns:
        width = max(1, len(drift), len(ends))
        spans.append((cursor, width))
        cursor += width
    lower_width = cursor
    widest = max([len(nodes) for nodes in rows.values()] + [lower_width, len(deployments), 1])
    chain.width = 2 * MARGIN + widest * pitch - GAP_X

    def centred(nodes: list[Node], y: int) -> None:
        start = MARGIN + (widest - len(nodes)) * pitch // 2
        for k, node in enumerate(nodes):
            node.x, node.y = start + k * pitch, y
            chain.nodes.append(node)

    y = MARGIN
    for stage in SPINE:
        centred(rows[stage], y)
        y += ROW_H
    if deployments:
        centred(deployments, y)
        y += ROW_H
    if columns:
        offset = MARGIN + (widest - lower_width) * pitch // 2
        has_drift = any(drift for _, drift, _, _ in columns)
        has_end = any(ends for _, _, ends, _ in columns)
        for (node, drift, ends, _), (first, width) in zip(columns, spans, strict=True):
            left = offset + first * pitch

            def place(items: list[Node], at: int, left: int = left, width: int = width) -> None:
                inner = left + (width - len(items)) * pitch // 2
                for k, item in enumerate(items):
                    item.x, item.y = inner + k * pitch, at
                    chain.nodes.append(item)

            place([node], y)
            place(drift, y + ROW_H)
            place(ends, y + (2 if has_drift else 1) * ROW_H)
        y += ROW_H * (1 + has_drift + has_end)
    chain.height = y - ROW_H + NODE_H + MARGIN
