"""End to end: the CLI imports, scans real images, attaches a signed attestation that reads
back, records the ledger events; Trivy and Grype reports; refusals that change nothing."""

from __future__ import annotations

import http.server
import io
import json
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from immutrail.artifacts.builder import BuildResult
from immutrail.artifacts.statements import ledger_keys, read_attestations
from immutrail.artifacts.store import Store
from immutrail.cli.main import app
from immutrail.ledger.home import open_ledger
from immutrail.ledger.storage.interface import EntryFilter
from immutrail.scan.attestation import (
    VULNS_PREDICATE,
    Finding,
    findings_from_predicate,
    scan_summary,
)
from immutrail.scan.errors import PredicateError
from immutrail.scan.scanner import image_identity

from .conftest import OSV, REPORTS, VULNERABLE_FILES, build_image

runner = CliRunner()


def run(home: Path, *args: str, code: int = 0) -> dict[str, Any]:
    result = runner.invoke(app, [*args, "--home", str(home), "--format", "json"])
    assert result.exit_code == code, (result.stdout, result.stderr)
    return json.loads(result.stdout) if code == 0 else {"stderr": " ".join(result.stderr.split())}


def ledger_types(home: Path) -> list[str]:
    ledger = open_ledger(home)
    try:
        return [json.loads(r.data)["type"] for r in ledger.entries(EntryFilter())]
    finally:
        ledger.close()


def attested(home: Path, digest: str) -> list[Any]:
    ledger = open_ledger(home)
    try:
        good, bad = read_attestations(
            Store.for_home(home), digest, ledger_keys(ledger), VULNS_PREDICATE
        )
    finally:
        ledger.close()
    assert bad == []
    return good


def test_scan_of_a_built_image_attests_and_records(
    vulnerable_image: BuildResult, db_home: Path
) -> None:
    out = run(db_home, "scan", vulnerable_image.digest, "--actor", "user:scanner")
    assert out["source"] == "immutrail" and out["sbom_generated"] is False
    summary = out["summary"]
    assert summary["counts"]["critical"] == 2  # minimist (CVSS 9.8), ua-parser-js (GHSA label)
    [statement] = attested(db_home, vulnerable_image.digest)
    predicate = statement.predicate
    assert predicate["scanner"]["db"]["version"] == run(db_home, "vulndb", "status")["digest"]
    findings = {f.id: f for f in findings_from_predicate(predicate)}
    assert findings["GHSA-x84v-xcm2-53pg"] == Finding(
        id="GHSA-x84v-xcm2-53pg",
        aliases=("CVE-2018-18074", "PYSEC-2018-28"),
        package="requests",
        version="2.19.0",
        purl="pkg:pypi/requests@2.19.0",
        ecosystem="PyPI",
        level="high",
        score=7.5,
        fixed=("2.20.0",),
    )
    assert "PYSEC-2018-28" not in findings  # one finding per vulnerability, not per alias
    assert findings["DSA-3029-1"].package == "nginx-full"
    assert findings["GHSA-xvch-5gv4-984h"].level == "critical"
    assert not any(f.package == "flask" for f in findings.values())
    assert scan_summary(predicate) == summary
    assert ledger_types(db_home)[-2:] == ["artifact.attached", "scan.completed"]
    ledger = open_ledger(db_home)
    try:
        [event] = [json.loads(r.data) for r in ledger.entries(EntryFilter(type="scan.completed"))]
    finally:
        ledger.close()
    assert event["subject"] == vulnerable_image.digest and event["actor"] == "user:scanner"
    assert event["payload"]["attestation"] == out["attestation"]
    assert (
        event["payload"]["db"] == summary["db"] and event["payload"]["counts"] == summary["counts"]
    )


def test_fail_on_and_text_output(vulnerable_image: BuildResult, db_home: Path) -> None:
    result = runner.invoke(app, ["scan", "app:1", "--home", str(db_home), "--fail-on", "critical"])
    assert result.exit_code == 1, result.stderr
    assert "GHSA-xvch-5gv4-984h" in result.stdout and "minimist" in result.stdout
    clean = build_image(
        vulnerable_image.store_root.parent.parent,
        db_home,
        {"image.yaml": VULNERABLE_FILES["image.yaml"], "rootfs/etc/hostname": "x\n"},
        tag="clean:1",
    )
    out = runner.invoke(app, ["scan", clean.digest, "--home", str(db_home), "--fail-on", "low"])
    assert out.exit_code == 0, out.stderr


def test_scan_refusals_change_nothing(tmp_path: Path, home: Path) -> None:
    image = build_image(tmp_path, home, VULNERABLE_FILES, tag="x:1")
    before = ledger_types(home)
    assert "vulnerability database" in run(home, "scan", image.digest, code=3)["stderr"]
    assert "no image" in run(home, "scan", "sha256:" + "0" * 64, code=2)["stderr"]
    report = REPORTS / "trivy-alpine-310.json"
    assert (
        "another image"
        in run(home, "scan", image.digest, "--from-report", str(report), code=2)["stderr"]
    )
    sarif = REPORTS / "trivy-alpine-310.sarif.json"
    assert "SARIF" in run(home, "scan", image.digest, "--from-report", str(sarif), code=2)["stderr"]
    golden = REPORTS / "grype-presenter-golden-TestJsonImgsPresenter.json"
    assert (
        "another image"
        in run(home, "scan", image.digest, "--from-report", str(golden), code=2)["stderr"]
    )
    assert ledger_types(home) == before
    assert attested(home, image.digest) == []


def test_trivy_report_about_this_image(
    tmp_path: Path, vulnerable_image: BuildResult, db_home: Path
) -> None:
    # The real report, with its image identity replaced by the image under test: a report
    # for this image as Trivy would write it (Metadata.ImageID is the config digest).
    report = json.loads((REPORTS / "trivy-alpine-310.json").read_text())
    identity = image_identity(Store.for_home(db_home), vulnerable_image.digest)
    report["Metadata"]["ImageID"] = identity.config
    report["Metadata"]["DiffIDs"] = list(identity.diff_ids)
    path = tmp_path / "trivy.json"
    path.write_text(json.dumps(report))
    out = run(db_home, "scan", vulnerable_image.digest, "--from-report", str(path))
    predicate = out["predicate"]
    assert predicate["scanner"]["uri"] == "pkg:github/aquasecurity/trivy"
    assert predicate["immutrail"]["report"]["image_match"] == "config digest"
    findings = findings_from_predicate(predicate)
    assert {(f.id, f.package) for f in findings} == {
        ("CVE-2019-1549", "libcrypto1.1"),
        ("CVE-2019-1549", "libssl1.1"),
        ("CVE-2019-1551", "libcrypto1.1"),
        ("CVE-2019-1551", "libssl1.1"),
    }
    assert {(f.level, f.score) for f in findings} == {("medium", 5.3)}
    assert out["summary"]["counts"]["medium"] == 2 and out["summary"]["findings"] == 4


def test_grype_report_without_image_identity(vulnerable_image: BuildResult, db_home: Path) -> None:
    path = REPORTS / "grype-golang-x-net-epss.json"
    out = run(db_home, "scan", vulnerable_image.digest, "--from-report", str(path))
    assert out["predicate"]["immutrail"]["report"]["image_match"] == "not stated"
    [finding] = findings_from_predicate(out["predicate"])
    assert (finding.id, finding.aliases, finding.package, finding.version) == (
        "GHSA-4374-p667-p6c8",
        ("CVE-2023-39325",),
        "golang.org/x/net",
        "v0.9.0",
    )
    assert (finding.level, finding.score, finding.fixed, finding.ecosystem) == (
        "high",
        7.5,
        ("0.17.0",),
        "Go",
    )
    assert out["summary"]["source"] == "grype"


def _without_referrers(exported: Path, target: Path, digest: str) -> Path:
    """The exported OCI layout tar with only the image in index.json (no SBOM, no attestations)."""
    with tarfile.open(exported) as source, tarfile.open(target, "w") as out:
        for member in source.getmembers():
            data = source.extractfile(member) if member.isfile() else None
            if member.name.lstrip("./") == "index.json" and data is not None:
                index = json.loads(data.read())
                index["manifests"] = [m for m in index["manifests"] if m["digest"] == digest]
                payload = json.dumps(index).encode()
                member.size = len(payload)
                out.addfile(member, io.BytesIO(payload))
            else:
                out.addfile(member, data)
    return target


def test_imported_image_without_sbom_gets_one_generated(
    tmp_path: Path, vulnerable_image: BuildResult, db_home: Path
) -> None:
    exported = tmp_path / "image.tar"
    run(db_home, "artifact", "export", vulnerable_image.digest, "-o", str(exported))
    bare = _without_referrers(exported, tmp_path / "bare.tar", vulnerable_image.digest)
    other = tmp_path / "other"
    assert runner.invoke(app, ["init", "--home", str(other)]).exit_code == 0
    run(other, "vulndb", "import", str(OSV))
    imported = run(other, "artifact", "import", str(bare))
    sbom_type = "application/vnd.cyclonedx+json"
    assert Store.for_home(other).referrers(imported["digest"], sbom_type) == []
    out = run(other, "scan", imported["digest"])
    assert out["sbom_generated"] is True and out["sbom"].startswith("sha256:")
    assert "GHSA-xvch-5gv4-984h" in {f.id for f in findings_from_predicate(out["predicate"])}
    assert len(Store.for_home(other).referrers(imported["digest"], sbom_type)) == 1


def test_vulndb_cli_import_status_verify_and_corrupt_input(tmp_path: Path, home: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"id": "X-1", "modified": "yesterday"}')
    err = run(home, "vulndb", "import", str(OSV), str(bad), code=2)["stderr"]
    assert "bad.json" in err and "modified" in err
    assert "vulndb.imported" not in ledger_types(home)
    run(home, "vulndb", "status", code=3)
    out = run(home, "vulndb", "import", str(OSV))
    assert out["snapshot"]["records"] == len(list(OSV.rglob("*.json"))) == 45
    assert run(home, "vulndb", "verify")["ok"] is True


@pytest.fixture
def osv_server(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server laid out like OSV's bucket: /<ecosystem>/all.zip."""
    root = tmp_path / "bucket"
    for ecosystem, folder in (("PyPI", "pypi"), ("npm", "ghsa")):
        (root / ecosystem).mkdir(parents=True)
        with zipfile.ZipFile(root / ecosystem / "all.zip", "w") as archive:
            for path in sorted((OSV / folder).glob("*.json")):
                archive.write(path, path.name)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


def test_vulndb_update_downloads_and_imports(osv_server: str, home: Path) -> None:
    out = run(
        home, "vulndb", "update", "--url", osv_server, "--ecosystem", "PyPI", "--ecosystem", "npm"
    )
    expected = len(list((OSV / "pypi").glob("*.json"))) + len(list((OSV / "ghsa").glob("*.json")))
    assert out["added"] == expected and [s["kind"] for s in out["sources"]] == ["zip", "zip"]
    err = run(home, "vulndb", "update", "--url", osv_server, "--ecosystem", "Hex", code=3)["stderr"]
    assert "404" in err
    assert ledger_types(home).count("vulndb.imported") == 1


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.pop("scanner"), "scanner"),
        (lambda p: p["scanner"]["result"][0].pop("annotations"), "annotations"),
        (lambda p: p["scanner"]["result"][0]["annotations"][0].update(level="severe"), "level"),
        (lambda p: p["scanner"]["result"][0]["severity"].pop(0), "level"),
        (
            lambda p: p["scanner"]["result"][0]["severity"].append(
                {"method": "cvss_score", "score": "11"}
            ),
            "score",
        ),
        (lambda p: p["scanner"]["db"].pop("version"), "db.version"),
    ],
)
def test_findings_from_predicate_is_strict(
    vulnerable_image: BuildResult, db_home: Path, mutate: Any, message: str
) -> None:
    predicate = run(db_home, "scan", vulnerable_image.digest)["predicate"]
    mutate(predicate)
    with pytest.raises(PredicateError, match=message):
        findings_from_predicate(predicate)
