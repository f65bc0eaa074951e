"""The declarative image definition: a YAML file in the user's repository, checked before use.

Checking happens in two steps so that every mistake is reported at once and with its line: the
JSON Schema (``image-definition.schema.json``, Draft 2020-12, published as
``schemas/image-definition.schema.json``) fixes the shape, then the semantic rules that a schema
cannot express well: sources stay inside the repository, destinations are absolute and normalized,
no two layers share a destination, ports and uids are in range. A definition that passes is a
frozen :class:`ImageDefinition`; nothing downstream re-validates it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jsonschema import ValidationError

import json
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from . import strict_yaml
from .errors import DefinitionError
from .globs import GlobError, check_pattern
from .layers import COMPRESSION_GZIP

MAX_DEFINITION_BYTES = 1024 * 1024
MAX_ID = 0o7777777
"""The largest uid/gid a USTAR header holds (7 octal digits); larger ids would need PAX."""

RESERVED_LABEL_PREFIX = "dev.immutrail."
DEFAULT_PLATFORM = "linux/amd64"
SCHEMA_RESOURCE = "image-definition.schema.json"

_DURATION_RE = re.compile(r"([0-9]+)(ns|us|ms|s|m|h)")
_DURATION_NS = {"ns": 1, "us": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}

# Friendlier words for the schema's pattern and type failures, by the offending key.
_HINTS = {
    "base": "must be `scratch` or an image digest sha256:<64 lower-case hex digits>",
    "platform": "must be os/architecture[/variant], such as linux/amd64",
    "mode": 'must be octal digits in quotes, such as "0644" (YAML reads 0755 unquoted as 493)',
    "owner": 'must be a numeric "uid:gid" in quotes, such as "1000:1000"',
    "ports": "must be PORT or PORT/tcp, PORT/udp, PORT/sctp, such as 8080/tcp",
    "destination": "must be an absolute path in the image, such as /app",
    "workdir": "must be an absolute path in the image, such as /app",
    "user": "must be user[:group], by name or number",
    "interval": "must be a duration such as 30s or 1m30s",
    "timeout": "must be a duration such as 30s or 1m30s",
    "start_period": "must be a duration such as 30s or 1m30s",
    "compression": "must be `gzip` (the default) or `none` (uncompressed tar layers)",
}


@dataclass(frozen=True)
class LayerSpec:
    """One layer: ``source`` relative to the repository root (``.`` = all of it)."""

    source: str
    destination: str
    mode: int | None = None
    owner: tuple[int, int] | None = None
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class Healthcheck:
    test: tuple[str, ...]
    interval_ns: int | None = None
    timeout_ns: int | None = None
    start_period_ns: int | None = None
    retries: int | None = None


@dataclass(frozen=True)
class ImageDefinition:
    base: str
    """``scratch`` or the manifest digest of an image in the store."""
    platform: str | None = None
    layers: tuple[LayerSpec, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    user: str | None = None
    workdir: str | None = None
    ports: tuple[str, ...] = ()
    """Normalized to ``PORT/PROTO``."""
    healthcheck: Healthcheck | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    privacy_relevant: tuple[str, ...] = ()
    compression: str = COMPRESSION_GZIP
    """``gzip`` or ``none``: how the layers this definition adds are stored (the base's keep
    theirs)."""

    @property
    def from_scratch(self) -> bool:
        return self.base == "scratch"


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema, shipped inside the package so an installed immutrail can validate."""
    text = resources.files(__package__).joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    value: dict[str, Any] = json.loads(text)
    return value


def load_definition(path: Path, name: str | None = None) -> ImageDefinition:
    """Read and check the definition at ``path``; ``name`` is how errors refer to the file."""
    shown = name or str(path)
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_DEFINITION_BYTES + 1)
    except OSError as exc:
        raise DefinitionError(shown, [f"cannot read: {exc.strerror or exc}"]) from exc
    return parse_definition(data, shown)


def parse_definition(data: bytes, name: str) -> ImageDefinition:
    """Check the bytes of a definition; raise :class:`DefinitionError` listing every problem."""
    if len(data) > MAX_DEFINITION_BYTES:
        raise DefinitionError(name, [f"larger than {MAX_DEFINITION_BYTES} bytes"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DefinitionError(name, [f"not UTF-8 text: {exc}"]) from exc
    try:
        document = strict_yaml.load(text)
    except strict_yaml.StrictYamlError as exc:
        where = f"line {exc.line}: " if exc.line else ""
        raise DefinitionError(name, [f"{where}{exc}"]) from exc
    if not isinstance(document.value, dict):
        raise DefinitionError(name, ["must be a YAML mapping with at least the key `base`"])
    problems = _schema_problems(document)
    if problems:
        raise DefinitionError(name, problems)
    checker = _Semantics(document)
    definition = checker.build()
    if checker.problems:
        raise DefinitionError(name, checker.problems)
    return definition


def _where(document: strict_yaml.Document, path: tuple[str | int, ...]) -> str:
    dotted = ""
    for part in path:
        dotted += f"[{part}]" if isinstance(part, int) else (f".{part}" if dotted else part)
    line = document.line_of(path)
    prefix = f"line {line}: " if line else ""
    return f"{prefix}{dotted or '(top level)'}"


def _schema_problems(document: strict_yaml.Document) -> list[str]:
    # Imported here: importing jsonschema costs about 2 s (it compiles the RFC 3987 grammar of
    # an optional format checker), which every command would otherwise pay at start-up.
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    found: list[tuple[int, str]] = []
    for error in validator.iter_errors(document.value):
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = error.schema.get("properties", {})
            for key in sorted(set(error.instance) - set(allowed)):
                key_path = (*path, key)
                found.append(
                    (
                        document.line_of(key_path) or 0,
                        f"{_where(document, key_path)}: unknown key {key!r} "
                        f"(allowed: {', '.join(sorted(allowed))})",
                    )
                )
            continue
        found.append((document.line_of(path) or 0, f"{_where(document, path)}: {_message(error)}"))
    return [message for _, message in sorted(found)]


def _message(error: ValidationError) -> str:
    key = next((p for p in reversed(error.absolute_path) if isinstance(p, str)), "")
    if error.validator == "pattern" and key in _HINTS:
        return f"{error.instance!r} {_HINTS[key]}"
    if error.validator == "type" and error.validator_value == "string":
        hint = _HINTS.get(key, "quote it in YAML")
        return f"{error.instance!r} is not a string: {hint}"
    if error.validator == "enum" and key in _HINTS:
        return f"{error.instance!r} {_HINTS[key]}"
    if error.validator == "propertyNames":
        return f"key {error.instance!r} is not allowed here: {error.message}"
    return error.message


class _Semantics:
    """The rules after the schema; collects problems instead of stopping at the first."""

    def __init__(self, document: strict_yaml.Document):
        self.document = document
        self.value: dict[str, Any] = document.value
        self.problems: list[str] = []

    def problem(self, path: tuple[str | int, ...], message: str) -> None:
        self.problems.append(f"{_where(self.document, path)}: {message}")

    def build(self) -> ImageDefinition:
        value = self.value
        layers = tuple(self.layer(i, item) for i, item in enumerate(value.get("layers", [])))
        seen: dict[str, int] = {}
        for index, layer in enumerate(layers):
            if layer.destination in seen:
                self.problem(
                    ("layers", index, "destination"),
                    f"{layer.destination} is already the destination of "
                    f"layers[{seen[layer.destination]}]",
                )
            seen.setdefault(layer.destination, index)
        if value["base"] == "scratch" and not layers:
            self.problem(("base",), "an image from scratch needs at least one layer")
        workdir = value.get("workdir")
        if workdir is not None:
            self.image_path(("workdir",), workdir)
        labels = value.get("labels", {})
        for key in labels:
            if key.startswith(RESERVED_LABEL_PREFIX):
                self.problem(
                    ("labels", key), f"labels under {RESERVED_LABEL_PREFIX} are immutrail's"
                )
        health = value.get("healthcheck")
        return ImageDefinition(
            base=value["base"],
            platform=value.get("platform"),
            layers=layers,
            env=dict(value.get("env", {})),
            entrypoint=_argv(value.get("entrypoint")),
            cmd=_argv(value.get("cmd")),
            user=value.get("user"),
            workdir=workdir,
            ports=self.ports(value.get("ports", [])),
            healthcheck=None if health is None else self.healthcheck(health),
            labels=dict(labels),
            privacy_relevant=tuple(value.get("privacy_relevant", [])),
            compression=value.get("compression", COMPRESSION_GZIP),
        )

    def layer(self, index: int, item: dict[str, Any]) -> LayerSpec:
        here: tuple[str | int, ...] = ("layers", index)
        source = self.source((*here, "source"), item["source"])
        destination = self.image_path((*here, "destination"), item["destination"])
        mode = int(item["mode"], 8) if "mode" in item else None
        owner = None
        if "owner" in item:
            uid, gid = (int(part) for part in item["owner"].split(":"))
            if uid > MAX_ID or gid > MAX_ID:
                self.problem((*here, "owner"), f"uid and gid must be at most {MAX_ID}")
            owner = (uid, gid)
        exclude = tuple(item.get("exclude", []))
        for position, pattern in enumerate(exclude):
            try:
                check_pattern(pattern)
            except GlobError as exc:
                self.problem((*here, "exclude", position), str(exc))
        return LayerSpec(source, destination, mode, owner, exclude)

    def source(self, path: tuple[str | int, ...], text: str) -> str:
        if "\0" in text:
            self.problem(path, "a path cannot contain NUL")
            return text
        if text.startswith("/"):
            self.problem(path, f"{text!r} is absolute; sources are relative to the repository root")
            return text
        parts = PurePosixPath(text).parts
        if ".." in parts:
            self.problem(path, f"{text!r} uses '..'; sources must stay inside the repository")
            return text
        return str(PurePosixPath(*parts)) if parts else "."

    def image_path(self, path: tuple[str | int, ...], text: str) -> str:
        normal = posixpath.normpath(text)
        if "\0" in text:
            self.problem(path, "a path cannot contain NUL")
        elif not text.startswith("/") or text.startswith("//") or normal != text:
            suggestion = "/" + normal.lstrip("/")
            self.problem(path, f"{text!r} must be absolute and normalized (write {suggestion!r})")
        return text

    def ports(self, items: list[str]) -> tuple[str, ...]:
        out: list[str] = []
        for index, text in enumerate(items):
            number, _, proto = text.partition("/")
            normal = f"{int(number)}/{proto or 'tcp'}"
            if not 1 <= int(number) <= 65535:
                self.problem(("ports", index), f"port {number} is not between 1 and 65535")
            elif normal in out:
                self.problem(("ports", index), f"{text!r} repeats {normal}")
            else:
                out.append(normal)
        return tuple(out)

    def healthcheck(self, item: dict[str, Any]) -> Healthcheck:
        test = tuple(item["test"])
        if test[0] == "NONE" and len(test) > 1:
            self.problem(("healthcheck", "test"), '["NONE"] takes no arguments')
        elif test[0] != "NONE" and len(test) < 2:
            self.problem(("healthcheck", "test"), f'["{test[0]}", …] needs a command')
        return Healthcheck(
            test=test,
            interval_ns=_duration_ns(item.get("interval")),
            timeout_ns=_duration_ns(item.get("timeout")),
            start_period_ns=_duration_ns(item.get("start_period")),
            retries=item.get("retries"),
        )


def _argv(value: list[str] | None) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _duration_ns(text: str | None) -> int | None:
    if text is None:
        return None
    return sum(int(n) * _DURATION_NS[unit] for n, unit in _DURATION_RE.findall(text))
