"""Secrets in an image: private keys, access tokens and ``.env`` credentials, in every layer.

Each layer tar is read once, as a stream, and the content of every regular file in it is
scanned, whether or not a later layer deleted or replaced the file: whoever pulls the image gets
every layer. A finding names the layer and the path and says whether the file is still visible
in the merged image (``shadowed`` when it is not).

Bounds: the first :data:`MAX_SCAN_BYTES` of each file are scanned; a file whose first 8 KiB hold
a NUL byte is binary and skipped (PEM keys and tokens are text). The secret itself is never kept
or printed: a finding carries a redacted fingerprint (the first 16 hex digits of its SHA-256), so
two findings of the same secret can be matched without revealing it.

Hand-written rather than a library: the scanners that exist (detect-secrets, trufflehog,
gitleaks) either scan a working tree, not layer streams with whiteouts, or are not Python.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from immutrail.artifacts.rootfs import WHITEOUT_PREFIX, LayerFormatError

from .image_input import dotenv_values

MAX_SCAN_BYTES = 1024 * 1024
BINARY_PROBE = 8192
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1024 * 1024

PRIVATE_KEY = "private-key"

# Token formats as their issuers document them: (kind, hints, pattern). A cheap substring test
# (any hint) decides whether the expression runs at all, since most files hold none of these;
# patterns start with their literal prefix (a leading \b would stop `re` from searching for the
# prefix quickly), and the word boundary before a match is checked in code instead.
_TOKEN_PATTERNS: tuple[tuple[str, tuple[bytes, ...], str], ...] = (
    (
        PRIVATE_KEY,
        (b"PRIVATE KEY",),
        r"-----BEGIN (?:RSA |DSA |EC |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----",
    ),
    ("aws-access-key-id", (b"AKIA", b"ASIA"), r"A[KS]IA[0-9A-Z]{16}(?![0-9A-Za-z])"),
    (
        "aws-secret-access-key",
        (b"ecret_access_key", b"ECRET_ACCESS_KEY"),
        r"(?i:aws_secret_access_key)[\"']?\s*[=:]\s*[\"']?[A-Za-z0-9/+=]{40}(?![A-Za-z0-9/+=])",
    ),
    (
        "github-token",
        (b"ghp_", b"gho_", b"ghu_", b"ghs_", b"ghr_"),
        r"gh[pousr]_[A-Za-z0-9]{36,255}(?![A-Za-z0-9])",
    ),
    ("github-token", (b"github_pat_",), r"github_pat_[A-Za-z0-9_]{82}(?![A-Za-z0-9_])"),
    ("gitlab-token", (b"glpat-",), r"glpat-[A-Za-z0-9_-]{20,}"),
    ("slack-token", (b"xox",), r"xox[abposr]-[A-Za-z0-9-]{10,}"),
    (
        "slack-webhook",
        (b"hooks.slack.com",),
        r"https://hooks\.slack\.com/services/T[A-Z0-9]+/B[A-Z0-9]+/[A-Za-z0-9]{20,}",
    ),
    ("stripe-secret-key", (b"_live_",), r"[sr]k_live_[A-Za-z0-9]{24,}(?![A-Za-z0-9])"),
    ("google-api-key", (b"AIza",), r"AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])"),
    ("npm-token", (b"npm_",), r"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])"),
    ("pypi-token", (b"pypi-AgE",), r"pypi-AgE[A-Za-z0-9_-]{50,}"),
)
_COMPILED = tuple(
    (kind, hints, re.compile(pattern.encode())) for kind, hints, pattern in _TOKEN_PATTERNS
)
_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_PEM_END = re.compile(rb"-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----")

# .env keys whose value is a credential, and values that are clearly not one.
_SECRET_KEY = re.compile(
    r"(?i)(SECRET|PASSWORD|PASSWD|PASSPHRASE|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|"
    r"CREDENTIALS?|AUTH|DSN|DATABASE_URL|CONNECTION_STRING)"
)
_PLACEHOLDER = re.compile(
    r"(?i)^(|\$\{?[A-Z0-9_]+\}?|<[^>]*>|changeme|change_me|xxx+|\*+|none|null|todo|example)$"
)
_DOTENV_NAME = re.compile(r"^\.env(\.[A-Za-z0-9_-]+)?$")
_DOTENV_TEMPLATES = frozenset({"example", "sample", "template", "dist", "defaults"})


@dataclass(frozen=True)
class SecretFinding:
    kind: str
    """``private-key``, ``aws-access-key-id``, ``github-token``, ``dotenv-secret``, …"""
    path: str
    """Root-relative path in the layer, or ``config.Env`` for the image's environment."""
    layer: int | None
    line: int
    fingerprint: str
    shadowed: bool
    detail: str = ""

    def to_evidence(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.path if self.layer is None else "/" + self.path,
            "layer": self.layer,
            "line": self.line,
            "pattern": self.kind,
            "fingerprint": self.fingerprint,
            "shadowed": self.shadowed,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


def fingerprint(secret: bytes) -> str:
    return "sha256:" + hashlib.sha256(secret).hexdigest()[:16]


def is_dotenv(path: str) -> bool:
    name = path.rpartition("/")[2]
    match = _DOTENV_NAME.match(name)
    if match is None:
        return False
    suffix = (match.group(1) or "").lstrip(".").lower()
    return suffix not in _DOTENV_TEMPLATES


def scan_bytes(data: bytes, path: str) -> Iterator[tuple[str, int, bytes, str]]:
    """(kind, line, secret bytes, detail) of every secret in ``data`` (a file at ``path``)."""
    for kind, hints, regex in _COMPILED:
        if not any(hint in data for hint in hints):
            continue
        for match in regex.finditer(data):
            if kind != PRIVATE_KEY and match.start() > 0 and data[match.start() - 1] in _WORD:
                continue  # inside a longer word: not a token
            line = data.count(b"\n", 0, match.start()) + 1
            secret = match.group(0)
            if kind == PRIVATE_KEY:
                end = _PEM_END.search(data, match.end(), match.end() + 64 * 1024)
                secret = data[match.start() : end.end() if end else match.end()]
                yield kind, line, secret, match.group(0).decode("ascii")
            else:
                yield kind, line, secret, ""
    if is_dotenv(path):
        text = data.decode("utf-8", "replace")
        lines = {line.split("=", 1)[0].strip(): n for n, line in enumerate(text.splitlines(), 1)}
        for key, value in dotenv_values(text).items():
            if _SECRET_KEY.search(key) and not _PLACEHOLDER.match(value):
                number = lines.get(key, lines.get(f"export {key}", 0))
                yield "dotenv-secret", number, value.encode(), f"key {key}"


def scan_env(env: Mapping[str, str]) -> list[SecretFinding]:
    """Secrets in the image config's environment (ENV in a Dockerfile, ``env`` in a definition)."""
    found = []
    for key, value in sorted(env.items()):
        data = value.encode()
        hits = list(scan_bytes(data, ""))
        for kind, _, secret, _ in hits:
            found.append(
                SecretFinding(kind, "config.Env", None, 0, fingerprint(secret), False, f"key {key}")
            )
        if not hits and _SECRET_KEY.search(key) and not _PLACEHOLDER.match(value):
            found.append(
                SecretFinding(
                    "env-secret", "config.Env", None, 0, fingerprint(data), False, f"key {key}"
                )
            )
    return found


LayerObserver = Callable[[int, int], None]


def scan_layers(
    layer_paths: Sequence[Path],
    visible: Callable[[str, int], bool],
    observer: LayerObserver | None = None,
) -> list[SecretFinding]:
    """Scan every regular file of every layer; ``visible(path, layer)`` says whether that copy
    of the file is the one the merged image shows (else the finding is ``shadowed``)."""
    found: list[SecretFinding] = []
    for index, path in enumerate(layer_paths):
        for name, data in _layer_files(path):
            for kind, line, secret, detail in scan_bytes(data, name):
                found.append(
                    SecretFinding(
                        kind,
                        name,
                        index,
                        line,
                        fingerprint(secret),
                        not visible(name, index),
                        detail,
                    )
                )
        if observer is not None:
            observer(index + 1, len(layer_paths))
    return found


def _layer_files(path: Path) -> Iterator[tuple[str, bytes]]:
    """(root-relative path, leading bytes) of each text-like regular file of one layer tar.

    The layers were already read and checked by :class:`RootFS` (no escaping paths, no devices),
    so this only needs to read them again; a layer that became unreadable since is an error.
    """
    try:
        with path.open("rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            stream: IO[bytes] = (
                gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
                if magic == _GZIP_MAGIC
                else raw
            )
            with tarfile.open(fileobj=stream, mode="r|", bufsize=_CHUNK) as tar:
                for member in tar:
                    tar.members.clear()  # type: ignore[attr-defined]  # a stream needs no index
                    name = "/".join(p for p in member.name.split("/") if p not in ("", "."))
                    if not member.isreg() or not name:
                        continue
                    if name.rpartition("/")[2].startswith(WHITEOUT_PREFIX):
                        continue
                    handle = tar.extractfile(member)
                    if handle is None:  # pragma: no cover - regular members always have one
                        continue
                    head = handle.read(BINARY_PROBE)
                    if b"\x00" in head:
                        continue
                    yield name, head + handle.read(MAX_SCAN_BYTES - len(head))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise LayerFormatError(path, f"not readable while scanning for secrets: {exc}") from exc
