"""(e) Vulnerability database import and image scan, against baselines measured in the same run.

* import: 100,000 synthetic OSV records shaped like the real ones (PyPI with versions lists,
  npm and Go SEMVER-style ranges, Maven, Debian:12 with dpkg versions; aliases, CVSS v3
  vectors, references, details) in one ``all.zip``, imported by ``VulnDb.import_paths``
  (strict parse, validation, canonical JSON, hashing, index rows, snapshot digest, one
  transaction). Baseline: raw SQLite ``executemany`` of the same record bytes into
  ``(id TEXT PRIMARY KEY, data BLOB)``, same pragmas, one transaction.
* scan: a CycloneDX SBOM of 2,000 packages (half of them named in the database, with versions
  inside and outside the ranges) matched with ``Matcher.scan`` (index lookups, range
  evaluation with each ecosystem's ordering, alias merging, severity). Baseline: one pass of
  dict lookups of the same 2,000 names in an in-memory ``{(ecosystem, name): [record ids]}``.
  Target: under 2 s.
* print: the text table `scan` prints (``cli.scan._findings_table``) for 200,000 findings.
  Baseline: the same cells joined with tabs, one line each (no escaping, no alignment).

    .venv/bin/python bench/bench_scan.py [--quick]      # --quick: 10,000 records
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import time
import zipfile
from pathlib import Path
from typing import Any

from _common import (
    header,
    machine_info,
    print_table,
    print_targets,
    scratch_dir,
    target,
    write_json,
)

from immutrail.cli.scan import _findings_table
from immutrail.scan.attestation import Finding
from immutrail.scan.matcher import Matcher, components_from_sbom
from immutrail.scan.vulndb import VulnDb

NAME = "scan"
ECOSYSTEMS = ("PyPI", "npm", "Maven", "Debian:12", "Go")
VECTORS = (
    "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
    "CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:N",
    "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:L/A:N",
    "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:N/I:N/A:H",
)


def package_name(ecosystem: str, n: int) -> str:
    if ecosystem == "Maven":
        return f"org.example{n % 97}:lib-{n}"
    if ecosystem == "Go":
        return f"github.com/example{n % 89}/mod{n}"
    return f"pkg-{n}"


def version(ecosystem: str, major: int, minor: int, patch: int) -> str:
    if ecosystem == "Debian:12":
        return f"{major}.{minor}.{patch}-{patch % 3 + 1}+deb12u{minor % 4}"
    return f"{major}.{minor}.{patch}"


def make_record(i: int, rng: random.Random, names: int) -> dict[str, Any]:
    ecosystem = ECOSYSTEMS[i % len(ECOSYSTEMS)]
    name = package_name(ecosystem, rng.randrange(names))
    major, minor = rng.randrange(5), rng.randrange(20)
    introduced = version(ecosystem, major, minor, 0)
    fixed = version(ecosystem, major, minor + 1 + rng.randrange(3), rng.randrange(5))
    range_type = "SEMVER" if ecosystem in ("npm", "Go") else "ECOSYSTEM"
    affected: dict[str, Any] = {
        "package": {"ecosystem": ecosystem, "name": name},
        "ranges": [{"type": range_type, "events": [{"introduced": introduced}, {"fixed": fixed}]}],
    }
    if ecosystem == "PyPI":
        affected["versions"] = [f"{major}.{minor}.{p}" for p in range(10)]
    year = 2015 + i % 10
    return {
        "schema_version": "1.6.0",
        "id": f"SYN-{year}-{i:06d}",
        "modified": f"{year}-0{1 + i % 9}-1{i % 10}T12:00:00Z",
        "published": f"{year}-01-01T00:00:00Z",
        "aliases": [f"CVE-{year}-{100000 + i}"],
        "summary": f"Synthetic vulnerability {i} in {name}",
        "details": "A synthetic record shaped like a GHSA advisory. " * 6,
        "severity": [{"type": "CVSS_V3", "score": VECTORS[i % len(VECTORS)]}],
        "affected": [affected],
        "references": [
            {"type": "ADVISORY", "url": f"https://example.org/advisories/{i}"},
            {"type": "WEB", "url": f"https://example.org/issues/{i}"},
            {"type": "PACKAGE", "url": f"https://example.org/{name}"},
        ],
        "database_specific": {"severity": "HIGH", "cwe_ids": ["CWE-79"]},
    }


def make_sbom(count: int, rng: random.Random, names: int) -> dict[str, Any]:
    purl_types = {
        "PyPI": "pypi",
        "npm": "npm",
        "Maven": "maven",
        "Debian:12": "deb",
        "Go": "golang",
    }
    components = []
    for i in range(count):
        ecosystem = ECOSYSTEMS[i % len(ECOSYSTEMS)]
        known = i % 2 == 0
        n = rng.randrange(names) if known else names + i
        name = package_name(ecosystem, n)
        v = version(ecosystem, rng.randrange(5), rng.randrange(22), rng.randrange(5))
        kind = purl_types[ecosystem]
        if kind == "maven":
            group, artifact = name.split(":")
            purl = f"pkg:maven/{group}/{artifact}@{v}"
        elif kind == "golang":
            purl = f"pkg:golang/{name}@v{v}"
        elif kind == "deb":
            purl = f"pkg:deb/debian/{name}@{v.replace('+', '%2B')}?arch=amd64&distro=debian-12"
        else:
            purl = f"pkg:{kind}/{name}@{v}"
        components.append({"type": "library", "name": name, "version": v, "purl": purl})
    return {"bomFormat": "CycloneDX", "specVersion": "1.6", "components": components}


def baseline_inserts(path: Path, blobs: list[tuple[str, bytes]]) -> float:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE records (id TEXT PRIMARY KEY, data BLOB) WITHOUT ROWID")
    started = time.perf_counter()
    db.execute("BEGIN")
    db.executemany("INSERT INTO records VALUES (?, ?)", blobs)
    db.execute("COMMIT")
    seconds = time.perf_counter() - started
    db.close()
    return seconds


def print_findings(count: int) -> tuple[float, float]:
    """Seconds to print ``count`` findings as `scan` does, and the tab-joined baseline."""
    levels = ("low", "medium", "high", "critical", "unknown")
    findings = [
        Finding(
            f"CVE-2024-{n}", (), f"pkg{n % 500}", "1.0.0", "", "PyPI", levels[n % 5], 5.0, ("1.1",)
        )
        for n in range(count)
    ]
    started = time.perf_counter()
    text = _findings_table(findings)
    printed_s = time.perf_counter() - started
    started = time.perf_counter()
    plain = "\n".join(
        "\t".join((f.id, f.package, f.version, ",".join(f.fixed), f.level, str(f.score)))
        for f in findings
    )
    baseline_s = time.perf_counter() - started
    assert len(text.splitlines()) == count + 1 and plain
    return printed_s, baseline_s


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    records = 10_000 if args.quick else 100_000
    packages = 2_000
    names = records // 5
    header(NAME, f"import {records} OSV records, scan {packages} packages", args.quick)
    rng = random.Random(7)
    with scratch_dir(NAME) as work:
        blobs = []
        archive = work / "all.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
            for i in range(records):
                record = make_record(i, rng, names)
                data = json.dumps(record, indent=2).encode()
                blobs.append((record["id"], data))
                out.writestr(f"{record['id']}.json", data)
        size = archive.stat().st_size
        home = work / "home"
        db = VulnDb.create(home)
        started = time.perf_counter()
        result = db.import_paths([archive])
        import_s = time.perf_counter() - started
        baseline_s = baseline_inserts(work / "baseline.sqlite", blobs)
        assert result.snapshot is not None and result.snapshot.records == records

        sbom = make_sbom(packages, rng, names)
        index: dict[tuple[str, str], list[str]] = {}
        for record_id, data in blobs:
            affected = json.loads(data)["affected"][0]["package"]
            index.setdefault((affected["ecosystem"], affected["name"]), []).append(record_id)
        scan_runs, baseline_runs, found = [], [], 0
        for _ in range(3):
            started = time.perf_counter()
            components, skipped = components_from_sbom(sbom)
            with db.reading():
                outcome = Matcher(db).scan(components, skipped)
            scan_runs.append(time.perf_counter() - started)
            found = sum(len(r.hits) for r in outcome.results)
            started = time.perf_counter()
            hits = 0
            for item in sbom["components"]:
                for ecosystem in ECOSYSTEMS:
                    hits += len(index.get((ecosystem, item["name"]), ()))
            baseline_runs.append(time.perf_counter() - started)
        db.close()
    scan_s, dict_s = min(scan_runs), min(baseline_runs)
    printed = 20_000 if args.quick else 200_000
    print_s, join_s = print_findings(printed)
    rows = [
        (
            "import (VulnDb.import_paths)",
            records,
            import_s,
            records / import_s,
            import_s / baseline_s,
        ),
        ("baseline: raw SQLite inserts", records, baseline_s, records / baseline_s, 1.0),
        ("scan (Matcher.scan)", packages, scan_s, packages / scan_s, scan_s / dict_s),
        ("baseline: dict lookups", packages, dict_s, packages / dict_s, 1.0),
        (
            "print findings (scan's text table)",
            printed,
            print_s,
            printed / print_s,
            print_s / join_s,
        ),
        ("baseline: tab-joined lines", printed, join_s, printed / join_s, 1.0),
    ]
    print_table("results", ("phase", "count", "seconds", "per s", "x baseline time"), rows)
    unchecked = len(outcome.not_evaluated)
    print(f"archive {size / 1e6:.1f} MB; scan found {found} findings, {unchecked} not evaluated")
    targets = [target("scan of 2,000 packages", scan_s, 2.0, higher_is_better=False, unit="s")]
    print_targets(targets)
    write_json(
        NAME,
        {
            "machine": machine_info(),
            "records": records,
            "packages": packages,
            "archive_bytes": size,
            "import_seconds": import_s,
            "import_records_per_s": records / import_s,
            "baseline_insert_seconds": baseline_s,
            "baseline_records_per_s": records / baseline_s,
            "import_vs_baseline_time": import_s / baseline_s,
            "scan_seconds_runs": scan_runs,
            "scan_seconds": scan_s,
            "baseline_dict_seconds": dict_s,
            "scan_vs_baseline_time": scan_s / dict_s,
            "findings": found,
            "print_findings": printed,
            "print_seconds": print_s,
            "print_vs_baseline_time": print_s / join_s,
            "targets": targets,
        },
    )


if __name__ == "__main__":
    main()
