"""End-of-snapshot sweeps (``<bookkeeping>.sweeps``): which partitions of a table's topic sync has
passed the sweep marker of a snapshot on, so the sweep applies once, when all have.

Capture sends the marker to every partition after that partition's snapshot rows. A partition's
marker alone proves nothing about the others: rows of the snapshot may still be on their way
there, and the sweep would delete them from the target (with the side-table guard of fallback,
legacy rows the reverse sync has not rewritten yet have no position at all). Only when every
partition has passed the marker has every row of the snapshot been applied.
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg import sql


def sweep_passed(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    lsn: int,
    tp: tuple[str, int],
    partitions: int,
    group_id: str,
) -> tuple[int, int]:
    """Record that sync passed the sweep marker of ``table``'s snapshot at ``lsn`` on partition
    ``tp``; return (partitions passed, partitions needed). The sweep may apply when the first
    reaches the second.

    ``partitions``: the marker's count of the topic's partitions; when it has none (a marker of
    an older capture), the partitions of the topic this consumer group has claimed. Takes a
    transaction-level lock per table, so two workers passing the last markers at once see each
    other's (the second waits for the first to commit). A marker passed again (a rewind's
    replay) counts once."""
    bk = sql.Identifier(schema)
    conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"crossfade.sweep {schema} {table}",)
    )
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.sweeps (tbl, lsn, topic, partition) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT DO NOTHING"
        ).format(bk),
        (table, lsn, tp[0], tp[1]),
    )
    row = conn.execute(
        sql.SQL(
            "SELECT (SELECT count(*) FROM {0}.sweeps WHERE tbl = %s AND lsn = %s AND topic = %s), "
            "(SELECT count(*) FROM {0}.offsets WHERE group_id = %s AND topic = %s)"
        ).format(bk),
        (table, lsn, tp[0], group_id, tp[0]),
    ).fetchone()
    assert row is not None
    return int(row[0]), partitions or max(int(row[1]), 1)


def snapshot_states(
    conn: psycopg.Connection, schema: str, group_id: str, topics: Mapping[str, str]
) -> dict[str, tuple[bool, int]]:
    """For each table of ``topics`` (table -> its topic), as every worker of ``group_id`` sees
    it: whether its snapshot finished in sync (every partition of the topic the group claimed,
    at least one, passed the sweep marker of one snapshot: the count :func:`sweep_passed` falls
    back on) and the group's stored next offsets on the topic summed (its progress)."""
    if not topics:
        return {}
    tables, names = list(topics), [topics[t] for t in topics]
    rows = conn.execute(
        sql.SQL(
            "WITH o AS (SELECT topic, count(*) AS n, sum(next_offset) AS s FROM {0}.offsets "
            "WHERE group_id = %s AND topic = ANY(%s) GROUP BY topic), "
            "w AS (SELECT tbl, topic, count(*) AS n FROM {0}.sweeps WHERE tbl = ANY(%s) "
            "GROUP BY tbl, topic, lsn) "
            "SELECT t.tbl, coalesce(o.s, 0)::bigint, EXISTS (SELECT 1 FROM w WHERE w.tbl = t.tbl "
            "AND w.topic = t.topic AND w.n >= greatest(coalesce(o.n, 0), 1)) "
            "FROM unnest(%s::text[], %s::text[]) AS t(tbl, topic) LEFT JOIN o USING (topic)"
        ).format(sql.Identifier(schema)),
        (group_id, names, tables, tables, names),
    ).fetchall()
    return {r[0]: (bool(r[2]), int(r[1])) for r in rows}
