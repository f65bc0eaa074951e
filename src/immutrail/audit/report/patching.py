"""Time to patch: from a critical vulnerability becoming known to our database to its fix in
production, for every critical vulnerability that ran exposed in the environment.

* **Known** is the ``vulndb.imported`` event that produced the database snapshot the first scan
  reporting the vulnerability used (the scan's ``db``), the last such import before that scan;
  for a scan taken from a Trivy or Grype report (no import of ours), that scan itself. This is
  the first moment the ledger *proves* the database knew it; an earlier import may have held the
  record already if no scan ran in between.
* **Affected** images are those any scan reported it for. Which vulnerabilities a scan found is
  read from its signed statement in the image store (the ``scan.completed`` event records only
  the counts and the statement's digest); only scans that counted a critical one are read.
* **Exposed**: an instance of an affected image ran in the environment at or after *known*.
* **Fixed** when the last such instance stopped running: at the ``deployment.completed`` of the
  deployment that destroyed it (the fixed image then runs in its place), else at its own end.
  A vulnerability still exposed at the end of the window is open.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from immutrail.artifacts.errors import ArtifactError
from immutrail.artifacts.provenance import verify_attestation
from immutrail.crypto.canonical import parse_strict_json
from immutrail.crypto.errors import CryptoError
from immutrail.scan.attestation import findings_from_predicate
from immutrail.scan.errors import ScanError

from .. import vocabulary as v
from ..source import Indexed, attachments
from ..wire import MAX_ATTESTATION_BYTES
from .auth import Authentication
from .model import Citation, cite
from .window import VULNDB_IMPORTED, Instance, Window, moment

CRITICAL = "critical"
_US = 1_000_000


@dataclass
class _Vulnerability:
    id: str
    first_scan: Indexed
    aliases: set[str] = field(default_factory=set)
    packages: set[str] = field(default_factory=set)
    digests: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Exposure:
    """One critical vulnerability exposed in the environment, and how long."""

    id: str
    aliases: tuple[str, ...]
    packages: tuple[str, ...]
    digests: tuple[str, ...]
    known: Indexed
    first_scan: Indexed
    fixed: Indexed | None
    """The event that ended the exposure (None: still open at the end of the window)."""
    fixed_us: int | None
    exposed_us: int
    """Microseconds from known to fixed, or to the end of the window when open."""
    late: bool

    @property
    def citations(self) -> tuple[Citation, ...]:
        return cite([e for e in (self.known, self.first_scan, self.fixed) if e is not None])

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "aliases": list(self.aliases),
            "packages": list(self.packages),
            "images": list(self.digests),
            "known": self.known.event.time,
            "known_index": self.known.index,
            "first_scan_index": self.first_scan.index,
            "fixed": None if self.fixed_us is None else moment(self.fixed_us),
            "fixed_index": None if self.fixed is None else self.fixed.index,
            "seconds": None if self.fixed_us is None else self.exposed_us / _US,
            "open": self.fixed is None,
            "exposed_seconds": self.exposed_us / _US,
            "late": self.late,
        }


@dataclass
class PatchMetrics:
    environment: str
    threshold_days: int
    exposures: list[Exposure]
    unreadable: list[dict[str, Any]]
    """Scans counting critical vulnerabilities whose statement could not be read, and why."""

    def to_json(self) -> dict[str, Any]:
        fixed = sorted(e.exposed_us for e in self.exposures if e.fixed is not None)
        return {
            "environment": self.environment,
            "threshold_days": self.threshold_days,
            "fixed": len(fixed),
            "open": sum(1 for e in self.exposures if e.fixed is None),
            "late": sum(1 for e in self.exposures if e.late),
            "median_seconds": quantile(fixed, 50),
            "p90_seconds": quantile(fixed, 90),
            "vulnerabilities": [e.to_json() for e in self.exposures],
            "unreadable_scans": self.unreadable,
        }


def quantile(values_us: Sequence[int], percent: int) -> float | None:
    """The percentile in seconds, interpolated linearly between the closest ranks (the method
    of NumPy's default and of ``statistics.quantiles(method="inclusive")``)."""
    if not values_us:
        return None
    if len(values_us) == 1:
        return values_us[0] / _US
    cuts = statistics.quantiles(values_us, n=100, method="inclusive")
    return round(cuts[percent - 1] / _US, 6)


def time_to_patch(
    window: Window, auth: Authentication, environment: str, threshold_days: int
) -> PatchMetrics:
    source = window.source
    vulnerabilities, unreadable = _critical(window, auth)
    imports = source.of_type(VULNDB_IMPORTED)
    instances = window.instances(environment)
    threshold_us = threshold_days * 86_400 * _US
    exposures = []
    for vuln in vulnerabilities.values():
        known = _known(vuln.first_scan, imports)
        exposure = _exposure(window, vuln, known, instances, threshold_us)
        if exposure is not None:
            exposures.append(exposure)
    exposures.sort(key=lambda e: (e.known.index, e.id))
    return PatchMetrics(environment, threshold_days, exposures, unreadable)


def _critical(
    window: Window, auth: Authentication
) -> tuple[dict[str, _Vulnerability], list[dict[str, Any]]]:
    """Every critical vulnerability any scan reported, by id, with the first scan that did."""
    source = window.source
    found: dict[str, _Vulnerability] = {}
    unreadable: list[dict[str, Any]] = []
    for scan in source.of_type(v.SCANNED):
        counts = scan.payload.get("counts")
        if not isinstance(counts, dict) or not counts.get(CRITICAL):
            continue
        digest = scan.event.subject
        try:
            predicate = _predicate(window, auth, scan)
            findings = findings_from_predicate(predicate)
        except (ArtifactError, CryptoError, ScanError) as exc:
            unreadable.append({"index": scan.index, "digest": digest, "reason": str(exc)})
            continue
        for finding in findings:
            if finding.level != CRITICAL:
                continue
            vuln = found.setdefault(finding.id, _Vulnerability(finding.id, scan))
            vuln.aliases.update(finding.aliases)
            vuln.packages.add(f"{finding.package}@{finding.version}")
            vuln.digests.add(digest)
    return found, unreadable


def _predicate(window: Window, auth: Authentication, scan: Indexed) -> object:
    """The vulns predicate a scan recorded, from its statement in the image store, checked
    against the digest the ledger recorded and the scanner's key as it stood at the scan."""
    store = window.store
    artifact = scan.text("attestation")
    if store is None or artifact is None:
        raise ArtifactError("the image store holding its statement is not at hand")
    attached = attachments(e for e in window.source.about(scan.event.subject))
    item = attached.get(artifact)
    blob = None if item is None else item.text("blob")
    if item is None or blob is None:
        raise ArtifactError(f"no artifact.attached event records its statement {artifact}")
    envelope = parse_strict_json(store.read_blob(blob, MAX_ATTESTATION_BYTES))
    statement = verify_attestation(
        envelope, auth.public_keys(scan.index), expected_subject_digest=scan.event.subject
    )
    return statement.get("predicate")


def _known(first_scan: Indexed, imports: Sequence[Indexed]) -> Indexed:
    snapshot = first_scan.text("db")
    made = [i for i in imports if i.event.subject == snapshot and i.index < first_scan.index]
    return made[-1] if made else first_scan


def _exposure(
    window: Window,
    vuln: _Vulnerability,
    known: Indexed,
    instances: Sequence[Instance],
    threshold_us: int,
) -> Exposure | None:
    exposed = [
        i
        for i in instances
        if i.digest in vuln.digests
        and i.created.us <= window.end_us
        and (i.ended is None or i.ended.us >= known.us)
    ]
    if not exposed or known.us > window.end_us:
        return None
    still = [i for i in exposed if i.ended is None or i.ended.us > window.end_us]
    fixed: Indexed | None = None
    fixed_us: int | None = None
    if not still:
        last = max(exposed, key=lambda i: (i.ended.us, i.ended.index) if i.ended else (0, 0))
        assert last.ended is not None
        fixed = window.deployment_end(last.ended) or last.ended
        fixed_us = max(fixed.us, known.us)
        if fixed_us < window.start_us:
            return None  # fixed before the window: not this report's business
    exposed_us = (fixed_us if fixed_us is not None else window.end_us) - known.us
    return Exposure(
        vuln.id,
        tuple(sorted(vuln.aliases)),
        tuple(sorted(vuln.packages)),
        tuple(sorted(vuln.digests)),
        known,
        vuln.first_scan,
        fixed,
        fixed_us,
        exposed_us,
        exposed_us > threshold_us,
    )
