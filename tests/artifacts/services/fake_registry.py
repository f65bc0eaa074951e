"""A small OCI registry in a thread, for what Debian's distribution 2.8 cannot show.

It implements the parts of the distribution spec v1.1 that immutrail uses: blob ``HEAD``/``GET``,
uploads (``POST``, ``PATCH``, ``PUT``), manifests by digest and tag, and, when
``referrers_api=True``, ``GET /v2/<name>/referrers/<digest>`` plus the ``OCI-Subject`` answer to a
manifest with a subject. With ``token`` set it demands ``Authorization: Bearer <token>`` and
hands the token out at ``/token`` (Docker token protocol) to ``user``/``password`` only.
``tamper`` rewrites what it serves, to play a registry that lies.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

INDEX = "application/vnd.oci.image.index.v1+json"
_ROUTE = re.compile(
    r"^/v2/(?P<name>.+?)/(?P<kind>blobs/uploads|blobs|manifests|referrers)/?(?P<ref>[^/]*)$"
)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeRegistry:
    referrers_api: bool = True
    token: str | None = None
    user: str = "alice"
    password: str = "s3cret"
    tamper: Callable[[str, bytes], bytes] | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    tags: dict[tuple[str, str], str] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    token_requests: list[str] = field(default_factory=list)
    host: str = ""

    def served(self, digest: str, data: bytes) -> bytes:
        return self.tamper(digest, data) if self.tamper else data

    def referrers(self, subject: str) -> bytes:
        entries = []
        for digest, (data, media_type) in sorted(self.manifests.items()):
            document = json.loads(data)
            if (document.get("subject") or {}).get("digest") != subject:
                continue
            entry = {"mediaType": media_type, "digest": digest, "size": len(data)}
            kind = document.get("artifactType") or document.get("config", {}).get("mediaType")
            if kind:
                entry["artifactType"] = kind
            if document.get("annotations"):
                entry["annotations"] = document["annotations"]
            entries.append(entry)
        return json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries}).encode()


def _handler(registry: FakeRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
            pass

        def send(self, status: int, body: bytes = b"", **headers: str) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key.replace("_", "-"), value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def error(self, status: int, code: str) -> None:
            body = json.dumps({"errors": [{"code": code, "message": code.lower()}]}).encode()
            self.send(status, body, Content_Type="application/json")

        def body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def authorized(self) -> bool:
            if registry.token is None:
                return True
            if self.headers.get("Authorization") == f"Bearer {registry.token}":
                return True
            self.body()
            realm = f"http://{registry.host}/token"
            self.send(
                401,
                b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                WWW_Authenticate=f'Bearer realm="{realm}",service="fake",scope="repository:x:pull"',
            )
            return False

        def issue_token(self, query: dict[str, list[str]]) -> None:
            expected = base64.b64encode(f"{registry.user}:{registry.password}".encode()).decode()
            registry.token_requests.append(",".join(query.get("scope", [])))
            if self.headers.get("Authorization") != f"Basic {expected}":
                self.error(401, "DENIED")
                return
            body = json.dumps({"token": registry.token}).encode()
            self.send(200, body, Content_Type="application/json")

        def handle_any(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            registry.requests.append((self.command, url.path))
            if url.path == "/token":
                self.issue_token(query)
                return
            if not self.authorized():
                return
            if url.path == "/v2/":
                self.send(200, b"{}", Content_Type="application/json")
                return
            match = _ROUTE.match(url.path)
            if match is None:
                self.error(404, "NOT_FOUND")
                return
            name, kind, ref = match["name"], match["kind"], match["ref"]
            getattr(self, "do_" + kind.replace("/", "_"))(name, ref, query)

        def do_blobs(self, name: str, ref: str, query: dict[str, list[str]]) -> None:
            data = registry.blobs.get(ref)
            if data is None:
                self.error(404, "BLOB_UNKNOWN")
                return
            self.send(200, registry.served(ref, data), Docker_Content_Digest=ref)

        def do_blobs_uploads(self, name: str, ref: str, query: dict[str, list[str]]) -> None:
            if self.command == "POST":
                self.body()
                upload = str(uuid.uuid4())
                registry.uploads[upload] = bytearray()
                location = f"/v2/{name}/blobs/uploads/{upload}"
                self.send(202, Location=location, Range="0-0")
                return
            buffer = registry.uploads.get(ref)
            if buffer is None:
                self.error(404, "BLOB_UPLOAD_UNKNOWN")
                return
            data = self.body()
            content_range = self.headers.get("Content-Range")
            if content_range is not None and int(content_range.split("-")[0]) != len(buffer):
                self.error(416, "RANGE_INVALID")
                return
            buffer.extend(data)
            if self.command == "PATCH":
                location = f"/v2/{name}/blobs/uploads/{ref}"
                self.send(202, Location=location, Range=f"0-{len(buffer) - 1}")
                return
            digest = query.get("digest", [""])[0]
            if _digest(bytes(buffer)) != digest:
                self.error(400, "DIGEST_INVALID")
                return
            registry.blobs[digest] = bytes(buffer)
            del registry.uploads[ref]
            self.send(201, Location=f"/v2/{name}/blobs/{digest}", Docker_Content_Digest=digest)

        def do_manifests(self, name: str, ref: str, query: dict[str, list[str]]) -> None:
            if self.command == "PUT":
                data = self.body()
                digest = _digest(data)
                if ref.startswith("sha256:") and ref != digest:
                    self.error(400, "DIGEST_INVALID")
                    return
                media_type = self.headers.get("Content-Type", "")
                registry.manifests[digest] = (data, media_type)
                if not ref.startswith("sha256:"):
                    registry.tags[(name, ref)] = digest
                headers = {"Docker_Content_Digest": digest}
                subject = (json.loads(data).get("subject") or {}).get("digest")
                if subject and registry.referrers_api:
                    headers["OCI_Subject"] = subject
                self.send(201, Location=f"/v2/{name}/manifests/{digest}", **headers)
                return
            digest = ref if ref.startswith("sha256:") else registry.tags.get((name, ref), "")
            if digest not in registry.manifests:
                self.error(404, "MANIFEST_UNKNOWN")
                return
            data, media_type = registry.manifests[digest]
            self.send(
                200,
                registry.served(digest, data),
                Content_Type=media_type,
                Docker_Content_Digest=digest,
            )

        def do_referrers(self, name: str, ref: str, query: dict[str, list[str]]) -> None:
            if not registry.referrers_api:
                self.error(404, "NOT_FOUND")
                return
            self.send(200, registry.referrers(ref), Content_Type=INDEX)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = handle_any  # noqa: N815

    return Handler


@contextlib.contextmanager
def running_fake(registry: FakeRegistry) -> Iterator[FakeRegistry]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(registry))
    registry.host = f"127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield registry
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
