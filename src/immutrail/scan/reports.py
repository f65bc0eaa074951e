"""Trivy and Grype JSON reports, read into the same results the matcher gives.

* Trivy: ``trivy image --format json`` (``SchemaVersion`` 2): every ``Results[].Vulnerabilities``
  entry; the level is Trivy's ``Severity``; the score is computed from the CVSS v3 vector of
  Trivy's ``SeveritySource`` (else NVD, else any), falling back to the stated ``V3Score``.
* Grype: ``grype -o json``: every ``matches[]`` entry; ``relatedVulnerabilities`` are aliases;
  the level is Grype's ``severity`` (``Negligible`` is ``low``); the score comes from the first
  CVSS v3 entry (computed from its vector when the vector parses, else its ``baseScore``).

Which image a report is about: Trivy states ``Metadata.ImageID`` (the config digest),
``Metadata.RepoDigests`` (manifest digests) and ``Metadata.DiffIDs``; Grype states
``source.target.manifestDigest``, ``imageID`` and ``repoDigests``. When a report states any of
them, one must match the image scanned, else the report is refused (exit 2): a report about
another image must never become this image's scan. A report that states none (Grype run on a
directory or an SBOM) is accepted and the attestation records ``image_match: "not stated"``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutrail.crypto.canonical import parse_strict_json
from immutrail.crypto.errors import CanonicalizationError
from immutrail.files import read_capped

from .errors import ReportError
from .results import Hit, Match, ScanOutcome, merge_aliases
from .severity import ALL_LEVELS, UNKNOWN, CvssError, Severity, cvss3_base_score

MAX_REPORT_BYTES = 256 * 1024 * 1024
_TRIVY_TYPES = {
    "alpine": "Alpine",
    "debian": "Debian",
    "ubuntu": "Ubuntu",
    "pip": "PyPI",
    "pipenv": "PyPI",
    "poetry": "PyPI",
    "python-pkg": "PyPI",
    "npm": "npm",
    "yarn": "npm",
    "pnpm": "npm",
    "node-pkg": "npm",
    "gomod": "Go",
    "gobinary": "Go",
    "jar": "Maven",
    "pom": "Maven",
    "gradle": "Maven",
}
_GRYPE_TYPES = {
    "python": "PyPI",
    "npm": "npm",
    "go-module": "Go",
    "java-archive": "Maven",
    "deb": "Debian",
    "apk": "Alpine",
    "rpm": "RPM",
}


@dataclass(frozen=True, slots=True)
class ImageIdentity:
    """What the scanned image is: its manifest digest, config digest and layer diff_ids."""

    manifest: str
    config: str
    diff_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Report:
    outcome: ScanOutcome
    tool: str
    tool_version: str
    created: str | None
    db_version: str | None
    db_updated: str | None
    sha256: str
    image_match: str


def read_report(path: Path, image: ImageIdentity) -> Report:
    """Read a Trivy or Grype JSON report about ``image``; ReportError if it is neither, is
    malformed, or names another image."""
    try:
        data = read_capped(path, MAX_REPORT_BYTES)
    except OSError as exc:
        raise ReportError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        document = parse_strict_json(data)
    except (CanonicalizationError, ValueError) as exc:
        raise ReportError(f"{path}: not valid JSON ({exc})") from exc
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if isinstance(document, Mapping) and "SchemaVersion" in document and "Results" in document:
        return _Trivy(path, document).read(image, digest)
    if isinstance(document, Mapping) and "matches" in document:
        return _Grype(path, document).read(image, digest)
    if isinstance(document, Mapping) and "runs" in document and "$schema" in document:
        raise ReportError(f"{path}: SARIF is not supported; give Trivy's or Grype's JSON output")
    raise ReportError(f"{path}: neither a Trivy JSON report nor a Grype JSON report")


class _Reader:
    def __init__(self, path: Path, document: Mapping[str, Any]):
        self.path = path
        self.document = document

    def fail(self, where: str, message: str) -> ReportError:
        return ReportError(f"{self.path}: {where}: {message}")

    def obj(self, value: object, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, "must be an object")
        return value

    def items(self, value: object, where: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(where, "must be a list")
        return value

    def text(self, value: object, where: str) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(where, "must be a non-empty string")
        return value

    def optional_text(self, value: object) -> str:
        return value if isinstance(value, str) else ""

    def level(self, value: object, where: str) -> str:
        word = self.optional_text(value).lower()
        word = {"negligible": "low", "moderate": "medium"}.get(word, word)
        if word not in ALL_LEVELS:
            raise self.fail(where, f"unknown severity {value!r}")
        return word

    def check_image(
        self,
        image: ImageIdentity,
        manifests: Sequence[str],
        config: str | None,
        diff_ids: Sequence[str],
    ) -> str:
        stated = False
        if manifests:
            stated = True
            if image.manifest in manifests:
                return "manifest digest"
        if config:
            stated = True
            if config == image.config:
                return "config digest"
        if diff_ids and not config:
            stated = True
            if tuple(diff_ids) == image.diff_ids:
                return "layer diff_ids"
        if stated:
            named = ", ".join([*manifests, *([config] if config else []), *diff_ids][:3])
            raise ReportError(
                f"{self.path} is about another image ({named}), not {image.manifest}: refused"
            )
        return "not stated"


def _score(vector: str | None, stated: object) -> float | None:
    if vector:
        try:
            return cvss3_base_score(vector)
        except CvssError:
            pass  # a scanner's vector we cannot read: its own stated score stands
    if isinstance(stated, int | float) and not isinstance(stated, bool) and 0 <= stated <= 10:
        return float(stated)
    return None


class _Trivy(_Reader):
    def read(self, image: ImageIdentity, digest: str) -> Report:
        doc = self.document
        if doc.get("SchemaVersion") != 2:
            raise self.fail("SchemaVersion", f"{doc.get('SchemaVersion')!r} is not supported (2)")
        metadata = self.obj(doc.get("Metadata", {}), "Metadata")
        repo_digests = [
            str(item).rpartition("@")[2]
            for item in self.items(metadata.get("RepoDigests"), "Metadata.RepoDigests")
        ]
        match = self.check_image(
            image,
            repo_digests,
            self.optional_text(metadata.get("ImageID")) or None,
            [str(d) for d in self.items(metadata.get("DiffIDs"), "Metadata.DiffIDs")],
        )
        matches: list[Match] = []
        packages: set[str] = set()
        for r_index, result in enumerate(self.items(doc.get("Results"), "Results")):
            where = f"Results[{r_index}]"
            result = self.obj(result, where)
            ecosystem = _TRIVY_TYPES.get(self.optional_text(result.get("Type")), "")
            ecosystem = ecosystem or self.optional_text(result.get("Type"))
            for index, vuln in enumerate(self.items(result.get("Vulnerabilities"), where)):
                at = f"{where}.Vulnerabilities[{index}]"
                vuln = self.obj(vuln, at)
                matches.append(self._match(vuln, at, ecosystem))
                packages.add(matches[-1].hit.purl or matches[-1].hit.package)
        outcome = ScanOutcome("trivy", merge_aliases(matches), packages=len(packages))
        created = self.optional_text(doc.get("CreatedAt")) or None
        trivy = doc.get("Trivy")
        version = self.optional_text(trivy.get("Version")) if isinstance(trivy, Mapping) else ""
        return Report(outcome, "trivy", version or "unknown", created, None, None, digest, match)

    def _match(self, vuln: Mapping[str, Any], at: str, ecosystem: str) -> Match:
        vuln_id = self.text(vuln.get("VulnerabilityID"), f"{at}.VulnerabilityID")
        package = self.text(vuln.get("PkgName"), f"{at}.PkgName")
        version = self.text(vuln.get("InstalledVersion"), f"{at}.InstalledVersion")
        identifier = vuln.get("PkgIdentifier")
        purl = identifier.get("PURL") if isinstance(identifier, Mapping) else None
        level = self.level(vuln.get("Severity", UNKNOWN), f"{at}.Severity")
        cvss = vuln.get("CVSS") if isinstance(vuln.get("CVSS"), Mapping) else {}
        assert isinstance(cvss, Mapping)
        source = self.optional_text(vuln.get("SeveritySource"))
        chosen: Mapping[str, Any] = next(
            (cvss[k] for k in (source, "nvd", *cvss) if k in cvss and isinstance(cvss[k], Mapping)),
            {},
        )
        vector = self.optional_text(chosen.get("V3Vector")) or None
        score = _score(vector, chosen.get("V3Score"))
        fixed = tuple(
            part.strip()
            for part in self.optional_text(vuln.get("FixedVersion")).split(",")
            if part.strip()
        )
        severity = Severity(level, score, "CVSS_V3" if vector else None, vector)
        hit = Hit(package, version, self.optional_text(purl), ecosystem, fixed, level)
        aliases = tuple(str(v) for v in self.items(vuln.get("VendorIDs"), f"{at}.VendorIDs"))
        return Match(vuln_id, aliases, severity, hit)


class _Grype(_Reader):
    def read(self, image: ImageIdentity, digest: str) -> Report:
        doc = self.document
        source = doc.get("source")
        match = "not stated"
        if source is not None:
            source = self.obj(source, "source")
            target = source.get("target")
            if source.get("type") == "image" and isinstance(target, Mapping):
                manifests = [
                    str(item).rpartition("@")[2]
                    for item in self.items(target.get("repoDigests"), "source.target.repoDigests")
                ]
                if isinstance(target.get("manifestDigest"), str) and target["manifestDigest"]:
                    manifests.append(target["manifestDigest"])
                config = self.optional_text(target.get("imageID")) or None
                match = self.check_image(image, manifests, config, [])
        matches = [
            self._match(self.obj(item, f"matches[{i}]"), f"matches[{i}]")
            for i, item in enumerate(self.items(doc.get("matches"), "matches"))
        ]
        packages = {m.hit.purl or m.hit.package for m in matches}
        outcome = ScanOutcome("grype", merge_aliases(matches), packages=len(packages))
        descriptor = doc.get("descriptor")
        descriptor = descriptor if isinstance(descriptor, Mapping) else {}
        db = descriptor.get("db")
        db = db if isinstance(db, Mapping) else {}
        status = db.get("status") if isinstance(db.get("status"), Mapping) else db
        assert isinstance(status, Mapping)
        return Report(
            outcome,
            "grype",
            self.optional_text(descriptor.get("version")) or "unknown",
            self.optional_text(descriptor.get("timestamp")) or None,
            self.optional_text(status.get("checksum") or status.get("schemaVersion")) or None,
            self.optional_text(status.get("built")) or None,
            digest,
            match,
        )

    def _match(self, item: Mapping[str, Any], at: str) -> Match:
        vuln = self.obj(item.get("vulnerability"), f"{at}.vulnerability")
        artifact = self.obj(item.get("artifact"), f"{at}.artifact")
        vuln_id = self.text(vuln.get("id"), f"{at}.vulnerability.id")
        level = self.level(vuln.get("severity", UNKNOWN), f"{at}.vulnerability.severity")
        vector: str | None = None
        score: float | None = None
        for entry in self.items(vuln.get("cvss"), f"{at}.vulnerability.cvss"):
            if isinstance(entry, Mapping) and str(entry.get("version", "")).startswith("3"):
                metrics = entry.get("metrics") if isinstance(entry.get("metrics"), Mapping) else {}
                assert isinstance(metrics, Mapping)
                candidate = self.optional_text(entry.get("vector")) or None
                score = _score(candidate, metrics.get("baseScore"))
                vector = candidate if candidate and candidate.startswith("CVSS:3") else None
                break
        aliases = tuple(
            self.text(self.obj(rel, f"{at}.relatedVulnerabilities").get("id"), f"{at}.related")
            for rel in self.items(item.get("relatedVulnerabilities"), f"{at}.related")
        )
        fix = vuln.get("fix") if isinstance(vuln.get("fix"), Mapping) else {}
        assert isinstance(fix, Mapping)
        fixed = tuple(str(v) for v in self.items(fix.get("versions"), f"{at}.fix.versions"))
        kind = self.optional_text(artifact.get("type"))
        hit = Hit(
            self.text(artifact.get("name"), f"{at}.artifact.name"),
            self.text(artifact.get("version"), f"{at}.artifact.version"),
            self.optional_text(artifact.get("purl")),
            _GRYPE_TYPES.get(kind, kind),
            fixed,
            level,
        )
        severity = Severity(level, score, "CVSS_V3" if vector else None, vector)
        return Match(vuln_id, aliases, severity, hit)
