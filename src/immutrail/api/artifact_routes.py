"""``/api/v1/artifacts``: the images in the store and their attestations (``ledger.read``).

Image metadata and attestations are the evidence the ledger's events cite by digest, so reading
them needs what reading the ledger needs. Layer contents are not served (that is a pull).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response

from immutrail.access import Action, Identity
from immutrail.artifacts.errors import StoreError
from immutrail.artifacts.oci import Descriptor
from immutrail.artifacts.store import Store

from .auth import Permit
from .models import (
    DIGEST_PATTERN,
    AttestationOut,
    BlobOut,
    ImageDetail,
    ImageList,
    ImageSummary,
)
from .problems import NotFound
from .responses import errors
from .settings import settings_of

MAX_ATTESTATION_BYTES = 64 * 1024 * 1024
"""As `immutrail artifact sbom` reads them."""

router = APIRouter(prefix="/api/v1/artifacts", tags=["artifacts"])
Reader = Annotated[Identity | None, Depends(Permit(Action.LEDGER_READ))]
Digest = Annotated[str, Path(pattern=DIGEST_PATTERN, description="sha256:<64 hex digits>")]


def _store(request: Request) -> Store:
    store = settings_of(request.app).store()
    if store is None:
        raise NotFound("the store holds no such image")
    return store


def _image(store: Store, digest: str) -> ImageSummary:
    record = next((r for r in store.list() if r.digest == digest), None)
    if record is None:
        raise NotFound("the store holds no such image")
    return _summary(store, record.digest, list(record.tags), record.descriptor.media_type)


def _summary(store: Store, digest: str, tags: list[str], media_type: str) -> ImageSummary:
    notes = store.get_manifest(digest).get("annotations", {})
    return ImageSummary(
        digest=digest,
        tags=tags,
        media_type=media_type,
        created=notes.get("org.opencontainers.image.created"),
        revision=notes.get("org.opencontainers.image.revision"),
    )


def _blob(value: Any, what: str) -> BlobOut:
    descriptor = Descriptor.from_dict(value, what)
    return BlobOut(digest=descriptor.digest, size=descriptor.size, media_type=descriptor.media_type)


def _content(store: Store, attestation: Descriptor) -> BlobOut:
    layers = store.get_manifest(attestation.digest).get("layers")
    if not isinstance(layers, list) or len(layers) != 1:
        raise StoreError(f"attestation {attestation.digest} does not hold exactly one layer")
    return _blob(layers[0], f"layer of {attestation.digest}")


@router.get("", summary="List images", response_model=ImageList, responses=errors(401, 403))
def list_images(request: Request, identity: Reader) -> ImageList:
    """Every image in the store (attached artifacts excluded) with its tags, creation time and
    source commit. Needs `ledger.read`."""
    store = settings_of(request.app).store()
    if store is None:
        return ImageList(images=[])
    return ImageList(
        images=[
            _summary(store, r.digest, list(r.tags), r.descriptor.media_type) for r in store.list()
        ]
    )


@router.get(
    "/{digest}",
    summary="One image and its attestations",
    response_model=ImageDetail,
    responses=errors(401, 403, 404, 422),
)
def get_image(request: Request, identity: Reader, digest: Digest) -> ImageDetail:
    """The image's manifest annotations, config, layers and every attestation attached to it
    (SBOM, provenance, scan, baseline, tests, signatures, approvals). Needs `ledger.read`."""
    store = _store(request)
    summary = _image(store, digest)
    manifest, blobs = store.image_blobs(digest)
    attestations = [
        AttestationOut(
            digest=d.digest,
            artifact_type=d.artifact_type,
            annotations=dict(d.annotations),
            content=_content(store, d),
        )
        for d in store.referrers(digest)
    ]
    return ImageDetail(
        **summary.model_dump(),
        annotations={str(k): str(v) for k, v in manifest.get("annotations", {}).items()},
        config=BlobOut(digest=blobs[0].digest, size=blobs[0].size, media_type=blobs[0].media_type),
        layers=[BlobOut(digest=d.digest, size=d.size, media_type=d.media_type) for d in blobs[1:]],
        attestations=attestations,
    )


@router.get(
    "/{digest}/attestations/{attestation}",
    summary="Download an attestation",
    response_class=Response,
    responses={
        200: {
            "description": "The attested document, byte for byte (a DSSE envelope or JSON).",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        **errors(401, 403, 404, 422),
    },
)
def get_attestation(
    request: Request, identity: Reader, digest: Digest, attestation: Digest
) -> Response:
    """The document of an attestation attached to the image (`attestation` is the digest of
    its manifest, as the image lists it), verified against its digest on the way out. Needs
    `ledger.read`."""
    store = _store(request)
    _image(store, digest)
    found = next((d for d in store.referrers(digest) if d.digest == attestation), None)
    if found is None:
        raise NotFound("the image has no such attestation")
    content = _content(store, found)
    data = store.read_blob(content.digest, limit=MAX_ATTESTATION_BYTES)
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{attestation.removeprefix("sha256:")}"',
            "X-Content-Media-Type": content.media_type,
            "Cache-Control": "private, max-age=31536000, immutable",
        },
    )
