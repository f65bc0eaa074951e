"""The privacy guardrail: no canary when what handles personal data changes.

An image definition lists ``privacy_relevant`` paths and configuration keys (the image config
label ``dev.immutrail.privacy-relevant``). During a canary two versions serve users at once; if
they differ in a privacy-relevant path or key, users would see two different privacy behaviours
(two consent texts, two retention rules) at the same time. So a canary is refused, recorded as
``deployment.refused``, and the deployment must be all-or-nothing (blue/green).

Compared between every running image/configuration and the new one, for the union of both
images' lists:

* a path (``/etc/app/privacy.toml``, ``/opt/app/consent/``, or a glob ``/opt/app/**/*.pii``):
  the content digest, mode and type of every file it names in the image, and the declared
  configuration file at that path;
* a key (``env:RETENTION_DAYS``): its value in the image's ``Env`` and in the declared
  ``env``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from immutrail.artifacts.errors import ArtifactError
from immutrail.artifacts.imageconfig import LABEL_PRIVACY, image_env
from immutrail.artifacts.rootfs import RootFS, glob_to_regex
from immutrail.artifacts.store import Store
from immutrail.ledger.event import Event, parse_entry
from immutrail.ledger.storage.interface import EntryFilter
from immutrail.policy.desired import DesiredState

from .declaration import EVENT_DECLARED, ServiceSpec
from .engine import EVENT_REFUSED, Context
from .errors import DeploymentRefusedError
from .observe import LABEL_CONFIG, Observed
from .runtime import RuntimeDriverError

_GLOB = set("*?[")


def refuse_canary_if_privacy_changes(
    ctx: Context, spec: ServiceSpec, desired: DesiredState, observed: Observed
) -> None:
    """Raise (and record) :class:`DeploymentRefusedError` if a canary would mix privacy rules."""
    running = {(i.digest, i.labels.get(LABEL_CONFIG, "")) for i in observed.stale}
    changes: list[str] = []
    for digest, config_digest in sorted(running):
        old_env, old_files = _declared_config(ctx, spec, config_digest)
        changes += privacy_changes(
            ctx.store, digest, desired.digest, old_env, spec.env, old_files, spec.files
        )
    if not changes:
        return
    reason = (
        "canary refused: the new version changes privacy-relevant "
        + ", ".join(sorted(set(changes)))
        + "; two versions would serve users at once. Deploy it all-or-nothing "
        "(--strategy blue-green)"
    )
    ctx.ledger.append(
        Event.create(
            EVENT_REFUSED,
            ctx.actor,
            f"{spec.environment}/{spec.service}",
            {
                "environment": spec.environment,
                "service": spec.service,
                "digest": desired.digest,
                "strategy": "canary",
                "reason": reason[:2000],
                "privacy_relevant_changes": sorted(set(changes))[:100],
            },
        )
    )
    raise DeploymentRefusedError(reason)


def privacy_changes(
    store: Store,
    old: str,
    new: str,
    old_env: Mapping[str, str],
    new_env: Mapping[str, str],
    old_files: Mapping[str, str],
    new_files: Mapping[str, str],
) -> list[str]:
    """What differs between two image/configuration pairs in privacy-relevant paths and keys."""
    old_config, new_config = _config(store, old), _config(store, new)
    entries = sorted(set(_privacy_entries(old_config)) | set(_privacy_entries(new_config)))
    if not entries:
        return []
    paths = [e for e in entries if e.startswith("/")]
    keys = [e.removeprefix("env:") for e in entries if not e.startswith("/")]
    changes = []
    if paths:
        before, after = _files(store, old, paths), _files(store, new, paths)
        differing = [p for p in sorted(set(before) | set(after)) if before.get(p) != after.get(p)]
        changes += [f"path /{p}" for p in differing]
        for target in sorted(set(old_files) | set(new_files)):
            named = _named(target.lstrip("/"), paths)
            if named and old_files.get(target) != new_files.get(target):
                changes.append(f"configuration file {target}")
    old_image_env, new_image_env = image_env(old_config), image_env(new_config)
    for key in keys:
        before_value = (old_image_env.get(key), old_env.get(key))
        if before_value != (new_image_env.get(key), new_env.get(key)):
            changes.append(f"key {key}")
    return changes


def _declared_config(
    ctx: Context, spec: ServiceSpec, config_digest: str
) -> tuple[Mapping[str, str], Mapping[str, str]]:
    """The env and files of the declaration that had ``config_digest`` (what runs now)."""
    for row in ctx.ledger.entries(EntryFilter(type=EVENT_DECLARED)):
        payload = parse_entry(row.data).payload
        if (
            payload.get("environment") == spec.environment
            and payload.get("service") == spec.service
            and payload.get("config_digest") == config_digest
        ):
            old = payload["spec"]
            return dict(old.get("env") or {}), dict(old.get("files") or {})
    return {}, {}  # an unknown configuration: compared as empty, so any declared key differs


def _config(store: Store, digest: str) -> dict[str, Any]:
    try:
        return store.image_config(digest)
    except ArtifactError as exc:
        raise RuntimeDriverError(f"cannot read the image config of {digest}: {exc}") from exc


def _privacy_entries(config: Mapping[str, Any]) -> list[str]:
    labels = config.get("Labels") or {}
    try:
        declared = json.loads(labels.get(LABEL_PRIVACY, "{}"))
    except (ValueError, RecursionError):  # an image label: any text at all
        return []
    paths = declared.get("paths") if isinstance(declared, dict) else None
    return [str(p) for p in paths] if isinstance(paths, list) else []


def _files(store: Store, digest: str, paths: list[str]) -> dict[str, tuple[str, int, str | None]]:
    """Every image file a privacy path names: root-relative path -> (type, mode, sha256)."""
    try:
        store.verify(digest)
        _, blobs = store.image_blobs(digest)
        layers = [store.blob_path(b.digest) for b in blobs[1:]]
        tree = RootFS.from_layers(layers, content_patterns=())
    except ArtifactError as exc:
        raise RuntimeDriverError(f"cannot read the files of {digest}: {exc}") from exc
    return {
        entry.path: (entry.type.value, entry.mode, entry.sha256)
        for entry in tree.entries()
        if _named(entry.path, paths)
    }


def _named(path: str, patterns: list[str]) -> bool:
    """Whether root-relative ``path`` is one the privacy ``patterns`` name (itself or below)."""
    for pattern in patterns:
        relative = pattern.strip("/")
        if _GLOB & set(relative):
            if glob_to_regex(relative).fullmatch(path):
                return True
        elif path == relative or path.startswith(relative + "/"):
            return True
    return False
