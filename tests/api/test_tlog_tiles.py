"""The ledger as a C2SP tlog-tiles log, checked by an independent client.

``tlogclient`` (tests/api/tlogclient/main.go) uses only Go's golang.org/x/mod/sumdb/note and
sumdb/tlog (Debian's golang-golang-x-mod-dev, unchanged): it fetches the checkpoint and tiles
over HTTP from a real ``immutrail serve`` on 127.0.0.1, verifies the checkpoint's signature,
authenticates the tiles against its root, proves entries' inclusion and checks that every
entry bundle's bytes hash to the leaves. The ledger holds 70,000 entries: the spec's own example,
with full and partial tiles at levels 0 and 1 and a partial tile at level 2.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from artifacts.conftest import in_ci
from immutrail.api.settings import ServerSettings
from immutrail.api.tlog import Tile, TilePathError, parse_tile_path
from immutrail.ledger.event import Event
from immutrail.ledger.home import init_ledger, open_ledger

from .conftest import World, auth, uvicorn_thread

HERE = Path(__file__).resolve().parent
GOCODE = Path(os.environ.get("GOCODE", "/usr/share/gocode"))
SIZE = 70_000


@pytest.fixture(scope="module")
def tlogclient(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the Go client offline (GOPATH mode over the Debian x/mod source, as
    tests/interop does): no module download, no proxy."""
    reason = None
    if shutil.which("go") is None:
        reason = "`go` not found (apt-get install golang-go golang-golang-x-mod-dev)"
    elif not (GOCODE / "src/golang.org/x/mod/sumdb/tlog/tile.go").is_file():
        reason = f"x/mod source not under {GOCODE} (apt-get install golang-golang-x-mod-dev)"
    if reason is not None:
        if in_ci():
            pytest.fail(f"{reason} and CI=true", pytrace=False)
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("go")
    out = work / "tlogclient"
    env = {
        **os.environ,
        "GO111MODULE": "off",
        "GOPATH": f"{work / 'gopath'}:{GOCODE}",
        "GOCACHE": os.environ.get("TLOGCLIENT_GOCACHE", str(work / "cache")),
        "GOPROXY": "off",
        "GOSUMDB": "off",
        "GOFLAGS": "",
        "GOTOOLCHAIN": "local",
        "GOWORK": "off",
    }
    done = subprocess.run(
        ["go", "build", "-o", str(out), str(HERE / "tlogclient" / "main.go")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out


def run_client(binary: Path, url: str, vkey: str, *args: str) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        [str(binary), "-url", url, "-vkey", vkey, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    data = json.loads(done.stdout) if done.returncode == 0 else {}
    return done.returncode, data, done.stderr


@pytest.fixture(scope="module")
def big_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    home = tmp_path_factory.mktemp("tlog") / "home"
    ledger, _ = init_ledger(home)
    with ledger:
        for start in range(0, SIZE, 10_000):
            ledger.append_batch(
                [
                    Event.create("test.entry", "ci", f"item:{i}", {"n": i})
                    for i in range(start, min(start + 10_000, SIZE))
                ]
            )
        return home, ledger.vkey


def test_go_audits_a_public_log(tlogclient: Path, big_home: tuple[Path, str]) -> None:
    home, vkey = big_home
    with uvicorn_thread(ServerSettings(home, None, public_log=True)) as url:
        code, result, err = run_client(tlogclient, url + "/tlog", vkey, "-every", "97")
        other = init_ledger(home.parent / "other")[0]
        other.close()
        refused = run_client(tlogclient, url + "/tlog", other.vkey)
    assert code == 0, err
    assert result["size"] == SIZE and result["entries"] == SIZE
    assert result["proved"] == len(range(0, SIZE, 97)) + 1
    fetched = set(result["fetched"])
    # The spec's example: 273 full level-0 tiles and one of width 112, a full level-1 tile
    # and one of width 17, and a level-2 tile of width 1.
    assert {"tile/0/272", "tile/0/273.p/112", "tile/1/000", "tile/1/001.p/17"} <= fetched
    assert "tile/2/000.p/1" in fetched
    assert {"tile/entries/272", "tile/entries/273.p/112"} <= fetched
    # Another ledger's key: the checkpoint does not verify.
    assert refused[0] == 1 and "checkpoint signature" in refused[2]


def test_go_needs_a_token_for_entries_unless_public(tlogclient: Path, world: World) -> None:
    with open_ledger(world.home) as ledger:
        vkey = ledger.vkey
    with uvicorn_thread(ServerSettings(world.home, None)) as base:
        url = base + "/tlog"
        code, _, err = run_client(tlogclient, url, vkey)
        token = str(world.tokens["auditor"])
        with_token = run_client(tlogclient, url, vkey, "-token", token)
    assert code == 1 and "401" in err  # hash tiles verified; the first entry bundle refused
    code, result, err = with_token
    assert code == 0, err
    assert result["entries"] == result["size"] == result["proved"]


# --- the layout, in process ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "tile"),
    [
        ("0/000", Tile(0, 0, 256)),
        ("0/x001/x234/067", Tile(0, 1234067, 256)),
        ("1/001.p/17", Tile(1, 1, 17)),
        ("entries/273.p/112", Tile(-1, 273, 112)),
        ("63/x999/999", Tile(63, 999999, 256)),
    ],
)
def test_tile_paths(path: str, tile: Tile) -> None:
    assert parse_tile_path(path) == tile
    assert tile.path() == "tile/" + path


@pytest.mark.parametrize(
    "path",
    [
        "0/1",
        "0/0001",
        "0/x000/001",
        "0/001/x002",
        "01/000",
        "64/000",
        "0/000.p/256",
        "0/000.p/0",
        "0/000.p/07",
        "0/000.p",
        "x/000",
        "0/-01",
        "0",
    ],
)
def test_malformed_tile_paths(path: str) -> None:
    with pytest.raises(TilePathError):
        parse_tile_path(path)


def test_access_and_caching(client: TestClient, world: World) -> None:
    checkpoint = client.get("/tlog/checkpoint")
    assert checkpoint.status_code == 200
    assert checkpoint.headers["content-type"] == "text/plain; charset=utf-8"
    assert checkpoint.headers["cache-control"] == "public, max-age=2"
    size = int(checkpoint.text.split("\n")[1])
    width = size % 256
    tile = client.get(f"/tlog/tile/0/000.p/{width}")
    assert tile.status_code == 200 and len(tile.content) == 32 * width
    assert tile.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert tile.headers["content-type"] == "application/octet-stream"
    shorter = client.get("/tlog/tile/0/000.p/3")
    assert shorter.content == tile.content[: 3 * 32]  # a partial tile is a prefix, for good
    assert client.get("/tlog/tile/0/000").status_code == 404  # not full yet
    assert client.get("/tlog/tile/0/000.p/255").status_code == 404
    assert client.get("/tlog/tile/0/0000").status_code == 400
    entries = client.get(f"/tlog/tile/entries/000.p/{width}")
    assert entries.status_code == 401  # events name actors and digests: ledger.read
    token = world.tokens["builder"]
    entries = client.get(f"/tlog/tile/entries/000.p/{width}", headers=auth(token))
    assert entries.status_code == 200
    assert entries.headers["cache-control"] == "private, max-age=31536000, immutable"
