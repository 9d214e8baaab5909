"""The bookkeeping schema in the target database (``crossfade`` by default).

Progress lives with the data (DESIGN decision 1): a batch's upserts and the offsets it consumed
commit in one transaction of the target. The tables:

``offsets``     per consumer group and topic partition: the *next* offset to consume (Kafka's
                convention), the broker epoch it belongs to, and the owner token of the worker
                assignment allowed to advance it (fencing: a worker whose assignment was taken
                over finds another token and rolls back).
``tombstones``  per target table and key: the source position of the delete (``lsn``
                holds a position, :func:`crossfade.events.model.position`), so a replayed older
                insert cannot resurrect the row (decision 2).
``watermarks``  per target table: events below this source position are void (a TRUNCATE, or the
                sweep after a re-snapshot, deleted everything older).
``table_stats`` per table and partition (no row shared by two workers): events applied, skipped,
                dead-lettered, the last source position and commit time.
``fences``      per fence token and partition: when sync applied the marker (decision 4).
``replay``      per consumer group and partition, while a rewind's replay runs: records below
                ``until_offset`` re-apply even at the position the target row already holds
                (decision 5; see :mod:`crossfade.sync.apply`). ``finished_at`` is set when sync
                has passed ``until_offset``.
``checkpoints`` ``crossfade checkpoint create``: per partition the stored offsets, the legacy
                database's WAL position and the time (what ``rewind`` returns to).
``verify_runs`` one row per ``crossfade verify`` run, with its JSON report.
``cutover_audit`` every gate of every ``crossfade cutover`` run: who, when, result, detail.
``dlq_acks``    ``crossfade dlq ack``: dead letters counted so far were seen by a person.
``ledger``      mapped source tables and dead letters: per source key (``entry``, the key as JSON;
                ``@topic/partition/offset`` for a record that could not be decoded) the outcome
                of its newest change (``position``): ``mapped``, ``deleted``, ``filtered`` (by
                which filter, why), ``dead_letter`` (which rule failed, the reason, where the
                record was, its original bytes so ``crossfade dlq replay`` can re-run it),
                ``deferred`` (a parent of a ``references`` rule with ``window_s`` has not
                arrived: retried after each batch, dead-lettered at ``deadline``, FAULTS 27) or
                ``replayed``. Events older than the key's ledger position are stale and skipped,
                so a re-sent older change can neither reopen a resolved dead letter nor undo a
                filter decision.

Accounting (``crossfade dlq list``, verify): every source row of a mapped table is a target row,
a dead letter, a filtered row or a deferred row.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

SCHEMA_VERSION = 1


def ddl(schema: str) -> list[sql.Composable]:
    s = sql.Identifier(schema)
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.offsets (
                group_id text NOT NULL, topic text NOT NULL, partition int NOT NULL,
                next_offset bigint NOT NULL, epoch text NOT NULL, owner text,
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (group_id, topic, partition))"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.tombstones (
                tbl text NOT NULL, key text NOT NULL, lsn numeric NOT NULL,
                PRIMARY KEY (tbl, key))"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.watermarks (
                tbl text PRIMARY KEY, lsn numeric NOT NULL DEFAULT -1, reason text,
                updated_at timestamptz NOT NULL DEFAULT now())"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.table_stats (
                tbl text NOT NULL, topic text NOT NULL, partition int NOT NULL,
                applied bigint NOT NULL DEFAULT 0, skipped bigint NOT NULL DEFAULT 0,
                dead_lettered bigint NOT NULL DEFAULT 0,
                last_lsn bigint, last_source_ts timestamptz, last_applied_at timestamptz,
                PRIMARY KEY (tbl, topic, partition))"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.fences (
                token text NOT NULL, topic text NOT NULL, partition int NOT NULL,
                lsn bigint, source_ts timestamptz, applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                PRIMARY KEY (token, topic, partition))"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.meta (key text PRIMARY KEY, value text NOT NULL)"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.replay (
                group_id text NOT NULL, topic text NOT NULL, partition int NOT NULL,
                replay_id text NOT NULL, epoch text NOT NULL, checkpoint text, from_offset bigint NOT NULL,
                until_offset bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
                created_by text, finished_at timestamptz,
                PRIMARY KEY (group_id, topic, partition, replay_id))"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.checkpoints (
                name text PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                created_by text, group_id text NOT NULL, epoch text, source_lsn pg_lsn,
                offsets jsonb NOT NULL, note text)"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.verify_runs (
                id bigserial PRIMARY KEY, started_at timestamptz NOT NULL,
                finished_at timestamptz NOT NULL DEFAULT clock_timestamp(), ok boolean NOT NULL,
                tables int NOT NULL, source_rows bigint, target_rows bigint, mismatched bigint,
                missing bigint, extra bigint, rechecked_after_fence boolean, seconds double precision,
                created_by text, report jsonb)"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.cutover_audit (
                id bigserial PRIMARY KEY, run_id text NOT NULL,
                at timestamptz NOT NULL DEFAULT clock_timestamp(), who text NOT NULL,
                dry_run boolean NOT NULL, gate text NOT NULL, ok boolean NOT NULL,
                detail text, seconds double precision)"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.dlq_acks (
                id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(),
                who text NOT NULL, dead_lettered bigint NOT NULL, note text)"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.ledger (
                source_table text NOT NULL, entry text NOT NULL, position numeric NOT NULL,
                outcome text NOT NULL, source_key jsonb, rule text, reason text, failures jsonb,
                topic text, partition int, "offset" bigint, key bytea, value bytea, headers jsonb,
                first_at timestamptz NOT NULL DEFAULT now(), at timestamptz NOT NULL DEFAULT now(),
                deadline timestamptz, PRIMARY KEY (source_table, entry))"""
        ).format(s),
        # a column sync added to a target mid-stream: ``since`` is the position of the first
        # change that carried it, ``fill`` the value rows had before it (PostgreSQL's "missing
        # value"). An older change without the column (re-sent by a capture restart, or from
        # another partition) predates it and fills it; a newer one means it was dropped.
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.added_columns (
                tbl text NOT NULL, col text NOT NULL, since numeric NOT NULL, fill text,
                at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tbl, col))"""
        ).format(s),
        sql.SQL(
            "CREATE INDEX IF NOT EXISTS ledger_held ON {}.ledger (outcome, rule) "
            "WHERE outcome IN ('dead_letter', 'filtered', 'deferred')"
        ).format(s),
        sql.SQL(
            "INSERT INTO {}.meta VALUES ('schema_version', {}) ON CONFLICT (key) DO NOTHING"
        ).format(s, sql.Literal(str(SCHEMA_VERSION))),
    ]


def ensure_schema(conn: psycopg.Connection, schema: str) -> None:
    """Create the bookkeeping tables if missing (idempotent; safe with several workers)."""
    with conn.transaction():
        # serialize concurrent first starts of several workers
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('crossfade.bookkeeping'))")
        for stmt in ddl(schema):
            conn.execute(stmt)


@dataclass(frozen=True, slots=True)
class StoredOffset:
    topic: str
    partition: int
    next_offset: int
    epoch: str
    owner: str | None


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
                    "SELECT next_offset, epoch FROM {}.offsets WHERE group_id=%s AND topic=%s AND partition=%s FOR UPDATE"
                ).format(s),
                (group_id, topic, partition),
            ).fetchone()
            if row is None or row[1] != epoch:
                nxt = 0
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {}.offsets (group_id, topic, partition, next_offset, epoch, owner) "
                        "VALUES (%s,%s,%s,0,%s,%s) ON CONFLICT (group_id, topic, partition) DO UPDATE "
                        "SET next_offset=0, epoch=EXCLUDED.epoch, owner=EXCLUDED.owner, updated_at=now()"
                    ).format(s),
                    (group_id, topic, partition, epoch, owner),
                )
            else:
                nxt = int(row[0])
                conn.execute(
                    sql.SQL(
                        "UPDATE {}.offsets SET owner=%s, updated_at=now() WHERE group_id=%s AND topic=%s AND partition=%s"
                    ).format(s),
                    (owner, group_id, topic, partition),
                )
            out[(topic, partition)] = StoredOffset(topic, partition, nxt, epoch, owner)
    return out


def stored_offsets(conn: psycopg.Connection, schema: str, group_id: str) -> list[StoredOffset]:
    rows = conn.execute(
        sql.SQL(
            "SELECT topic, partition, next_offset, epoch, owner FROM {}.offsets WHERE group_id=%s ORDER BY topic, partition"
        ).format(sql.Identifier(schema)),
        (group_id,),
    ).fetchall()
    return [StoredOffset(r[0], r[1], r[2], r[3], r[4]) for r in rows]
