"""The built-in checks: one function per rule of :mod:`immutrail.baseline.rules`.

Hand-written because they are ours: each reads the :class:`ImageInput` (and the secrets found in
the layers) and returns the evidence of a failure, one JSON object per offending thing (path,
layer, mode, line, the matched pattern). No evidence means the rule passes.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from immutrail.artifacts.rootfs import EntryType, FileEntry

from . import rules
from .image_input import ConfigFile, ImageInput, dotenv_values
from .secrets import PRIVATE_KEY, SecretFinding

Evidence = dict[str, Any]


@dataclass(frozen=True)
class CheckContext:
    image: ImageInput
    secrets: Sequence[SecretFinding]
    allow_setuid: frozenset[str] = field(default_factory=frozenset)
    """Root-relative paths whose setuid/setgid bits are expected (``--allow-setuid``)."""


def _file(entry: FileEntry, **extra: Any) -> Evidence:
    out: Evidence = {"path": "/" + entry.path, "layer": entry.layer, "mode": f"{entry.mode:04o}"}
    out.update(extra)
    return out


# -- IMT-BL-001 / 002: the no-SSH mandate -------------------------------------------------------

SSH_SERVER_BINARIES = frozenset(
    {
        "usr/sbin/sshd",
        "sbin/sshd",
        "usr/bin/sshd",
        "usr/local/sbin/sshd",
        "usr/sbin/dropbear",
        "usr/bin/dropbear",
        "usr/local/sbin/dropbear",
        "usr/sbin/tinysshd",
        "usr/bin/tinysshd",
        "etc/ssh/sshd_config",
    }
)
SSH_SERVER_PACKAGES = frozenset({"openssh-server", "dropbear", "dropbear-bin", "tinysshd"})
_SSH_DAEMONS = frozenset({"sshd", "dropbear", "tinysshd"})


def check_no_ssh_server(ctx: CheckContext) -> list[Evidence]:
    found: list[Evidence] = []
    for path in sorted(SSH_SERVER_BINARIES):
        entry = ctx.image.rootfs.get(path)
        if entry is not None and entry.type is not EntryType.DIRECTORY:
            what = "sshd configuration" if path.endswith("sshd_config") else "SSH server program"
            found.append(_file(entry, detail=what))
    for package in ctx.image.packages:
        if package.name in SSH_SERVER_PACKAGES:
            found.append({"package": package.purl or package.name, "detail": "SSH server package"})
    argv = (*ctx.image.settings.entrypoint, *ctx.image.settings.cmd)
    if argv and argv[0].rpartition("/")[2] in _SSH_DAEMONS:
        found.append({"path": "config.Entrypoint", "detail": f"starts {argv[0]}"})
    return found


def check_no_authorized_keys(ctx: CheckContext) -> list[Evidence]:
    return [
        _file(entry)
        for entry in ctx.image.rootfs.entries()
        if entry.type is not EntryType.DIRECTORY
        and entry.path.rpartition("/")[2] in ("authorized_keys", "authorized_keys2")
    ]


# -- IMT-BL-003: non-root -------------------------------------------------------------------------


def passwd_uids(image: ImageInput) -> dict[str, int]:
    uids: dict[str, int] = {}
    for item in image.config_files_of("passwd"):
        for line in item.content.splitlines():
            fields = line.split(":")
            if len(fields) >= 3 and fields[2].isdigit():
                uids.setdefault(fields[0], int(fields[2]))
    return uids


def check_non_root(ctx: CheckContext) -> list[Evidence]:
    user = ctx.image.settings.user.strip()
    name = user.partition(":")[0]
    if not name:
        return [{"path": "config.User", "detail": "no user set: the process runs as root"}]
    if name.isdigit():
        uid: int | None = int(name)
    else:
        uid = 0 if name == "root" else passwd_uids(ctx.image).get(name)
    if uid == 0:
        return [{"path": "config.User", "value": user, "detail": "uid 0 is root"}]
    return []


# -- IMT-BL-004 / 005: file modes -----------------------------------------------------------------


def check_no_setuid(ctx: CheckContext) -> list[Evidence]:
    found = []
    for entry in ctx.image.rootfs.entries():
        special = entry.mode & 0o6000
        if not special or not entry.is_file or entry.path in ctx.allow_setuid:
            continue
        kind = {0o4000: "setuid", 0o2000: "setgid"}.get(special, "setuid+setgid")
        found.append(_file(entry, detail=kind))
    return found


TEMPORARY_FOLDERS = ("tmp", "var/tmp", "dev/shm", "run/lock", "var/lock")


def _temporary(path: str) -> bool:
    return any(path == top or path.startswith(top + "/") for top in TEMPORARY_FOLDERS)


def check_no_world_writable(ctx: CheckContext) -> list[Evidence]:
    found = []
    for entry in ctx.image.rootfs.entries():
        if not entry.mode & 0o002 or entry.type is EntryType.SYMLINK or _temporary(entry.path):
            continue
        if entry.type is EntryType.DIRECTORY and entry.mode & 0o1000:
            continue  # sticky: others can add files but not change or remove theirs
        found.append(_file(entry, detail=f"world-writable {entry.type}"))
    return found


# -- IMT-BL-006 / 007: secrets ------------------------------------------------------------------


def check_no_private_keys(ctx: CheckContext) -> list[Evidence]:
    return [s.to_evidence() for s in ctx.secrets if s.kind == PRIVATE_KEY]


def check_no_tokens(ctx: CheckContext) -> list[Evidence]:
    return [s.to_evidence() for s in ctx.secrets if s.kind != PRIVATE_KEY]


# -- IMT-BL-008 / 009: base and healthcheck -----------------------------------------------------


def check_base_pinned(ctx: CheckContext) -> list[Evidence]:
    base = ctx.image.base
    if base.pinned:
        return []
    if base.source is None:
        detail = (
            "the base image is not recorded (no verified provenance, no "
            "org.opencontainers.image.base.* annotation or label)"
        )
        return [{"detail": detail}]
    return [
        {
            "reference": base.reference,
            "source": base.source,
            "detail": "the base image is named without a digest",
        }
    ]


def check_healthcheck(ctx: CheckContext) -> list[Evidence]:
    health = ctx.image.settings.healthcheck
    test = health.get("Test") if health is not None else None
    if not isinstance(test, list) or not test:
        return [{"path": "config.Healthcheck", "detail": "no healthcheck"}]
    if test[0] == "NONE":
        return [{"path": "config.Healthcheck", "detail": "healthcheck disabled (NONE)"}]
    return []


# -- IMT-BL-010: package caches -------------------------------------------------------------------

_CACHES = tuple(
    re.compile(pattern)
    for pattern in (
        r"(var/cache/apt)/(?:archives/[^/]+\.deb|[^/]+\.bin)",
        r"(var/lib/apt/lists)/(?!lock$)[^/]+",
        r"(var/cache/apk)/.+",
        r"(var/cache/(?:yum|dnf))/.+",
        r"((?:.+/)?\.cache/pip)/.+",
        r"((?:.+/)?\.npm/_cacache)/.+",
        r"((?:.+/)?\.cache/yarn)/.+",
    )
)
_CACHE_HINTS = ("cache", "apt/lists", ".npm/")


def check_no_package_caches(ctx: CheckContext) -> list[Evidence]:
    caches: dict[str, list[FileEntry]] = {}
    for entry in ctx.image.rootfs.entries():
        if not entry.is_file or not any(hint in entry.path for hint in _CACHE_HINTS):
            continue
        for regex in _CACHES:
            match = regex.fullmatch(entry.path)
            if match is not None:
                caches.setdefault(match.group(1), []).append(entry)
                break
    return [
        {
            "path": "/" + root,
            "layer": max(e.layer for e in entries),
            "files": len(entries),
            "bytes": sum(e.size for e in entries),
            "detail": "package-manager cache",
        }
        for root, entries in sorted(caches.items())
    ]


# -- IMT-BL-011 / 012: configuration files ------------------------------------------------------


def directives(item: ConfigFile, comment: str = "#") -> Iterator[tuple[int, str]]:
    """(line number, line without comment and surrounding space) of each non-empty line."""
    for number, raw in enumerate(item.content.splitlines(), 1):
        line = raw.split(comment, 1)[0].strip()
        if line:
            yield number, line


def _config(item: ConfigFile, line: int, pattern: str, detail: str) -> Evidence:
    return {
        "path": "/" + item.path,
        "layer": item.layer,
        "line": line,
        "pattern": pattern,
        "detail": detail,
    }


def _words(line: str) -> list[str]:
    try:
        return shlex.split(line.rstrip(";"))
    except ValueError:
        return line.rstrip(";").split()


WEAK_PROTOCOLS = frozenset({"SSLv2", "SSLv3", "TLSv1", "TLSv1.0", "TLSv1.1"})
_APACHE_ALL = frozenset({"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"})
_NGINX_PROTOCOLS = re.compile(r"(?:proxy_|grpc_|uwsgi_)?ssl_protocols\s")
_OPENSSL_MIN = re.compile(r"(?i)^MinProtocol\s*=\s*(\S+)")


def apache_protocols(words: Sequence[str]) -> set[str]:
    """The protocols an Apache ``SSLProtocol`` value enables (mod_ssl's +/- semantics)."""
    enabled: set[str] = set()
    for word in words:
        sign, name = (word[0], word[1:]) if word[:1] in "+-" else ("", word)
        names = set(_APACHE_ALL) if name.lower() == "all" else {name}
        if sign == "+":
            enabled |= names
        elif sign == "-":
            enabled -= names
        else:
            enabled = set(names)
    return enabled


def check_tls_minimum(ctx: CheckContext) -> list[Evidence]:
    found = []
    for item in ctx.image.config_files_of("nginx"):
        for line, text in directives(item):
            if _NGINX_PROTOCOLS.match(text):
                weak = sorted(set(_words(text)[1:]) & WEAK_PROTOCOLS)
                if weak:
                    found.append(_config(item, line, text, "enables " + ", ".join(weak)))
    for item in ctx.image.config_files_of("apache"):
        for line, text in directives(item):
            words = _words(text)
            if words and words[0].lower() in ("sslprotocol", "sslproxyprotocol"):
                weak = sorted(apache_protocols(words[1:]) & WEAK_PROTOCOLS)
                if weak:
                    found.append(_config(item, line, text, "enables " + ", ".join(weak)))
    for item in ctx.image.config_files_of("openssl"):
        for line, text in directives(item):
            match = _OPENSSL_MIN.match(text)
            if match and match.group(1) in WEAK_PROTOCOLS:
                found.append(_config(item, line, text, f"allows {match.group(1)}"))
    return found


_DEBUG_LEVELS = frozenset({"debug", "trace", "all"})
_APACHE_DEBUG = re.compile(r"(?i)^(?:[\w.-]+:)?(?:debug|trace[1-8])$")
_SSHD_DEBUG = re.compile(r"(?i)^LogLevel\s+(DEBUG[123]?)\b")
_LOGGING_DEBUG = (
    re.compile(r"(?i)\blevel\s*[=:]\s*[\"']?(debug|trace|all)\b"),
    re.compile(r"(?i)\brootLogger\s*=\s*(debug|trace|all)\b"),
)
_TRUE = frozenset({"1", "true", "yes", "on"})
_DEBUG_FLAGS = frozenset({"DEBUG", "FLASK_DEBUG", "DJANGO_DEBUG", "APP_DEBUG"})


def debug_env(env: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(key, value) of environment settings that turn debug logging on."""
    for key, value in sorted(env.items()):
        upper, lower = key.upper(), value.strip().lower()
        if upper.endswith(("LOG_LEVEL", "LOGLEVEL")) or upper == "RUST_LOG":
            if set(re.split(r"[^a-z]+", lower)) & _DEBUG_LEVELS:
                yield key, value
        elif upper in _DEBUG_FLAGS and lower in _TRUE:
            yield key, value


def check_no_debug_logging(ctx: CheckContext) -> list[Evidence]:
    found = []
    for item in ctx.image.config_files_of("nginx"):
        for line, text in directives(item):
            words = _words(text)
            if words[:1] == ["error_log"] and "debug" in words[2:]:
                found.append(_config(item, line, text, "nginx error_log at debug"))
    for item in ctx.image.config_files_of("apache"):
        for line, text in directives(item):
            words = _words(text)
            is_level = words[:1] != [] and words[0].lower() == "loglevel"
            if is_level and any(_APACHE_DEBUG.match(word) for word in words[1:]):
                found.append(_config(item, line, text, "Apache LogLevel at debug/trace"))
    for item in ctx.image.config_files_of("sshd"):
        for line, text in directives(item):
            if _SSHD_DEBUG.match(text):
                found.append(_config(item, line, text, "sshd LogLevel at debug"))
    for item in ctx.image.config_files_of("logging"):
        comment = "<!--" if item.path.endswith(".xml") else "#"
        for line, text in directives(item, comment):
            if any(regex.search(text) for regex in _LOGGING_DEBUG):
                found.append(_config(item, line, text, "log level debug/trace"))
    for key, value in debug_env(ctx.image.settings.env):
        found.append({"path": "config.Env", "pattern": f"{key}={value}", "detail": "debug on"})
    for item in ctx.image.config_files_of("dotenv"):
        for key, value in debug_env(dotenv_values(item.content)):
            found.append(
                {
                    "path": "/" + item.path,
                    "layer": item.layer,
                    "pattern": f"{key}={value}",
                    "detail": "debug on",
                }
            )
    return found


Check = Callable[[CheckContext], list[Evidence]]

CHECKS: Mapping[str, Check] = {
    rules.NO_SSH_SERVER: check_no_ssh_server,
    rules.NO_AUTHORIZED_KEYS: check_no_authorized_keys,
    rules.NON_ROOT_USER: check_non_root,
    rules.NO_SETUID: check_no_setuid,
    rules.NO_WORLD_WRITABLE: check_no_world_writable,
    rules.NO_PRIVATE_KEYS: check_no_private_keys,
    rules.NO_TOKENS: check_no_tokens,
    rules.BASE_PINNED: check_base_pinned,
    rules.HEALTHCHECK: check_healthcheck,
    rules.NO_PACKAGE_CACHES: check_no_package_caches,
    rules.TLS_MINIMUM: check_tls_minimum,
    rules.NO_DEBUG_LOGGING: check_no_debug_logging,
}


def run_checks(ctx: CheckContext) -> Iterable[tuple[rules.Rule, list[Evidence]]]:
    for rule in rules.RULES:
        yield rule, CHECKS[rule.id](ctx)
