"""Fixtures of the API tests: one home with a principal per role, each with a token, the tokens
that must not work (unknown, expired, revoked, of a disabled principal), a built image with its
attestations, a promotion and deployments in ``prod``; the app over it, in process.

Built once per session: the world only grows (appends through the API add events, never change
what the fixtures recorded).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from access.conftest import ADMIN, add_principal, login, role_environments
from artifacts.conftest import isolate
from audit.fleet import Fleet
from deploy.conftest import hello_repo
from immutrail.access import NewPrincipal, Role, bootstrap, create_token, revoke_token
from immutrail.access.manage import disable_principal
from immutrail.api.app import create_app
from immutrail.api.settings import ServerSettings
from immutrail.artifacts.builder import build
from immutrail.artifacts.store import Store
from immutrail.ledger.event import Event
from immutrail.ledger.home import init_ledger, open_ledger

ENV = "prod"
SERVICE = "hello"
BAD_TOKEN = "imt_" + "0" * 16 + "_" + "1" * 64
CALLERS_WITHOUT_ACCESS = ("none", "malformed", "unknown", "expired", "revoked", "disabled")


@dataclass
class World:
    home: Path
    tokens: dict[str, str | None]
    """Caller name -> token: one per role (``admin``, ``builder``…) and the ones that fail."""
    principals: dict[str, str]
    """Caller name -> principal name (the roles' and the disabled one)."""
    digest: str
    attestation: str
    """The manifest digest of one attestation attached to the image."""
    event_id: str
    instance: str
    deployment: str
    between: str
    """A moment while v1 ran in prod."""
    extra: dict[str, str] = field(default_factory=dict)


def _now() -> datetime:
    return datetime.now(UTC)


def make_world(root: Path) -> World:
    home = root / "home"
    init_ledger(home)[0].close()
    tokens: dict[str, str | None] = {"none": None, "malformed": "not-a-token", "unknown": BAD_TOKEN}
    principals: dict[str, str] = {}
    with open_ledger(home) as ledger:
        bootstrap(home, ledger, NewPrincipal.check(ADMIN, "person", "Root"), passphrase=None)
        admin = login(home, ledger, ADMIN)
        for role in Role:
            name = f"p-{role.value}"
            add_principal(home, ledger, admin, name, [role], role_environments(role), key=False)
            made = create_token(ledger, admin, name, expires=_now() + timedelta(days=1), now=_now())
            tokens[role.value], principals[role.value] = made.secret, name
        # An admin's token that expired yesterday (issued, on its clock, the day before).
        past = _now() - timedelta(days=2)
        tokens["expired"] = create_token(
            ledger, admin, "p-admin", expires=past + timedelta(days=1), now=past
        ).secret
        revoked = create_token(
            ledger, admin, "p-admin", expires=_now() + timedelta(days=1), now=_now()
        )
        revoke_token(ledger, admin, revoked.token.token_id, reason="test")
        tokens["revoked"] = revoked.secret
        add_principal(home, ledger, admin, "p-gone", [Role.ADMIN], None, key=False)
        tokens["disabled"] = create_token(
            ledger, admin, "p-gone", expires=_now() + timedelta(days=1), now=_now()
        ).secret
        disable_principal(ledger, admin, "p-gone", reason="left")
        principals["disabled"] = "p-gone"

    repo = hello_repo(root / "hello-1")
    digest = build(repo / "image.yaml", home, tag="hello:1").digest
    store = Store.for_home(home)
    attestation = store.referrers(digest)[0].digest
    with open_ledger(home) as ledger:
        promoted = Event.create(
            "promotion.decided",
            "p-deployer",
            digest,
            {
                "environment": ENV,
                "service": SERVICE,
                "allowed": True,
                "override": False,
                "policy": {"digest": "sha256:" + "a" * 64},
                "failed_checks": [],
            },
        )
        ledger.append(promoted)
        fleet = Fleet(ledger, store)
        fleet.declare(ENV, SERVICE, "p-deployer")
        run = fleet.deploy(ENV, SERVICE, "p-deployer")
        time.sleep(0.002)
        between = Event.create("x.y", "a", "b").time
        time.sleep(0.002)
        fleet.deploy(ENV, SERVICE, "p-deployer", fail="not healthy within 60 s")
        ledger.checkpoint()
    return World(
        home=home,
        tokens=tokens,
        principals=principals,
        digest=digest,
        attestation=attestation,
        event_id=promoted.id,
        instance=run.created[0],
        deployment=run.id,
        between=between,
    )


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("api-world")
    with pytest.MonkeyPatch.context() as patch:
        isolate(patch, root)
        yield make_world(root)


@pytest.fixture(scope="session")
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(ServerSettings(world.home, None))) as test_client:
        yield test_client


def auth(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


# --- real servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]

    def wait_ready(self, seconds: float = 60) -> Server:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.communicate()
            try:
                if httpx.get(self.url + "/tlog/checkpoint", timeout=1).status_code < 500:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise AssertionError(f"the server did not answer within {seconds} s")


class Servers:
    """``immutrail serve`` in subprocesses on free loopback ports; stopped (SIGTERM, then
    waited for) after the test."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def start(self, home: Path, *args: str) -> Server:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("IMMUTRAIL_")}
        command = [sys.executable, "-m", "immutrail.cli.main", "serve", "--home", str(home)]
        process = subprocess.Popen(
            [*command, "--port", str(port), "--format", "json", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        server = Server(f"http://127.0.0.1:{port}", process)
        self.started.append(server)
        return server

    def __call__(self, home: Path, *args: str) -> Server:
        return self.start(home, *args).wait_ready()

    def stop(self) -> None:
        for server in self.started:
            server.process.terminate()
            try:
                server.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait(timeout=5)


@pytest.fixture
def serve() -> Iterator[Servers]:
    servers = Servers()
    yield servers
    servers.stop()


@contextmanager
def uvicorn_thread(settings: ServerSettings) -> Iterator[str]:
    """A real uvicorn server on 127.0.0.1 in a thread of this process (no interpreter to
    start); yields its base URL, stops it afterwards."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start within 30 s"
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(timeout=30)
