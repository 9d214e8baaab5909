"""Key/value facts about the target (``<bookkeeping>.meta``): the schema version, the mapping
sync runs with and when it changed, and when each broker epoch's COPY initial load ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from crossfade.target.store.schema import ensure_schema, has_table


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


@dataclass(frozen=True, slots=True)
class CopyLoadMark:
    """A broker epoch's initial COPY load as the target records it."""

    epoch: str
    done_at: datetime | None
    """The target's clock when every copied row was committed; None: started, not ended."""


def _copy_load_key(epoch: str) -> str:
    return f"copy_load:{epoch}"


def note_copy_load(conn: psycopg.Connection, schema: str, epoch: str, *, done: bool) -> None:
    """Record the COPY load of ``epoch`` as started (``done`` False) or ended now (the target's
    ``clock_timestamp()``, the clock checkpoints are stamped with). A load started again in the
    same epoch (a crash, a new ``capture.state_dir``) overwrites the mark."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.meta (key, value) VALUES (%s, CASE WHEN %s THEN clock_timestamp()::text "
            "ELSE 'loading' END) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        ).format(sql.Identifier(schema)),
        (_copy_load_key(epoch), done),
    )


def copy_load_mark(conn: psycopg.Connection, schema: str, epoch: str) -> CopyLoadMark | None:
    """The COPY load of ``epoch``, or None when that epoch was not loaded by COPY."""
    if not has_table(conn, schema, "meta"):
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT CASE WHEN value = 'loading' THEN NULL ELSE value::timestamptz END "
            "FROM {}.meta WHERE key = %s"
        ).format(sql.Identifier(schema)),
        (_copy_load_key(epoch),),
    ).fetchone()
    return None if row is None else CopyLoadMark(epoch, row[0])


def note_copy_load_slot(conn: psycopg.Connection, schema: str, epoch: str, lsn: int) -> None:
    """Record the LSN at which the COPY load of ``epoch`` created its replication slot: a fence
    row written before it was never streamed by that slot (:func:`copy_load_hides_fence`)."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        ).format(sql.Identifier(schema)),
        (f"copy_load_slot:{epoch}", str(lsn)),
    )


def copy_load_hides_fence(conn: psycopg.Connection, schema: str, fence_lsn: int) -> bool:
    """Whether the replication slot's position says nothing about a fence row at ``fence_lsn``:
    a COPY load is under way (its slot may be new, already past the row it never streamed, while
    the copied rows are not all committed), or one created its slot after the row was written."""
    if not has_table(conn, schema, "meta"):
        return False
    row = conn.execute(
        sql.SQL(
            "SELECT bool_or(CASE WHEN key LIKE 'copy_load:%%' THEN value = 'loading' "
            "WHEN key LIKE 'copy_load_slot:%%' THEN value::numeric > %s ELSE false END) "
            "FROM {}.meta"
        ).format(sql.Identifier(schema)),
        (fence_lsn,),
    ).fetchone()
    return bool(row and row[0])


SNAPSHOT_DONE_KEY = "snapshot_done"
"""Key in ``<bookkeeping>.meta``: when capture last completed a snapshot of its source into this
bookkeeping's target (fallback: a snapshot of the new database into legacy)."""


def note_snapshot_done(conn: psycopg.Connection, schema: str) -> None:
    """Record that a snapshot completed now (the target's ``clock_timestamp()``); a later one
    overwrites the mark. Creates the bookkeeping tables when missing."""
    ensure_schema(conn, schema)
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.meta (key, value) VALUES (%s, clock_timestamp()::text) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
        ).format(sql.Identifier(schema)),
        (SNAPSHOT_DONE_KEY,),
    )


def snapshot_done(conn: psycopg.Connection, schema: str) -> tuple[datetime, float] | None:
    """When a snapshot last completed and its age in seconds (the target's clock), or None when
    none is recorded."""
    if not has_table(conn, schema, "meta"):
        return None
    row = conn.execute(
        sql.SQL(
            "SELECT value::timestamptz, extract(epoch FROM clock_timestamp() - value::timestamptz) "
            "FROM {}.meta WHERE key = %s"
        ).format(sql.Identifier(schema)),
        (SNAPSHOT_DONE_KEY,),
    ).fetchone()
    return None if row is None else (row[0], float(row[1]))
