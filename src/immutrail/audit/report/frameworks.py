"""The frameworks a report can be made for, their controls, and what evidence each one needs.

Control texts are our own short paraphrases, never the standards' wording; the identifiers are
the official ones. Each control names the kinds of evidence (see ``EVIDENCE``) that must all be
present for it to be *satisfied*, others that are shown in support but do not decide, and the
kinds of exception (see ``EXCEPTIONS``) that make it *partial* when they occurred. A control with
no required evidence is one the ledger cannot speak to: it is listed, with a note, as *no
evidence* so that the reader knows to look elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

EVIDENCE: dict[str, str] = {
    "events_recorded": "events recorded in the ledger in the window",
    "ledger_checkpoint": "a signed checkpoint covering the window (tamper-evident log)",
    "authenticated_events": "events whose actor proved who they are (signature or token)",
    "access_changes": "principals, roles and tokens created, changed or revoked",
    "key_events": "signing keys announced or revoked",
    "builds": "images built from version control (or imported)",
    "provenance": "SLSA provenance attached to images",
    "sboms": "CycloneDX SBOMs attached to images",
    "vulndb_updates": "vulnerability database updates",
    "scans": "vulnerability scans of images",
    "baseline_checks": "security baseline (CIS-style) checks of images",
    "tests": "image tests",
    "signatures": "release signatures",
    "approvals": "approvals by reviewers",
    "gate_decisions": "promotion gate decisions",
    "policy_changes": "gate policy changes",
    "deployments": "deployments started",
    "replacements": "instances replaced (destroyed, never modified)",
    "recoveries": "heals, reconciliations and rollbacks",
    "admission_refusals": "deployments refused at admission",
    "drift_checks": "drift checks run (clean ones included)",
    "drift_findings": "drift findings",
    "drift_remediations": "drift remediated by replacement",
    "patches": "critical vulnerabilities fixed in the environment",
    "vuln_exceptions": "vulnerability exceptions granted",
    "logs_kept": "instance logs kept as evidence",
}
"""Evidence kind -> what it counts (docs/reports.md lists the events behind each)."""

EXCEPTIONS: dict[str, str] = {
    "override": "break-glass override of the promotion gate",
    "refusal-overridden": "refused promotion later overridden",
    "drift": "drift finding on a running instance",
    "late-patch": "critical vulnerability exposed longer than the threshold",
    "unauthenticated": "events whose actor was not authenticated",
}

STATUSES = ("satisfied", "partial", "no evidence")

_OUTSIDE = "Outside what the ledger records: bring this evidence from elsewhere."


@dataclass(frozen=True)
class Control:
    id: str
    title: str
    text: str
    """What the control asks, in our words."""
    required: tuple[str, ...]
    supporting: tuple[str, ...] = ()
    exceptions: tuple[str, ...] = ()
    note: str = ""


@dataclass(frozen=True)
class Framework:
    id: str
    title: str
    controls: tuple[Control, ...]


_SOC2 = Framework(
    "soc2",
    "SOC 2: AICPA Trust Services Criteria (2017, revised points of focus 2022)",
    (
        Control(
            "CC6.1",
            "Logical access security",
            "Access to systems and data goes through logical access controls, and actions can "
            "be tied to identities that proved who they are.",
            ("access_changes", "key_events", "authenticated_events"),
            exceptions=("unauthenticated",),
        ),
        Control(
            "CC6.2",
            "Registering and authorizing users",
            "People and systems are registered and authorized before they get credentials, "
            "and credentials are removed when no longer needed.",
            ("access_changes", "key_events"),
        ),
        Control(
            "CC6.3",
            "Role-based access and segregation of duties",
            "Access is given, changed and removed by role, with least privilege and separation "
            "of incompatible duties (who builds, who approves, who deploys).",
            ("access_changes", "approvals", "signatures"),
            exceptions=("override",),
        ),
        Control(
            "CC6.8",
            "Unauthorized or malicious software",
            "Controls prevent or detect the introduction of unauthorized or malicious software.",
            ("signatures", "gate_decisions", "scans"),
            ("admission_refusals", "drift_findings"),
            ("override", "refusal-overridden", "drift"),
        ),
        Control(
            "CC7.1",
            "Detecting configuration changes and new vulnerabilities",
            "Detection and monitoring find configuration changes that introduce weaknesses, and "
            "newly discovered vulnerabilities.",
            ("vulndb_updates", "scans", "baseline_checks"),
            ("drift_findings", "patches"),
            ("late-patch",),
        ),
        Control(
            "CC7.2",
            "Monitoring for anomalies",
            "System components are monitored for anomalies that may indicate malicious acts, "
            "errors or failures, and the anomalies are analysed.",
            ("events_recorded", "ledger_checkpoint"),
            ("drift_checks", "drift_findings", "drift_remediations", "recoveries"),
            ("drift", "unauthenticated"),
        ),
        Control(
            "CC8.1",
            "Change management",
            "Changes are authorized, designed, tested, approved and implemented through a "
            "controlled process, and recorded.",
            ("builds", "tests", "approvals", "gate_decisions", "deployments"),
            ("provenance", "recoveries", "policy_changes"),
            ("override", "refusal-overridden"),
        ),
    ),
)

_PCI = Framework(
    "pci-dss-4",
    "PCI DSS v4.0 (v4.0.1)",
    (
        Control(
            "6.3.1",
            "Identifying and ranking vulnerabilities",
            "New security vulnerabilities are identified from industry-recognised sources and "
            "given a risk ranking.",
            ("vulndb_updates", "scans"),
        ),
        Control(
            "6.3.2",
            "Inventory of software components",
            "An inventory of bespoke and custom software and the third-party components in it "
            "is kept, to manage vulnerabilities and patches.",
            ("sboms",),
            ("builds",),
        ),
        Control(
            "6.3.3",
            "Patching known vulnerabilities",
            "System components are protected from known vulnerabilities by installing patches; "
            "critical ones within one month of release.",
            ("scans", "deployments"),
            ("patches",),
            ("late-patch",),
        ),
        Control(
            "6.4.1",
            "Protecting public-facing web applications (assessment)",
            "Public-facing web applications are protected against known attacks by regular "
            "application security assessment.",
            (),
            note=_OUTSIDE,
        ),
        Control(
            "6.4.2",
            "Protecting public-facing web applications (automated solution)",
            "An automated technical solution detects and prevents web-based attacks in front "
            "of public-facing web applications.",
            (),
            note=_OUTSIDE,
        ),
        Control(
            "6.5.1",
            "Change procedures",
            "Changes in production follow a procedure: reason and description, security "
            "impact, documented approval, testing, and a way back to a secure state.",
            ("approvals", "tests", "gate_decisions", "deployments"),
            ("recoveries",),
            ("override", "refusal-overridden"),
        ),
        Control(
            "6.5.2",
            "Requirements confirmed after significant changes",
            "After a significant change, the applicable requirements are confirmed to be in place.",
            ("baseline_checks", "gate_decisions"),
            ("drift_findings",),
        ),
        Control(
            "6.5.3",
            "Pre-production separated from production",
            "Pre-production environments are separated from production and the separation is "
            "enforced with access controls.",
            ("gate_decisions", "approvals"),
            note="The ledger shows each environment's own gate and approvals; network "
            "separation is outside it.",
        ),
        Control(
            "6.5.4",
            "Separated roles between production and pre-production",
            "Roles are separated so that only reviewed and approved changes reach production, "
            "with accountability.",
            ("approvals", "signatures", "access_changes"),
            exceptions=("override",),
        ),
        Control(
            "6.5.5",
            "No live account data in pre-production",
            "Live primary account numbers are not used in pre-production environments.",
            (),
            note=_OUTSIDE,
        ),
        Control(
            "6.5.6",
            "Test data removed before production",
            "Test data and test accounts are removed before a system goes into production.",
            (),
            note=_OUTSIDE,
        ),
        Control(
            "10.2.1",
            "Audit logs enabled and active",
            "Audit logs are enabled and active for all system components.",
            ("events_recorded", "ledger_checkpoint"),
        ),
        Control(
            "10.2.2",
            "Audit log details",
            "Each logged event records who, what type, when, success or failure, where from "
            "and which component or resource.",
            ("events_recorded", "authenticated_events"),
            exceptions=("unauthenticated",),
        ),
        Control(
            "10.3.2",
            "Audit logs protected from modification",
            "Audit log files are protected against modification by individuals.",
            ("ledger_checkpoint",),
        ),
        Control(
            "10.3.4",
            "Change detection on audit logs",
            "File integrity monitoring or change detection ensures existing log data cannot be "
            "changed without raising an alert.",
            ("ledger_checkpoint", "events_recorded"),
        ),
        Control(
            "11.5.2",
            "Change detection on critical files",
            "A change-detection mechanism alerts on unauthorized modification of critical "
            "files and compares them at least weekly.",
            ("drift_checks",),
            ("drift_findings", "drift_remediations"),
        ),
    ),
)

_NIST = Framework(
    "nist-800-190",
    "NIST SP 800-190, Application Container Security Guide, section 4 countermeasures",
    (
        Control(
            "4.1.1",
            "Image vulnerabilities",
            "Images are scanned for vulnerabilities throughout their life, and images that "
            "fail are kept out of production by policy.",
            ("vulndb_updates", "scans", "gate_decisions"),
            ("patches",),
            ("late-patch", "override"),
        ),
        Control(
            "4.1.2",
            "Image configuration defects",
            "Image configuration is checked against hardening best practice before use.",
            ("baseline_checks",),
        ),
        Control(
            "4.1.3",
            "Embedded malware",
            "Images are monitored for embedded malware.",
            (),
            note="Scans match known vulnerabilities, not malware signatures. " + _OUTSIDE,
        ),
        Control(
            "4.1.4",
            "Embedded clear text secrets",
            "Secrets are kept out of images and provided at run time.",
            ("baseline_checks",),
            note="The baseline checks include a scan of image files for secrets.",
        ),
        Control(
            "4.1.5",
            "Use of untrusted images",
            "Only trusted images, of known provenance and signed, may run.",
            ("builds", "provenance", "signatures", "gate_decisions"),
            exceptions=("override",),
        ),
        Control(
            "4.2.2",
            "Stale images",
            "Images are referred to immutably and stale, vulnerable versions stop being used.",
            ("deployments", "replacements"),
            ("patches",),
            ("late-patch",),
        ),
        Control(
            "4.2.3",
            "Authentication and authorization to registries",
            "Access to images is authenticated and authorized, and changes are attributable.",
            ("access_changes", "authenticated_events"),
            exceptions=("unauthenticated",),
        ),
        Control(
            "4.3.1",
            "Unbounded administrative access",
            "Administrative access follows least privilege: each person may do only what their "
            "role needs, where it needs it.",
            ("access_changes",),
            exceptions=("override",),
        ),
        Control(
            "4.3.2",
            "Unauthorized access",
            "Access to the orchestrator is authenticated with strong credentials.",
            ("authenticated_events", "key_events"),
            exceptions=("unauthenticated",),
        ),
        Control(
            "4.4.3",
            "Insecure container runtime configurations",
            "Containers run with the declared, hardened configuration, and deviations are "
            "detected.",
            ("deployments",),
            ("admission_refusals", "drift_findings"),
            ("drift",),
        ),
        Control(
            "4.4.5",
            "Rogue containers",
            "Only containers started by the controlled process run; anything else is detected.",
            ("deployments",),
            ("drift_checks", "drift_findings", "drift_remediations"),
            ("drift",),
        ),
    ),
)

_GDPR = Framework(
    "gdpr-32",
    "GDPR Article 32: security of processing",
    (
        Control(
            "Art. 32(1)(b)",
            "Confidentiality, integrity, availability and resilience",
            "Processing systems keep their confidentiality, integrity, availability and "
            "resilience on an ongoing basis.",
            ("authenticated_events", "signatures", "ledger_checkpoint", "deployments"),
            ("recoveries", "drift_remediations"),
            ("unauthenticated", "drift"),
        ),
        Control(
            "Art. 32(1)(c)",
            "Timely restoration",
            "Availability and access can be restored in a timely manner after an incident.",
            ("recoveries",),
        ),
        Control(
            "Art. 32(1)(d)",
            "Regular testing and evaluation",
            "The effectiveness of the technical and organisational measures is regularly "
            "tested, assessed and evaluated.",
            ("scans", "baseline_checks", "tests", "gate_decisions"),
            ("drift_findings",),
            ("late-patch", "override"),
        ),
    ),
)

_HIPAA = Framework(
    "hipaa",
    "HIPAA Security Rule (45 CFR Part 164, Subpart C)",
    (
        Control(
            "164.308(a)(1)(ii)(B)",
            "Risk management",
            "Security measures reduce risks and vulnerabilities to a reasonable and appropriate "
            "level.",
            ("scans", "gate_decisions"),
            ("patches",),
            ("late-patch", "override"),
        ),
        Control(
            "164.308(a)(1)(ii)(D)",
            "Information system activity review",
            "Records of system activity, such as audit logs and incident reports, are reviewed "
            "regularly.",
            ("events_recorded", "ledger_checkpoint"),
            ("drift_findings", "drift_remediations"),
        ),
        Control(
            "164.308(a)(5)(ii)(B)",
            "Protection from malicious software",
            "Procedures guard against, detect and report malicious software.",
            ("scans", "signatures"),
            exceptions=("drift",),
        ),
        Control(
            "164.312(a)(1)",
            "Access control",
            "Systems holding electronic protected health information allow access only to the "
            "people and programs that were granted it.",
            ("access_changes", "authenticated_events"),
            exceptions=("unauthenticated",),
        ),
        Control(
            "164.312(b)",
            "Audit controls",
            "Mechanisms record and allow examination of activity in the information systems.",
            ("events_recorded", "ledger_checkpoint"),
        ),
        Control(
            "164.312(c)(1)",
            "Integrity",
            "Electronic protected health information is protected from improper alteration or "
            "destruction.",
            ("signatures", "ledger_checkpoint"),
            ("drift_findings", "drift_remediations"),
            ("drift",),
        ),
        Control(
            "164.312(d)",
            "Person or entity authentication",
            "Whoever seeks access is verified to be who they claim to be.",
            ("authenticated_events", "key_events"),
            exceptions=("unauthenticated",),
        ),
    ),
)

_ALL = (_SOC2, _PCI, _NIST, _GDPR, _HIPAA)
BY_ID: dict[str, Framework] = {f.id: f for f in _ALL}
FRAMEWORKS: tuple[str, ...] = tuple(BY_ID)
