"""The image config and manifest documents of a build, as pure functions of their inputs.

Nothing here reads a clock, the host or the environment: ``created`` is the build's source time,
the platform comes from the definition or the base, and label and annotation sets are fixed. That
is what makes the manifest digest a function of the commit alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import oci
from .definition import DEFAULT_PLATFORM, ImageDefinition
from .errors import ArtifactInputError
from .oci import Descriptor

LABEL_DEFINITION = "dev.immutrail.definition"
LABEL_DIRTY = "dev.immutrail.dirty"
LABEL_PRIVACY = "dev.immutrail.privacy-relevant"


def image_env(config: Mapping[str, Any]) -> dict[str, str]:
    """A run configuration's ``Env`` list as a mapping (entries without ``=`` are skipped)."""
    env: dict[str, str] = {}
    for item in config.get("Env") or []:
        if isinstance(item, str) and "=" in item:
            key, _, value = item.partition("=")
            env[key] = value
    return env


@dataclass(frozen=True)
class SourceInfo:
    """Where the image came from: goes into history, labels and annotations."""

    commit: str
    definition_path: str
    epoch: int
    dirty: bool
    source_url: str | None


@dataclass(frozen=True)
class BuiltLayer:
    descriptor: Descriptor
    diff_id: str
    created_by: str


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _platform(definition: ImageDefinition, base_config: Mapping[str, Any] | None) -> list[str]:
    if base_config is not None:
        base = [str(base_config.get("os", "")), str(base_config.get("architecture", ""))]
        if base_config.get("variant"):
            base.append(str(base_config["variant"]))
        if definition.platform is not None and definition.platform.split("/") != base:
            raise ArtifactInputError(
                f"platform {definition.platform} differs from the base image's {'/'.join(base)}"
            )
        return base
    return (definition.platform or DEFAULT_PLATFORM).split("/")


def image_config(
    definition: ImageDefinition,
    layers: Sequence[BuiltLayer],
    source: SourceInfo,
    base_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The OCI image config: the base's, with the definition's settings and layers on top."""
    created = rfc3339(source.epoch)
    base_inner = dict(base_config.get("config") or {}) if base_config else {}
    base_rootfs = base_config.get("rootfs", {}) if base_config else {}
    base_diff_ids = list(base_rootfs.get("diff_ids", [])) if isinstance(base_rootfs, dict) else []
    base_history = list(base_config.get("history", [])) if base_config else []

    inner: dict[str, Any] = base_inner
    env = {k: v for k, _, v in (e.partition("=") for e in inner.get("Env", []) or [])}
    env.update(definition.env)
    if env:
        inner["Env"] = [f"{k}={v}" for k, v in env.items()]
    if definition.entrypoint is not None:
        inner["Entrypoint"] = list(definition.entrypoint)
        if definition.cmd is None:
            inner.pop("Cmd", None)  # as Docker does: a new entrypoint drops the base's cmd
    if definition.cmd is not None:
        inner["Cmd"] = list(definition.cmd)
    if definition.user is not None:
        inner["User"] = definition.user
    if definition.workdir is not None:
        inner["WorkingDir"] = definition.workdir
    if definition.ports:
        ports = dict(inner.get("ExposedPorts") or {})
        ports.update({port: {} for port in definition.ports})
        inner["ExposedPorts"] = ports
    labels = dict(inner.get("Labels") or {})
    labels.update(definition.labels)
    labels[LABEL_DEFINITION] = source.definition_path
    if source.dirty:
        labels[LABEL_DIRTY] = "true"
    else:
        labels.pop(LABEL_DIRTY, None)
    if definition.privacy_relevant:
        labels[LABEL_PRIVACY] = oci.encode({"paths": list(definition.privacy_relevant)}).decode()
    inner["Labels"] = labels
    if definition.healthcheck is not None:
        check = definition.healthcheck
        health: dict[str, Any] = {"Test": list(check.test)}
        for key, value in (
            ("Interval", check.interval_ns),
            ("Timeout", check.timeout_ns),
            ("StartPeriod", check.start_period_ns),
            ("Retries", check.retries),
        ):
            if value is not None:
                health[key] = value
        inner["Healthcheck"] = health  # Docker's extension of the config; OCI tools ignore it

    platform = _platform(definition, base_config)
    config: dict[str, Any] = {
        "created": created,
        "os": platform[0],
        "architecture": platform[1],
        "config": inner,
        "rootfs": {"type": "layers", "diff_ids": base_diff_ids + [b.diff_id for b in layers]},
        "history": base_history
        + [
            {"created": created, "created_by": layer.created_by, "comment": "immutrail build"}
            for layer in layers
        ],
    }
    if len(platform) > 2:
        config["variant"] = platform[2]
    return config


def image_manifest(
    config: Descriptor,
    layers: Sequence[Descriptor],
    source: SourceInfo,
) -> dict[str, Any]:
    annotations = {
        oci.CREATED: rfc3339(source.epoch),
        oci.REVISION: source.commit,
        LABEL_DEFINITION: source.definition_path,
    }
    if source.source_url is not None:
        annotations[oci.SOURCE] = source.source_url
    if source.dirty:
        annotations[LABEL_DIRTY] = "true"
    return {
        "schemaVersion": 2,
        "mediaType": oci.MANIFEST,
        "config": config.to_dict(),
        "layers": [layer.to_dict() for layer in layers],
        "annotations": annotations,
    }
