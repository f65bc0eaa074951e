"""The errors of ``immutrail artifact import`` and the limits it enforces.

Every refusal is an :class:`ImageImportError` (an :class:`~.errors.ArtifactInputError`, so the CLI
exits 2) and is raised before anything is written: the store and the ledger are as they were.
Each names the input (``source``: the archive, the folder or the attestation file) and, when the
problem is one entry, that entry (``entry``: the member name inside the archive, or a digest).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ArtifactInputError

__all__ = [
    "ArchiveFormatError",
    "AttestationError",
    "AttestationSignatureError",
    "AttestationSubjectError",
    "BlobMismatchError",
    "ImageImportError",
    "ImportLimitError",
    "ImportLimits",
    "MediaTypeError",
    "MissingBlobsError",
    "UnsafeArchiveError",
    "UnsafeLayerError",
]

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB


@dataclass(frozen=True)
class ImportLimits:
    """What an import accepts; anything larger is refused with :class:`ImportLimitError`.

    The defaults are far above real images (the largest public base images are a few GiB, with
    tens of layers) and bound what a hostile archive can make us read, extract or keep in memory.
    """

    max_members: int = 100_000
    """Entries in an archive, or files in a layout folder."""
    max_name_bytes: int = 4096
    """Length of one entry's path, in UTF-8 bytes (Linux's PATH_MAX)."""
    max_blob_bytes: int = 16 * GiB
    """One blob (a layer, usually)."""
    max_total_bytes: int = 64 * GiB
    """All the archive's files together, uncompressed."""
    max_json_bytes: int = 4 * MiB
    """index.json, oci-layout, a manifest, an index, a config, docker's manifest.json."""
    max_attestation_bytes: int = 16 * MiB
    """One attestation file (DSSE envelope, statement or Sigstore bundle)."""
    max_index_depth: int = 4
    """Indexes nested in indexes."""
    max_layer_entries: int = 2_000_000
    """Files in all layers of one image together."""
    max_link_hops: int = 40
    """Symbolic links followed in a row inside an archive (Linux's ELOOP limit)."""
    max_layer_path_bytes: int = 2048
    """Length of a path in an image's filesystem, in UTF-8 bytes: half of Linux's PATH_MAX,
    so that it can still be unpacked below a folder (``immutrail test``, the local runtime)."""
    max_layer_path_depth: int = 256
    """Folders in a row in an image's filesystem (real images stay under a few dozen)."""
    max_layer_name_bytes: int = 255
    """One component of a path in an image's filesystem, in bytes (Linux's NAME_MAX)."""
    max_link_target_bytes: int = 4095
    """A symbolic link's target, in bytes (longer ones cannot be created on Linux)."""


class ImageImportError(ArtifactInputError):
    """An input that cannot be imported; nothing was written to the store or the ledger."""

    def __init__(self, source: str, message: str, entry: str | None = None):
        self.source = source
        self.entry = entry
        self.detail = message
        where = f"{source}: entry {entry!r}: " if entry is not None else f"{source}: "
        super().__init__(where + message)


class UnsafeArchiveError(ImageImportError):
    """An archive entry no safe extractor would write: ``..``, absolute, escaping link, device…"""


class ArchiveFormatError(ImageImportError):
    """Not a readable OCI layout or docker archive: truncated, corrupt, or malformed JSON."""


class ImportLimitError(ImageImportError):
    """The input exceeds one of the :class:`ImportLimits`."""


class BlobMismatchError(ImageImportError):
    """A blob whose content or size does not match its digest."""


class MediaTypeError(ImageImportError):
    """A descriptor whose media type is not an OCI or Docker image type we import."""


class MissingBlobsError(ImageImportError):
    """A manifest (or docker's manifest.json) names blobs that the input does not hold."""

    def __init__(self, source: str, manifest: str, missing: Sequence[str]):
        self.manifest = manifest
        self.missing = tuple(missing)
        what = "manifest.json" if manifest == "manifest.json" else f"manifest {manifest}"
        super().__init__(
            source,
            f"{what} points to missing blobs ({len(self.missing)}): " + ", ".join(self.missing),
        )
        self.entry = manifest


class UnsafeLayerError(ImageImportError):
    """A layer whose contents are refused (escaping paths or links, devices, duplicates…)."""


class AttestationError(ImageImportError):
    """An attestation that cannot be read as an in-toto statement, envelope or Sigstore bundle."""


class AttestationSubjectError(AttestationError):
    """An attestation whose subjects do not include the imported image (or its index)."""


class AttestationSignatureError(AttestationError):
    """A DSSE envelope that none of the keys given with ``--key`` signed."""
