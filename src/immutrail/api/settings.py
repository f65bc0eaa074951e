"""What one API server serves: a home folder and its ledger database, shared by the API and UI."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from immutrail.artifacts.store import STORE_DIR, Store
from immutrail.ledger.home import open_ledger
from immutrail.ledger.ledger import Ledger


@dataclass(frozen=True)
class ServerSettings:
    home: Path
    db: str | None
    """None: the database given at init (SQLite in the home by default)."""
    public_log: bool = False
    """Serve the tlog-tiles entry bundles without a token (hash tiles and the checkpoint are
    always public: they reveal hashes only)."""

    @contextmanager
    def ledger(self) -> Iterator[Ledger]:
        """The ledger for one request: opened per request, so several servers can share it."""
        with open_ledger(self.home, self.db) as ledger:
            yield ledger

    def store(self) -> Store | None:
        """The home's image store; None before the first image was built or pulled."""
        if not (self.home / STORE_DIR / "oci-layout").exists():
            return None
        return Store.for_home(self.home)


def settings_of(app: FastAPI) -> ServerSettings:
    settings = app.state.settings
    assert isinstance(settings, ServerSettings)
    return settings
