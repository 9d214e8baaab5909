"""Tombstones and watermarks (``<bookkeeping>.tombstones``, ``watermarks``): the source position
of a key's delete, so a replayed older insert cannot resurrect the row, and per table the position
below which every event is void (DESIGN decision 2)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from crossfade.catalog import POS_COLUMN, uncut


def raise_watermark(
    conn: psycopg.Connection, schema: str, table: str, position: int, reason: str
) -> None:
    """Events of ``table`` below ``position`` are void from now on (a watermark only rises)."""
    bk = sql.Identifier(schema)
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.watermarks (tbl, lsn, reason) VALUES (%s, %s, %s) "
            "ON CONFLICT (tbl) DO UPDATE SET lsn = GREATEST({}.watermarks.lsn, EXCLUDED.lsn), "
            "reason = EXCLUDED.reason, updated_at = now()"
        ).format(bk, bk),
        (table, position, reason),
    )


def clear_tombstones(conn: psycopg.Connection, schema: str, table: str) -> None:
    """Forget ``table``'s tombstones (its watermark, raised with them, voids what they guarded)."""
    conn.execute(
        sql.SQL("DELETE FROM {}.tombstones WHERE tbl = %s").format(sql.Identifier(schema)),
        (table,),
    )


def delete_leaving_tombstones(
    conn: psycopg.Connection,
    schema: str,
    target_table: str,
    key_columns: Sequence[tuple[str, str]],
    tombstone_table: str,
    keys: Sequence[Sequence[Any]],
    below: int,
) -> int:
    """Delete each key's row from ``target_table`` (``schema.name``; ``key_columns``: (column,
    type) of its key) if its position is below ``below`` (or unknown), leaving a tombstone at the
    deleted row's position under ``tombstone_table`` and the key as a JSON list, so an older
    change of it cannot bring the row back. One transaction; returns the rows deleted."""
    t_schema, name = target_table.split(".", 1)
    cond = sql.SQL(" AND ").join(
        sql.SQL("{} = CAST(%s AS {})").format(sql.Identifier(c), sql.SQL(uncut(t)))
        for c, t in key_columns
    )
    q = sql.SQL(
        "WITH d AS (DELETE FROM {s}.{t} WHERE {cond} AND ({pos} IS NULL OR {pos} < %s) RETURNING {pos}), "
        "tomb AS (INSERT INTO {bk}.tombstones (tbl, key, lsn) SELECT %s, %s, {pos} FROM d WHERE {pos} IS NOT NULL "
        "ON CONFLICT (tbl, key) DO UPDATE SET lsn = GREATEST({bk}.tombstones.lsn, EXCLUDED.lsn)) "
        "SELECT count(*) FROM d"
    ).format(
        s=sql.Identifier(t_schema),
        t=sql.Identifier(name),
        cond=cond,
        pos=sql.Identifier(POS_COLUMN),
        bk=sql.Identifier(schema),
    )
    deleted = 0
    with conn.transaction():
        for k in keys:
            row = conn.execute(q, [*k, below, tombstone_table, json.dumps(list(k))]).fetchone()
            deleted += int(row[0]) if row else 0
    return deleted
