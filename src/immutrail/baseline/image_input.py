"""The description of an image that the baseline rules judge, built from the store.

One read of the layers (:meth:`RootFS.from_layers`) gives the merged file tree with modes, owners,
sizes and digests, the files that later layers deleted or replaced (``shadowed``), and the
content of the configuration files the rules look into. The rest comes from the image config,
the manifest, the verified provenance and the SBOM attached to the image.

:meth:`ImageInput.to_document` is the JSON given to user rules as ``input``; its format is
documented in docs/baseline.md and versioned by :data:`INPUT_SCHEMA`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immutrail.artifacts import oci
from immutrail.artifacts.attestations import SBOM_TYPE, SLSA_PROVENANCE_V1
from immutrail.artifacts.errors import ArtifactError
from immutrail.artifacts.provenance import IMMUTRAIL_BUILD_TYPE
from immutrail.artifacts.rootfs import (
    DEFAULT_CONTENT_PATTERNS,
    ContentNotRetainedError,
    FileEntry,
    PathNotFoundError,
    RootFS,
    glob_to_regex,
)
from immutrail.artifacts.sbom import find_packages
from immutrail.artifacts.statements import LedgerKey, read_attestations
from immutrail.artifacts.store import Store

from .errors import BaselineInputError

log = logging.getLogger(__name__)

INPUT_SCHEMA = "https://immutrail.dev/baseline/input/v1"
MAX_CONFIG_FILE_BYTES = 64 * 1024
"""Configuration file content given to the rules is cut at this size (``truncated`` says so)."""
MAX_SBOM_BYTES = 64 * 1024 * 1024

BASE_NAME_ANNOTATION = "org.opencontainers.image.base.name"
BASE_DIGEST_ANNOTATION = "org.opencontainers.image.base.digest"

# Which files' content the rules read, by kind. The RootFS keeps the content of these while it
# streams the layers (it cannot go back for it), so the list is also a memory bound.
CONFIG_FILE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("sshd", "etc/ssh/sshd_config"),
    ("sshd", "etc/ssh/sshd_config.d/*"),
    ("nginx", "etc/nginx/**"),
    ("nginx", "usr/local/nginx/conf/**"),
    ("apache", "etc/apache2/**"),
    ("apache", "etc/httpd/**"),
    ("apache", "usr/local/apache2/conf/**"),
    ("openssl", "etc/ssl/openssl.cnf"),
    ("openssl", "usr/lib/ssl/openssl.cnf"),
    ("openssl", "etc/pki/tls/openssl.cnf"),
    ("openssl", "usr/local/ssl/openssl.cnf"),
    ("logging", "**/logging.conf"),
    ("logging", "**/logging.ini"),
    ("logging", "**/logging.yaml"),
    ("logging", "**/logging.yml"),
    ("logging", "**/log4j.properties"),
    ("logging", "**/log4j2.properties"),
    ("logging", "**/log4j2.xml"),
    ("logging", "**/logback.xml"),
    ("dotenv", "**/.env"),
    ("dotenv", "**/.env.*"),
    ("passwd", "etc/passwd"),
)
_KIND_REGEXES = tuple((kind, glob_to_regex(pattern)) for kind, pattern in CONFIG_FILE_PATTERNS)


@dataclass(frozen=True)
class LayerRef:
    index: int
    digest: str
    diff_id: str
    size: int
    created_by: str | None


@dataclass(frozen=True)
class BaseImage:
    """What is known of the base image, and from where (``provenance``, ``annotation``, …)."""

    reference: str | None
    digest: str | None
    source: str | None
    """``scratch`` (no base), ``provenance``, ``annotation``, ``label`` or None (unknown)."""

    @property
    def pinned(self) -> bool:
        return self.source == "scratch" or self.digest is not None


@dataclass(frozen=True)
class Settings:
    """The runtime settings of the image config (Docker's names in the OCI ``config``)."""

    user: str
    env: Mapping[str, str]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    workdir: str
    exposed_ports: tuple[str, ...]
    labels: Mapping[str, str]
    healthcheck: Mapping[str, Any] | None


@dataclass(frozen=True)
class PackageRef:
    name: str
    version: str
    purl: str
    ecosystem: str


@dataclass(frozen=True)
class ConfigFile:
    path: str
    kind: str
    layer: int
    size: int
    content: str
    truncated: bool


@dataclass(frozen=True)
class ImageInput:
    digest: str
    config_digest: str
    platform: str
    layers: tuple[LayerRef, ...]
    layer_paths: tuple[Path, ...]
    settings: Settings
    base: BaseImage
    rootfs: RootFS
    packages: tuple[PackageRef, ...]
    packages_source: str
    config_files: tuple[ConfigFile, ...]
    annotations: Mapping[str, str] = field(default_factory=dict)

    def config_files_of(self, kind: str) -> list[ConfigFile]:
        return [item for item in self.config_files if item.kind == kind]

    def to_document(self) -> dict[str, Any]:
        """The JSON description given to user rules as ``input`` (docs/baseline.md)."""
        return {
            "schema": INPUT_SCHEMA,
            "image": {
                "digest": self.digest,
                "config_digest": self.config_digest,
                "platform": self.platform,
                "annotations": dict(self.annotations),
                "layers": [
                    {
                        "index": layer.index,
                        "digest": layer.digest,
                        "diff_id": layer.diff_id,
                        "size": layer.size,
                        "created_by": layer.created_by,
                    }
                    for layer in self.layers
                ],
            },
            "config": {
                "user": self.settings.user,
                "env": dict(self.settings.env),
                "entrypoint": list(self.settings.entrypoint),
                "cmd": list(self.settings.cmd),
                "workdir": self.settings.workdir,
                "exposed_ports": list(self.settings.exposed_ports),
                "labels": dict(self.settings.labels),
                "healthcheck": (
                    None if self.settings.healthcheck is None else dict(self.settings.healthcheck)
                ),
            },
            "base_image": {
                "reference": self.base.reference,
                "digest": self.base.digest,
                "source": self.base.source,
                "pinned": self.base.pinned,
            },
            "files": [file_document(entry) for entry in self.rootfs.entries()],
            "shadowed": [
                {
                    **file_document(item.entry),
                    "hidden_by_layer": item.hidden_by_layer,
                    "reason": str(item.reason),
                }
                for item in self.rootfs.shadowed
            ],
            "packages": {
                "source": self.packages_source,
                "items": [
                    {
                        "name": p.name,
                        "version": p.version,
                        "purl": p.purl,
                        "ecosystem": p.ecosystem,
                    }
                    for p in self.packages
                ],
            },
            "config_files": [_config_file_document(item) for item in self.config_files],
        }


def file_document(entry: FileEntry) -> dict[str, Any]:
    return {
        "path": "/" + entry.path,
        "type": str(entry.type),
        "mode": entry.mode,
        "mode_octal": f"{entry.mode:04o}",
        "uid": entry.uid,
        "gid": entry.gid,
        "size": entry.size,
        "sha256": entry.sha256,
        "link_target": entry.link_target,
        "layer": entry.layer,
    }


def _config_file_document(item: ConfigFile) -> dict[str, Any]:
    out: dict[str, Any] = {
        "path": "/" + item.path,
        "kind": item.kind,
        "layer": item.layer,
        "size": item.size,
        "truncated": item.truncated,
    }
    if item.kind == "dotenv":
        # The values of a .env file are what the secrets rule looks for; rules get the keys,
        # never the values, so no user rule can copy a secret into an attestation.
        out["keys"] = sorted(dotenv_values(item.content))
    else:
        out["content"] = item.content
    return out


def dotenv_values(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines of a .env file (``export`` prefix and quotes removed)."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if key:
            values[key] = value
    return values


def config_kind(path: str) -> str | None:
    for kind, regex in _KIND_REGEXES:
        if regex.fullmatch(path):
            return kind
    return None


# -- building ------------------------------------------------------------------------------------


def load_image_input(store: Store, reference: str, keys: Mapping[str, LedgerKey]) -> ImageInput:
    """Describe the image ``reference`` (digest or tag) of ``store``.

    ``keys`` are the ledger's keys: only provenance signed by one of them (not revoked) is used
    to name the base image.
    """
    record = store.resolve(reference)
    if record.descriptor.media_type not in oci.IMAGE_MANIFESTS:
        raise BaselineInputError(
            f"{reference} is a {record.descriptor.media_type}, not an image manifest: check one "
            "of the images it lists"
        )
    if record.descriptor.artifact_type is not None:
        raise BaselineInputError(
            f"{reference} is an attached artifact ({record.descriptor.artifact_type}), not an image"
        )
    manifest, blobs = store.image_blobs(record.digest)
    config_json = store.get_json(blobs[0])
    layer_paths = tuple(store.blob_path(layer.digest) for layer in blobs[1:])
    for layer, path in zip(blobs[1:], layer_paths, strict=True):
        if not path.is_file():
            raise BaselineInputError(f"{reference}: layer {layer.digest} is not in the store")
    patterns = (*DEFAULT_CONTENT_PATTERNS, *(pattern for _, pattern in CONFIG_FILE_PATTERNS))
    rootfs = RootFS.from_layers(layer_paths, content_patterns=patterns)
    diff_ids = [info.diff_id for info in rootfs.layers]
    expected = _diff_ids(config_json)
    if expected != diff_ids:
        raise BaselineInputError(
            f"{reference}: the config's rootfs.diff_ids do not match the layers' content"
        )
    annotations = manifest.get("annotations")
    annotations = (
        {str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {}
    )
    settings = _settings(config_json)
    packages, packages_source = _packages(store, record.digest, rootfs)
    return ImageInput(
        digest=record.digest,
        config_digest=blobs[0].digest,
        platform=_platform(config_json),
        layers=_layers(blobs[1:], diff_ids, config_json),
        layer_paths=layer_paths,
        settings=settings,
        base=_base_image(store, record.digest, keys, annotations, settings.labels),
        rootfs=rootfs,
        packages=packages,
        packages_source=packages_source,
        config_files=_config_files(rootfs),
        annotations=annotations,
    )


def _diff_ids(config: Mapping[str, Any]) -> list[str]:
    rootfs = config.get("rootfs")
    values = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    return [str(v) for v in values] if isinstance(values, list) else []


def _platform(config: Mapping[str, Any]) -> str:
    parts = [str(config.get("os", "")), str(config.get("architecture", ""))]
    if config.get("variant"):
        parts.append(str(config["variant"]))
    return "/".join(parts)


def _layers(
    blobs: Sequence[oci.Descriptor], diff_ids: Sequence[str], config: Mapping[str, Any]
) -> tuple[LayerRef, ...]:
    history = config.get("history")
    made = (
        [h for h in history if isinstance(h, dict) and not h.get("empty_layer")]
        if isinstance(history, list)
        else []
    )
    out = []
    for index, (blob, diff_id) in enumerate(zip(blobs, diff_ids, strict=True)):
        created = made[index].get("created_by") if index < len(made) else None
        out.append(
            LayerRef(
                index,
                blob.digest,
                diff_id,
                blob.size,
                created if isinstance(created, str) else None,
            )
        )
    return tuple(out)


def _strings(value: object) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def _settings(config: Mapping[str, Any]) -> Settings:
    inner = config.get("config")
    inner = inner if isinstance(inner, dict) else {}
    env: dict[str, str] = {}
    for item in _strings(inner.get("Env")):
        key, _, value = item.partition("=")
        env[key] = value
    labels = inner.get("Labels")
    health = inner.get("Healthcheck")
    return Settings(
        user=str(inner.get("User") or ""),
        env=env,
        entrypoint=_strings(inner.get("Entrypoint")),
        cmd=_strings(inner.get("Cmd")),
        workdir=str(inner.get("WorkingDir") or ""),
        exposed_ports=tuple(sorted(inner.get("ExposedPorts") or {}))
        if isinstance(inner.get("ExposedPorts"), dict)
        else (),
        labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
        healthcheck=dict(health) if isinstance(health, dict) else None,
    )


def _base_image(
    store: Store,
    digest: str,
    keys: Mapping[str, LedgerKey],
    annotations: Mapping[str, str],
    labels: Mapping[str, str],
) -> BaseImage:
    """The base, from verified provenance first, then the OCI base annotations, then labels."""
    good, _ = read_attestations(store, digest, keys, SLSA_PROVENANCE_V1)
    for attestation in good:
        definition = attestation.predicate.get("buildDefinition")
        if not isinstance(definition, Mapping):
            continue
        dependencies = definition.get("resolvedDependencies")
        for item in dependencies if isinstance(dependencies, list) else []:
            if isinstance(item, Mapping) and item.get("name") == "base-image":
                digests = item.get("digest")
                sha = digests.get("sha256") if isinstance(digests, Mapping) else None
                return BaseImage(
                    str(item.get("uri")) if item.get("uri") else None,
                    f"sha256:{sha}" if isinstance(sha, str) else None,
                    "provenance",
                )
        if definition.get("buildType") == IMMUTRAIL_BUILD_TYPE:
            # immutrail's builds name a base whenever they have one: none means `base: scratch`.
            return BaseImage(None, None, "scratch")
    for source, values in (("annotation", annotations), ("label", labels)):
        name = values.get(BASE_NAME_ANNOTATION)
        base_digest = values.get(BASE_DIGEST_ANNOTATION)
        if name or base_digest:
            if not base_digest and name and "@sha256:" in name:
                base_digest = name.rpartition("@")[2]
            return BaseImage(name or None, base_digest or None, source)
    return BaseImage(None, None, None)


def _packages(store: Store, digest: str, rootfs: RootFS) -> tuple[tuple[PackageRef, ...], str]:
    """Packages from the newest attached CycloneDX SBOM, else found in the filesystem now."""
    sboms = store.referrers(digest, SBOM_TYPE)
    for descriptor in reversed(sboms):
        try:
            manifest = store.get_manifest(descriptor.digest)
            layer = oci.Descriptor.from_dict((manifest.get("layers") or [None])[0], "SBOM layer")
            document = json.loads(store.read_blob(layer.digest, MAX_SBOM_BYTES))
        except (ArtifactError, ValueError, RecursionError) as exc:  # deep JSON: RecursionError
            log.warning("attached SBOM %s is unreadable: %s", descriptor.digest, exc)
            continue
        components = document.get("components") if isinstance(document, dict) else None
        items = []
        for component in components if isinstance(components, list) else []:
            if not isinstance(component, dict):
                continue
            purl = str(component.get("purl") or "")
            items.append(
                PackageRef(
                    str(component.get("name") or ""),
                    str(component.get("version") or ""),
                    purl,
                    purl[4:].partition("/")[0] if purl.startswith("pkg:") else "",
                )
            )
        return tuple(items), f"sbom:{descriptor.digest}"
    inventory = find_packages(rootfs)
    return (
        tuple(
            PackageRef(p.name, p.version, p.purl.to_string(), p.ecosystem)
            for p in inventory.packages
        ),
        "filesystem",
    )


def _config_files(rootfs: RootFS) -> tuple[ConfigFile, ...]:
    out = []
    for entry in rootfs.entries():
        if not entry.is_file:
            continue
        kind = config_kind(entry.path)
        if kind is None:
            continue
        try:
            data = rootfs.read(entry.path, max_bytes=entry.size)
        except (ContentNotRetainedError, PathNotFoundError) as exc:
            log.info("config file %s not readable: %s", entry.path, exc)
            continue
        if b"\x00" in data[:8192]:
            continue  # a binary (nginx modules under etc/nginx) is not configuration
        shown = data[:MAX_CONFIG_FILE_BYTES]
        out.append(
            ConfigFile(
                entry.path,
                kind,
                entry.layer,
                entry.size,
                shown.decode("utf-8", "replace"),
                len(data) > MAX_CONFIG_FILE_BYTES,
            )
        )
    return tuple(out)
