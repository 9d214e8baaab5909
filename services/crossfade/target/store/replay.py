"""Replay epochs of a rewind (``<bookkeeping>.replay``): per consumer group and partition the
offsets a rewind sends sync back over (``from_offset`` .. ``until_offset``), finished when sync
has passed ``until_offset`` (DESIGN decision 5)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from crossfade.target.store.schema import has_table


@dataclass(frozen=True)
class Replay:
    """One partition's range a rewind asks sync to re-apply."""

    group_id: str
    topic: str
    partition: int
    replay_id: str
    epoch: str | None
    checkpoint: str
    from_offset: int
    until_offset: int
    created_by: str | None


def pending_replays(
    conn: psycopg.Connection, schema: str, group_id: str, epoch: str | None
) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the furthest ``until_offset`` of the group's unfinished replays of
    ``epoch`` (a rewind during a replay keeps the furthest end)."""
    return {
        (r[0], r[1]): int(r[2])
        for r in conn.execute(
            sql.SQL(
                "SELECT topic, partition, max(until_offset) FROM {}.replay WHERE group_id = %s "
                "AND epoch = %s AND finished_at IS NULL GROUP BY topic, partition"
            ).format(sql.Identifier(schema)),
            (group_id, epoch),
        ).fetchall()
    }


def finish_replays(conn: psycopg.Connection, schema: str, group_id: str) -> None:
    """Mark every unfinished replay of the group finished (a new rewind replaces them)."""
    conn.execute(
        sql.SQL(
            "UPDATE {}.replay SET finished_at = now() WHERE group_id = %s AND finished_at IS NULL"
        ).format(sql.Identifier(schema)),
        (group_id,),
    )


def start_replay(conn: psycopg.Connection, schema: str, r: Replay) -> None:
    """Record a partition's replay range (sync reads it when it claims the partition)."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {}.replay (group_id, topic, partition, replay_id, epoch, checkpoint, "
            "from_offset, until_offset, created_by) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
        ).format(sql.Identifier(schema)),
        (
            r.group_id,
            r.topic,
            r.partition,
            r.replay_id,
            r.epoch,
            r.checkpoint,
            r.from_offset,
            r.until_offset,
            r.created_by,
        ),
    )


def last_rewind_at(conn: psycopg.Connection, schema: str, group_id: str) -> datetime | None:
    """When the group was last rewound (None: never, or no schema)."""
    if not has_table(conn, schema, "replay"):
        return None
    row = conn.execute(
        sql.SQL("SELECT max(created_at) FROM {}.replay WHERE group_id = %s").format(
            sql.Identifier(schema)
        ),
        (group_id,),
    ).fetchone()
    return row[0] if row else None


def unfinished_replays(conn: psycopg.Connection, schema: str, group_id: str) -> int:
    """Partitions of the group whose rewind's replay sync has not passed yet."""
    if not has_table(conn, schema, "replay"):
        return 0
    row = conn.execute(
        sql.SQL(
            "SELECT count(*) FROM {}.replay WHERE group_id = %s AND finished_at IS NULL"
        ).format(sql.Identifier(schema)),
        (group_id,),
    ).fetchone()
    return int(row[0] or 0) if row else 0


def finish_replay(
    conn: psycopg.Connection, schema: str, group_id: str, tp: tuple[str, int]
) -> None:
    """The replay of partition ``tp`` is complete (in the batch transaction that passed its end)."""
    conn.execute(
        sql.SQL(
            "UPDATE {}.replay SET finished_at = now() WHERE group_id=%s AND topic=%s AND partition=%s "
            "AND finished_at IS NULL"
        ).format(sql.Identifier(schema)),
        (group_id, tp[0], tp[1]),
    )
