"""Key/value facts about the target (``<bookkeeping>.meta``): the schema version, the mapping
sync runs with and when it changed.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from crossfade.target.store.schema import has_table


def mapping_fingerprint(mapping: Any) -> str:
    """A short hash of the mapping as loaded (None: every table identity-mapped)."""
    import hashlib

    text = "identity" if mapping is None else mapping.model_dump_json()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def note_mapping(conn: psycopg.Connection, schema: str, mapping_hash: str) -> None:
    """Record the mapping sync runs with; a different one than before marks when it changed (a
    verify older than that no longer says anything about the target)."""
    s = sql.Identifier(schema)
    with conn.transaction():
        row = conn.execute(
            sql.SQL("SELECT value FROM {}.meta WHERE key = 'mapping_hash' FOR UPDATE").format(s)
        ).fetchone()
        if row is not None and row[0] == mapping_hash:
            return
        for key, value in (("mapping_hash", mapping_hash), ("mapping_changed_at", None)):
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.meta (key, value) VALUES (%s, coalesce(%s, clock_timestamp()::text)) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ).format(s),
                (key, value),
            )


def meta(conn: psycopg.Connection, schema: str) -> dict[str, str]:
    if not has_table(conn, schema, "meta"):
        return {}
    return dict(
        conn.execute(sql.SQL("SELECT key, value FROM {}.meta").format(sql.Identifier(schema)))
    )
