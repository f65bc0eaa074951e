"""The HTTP side of the OCI distribution spec (v1.1): one repository, its blobs and manifests.

This module knows requests, status codes and authentication; it knows nothing of the store or the
ledger (``registry.py`` combines them). Authentication follows the Docker token specification that
every registry implements: an unauthenticated request gets ``401`` with

    WWW-Authenticate: Bearer realm="https://auth.example/token",service="reg",scope="repository:x:pull"

and the client fetches a token from the realm (anonymously, or with the user's name and password
as HTTP basic auth), then repeats the request with ``Authorization: Bearer <token>``. A registry
that answers ``WWW-Authenticate: Basic`` gets the name and password directly. Credentials come from
``IMMUTRAIL_REGISTRY_USERNAME`` and ``IMMUTRAIL_REGISTRY_PASSWORD``; they are never sent over
plain HTTP to anything but a loopback address.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from immutrail import __version__

from . import oci
from .digests import check_digest
from .errors import ArtifactError, ArtifactInputError, BlobVerificationError, NotFoundError
from .registry_ref import Reference

log = logging.getLogger(__name__)

USERNAME_ENV = "IMMUTRAIL_REGISTRY_USERNAME"
PASSWORD_ENV = "IMMUTRAIL_REGISTRY_PASSWORD"  # noqa: S105 - a variable name
READ_CHUNK = 1024 * 1024
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_ERROR_BYTES = 64 * 1024
MAX_TOKEN_BYTES = 1024 * 1024
MAX_REFERRER_PAGES = 50
DEFAULT_TIMEOUT = 60.0

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (oci.MANIFEST, oci.INDEX, oci.DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
INDEX_TYPES = frozenset({oci.INDEX, DOCKER_MANIFEST_LIST})
ACCEPT_MANIFESTS = ", ".join(MANIFEST_TYPES)
OCTET_STREAM = "application/octet-stream"


# -- errors ------------------------------------------------------------------------------------


class RegistryError(ArtifactError):
    """The registry cannot be used as asked: unreachable, refused, or it broke the protocol."""


class RegistryUnreachableError(RegistryError):
    """No HTTP answer at all (connection refused, DNS, TLS, timeout)."""


class RegistryAuthError(RegistryError):
    """The registry wants credentials that were not given, or refused the ones given."""


class RegistryNotFoundError(NotFoundError):
    """The registry does not hold the manifest or blob asked for."""


class RegistryContentError(BlobVerificationError):
    """The registry served bytes that do not match their digest (or the manifest that names them).

    The CLI maps it, like every digest mismatch, to exit code 1.
    """

    def __init__(self, digest: str, url: str, detail: str):
        super().__init__(digest, url, detail)
        self.url = url


# -- authentication ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials | None:
        env = os.environ if environ is None else environ
        username, password = env.get(USERNAME_ENV, ""), env.get(PASSWORD_ENV, "")
        if not username and not password:
            return None
        if not username or not password:
            raise ArtifactInputError(f"set both {USERNAME_ENV} and {PASSWORD_ENV}, or neither")
        return cls(username, password)

    def basic(self) -> str:
        """The ``Authorization`` value for HTTP basic auth (RFC 7617, UTF-8)."""
        pair = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(pair).decode("ascii")


_PARAM_RE = re.compile(
    r"\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|([^\s,\"]*))\s*(?:,|$)"
)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``WWW-Authenticate: Scheme k=v, k="v"`` as (lower-case scheme, parameters)."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM_RE.match(rest, position)
        if match is None or match.end() == position:
            raise RegistryAuthError(f"cannot parse the registry's WWW-Authenticate: {header!r}")
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
        params[match.group(1).lower()] = value
        position = match.end()
    return scheme.lower(), params


def _error_text(response: httpx.Response) -> str:
    """The registry's ``{"errors": [{"code", "message"}]}`` body as one line, else the status."""
    try:
        body = response.read()[:MAX_ERROR_BYTES]
        document = json.loads(body)
        errors = document.get("errors") if isinstance(document, dict) else None
        if isinstance(errors, list) and errors:
            parts = []
            for item in errors[:5]:
                if isinstance(item, dict):
                    parts.append(f"{item.get('code', '?')}: {item.get('message', '')}".strip())
            if parts:
                return "; ".join(parts)
    except (ValueError, RecursionError, httpx.HTTPError):
        pass
    return f"HTTP {response.status_code} {response.reason_phrase}".strip()


# -- the client --------------------------------------------------------------------------------

BodyFactory = Callable[[], bytes | Iterable[bytes]]


class Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


BlobOpener = Callable[[], contextlib.AbstractContextManager[Readable]]


@dataclass(frozen=True)
class Fetched:
    """A manifest as the registry served it."""

    data: bytes
    content_type: str
    claimed_digest: str | None
    url: str


class RegistryClient:
    """One repository in one registry. Use as a context manager (it holds a connection pool)."""

    def __init__(
        self,
        ref: Reference,
        *,
        plain_http: bool | None = None,
        credentials: Credentials | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ):
        if plain_http is None:
            plain_http = ref.is_loopback
        if plain_http and not ref.is_loopback:
            raise ArtifactInputError(
                f"plain HTTP is only allowed to a loopback registry, not {ref.host}: "
                "use HTTPS (set SSL_CERT_FILE for a private certificate authority)"
            )
        self.ref = ref
        self.plain_http = plain_http
        self.base = f"{'http' if plain_http else 'https'}://{ref.host}"
        self.credentials = credentials
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._http = httpx.Client(
            base_url=self.base,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            transport=transport,
            headers={"User-Agent": f"immutrail/{__version__}"},
            follow_redirects=False,
        )

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- plumbing ------------------------------------------------------------------------------

    def _path(self, kind: str, reference: str) -> str:
        return f"/v2/{self.ref.repository}/{kind}/{reference}"

    def url(self, kind: str, reference: str) -> str:
        return f"{self.base}{self._path(kind, reference)}"

    def _scope(self, push: bool) -> str:
        return f"repository:{self.ref.repository}:{'pull,push' if push else 'pull'}"

    def _auth_header(self, scope: str) -> dict[str, str]:
        token = self._tokens.get(scope)
        if token is None and scope.endswith(":pull"):
            token = self._tokens.get(scope + ",push")
        if token is not None:
            return {"Authorization": f"Bearer {token}"}
        if self._basic and self.credentials is not None:
            return {"Authorization": self.credentials.basic()}
        return {}

    def request(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        push: bool = False,
        headers: Mapping[str, str] | None = None,
        body: BodyFactory | None = None,
        stream: bool = False,
    ) -> httpx.Response:
        """Send; on ``401`` authenticate as the challenge says and send once more."""
        scope = self._scope(push)
        for attempt in (1, 2):
            merged = {**(headers or {}), **self._auth_header(scope)}
            content = body() if body is not None else None
            request = self._http.build_request(method, url, headers=merged, content=content)
            try:
                response = self._http.send(
                    request, stream=stream, follow_redirects=method in {"GET", "HEAD"}
                )
            except httpx.TransportError as exc:
                raise RegistryUnreachableError(
                    f"cannot reach the registry {self.base} ({type(exc).__name__}: {exc})"
                ) from exc
            if response.status_code != httpx.codes.UNAUTHORIZED:
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            response.close()
            if attempt == 2:
                who = "the given credentials" if self.credentials else "anonymous access"
                raise RegistryAuthError(
                    f"the registry {self.ref.host} refused {who} for {scope} "
                    f"(set {USERNAME_ENV} and {PASSWORD_ENV})"
                )
            self._authenticate(challenge, scope)
        raise AssertionError("unreachable")  # pragma: no cover - the loop always returns

    def _authenticate(self, header: str, scope: str) -> None:
        scheme, params = parse_challenge(header) if header else ("", {})
        if scheme == "basic":
            if self.credentials is None:
                raise RegistryAuthError(
                    f"the registry {self.ref.host} wants a user name and password: "
                    f"set {USERNAME_ENV} and {PASSWORD_ENV}"
                )
            self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise RegistryAuthError(
                f"the registry {self.ref.host} answered 401 without a usable challenge ({header!r})"
            )
        self._tokens[scope] = self._fetch_token(params, scope)

    def _fetch_token(self, params: Mapping[str, str], scope: str) -> str:
        realm = httpx.URL(params["realm"])
        loopback = Reference(realm.host or "", "x").is_loopback
        if realm.scheme != "https" and not (realm.scheme == "http" and loopback):
            raise RegistryAuthError(f"refusing the token realm {realm}: it is not HTTPS")
        scopes = [scope]
        if params.get("scope") and params["scope"] not in scopes:
            scopes.append(params["scope"])
        query = httpx.QueryParams([("scope", s) for s in scopes])
        if params.get("service"):
            query = query.add("service", params["service"])
        headers = {"Authorization": self.credentials.basic()} if self.credentials else {}
        try:
            response = self._http.get(realm, params=query, headers=headers, follow_redirects=True)
        except httpx.TransportError as exc:
            raise RegistryUnreachableError(
                f"cannot reach the token service {realm}: {exc}"
            ) from exc
        if response.status_code != httpx.codes.OK:
            hint = "" if self.credentials else f" (set {USERNAME_ENV} and {PASSWORD_ENV})"
            raise RegistryAuthError(
                f"the token service {realm} refused a token for {scope}: "
                f"{_error_text(response)}{hint}"
            )
        try:
            document = response.json()
        except ValueError as exc:
            raise RegistryAuthError(f"the token service {realm} answered no JSON") from exc
        token = document.get("token") or document.get("access_token")
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_BYTES:
            raise RegistryAuthError(f"the token service {realm} answered no token")
        log.debug("got a token for %s from %s", scope, realm)
        return token

    def _fail(self, response: httpx.Response, what: str) -> RegistryError:
        return RegistryError(
            f"the registry {self.ref.host} refused to {what}: {_error_text(response)}"
        )

    # -- blobs ---------------------------------------------------------------------------------

    def has_blob(self, digest: str, *, push: bool = False) -> bool:
        response = self.request("HEAD", self._path("blobs", digest), push=push)
        if response.status_code == httpx.codes.OK:
            return True
        if response.status_code == httpx.codes.NOT_FOUND:
            return False
        raise self._fail(response, f"check the blob {digest}")

    def _location(self, response: httpx.Response, what: str) -> httpx.URL:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(f"the registry {self.ref.host} gave no upload location ({what})")
        return httpx.URL(self.base).join(location)

    def upload_blob(self, digest: str, size: int, opener: BlobOpener, *, chunk_size: int) -> None:
        """Upload one blob: POST, then one PUT (``size <= chunk_size``) or PATCHes and a PUT.

        ``opener`` gives a fresh verifying stream of the blob; nothing is held in memory beyond
        one read buffer.
        """
        check_digest(digest)
        started = self.request(
            "POST",
            f"/v2/{self.ref.repository}/blobs/uploads/",
            push=True,
            headers={"Content-Length": "0"},
        )
        if started.status_code != httpx.codes.ACCEPTED:
            raise self._fail(started, f"start the upload of {digest}")
        location = self._location(started, digest)
        headers = {"Content-Type": OCTET_STREAM}
        if size <= chunk_size:

            def whole() -> Iterator[bytes]:
                with opener() as reader:
                    while data := reader.read(READ_CHUNK):
                        yield data

            done = self.request(
                "PUT",
                location.copy_merge_params({"digest": digest}),
                push=True,
                headers={**headers, "Content-Length": str(size)},
                body=whole,
            )
        else:
            with opener() as reader:
                offset = 0
                while offset < size:
                    length = min(chunk_size, size - offset)
                    patched = self.request(
                        "PATCH",
                        location,
                        push=True,
                        headers={
                            **headers,
                            "Content-Length": str(length),
                            "Content-Range": f"{offset}-{offset + length - 1}",
                        },
                        body=_once(_chunk(reader, length, digest), digest),
                    )
                    if patched.status_code != httpx.codes.ACCEPTED:
                        raise self._fail(patched, f"accept a chunk of {digest}")
                    location = self._location(patched, digest)
                    offset += length
                while reader.read(READ_CHUNK):  # the verifying reader checks at the end
                    pass
            done = self.request(
                "PUT",
                location.copy_merge_params({"digest": digest}),
                push=True,
                headers={"Content-Length": "0"},
            )
        if done.status_code != httpx.codes.CREATED:
            raise self._fail(done, f"store the blob {digest}")
        claimed = done.headers.get("Docker-Content-Digest")
        if claimed is not None and claimed != digest:
            raise RegistryContentError(digest, str(location), f"was stored as {claimed}")

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[httpx.Response]:
        """The blob's response, streaming; the caller checks size and digest while reading."""
        response = self.request(
            "GET",
            self._path("blobs", digest),
            stream=True,
            headers={"Accept-Encoding": "identity"},
        )
        try:
            if response.status_code == httpx.codes.NOT_FOUND:
                raise RegistryNotFoundError(
                    f"the registry has no blob {digest} in {self.ref.repository_url}"
                )
            if response.status_code != httpx.codes.OK:
                raise self._fail(response, f"send the blob {digest}")
            yield response
        finally:
            response.close()

    # -- manifests -----------------------------------------------------------------------------

    def get_manifest(self, reference: str, *, accept: str = ACCEPT_MANIFESTS) -> Fetched | None:
        """The manifest's exact bytes, or None when the registry has no such manifest."""
        path = self._path("manifests", reference)
        response = self.request("GET", path, stream=True, headers={"Accept": accept})
        try:
            if response.status_code == httpx.codes.NOT_FOUND:
                return None
            if response.status_code != httpx.codes.OK:
                raise self._fail(response, f"send the manifest {reference}")
            data = _read_limited(response, MAX_MANIFEST_BYTES, f"manifest {reference}")
        finally:
            response.close()
        content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
        return Fetched(
            data, content_type, response.headers.get("Docker-Content-Digest"), str(response.url)
        )

    def put_manifest(self, reference: str, data: bytes, media_type: str) -> httpx.Headers:
        response = self.request(
            "PUT",
            self._path("manifests", reference),
            push=True,
            headers={"Content-Type": media_type},
            body=lambda: data,
        )
        if response.status_code != httpx.codes.CREATED:
            raise self._fail(response, f"store the manifest {reference}")
        return response.headers

    def get_referrers(self, digest: str) -> list[bytes] | None:
        """The referrers API's index pages, or None when the registry has no referrers API."""
        pages: list[bytes] = []
        url: str | httpx.URL = self._path("referrers", digest)
        for _ in range(MAX_REFERRER_PAGES):
            response = self.request("GET", url, stream=True, headers={"Accept": oci.INDEX})
            try:
                if response.status_code in {httpx.codes.NOT_FOUND, httpx.codes.METHOD_NOT_ALLOWED}:
                    if pages:
                        raise self._fail(response, "send the next page of referrers")
                    return None
                if response.status_code != httpx.codes.OK:
                    raise self._fail(response, f"list the referrers of {digest}")
                content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip()
                if content_type != oci.INDEX:
                    if pages:
                        raise self._fail(response, "send an OCI index of referrers")
                    return None  # a catch-all page, not the API
                pages.append(_read_limited(response, MAX_MANIFEST_BYTES, "referrers index"))
                following = response.links.get("next", {}).get("url")
            finally:
                response.close()
            if not following:
                return pages
            url = httpx.URL(self.base).join(following)
        raise RegistryError(f"more than {MAX_REFERRER_PAGES} pages of referrers for {digest}")


def _read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    for data in response.iter_bytes(READ_CHUNK):
        total += len(data)
        if total > limit:
            raise RegistryError(f"the registry's {what} is larger than {limit} bytes")
        chunks.append(data)
    return b"".join(chunks)


def _chunk(reader: Readable, length: int, digest: str) -> Iterator[bytes]:
    left = length
    while left > 0:
        data = reader.read(min(READ_CHUNK, left))
        if not data:
            raise BlobVerificationError(digest, "the store", "ended before its recorded size")
        left -= len(data)
        yield data


def _once(chunks: Iterator[bytes], digest: str) -> BodyFactory:
    """A body that can be sent once: a streamed chunk cannot be replayed after a new 401."""
    used = False

    def factory() -> Iterator[bytes]:
        nonlocal used
        if used:
            raise RegistryAuthError(
                f"the registry asked to authenticate again in the middle of uploading {digest}"
            )
        used = True
        return chunks

    return factory
