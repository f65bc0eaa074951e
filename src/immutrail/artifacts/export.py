"""Export one image (and the artifacts attached to it) as an OCI image-layout tar.

The archive is also a ``docker save`` archive: Docker Engine 20.10 cannot ``docker load`` a pure
OCI layout, so a Docker ``manifest.json`` naming the same config and layer blobs sits beside
``index.json``; OCI tools ignore it. Every blob is verified while it is copied, the archive is
written to a temporary file and renamed into place only when complete (never over anything but
a regular file, and over one only when asked: :func:`immutrail.files.check_output`), and it
is deterministic (sorted entries, mtime 0, owner 0:0) so that exporting twice gives the same
bytes.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from immutrail.files import OutputPathError, atomic_output, check_output

from . import oci
from .digests import hex_of
from .errors import ArtifactInputError, BlobVerificationError
from .oci import Descriptor
from .store import Store

# Docker's reference grammar, restricted to what `docker load` accepts in RepoTags: name:tag.
_DOCKER_NAME = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOCKER_TAG_RE = re.compile(
    rf"(?:[A-Za-z0-9.-]+(?::[0-9]+)?/)?{_DOCKER_NAME}(?:/{_DOCKER_NAME})*:[\w][\w.-]{{0,127}}"
)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    digest: str
    blobs: int
    referrers: int


def _docker_tags(tags: Sequence[str]) -> list[str]:
    return sorted(tag for tag in tags if _DOCKER_TAG_RE.fullmatch(tag))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
    tar.addfile(info)


@contextmanager
def _output_refused() -> Iterator[None]:
    try:
        yield
    except OutputPathError as exc:
        raise ArtifactInputError(exc.diagnostics()) from exc


def export_image(store: Store, ref: str, dest: Path, *, overwrite: bool = False) -> ExportResult:
    """Write ``ref`` (a digest or tag) and its referrers to ``dest`` as a tar archive.

    ``dest`` must be new, or a regular file and ``overwrite`` given (never a link, a folder, a
    device or a FIFO): ArtifactInputError before anything is read, and nothing written.
    """
    with _output_refused():
        check_output(dest, overwrite)
    record = store.resolve(ref)
    digest = record.digest
    manifest, image_blobs = store.image_blobs(digest)
    index_entries: list[Descriptor] = [
        record.descriptor.with_annotations(**{oci.REF_NAME: tag}) for tag in record.tags
    ] or [record.descriptor]
    blobs: dict[str, Descriptor] = {record.descriptor.digest: record.descriptor}
    blobs.update({d.digest: d for d in image_blobs})
    referrers = store.referrers(digest)
    for referrer in referrers:
        index_entries.append(referrer)
        blobs[referrer.digest] = referrer
        _, referrer_blobs = store.image_blobs(referrer.digest)
        blobs.update({d.digest: d for d in referrer_blobs})

    index = {
        "schemaVersion": 2,
        "mediaType": oci.INDEX,
        "manifests": [d.to_dict() for d in index_entries],
    }
    docker: list[dict[str, Any]] = []
    if record.descriptor.media_type in oci.IMAGE_MANIFESTS and not manifest.get("artifactType"):
        docker.append(
            {
                "Config": f"blobs/sha256/{hex_of(image_blobs[0].digest)}",
                "RepoTags": _docker_tags(record.tags),
                "Layers": [f"blobs/sha256/{hex_of(d.digest)}" for d in image_blobs[1:]],
            }
        )

    with (
        _output_refused(),
        atomic_output(dest, overwrite=overwrite) as stream,
        tarfile.open(fileobj=stream, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        _add_dir(tar, "blobs")
        _add_dir(tar, "blobs/sha256")
        for blob_digest in sorted(blobs):
            descriptor = blobs[blob_digest]
            info = tarfile.TarInfo(f"blobs/sha256/{hex_of(blob_digest)}")
            info.size, info.mode, info.mtime = descriptor.size, 0o444, 0
            with store.open_blob(blob_digest, descriptor.size) as reader:
                try:
                    tar.addfile(info, reader)
                except OSError as exc:
                    raise BlobVerificationError(
                        blob_digest,
                        str(store.blob_path(blob_digest)),
                        f"is shorter than its recorded size: {exc}",
                    ) from exc
        _add_bytes(tar, "index.json", oci.encode(index))
        if docker:
            _add_bytes(tar, "manifest.json", json.dumps(docker).encode())
        _add_bytes(tar, "oci-layout", oci.encode({"imageLayoutVersion": "1.0.0"}))
    return ExportResult(dest, digest, len(blobs), len(referrers))
