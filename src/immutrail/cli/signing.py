"""`immutrail sign`, `approve` and `verify`: principals sign and approve images; anyone verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from immutrail.access.actor import Actor
from immutrail.access.model import Action
from immutrail.artifacts.import_attest import load_keys
from immutrail.artifacts.store import Store
from immutrail.keys.keystore import SigningKey, load_signing_key
from immutrail.ledger.ledger import Ledger
from immutrail.signing.approve import approve_image
from immutrail.signing.errors import SigningInputError
from immutrail.signing.sign import sign_image
from immutrail.signing.verify import Status, VerifyOptions, VerifyReport, verify_image

from .common import (
    DEFAULT_HOME,
    AsOption,
    Caller,
    DbOption,
    ExitCode,
    Format,
    FormatOption,
    HomeOption,
    KeyFileOption,
    PassphraseFileOption,
    TokenOption,
    authorized,
    emit_json,
    errors_to_exit_codes,
    passphrase_source,
    progress,
    stdout,
)

DigestArgument = Annotated[str, typer.Argument(help="The image: a digest (sha256:…) or a tag.")]
KeyOption = Annotated[
    str | None,
    typer.Option("--key", metavar="KEYID", help="Sign with this key (id or its first 8+ digits)."),
]
PrincipalOption = Annotated[
    str | None,
    typer.Option(
        "--principal",
        envvar="IMMUTRAIL_PRINCIPAL",
        help="Sign with this principal's only usable key here (once access control is set up: "
        "it must be the --as caller).",
    ),
]


def signing_key(
    home: Path,
    ledger: Ledger,
    key: str | None,
    principal: str | None,
    key_file: Path | None,
    passphrase_file: Path | None,
) -> SigningKey:
    return load_signing_key(
        home,
        ledger,
        passphrase=passphrase_source(passphrase_file),
        keyid=key,
        principal=principal,
        key_file=key_file,
    )


def signer_of(
    home: Path,
    ledger: Ledger,
    who: Actor,
    caller: Caller,
    key: str | None,
    principal: str | None,
    fallback: str | None,
) -> SigningKey:
    """The key a command signs with.

    Once access control is set up it is the caller's own (the key it authenticated with): naming
    another principal or key is refused. In setup mode it is the key named by --key, --principal
    or --key-file, else ``fallback``'s only key here.
    """
    if who.authenticated:
        return who.signer(principal=principal, key=key)
    named = any(v is not None for v in (key, principal, caller.key_file))
    return signing_key(
        home,
        ledger,
        key,
        principal if named else fallback,
        caller.key_file,
        caller.passphrase_file,
    )


def sign(
    digest: DigestArgument,
    key: KeyOption = None,
    principal: PrincipalOption = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Sign an image's manifest digest (a DSSE in-toto statement, attached; image.signed).

    Needs image.sign once access control is set up, and signs with the caller's own key.
    Exit codes: 0 signed; 1 not authenticated or not allowed; 2 refused, nothing attached or
    recorded (unknown image, unknown or revoked key, wrong passphrase, already signed by this
    principal, signing as another principal or with a token); 3 store or ledger error.
    """
    caller = Caller(as_, token, key_file, passphrase_file)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.IMAGE_SIGN, caller=caller) as (ledger, who),
    ):
        signer = signer_of(home, ledger, who, caller, key, principal, caller.principal)
        done = sign_image(Store.for_home(home), ledger, home, digest, signer)
    if fmt is Format.json:
        emit_json(
            {"digest": done.digest, **done.signature.to_dict(), "ledger_index": done.ledger_index}
        )
        return
    stdout.print(f"signed {done.digest}", markup=False)
    stdout.print(
        f"  by          {done.signature.principal} (key {done.signature.keyid})", markup=False
    )
    stdout.print(f"  attestation {done.signature.attestation}", markup=False)
    stdout.print(f"  ledger      entry {done.ledger_index} (image.signed)", markup=False)


def approve(
    digest: DigestArgument,
    env: Annotated[str, typer.Option("--env", help="The environment approved for, e.g. prod.")],
    comment: Annotated[
        str | None, typer.Option("--comment", help="Why (inside the signed approval).")
    ] = None,
    key: KeyOption = None,
    principal: PrincipalOption = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Approve an image for one environment, signed with the approver's key (image.approved).

    The signed approval names the digest and the environment, so it cannot be replayed for
    another image or environment. Needs image.approve once access control is set up, and signs
    with the caller's own key. Exit codes: 0 approved; 1 not authenticated or not allowed; 2
    refused, nothing attached or recorded (unknown image, bad environment name, unknown or
    revoked key, a build key, wrong passphrase, this principal already approved it for this
    environment, approving as another principal or with a token); 3 store or ledger.
    """
    caller = Caller(as_, token, key_file, passphrase_file)
    with (
        errors_to_exit_codes(),
        authorized(home, db, Action.IMAGE_APPROVE, caller=caller) as (ledger, who),
    ):
        approver = signer_of(home, ledger, who, caller, key, principal, caller.principal)
        done = approve_image(
            Store.for_home(home), ledger, home, digest, env, approver, comment=comment
        )
    if fmt is Format.json:
        emit_json(
            {"digest": done.digest, **done.approval.to_dict(), "ledger_index": done.ledger_index}
        )
        return
    stdout.print(f"approved {done.digest} for {done.approval.environment}", markup=False)
    stdout.print(
        f"  by          {done.approval.principal} (key {done.approval.keyid})", markup=False
    )
    stdout.print(f"  attestation {done.approval.attestation}", markup=False)
    stdout.print(f"  ledger      entry {done.ledger_index} (image.approved)", markup=False)


_LABELS = {
    Status.VERIFIED: "verified",
    Status.FAILED: "FAILED",
    Status.NEEDS_NETWORK: "NEEDS NETWORK",
    Status.IDENTITY_NOT_CHECKED: "IDENTITY NOT CHECKED",
    Status.UNVERIFIED: "UNVERIFIED",
    Status.MISSING: "MISSING",
    Status.IGNORED: "ignored",
}


def _print_report(report: VerifyReport) -> None:
    stdout.print(f"image {report.digest}", markup=False)
    for check in report.checks:
        stdout.print(
            f"  {_LABELS[check.status]:<20} {check.kind:<15} {check.subject[:19]}…  {check.detail}",
            markup=False,
        )
    summary = ", ".join(f"{count} {status}" for status, count in sorted(report.counts().items()))
    verdict = "all verified" if report.ok else "NOT all verified"
    stdout.print(f"{verdict}: {summary}", markup=False)


def verify(
    digest: DigestArgument,
    certificate_identity: Annotated[
        str | None,
        typer.Option(
            "--certificate-identity",
            help="Sigstore bundles must be signed by this identity (e-mail or URI SAN).",
        ),
    ] = None,
    certificate_oidc_issuer: Annotated[
        str | None,
        typer.Option(
            "--certificate-oidc-issuer",
            help="…as vouched for by this OIDC issuer, e.g. https://token.actions."
            "githubusercontent.com.",
        ),
    ] = None,
    trusted_root: Annotated[
        Path | None,
        typer.Option(
            "--trusted-root",
            metavar="FILE",
            help="A Sigstore trusted_root.json to use instead of the one immutrail ships.",
        ),
    ] = None,
    key: Annotated[
        list[Path] | None,
        typer.Option(
            "--key",
            metavar="PEM",
            help="An outside public key that DSSE statements may be signed by (repeatable).",
        ),
    ] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Verify an image offline: its blobs, ledger record, SBOM, every signed statement (against
    keys the ledger announces and has not revoked) and every Sigstore bundle attached to it.

    Each item is reported as verified, failed (why), needs-network (what), identity-not-checked
    (Sigstore bundles without --certificate-identity and --certificate-oidc-issuer), unverified
    (signed by no known key), missing (no SBOM) or ignored (an artifact type verify does not
    check). Nothing is written. Needs ledger.read once access control is set up. Exit codes: 0
    every item verified (or ignored); 1 anything else, or not authenticated or not allowed; 2
    usage or input error (unknown image, bad key or trusted root); 3 store or ledger error.
    """
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        if (certificate_identity is None) != (certificate_oidc_issuer is None):
            raise SigningInputError(
                "give both --certificate-identity and --certificate-oidc-issuer, or neither"
            )
        identity = None
        if certificate_identity is not None and certificate_oidc_issuer is not None:
            from immutrail.signing.sigstore_bundles import IdentityPolicy

            identity = IdentityPolicy(certificate_identity, certificate_oidc_issuer)
        options = VerifyOptions(identity, trusted_root, load_keys(key or []))
        with (
            authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _),
            progress("verifying", None) as bar,
        ):
            task = bar.task_ids[0]
            report = verify_image(
                Store.for_home(home),
                ledger,
                digest,
                options,
                lambda done, total: bar.update(task, completed=done, total=total),
            )
    if fmt is Format.json:
        emit_json(
            {
                "digest": report.digest,
                "ok": report.ok,
                "counts": report.counts(),
                "checks": [check.to_dict() for check in report.checks],
            }
        )
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))
