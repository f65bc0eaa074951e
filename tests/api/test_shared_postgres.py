"""Two API servers (two ``immutrail serve`` processes, each with its own home holding the same
ledger key) share one PostgreSQL ledger: concurrent appends through both form one gap-free
sequence, each event with its authenticated actor, and both serve the same tree, proofs,
checkpoints and tiles."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from access.conftest import ADMIN, add_principal, login
from immutrail.access import NewPrincipal, Role, bootstrap, create_token
from immutrail.ledger.home import CONFIG_FILE, KEY_FILE, init_ledger, open_ledger

from .conftest import Servers, auth

pytestmark = pytest.mark.postgres

THREADS = 4
PER_THREAD = 15


def test_two_servers_one_postgres_ledger(pg_db: str, tmp_path: Path, serve: Servers) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    init_ledger(first, pg_db)[0].close()
    second.mkdir(mode=0o700)
    for name in (KEY_FILE, CONFIG_FILE):
        shutil.copy2(first / name, second / name)
    now = datetime.now(UTC)
    with open_ledger(first) as ledger:
        bootstrap(first, ledger, NewPrincipal.check(ADMIN, "person", "Root"), passphrase=None)
        admin = login(first, ledger, ADMIN)
        tokens = {}
        for name in ("ci-a", "ci-b"):
            add_principal(first, ledger, admin, name, [Role.ADMIN], None, key=False)
            tokens[name] = create_token(
                ledger, admin, name, expires=now + timedelta(hours=1), now=now
            ).secret
        before = ledger.head().size
    servers = [serve.start(first), serve.start(second)]
    for server in servers:
        server.wait_ready()
    jobs: list[Callable[[], list[dict[str, object]]]] = []
    for server, name in zip(servers, tokens, strict=True):
        for thread in range(THREADS):

            def job(
                url: str = server.url, name: str = name, thread: int = thread
            ) -> list[dict[str, object]]:
                out = []
                with httpx.Client(base_url=url, headers=auth(tokens[name]), timeout=30) as http:
                    for i in range(PER_THREAD):
                        body = {"type": "load.appended", "subject": f"{name}/{thread}/{i}"}
                        response = http.post("/api/v1/ledger/entries", json=body)
                        assert response.status_code == 201, response.text
                        out.append(response.json())
                return out

            jobs.append(job)
    with ThreadPoolExecutor(len(jobs)) as pool:
        appended = [item for result in pool.map(lambda j: j(), jobs) for item in result]

    total = 2 * THREADS * PER_THREAD
    indices = sorted(int(str(a["index"])) for a in appended)
    assert indices == list(range(before, before + total))  # one sequence, no gap, no repeat
    for item in appended:
        event = item["event"]
        assert isinstance(event, dict)
        assert str(event["subject"]).startswith(str(event["actor"]) + "/")

    checkpoints = []
    for server in servers:
        with httpx.Client(base_url=server.url, headers=auth(tokens["ci-a"])) as http:
            checkpoint = http.get("/api/v1/ledger/checkpoint").json()
            proof = http.get(f"/api/v1/ledger/entries/{before + 7}/inclusion").json()
            page = http.get(f"/api/v1/ledger/entries?start={before}&limit=1000").json()
            note = http.get("/tlog/checkpoint").text
            tile = http.get(f"/tlog/tile/0/000.p/{(before + total) % 256}").content
        checkpoints.append((checkpoint["size"], checkpoint["root"], proof, page["entries"], tile))
        assert checkpoint["size"] == before + total
        assert note == checkpoint["note"]
    assert checkpoints[0] == checkpoints[1]
    with open_ledger(first) as ledger:
        assert ledger.verify().ok
