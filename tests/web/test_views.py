"""The UI's pure parts: form times, paging, redirects after login, file names, the chain layout."""

from __future__ import annotations

from typing import Any

import pytest

from immutrail.audit.errors import AuditInputError
from immutrail.audit.queries import at_query, changes_query, trace_query
from immutrail.web.chain import NODE_H, NODE_W, build_chain
from immutrail.web.paths import HOME
from immutrail.web.session import safe_next
from immutrail.web.views import bundle_filename, paginate, parse_moment, picker_value

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-03-14T09:00", "2026-03-14T09:00:00Z"),
        ("2026-03-14T09:00:05", "2026-03-14T09:00:05Z"),
        ("2026-03-14T09:00:05.250", "2026-03-14T09:00:05.250000Z"),
        ("2026-03-14T10:00:00+01:00", "2026-03-14T09:00:00Z"),
        (" 2026-03-14T09:00:00Z ", "2026-03-14T09:00:00Z"),
    ],
)
def test_form_times_are_read_as_utc(given: str, expected: str) -> None:
    assert parse_moment(given, "t") == expected


@pytest.mark.parametrize("given", ["", "yesterday", "2026-13-01T00:00", "2026-03-14 09:00"])
def test_malformed_form_times_are_refused(given: str) -> None:
    with pytest.raises(AuditInputError):
        parse_moment(given, "t")


def test_picker_values_keep_milliseconds() -> None:
    assert picker_value("2026-03-14T09:00:05.123456Z") == "2026-03-14T09:00:05.123"
    assert picker_value("2026-03-14T09:00:05Z") == "2026-03-14T09:00:05"
    assert parse_moment(picker_value("2026-03-14T09:00:05.123Z"), "t") == (
        "2026-03-14T09:00:05.123000Z"
    )


def test_paging_clamps_the_page_and_refuses_bad_numbers() -> None:
    rows = list(range(120))
    last = paginate(rows, "99", None)
    assert (last.page, last.pages, list(last.rows), last.first) == (3, 3, rows[100:], 101)
    assert list(paginate(rows, "2", "10").rows) == rows[10:20]
    assert paginate([], None, None).first == 0
    for page, per in (("0", None), ("x", None), (None, "501"), (None, "-1")):
        with pytest.raises(AuditInputError):
            paginate(rows, page, per)


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/ui/",
        "//evil.example/ui/",
        "/api/v1/whoami",
        "/ui\\evil",
        "javascript:alert(1)",
        "/ui/\nx",
        "",
    ],
)
def test_after_login_only_pages_of_the_ui(target: str) -> None:
    assert safe_next(target) == HOME


def test_after_login_back_to_the_page_asked_for() -> None:
    assert safe_next("/ui/env/prod/at?t=2026-03-14T09:00") == "/ui/env/prod/at?t=2026-03-14T09:00"


def test_bundle_file_names_say_what_they_prove_in_safe_characters() -> None:
    names = [
        bundle_filename(at_query("2026-03-14T09:00:00Z", "prod")),
        bundle_filename(trace_query(DIGEST)),
        bundle_filename(trace_query('local-"; rm -rf /')),
        bundle_filename(changes_query("prod", "2026-03-01T00:00:00Z", "2026-03-31T00:00:00Z")),
    ]
    assert names[0] == "evidence-at-prod-2026-03-14T090000Z.json"
    assert names[1] == "evidence-trace-" + "ab" * 8 + ".json"
    assert all(
        set(n) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
        for n in names
    )


def _fact(index: int, **more: Any) -> dict[str, Any]:
    return {"index": index, "time": f"2026-03-14T09:00:{index:02d}Z", "actor": "a", **more}


def test_the_chain_marks_missing_evidence_and_follows_each_instance_to_its_end() -> None:
    answer = {
        "kind": "trace",
        "ref": DIGEST,
        "digest": DIGEST,
        "image": {
            "build": _fact(1, type="artifact.built", repository="r", commit="c" * 40, dirty=True),
            "provenance": [],
            "sbom": [],
            "scan": _fact(2, counts={"critical": 1, "high": 0}, vulnerabilities=1),
            "baseline": None,
            "tests": [],
            "signatures": [],
            "approvals": [_fact(3, approver="x", environment="prod")],
        },
        "promotions": [_fact(4, environment="prod", allowed=False, override=True)],
        "rollbacks": [],
        "deployments": [
            _fact(5, deployment="d", environment="prod", service="s", strategy="rolling", end=None)
        ],
        "instances": [
            {
                "instance": f"i{n}",
                "environment": "prod",
                "service": "s",
                "created": _fact(6 + n),
                "drift": [_fact(10, type="drift.detected", findings=[{"kind": "k"}])] * (n == 0),
                "ended": [_fact(11 + n, type="instance.destroyed")],
            }
            for n in range(2)
        ],
    }
    chain = build_chain(answer)
    by_stage: dict[str, list[Any]] = {}
    for node in chain.nodes:
        by_stage.setdefault(node.stage, []).append(node)
    missing = {n.stage for n in chain.nodes if n.state == "missing"}
    assert missing == {"provenance", "sbom", "baseline", "test", "signature"}
    assert by_stage["commit"][0].state == "warn"  # uncommitted changes
    assert by_stage["scan"][0].state == "warn"  # a critical vulnerability
    assert by_stage["promotion"][0].state == "warn"  # an override
    edges = {(e.source.id, e.target.id) for e in chain.edges}
    assert ("promotion-0", "deployment-0") in edges
    assert {("deployment-0", "instance-0"), ("deployment-0", "instance-1")} <= edges
    assert {("instance-0", "drift-0-0"), ("drift-0-0", "destruction-0-0")} <= edges
    assert ("instance-1", "destruction-1-0") in edges
    boxes = [(n.x, n.y) for n in chain.nodes]
    for k, (x, y) in enumerate(boxes):
        assert x >= 0 and x + NODE_W <= chain.width and y + NODE_H <= chain.height
        for x2, y2 in boxes[k + 1 :]:
            assert abs(x - x2) >= NODE_W or abs(y - y2) >= NODE_H, "nodes overlap"
