"""Columns sync added to identity-mapped targets mid-stream (``<bookkeeping>.added_columns``):
when each first appeared at the source, and the value rows held before it.
"""

from __future__ import annotations

import psycopg
from psycopg import sql


def added_columns(
    conn: psycopg.Connection, schema: str, table: str
) -> dict[str, tuple[int, str | None]]:
    """Columns sync added to ``table`` mid-stream: name -> (position first seen, fill text)."""
    return {
        col: (int(since), fill)
        for col, since, fill in conn.execute(
            sql.SQL("SELECT col, since, fill FROM {}.added_columns WHERE tbl = %s").format(
                sql.Identifier(schema)
            ),
            (table,),
        ).fetchall()
    }


def note_added_column(
    conn: psycopg.Connection, schema: str, table: str, col: str, since: int, fill: str | None
) -> None:
    conn.execute(
        sql.SQL(
            "INSERT INTO {0}.added_columns (tbl, col, since, fill) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (tbl, col) DO UPDATE SET since = LEAST({0}.added_columns.since, EXCLUDED.since)"
        ).format(sql.Identifier(schema)),
        (table, col, since, fill),
    )
