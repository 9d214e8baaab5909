"""Consumer offsets (``<bookkeeping>.offsets``): per consumer group and partition the next
offset to consume, its broker epoch and the owner token that may advance it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from crossfade.target.store.schema import has_table


@dataclass(frozen=True, slots=True)
class StoredOffset:
    topic: str
    partition: int
    next_offset: int
    epoch: str
    owner: str | None
    snapshot_floor: int = 0
    """The LSN of the newest snapshot sync applied on this partition (records without
    crossfade's position header, from Kafka Connect, are positioned above it)."""
    updated_at: datetime | None = None
    """When it last moved or was claimed (set when read by :func:`stored_offsets`)."""


def claim_partitions(
    conn: psycopg.Connection,
    schema: str,
    group_id: str,
    tps: list[tuple[str, int]],
    epoch: str,
    owner: str,
) -> dict[tuple[str, int], StoredOffset]:
    """Take ownership of partitions for this assignment and return where to resume.

    A partition stored under another epoch (the broker lost its log) restarts at offset 0 of the
    new epoch. Taking ownership waits for a batch of the previous owner still committing (row
    lock), and afterwards that owner's batches are refused.
    """
    s = sql.Identifier(schema)
    out: dict[tuple[str, int], StoredOffset] = {}
    with conn.transaction():
        for topic, partition in sorted(tps):
            row = conn.execute(
                sql.SQL(
                    "SELECT next_offset, epoch, snapshot_floor FROM {}.offsets "
                    "WHERE group_id=%s AND topic=%s AND partition=%s FOR UPDATE"
                ).format(s),
                (group_id, topic, partition),
            ).fetchone()
            floor = 0
            if row is None or row[1] != epoch:
                nxt = 0
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.offsets (group_id, topic, partition, next_offset, epoch, owner) "
                        "VALUES (%s,%s,%s,0,%s,%s) ON CONFLICT (group_id, topic, partition) DO UPDATE "
                        "SET next_offset=0, epoch=EXCLUDED.epoch, owner=EXCLUDED.owner, "
                        "snapshot_floor=0, updated_at=now()"
                    ).format(s),
                    (group_id, topic, partition, epoch, owner),
                )
            else:
                nxt, floor = int(row[0]), int(row[2])
                conn.execute(
                    sql.SQL(
                        "UPDATE {}.offsets SET owner=%s, updated_at=now() WHERE group_id=%s AND topic=%s AND partition=%s"
                    ).format(s),
                    (owner, group_id, topic, partition),
                )
            out[(topic, partition)] = StoredOffset(topic, partition, nxt, epoch, owner, floor)
    return out


def stored_offsets(
    conn: psycopg.Connection, schema: str, group_id: str, *, lock: bool = False
) -> list[StoredOffset]:
    """The group's stored offsets, by topic and partition; empty when sync never ran (no table).
    ``lock``: rows locked ``FOR UPDATE`` until the caller's transaction ends (a rewind)."""
    if not has_table(conn, schema, "offsets"):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT topic, partition, next_offset, epoch, owner, snapshot_floor, updated_at "
            "FROM {}.offsets WHERE group_id=%s ORDER BY topic, partition"
            + (" FOR UPDATE" if lock else "")
        ).format(sql.Identifier(schema)),
        (group_id,),
    ).fetchall()
    return [StoredOffset(r[0], r[1], r[2], r[3], r[4], int(r[5]), r[6]) for r in rows]


def rewind_offset(
    conn: psycopg.Connection,
    schema: str,
    group_id: str,
    topic: str,
    partition: int,
    next_offset: int,
) -> None:
    """Move a partition's stored offset to ``next_offset`` and clear its owner token (a worker
    that still believes it owns the partition is refused at its next commit)."""
    conn.execute(
        sql.SQL(
            "UPDATE {}.offsets SET next_offset = %s, owner = NULL, updated_at = now() "
            "WHERE group_id = %s AND topic = %s AND partition = %s"
        ).format(sql.Identifier(schema)),
        (next_offset, group_id, topic, partition),
    )


def claimed_count(conn: psycopg.Connection, schema: str, group_id: str) -> int:
    """How many partitions the group has stored offsets for (0 when sync never ran)."""
    if not has_table(conn, schema, "offsets"):
        return 0
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}.offsets WHERE group_id = %s").format(
            sql.Identifier(schema)
        ),
        (group_id,),
    ).fetchone()
    return int(row[0]) if row else 0


def lock_offsets(
    conn: psycopg.Connection, schema: str, group_id: str, tps: list[tuple[str, int]]
) -> dict[tuple[str, int], tuple[int, str | None]]:
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
    conn: psycopg.Connection, schema: str, group_id: str, offsets: dict[tuple[str, int], int]
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
    conn: psycopg.Connection, schema: str, group_id: str, tp: tuple[str, int], floor: int
) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {}.offsets SET snapshot_floor = GREATEST(snapshot_floor, %s) "
            "WHERE group_id = %s AND topic = %s AND partition = %s"
        ).format(sql.Identifier(schema)),
        (floor, group_id, tp[0], tp[1]),
    )


def offsets_age(
    conn: psycopg.Connection, schema: str, group_id: str, topics: list[str]
) -> list[tuple[str, int, int, float]]:
    """The group's stored offsets of these topics: (topic, partition, next offset, seconds since
    the row was last advanced), read on the watch's own connection."""
    return [
        (t, int(p), int(n), float(age))
        for t, p, n, age in conn.execute(
            sql.SQL(
                "SELECT topic, partition, next_offset, "
                "extract(epoch FROM clock_timestamp() - updated_at)::float8 "
                "FROM {}.offsets WHERE group_id = %s AND topic = ANY(%s)"
            ).format(sql.Identifier(schema)),
            (group_id, topics),
        ).fetchall()
    ]
