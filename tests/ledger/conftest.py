"""Ledger fixtures: one ledger per test, on SQLite and (marked postgres) on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from immutrail.ledger.home import init_ledger
from immutrail.ledger.ledger import Ledger


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ledger database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    url: str = request.getfixturevalue("pg_db")
    return url


@pytest.fixture
def ledger(tmp_path: Path, db_url: str) -> Iterator[Ledger]:
    led, created = init_ledger(tmp_path / "home", db_url, origin="test.immutrail.local/ledger")
    assert created
    yield led
    led.close()
