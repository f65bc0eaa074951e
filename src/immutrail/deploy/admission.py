"""Admission: the last check before an instance is created, whatever the runtime.

An image may run in an environment only if it is exactly the digest the gate last promoted there,
carries at least one release signature that verifies with a non-revoked ledger key, and every
blob in the store still matches its digest. A refusal raises :class:`AdmissionError` with the
reason and appends ``deploy.admission.refused``; an admission records nothing (the deployment
that follows does).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from immutrail import names
from immutrail.artifacts.digests import is_digest
from immutrail.artifacts.errors import ArtifactError
from immutrail.artifacts.store import Store
from immutrail.ledger.event import Event
from immutrail.ledger.ledger import Ledger
from immutrail.policy.desired import SERVICE_NAME, desired_state
from immutrail.signing.sign import valid_signatures

from .runtime import AdmissionError

EVENT_REFUSED = "deploy.admission.refused"
MAX_REASON_CHARS = 2000


@dataclass(frozen=True)
class Admission:
    environment: str
    service: str
    digest: str
    promoted_at_index: int
    """The ledger index of the ``promotion.decided`` event that put the digest there."""
    signers: tuple[str, ...]


def admit(
    home: Path,
    store: Store,
    ledger: Ledger,
    environment: str,
    service: str,
    digest: str,
    actor: str,
) -> Admission:
    """Admit ``digest`` to ``service`` in ``environment`` or raise :class:`AdmissionError`."""
    # Malformed input is refused without an event: there is no image to say it about.
    names.check_environment(environment, AdmissionError)
    if not SERVICE_NAME.fullmatch(service):
        raise AdmissionError(f"{service!r} is not a service name")
    if not is_digest(digest):
        raise AdmissionError(f"{digest!r} is not a digest of the form sha256:<64 hex digits>")

    def refuse(reason: str) -> AdmissionError:
        reason = reason[:MAX_REASON_CHARS]
        ledger.append(
            Event.create(
                EVENT_REFUSED,
                actor,
                digest,
                {"environment": environment, "service": service, "reason": reason},
            )
        )
        return AdmissionError(f"{digest} may not run in {where}: {reason}")

    where = f"{environment}/{service}"
    desired = desired_state(home, ledger, store, environment, service)
    if desired is None:
        raise refuse(f"no image has been promoted to {where}")
    if desired.digest != digest:
        raise refuse(
            f"not the image promoted to {where}: that is {desired.digest} "
            f"(ledger entry {desired.ledger_index})"
        )
    try:
        store.verify(digest)
        signatures, rejected = valid_signatures(store, ledger, digest)
    except ArtifactError as exc:
        raise refuse(f"the stored image does not verify: {exc}") from exc
    if not signatures:
        why = "; ".join(f"{item.attestation}: {item.reason}" for item in rejected)
        raise refuse(
            "no valid release signature by a non-revoked key" + (f" ({why})" if why else "")
        )
    return Admission(
        environment, service, digest, desired.ledger_index, tuple(s.principal for s in signatures)
    )
