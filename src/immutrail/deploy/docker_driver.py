"""The ``docker`` runtime: each instance is a locked-down container on a Docker engine.

The engine only ever sees an image by its ID, which (engine 20.10) is the digest of the image's
*config*, not of its manifest: the driver maps manifest digest -> config digest through the store,
loads the image from an export of the store when the engine lacks it (the engine recomputes the ID
from the config bytes and checks every layer against the config's diff IDs, so what runs is what
the store holds), and starts the container from the ID, never from a tag another hand could move.

Every container runs with a read-only root filesystem, a tmpfs scratch at ``/tmp``, no new
privileges, every capability dropped, Docker's init as PID 1 and the host network (the instance
listens on a loopback port). Configuration files are written under
``$IMMUTRAIL_HOME/runtime/docker/<name>/config`` and bound read-only, one file per bind.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, cast

import docker  # type: ignore[import-untyped]  # docker-py ships no type information
import docker.errors  # type: ignore[import-untyped]
import requests
from docker.types import Mount  # type: ignore[import-untyped]

from immutrail.artifacts.errors import ArtifactError
from immutrail.artifacts.export import export_image
from immutrail.artifacts.store import Store
from immutrail.ledger.event import format_time

from .runtime import Health, Instance, InstanceSpec, Logs, RuntimeDriverError

log = logging.getLogger(__name__)

LABEL_PREFIX = "immutrail."
LABEL_ENVIRONMENT = "immutrail.environment"
LABEL_SERVICE = "immutrail.service"
LABEL_DIGEST = "immutrail.digest"
LABEL_LEDGER_INDEX = "immutrail.ledger-index"
LABEL_MANAGED = "immutrail.managed"
LABEL_PORT = "immutrail.port"
OWN_LABELS = (LABEL_ENVIRONMENT, LABEL_SERVICE, LABEL_DIGEST, LABEL_MANAGED, LABEL_PORT)

SCRATCH = "/tmp"  # noqa: S108  # the path *inside* the container, backed by its own tmpfs
SCRATCH_OPTIONS = "rw,nosuid,nodev,mode=1777,size=64m"
STOP_TIMEOUT = 10
"""Seconds between SIGTERM and SIGKILL when an instance is destroyed."""
START_PERIOD = 10.0
"""Seconds after start during which a closed port means ``starting`` rather than ``unhealthy``."""
PROBE_TIMEOUT = 1.0

# Docker's container name grammar; environment and service names become part of the name.
_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
_DOCKER_TIME_RE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")

_RUNNING_STATES = {"running"}
_STARTING_STATES = {"created", "restarting"}
_HEALTH = {"starting": Health.starting, "healthy": Health.healthy, "unhealthy": Health.unhealthy}


class InstanceGoneError(RuntimeDriverError):
    """The engine has no container by that name (destroyed, or removed behind our back)."""


class DockerSpecError(RuntimeDriverError):
    """The instance spec cannot become a container (a bad name, file path or label)."""


def _docker_time(text: str) -> datetime:
    """Docker's RFC 3339 timestamps carry nanoseconds, which ``fromisoformat`` (3.11) refuses."""
    match = _DOCKER_TIME_RE.fullmatch(text)
    if match is None:
        raise RuntimeDriverError(f"the engine reported an unreadable time {text!r}")
    whole, fraction, zone = match.groups()
    micro = (fraction or "0")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{whole}.{micro}{'+00:00' if zone == 'Z' else zone}")


def _check_name(kind: str, value: str) -> None:
    if not _NAME_RE.fullmatch(value):
        raise DockerSpecError(
            f"the {kind} name {value!r} cannot be part of a container name "
            "(letters, digits, '_', '.', '-'; not starting with a punctuation mark)"
        )


def _file_target(path: str) -> PurePosixPath:
    target = PurePosixPath(path)
    if not target.is_absolute() or ".." in target.parts or str(target) != path or path == "/":
        raise DockerSpecError(f"the config file path {path!r} must be absolute and normalised")
    if target.is_relative_to(SCRATCH):
        raise DockerSpecError(f"the config file {path!r} would be hidden by the {SCRATCH} scratch")
    return target


def _labels(spec: InstanceSpec) -> dict[str, str]:
    clashes = sorted(set(spec.labels) & set(OWN_LABELS))
    if clashes:
        raise DockerSpecError(f"the driver sets these labels itself: {', '.join(clashes)}")
    labels = {
        **spec.labels,
        LABEL_ENVIRONMENT: spec.environment,
        LABEL_SERVICE: spec.service,
        LABEL_DIGEST: spec.digest,
        LABEL_MANAGED: "true",
    }
    if spec.port is not None:
        labels[LABEL_PORT] = str(spec.port)
    return labels


def _env(spec: InstanceSpec) -> dict[str, str]:
    if spec.port is None:
        return dict(spec.env)
    if not 0 < spec.port < 65536:
        raise DockerSpecError(f"port {spec.port} is not a TCP port")
    if "PORT" in spec.env and spec.env["PORT"] != str(spec.port):
        raise DockerSpecError(f"env PORT={spec.env['PORT']} contradicts the port {spec.port}")
    return {**spec.env, "PORT": str(spec.port)}


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), PROBE_TIMEOUT):
        return True
    return False


@contextlib.contextmanager
def _engine_errors(action: str) -> Iterator[None]:
    """docker-py raises its own errors and, when the engine is unreachable, requests' errors."""
    try:
        yield
    except docker.errors.ImageNotFound as exc:
        raise RuntimeDriverError(f"{action}: the engine has no such image: {exc}") from exc
    except docker.errors.NotFound as exc:
        raise InstanceGoneError(f"{action}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise RuntimeDriverError(f"{action}: the Docker engine failed: {exc}") from exc


class DockerRuntime:
    """Instances as containers of one Docker engine (``client``), images from ``store``."""

    name = "docker"

    def __init__(
        self,
        store: Store,
        client: docker.DockerClient,
        *,
        home: Path | None = None,
        stop_timeout: int = STOP_TIMEOUT,
        start_period: float = START_PERIOD,
    ) -> None:
        self.store = store
        self.client = client
        # The store of a home is $IMMUTRAIL_HOME/store; the config files go beside it.
        self.state_dir = (home if home is not None else store.root.parent) / "runtime" / "docker"
        self.stop_timeout = stop_timeout
        self.start_period = start_period
        self._configs: dict[str, str] = {}
        """manifest digest -> config digest; manifests are content-addressed, so never stale."""

    @classmethod
    def connect(cls, store: Store, base_url: str, **options: Any) -> DockerRuntime:
        """A driver for the engine at ``base_url`` (``unix:///run/docker.sock``, ``tcp://…``)."""
        with _engine_errors(f"connecting to {base_url}"):
            client = docker.DockerClient(base_url=base_url)
        return cls(store, client, **options)

    # -- images --------------------------------------------------------------------------------

    def _config_digest(self, digest: str) -> str:
        if digest not in self._configs:
            try:
                _, blobs = self.store.image_blobs(digest)
            except ArtifactError as exc:
                raise RuntimeDriverError(f"image {digest} cannot be read: {exc}") from exc
            self._configs[digest] = blobs[0].digest
        return self._configs[digest]

    def _known_images(self) -> dict[str, list[str]]:
        """config digest -> the manifest digests in the store that share that config."""
        found: dict[str, list[str]] = {}
        for record in self.store.list():
            try:
                config = self._config_digest(record.digest)
            except RuntimeDriverError as exc:
                log.warning("skipping %s while listing: %s", record.digest, exc)
                continue
            found.setdefault(config, []).append(record.digest)
        return found

    def _ensure_image(self, digest: str) -> str:
        """The engine's ID of ``digest``, loading the image from the store when it is missing."""
        config = self._config_digest(digest)
        with _engine_errors(f"looking up image {config}"):
            try:
                self.client.images.get(config)
                return config
            except docker.errors.ImageNotFound:
                pass
        log.info("loading %s into the Docker engine as %s", digest, config)
        with tempfile.TemporaryDirectory(prefix="immutrail-docker-") as folder:
            archive = Path(folder) / "image.tar"
            try:
                export_image(self.store, digest, archive)
            except ArtifactError as exc:
                raise RuntimeDriverError(f"image {digest} cannot be exported: {exc}") from exc
            with _engine_errors(f"loading image {digest}"), archive.open("rb") as stream:
                self.client.images.load(stream)
        with _engine_errors(f"image {digest} after loading"):
            try:
                loaded = self.client.images.get(config).id
            except docker.errors.ImageNotFound:
                loaded = None
        if loaded != config:  # the engine computes the ID itself: it did not load our config
            raise RuntimeDriverError(f"the engine did not load {digest} as {config}")
        return config

    # -- configuration files -------------------------------------------------------------------

    def _write_files(self, name: str, files: Mapping[str, bytes]) -> list[Mount]:
        """Write ``files`` beside the instance's name; one read-only bind per file."""
        targets = {path: _file_target(path) for path in files}  # validate before writing
        if not files:
            return []
        config = self.state_dir / name / "config"
        mounts: list[Mount] = []
        for path, target in sorted(targets.items()):
            source = config.joinpath(*target.parts[1:])
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_bytes(files[path])
            source.chmod(0o444)  # root without CAP_DAC_OVERRIDE can still read it
            mounts.append(Mount(str(target), str(source), type="bind", read_only=True))
        for folder in [config, *(p for p in config.rglob("*") if p.is_dir())]:
            folder.chmod(0o755)
        return mounts

    def _remove_files(self, name: str) -> None:
        folder = self.state_dir / name
        if folder.is_dir():
            shutil.rmtree(folder)

    # -- the protocol --------------------------------------------------------------------------

    def create(self, spec: InstanceSpec) -> Instance:
        _check_name("environment", spec.environment)
        _check_name("service", spec.service)
        labels, env = _labels(spec), _env(spec)
        for path in spec.files:
            _file_target(path)
        options: dict[str, Any] = {}
        if spec.command is not None:
            if not spec.command:
                raise DockerSpecError("an empty command cannot start anything")
            options["entrypoint"] = [spec.command[0]]
            options["command"] = list(spec.command[1:])
        image = self._ensure_image(spec.digest)
        name = f"immutrail-{spec.environment}-{spec.service}-{secrets.token_hex(4)}"
        try:
            mounts = self._write_files(name, spec.files)
            with _engine_errors(f"starting {spec.service} in {spec.environment}"):
                self.client.containers.run(
                    image,
                    name=name,
                    detach=True,
                    read_only=True,
                    tmpfs={SCRATCH: SCRATCH_OPTIONS},
                    security_opt=["no-new-privileges"],
                    cap_drop=["ALL"],
                    network_mode="host",
                    # As PID 1 the service would ignore SIGTERM and every stop would wait the full
                    # timeout (measured: 10.1 s vs 0.1 s); Docker's init forwards it and reaps.
                    init=True,
                    environment=env,
                    labels=labels,
                    mounts=mounts,
                    **options,
                )
        except BaseException:
            self._discard(name)
            raise
        log.info("started %s (%s) for %s/%s", name, spec.digest, spec.environment, spec.service)
        return self._describe(self._container(name), self._known_images())

    def _discard(self, name: str) -> None:
        """Undo a half-made instance: its container if the engine made one, and its files."""
        with contextlib.suppress(RuntimeDriverError), _engine_errors(f"discarding {name}"):
            self.client.containers.get(name).remove(force=True, v=True)
        self._remove_files(name)

    def _container(self, instance_id: str) -> Any:
        with _engine_errors(f"instance {instance_id}"):
            return self.client.containers.get(instance_id)

    def list(self, environment: str | None = None) -> list[Instance]:
        filters = {"label": f"{LABEL_ENVIRONMENT}={environment}"} if environment else None
        with _engine_errors("listing containers"):
            containers = self.client.containers.list(all=True, filters=filters, ignore_removed=True)
        known = self._known_images()
        return sorted(
            (self._describe(c, known) for c in containers), key=lambda i: (i.created_at, i.id)
        )

    def health(self, instance_id: str) -> Health:
        return self._health(self._container(instance_id))

    def _health(self, container: Any) -> Health:
        state: dict[str, Any] = container.attrs.get("State") or {}
        status = str(state.get("Status", ""))
        if status in _STARTING_STATES:
            return Health.starting
        if status not in _RUNNING_STATES:
            return Health.exited
        check = state.get("Health")
        if isinstance(check, dict) and check.get("Status") in _HEALTH:
            return _HEALTH[str(check["Status"])]
        port = _port_of(container.labels)
        if port is None:
            return Health.healthy  # running, and nothing more can be asked of it
        if _port_open(port):
            return Health.healthy
        started = _docker_time(str(state.get("StartedAt", "")))
        age = (datetime.now(UTC) - started).total_seconds()
        return Health.starting if age < self.start_period else Health.unhealthy

    def logs(self, instance_id: str) -> Logs:
        container = self._container(instance_id)
        with _engine_errors(f"reading the logs of {instance_id}"):
            stdout = container.logs(stdout=True, stderr=False)
            stderr = container.logs(stdout=False, stderr=True)
        return Logs(stdout=cast(bytes, stdout), stderr=cast(bytes, stderr))

    def destroy(self, instance_id: str) -> None:
        try:
            container = self._container(instance_id)
            name = str(container.name)
            with _engine_errors(f"destroying {instance_id}"):
                container.stop(timeout=self.stop_timeout)
                container.remove(force=True, v=True)
        except InstanceGoneError:
            if _NAME_RE.fullmatch(instance_id):
                self._remove_files(instance_id)  # the files of an instance removed behind our back
            raise
        self._remove_files(name)
        log.info("destroyed %s", name)

    def kill(self, instance_id: str) -> None:
        """SIGKILL to the container (no restart policy: it stays exited until replaced)."""
        container = self._container(instance_id)
        with _engine_errors(f"killing {instance_id}"):
            container.kill()
        log.info("killed %s", instance_id)

    # -- observation ---------------------------------------------------------------------------

    def _describe(self, container: Any, known: Mapping[str, Sequence[str]]) -> Instance:
        labels: dict[str, str] = dict(container.labels or {})
        image_id = str(container.attrs.get("Image", ""))
        candidates = known.get(image_id, ())
        claimed = labels.get(LABEL_DIGEST)
        if claimed in candidates:
            digest = str(claimed)  # several manifests can share a config; the label picks one
        elif candidates:
            digest = candidates[0]
        else:
            digest = f"unknown:{image_id}"
        container_id = str(container.name)
        return Instance(
            id=container_id,
            environment=labels.get(LABEL_ENVIRONMENT, ""),
            service=labels.get(LABEL_SERVICE, ""),
            digest=digest,
            created_at=format_time(_docker_time(str(container.attrs.get("Created", "")))),
            port=_port_of(labels),
            labels=labels,
            health=self._health(container),
            managed=labels.get(LABEL_MANAGED) == "true",
        )


def _port_of(labels: Mapping[str, str]) -> int | None:
    value = labels.get(LABEL_PORT, "")
    return int(value) if value.isdigit() and 0 < int(value) < 65536 else None
