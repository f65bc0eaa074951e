"""Match an image's SBOM against the vulnerability database.

For each CycloneDX component with a purl: purl -> (OSV ecosystem, indexed name) -> candidate
``affected`` entries from the index -> the OSV evaluation (a version is affected when it is in
the entry's ``versions`` list or inside one of its ``ECOSYSTEM``/``SEMVER`` ranges, evaluated
with the ecosystem's own ordering) -> matches, merged by alias into one result per
vulnerability.

What cannot be decided is reported, not guessed: a package whose ecosystem has no comparator
or whose version does not parse, a Debian package without a ``distro`` release, a record whose
range bounds do not parse or that has only ``GIT`` ranges (they need the repository's commit
graph). Withdrawn records that match give no finding but are counted.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from packageurl import PackageURL

from .errors import SbomError, VersionError
from .results import Hit, Match, NotEvaluated, ScanOutcome, merge_aliases
from .severity import Severity, severity_of
from .versions import ParsedVersion, VersionScheme, scheme_for
from .vulndb import Candidate, VulnDb

SOURCE_NAME_PROPERTY = "immutrail:deb:source-name"
SOURCE_VERSION_PROPERTY = "immutrail:deb:source-version"
_DISTROS = {"debian": "Debian", "ubuntu": "Ubuntu"}
_PURL_ECOSYSTEMS = {"pypi": "PyPI", "npm": "npm", "maven": "Maven", "golang": "Go"}


@dataclass(frozen=True, slots=True)
class Component:
    """An installed package as the matcher sees it."""

    purl: str
    ecosystem: str
    """The OSV ecosystem base name (``PyPI``, ``Debian``…)."""
    release: str | None
    """For distributions: the release the package belongs to (``12``), from the purl."""
    names: tuple[str, ...]
    """Names to look up, most specific first (a Debian source package, then the binary)."""
    package: str
    version: str


def components_from_sbom(
    sbom: Mapping[str, Any],
) -> tuple[list[Component], list[NotEvaluated]]:
    """The SBOM's components the matcher can look up, and those it cannot (with why)."""
    if sbom.get("bomFormat") != "CycloneDX" or not isinstance(sbom.get("components", []), list):
        raise SbomError("the SBOM is not a CycloneDX JSON document with a components list")
    found: list[Component] = []
    skipped: list[NotEvaluated] = []
    seen: set[tuple[str, str]] = set()
    for item in sbom.get("components", []):
        if not isinstance(item, Mapping):
            raise SbomError("an SBOM component is not a JSON object")
        purl = item.get("purl")
        if not isinstance(purl, str) or not purl:
            name = item.get("name", "?")
            skipped.append(NotEvaluated(f"component:{name}", "the component has no purl"))
            continue
        properties = _properties(item)
        component = _component(purl, properties, skipped)
        if component is None:
            continue
        key = (component.purl, component.names[0])
        if key not in seen:
            seen.add(key)
            found.append(component)
    return found, skipped


def _properties(item: Mapping[str, Any]) -> dict[str, str]:
    result: dict[str, str] = {}
    for prop in item.get("properties") or []:
        if isinstance(prop, Mapping) and isinstance(prop.get("name"), str):
            result.setdefault(prop["name"], str(prop.get("value", "")))
    return result


def _component(
    purl_text: str, properties: Mapping[str, str], skipped: list[NotEvaluated]
) -> Component | None:
    try:
        purl = PackageURL.from_string(purl_text)
    except ValueError as exc:
        skipped.append(NotEvaluated(purl_text, f"not a valid purl: {exc}"))
        return None
    if not purl.version:
        skipped.append(NotEvaluated(purl_text, "the purl has no version"))
        return None
    version = str(purl.version)
    if purl.type in _PURL_ECOSYSTEMS:
        ecosystem = _PURL_ECOSYSTEMS[purl.type]
        if purl.type == "pypi":
            name = re.sub(r"[-_.]+", "-", purl.name).lower()
        elif purl.type == "maven":
            name = f"{purl.namespace}:{purl.name}" if purl.namespace else purl.name
        elif purl.namespace:
            name = f"{purl.namespace}/{purl.name}"
        else:
            name = purl.name
        return Component(purl_text, ecosystem, None, (name,), name, version)
    if purl.type == "deb":
        distro_name = _DISTROS.get((purl.namespace or "").lower())
        if distro_name is None:
            skipped.append(
                NotEvaluated(purl_text, f"no vulnerability data for the {purl.namespace} distro")
            )
            return None
        qualifiers = purl.qualifiers if isinstance(purl.qualifiers, Mapping) else {}
        distro = str(qualifiers.get("distro", ""))
        prefix = f"{(purl.namespace or '').lower()}-"
        if not distro.startswith(prefix) or len(distro) == len(prefix):
            skipped.append(
                NotEvaluated(
                    purl_text,
                    "no distro release in the purl (advisories are per release, e.g. debian-12)",
                )
            )
            return None
        release = distro[len(prefix) :]
        if distro_name == "Debian":
            release = release.split(".", 1)[0]  # os-release VERSION_ID 12 or 12.5 -> Debian:12
        source = properties.get(SOURCE_NAME_PROPERTY) or purl.name
        names = (source,) if source == purl.name else (source, purl.name)
        source_version = properties.get(SOURCE_VERSION_PROPERTY) or version
        return Component(purl_text, distro_name, release, names, purl.name, source_version)
    skipped.append(
        NotEvaluated(purl_text, f"no version comparator for {purl.type} packages in this release")
    )
    return None


# -- evaluation -------------------------------------------------------------------------------


class _UndeterminedError(Exception):
    """A record cannot be evaluated for a package (its reason is the message)."""


class _Versions:
    """Parsed versions, cached per scheme: a scan parses each range bound once."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str], ParsedVersion | VersionError] = {}

    def parse(self, scheme: VersionScheme, text: str) -> ParsedVersion:
        key = (scheme.name, text)
        value = self._cache.get(key)
        if value is None:
            try:
                value = scheme.parse(text)
            except VersionError as exc:
                value = exc
            self._cache[key] = value
        if isinstance(value, VersionError):
            raise value
        return value


_ZERO = object()  # introduced "0": before every version
_INFINITY = object()  # limit "*": after every version


def _event_cmp(a: tuple[str, Any], b: tuple[str, Any]) -> int:
    left, right = a[1], b[1]
    if left is right:
        return 0
    if left is _ZERO or right is _INFINITY:
        return -1
    if right is _ZERO or left is _INFINITY:
        return 1
    return -1 if left < right else (1 if left > right else 0)


def _in_range(installed: ParsedVersion, events: Sequence[tuple[str, Any]]) -> bool:
    """The OSV specification's IncludedInRanges for one range (events already parsed)."""
    limits = [value for kind, value in events if kind == "limit"]
    if limits and not any(value is _INFINITY or installed < value for value in limits):
        return False
    vulnerable = False
    for kind, value in sorted(events, key=functools.cmp_to_key(_event_cmp)):
        if kind == "introduced":
            if value is _ZERO or installed >= value:
                vulnerable = True
        elif kind == "fixed":
            if installed >= value:
                vulnerable = False
        elif kind == "last_affected" and installed > value:
            vulnerable = False
    return vulnerable


class Matcher:
    """Evaluates components against one database snapshot."""

    def __init__(self, db: VulnDb):
        self.db = db
        self.versions = _Versions()

    def scan(self, components: Iterable[Component], skipped: Sequence[NotEvaluated]) -> ScanOutcome:
        outcome = ScanOutcome(source="immutrail", not_evaluated=list(skipped))
        matches: list[Match] = []
        withdrawn: set[str] = set()
        records: dict[str, dict[str, Any]] = {}
        for component in components:
            outcome.packages += 1
            for candidate, fixed in self._affecting(component, outcome):
                if candidate.withdrawn:
                    withdrawn.add(candidate.record_id)
                    continue
                record = records.get(candidate.record_id)
                if record is None:
                    record = records[candidate.record_id] = self.db.record(candidate.record_id)
                severity = _severity(record, candidate)
                hit = Hit(
                    package=component.package,
                    version=component.version,
                    purl=component.purl,
                    ecosystem=candidate.ecosystem,
                    fixed=fixed,
                    level=severity.level,
                )
                aliases = tuple(record.get("aliases") or ())
                matches.append(Match(candidate.record_id, aliases, severity, hit))
        outcome.results = merge_aliases(matches)
        outcome.withdrawn = sorted(withdrawn)
        return outcome

    def _affecting(
        self, component: Component, outcome: ScanOutcome
    ) -> Iterable[tuple[Candidate, tuple[str, ...]]]:
        scheme = scheme_for(component.ecosystem)
        installed: ParsedVersion | None = None
        installed_error: str | None = None
        if scheme is None:
            installed_error = f"no version comparator for the {component.ecosystem} ecosystem"
        else:
            try:
                installed = self.versions.parse(scheme, component.version)
            except VersionError as exc:
                installed_error = str(exc)
        spellings = {component.version}
        if installed is not None:
            spellings.add(str(installed))
        candidates: list[Candidate] = []
        for name in component.names:
            candidates.extend(
                c
                for c in self.db.candidates(component.ecosystem, name)
                if _same_release(c.ecosystem, component)
            )
        if installed_error is not None and candidates:
            listed = [c for c in candidates if spellings & set(c.spec.get("versions", []))]
            outcome.not_evaluated.append(NotEvaluated(component.purl, installed_error))
            for candidate in listed:
                yield candidate, ()
            return
        affected_ids: set[str] = set()
        for candidate in candidates:
            if candidate.record_id in affected_ids:
                continue
            assert installed is not None
            try:
                fixed = self._evaluate(candidate, installed, component.version, spellings)
            except _UndeterminedError as exc:
                if not candidate.withdrawn:
                    outcome.not_evaluated.append(
                        NotEvaluated(component.purl, str(exc), candidate.record_id)
                    )
                continue
            if fixed is not None:
                affected_ids.add(candidate.record_id)
                yield candidate, fixed

    def _evaluate(
        self, candidate: Candidate, installed: ParsedVersion, text: str, spellings: set[str]
    ) -> tuple[str, ...] | None:
        """The fixed versions above ``installed`` if the entry affects it, else None."""
        spec = candidate.spec
        listed = bool(spellings & set(spec.get("versions", [])))
        inside = False
        fixes: list[tuple[ParsedVersion, str]] = []
        evaluable = 0
        problems: list[str] = []
        for item in spec.get("ranges", []):
            scheme = scheme_for(candidate.ecosystem, item["type"])
            if scheme is None:
                continue  # GIT: needs the commit graph; the versions list covers it
            try:
                version = (
                    installed
                    if scheme is scheme_for(candidate.ecosystem)
                    else self.versions.parse(scheme, text)
                )
                events = [self._event(scheme, event) for event in item["events"]]
            except VersionError as exc:
                problems.append(str(exc))
                continue
            evaluable += 1
            if _in_range(version, events):
                inside = True
            fixes.extend(
                (value, event["fixed"])
                for (kind, value), event in zip(events, item["events"], strict=True)
                if kind == "fixed" and value > version
            )
        if listed or inside:
            # Bounds of two schemes (an ECOSYSTEM and a SEMVER range) do not compare: keep order.
            with contextlib.suppress(TypeError):
                fixes.sort(key=lambda fix: fix[0])
            return tuple(dict.fromkeys(fixed for _, fixed in fixes))
        if problems:
            raise _UndeterminedError("range cannot be evaluated: " + "; ".join(problems))
        if not evaluable and not spec.get("versions"):
            raise _UndeterminedError("only GIT ranges, which need the repository's commit graph")
        return None

    def _event(self, scheme: VersionScheme, event: Mapping[str, str]) -> tuple[str, Any]:
        ((kind, text),) = event.items()
        if kind == "introduced" and text == "0":
            return kind, _ZERO
        if kind == "limit" and text == "*":
            return kind, _INFINITY
        return kind, self.versions.parse(scheme, text)


def _same_release(ecosystem: str, component: Component) -> bool:
    """Does a record's ecosystem string cover the component's release?

    ``Debian`` (no release) covers every release; ``Debian:12`` covers release 12 only;
    ``Ubuntu:22.04:LTS`` covers 22.04. Language ecosystems take the bare name, and Maven also
    the ``Maven:<repository URL>`` form.
    """
    base, _, suffix = ecosystem.partition(":")
    if not suffix:
        return True
    if component.release is None:
        return base == "Maven"
    return suffix == component.release or suffix.startswith(component.release + ":")


def _severity(record: Mapping[str, Any], candidate: Candidate) -> Severity:
    """The affected entry's own severity where it states one, else the record's."""
    specific = candidate.spec.get("severity") or []
    return severity_of(specific or record.get("severity") or [], record.get("database_specific"))
