"""Deduplication's bookkeeping (``<bookkeeping>.dedup_members`` and ``crosswalk``, created by
sync's dedup sink): what the status and the console count of it."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from crossfade.target.store.schema import has_table


def merged_members(conn: psycopg.Connection, schema: str) -> dict[str, int]:
    """Per deduplicated target table: live members that are merged into another's golden
    record (they have no row of their own)."""
    if not (has_table(conn, schema, "dedup_members") and has_table(conn, schema, "crosswalk")):
        return {}
    return {
        t: int(n)
        for t, n in conn.execute(
            sql.SQL(
                "SELECT m.target_table, count(*) FROM {s}.dedup_members m JOIN {s}.crosswalk c "
                "USING (target_table, member_key) WHERE NOT m.deleted AND c.survivor_key <> c.member_key "
                "GROUP BY 1"
            ).format(s=sql.Identifier(schema))
        ).fetchall()
    }


def member_positions(
    conn: psycopg.Connection, schema: str, table: str, member_keys: list[str]
) -> dict[str, tuple[int, list[str]]]:
    """Members of deduplicated ``table`` among ``member_keys``: key -> (position, block keys)."""
    return {
        r[0]: (int(r[1]), list(r[2] or []))
        for r in conn.execute(
            sql.SQL(
                "SELECT member_key, position, block_keys FROM {}.dedup_members WHERE target_table = %s "
                "AND member_key = ANY(%s)"
            ).format(sql.Identifier(schema)),
            (table, member_keys),
        ).fetchall()
    }


def write_members(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    upserts: list[tuple[Any, ...]],
    deletes: list[tuple[Any, ...]],
) -> None:
    """Upsert members of deduplicated ``table``: (member key, key, block keys, row, position)
    rows, and mark deleted ones: (member key, key, position) rows."""
    bk = sql.Identifier(schema)
    with conn.cursor() as cur:
        cur.executemany(
            sql.SQL(
                "INSERT INTO {}.dedup_members AS m (target_table, member_key, key, source_table, block_keys, row, position, deleted) "
                "VALUES (%s,%s,%s,NULL,%s,%s,%s,false) ON CONFLICT (target_table, member_key) DO UPDATE SET "
                "key = EXCLUDED.key, block_keys = EXCLUDED.block_keys, row = EXCLUDED.row, position = EXCLUDED.position, "
                "deleted = false"
            ).format(bk),
            [(table, *u) for u in upserts],
        )
        cur.executemany(
            sql.SQL(
                "INSERT INTO {}.dedup_members AS m (target_table, member_key, key, block_keys, row, position, deleted) "
                "VALUES (%s,%s,%s,'{{}}',NULL,%s,true) ON CONFLICT (target_table, member_key) DO UPDATE SET "
                "block_keys = '{{}}', row = NULL, position = EXCLUDED.position, deleted = true"
            ).format(bk),
            [(table, *d) for d in deletes],
        )
