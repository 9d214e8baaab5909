"""Origin tagging: what sync writes must not come back the other way (forward <-> fallback).

Every sync session on its target database takes a PostgreSQL *replication origin* named
``crossfade_<n>`` (``pg_replication_origin_session_setup``): each transaction it commits is then
stamped with that origin in the WAL. pgoutput sends the origin with the transaction (PostgreSQL
15 does not filter it; the ``origin 'none'`` option of PostgreSQL 16 is not needed), Debezium puts
its name in every change event's ``source.origin``, and capture drops events whose origin starts
with :data:`ORIGIN_PREFIX` (:mod:`crossfade.capture.service`). So a row the forward sync wrote
into the new database is not captured by the reverse capture, and the reverse sync's writes into
the legacy database are not captured by the forward capture: the two directions never echo.

PostgreSQL 15 lets one origin be active in one session at a time, and the origins a cluster can
track are bounded by ``max_replication_slots``: sessions share a small pool of names
(``crossfade_0`` .. ``crossfade_<POOL-1>``) and take the first one free. The names carry no
direction: any crossfade origin means "written by crossfade".
"""

from __future__ import annotations

import logging

import psycopg

from crossfade.errors import PreflightError
from crossfade.events.model import ORIGIN_PREFIX

log = logging.getLogger(__name__)

POOL = 8

_PRIVILEGE_SQL = """
SELECT r.rolsuper
    OR (has_function_privilege('pg_replication_origin_session_setup(text)', 'execute')
        AND has_function_privilege('pg_replication_origin_create(text)', 'execute'))
FROM pg_roles r WHERE r.rolname = current_user
"""


def can_tag(conn: psycopg.Connection) -> bool:
    """Whether this session's user may take a replication origin."""
    row = conn.execute(_PRIVILEGE_SQL).fetchone()
    return bool(row and row[0])


def tag_session(conn: psycopg.Connection) -> str:
    """Take the first free crossfade origin for this (autocommit) session; return its name.

    Raises :class:`PreflightError` when the user lacks the privilege or every origin of the pool
    is taken by another session.
    """
    if not can_tag(conn):
        raise PreflightError(
            "the sync user may not set a replication origin, so its writes cannot be told apart from the application's",
            "use a superuser, or GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), "
            "pg_replication_origin_session_setup(text) TO <sync user>",
        )
    for n in range(POOL):
        name = f"{ORIGIN_PREFIX}{n}"
        try:
            with conn.transaction():
                if conn.execute("SELECT pg_replication_origin_oid(%s)", (name,)).fetchone() == (
                    None,
                ):
                    conn.execute("SELECT pg_replication_origin_create(%s)", (name,))
        except psycopg.errors.UniqueViolation:
            pass  # another session created it meanwhile
        try:
            conn.execute("SELECT pg_replication_origin_session_setup(%s)", (name,))
        except psycopg.errors.ObjectInUse:
            continue
        return name
    raise PreflightError(
        f"all {POOL} crossfade replication origins are in use by other sessions",
        "stop stray sync workers (or raise max_replication_slots and crossfade.sync.origin.POOL)",
    )
