"""Shared fixtures: a real PostgreSQL server for tests marked ``postgres``.

``make test`` runs pytest under ``scripts/with-postgres.sh``, which starts a
throw-away server and exports ``IMMUTRAIL_TEST_PG_URL``. Without it the
PostgreSQL tests skip, except under ``CI=true`` where they fail: CI must not
pass by skipping a required service.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from urllib.parse import urlsplit, urlunsplit

import pytest

PG_URL_ENV = "IMMUTRAIL_TEST_PG_URL"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the test server's maintenance database (``immutrail_test``)."""
    url = os.environ.get(PG_URL_ENV)
    if url:
        return url
    if _in_ci():
        pytest.fail(f"PostgreSQL not available: {PG_URL_ENV} is unset and CI=true", pytrace=False)
    pytest.skip(f"PostgreSQL not available ({PG_URL_ENV} unset; run via `make test`)")


@pytest.fixture(scope="session")
def pg_new_database(pg_url: str) -> Callable[[], AbstractContextManager[str]]:
    """``with pg_new_database() as url:`` a fresh, empty database, dropped on exit.

    For tests that need more than one database; most tests want ``pg_db``.
    """
    import psycopg
    from psycopg import sql

    @contextmanager
    def new_database() -> Iterator[str]:
        name = f"immutrail_t_{uuid.uuid4().hex[:16]}"
        ident = sql.Identifier(name)
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        try:
            yield urlunsplit(urlsplit(pg_url)._replace(path=f"/{name}"))
        finally:
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))

    return new_database


@pytest.fixture
def pg_db(pg_new_database: Callable[[], AbstractContextManager[str]]) -> Iterator[str]:
    """URL of a fresh, empty database for this test; dropped afterwards."""
    with pg_new_database() as url:
        yield url
