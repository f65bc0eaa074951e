"""Matching SBOM components against the real OSV records: ranges, versions lists, ecosystems,
withdrawn records, aliases, and what cannot be decided."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from immutrail.scan.matcher import Matcher, components_from_sbom
from immutrail.scan.results import ScanOutcome
from immutrail.scan.vulndb import VulnDb

from .conftest import OSV, import_into


def sbom(*purls: str, properties: dict[str, list[dict[str, str]]] | None = None) -> dict[str, Any]:
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "components": [
            {"type": "library", "name": p, "purl": p, "properties": (properties or {}).get(p, [])}
            for p in purls
        ],
    }


def scan(home: Path, document: dict[str, Any]) -> ScanOutcome:
    components, skipped = components_from_sbom(document)
    with VulnDb.open(home) as db, db.reading():
        return Matcher(db).scan(components, skipped)


def found(outcome: ScanOutcome) -> dict[str, set[str]]:
    return {r.id: {h.purl for h in r.hits} for r in outcome.results}


@pytest.mark.parametrize(
    ("purl", "expected"),
    [
        # Log4Shell: three ranges, Maven ordering (2.4 introduced, 2.12.2 fixed).
        ("pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1", {"GHSA-jfh8-c2jp-5v3q"}),
        ("pkg:maven/org.apache.logging.log4j/log4j-core@2.12.1", {"GHSA-jfh8-c2jp-5v3q"}),
        ("pkg:maven/org.apache.logging.log4j/log4j-core@2.12.2", set()),
        ("pkg:maven/org.apache.logging.log4j/log4j-core@2.3.1", set()),
        ("pkg:maven/org.apache.logging.log4j/log4j-core@2.15.0", set()),
        ("pkg:maven/org.apache.logging.log4j/log4j-core@2.0-beta9", {"GHSA-jfh8-c2jp-5v3q"}),
        # Struts S2-045: fixed 2.5.10.1 sorts after 2.5.10.
        ("pkg:maven/org.apache.struts/struts2-core@2.5.10", {"GHSA-j77q-2qqg-6989"}),
        ("pkg:maven/org.apache.struts/struts2-core@2.5.10.1", set()),
        ("pkg:maven/org.apache.struts/struts2-core@2.3.31", {"GHSA-j77q-2qqg-6989"}),
        # npm: two minimist ranges; event-stream's versions list; flatmap-stream never fixed.
        ("pkg:npm/minimist@0.2.3", {"GHSA-xvch-5gv4-984h"}),
        ("pkg:npm/minimist@1.2.6", set()),
        ("pkg:npm/event-stream@3.3.6", {"GHSA-mh6f-8j2x-4483"}),
        ("pkg:npm/event-stream@3.3.5", set()),
        ("pkg:npm/flatmap-stream@0.1.2", {"GHSA-mh6f-8j2x-4483"}),
        ("pkg:npm/ua-parser-js@1.0.0", {"GHSA-pjwm-rvh2-c87w"}),
        ("pkg:npm/ua-parser-js@0.7.28", set()),
        # Go: SEMVER ranges without a v, module versions with one; prereleases.
        ("pkg:golang/github.com/opencontainers/runc@v1.1.11", {"GO-2024-2491"}),
        ("pkg:golang/github.com/opencontainers/runc@v1.0.0-rc93", {"GO-2024-2491"}),
        ("pkg:golang/github.com/opencontainers/runc@v1.0.0-rc92", set()),
        ("pkg:golang/github.com/opencontainers/runc@v1.1.12", set()),
        ("pkg:golang/golang.org/x/net@v0.9.0", {"GO-2023-2102"}),
        ("pkg:golang/golang.org/x/net@v0.0.0-20230101000000-abcdefabcdef", {"GO-2023-2102"}),
        ("pkg:golang/golang.org/x/net@v0.17.0", set()),
        # PEP 440: a post release of the fixed version is fixed, a pre-release is not.
        ("pkg:pypi/django@4.2.10", {"PYSEC-2024-47", "PYSEC-2024-102"}),
        ("pkg:pypi/Django@4.2.11rc1", {"PYSEC-2024-47", "PYSEC-2024-102"}),
        ("pkg:pypi/cryptography@41.0.2", {"PYSEC-2023-254"}),
        ("pkg:pypi/werkzeug@3.0.1.post1", set()),
    ],
)
def test_ecosystem_ranges(db_home: Path, purl: str, expected: set[str]) -> None:
    assert set(found(scan(db_home, sbom(purl)))) == expected


def test_debian_by_source_package_and_release(db_home: Path) -> None:
    source = {"immutrail:deb:source-name": "nginx"}
    props = [{"name": k, "value": v} for k, v in source.items()]
    wheezy = "pkg:deb/debian/nginx-full@1.2.1-2.2%2Bwheezy2?distro=debian-7"
    fixed = "pkg:deb/debian/nginx-full@1.2.1-2.2%2Bwheezy3?distro=debian-7"
    jessie = "pkg:deb/debian/nginx-full@1.2.1-2.2?distro=debian-8"
    outcome = scan(
        db_home,
        sbom(wheezy, fixed, jessie, properties=dict.fromkeys((wheezy, fixed, jessie), props)),
    )
    assert found(outcome) == {"DSA-3029-1": {wheezy}}
    assert outcome.results[0].hits[0].fixed == ("1.2.1-2.2+wheezy3",)


def test_aliases_merge_into_one_finding_with_the_worst_severity(db_home: Path) -> None:
    outcome = scan(db_home, sbom("pkg:pypi/requests@2.19.0"))
    assert set(found(outcome)) == {"GHSA-x84v-xcm2-53pg", "PYSEC-2023-74"}
    merged = next(r for r in outcome.results if r.id == "GHSA-x84v-xcm2-53pg")
    assert merged.aliases == ("CVE-2018-18074", "PYSEC-2018-28")
    assert (merged.severity.level, merged.severity.score) == ("high", 7.5)
    assert merged.hits[0].fixed == ("2.20.0",)


def test_go_one_vulnerability_in_two_modules_is_one_result(db_home: Path) -> None:
    outcome = scan(db_home, sbom("pkg:golang/stdlib@v1.21.1", "pkg:golang/golang.org/x/net@v0.9.0"))
    assert len(outcome.results) == 1
    assert len(outcome.results[0].hits) == 2
    assert outcome.results[0].aliases == ("CVE-2023-39325", "CVE-2023-44487", "GHSA-4374-p667-p6c8")


def test_withdrawn_records_count_but_give_no_finding(tmp_path: Path, home: Path) -> None:
    record = json.loads((OSV / "ghsa" / "GHSA-xvch-5gv4-984h.json").read_text())
    record["withdrawn"] = "2023-01-01T00:00:00Z"
    record["modified"] = "2023-01-01T00:00:00Z"
    (tmp_path / "withdrawn.json").write_text(json.dumps(record))
    import_into(home, tmp_path / "withdrawn.json")
    outcome = scan(home, sbom("pkg:npm/minimist@1.2.5"))
    assert outcome.results == [] and outcome.withdrawn == ["GHSA-xvch-5gv4-984h"]


def _record(tmp_path: Path, name: str, affected: list[dict[str, Any]]) -> Path:
    record = {"id": name, "modified": "2024-01-01T00:00:00Z", "affected": affected}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(record))
    return path


def test_range_semantics_last_affected_limit_and_unsorted_events(
    tmp_path: Path, home: Path
) -> None:
    def rng(*events: dict[str, str]) -> dict[str, Any]:
        return {
            "package": {"ecosystem": "npm", "name": "p"},
            "ranges": [{"type": "SEMVER", "events": list(events)}],
        }

    paths = [
        _record(tmp_path, "T-LAST", [rng({"introduced": "1.0.0"}, {"last_affected": "1.2.0"})]),
        _record(tmp_path, "T-LIMIT", [rng({"introduced": "0"}, {"limit": "1.1.0"})]),
        _record(
            tmp_path,
            "T-UNSORTED",
            [
                rng(
                    {"fixed": "2.0.0"},
                    {"introduced": "1.5.0"},
                    {"fixed": "1.1.5"},
                    {"introduced": "1.1.0"},
                )
            ],
        ),
    ]
    import_into(home, *paths)
    hits = {
        v: set(found(scan(home, sbom(f"pkg:npm/p@{v}"))))
        for v in ("1.0.0", "1.1.2", "1.2.0", "1.2.1", "1.5.0", "2.0.0")
    }
    assert hits == {
        "1.0.0": {"T-LAST", "T-LIMIT"},
        "1.1.2": {"T-LAST", "T-UNSORTED"},
        "1.2.0": {"T-LAST"},
        "1.2.1": set(),
        "1.5.0": {"T-UNSORTED"},
        "2.0.0": set(),
    }


def test_what_cannot_be_decided_is_reported_with_the_reason(tmp_path: Path, home: Path) -> None:
    git_only = {
        "package": {"ecosystem": "PyPI", "name": "gitpkg"},
        "ranges": [{"type": "GIT", "repo": "https://x", "events": [{"introduced": "0"}]}],
    }
    bad_bound = {
        "package": {"ecosystem": "PyPI", "name": "badbound"},
        "ranges": [
            {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "not-a-version!"}]}
        ],
    }
    listed = {"package": {"ecosystem": "PyPI", "name": "weird"}, "versions": ["2004d"]}
    import_into(
        home,
        _record(tmp_path, "T-GIT", [git_only]),
        _record(tmp_path, "T-BAD", [bad_bound]),
        _record(tmp_path, "T-LISTED", [listed]),
    )
    outcome = scan(
        home,
        sbom(
            "pkg:pypi/gitpkg@1.0",
            "pkg:pypi/badbound@1.0",
            "pkg:pypi/weird@2004d",  # not PEP 440, but listed verbatim: affected
            "pkg:cargo/serde@1.0.0",
            "pkg:apk/alpine/musl@1.2.3-r0?distro=alpine-3.18",
            "pkg:deb/debian/bash@5.2-1",  # no distro release
            "pkg:pypi/noversion",
        ),
    )
    assert found(outcome) == {"T-LISTED": {"pkg:pypi/weird@2004d"}}
    reasons = {(n.purl, n.id): n.reason for n in outcome.not_evaluated}
    assert "commit graph" in reasons[("pkg:pypi/gitpkg@1.0", "T-GIT")]
    assert "not-a-version!" in reasons[("pkg:pypi/badbound@1.0", "T-BAD")]
    assert "PEP 440" in reasons[("pkg:pypi/weird@2004d", None)]
    assert "cargo" in reasons[("pkg:cargo/serde@1.0.0", None)]
    assert "apk" in reasons[("pkg:apk/alpine/musl@1.2.3-r0?distro=alpine-3.18", None)]
    assert "distro release" in reasons[("pkg:deb/debian/bash@5.2-1", None)]
    assert "no version" in reasons[("pkg:pypi/noversion", None)]
