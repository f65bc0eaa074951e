"""A service's declaration in an environment: replicas, strategy, runtime, port, configuration.

``immutrail env declare ENV SERVICE FILE`` reads a small YAML file, keeps each configuration file
under its SHA-256 in ``$IMMUTRAIL_HOME/config-files/`` (write-once), appends ``service.declared``
and writes the declaration, with the configuration files, into the desired-state repository
(``<env>/<service>.json`` and ``<env>/<service>.files/``). The ledger is the truth: the latest
``service.declared`` event of ``env/service`` is the declaration, and a kept file that no longer
matches its digest is an error.

The configuration (``env``, ``files``, ``command``) is part of an instance's identity: its
digest (``config_digest``, SHA-256 of the JCS form) is on every instance, and an instance whose
configuration differs from the declaration is replaced by a new deployment.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from immutrail import names
from immutrail.artifacts.strict_yaml import StrictYamlError, load
from immutrail.crypto.canonical import canonical_json
from immutrail.files import FileTooLargeError, read_capped
from immutrail.ledger.event import Event, parse_entry
from immutrail.ledger.ledger import Ledger
from immutrail.ledger.storage.interface import EntryFilter
from immutrail.policy.desired import SERVICE_NAME, commit_service

from .errors import DeployInputError
from .runtime import RuntimeDriverError

EVENT_DECLARED = "service.declared"
CONFIG_DIR = "config-files"
MAX_DECLARATION_BYTES = 64 * 1024
MAX_CONFIG_FILE_BYTES = 1024 * 1024
STRATEGIES = ("blue-green", "rolling", "canary")
RUNTIMES = ("local", "docker")
_DURATION = re.compile(r"(\d+)(s|m|h|d)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Rolling:
    max_surge: int = 1
    max_unavailable: int = 0


@dataclass(frozen=True)
class Canary:
    steps: tuple[int, ...] = (10, 50, 100)
    """Percent of new connections sent to the new set at each step; the last is 100."""
    step_seconds: float = 10.0
    max_error_rate: float = 0.01
    """Refused connects / connections to the new set above which the canary is rolled back."""


@dataclass(frozen=True)
class ServiceSpec:
    environment: str
    service: str
    replicas: int
    strategy: str
    runtime: str
    port: int
    """The service endpoint's loopback port (the instances get ports of their own)."""
    env: Mapping[str, str]
    files: Mapping[str, str]
    """Path in the instance -> SHA-256 of the content (kept under ``config-files/``)."""
    command: tuple[str, ...] | None
    max_lifetime_s: int | None
    health_timeout_s: float
    rolling: Rolling
    canary: Canary

    @property
    def config_digest(self) -> str:
        """What makes two instances of one image the same: env, files and command."""
        identity = {
            "env": dict(self.env),
            "files": dict(self.files),
            "command": list(self.command) if self.command is not None else None,
        }
        return "sha256:" + hashlib.sha256(canonical_json(identity)).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {
            "replicas": self.replicas,
            "strategy": self.strategy,
            "runtime": self.runtime,
            "port": self.port,
            "env": dict(self.env),
            "files": dict(self.files),
            "command": list(self.command) if self.command is not None else None,
            "max_lifetime_s": self.max_lifetime_s,
            "health_timeout_s": self.health_timeout_s,
            "rolling": {
                "max_surge": self.rolling.max_surge,
                "max_unavailable": self.rolling.max_unavailable,
            },
            "canary": {
                "steps": list(self.canary.steps),
                "step_seconds": self.canary.step_seconds,
                "max_error_rate": self.canary.max_error_rate,
            },
        }

    @classmethod
    def from_json(cls, environment: str, service: str, data: Mapping[str, Any]) -> ServiceSpec:
        rolling, canary = data["rolling"], data["canary"]
        command = data.get("command")
        return cls(
            environment,
            service,
            int(data["replicas"]),
            str(data["strategy"]),
            str(data["runtime"]),
            int(data["port"]),
            dict(data["env"]),
            dict(data["files"]),
            tuple(command) if command is not None else None,
            data.get("max_lifetime_s"),
            float(data["health_timeout_s"]),
            Rolling(int(rolling["max_surge"]), int(rolling["max_unavailable"])),
            Canary(
                tuple(int(s) for s in canary["steps"]),
                float(canary["step_seconds"]),
                float(canary["max_error_rate"]),
            ),
        )


@dataclass(frozen=True)
class Declared:
    spec: ServiceSpec
    declared_by: str
    declared_at: str
    ledger_index: int


# --- reading a declaration file --------------------------------------------------------------


def parse_declaration(
    path: Path, environment: str, service: str
) -> tuple[ServiceSpec, dict[str, bytes]]:
    """Read and check a declaration file; the spec and the configuration files' contents."""
    check_names(environment, service)
    try:
        raw = read_capped(path, MAX_DECLARATION_BYTES)
    except FileTooLargeError as exc:
        raise DeployInputError(f"{path} is larger than {MAX_DECLARATION_BYTES} bytes") from exc
    except OSError as exc:
        raise DeployInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        document = load(raw.decode("utf-8")).value
    except (StrictYamlError, UnicodeDecodeError) as exc:
        line = getattr(exc, "line", None)
        raise DeployInputError(f"{path}{f':{line}' if line else ''}: {exc}") from exc
    if not isinstance(document, dict):
        raise DeployInputError(f"{path}: a declaration is a YAML mapping")
    reader = _Reader(path, document)
    replicas = reader.integer("replicas", 1, low=0, high=200)
    strategy = reader.choice("strategy", "blue-green", STRATEGIES)
    runtime = reader.choice("runtime", "local", RUNTIMES)
    if document.get("port") is None:
        raise DeployInputError(
            f"{path}: 'port' (the service endpoint's loopback port, 1-65535) is required"
        )
    port = reader.integer("port", 0, low=1, high=65535)
    env = reader.env()
    files = reader.files()
    command = reader.command()
    lifetime = reader.duration("max_lifetime", None)
    health = reader.duration("health_timeout", 60) or 60
    rolling = reader.section("rolling", {"max_surge", "max_unavailable"})
    surge = _Reader(path, rolling, "rolling.").integer("max_surge", 1, low=0, high=100)
    unavailable = _Reader(path, rolling, "rolling.").integer("max_unavailable", 0, low=0, high=100)
    if surge + unavailable < 1:
        raise DeployInputError(f"{path}: rolling needs max_surge + max_unavailable >= 1")
    canary_doc = reader.section("canary", {"steps", "step_seconds", "max_error_rate"})
    canary = _canary(path, canary_doc)
    reader.no_other_keys()
    spec = ServiceSpec(
        environment,
        service,
        replicas,
        strategy,
        runtime,
        port,
        env,
        {target: "sha256:" + hashlib.sha256(data).hexdigest() for target, data in files.items()},
        command,
        lifetime,
        float(health),
        Rolling(surge, unavailable),
        canary,
    )
    return spec, files


def _canary(path: Path, document: dict[str, Any]) -> Canary:
    steps = document.get("steps", [10, 50, 100])
    if (
        not isinstance(steps, list)
        or not steps
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 100 for s in steps)
        or steps != sorted(set(steps))
        or steps[-1] != 100
    ):
        raise DeployInputError(
            f"{path}: canary.steps is a rising list of percentages ending with 100, "
            "e.g. [10, 50, 100]"
        )
    reader = _Reader(path, document, "canary.")
    seconds = reader.number("step_seconds", 10.0, low=0.0, high=3600.0)
    rate = reader.number("max_error_rate", 0.01, low=0.0, high=1.0)
    return Canary(tuple(steps), seconds, rate)


class _Reader:
    def __init__(self, path: Path, document: dict[str, Any], prefix: str = "") -> None:
        self.path, self.document, self.prefix = path, document, prefix
        self.seen: set[str] = set()

    def _get(self, key: str) -> Any:
        self.seen.add(key)
        return self.document.get(key)

    def _bad(self, key: str, wanted: str) -> DeployInputError:
        return DeployInputError(f"{self.path}: {self.prefix}{key} must be {wanted}")

    def integer(self, key: str, default: int, *, low: int, high: int) -> int:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self._bad(key, f"an integer from {low} to {high}")
        return value

    def number(self, key: str, default: float, *, low: float, high: float) -> float:
        value = self._get(key)
        if value is None:
            return default
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not low <= value <= high
        ):
            raise self._bad(key, f"a number from {low} to {high}")
        return float(value)

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self._get(key)
        if value is None:
            return default
        if value not in choices:
            raise self._bad(key, "one of " + ", ".join(choices))
        return str(value)

    def duration(self, key: str, default: int | None) -> int | None:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        match = _DURATION.fullmatch(str(value))
        if not match or int(match.group(1)) <= 0:
            raise self._bad(key, "a duration such as 90s, 30m, 24h or 7d")
        return int(match.group(1)) * _UNITS[match.group(2)]

    def env(self) -> dict[str, str]:
        value = self._get("env") or {}
        if not isinstance(value, dict):
            raise self._bad("env", "a mapping of variable names to strings")
        out = {}
        for name, item in value.items():
            if not _ENV_NAME.fullmatch(name) or name == "PORT":
                raise self._bad("env", f"names of variables ({name!r} is not one, or is PORT)")
            if (
                not isinstance(item, str | int | float)
                or isinstance(item, bool)
                or "\0" in str(item)
            ):
                raise self._bad(f"env.{name}", "a string")
            out[name] = str(item)
        return out

    def files(self) -> dict[str, bytes]:
        value = self._get("files") or {}
        if not isinstance(value, dict):
            raise self._bad("files", "a mapping of absolute paths to local files")
        out: dict[str, bytes] = {}
        for target, source in value.items():
            pure = PurePosixPath(target)
            if not pure.is_absolute() or ".." in pure.parts or str(pure) != target or target == "/":
                raise self._bad("files", f"absolute, normalised paths ({target!r} is not one)")
            if not isinstance(source, str):
                raise self._bad(f"files.{target}", "a path to a local file")
            # Not resolve()d: a link loop is then the OSError (ELOOP) below, not a RuntimeError,
            # and the file is the one the kernel opens for this path.
            local = self.path.parent / source
            try:
                out[target] = read_capped(local, MAX_CONFIG_FILE_BYTES)
            except FileTooLargeError as exc:
                limit = f"at most {MAX_CONFIG_FILE_BYTES} bytes"
                raise self._bad(f"files.{target}", limit) from exc
            except OSError as exc:
                raise DeployInputError(
                    f"{self.path}: files.{target}: cannot read {local}: {exc.strerror or exc}"
                ) from exc
        return out

    def command(self) -> tuple[str, ...] | None:
        value = self._get("command")
        if value is None:
            return None
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self._bad("command", "a non-empty list of strings")
        return tuple(value)

    def section(self, key: str, allowed: set[str]) -> dict[str, Any]:
        value = self._get(key) or {}
        if not isinstance(value, dict):
            raise self._bad(key, "a mapping")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self._bad(key, "made of " + ", ".join(sorted(allowed)) + f" (not {unknown[0]})")
        return value

    def no_other_keys(self) -> None:
        unknown = sorted(set(self.document) - self.seen)
        if unknown:
            raise DeployInputError(f"{self.path}: unknown key {unknown[0]!r}")


def check_names(environment: str, service: str) -> None:
    names.check_environment(environment, DeployInputError)
    if not SERVICE_NAME.fullmatch(service):
        raise DeployInputError(f"{service!r} is not a service name")


# --- recording and reading ---------------------------------------------------------------------


def declare(
    home: Path, ledger: Ledger, actor: str, spec: ServiceSpec, files: Mapping[str, bytes]
) -> Declared:
    """Keep the files, append ``service.declared``, commit the declaration to the repository."""
    for data in files.values():
        _keep(home, data)
    payload = {
        "environment": spec.environment,
        "service": spec.service,
        "spec": spec.to_json(),
        "config_digest": spec.config_digest,
    }
    event = Event.create(EVENT_DECLARED, actor, f"{spec.environment}/{spec.service}", payload)
    index = ledger.append(event).index
    declared = Declared(spec, actor, event.time, index)
    _commit(home, declared, files)
    return declared


def declared(ledger: Ledger, environment: str) -> dict[str, Declared]:
    """Every service declared in ``environment``, by name (the latest declaration of each)."""
    found: dict[str, Declared] = {}
    for row in ledger.entries(EntryFilter(type=EVENT_DECLARED)):
        event = parse_entry(row.data)
        payload = event.payload
        if payload.get("environment") != environment:
            continue
        try:
            service = str(payload["service"])
            spec = ServiceSpec.from_json(environment, service, payload["spec"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # Only a hand-appended event can be malformed: say which, rather than guess.
            raise RuntimeDriverError(
                f"ledger entry {row.index}: {EVENT_DECLARED} is malformed ({exc!r}): it was "
                "appended by hand, not by `immutrail env declare`"
            ) from exc
        found[service] = Declared(spec, event.actor, event.time, row.index)
    return dict(sorted(found.items()))


def declaration(ledger: Ledger, environment: str, service: str) -> Declared:
    found = declared(ledger, environment).get(service)
    if found is None:
        raise DeployInputError(
            f"{service} is not declared in {environment} (immutrail env declare "
            f"{environment} {service} FILE)"
        )
    return found


def config_files(home: Path, spec: ServiceSpec) -> dict[str, bytes]:
    """The configuration files' contents, each checked against the digest the ledger names."""
    out = {}
    for target, digest in spec.files.items():
        path = home / CONFIG_DIR / digest.replace(":", "-")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RuntimeDriverError(
                f"the configuration file {target} of {spec.environment}/{spec.service} "
                f"({digest}) is missing from {path.parent}: {exc.strerror or exc}"
            ) from exc
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise RuntimeDriverError(
                f"the kept configuration file {path} no longer matches its digest {digest}"
            )
        out[target] = data
    return out


def _keep(home: Path, data: bytes) -> None:
    folder = home / CONFIG_DIR
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / ("sha256-" + hashlib.sha256(data).hexdigest())
    if target.exists():
        return
    temporary = target.with_name(target.name + f".{os.getpid()}.tmp")
    temporary.write_bytes(data)
    temporary.chmod(0o444)
    os.replace(temporary, target)


def _commit(home: Path, declared: Declared, files: Mapping[str, bytes]) -> None:
    spec = declared.spec
    where = f"{spec.environment}/{spec.service}"
    message = (
        f"declare {where}: {spec.replicas} x {spec.strategy} on {spec.runtime}, "
        f"port {spec.port}\n\nconfig-digest: {spec.config_digest}\n"
        f"ledger-index: {declared.ledger_index}\ndeclared-by: {declared.declared_by}\n"
    )
    extra = {f"{where}.files{target}": data for target, data in files.items()}
    commit_service(
        home,
        spec.environment,
        spec.service,
        {
            "declaration": {
                **spec.to_json(),
                "config_digest": spec.config_digest,
                "ledger_index": declared.ledger_index,
                "declared_by": declared.declared_by,
            }
        },
        (declared.declared_by, message),
        extra,
    )
