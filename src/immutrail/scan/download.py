"""Download OSV's per-ecosystem archives (``BASE/<ecosystem>/all.zip``) for ``vulndb update``.

Production use needs network access to ``https://osv-vulnerabilities.storage.googleapis.com``
(or a mirror given as the base URL). Each archive is streamed to a temporary file, never held in
memory, and cut off at the archive size cap; the import then reads it like a local archive.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlsplit

import httpx

from .errors import DownloadError, ScanInputError
from .sources import MAX_ARCHIVE_BYTES

DEFAULT_BASE = "https://osv-vulnerabilities.storage.googleapis.com"
TIMEOUT = httpx.Timeout(30.0, read=120.0)


class DownloadObserver(Protocol):
    def downloading(self, ecosystem: str, url: str, total: int | None) -> None: ...

    def received(self, size: int) -> None: ...


def archive_url(base: str, ecosystem: str) -> str:
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ScanInputError(f"{base!r} is not an http(s) base URL")
    return f"{base.rstrip('/')}/{quote(ecosystem, safe='')}/all.zip"


def download_archives(
    ecosystems: Sequence[str],
    base: str,
    folder: Path,
    observer: DownloadObserver | None = None,
    *,
    limit: int = MAX_ARCHIVE_BYTES,
) -> list[Path]:
    """Fetch each ecosystem's ``all.zip`` into ``folder``; DownloadError on any failure."""
    paths: list[Path] = []
    with httpx.Client(timeout=TIMEOUT, follow_redirects=True) as client:
        for ecosystem in ecosystems:
            url = archive_url(base, ecosystem)
            target = folder / f"{len(paths):02d}-{quote(ecosystem, safe='')}.zip"
            _fetch(client, ecosystem, url, target, observer, limit)
            paths.append(target)
    return paths


def _fetch(
    client: httpx.Client,
    ecosystem: str,
    url: str,
    target: Path,
    observer: DownloadObserver | None,
    limit: int,
) -> None:
    try:
        with client.stream("GET", url) as response:
            if response.status_code != 200:
                raise DownloadError(f"{url}: HTTP {response.status_code}")
            length = response.headers.get("content-length")
            total = int(length) if length and length.isdigit() else None
            if total is not None and total > limit:
                raise DownloadError(f"{url}: {total} bytes, over the {limit}-byte limit")
            if observer is not None:
                observer.downloading(ecosystem, url, total)
            received = 0
            with target.open("wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    received += len(chunk)
                    if received > limit:
                        raise DownloadError(f"{url}: more than the {limit}-byte limit")
                    out.write(chunk)
                    if observer is not None:
                        observer.received(len(chunk))
    except httpx.HTTPError as exc:
        raise DownloadError(f"{url}: {exc.__class__.__name__}: {exc}") from exc
