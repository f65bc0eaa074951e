"""The built-in rule pack: what each rule asks of an image, why, and which controls it serves.

Rules are data; the code that decides each one is in :mod:`immutrail.baseline.checks`. Control
references use the real section numbers of:

* CIS Docker Benchmark v1.6.0 (section 4 "Container Images and Build File Configuration"; 5.6
  "Ensure sshd is not run within containers" is in section 5, which docker-bench-security implements
  with the same number);
* NIST SP 800-190 "Application Container Security Guide", section 4 (countermeasures): 4.1.2 image
  configuration defects, 4.1.4 embedded clear text secrets, 4.1.5 use of untrusted images;
* PCI DSS v4.0 requirement 2.2 (secure configuration of system components) and, where a rule serves
  it more precisely, 4.2.1 (strong cryptography in transit), 6.3.2 (software component inventory)
  and 8.6.2 (no hard-coded credentials).

The pack's digest (SHA-256 of its canonical JSON) goes into every baseline attestation, so an
auditor can tell which version of which rules judged an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Any

from immutrail.crypto.canonical import canonical_json

RULE_PACK_NAME = "immutrail-baseline"
RULE_PACK_VERSION = "1.0.0"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def at_least(self, other: Severity) -> bool:
        return self.rank >= other.rank


_RANKS = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}
DEFAULT_FAIL_ON = Severity.HIGH
"""An image passes when no rule of this severity or above fails (``--fail-on`` changes it)."""


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    rationale: str
    severity: Severity
    remediation: str
    controls: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "rationale": self.rationale,
            "severity": str(self.severity),
            "remediation": self.remediation,
            "controls": list(self.controls),
        }


NO_SSH_SERVER = "IMT-BL-001"
NO_AUTHORIZED_KEYS = "IMT-BL-002"
NON_ROOT_USER = "IMT-BL-003"
NO_SETUID = "IMT-BL-004"
NO_WORLD_WRITABLE = "IMT-BL-005"
NO_PRIVATE_KEYS = "IMT-BL-006"
NO_TOKENS = "IMT-BL-007"
BASE_PINNED = "IMT-BL-008"
HEALTHCHECK = "IMT-BL-009"
NO_PACKAGE_CACHES = "IMT-BL-010"
TLS_MINIMUM = "IMT-BL-011"
NO_DEBUG_LOGGING = "IMT-BL-012"

RULES: tuple[Rule, ...] = (
    Rule(
        NO_SSH_SERVER,
        "No SSH server in the image",
        "Immutable instances are never logged into: a fix is a new image. An SSH daemon is an "
        "unneeded network service, a way to change a running instance outside the audit trail, "
        "and one more set of credentials to manage.",
        Severity.HIGH,
        "Remove the SSH server package (openssh-server, dropbear, tinysshd) and its "
        "configuration; use the orchestrator's exec for debugging and replace instances to "
        "change them.",
        (
            "CIS Docker 5.6",
            "CIS Docker 4.3",
            "NIST SP 800-190 4.1.2",
            "PCI DSS 4.0 2.2.4",
        ),
    ),
    Rule(
        NO_AUTHORIZED_KEYS,
        "No SSH authorized_keys files",
        "An authorized_keys file grants someone interactive access to instances of the image, "
        "which the no-SSH mandate forbids and which no approval recorded.",
        Severity.HIGH,
        "Delete every .ssh/authorized_keys and authorized_keys2 from the image source.",
        ("CIS Docker 5.6", "NIST SP 800-190 4.1.2", "PCI DSS 4.0 2.2.2", "PCI DSS 4.0 2.2.4"),
    ),
    Rule(
        NON_ROOT_USER,
        "Runs as a non-root user",
        "A process running as root inside a container is root on the host after any container "
        "escape, and can change everything in its own filesystem.",
        Severity.HIGH,
        'Set `user: "UID:GID"` (a non-zero numeric uid) in the image definition, or USER in a '
        "Dockerfile, and give that user only the files it needs.",
        ("CIS Docker 4.1", "NIST SP 800-190 4.1.2", "PCI DSS 4.0 2.2.6"),
    ),
    Rule(
        NO_SETUID,
        "No unexpected setuid or setgid files",
        "Setuid and setgid programs run with another identity's privileges and are the usual "
        "way from a compromised process to root.",
        Severity.HIGH,
        "Remove the setuid/setgid bits (chmod u-s,g-s) or the programs; an image that truly "
        "needs one names it with `immutrail check --allow-setuid PATH`, which the attestation "
        "records.",
        ("CIS Docker 4.8", "NIST SP 800-190 4.1.2", "PCI DSS 4.0 2.2.6"),
    ),
    Rule(
        NO_WORLD_WRITABLE,
        "No world-writable files outside temporary folders",
        "A file any user can write is a file any compromised process can change: configuration, "
        "code or data of another user.",
        Severity.MEDIUM,
        "Remove the write bit for others (chmod o-w); world-writable folders outside /tmp, "
        "/var/tmp, /dev/shm and /run/lock need at least the sticky bit.",
        ("NIST SP 800-190 4.1.2", "PCI DSS 4.0 2.2.6"),
    ),
    Rule(
        NO_PRIVATE_KEYS,
        "No private keys in any layer",
        "Everyone who can pull the image can read every layer, including files a later layer "
        "deleted or replaced: a private key in any layer is disclosed.",
        Severity.CRITICAL,
        "Remove the key from the source and from every layer (rebuild, do not delete in a later "
        "layer), revoke and replace it, and give keys to instances at run time (a secrets "
        "manager or mounted secret).",
        ("CIS Docker 4.10", "NIST SP 800-190 4.1.4", "PCI DSS 4.0 2.2.6", "PCI DSS 4.0 8.6.2"),
    ),
    Rule(
        NO_TOKENS,
        "No access tokens or .env secrets in any layer or in the environment",
        "Access tokens, cloud keys and passwords in files (including deleted or replaced ones) or "
        "in the image's environment are readable by everyone who can pull the image.",
        Severity.CRITICAL,
        "Remove the credential from the source and every layer, rotate it, and inject it at run "
        "time; keep .env files out of images (exclude them in the definition).",
        ("CIS Docker 4.10", "NIST SP 800-190 4.1.4", "PCI DSS 4.0 8.6.2"),
    ),
    Rule(
        BASE_PINNED,
        "Base image pinned by digest",
        "A base named by a tag can change under the same name; only a digest says exactly which "
        "bytes the image was built on, so that its scan and approval stay meaningful.",
        Severity.MEDIUM,
        "Build on `base: sha256:<digest>` (immutrail builds always do), or record the base with "
        "the org.opencontainers.image.base.name and .base.digest annotations.",
        ("CIS Docker 4.2", "NIST SP 800-190 4.1.5", "PCI DSS 4.0 6.3.2"),
    ),
    Rule(
        HEALTHCHECK,
        "Healthcheck present",
        "Without a healthcheck the runtime cannot tell a hung instance from a healthy one, and "
        "replacement-based remediation never starts.",
        Severity.LOW,
        "Add `healthcheck: {test: [CMD, ...]}` to the image definition (HEALTHCHECK in a "
        "Dockerfile).",
        ("CIS Docker 4.6",),
    ),
    Rule(
        NO_PACKAGE_CACHES,
        "No package-manager caches",
        "Package caches and index files (apt, apk, yum/dnf, pip, npm, yarn) are not needed at "
        "run time: they enlarge the image and its attack surface and pin stale package lists.",
        Severity.LOW,
        "Clean caches in the same step that installs (apt-get clean and rm -rf "
        "/var/lib/apt/lists/*, apk --no-cache, pip --no-cache-dir, npm cache clean --force).",
        ("CIS Docker 4.3", "NIST SP 800-190 4.1.2", "PCI DSS 4.0 2.2.4"),
    ),
    Rule(
        TLS_MINIMUM,
        "TLS configuration not below TLS 1.2",
        "SSLv2, SSLv3, TLS 1.0 and TLS 1.1 have known weaknesses and are no longer strong "
        "cryptography.",
        Severity.HIGH,
        "Allow only TLSv1.2 and TLSv1.3: nginx `ssl_protocols TLSv1.2 TLSv1.3;`, Apache "
        "`SSLProtocol -all +TLSv1.2 +TLSv1.3`, OpenSSL `MinProtocol = TLSv1.2`.",
        ("NIST SP 800-190 4.1.2", "PCI DSS 4.0 2.2.7", "PCI DSS 4.0 4.2.1"),
    ),
    Rule(
        NO_DEBUG_LOGGING,
        "Logging not at debug level",
        "Debug logging records request bodies, headers and internal state: credentials and "
        "personal data end up in logs, and the volume hides what matters.",
        Severity.MEDIUM,
        "Set the log level to info or above in the image (nginx error_log, Apache LogLevel, sshd "
        "LogLevel, logging/log4j/logback configuration, LOG_LEVEL/DEBUG environment).",
        ("NIST SP 800-190 4.1.2", "PCI DSS 4.0 2.2.6"),
    ),
)

RULES_BY_ID = {rule.id: rule for rule in RULES}


@cache
def rule_pack_digest() -> str:
    """SHA-256 of the pack's canonical JSON: name, version and every rule as published."""
    import hashlib

    document = {
        "name": RULE_PACK_NAME,
        "version": RULE_PACK_VERSION,
        "rules": [rule.to_dict() for rule in RULES],
    }
    return "sha256:" + hashlib.sha256(canonical_json(document)).hexdigest()


def rule_pack() -> dict[str, str]:
    return {"name": RULE_PACK_NAME, "version": RULE_PACK_VERSION, "digest": rule_pack_digest()}
