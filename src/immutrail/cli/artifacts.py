"""`immutrail build` and `immutrail artifact …`: build images, list, show and export the store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from immutrail.artifacts.builder import BuildResult, default_actor
from immutrail.artifacts.builder import build as build_image
from immutrail.artifacts.errors import (
    ArtifactError,
    ArtifactInputError,
    BlobVerificationError,
)
from immutrail.artifacts.export import export_image
from immutrail.artifacts.imageconfig import BuiltLayer
from immutrail.artifacts.store import STORE_DIR, Store

from .common import (
    DEFAULT_HOME,
    EXIT_CODES_HELP,
    DbOption,
    ExitCode,
    Format,
    FormatOption,
    HomeOption,
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

ActorOption = Annotated[
    str | None,
    typer.Option(
        "--actor",
        envvar="IMMUTRAIL_ACTOR",
        help="Who builds, as recorded in the ledger [default: user:<login name>].",
        show_default=False,
    ),
]


@contextmanager
def artifact_errors() -> Iterator[None]:
    """The artifacts' errors as exit codes, on top of the ledger's: 1 mismatch, 2 input, 3 store."""
    with errors_to_exit_codes():
        try:
            yield
        except BlobVerificationError as exc:
            fail(exc.diagnostics(), ExitCode.VERIFICATION_FAILED)
        except ArtifactInputError as exc:
            fail(exc.diagnostics(), ExitCode.USAGE)
        except ArtifactError as exc:
            fail(exc.diagnostics(), ExitCode.OPERATIONAL)


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
        "diff_id": layer.diff_id,
        "size": layer.descriptor.size,
        "created_by": layer.created_by,
    }


def _print_build(result: BuildResult) -> None:
    state = "dirty work tree" if result.dirty else "clean"
    stdout.print(f"built {result.digest}")
    stdout.print(f"  tag     {result.tag or '(none)'}")
    stdout.print(f"  commit  {result.commit} ({state})")
    stdout.print(f"  config  {result.config.digest}")
    stdout.print(f"  ledger  entry {result.ledger_index}")
    stdout.print(f"  sbom    {result.sbom} (CycloneDX 1.6)")
    stdout.print(f"  slsa    {result.provenance} (signed SLSA provenance v1)")
    for layer in result.built:
        stdout.print(
            f"  layer   {layer.descriptor.digest}  {layer.descriptor.size:>10} B  ", end=""
        )
        stdout.print(layer.created_by, markup=False)


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
    actor: ActorOption = None,
    home: HomeOption = DEFAULT_HOME,
    db: DbOption = None,
    fmt: FormatOption = Format.text,
) -> None:
    """Build an OCI image from a definition, reproducibly, into the store; record it."""
    with artifact_errors(), progress("building", None) as bar:
        result = build_image(
            definition,
            home,
            tag=tag,
            allow_dirty=allow_dirty,
            actor=actor or default_actor(),
            observer=_Bar(bar),
            db=db,
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
    home: HomeOption = DEFAULT_HOME,
    fmt: FormatOption = Format.text,
) -> None:
    """Every image in the store with its tags, creation time and source commit."""
    with artifact_errors():
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
    for row in rows:
        table.add_row(
            row["digest"],
            ", ".join(row["tags"]),
            row["created"] or "",
            (row["revision"] or "")[:12],
        )
    stdout.print(table)


@app.command()
def show(
    ref: Annotated[str, typer.Argument(help="A digest (sha256:…) or a tag.")],
    verify: Annotated[
        bool, typer.Option("--verify", help="Also hash every layer blob against its digest.")
    ] = False,
    home: HomeOption = DEFAULT_HOME,
    fmt: FormatOption = Format.text,
) -> None:
    """An image's manifest, config and attached artifacts (manifest and config are verified)."""
    with artifact_errors():
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
    stdout.print(f"image   {record.digest}")
    stdout.print(f"tags    {', '.join(record.tags) or '(none)'}")
    for key, value in sorted(data["annotations"].items()):
        stdout.print(f"  {key} = {value}", markup=False)
    stdout.print(f"config  {blobs[0].digest} ({config.get('os')}/{config.get('architecture')})")
    for layer in blobs[1:]:
        stdout.print(f"layer   {layer.digest}  {layer.size:>10} B")
    for referrer in referrers:
        stdout.print(f"attached {referrer.artifact_type}  {referrer.digest}", markup=False)
    stdout.print(f"verified {data['verified']}")


@app.command()
def export(
    ref: Annotated[str, typer.Argument(help="A digest (sha256:…) or a tag.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="The tar archive to write.")],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUTPUT if it exists.")
    ] = False,
    home: HomeOption = DEFAULT_HOME,
    fmt: FormatOption = Format.text,
) -> None:
    """Write an image and its attached artifacts as an OCI layout tar (docker load accepts it)."""
    with artifact_errors():
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
        stdout.print(f"exported {result.digest} to {result.path} ({result.blobs} blobs)")
