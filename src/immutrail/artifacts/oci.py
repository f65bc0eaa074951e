"""OCI image-spec 1.1 vocabulary: media types, descriptors, and the one JSON encoding we write.

Manifests and configs are stored as the exact bytes that were hashed, so their encoding is part of
the digest: sorted keys, no whitespace, UTF-8. Python's ``json`` produces those bytes identically
on every platform and version we support.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .digests import ALGORITHM, check_digest, sha256_digest
from .errors import ArtifactInputError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
EMPTY = "application/vnd.oci.empty.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
IMAGE_MANIFESTS = frozenset({MANIFEST, DOCKER_MANIFEST})
LAYER_TYPES = frozenset({LAYER_TAR, LAYER_GZIP, DOCKER_LAYER_GZIP})

REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "org.opencontainers.image.created"
REVISION = "org.opencontainers.image.revision"
SOURCE = "org.opencontainers.image.source"

EMPTY_JSON = b"{}"
EMPTY_DIGEST = sha256_digest(EMPTY_JSON)
LAYOUT_VERSION = "1.0.0"

# The image-spec's grammar for org.opencontainers.image.ref.name.
_ALNUM = r"[A-Za-z0-9]+"
_COMPONENT = rf"{_ALNUM}(?:(?:[-._:@+]|--){_ALNUM})*"
_REF_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
MAX_TAG = 255


_DIGEST_PREFIX = f"{ALGORITHM}:"


def check_tag(tag: str) -> str:
    if len(tag) > MAX_TAG or not _REF_RE.fullmatch(tag):
        raise ArtifactInputError(
            f"tag {tag!r} is not a valid OCI reference name: letters and digits joined by "
            f"- . _ : @ + or /, at most {MAX_TAG} characters (for example myapp:1.4.2)"
        )
    # The store resolves every sha256:… reference as a digest: such a tag would name an image
    # nothing can find by it, and pass for a digest in the ledger.
    if tag[: len(_DIGEST_PREFIX)].lower() == _DIGEST_PREFIX:
        raise ArtifactInputError(
            f"tag {tag!r} reads as a digest: a tag must not start with {_DIGEST_PREFIX!r} "
            "(for example myapp:1.4.2)"
        )
    return tag


def encode(value: Mapping[str, Any]) -> bytes:
    """The bytes we store (and hash) for a JSON document."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor; fields this version does not know are kept in ``extra``."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    artifact_type: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out.update(mediaType=self.media_type, digest=self.digest, size=self.size)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.artifact_type is not None:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_dict(cls, data: object, what: str = "descriptor") -> Descriptor:
        if not isinstance(data, dict):
            raise ArtifactInputError(f"{what} is not a JSON object")
        media_type, digest, size = data.get("mediaType"), data.get("digest"), data.get("size")
        annotations = data.get("annotations", {})
        artifact_type = data.get("artifactType")
        if not isinstance(media_type, str) or not media_type:
            raise ArtifactInputError(f"{what} has no mediaType")
        check_digest(digest, f"{what} digest")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ArtifactInputError(f"{what} has no valid size")
        if not isinstance(annotations, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
        ):
            raise ArtifactInputError(f"{what} has annotations that are not strings")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise ArtifactInputError(f"{what} has an artifactType that is not a string")
        known = {"mediaType", "digest", "size", "annotations", "artifactType"}
        extra = {k: v for k, v in data.items() if k not in known}
        assert isinstance(digest, str)
        return cls(media_type, digest, size, dict(annotations), artifact_type, extra)

    def with_annotations(self, **more: str) -> Descriptor:
        return Descriptor(
            self.media_type,
            self.digest,
            self.size,
            {**self.annotations, **more},
            self.artifact_type,
            self.extra,
        )

    @property
    def tag(self) -> str | None:
        return self.annotations.get(REF_NAME)


def empty_config() -> Descriptor:
    """The OCI 1.1 empty descriptor for artifacts that have no config of their own."""
    return Descriptor(EMPTY, EMPTY_DIGEST, len(EMPTY_JSON), extra={"data": "e30="})
