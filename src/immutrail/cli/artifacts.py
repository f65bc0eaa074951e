"""`immutrail build` and `immutrail artifact …`: build images, list, show and export the store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Table
from rich.text import Text

from immutrail.access.model import Action
from immutrail.artifacts.builder import BuildResult
from immutrail.artifacts.builder import build as build_image
from immutrail.artifacts.export import export_image
from immutrail.artifacts.imageconfig import BuiltLayer
from immutrail.artifacts.oci import check_tag
from immutrail.artifacts.store import STORE_DIR, Store

from .common import (
    DEFAULT_HOME,
    EXIT_CODES_HELP,
    ActorOption,
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
    check_access,
    emit_json,
    errors_to_exit_codes,
    fail,
    progress,
    stdout,
)

app = typer.Typer(
    no_args_is_help=True,
    help=f"The image store (an OCI image layout in the home folder). {EXIT_CODES_HELP}",
)


class _Bar:
    """Draws build progress on stderr (rich hides it when stderr is not a terminal)."""

    def __init__(self, bar: Progress):
        self.bar = bar
        self.task: TaskID = bar.task_ids[0]

    def layer_started(self, index: int, total: int, description: str) -> None:
        self.bar.update(self.task, total=total, description=f"layer {description}")

    def layer_finished(self, index: int, layer: BuiltLayer) -> None:
        self.bar.advance(self.task)


def _layer_json(layer: BuiltLayer) -> dict[str, Any]:
    return {
        "digest": layer.descriptor.digest,
        "media_type": layer.descriptor.media_type,
        "diff_id": layer.diff_id,
        "size": layer.descriptor.size,
        "created_by": layer.created_by,
    }


def _print_build(result: BuildResult) -> None:
    state = "dirty work tree" if result.dirty else "clean"
    lines = [
        f"built {result.digest}",
        f"  tag     {result.tag or '(none)'}",
        f"  commit  {result.commit} ({state})",
        f"  config  {result.config.digest}",
        f"  ledger  entry {result.ledger_index}",
        f"  sbom    {result.sbom} (CycloneDX 1.6)",
        f"  slsa    {result.provenance} (signed SLSA provenance v1)",
    ]
    for layer in result.built:
        lines.append(
            f"  layer   {layer.descriptor.digest}  {layer.descriptor.size:>10} B  "
            f"{layer.created_by}"
        )
    for line in lines:
        stdout.print(line, markup=False)


def _check_tag(tag: str | None) -> None:
    """Refuse a bad --tag before anything else happens (the access check, the store)."""
    if tag is not None:
        check_tag(tag)


def build(
    definition: Annotated[Path, typer.Argument(help="The image definition (YAML) in a git repo.")],
    tag: Annotated[
        str | None, typer.Option("--tag", help="Name the image in the store (immutable).")
    ] = None,
    allow_dirty: Annotated[
        bool,
        typer.Option(
            "--allow-dirty",
            help="Build from a work tree with uncommitted changes (recorded as dirty).",
        ),
    ] = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Build an OCI image from a definition, reproducibly, into the store; record it.

    Needs artifact.build once access control is set up. Exit 1 not authenticated or not
    allowed (nothing built or recorded); 2 bad definition; 3 store or ledger error.
    """
    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with errors_to_exit_codes():
        _check_tag(tag)
        who = check_access(home, db, Action.ARTIFACT_BUILD, caller=caller)
    with errors_to_exit_codes(), progress("building", None) as bar:
        result = build_image(
            definition,
            home,
            tag=tag,
            allow_dirty=allow_dirty,
            actor=who.name,
            observer=_Bar(bar),
            db=db,
            signed_as=who.ledger,
        )
    if fmt is Format.json:
        emit_json(
            {
                "digest": result.digest,
                "tag": result.tag,
                "commit": result.commit,
                "dirty": result.dirty,
                "definition": result.definition_path,
                "config": result.config.digest,
                "layers": [_layer_json(layer) for layer in result.built],
                "ledger_index": result.ledger_index,
                "sbom": result.sbom,
                "provenance": result.provenance,
                "store": str(result.store_root),
            }
        )
    else:
        _print_build(result)


def _open_store(home: Path) -> Store:
    return Store.for_home(home)


@app.command("list")
def list_images(
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Every image in the store with its tags, creation time and source commit (needs
    ledger.read once access control is set up)."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        check_access(home, db, Action.LEDGER_READ, caller=caller)
        rows = []
        if not (home / STORE_DIR / "oci-layout").exists():
            records = []  # nothing built yet: an empty list, not an error
        else:
            store = _open_store(home)
            records = store.list()
        for record in records:
            manifest = store.get_manifest(record.digest)
            notes = manifest.get("annotations", {})
            rows.append(
                {
                    "digest": record.digest,
                    "tags": list(record.tags),
                    "media_type": record.descriptor.media_type,
                    "created": notes.get("org.opencontainers.image.created"),
                    "revision": notes.get("org.opencontainers.image.revision"),
                }
            )
    if fmt is Format.json:
        emit_json({"images": rows})
        return
    table = Table("digest", "tags", "created", "revision")
    for row in rows:  # manifest annotations are the image maker's text: never markup
        table.add_row(
            Text(row["digest"]),
            Text(", ".join(row["tags"])),
            Text(str(row["created"] or "")),
            Text(str(row["revision"] or "")[:12]),
        )
    stdout.print(table)


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="A digest (sha256:…) or a tag.")],
    verify: Annotated[
        bool, typer.Option("--verify", help="Also hash every layer blob against its digest.")
    ] = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """An image's manifest, config and attached artifacts (manifest and config are verified).

    Needs ledger.read once access control is set up."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        check_access(home, db, Action.LEDGER_READ, caller=caller)
        store = _open_store(home)
        record = store.resolve(ref)
        manifest, blobs = store.image_blobs(record.digest)
        config = store.get_json(blobs[0]) if blobs[0].media_type.endswith("+json") else {}
        if verify:
            store.verify(record.digest)
        referrers = store.referrers(record.digest)
    data = {
        "digest": record.digest,
        "tags": list(record.tags),
        "media_type": record.descriptor.media_type,
        "annotations": manifest.get("annotations", {}),
        "config": {
            "digest": blobs[0].digest,
            "os": config.get("os"),
            "architecture": config.get("architecture"),
            "config": config.get("config", {}),
        },
        "layers": [
            {"digest": d.digest, "size": d.size, "media_type": d.media_type} for d in blobs[1:]
        ],
        "referrers": [
            {
                "digest": d.digest,
                "artifact_type": d.artifact_type,
                "annotations": dict(d.annotations),
            }
            for d in referrers
        ],
        "verified": "all blobs" if verify else "manifest and config",
    }
    if fmt is Format.json:
        emit_json(data)
        return
    # Annotations, os and architecture are the image maker's text: printed, never parsed.
    lines = [f"image   {record.digest}", f"tags    {', '.join(record.tags) or '(none)'}"]
    lines += [f"  {key} = {value}" for key, value in sorted(data["annotations"].items())]
    lines.append(f"config  {blobs[0].digest} ({config.get('os')}/{config.get('architecture')})")
    lines += [f"layer   {layer.digest}  {layer.size:>10} B" for layer in blobs[1:]]
    lines += [f"attached {r.artifact_type}  {r.digest}" for r in referrers]
    lines.append(f"verified {data['verified']}")
    for line in lines:
        stdout.print(line, markup=False)


@app.command()
def sbom(
    ref: Annotated[str, typer.Argument(help="A digest (sha256:…) or a tag.")],
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """The image's CycloneDX SBOM: its packages (text) or the whole document (json); needs
    ledger.read once access control is set up."""
    from immutrail.artifacts.attestations import SBOM_TYPE
    from immutrail.crypto.canonical import parse_strict_json

    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        check_access(home, db, Action.LEDGER_READ, caller=caller)
        store = _open_store(home)
        record = store.resolve(ref)
        attached = store.referrers(record.digest, SBOM_TYPE)
        if not attached:
            fail(f"{record.digest} has no SBOM attached (`immutrail scan` makes one)")
        layer = store.get_manifest(attached[-1].digest)["layers"][0]
        document = parse_strict_json(store.read_blob(layer["digest"], limit=64 * 1024 * 1024))
        if not isinstance(document, dict):
            fail(f"the SBOM attached to {record.digest} is not a JSON object", ExitCode.OPERATIONAL)
    if fmt is Format.json:
        emit_json({"digest": record.digest, "sbom_manifest": attached[-1].digest, "sbom": document})
        return
    table = Table("package", "version", "purl")
    for component in document.get("components", []):  # names come from the image: never markup
        table.add_row(
            Text(str(component.get("name"))),
            Text(str(component.get("version"))),
            Text(str(component.get("purl"))),
        )
    stdout.print(
        f"SBOM of {record.digest} ({attached[-1].digest}), {document.get('specVersion')}",
        markup=False,
    )
    stdout.print(table)


@app.command()
def provenance(
    ref: Annotated[str, typer.Argument(help="A digest (sha256:…) or a tag.")],
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """The image's SLSA provenance, verified against the builder keys the ledger announced.

    Needs ledger.read once access control is set up. Exit 0 when at least one provenance
    verifies, 1 when none does (the reasons are printed) or the caller may not read.
    """
    from immutrail.artifacts.attestations import SLSA_PROVENANCE_V1
    from immutrail.artifacts.provenance import read_provenance
    from immutrail.artifacts.statements import ledger_keys, read_attestations

    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        with authorized(home, db, Action.LEDGER_READ, caller=caller) as (ledger, _):
            store = _open_store(home)
            record = store.resolve(ref)
            good, bad = read_attestations(
                store, record.digest, ledger_keys(ledger), SLSA_PROVENANCE_V1
            )
        trusted = [a for a in good if a.signer.purpose == "builder"]
        summaries = [(a, read_provenance(a.statement)) for a in trusted]
    rejected = [{"attestation": r.manifest, "reason": r.reason} for r in bad] + [
        {
            "attestation": a.manifest,
            "reason": f"signed by a {a.signer.purpose!r} key, not a builder",
        }
        for a in good
        if a.signer.purpose != "builder"
    ]
    if fmt is Format.json:
        emit_json(
            {
                "digest": record.digest,
                "verified": [
                    {
                        "attestation": a.manifest,
                        "signer": {"keyid": a.signer.keyid, "principal": a.signer.principal},
                        "statement": a.statement,
                    }
                    for a, _ in summaries
                ],
                "rejected": rejected,
            }
        )
    else:
        for attestation, summary in summaries:
            details = (
                f"  signed by  {attestation.signer.principal} "
                f"(builder key {attestation.signer.keyid[:16]}…)\n"
                f"  builder    {summary.builder_id}\n  source     {summary.source_uri}\n"
                f"  commit     {summary.source_commit}\n"
                f"  built      {summary.started_on} .. {summary.finished_on}\n"
                f"  inputs     {len(summary.dependencies)} resolved dependencies"
            )
            stdout.print(
                f"provenance {escape(attestation.manifest)} [green]verified[/]", markup=True
            )
            stdout.print(details, markup=False)
        for item in rejected:
            stdout.print(
                f"[red]rejected[/] {escape(item['attestation'])}: {escape(item['reason'])}",
                markup=True,
            )
    if not summaries:
        raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))


@app.command()
def export(
    ref: Annotated[str, typer.Argument(help="A digest (sha256:…) or a tag.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The tar archive to write.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")
    ] = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Write an image and its attached artifacts as an OCI layout tar (docker load accepts it).

    Needs artifact.pull once access control is set up (exit 1 if not, nothing written)."""
    caller = Caller(as_, token, key_file, passphrase_file)
    with errors_to_exit_codes():
        check_access(home, db, Action.ARTIFACT_PULL, caller=caller)
        store = _open_store(home)
        result = export_image(store, ref, output, overwrite=overwrite)
    if fmt is Format.json:
        emit_json(
            {
                "digest": result.digest,
                "path": str(result.path),
                "blobs": result.blobs,
                "referrers": result.referrers,
            }
        )
    else:
        stdout.print(
            f"exported {result.digest} to {result.path} ({result.blobs} blobs)", markup=False
        )


# -- push and pull (imports kept local: this section is appended independently of the rest) ----


class _TransferBar:
    """Draws push/pull progress, one step per blob, on stderr."""

    def __init__(self, bar: Progress):
        self.bar = bar
        self.task: TaskID = bar.task_ids[0]

    def blob_started(self, descriptor: Any, index: int, total: int) -> None:
        self.bar.update(self.task, total=total, description=f"blob {descriptor.digest[7:19]}")

    def blob_finished(self, descriptor: Any, transferred: bool) -> None:
        self.bar.advance(self.task)


TlsOption = Annotated[
    bool,
    typer.Option(
        "--tls",
        help="Use HTTPS even for a loopback registry (others always get HTTPS).",
    ),
]
NoReferrersOption = Annotated[
    bool,
    typer.Option("--no-referrers", help="Leave out the attached SBOM, provenance, signatures."),
]


@app.command()
def push(
    ref: Annotated[str, typer.Argument(help="The image in the store: a digest (sha256:…) or tag.")],
    target: Annotated[
        str, typer.Argument(help="Where to: REGISTRY[:PORT]/REPO[:TAG], e.g. 127.0.0.1:5000/app:1")
    ],
    no_referrers: NoReferrersOption = False,
    tls: TlsOption = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Push an image and its attached artifacts to an OCI registry; record it in the ledger.

    Credentials, if the registry wants them: IMMUTRAIL_REGISTRY_USERNAME, _PASSWORD.

    Needs artifact.push once access control is set up. Exit 1: the registry stored other
    bytes than ours, or the caller is not authenticated or allowed; 3: unreachable or refused.
    """
    from immutrail.artifacts.registry import Credentials
    from immutrail.artifacts.registry import push as push_image
    from immutrail.artifacts.registry_ref import Reference

    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with errors_to_exit_codes():
        Reference.parse(target)  # a bad reference is refused before the ledger is opened
        credentials = Credentials.from_env()
        with (
            authorized(home, db, Action.ARTIFACT_PUSH, caller=caller) as (ledger, who),
            progress("pushing", None) as bar,
        ):
            result = push_image(
                _open_store(home),
                ref,
                target,
                include_referrers=not no_referrers,
                ledger=ledger,
                actor=who.name,
                plain_http=False if tls else None,
                credentials=credentials,
                observer=_TransferBar(bar),
            )
    if fmt is Format.json:
        emit_json(
            {
                "digest": result.digest,
                "reference": result.reference,
                "tag": result.tag,
                "blobs_uploaded": result.blobs_uploaded,
                "blobs_present": result.blobs_present,
                "bytes_uploaded": result.bytes_uploaded,
                "referrers": list(result.referrers),
                "referrers_method": result.referrers_method,
                "ledger_index": result.ledger_index,
            }
        )
        return
    method = f" via {result.referrers_method}" if result.referrers_method else ""
    for line in (
        f"pushed {result.digest}",
        f"  to        {result.reference}",
        f"  blobs     {result.blobs_uploaded} sent ({result.bytes_uploaded} B), "
        f"{result.blobs_present} already there",
        f"  referrers {len(result.referrers)}{method}",
        f"  ledger    entry {result.ledger_index}",
    ):
        stdout.print(line, markup=False)


@app.command()
def pull(
    source: Annotated[
        str, typer.Argument(help="REGISTRY[:PORT]/REPO@sha256:… or REGISTRY[:PORT]/REPO:TAG")
    ],
    tag: Annotated[
        str | None, typer.Option("--tag", help="Name the image in the store (immutable).")
    ] = None,
    no_referrers: NoReferrersOption = False,
    tls: TlsOption = False,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Pull an image and its attached artifacts into the store, every byte verified; record it.

    Exit 1: something sent does not match its digest (nothing is stored).

    Exit 2: a bad reference or an unknown image; 3: unreachable or refused. Needs
    artifact.pull once access control is set up (exit 1 if not).
    """
    from immutrail.artifacts.registry import Credentials
    from immutrail.artifacts.registry import pull as pull_image
    from immutrail.artifacts.registry_ref import Reference

    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with errors_to_exit_codes():
        # Refused before the ledger is opened and the store created.
        Reference.parse(source)
        _check_tag(tag)
        credentials = Credentials.from_env()
        with authorized(home, db, Action.ARTIFACT_PULL, caller=caller) as (ledger, who):
            store = Store.for_home(home, create=True)
            with progress("pulling", None) as bar:
                result = pull_image(
                    store,
                    source,
                    tag=tag,
                    include_referrers=not no_referrers,
                    ledger=ledger,
                    actor=who.name,
                    plain_http=False if tls else None,
                    credentials=credentials,
                    observer=_TransferBar(bar),
                )
    if fmt is Format.json:
        emit_json(
            {
                "digest": result.digest,
                "reference": result.reference,
                "media_type": result.media_type,
                "tag": result.tag,
                "blobs_fetched": result.blobs_fetched,
                "blobs_present": result.blobs_present,
                "bytes_fetched": result.bytes_fetched,
                "referrers": list(result.referrers),
                "referrers_method": result.referrers_method,
                "ledger_index": result.ledger_index,
            }
        )
        return
    method = f" via {result.referrers_method}" if result.referrers_method else ""
    for line in (
        f"pulled {result.digest}",
        f"  from      {result.reference}",
        f"  tag       {result.tag or '(none)'}",
        f"  blobs     {result.blobs_fetched} fetched ({result.bytes_fetched} B), "
        f"{result.blobs_present} already here",
        f"  referrers {len(result.referrers)}{method}",
        f"  ledger    entry {result.ledger_index}",
    ):
        stdout.print(line, markup=False)


# -- import and rebuild-verify (imports kept local: this section is appended independently) -----


@app.command("import")
def import_(
    path: Annotated[
        Path,
        typer.Argument(
            help="An OCI image layout folder, an OCI layout tar (optionally gzip), or a "
            "`docker save` archive."
        ),
    ],
    attestation: Annotated[
        list[Path] | None,
        typer.Option(
            "--attestation",
            metavar="FILE",
            help="A DSSE envelope, in-toto statement or Sigstore bundle about the image "
            "(repeatable); attached as a referrer.",
        ),
    ] = None,
    key: Annotated[
        list[Path] | None,
        typer.Option(
            "--key",
            metavar="PEM",
            help="A public key (PEM); every DSSE envelope must be signed by one of them "
            "(repeatable).",
        ),
    ] = None,
    tag: Annotated[
        str | None, typer.Option("--tag", help="Name the image in the store (immutable).")
    ] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Import an image made elsewhere, every blob and layer checked first; record it.

    Exit 2, with nothing written to the store or the ledger, for anything wrong with the input:
    a blob that does not match its digest, missing blobs, media types that are not image types,
    unsafe archive or layer entries (.., absolute paths, escaping links, devices, duplicates),
    oversized or truncated input, an attestation about another image or with a bad signature.
    Sigstore bundles are verified offline first (a failing one is refused); the signer's identity
    is checked by `immutrail verify`. Needs artifact.import once access control is set up (exit
    1 if not, nothing written).
    """
    from immutrail.artifacts.importer import import_image

    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with errors_to_exit_codes():
        _check_tag(tag)
        who = check_access(home, db, Action.ARTIFACT_IMPORT, caller=caller)
        result = import_image(
            path,
            home,
            attestations=attestation or [],
            keys=key or [],
            tag=tag,
            actor=who.name,
            db=db,
            signed_as=who.ledger,
        )
    if fmt is Format.json:
        emit_json(
            {
                "digest": result.digest,
                "media_type": result.media_type,
                "source_kind": result.source_kind,
                "source_digest": result.source_digest,
                "tag": result.tag,
                "source_tags": list(result.source_tags),
                "manifests": list(result.manifests),
                "attachments": [
                    {"digest": d.digest, "artifact_type": d.artifact_type}
                    for d in result.attachments
                ],
                "attestations": [a.to_dict() for a in result.attestations],
                "warnings": [w.to_dict() for w in result.warnings],
                "blobs": result.blobs,
                "size": result.size,
                "ledger_index": result.ledger_index,
            }
        )
        return
    lines = [f"imported {result.digest} ({result.source_kind})"]
    lines.append(f"  tag         {result.tag or '(none)'}")
    lines += [f"  manifest    {m}" for m in result.manifests if m != result.digest]
    lines.append(f"  blobs       {result.blobs} ({result.size} B)")
    lines += [f"  attached    {a.artifact_type}  {a.digest}" for a in result.attachments]
    for item in result.attestations:
        state = item.verification if item.verified else item.verification.upper()
        lines.append(
            f"  attestation {Path(item.parsed.source).name}: {item.parsed.predicate_type} "
            f"about {item.subject.digest}: {state}"
        )
    lines += [f"  warning     {warning.message()}" for warning in result.warnings]
    lines.append(f"  ledger      entry {result.ledger_index}")
    for line in lines:
        stdout.print(line, markup=False)


def rebuild_verify(
    digest: Annotated[str, typer.Argument(help="The image to rebuild (sha256:…).")],
    repo: Annotated[
        str | None,
        typer.Option(
            "--repo",
            help="Where to fetch the recorded commit from [default: the recorded repository "
            "URL, else the source named in the image's provenance].",
            show_default=False,
        ),
    ] = None,
    as_: AsOption = None,
    token: TokenOption = None,
    key_file: KeyFileOption = None,
    passphrase_file: PassphraseFileOption = None,
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Rebuild an image from its recorded commit in a temporary folder and compare digests.

    The result is recorded in the ledger (artifact.rebuild-verified) either way. Exit 0 when the
    rebuild gives the same digest, 1 when it does not (the differing parts are listed) or the
    caller is not authenticated or lacks artifact.build (once access control is set up).
    """
    from immutrail.artifacts.rebuild import rebuild_verify as rebuild

    caller = Caller(as_, token, key_file, passphrase_file, actor)
    with errors_to_exit_codes():
        who = check_access(home, db, Action.ARTIFACT_BUILD, caller=caller)
        result = rebuild(digest, home, repo=repo, actor=who.name, db=db, signed_as=who.ledger)
    if fmt is Format.json:
        emit_json(
            {
                "digest": result.digest,
                "rebuilt_digest": result.rebuilt_digest,
                "reproducible": result.reproducible,
                "commit": result.commit,
                "definition": result.definition,
                "source": result.source,
                "dirty": result.dirty,
                "built_event": result.built_event,
                "differences": [d.to_dict() for d in result.differences],
                "ledger_index": result.ledger_index,
            }
        )
    else:
        verdict = "reproducible" if result.reproducible else "NOT reproducible"
        lines = [
            f"{verdict}: {result.digest}",
            f"  rebuilt     {result.rebuilt_digest}",
            f"  commit      {result.commit} ({result.definition})",
            f"  source      {result.source}",
        ]
        if result.dirty:
            lines.append("  note        built from a dirty work tree: the commit lacks its inputs")
        lines += [f"  differs     {difference.detail}" for difference in result.differences]
        lines.append(f"  ledger      entry {result.ledger_index}")
        for line in lines:
            stdout.print(line, markup=False)
    if not result.reproducible:
        raise typer.Exit(int(ExitCode.VERIFICATION_FAILED))
