"""OSV records (schema 1.x): strict parsing and validation, canonical bytes, the index keys.

A record is parsed with the project's strict JSON parser (duplicate keys, NaN and invalid UTF-8
are refused) and checked field by field against the OSV schema: types, the RFC 3339 ``Z``
timestamps, one key per range event, at least one ``introduced`` per range, ``fixed`` and
``last_affected`` never together, ``repo`` on ``GIT`` ranges, known severity types. Unknown
top-level fields are refused for the schema versions we know (the schema says
``additionalProperties: false``) and kept for newer 1.x minor versions, which only add fields.

Validation is written out rather than run through ``jsonschema`` with the official schema: the
import must sustain tens of thousands of records a second (``bench/bench_scan.py``), which a
general schema evaluator does not, and the rules that matter (one key per event, ``fixed`` and
``last_affected`` never together, parseable CVSS vectors) are easier to state and to name in an
error here.

Ecosystems are not restricted to the ones we can compare: OSV adds ecosystems every few months
and an ``all.zip`` of a new one must still import; a scan reports packages whose ecosystem has
no comparator as *not evaluated*, with the reason.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from immutrail.crypto.canonical import canonical_json, parse_strict_json
from immutrail.crypto.errors import CanonicalizationError, DuplicateKeyError

from .errors import OsvRecordError
from .severity import CvssError, check_cvss4, cvss2_base_score, cvss3_base_score
from .versions import ecosystem_base

MAX_RECORD_BYTES = 4 * 1024 * 1024
"""The largest OSV record accepted (the largest real ones, Linux kernel CVEs, are ~1 MiB)."""

KNOWN_SCHEMA = (1, 7)
"""The newest OSV schema version whose full field list this module knows."""

TOP_LEVEL_FIELDS = frozenset(
    {
        "schema_version",
        "id",
        "modified",
        "published",
        "withdrawn",
        "aliases",
        "upstream",
        "related",
        "summary",
        "details",
        "severity",
        "affected",
        "references",
        "credits",
        "database_specific",
    }
)
SEVERITY_TYPES = frozenset({"CVSS_V2", "CVSS_V3", "CVSS_V4", "Ubuntu"})
RANGE_TYPES = frozenset({"GIT", "SEMVER", "ECOSYSTEM"})
EVENT_KINDS = ("introduced", "fixed", "last_affected", "limit")

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,254}")
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z")
_SCHEMA_VERSION_RE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class AffectedPackage:
    """One ``affected`` entry: the package and what the index stores to evaluate it."""

    ecosystem: str
    name: str
    index_name: str
    spec: Mapping[str, Any]
    """``{"ranges", "versions", "severity"}``: the parts of the entry a scan needs."""


@dataclass(frozen=True, slots=True)
class OsvRecord:
    id: str
    modified: str
    withdrawn: str | None
    aliases: tuple[str, ...]
    data: Mapping[str, Any]
    canonical: bytes
    """RFC 8785 canonical JSON of the record: what the database stores and hashes."""
    digest: str
    affected: tuple[AffectedPackage, ...]


def index_name(ecosystem: str, name: str) -> str:
    """The name a package is indexed and looked up under in its ecosystem.

    PyPI names are PEP 503-normalized (OSV writes them so, SBOMs may not); every other
    ecosystem's names are compared as written (Go module paths and Maven coordinates are
    case-sensitive).
    """
    if ecosystem_base(ecosystem) == "PyPI":
        return re.sub(r"[-_.]+", "-", name).lower()
    return name


def parse_record(data: bytes, source: str) -> OsvRecord:
    """Parse and validate one OSV record; OsvRecordError names ``source`` and the field."""
    if len(data) > MAX_RECORD_BYTES:
        raise OsvRecordError(source, f"record is {len(data)} bytes, over {MAX_RECORD_BYTES}")
    try:
        value = parse_strict_json(data)
    except DuplicateKeyError as exc:
        raise OsvRecordError(source, f"duplicate key {exc.key!r}") from exc
    except (CanonicalizationError, ValueError) as exc:
        raise OsvRecordError(source, f"not valid JSON: {exc}") from exc
    return validate_record(value, source)


def validate_record(value: object, source: str) -> OsvRecord:
    checker = _Checker(source)
    record = checker.record(value)
    try:
        canonical = canonical_json(record)
    except CanonicalizationError as exc:  # lone surrogates: JSON, but not UTF-8 text
        raise OsvRecordError(source, str(exc)) from exc
    affected = tuple(checker.affected(record))
    withdrawn = record.get("withdrawn")
    return OsvRecord(
        id=record["id"],
        modified=record["modified"],
        withdrawn=withdrawn if isinstance(withdrawn, str) else None,
        aliases=tuple(record.get("aliases") or ()),
        data=record,
        canonical=canonical,
        digest="sha256:" + hashlib.sha256(canonical).hexdigest(),
        affected=affected,
    )


class _Checker:
    def __init__(self, source: str):
        self.source = source

    def fail(self, path: str, message: str) -> OsvRecordError:
        return OsvRecordError(self.source, message, path)

    def record(self, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail("", "an OSV record must be a JSON object")
        self.schema_version(value)
        for key in ("id", "modified"):
            if key not in value:
                raise self.fail(key, "required field is missing")
        record_id = self.string(value["id"], "id")
        if not _ID_RE.fullmatch(record_id):
            raise self.fail("id", f"{record_id!r} is not an OSV id (e.g. GHSA-xxxx-xxxx-xxxx)")
        for key in ("modified", "published", "withdrawn"):
            if key in value:
                self.timestamp(value[key], key)
        for key in ("aliases", "related", "upstream"):
            if value.get(key) is not None:
                self.id_list(value[key], key)
        for key in ("summary", "details"):
            if key in value:
                self.string(value[key], key, allow_control=True)
        if value.get("severity") is not None:
            self.severity(value["severity"], "severity")
        if value.get("affected") is not None:
            entries = self.list(value["affected"], "affected")
            for index, entry in enumerate(entries):
                self.affected_entry(entry, f"affected[{index}]")
        if value.get("references") is not None:
            for index, ref in enumerate(self.list(value["references"], "references")):
                path = f"references[{index}]"
                ref = self.object(ref, path)
                self.string(ref.get("type"), f"{path}.type")
                self.string(ref.get("url"), f"{path}.url")
        if "credits" in value:
            for index, credit in enumerate(self.list(value["credits"], "credits")):
                self.string(self.object(credit, f"credits[{index}]").get("name"), "name")
        if "database_specific" in value:
            self.object(value["database_specific"], "database_specific")
        return value

    def schema_version(self, record: dict[str, Any]) -> None:
        version = record.get("schema_version")
        newer_minor = False
        if version is not None:
            match = _SCHEMA_VERSION_RE.fullmatch(version) if isinstance(version, str) else None
            if match is None:
                raise self.fail("schema_version", f"{version!r} is not a version like 1.6.0")
            major, minor = int(match.group(1)), int(match.group(2))
            if major != KNOWN_SCHEMA[0]:
                raise self.fail(
                    "schema_version", f"OSV schema {version} is not supported (only 1.x)"
                )
            newer_minor = minor > KNOWN_SCHEMA[1]
        unknown = sorted(set(record) - TOP_LEVEL_FIELDS)
        if unknown and not newer_minor:
            raise self.fail(unknown[0], "unknown field (OSV records allow no other fields)")

    def affected_entry(self, entry: object, path: str) -> None:
        entry = self.object(entry, path)
        package = entry.get("package")
        if package is not None:
            package = self.object(package, f"{path}.package")
            for key in ("ecosystem", "name"):
                self.string(package.get(key), f"{path}.package.{key}")
            if "purl" in package:
                self.string(package["purl"], f"{path}.package.purl")
        if entry.get("severity") is not None:
            self.severity(entry["severity"], f"{path}.severity")
        for index, item in enumerate(self.list(entry.get("ranges", []), f"{path}.ranges")):
            self.range(item, f"{path}.ranges[{index}]")
        for index, item in enumerate(self.list(entry.get("versions", []), f"{path}.versions")):
            self.string(item, f"{path}.versions[{index}]")
        for key in ("ecosystem_specific", "database_specific"):
            if key in entry:
                self.object(entry[key], f"{path}.{key}")

    def range(self, item: object, path: str) -> None:
        item = self.object(item, path)
        kind = item.get("type")
        if kind not in RANGE_TYPES:
            raise self.fail(f"{path}.type", f"{kind!r} is not one of GIT, SEMVER, ECOSYSTEM")
        if kind == "GIT":
            self.string(item.get("repo"), f"{path}.repo")
        events = self.list(item.get("events"), f"{path}.events")
        seen: set[str] = set()
        for index, event in enumerate(events):
            event = self.object(event, f"{path}.events[{index}]")
            keys = [key for key in EVENT_KINDS if key in event]
            if len(keys) != 1 or len(event) != 1:
                raise self.fail(
                    f"{path}.events[{index}]",
                    "an event has exactly one of introduced, fixed, last_affected, limit",
                )
            self.string(event[keys[0]], f"{path}.events[{index}].{keys[0]}")
            seen.add(keys[0])
        if "introduced" not in seen:
            raise self.fail(f"{path}.events", "a range needs at least one 'introduced' event")
        if {"fixed", "last_affected"} <= seen:
            raise self.fail(f"{path}.events", "a range has 'fixed' or 'last_affected', not both")

    def severity(self, value: object, path: str) -> None:
        for index, item in enumerate(self.list(value, path)):
            item = self.object(item, f"{path}[{index}]")
            kind = item.get("type")
            if kind not in SEVERITY_TYPES:
                raise self.fail(f"{path}[{index}].type", f"unknown severity type {kind!r}")
            score = self.string(item.get("score"), f"{path}[{index}].score")
            try:  # a vector that does not parse would make every scan's severity a guess
                if kind == "CVSS_V3":
                    cvss3_base_score(score)
                elif kind == "CVSS_V2":
                    cvss2_base_score(score)
                elif kind == "CVSS_V4":
                    check_cvss4(score)
            except CvssError as exc:
                raise self.fail(f"{path}[{index}].score", str(exc)) from exc

    def affected(self, record: Mapping[str, Any]) -> list[AffectedPackage]:
        found: list[AffectedPackage] = []
        for entry in record.get("affected") or []:
            package = entry.get("package")
            if package is None:
                continue  # GIT-only entries without a package cannot be looked up by name
            ecosystem, name = package["ecosystem"], package["name"]
            if not ecosystem or not name:
                raise self.fail("affected.package", "ecosystem and name must not be empty")
            found.append(
                AffectedPackage(
                    ecosystem=ecosystem,
                    name=name,
                    index_name=index_name(ecosystem, name),
                    spec={
                        "ranges": entry.get("ranges") or [],
                        "versions": entry.get("versions") or [],
                        "severity": entry.get("severity") or [],
                    },
                )
            )
        return found

    # -- primitives ---------------------------------------------------------------------------

    def string(self, value: object, path: str, *, allow_control: bool = False) -> str:
        if not isinstance(value, str):
            raise self.fail(path, "must be a string")
        if not allow_control and _CONTROL_RE.search(value):
            raise self.fail(path, "must not contain control characters")
        return value

    def timestamp(self, value: object, path: str) -> str:
        text = self.string(value, path)
        if not _TIME_RE.fullmatch(text):
            raise self.fail(path, f"{text!r} is not an RFC 3339 UTC time like 2024-01-31T12:00:00Z")
        return text

    def id_list(self, value: object, path: str) -> None:
        for index, item in enumerate(self.list(value, path)):
            text = self.string(item, f"{path}[{index}]")
            if not _ID_RE.fullmatch(text):
                raise self.fail(f"{path}[{index}]", f"{text!r} is not a vulnerability id")

    def list(self, value: object, path: str) -> Sequence[Any]:
        if not isinstance(value, list):
            raise self.fail(path, "must be a list")
        return value

    def object(self, value: object, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "must be an object")
        return value
