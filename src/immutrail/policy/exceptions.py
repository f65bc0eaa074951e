"""Vulnerability exceptions: a recorded, expiring, signed "we accept this finding here".

An exception names one vulnerability (by id or any of its aliases), one environment and
optionally one image digest; it expires (at most :data:`MAX_EXCEPTION_DAYS` after it was granted)
and carries a reason. It is a ledger event signed by the granting principal, so it counts only
while that key is announced and not revoked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from immutrail import names
from immutrail.artifacts.digests import check_digest
from immutrail.artifacts.statements import LedgerKey
from immutrail.crypto.keys import PrivateKey
from immutrail.ledger.event import Event, format_time, parse_entry, parse_time
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter

from .authenticated import authenticated_actor, signed_by_principal
from .errors import PolicyInputError

EVENT_EXCEPTION = "vulnerability.exception.granted"
MAX_EXCEPTION_DAYS = 365
VULNERABILITY_ID = re.compile(r"[A-Za-z][A-Za-z0-9._:-]{1,127}")


@dataclass(frozen=True)
class VulnerabilityException:
    vulnerability: str
    environment: str
    digest: str | None
    expires: datetime
    reason: str
    granted_by: str
    ledger_index: int

    def covers(self, ids: set[str], digest: str) -> bool:
        return self.vulnerability in ids and self.digest in (None, digest)

    def to_json(self) -> dict[str, object]:
        return {
            "vulnerability": self.vulnerability,
            "environment": self.environment,
            "digest": self.digest,
            "expires": format_time(self.expires),
            "reason": self.reason,
            "granted_by": self.granted_by,
            "ledger_index": self.ledger_index,
        }


def grant_exception(
    ledger: Ledger,
    keys: Mapping[str, LedgerKey],
    key: PrivateKey,
    actor: str,
    vulnerability: str,
    environment: str,
    expires: datetime,
    reason: str,
    now: datetime,
    digest: str | None = None,
) -> int:
    """Record a signed exception; PolicyInputError (nothing written) when anything is off."""
    if not VULNERABILITY_ID.fullmatch(vulnerability):
        raise PolicyInputError(f"{vulnerability!r} is not a vulnerability id such as CVE-2024-1")
    names.check_environment(environment, PolicyInputError)
    if not reason.strip():
        raise PolicyInputError("an exception needs a reason")
    if expires <= now:
        raise PolicyInputError(f"the expiry {format_time(expires)} is not in the future")
    if expires - now > timedelta(days=MAX_EXCEPTION_DAYS):
        raise PolicyInputError(f"an exception may last at most {MAX_EXCEPTION_DAYS} days")
    if digest is not None:
        check_digest(digest, "digest")
    event = Event.create(
        EVENT_EXCEPTION,
        actor,
        f"vuln:{vulnerability}",
        {
            "environment": environment,
            "digest": digest,
            "expires": format_time(expires),
            "reason": reason.strip(),
        },
    )
    return ledger.append(signed_by_principal(event, key, keys)).index


def active_exceptions(
    ledger: Ledger, keys: Mapping[str, LedgerKey], environment: str, now: datetime
) -> list[VulnerabilityException]:
    """Exceptions for ``environment`` that have not expired and whose signature still counts."""
    found = []
    for row in ledger.entries(EntryFilter(type=EVENT_EXCEPTION)):
        event = parse_entry(row.data)
        payload = event.payload
        if payload.get("environment") != environment or authenticated_actor(event, keys):
            continue
        expires = parse_time(str(payload.get("expires")), field="expires")
        if expires <= now:
            continue
        digest = payload.get("digest")
        found.append(
            VulnerabilityException(
                event.subject.removeprefix("vuln:"),
                environment,
                digest if isinstance(digest, str) else None,
                expires,
                str(payload.get("reason", "")),
                event.actor,
                row.index,
            )
        )
    return found
