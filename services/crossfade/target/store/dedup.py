"""Deduplication's bookkeeping (``<bookkeeping>.dedup_members`` and ``crosswalk``, created by
sync's dedup sink): what the status and the console count of it."""

from __future__ import annotations

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
