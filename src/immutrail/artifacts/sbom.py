"""CycloneDX 1.6 SBOMs of images, from what their filesystem says is installed.

``find_packages`` reads the package databases and metadata files in a :class:`RootFS`:

* Python: ``*.dist-info/METADATA``, ``*.egg-info/PKG-INFO`` and single-file ``*.egg-info``
  → ``pkg:pypi/<PEP 503 name>@<version>``;
* Debian: ``var/lib/dpkg/status`` (only ``Status: install ok installed``) and the distroless
  ``var/lib/dpkg/status.d/*`` files (which carry no ``Status`` field: every paragraph there is
  installed) → ``pkg:deb/<os id>/<name>@<version>?arch=<arch>&distro=<id>-<VERSION_ID>``;
* npm: ``package-lock.json`` (lockfileVersion 2 and 3, the ``packages`` map) and
  ``node_modules/[@scope/]name/package.json`` → ``pkg:npm/[%40scope/]name@<version>``; a package
  found in both places (same purl, same install directory) is one component;
* Alpine: ``lib/apk/db/installed`` → ``pkg:apk/<os id>/<name>@<version>?arch=<arch>&distro=…``.

The ``distro`` qualifier is ``<ID>-<VERSION_ID>`` from ``etc/os-release`` (``usr/lib/os-release``
as a fallback), e.g. ``debian-12`` or ``alpine-3.14.2``; without an os-release it is left out.

Every component names the files it was found in twice: as ``evidence.occurrences`` (the
CycloneDX place for it) and as ``immutrail:path`` properties (easy to query). Source package
names, which vulnerability databases for distributions are keyed by, are kept as properties.

A source that cannot be read (a file too large to keep, bad JSON, a lockfile version without a
``packages`` map) does not stop the SBOM: it is a :class:`SkippedSource`, logged and recorded in
the BOM's metadata as an ``immutrail:skipped`` property, so an incomplete SBOM says so.

``generate_sbom`` builds the BOM with cyclonedx-python-lib, validates it against the 1.6 JSON
schema (``validate_str`` *returns* its error; we raise :class:`SbomValidationError`) and returns
the JSON object. Serial number (a UUIDv5 of the image digest) and timestamp come from the caller's
inputs, and the library sorts components and properties, so the same filesystem, name, digest and
time give the same canonical JSON bytes.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import HeaderParser
from typing import Any

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.model import Property
from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.component_evidence import ComponentEvidence, Occurrence
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from packageurl import PackageURL

from .. import __version__
from .digests import check_digest
from .errors import ArtifactError
from .rootfs import ContentNotRetainedError, PathNotFoundError, RootFS

__all__ = [
    "SBOM_NAMESPACE",
    "OsRelease",
    "Package",
    "PackageInventory",
    "SbomError",
    "SbomValidationError",
    "SkippedSource",
    "find_packages",
    "generate_sbom",
    "pep503_name",
    "sbom_serial_number",
]

logger = logging.getLogger(__name__)

SBOM_NAMESPACE = uuid.UUID("0e6b2c5e-6f1a-5d0c-9a53-1b9f3c2d8e41")
"""UUIDv5 namespace of SBOM serial numbers: ``uuid5(SBOM_NAMESPACE, image_digest)``."""

MAX_METADATA_BYTES = 4 * 1024 * 1024
MAX_DATABASE_BYTES = 64 * 1024 * 1024
_MAX_LICENSE_TEXT = 128
_PATH_PROPERTY = "immutrail:path"


class SbomError(ArtifactError):
    """Base of the SBOM errors."""


class SbomValidationError(SbomError):
    """The generated BOM does not validate against the CycloneDX 1.6 JSON schema (a bug)."""


@dataclass(frozen=True, slots=True)
class OsRelease:
    """The distribution of an image from its ``os-release``: ``ID`` and ``VERSION_ID``."""

    id: str | None = None
    version_id: str | None = None

    @property
    def distro(self) -> str | None:
        """The purl ``distro`` qualifier: ``<id>-<version_id>``, or None when either is unknown."""
        if self.id and self.version_id:
            return f"{self.id}-{self.version_id}"
        return None


@dataclass(frozen=True)
class Package:
    """One installed package: ``location`` is where it lives (dist-info, node_modules dir, db)."""

    ecosystem: str
    name: str
    version: str
    purl: PackageURL
    location: str
    paths: tuple[str, ...]
    licenses: tuple[str, ...] = ()
    group: str | None = None
    properties: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str, str]:
        return (self.purl.to_string(), self.location)


@dataclass(frozen=True, slots=True)
class SkippedSource:
    """A package source that was found but could not be read, and why (data, not an error)."""

    path: str
    reason: str


@dataclass
class PackageInventory:
    packages: list[Package] = field(default_factory=list)
    skipped: list[SkippedSource] = field(default_factory=list)
    os_release: OsRelease = field(default_factory=OsRelease)


# -- discovery -----------------------------------------------------------------------------


def find_packages(rootfs: RootFS) -> PackageInventory:
    """Every package the image's metadata and package databases declare, sorted by purl."""
    inventory = PackageInventory(os_release=_os_release(rootfs))
    found: dict[tuple[str, str], Package] = {}
    for package in _all_packages(rootfs, inventory):
        previous = found.get(package.key)
        found[package.key] = package if previous is None else _merge(previous, package)
    inventory.packages = sorted(found.values(), key=lambda p: (p.purl.to_string(), p.location))
    return inventory


def _all_packages(rootfs: RootFS, inventory: PackageInventory) -> Iterator[Package]:
    yield from _python_packages(rootfs, inventory)
    yield from _debian_packages(rootfs, inventory)
    yield from _npm_packages(rootfs, inventory)
    yield from _alpine_packages(rootfs, inventory)


def _merge(a: Package, b: Package) -> Package:
    return Package(
        ecosystem=a.ecosystem,
        name=a.name,
        version=a.version,
        purl=a.purl,
        location=a.location,
        paths=tuple(sorted(set(a.paths) | set(b.paths))),
        licenses=tuple(sorted(set(a.licenses) | set(b.licenses))),
        group=a.group,
        properties=tuple(sorted(set(a.properties) | set(b.properties))),
    )


def _read_text(rootfs: RootFS, path: str, limit: int, inventory: PackageInventory) -> str | None:
    try:
        data = rootfs.read(path, max_bytes=limit)
    except (ContentNotRetainedError, PathNotFoundError) as exc:
        _skip(inventory, path, str(exc))
        return None
    return data.decode("utf-8", errors="replace")


def _skip(inventory: PackageInventory, path: str, reason: str) -> None:
    logger.warning("SBOM: skipping %s: %s", path, reason)
    inventory.skipped.append(SkippedSource(path, reason))


def _os_release(rootfs: RootFS) -> OsRelease:
    for path in ("etc/os-release", "usr/lib/os-release"):
        try:
            text = rootfs.read(path, max_bytes=64 * 1024).decode("utf-8", errors="replace")
        except (ContentNotRetainedError, PathNotFoundError):
            continue
        values = _parse_os_release(text)
        return OsRelease(values.get("ID"), values.get("VERSION_ID"))
    return OsRelease()


def _parse_os_release(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        values[key.strip()] = value
    return values


# Python ----------------------------------------------------------------------------------


def pep503_name(name: str) -> str:
    """The PEP 503 normalised project name: runs of ``-_.`` become ``-``, lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _python_packages(rootfs: RootFS, inventory: PackageInventory) -> Iterator[Package]:
    sources = [
        *rootfs.glob("**/*.dist-info/METADATA"),
        *rootfs.glob("**/*.egg-info/PKG-INFO"),
        *(path for path in rootfs.glob("**/*.egg-info") if _is_file(rootfs, path)),
    ]
    for path in sorted(sources):
        text = _read_text(rootfs, path, MAX_METADATA_BYTES, inventory)
        if text is None:
            continue
        headers = HeaderParser().parsestr(text, headersonly=True)
        name, version = headers.get("Name"), headers.get("Version")
        if not name or not version:
            _skip(inventory, path, "no Name or Version header")
            continue
        name, version = str(name).strip(), str(version).strip()
        location = path if path.endswith(".egg-info") else posixpath.dirname(path)
        yield Package(
            ecosystem="pypi",
            name=name,
            version=version,
            purl=PackageURL(type="pypi", name=pep503_name(name), version=version),
            location=location,
            paths=(path,),
            licenses=_python_licenses(headers.get("License-Expression"), headers.get("License")),
        )


def _python_licenses(expression: object, text: object) -> tuple[str, ...]:
    if isinstance(expression, str) and expression.strip():
        return (expression.strip(),)
    if isinstance(text, str):
        value = text.strip()
        short = value and "\n" not in value and len(value) <= _MAX_LICENSE_TEXT
        if short and value.upper() not in ("UNKNOWN", "NONE"):
            return (value,)
    return ()


def _is_file(rootfs: RootFS, path: str) -> bool:
    entry = rootfs.get(path)
    return entry is not None and entry.is_file


# Debian ----------------------------------------------------------------------------------


def _deb822(text: str) -> Iterator[dict[str, str]]:
    """Paragraphs of a Debian control file; continuation lines are joined with newlines."""
    paragraph: dict[str, str] = {}
    key: str | None = None
    for line in text.splitlines():
        if not line.strip():
            if paragraph:
                yield paragraph
            paragraph, key = {}, None
        elif line[0] in " \t":
            if key is not None:
                paragraph[key] += "\n" + line.strip()
        elif ":" in line:
            key, _, value = line.partition(":")
            key = key.strip()
            paragraph[key] = value.strip()
    if paragraph:
        yield paragraph


def _debian_packages(rootfs: RootFS, inventory: PackageInventory) -> Iterator[Package]:
    sources = [("var/lib/dpkg/status", True)] if "var/lib/dpkg/status" in rootfs else []
    for path in rootfs.glob("var/lib/dpkg/status.d/*"):
        if _is_file(rootfs, path) and not path.endswith(".md5sums"):
            sources.append((path, False))
    namespace = inventory.os_release.id or "debian"
    for path, needs_status in sources:
        text = _read_text(rootfs, path, MAX_DATABASE_BYTES, inventory)
        if text is None:
            continue
        for fields in _deb822(text):
            name, version = fields.get("Package"), fields.get("Version")
            if not name or not version:
                continue
            status = fields.get("Status")
            if (needs_status or status is not None) and (status or "").split() != [
                "install",
                "ok",
                "installed",
            ]:
                continue
            qualifiers = {}
            if arch := fields.get("Architecture"):
                qualifiers["arch"] = arch
            if distro := inventory.os_release.distro:
                qualifiers["distro"] = distro
            source_name, _, source_version = (fields.get("Source") or name).partition(" ")
            properties = [("immutrail:deb:source-name", source_name)]
            properties.append(
                ("immutrail:deb:source-version", source_version.strip("() ") or version)
            )
            yield Package(
                ecosystem="deb",
                name=name,
                version=version,
                purl=PackageURL(
                    type="deb",
                    namespace=namespace,
                    name=name,
                    version=version,
                    qualifiers=qualifiers,
                ),
                location=f"{path}#{name}:{qualifiers.get('arch', '')}",
                paths=(path,),
                properties=tuple(properties),
            )


# npm -------------------------------------------------------------------------------------


def _npm_purl(name: str, version: str) -> tuple[PackageURL, str | None]:
    scope, slash, base = name.rpartition("/")
    if slash and scope.startswith("@"):
        return PackageURL(type="npm", namespace=scope, name=base, version=version), scope
    return PackageURL(type="npm", name=name, version=version), None


def _npm_license(value: object) -> tuple[str, ...]:
    if isinstance(value, str) and value.strip():
        return (value.strip(),)
    if isinstance(value, Mapping) and isinstance(value.get("type"), str):
        return (value["type"],)
    return ()


def _load_json(
    rootfs: RootFS, path: str, limit: int, inventory: PackageInventory
) -> Mapping[str, Any] | None:
    text = _read_text(rootfs, path, limit, inventory)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # an image's file: deep nesting is possible
        _skip(inventory, path, f"not valid JSON: {exc}")
        return None
    if not isinstance(value, Mapping):
        _skip(inventory, path, "not a JSON object")
        return None
    return value


def _npm_packages(rootfs: RootFS, inventory: PackageInventory) -> Iterator[Package]:
    for path in rootfs.glob("**/package-lock.json"):
        lock = _load_json(rootfs, path, MAX_DATABASE_BYTES, inventory)
        if lock is None:
            continue
        lock_version = lock.get("lockfileVersion")
        packages = lock.get("packages")
        if lock_version not in (2, 3) or not isinstance(packages, Mapping):
            _skip(inventory, path, f"lockfileVersion {lock_version!r} has no 'packages' map")
            continue
        base = posixpath.dirname(path)
        for key, entry in sorted(packages.items()):
            if not key or "node_modules/" not in key or not isinstance(entry, Mapping):
                continue  # the project itself, or one of its workspaces
            if entry.get("link"):
                continue  # a symlink to a workspace; the target has its own entry
            name = entry.get("name") or key.rpartition("node_modules/")[2]
            version = entry.get("version")
            if not isinstance(name, str) or not isinstance(version, str) or not version:
                continue
            purl, group = _npm_purl(name, version)
            yield Package(
                ecosystem="npm",
                name=name,
                version=version,
                purl=purl,
                location=posixpath.join(base, key) if base else key,
                paths=(path,),
                licenses=_npm_license(entry.get("license")),
                group=group,
                properties=(("immutrail:npm:dev", "true"),) if entry.get("dev") is True else (),
            )
    manifests = [
        *rootfs.glob("**/node_modules/*/package.json"),
        *rootfs.glob("**/node_modules/@*/*/package.json"),
    ]
    for path in sorted(manifests):
        manifest = _load_json(rootfs, path, MAX_METADATA_BYTES, inventory)
        if manifest is None:
            continue
        name, version = manifest.get("name"), manifest.get("version")
        if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
            _skip(inventory, path, "no name or version")
            continue
        purl, group = _npm_purl(name, version)
        yield Package(
            ecosystem="npm",
            name=name,
            version=version,
            purl=purl,
            location=posixpath.dirname(path),
            paths=(path,),
            licenses=_npm_license(manifest.get("license")),
            group=group,
        )


# Alpine ----------------------------------------------------------------------------------


def _apk_records(text: str) -> Iterator[dict[str, str]]:
    record: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if record:
                yield record
            record = {}
        elif len(line) > 1 and line[1] == ":" and line[0] not in record:
            record[line[0]] = line[2:]
    if record:
        yield record


def _alpine_packages(rootfs: RootFS, inventory: PackageInventory) -> Iterator[Package]:
    path = "lib/apk/db/installed"
    if path not in rootfs:
        return
    text = _read_text(rootfs, path, MAX_DATABASE_BYTES, inventory)
    if text is None:
        return
    namespace = inventory.os_release.id or "alpine"
    for record in _apk_records(text):
        name, version = record.get("P"), record.get("V")
        if not name or not version:
            continue
        qualifiers = {}
        if arch := record.get("A"):
            qualifiers["arch"] = arch
        if distro := inventory.os_release.distro:
            qualifiers["distro"] = distro
        yield Package(
            ecosystem="apk",
            name=name,
            version=version,
            purl=PackageURL(
                type="apk", namespace=namespace, name=name, version=version, qualifiers=qualifiers
            ),
            location=f"{path}#{name}",
            paths=(path,),
            licenses=(record["L"],) if record.get("L") else (),
            properties=(("immutrail:apk:origin", record.get("o") or name),),
        )


# -- the BOM -------------------------------------------------------------------------------


def sbom_serial_number(image_digest: str) -> uuid.UUID:
    """The BOM serial number of an image: the same digest always gives the same UUID."""
    return uuid.uuid5(SBOM_NAMESPACE, check_digest(image_digest, "image digest"))


def oci_purl(image_name: str, image_digest: str) -> PackageURL:
    """``pkg:oci/<name>@sha256:…`` with ``repository_url`` and ``tag`` qualifiers when known."""
    reference = image_name.split("@", 1)[0]
    tag: str | None = None
    if ":" in reference.rpartition("/")[2]:
        reference, _, tag = reference.rpartition(":")
    qualifiers: dict[str, str] = {}
    if "/" in reference:
        qualifiers["repository_url"] = reference
    if tag:
        qualifiers["tag"] = tag
    name = reference.rpartition("/")[2].lower() or "image"
    return PackageURL(type="oci", name=name, version=image_digest, qualifiers=qualifiers)


def generate_sbom(
    rootfs: RootFS, image_name: str, image_digest: str, *, timestamp: datetime
) -> dict[str, Any]:
    """The validated CycloneDX 1.6 JSON SBOM of the image whose filesystem is ``rootfs``."""
    check_digest(image_digest, "image digest")
    if timestamp.tzinfo is None:
        raise ValueError("the SBOM timestamp must be timezone-aware")
    inventory = find_packages(rootfs)
    bom = _build_bom(inventory, image_name, image_digest, timestamp.astimezone(UTC))
    text = _sort_occurrences(JsonV1Dot6(bom).output_as_string(indent=None))
    # Imported here: the validator compiles jsonschema's format grammars on import (about 3 s),
    # which every command would otherwise pay at start-up.
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise SbomValidationError(f"generated SBOM is not valid CycloneDX 1.6: {error}")
    document: dict[str, Any] = json.loads(text)
    return document


def _sort_occurrences(text: str) -> str:
    """Put evidence occurrences in location order.

    cyclonedx-python-lib keeps them in a SortedSet whose key starts with the occurrence's
    bom-ref; without one, two occurrences compare neither less nor greater, and their order
    changes from run to run. The SBOM must be byte-reproducible, so we sort them ourselves.
    """
    document = json.loads(text)
    for component in document.get("components", []):
        occurrences = component.get("evidence", {}).get("occurrences")
        if occurrences:
            occurrences.sort(key=lambda occurrence: occurrence["location"])
    return json.dumps(document, sort_keys=True)


def _build_bom(
    inventory: PackageInventory, image_name: str, image_digest: str, timestamp: datetime
) -> Bom:
    licenses = LicenseFactory()
    bom = Bom(serial_number=sbom_serial_number(image_digest))
    bom.metadata.timestamp = timestamp
    bom.metadata.tools.components.add(
        Component(
            type=ComponentType.APPLICATION,
            name="immutrail",
            version=__version__,
            bom_ref=f"immutrail@{__version__}",
        )
    )
    image_purl = oci_purl(image_name, image_digest)
    root = Component(
        type=ComponentType.CONTAINER,
        name=image_name,
        version=image_digest,
        purl=image_purl,
        bom_ref=image_purl.to_string(),
    )
    bom.metadata.component = root
    metadata_properties = [
        Property(name="immutrail:skipped", value=f"{s.path}: {s.reason}") for s in inventory.skipped
    ]
    if inventory.os_release.distro:
        metadata_properties.append(
            Property(name="immutrail:distro", value=inventory.os_release.distro)
        )
    bom.metadata.properties = metadata_properties
    refs = _bom_refs(inventory.packages)
    components = []
    for package in inventory.packages:
        component = Component(
            type=ComponentType.LIBRARY,
            name=package.name.rpartition("/")[2] if package.group else package.name,
            group=package.group,
            version=package.version,
            purl=package.purl,
            bom_ref=refs[package.key],
            licenses=[licenses.make_from_string(text) for text in package.licenses],
            properties=[
                *(Property(name=_PATH_PROPERTY, value=path) for path in package.paths),
                *(Property(name=k, value=v) for k, v in package.properties),
            ],
            evidence=ComponentEvidence(
                occurrences=[Occurrence(location=path) for path in package.paths]
            ),
        )
        bom.components.add(component)
        components.append(component)
    bom.register_dependency(root, components)
    return bom


def _bom_refs(packages: Iterable[Package]) -> dict[tuple[str, str], str]:
    """The purl as bom-ref; a UUIDv5 of purl and location where one purl occurs twice."""
    packages = list(packages)
    counts: dict[str, int] = {}
    for package in packages:
        counts[package.key[0]] = counts.get(package.key[0], 0) + 1
    refs = {}
    for package in packages:
        purl, location = package.key
        refs[package.key] = (
            purl if counts[purl] == 1 else str(uuid.uuid5(SBOM_NAMESPACE, f"{purl}\n{location}"))
        )
    return refs
