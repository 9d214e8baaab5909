"""Fixtures of the unit tests that check their SQL against a real PostgreSQL."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def dsn(request: pytest.FixtureRequest) -> str:
    """A real PostgreSQL: ``CROSSFADE_TEST_PG_DSN``, else the session's embedded server
    (tests/conftest.py's ``pg_server``, started only when a test asks for it)."""
    return os.environ.get("CROSSFADE_TEST_PG_DSN") or request.getfixturevalue("pg_server").dsn()
