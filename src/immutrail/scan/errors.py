"""Errors of the scan part, grouped by what the user must do about them.

The CLI maps each family to an exit code: :class:`ScanInputError` (a corrupt OSV record or
archive, a malformed version, a report about another image, a malformed predicate) exits 2 and
guarantees that nothing was written; :class:`VulnDbMissingError` (no database imported yet)
and :class:`VulnDbError` (the database is damaged, a download failed) exit 3.
"""

from __future__ import annotations


class ScanError(Exception):
    """Base of every scan error; ``diagnostics()`` is written for the person reading it."""

    def diagnostics(self) -> str:
        return str(self)


class ScanInputError(ScanError, ValueError):
    """The input is wrong; nothing was written to the database, the store or the ledger."""


class OsvRecordError(ScanInputError):
    """An OSV record that is not valid JSON or does not follow the OSV schema 1.x.

    ``source`` names where the record came from (a file, ``archive.zip!member.json``) and
    ``path`` the JSON path of the offending field, so that the record can be found and fixed.
    """

    def __init__(self, source: str, message: str, path: str = ""):
        self.source = source
        self.path = path
        self.detail = message
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(where + message)


class ArchiveError(ScanInputError):
    """An archive (OSV ``all.zip``) that is unsafe, corrupt or over a size limit."""


class VersionError(ScanInputError):
    """A version string that its ecosystem's rules cannot parse."""

    def __init__(self, scheme: str, version: str, reason: str):
        self.scheme = scheme
        self.version = version
        self.reason = reason
        super().__init__(f"{scheme} version {version!r}: {reason}")


class ReportError(ScanInputError):
    """A Trivy or Grype report that cannot be read, or that is about another image."""


class PredicateError(ScanInputError):
    """A vulnerability predicate that does not have the documented shape."""


class SbomError(ScanInputError):
    """The image's SBOM cannot be read or is not CycloneDX JSON."""


class VulnDbError(ScanError):
    """The vulnerability database is damaged, from a newer immutrail, or cannot be updated."""


class VulnDbMissingError(VulnDbError):
    """No vulnerability database has been imported into this home yet."""

    def diagnostics(self) -> str:
        return (
            f"{self}\nImport one first: `immutrail vulndb import PATH` (OSV JSON files, folders "
            "or all.zip archives) or `immutrail vulndb update` where the network allows."
        )


class DownloadError(VulnDbError):
    """An OSV archive could not be downloaded (unreachable, refused, too large)."""
