"""Fixtures of the unit tests that check their SQL against a real PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import psycopg
import pytest

from crossfade.target.store import ensure_schema


@pytest.fixture(scope="module")
def dsn(request: pytest.FixtureRequest) -> str:
    """A real PostgreSQL: ``CROSSFADE_TEST_PG_DSN``, else the session's embedded server
    (tests/conftest.py's ``pg_server``, started only when a test asks for it)."""
    return os.environ.get("CROSSFADE_TEST_PG_DSN") or request.getfixturevalue("pg_server").dsn()


@pytest.fixture
def fresh_bookkeeping(dsn: str) -> Iterator[Callable[..., str]]:
    """``fresh_bookkeeping(*schemas)``: those bookkeeping schemas made from scratch on ``dsn``
    (which it returns), dropped again after the test."""
    made: list[str] = []

    def make(*schemas: str) -> str:
        with psycopg.connect(dsn, autocommit=True) as c:
            for s in schemas:
                c.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
                ensure_schema(c, s)
                made.append(s)
        return dsn

    yield make
    with psycopg.connect(dsn, autocommit=True) as c:
        for s in made:
            c.execute(f"DROP SCHEMA IF EXISTS {s} CASCADE")
