"""Per table and partition what sync applied (``<bookkeeping>.table_stats``), summed per table:
what ``crossfade status`` and the console show of it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from crossfade.target.store.schema import has_table


@dataclass(frozen=True)
class TableStats:
    """One table's events over all its partitions."""

    table: str
    applied: int
    skipped: int
    dead_lettered: int
    last_lsn: int | None
    last_source_ts: datetime | None
    """The newest source commit applied."""
    last_applied_at: datetime | None
    lag_at_last_apply_s: float | None
    """How long after its commit in the legacy database the newest change was applied."""


def table_stats(conn: psycopg.Connection, schema: str) -> dict[str, TableStats]:
    """Per source table its summed stats (empty when sync never ran: no table)."""
    if not has_table(conn, schema, "table_stats"):
        return {}
    rows = conn.execute(
        sql.SQL(
            "SELECT tbl, sum(applied), sum(skipped), sum(dead_lettered), max(last_lsn), "
            "max(last_source_ts), max(last_applied_at), "
            "EXTRACT(EPOCH FROM max(last_applied_at - last_source_ts) FILTER (WHERE last_source_ts "
            "= (SELECT max(x.last_source_ts) FROM {bk}.table_stats x WHERE x.tbl = ts.tbl)))::float8 "
            "FROM {bk}.table_stats ts GROUP BY tbl"
        ).format(bk=sql.Identifier(schema))
    ).fetchall()
    return {
        r[0]: TableStats(
            r[0],
            int(r[1] or 0),
            int(r[2] or 0),
            int(r[3] or 0),
            int(r[4]) if r[4] is not None else None,
            r[5],
            r[6],
            r[7],
        )
        for r in rows
    }


def add_table_stats(conn: psycopg.Connection, schema: str, rows: list[tuple[Any, ...]]) -> None:
    """Add to each (table, topic, partition)'s counters: rows of (table, topic, partition,
    applied, skipped, dead-lettered, last LSN or None, last source ts in ms or 0)."""
    if not rows:
        return
    cols = list(map(list, zip(*rows, strict=True)))
    conn.execute(
        sql.SQL(
            "INSERT INTO {s}.table_stats AS ts (tbl, topic, partition, applied, skipped, dead_lettered, last_lsn, last_source_ts, last_applied_at) "
            "SELECT tbl, topic, partition, applied, skipped, dead, lsn, CASE WHEN src_ms > 0 THEN to_timestamp(src_ms / 1000.0) END, now() "
            "FROM unnest(%s::text[], %s::text[], %s::int[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[]) "
            "AS v(tbl, topic, partition, applied, skipped, dead, lsn, src_ms) "
            "ON CONFLICT (tbl, topic, partition) DO UPDATE SET applied = ts.applied + EXCLUDED.applied, "
            "skipped = ts.skipped + EXCLUDED.skipped, dead_lettered = ts.dead_lettered + EXCLUDED.dead_lettered, "
            "last_lsn = GREATEST(ts.last_lsn, EXCLUDED.last_lsn), "
            "last_source_ts = GREATEST(ts.last_source_ts, EXCLUDED.last_source_ts), last_applied_at = now()"
        ).format(s=sql.Identifier(schema)),
        cols,
    )
