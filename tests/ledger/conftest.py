"""Ledger fixtures: one ledger per test, on SQLite and (marked postgres) on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from artifacts.conftest import in_ci
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


@pytest.fixture(scope="session")
def native_hashing() -> ModuleType:
    """The C loops (``immutrail.ledger._native``). Without them the test skips, except under
    ``CI=true`` where it fails: CI builds the extension (``IMMUTRAIL_REQUIRE_NATIVE=1``)."""
    from immutrail.ledger import hashing

    if hashing._native is None:
        if in_ci():
            pytest.fail("the C extension immutrail.ledger._native is not built", pytrace=False)
        pytest.skip("the C extension immutrail.ledger._native is not built (no C compiler?)")
    return hashing._native
