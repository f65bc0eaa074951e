"""OSV record validation on real and corrupted records; CVSS scores against published ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from immutrail.scan.errors import OsvRecordError
from immutrail.scan.osv import parse_record
from immutrail.scan.severity import (
    CvssError,
    check_cvss4,
    cvss2_base_score,
    cvss3_base_score,
    severity_of,
)

from .conftest import EXTRA, OSV

REAL = sorted([*OSV.rglob("*.json"), *EXTRA.glob("*.json")])


def load(name: str) -> dict[str, Any]:
    path = next(p for p in REAL if p.name == name)
    value: dict[str, Any] = json.loads(path.read_text())
    return value


def corrupt(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode()


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name)
def test_every_real_record_parses(path: Path) -> None:
    record = parse_record(path.read_bytes(), str(path))
    assert record.id == path.stem
    assert record.digest.startswith("sha256:") and record.affected


def test_canonical_bytes_ignore_key_order_and_spacing() -> None:
    original = load("PYSEC-2018-28.json")
    shuffled = dict(reversed(list(original.items())))
    a = parse_record(json.dumps(original, indent=2).encode(), "a")
    b = parse_record(json.dumps(shuffled).encode(), "b")
    assert a.canonical == b.canonical and a.digest == b.digest


def test_pypi_names_are_indexed_pep503_normalized() -> None:
    record = load("PYSEC-2019-217.json")
    record["affected"][0]["package"]["name"] = "Jinja2"
    assert parse_record(corrupt(record), "x").affected[0].index_name == "jinja2"


def _mutations() -> list[tuple[str, Any, str]]:
    def m(fn: Any) -> Any:
        record = load("GHSA-xvch-5gv4-984h.json")
        fn(record)
        return record

    def events(record: dict[str, Any]) -> list[dict[str, str]]:
        events_: list[dict[str, str]] = record["affected"][0]["ranges"][0]["events"]
        return events_

    return [
        ("no id", m(lambda r: r.pop("id")), "id"),
        ("bad id", m(lambda r: r.update(id="../etc/passwd")), "id"),
        ("bad time", m(lambda r: r.update(modified="2022-03-18")), "modified"),
        ("two keys", m(lambda r: events(r)[0].update(fixed="1.2.6")), "events[0]"),
        ("no introduced", m(lambda r: events(r).pop(0)), "events"),
        ("fixed and last", m(lambda r: events(r).append({"last_affected": "1.3"})), "events"),
        ("range type", m(lambda r: r["affected"][0]["ranges"][0].update(type="RANGE")), "type"),
        ("git repo", m(lambda r: r["affected"][0]["ranges"][0].update(type="GIT")), "repo"),
        ("versions", m(lambda r: r["affected"][0].update(versions="1.0")), "versions"),
        ("unknown field", m(lambda r: r.update(colour="red")), "colour"),
        ("bad cvss", m(lambda r: r["severity"][0].update(score="CVSS:3.1/AV:X")), "score"),
        ("bad type", m(lambda r: r["severity"][0].update(type="CVSS_V9")), "type"),
        ("schema 2", m(lambda r: r.update(schema_version="2.0.0")), "schema_version"),
        ("not object", ["a"], ""),
    ]


@pytest.mark.parametrize(("label", "record", "path"), _mutations(), ids=lambda v: str(v)[:20])
def test_corrupt_records_name_the_field(label: str, record: Any, path: str) -> None:
    with pytest.raises(OsvRecordError) as caught:
        parse_record(corrupt(record), "feed/x.json")
    assert caught.value.source == "feed/x.json"
    assert path in caught.value.path, caught.value


def test_duplicate_keys_and_bad_json_are_refused() -> None:
    with pytest.raises(OsvRecordError, match="duplicate key 'id'"):
        parse_record(b'{"id": "A-1", "id": "A-2", "modified": "2024-01-01T00:00:00Z"}', "d")
    with pytest.raises(OsvRecordError, match="not valid JSON"):
        parse_record(b'{"id": "A-1",', "t")
    with pytest.raises(OsvRecordError, match="not valid JSON"):
        parse_record(b'{"id": "A-1", "x": NaN}', "n")


def test_newer_minor_schema_may_add_fields() -> None:
    record = load("GO-2024-2491.json")
    record["schema_version"] = "1.9.0"
    record["future_field"] = {"x": 1}
    assert parse_record(corrupt(record), "x").id == "GO-2024-2491"


# -- severity ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vector", "score"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),  # Log4Shell (NVD)
        ("CVSS:3.0/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H", 10.0),  # S2-045
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", 9.8),
        ("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:N", 8.1),  # CVE-2023-43804
        ("CVSS:3.1/AV:A/AC:H/PR:H/UI:N/S:U/C:H/I:N/A:N", 4.2),  # CVE-2023-45803
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:L/I:N/A:N", 5.3),  # Trivy's nvd V3Score
        ("CVSS:3.0/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:L/A:N", 4.8),  # Trivy's redhat V3Score
        ("CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:C/C:H/I:H/A:H", 8.8),
        ("CVSS:3.1/AV:P/AC:H/PR:H/UI:R/S:U/C:N/I:N/A:N", 0.0),
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H/E:P/RL:O", 9.8),  # temporal ignored
    ],
)
def test_cvss3_base_scores(vector: str, score: float) -> None:
    assert cvss3_base_score(vector) == score


def test_cvss2_base_scores() -> None:
    assert cvss2_base_score("AV:N/AC:L/Au:N/C:P/I:N/A:N") == 5.0
    assert cvss2_base_score("AV:N/AC:L/Au:N/C:C/I:C/A:C") == 10.0


@pytest.mark.parametrize(
    "vector",
    [
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H",  # A missing
        "CVSS:3.1/AV:N/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",  # twice
        "CVSS:3.2/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
        "CVSS:3.1/AV:Q/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
    ],
)
def test_malformed_cvss3_vectors(vector: str) -> None:
    with pytest.raises(CvssError):
        cvss3_base_score(vector)


def test_cvss4_uses_the_ghsa_label_else_unknown() -> None:
    vector = "CVSS:4.0/AV:N/AC:L/AT:N/PR:H/UI:N/VC:L/VI:L/VA:N/SC:N/SI:N/SA:N"
    check_cvss4(vector)
    labelled = severity_of([{"type": "CVSS_V4", "score": vector}], {"severity": "MODERATE"})
    assert (labelled.level, labelled.score, labelled.method) == ("medium", None, "CVSS_V4")
    assert severity_of([{"type": "CVSS_V4", "score": vector}]).level == "unknown"
    with pytest.raises(CvssError):
        check_cvss4("CVSS:4.0/AV:N/AC:L")


def test_severity_prefers_a_computed_v3_score_and_falls_back_to_labels() -> None:
    both = [
        {
            "type": "CVSS_V4",
            "score": "CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N",
        },
        {"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"},
    ]
    assert severity_of(both).score == 7.5
    assert severity_of([], {"severity": "CRITICAL"}).level == "critical"  # ua-parser-js
    assert severity_of([]).level == "unknown"
