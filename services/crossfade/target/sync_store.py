"""The sync worker's queries on the bookkeeping schema (:mod:`crossfade.target.store`), as
named functions: offsets (fencing, commit, snapshot floors), replay epochs, table stats, fences,
the ledger rows sync reads, and the columns sync added. Every function runs in the caller's
transaction (or autocommit) and raises psycopg's errors unchanged.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

TP = tuple[str, int]


# -- offsets ------------------------------------------------------------------------------------
def lock_offsets(
    conn: psycopg.Connection, schema: str, group_id: str, tps: list[TP]
) -> dict[TP, tuple[int, str | None]]:
    """Lock the offset rows of ``tps`` (``FOR UPDATE``) and return each one's (next offset,
    owner token); a partition without a row is missing from the result.

    One statement for all of them (a round trip per partition was, with four partitions per topic,
    twenty sequential round trips per batch on a busy target). The rows are locked in the order of
    ``sorted(tps)``, as :func:`~crossfade.target.store.claim_partitions` takes them: ``FOR
    UPDATE`` locks rows as they leave the sort, and ``COLLATE "C"`` orders topic names as Python
    does."""
    want = sorted(tps)
    if not want:
        return {}
    stmt = sql.SQL(
        "SELECT o.topic, o.partition, o.next_offset, o.owner FROM {}.offsets o "
        "JOIN unnest(%s::text[], %s::int[]) AS w(topic, partition) ON o.topic = w.topic AND o.partition = w.partition "
        'WHERE o.group_id = %s ORDER BY o.topic COLLATE "C", o.partition FOR UPDATE OF o'
    ).format(sql.Identifier(schema))
    rows = conn.execute(stmt, ([t for t, _ in want], [p for _, p in want], group_id)).fetchall()
    return {(t, p): (int(nxt), owner) for t, p, nxt, owner in rows}


def store_next_offsets(
    conn: psycopg.Connection, schema: str, group_id: str, offsets: dict[TP, int]
) -> None:
    """The next offset of each partition, in one statement."""
    if not offsets:
        return
    tps = list(offsets)
    conn.execute(
        sql.SQL(
            "UPDATE {}.offsets AS o SET next_offset = v.nxt, updated_at = now() "
            "FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS v(topic, partition, nxt) "
            "WHERE o.group_id = %s AND o.topic = v.topic AND o.partition = v.partition"
        ).format(sql.Identifier(schema)),
        ([t for t, _ in tps], [p for _, p in tps], [offsets[tp] for tp in tps], group_id),
    )


def raise_snapshot_floor(
    conn: psycopg.Connection, schema: str, group_id: str, tp: TP, floor: int
) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {}.offsets SET snapshot_floor = GREATEST(snapshot_floor, %s) "
            "WHERE group_id = %s AND topic = %s AND partition = %s"
        ).format(sql.Identifier(schema)),
        (floor, group_id, tp[0], tp[1]),
    )


# -- replay epochs ------------------------------------------------------------------------------
def open_replays(conn: psycopg.Connection, schema: str, group_id: str, epoch: str) -> dict[TP, int]:
    """Partitions of the group being replayed after a rewind -> the offset where it ends."""
    rows = conn.execute(
        sql.SQL(
            "SELECT topic, partition, max(until_offset) FROM {}.replay WHERE group_id = %s AND epoch = %s "
            "AND finished_at IS NULL GROUP BY topic, partition"
        ).format(sql.Identifier(schema)),
        (group_id, epoch),
    ).fetchall()
    return {(t, p): int(until) for t, p, until in rows}


def finish_replay(conn: psycopg.Connection, schema: str, group_id: str, tp: TP) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {}.replay SET finished_at = now() WHERE group_id=%s AND topic=%s AND partition=%s "
            "AND finished_at IS NULL"
        ).format(sql.Identifier(schema)),
        (group_id, tp[0], tp[1]),
    )


# -- table stats --------------------------------------------------------------------------------
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


# -- fences -------------------------------------------------------------------------------------
def record_fence(
    conn: psycopg.Connection, schema: str, token: str, tp: TP, lsn: int, source_ts_ms: int
) -> None:
    """Sync applied the fence marker ``token`` on partition ``tp`` (decision 4)."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.fences (token, topic, partition, lsn, source_ts) "
            "VALUES (%s,%s,%s,%s, to_timestamp(%s/1000.0)) ON CONFLICT DO NOTHING"
        ).format(sql.Identifier(schema)),
        (token, tp[0], tp[1], lsn, source_ts_ms),
    )


# -- ledger (what sync reads) -------------------------------------------------------------------
def decode_dead_letters(conn: psycopg.Connection, schema: str) -> list[tuple[str, Any, str]]:
    """Open dead letters of undecodable records whose key decoded: (table, key, entry)."""
    return conn.execute(
        sql.SQL(
            "SELECT source_table, source_key, entry FROM {}.ledger WHERE outcome = 'dead_letter' "
            "AND rule = 'decode' AND source_key IS NOT NULL"
        ).format(sql.Identifier(schema))
    ).fetchall()


def still_dead_letters(
    conn: psycopg.Connection, schema: str, entries: list[tuple[str, str]]
) -> set[str]:
    """Of these (table, entry) ledger rows, the entries still dead letters. The rows are
    share-locked until the transaction ends: a ``dlq replay`` resolving one either commits first
    or waits for the caller's transaction."""
    if not entries:
        return set()
    rows = conn.execute(
        sql.SQL(
            "SELECT l.entry, l.outcome FROM {}.ledger l JOIN unnest(%s::text[], %s::text[]) AS w(t, e) "
            "ON l.source_table = w.t AND l.entry = w.e FOR SHARE OF l"
        ).format(sql.Identifier(schema)),
        ([t for t, _ in entries], [e for _, e in entries]),
    ).fetchall()
    return {entry for entry, outcome in rows if outcome == "dead_letter"}


def deferred_rows(
    conn: psycopg.Connection,
    schema: str,
    tables: list[str],
    tps: list[TP],
    *,
    expired_only: bool = False,
) -> list[tuple[Any, ...]]:
    """Deferred rows of these tables and partitions, oldest first (at most 1000): (source
    table, entry, topic, partition, offset, key, value, headers, window over)."""
    return conn.execute(
        sql.SQL(
            'SELECT source_table, entry, topic, partition, "offset", key, value, headers, now() >= deadline '
            "FROM {}.ledger WHERE outcome = 'deferred' AND source_table = ANY(%s) "
            "AND (topic || '/' || partition) = ANY(%s) {} ORDER BY first_at LIMIT 1000"
        ).format(
            sql.Identifier(schema),
            sql.SQL("AND now() >= deadline" if expired_only else ""),
        ),
        (tables, [f"{t}/{p}" for t, p in tps]),
    ).fetchall()


# -- added columns ------------------------------------------------------------------------------
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


def dead_letters_for_replay(
    conn: psycopg.Connection, schema: str, rule: str | None = None, table: str | None = None
) -> list[tuple[Any, ...]]:
    """Open dead letters (of one rule, one table), locked for update, in position order per
    table: (source table, entry, topic, partition, offset, key, value, headers, source key,
    rule)."""
    cond = [sql.SQL("outcome = 'dead_letter'")]
    params: list[Any] = []
    if rule:
        cond.append(sql.SQL("rule = %s"))
        params.append(rule)
    if table:
        cond.append(sql.SQL("source_table = %s"))
        params.append(table)
    return conn.execute(
        sql.SQL(
            'SELECT source_table, entry, topic, partition, "offset", key, value, headers, source_key, rule '
            "FROM {}.ledger WHERE {} ORDER BY source_table, position FOR UPDATE"
        ).format(sql.Identifier(schema), sql.SQL(" AND ").join(cond)),
        params,
    ).fetchall()


def held_changes(
    conn: psycopg.Connection, schema: str, table: str, source_key: Any
) -> list[tuple[Any, ...]]:
    """Changes of a key held behind its dead letter, locked, in their order: (entry, topic,
    partition, offset, key, value, headers)."""
    return conn.execute(
        sql.SQL(
            'SELECT entry, topic, partition, "offset", key, value, headers FROM {}.ledger '
            "WHERE outcome = 'held' AND source_table = %s AND source_key = %s "
            'ORDER BY topic, partition, "offset" FOR UPDATE'
        ).format(sql.Identifier(schema)),
        (table, Jsonb(source_key)),
    ).fetchall()


def set_outcome(
    conn: psycopg.Connection, schema: str, table: str, entries: list[str], outcome: str
) -> None:
    """Mark ledger entries of ``table`` ``dropped`` or ``replayed`` (by ``dlq replay``)."""
    conn.execute(
        sql.SQL(
            "UPDATE {}.ledger SET outcome = %s, at = now() WHERE source_table = %s AND entry = ANY(%s)"
        ).format(sql.Identifier(schema)),
        (outcome, table, entries),
    )
