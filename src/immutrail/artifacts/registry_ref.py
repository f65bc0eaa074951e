"""Registry references: ``HOST[:PORT]/REPO[:TAG][@sha256:…]``, parsed strictly.

The grammar is the distribution project's (``reference.go``), restricted to what immutrail needs:
the registry host is always explicit (no implied Docker Hub, no implied ``latest``), and only
SHA-256 digests are accepted, like everywhere else in the store.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from .digests import is_digest
from .errors import ArtifactInputError

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_HOST_RE = re.compile(
    r"(?P<name>[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[(?P<ipv6>[0-9A-Fa-f:.]+)\])(?::(?P<port>[^/]*))?"
)
MAX_PORT = 65535
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
MAX_NAME = 255
LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost", "ip6-loopback"})

EXAMPLE = "registry.example.org:5000/team/app:1.4.2 or …/team/app@sha256:<hex>"


def _bad(text: str, why: str) -> ArtifactInputError:
    return ArtifactInputError(f"registry reference {text!r} {why} (expected {EXAMPLE})")


def _check_host(text: str, host: str) -> None:
    """``host`` is a name or an address, with an optional port 1-65535."""
    match = _HOST_RE.fullmatch(host)
    if not match or not ("." in host or ":" in host or host == "localhost"):
        raise _bad(text, f"does not start with a registry host (HOST[:PORT]), got {host!r}")
    port = match["port"]
    # ASCII digits only (int() reads other scripts' digits too), and at most five of them.
    if port is not None and not (
        port.isascii() and port.isdecimal() and len(port) <= 5 and 1 <= int(port) <= MAX_PORT
    ):
        raise _bad(text, f"has the port {port!r}: a port is a number from 1 to {MAX_PORT}")
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            raise _bad(text, f"has {match['ipv6']!r} in brackets, not an IPv6 address") from None


@dataclass(frozen=True)
class Reference:
    """A repository in a registry, with a tag and/or a digest."""

    host: str
    """``name[:port]`` as written (IPv6 literals in brackets)."""
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        if not text or text != text.strip():
            raise _bad(text, "is empty or has surrounding spaces")
        host, slash, rest = text.partition("/")
        if not slash or not rest:
            raise _bad(text, "names no repository after the registry host")
        _check_host(text, host)
        digest: str | None = None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not is_digest(digest):
                raise _bad(text, f"has {digest!r}, which is not a sha256:<64 hex> digest")
        tag: str | None = None
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            rest, tag = rest.rsplit(":", 1)
            if not TAG_RE.fullmatch(tag):
                raise _bad(text, f"has the tag {tag!r}, which is not a valid tag")
        if len(rest) > MAX_NAME or not _NAME_RE.fullmatch(rest):
            raise _bad(
                text,
                f"has the repository {rest!r}: lower-case letters and digits separated by "
                "'.', '_', '__', '-' or '/'",
            )
        return cls(host, rest, tag, digest)

    @property
    def hostname(self) -> str:
        """The host without port or brackets."""
        if self.host.startswith("["):
            return self.host[1 : self.host.index("]")]
        return self.host.rsplit(":", 1)[0] if ":" in self.host else self.host

    @property
    def is_loopback(self) -> bool:
        name = self.hostname
        if name.lower() in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    @property
    def repository_url(self) -> str:
        """``host/repository``, the name the ledger records."""
        return f"{self.host}/{self.repository}"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.host, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = self.repository_url
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text
