"""Shared by the signing tests: a home with a built image, keys for people, store/ledger access."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.artifacts.conftest import commit_all, write_files

from immutrail.artifacts.builder import build
from immutrail.artifacts.store import Store
from immutrail.keys.keystore import SigningKey, generate_key, load_signing_key
from immutrail.keys.passphrase import PassphraseSource
from immutrail.ledger.home import open_ledger
from immutrail.ledger.ledger import Ledger

NO_SECRET = PassphraseSource()


@dataclass
class World:
    home: Path
    repo: Path
    store: Store
    ledger: Ledger

    def key(self, principal: str, *, purpose: str = "signing") -> SigningKey:
        made = generate_key(
            self.home, self.ledger, principal, actor="user:ops", purpose=purpose, passphrase=None
        )
        return load_signing_key(self.home, self.ledger, passphrase=NO_SECRET, keyid=made.info.keyid)

    def build(self, tag: str, change: str | None = None) -> str:
        if change is not None:
            write_files(self.repo, {"app/changed.txt": change})
            commit_all(self.repo, change)
        return build(self.repo / "image.yaml", self.home, tag=tag).digest

    def envelope_of(self, manifest: str) -> dict[str, Any]:
        layer = self.store.get_manifest(manifest)["layers"][0]["digest"]
        value: dict[str, Any] = json.loads(self.store.read_blob(layer))
        return value


@contextmanager
def world(home: Path, repo: Path) -> Iterator[World]:
    ledger = open_ledger(home)
    try:
        yield World(home, repo, Store.for_home(home, create=True), ledger)
    finally:
        ledger.close()


def statement_of(envelope: dict[str, Any]) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return value


def with_statement(envelope: dict[str, Any], statement: dict[str, Any]) -> dict[str, Any]:
    """The envelope with its payload replaced and its signatures kept: a forgery."""
    payload = base64.b64encode(json.dumps(statement).encode()).decode()
    return {**envelope, "payload": payload}
