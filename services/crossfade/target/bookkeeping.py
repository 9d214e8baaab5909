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
``cutover_audit`` every gate of every ``crossfade cutover`` run: who, when, result, detail, and the
                evidence of the backup, reconcile and smoke gates (JSON).
``dlq_acks``    ``crossfade dlq ack``: who acknowledged how many open dead letters, and why.
``dlq_acked``   the dead letters each acknowledgement covered (source table, entry, position): a
                key dead-lettered again later (a newer position) is open and unacknowledged anew.
``fence_runs``  every fence (``crossfade fence``, the console, the cutover, verify's re-check):
                who, when it started and finished, on how many partitions, or why it failed.
``heartbeats``  per capture process and sync worker: when it last reported, the partitions it
                holds, its consumer lag and since when that lag has not gone below its low, and
                the tables its watch found stalled (no partition assigned, topic missing, no
                progress while it grows: :mod:`crossfade.sync.watchdog`; the "alive" evidence).
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

Accounting (``crossfade dlq list``, verify, the row-count gate): every source row of a mapped
table is a target row, a dead letter, a filtered row or a deferred row. :func:`ledger_counts` is
the one count of open dead letters, deferred and filtered rows that every command shows.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

SCHEMA_VERSION = 1


def ddl(schema: str) -> list[sql.Composed]:
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
            """CREATE TABLE IF NOT EXISTS {}.dlq_acked (
                source_table text NOT NULL, entry text NOT NULL, position numeric NOT NULL,
                ack_id bigint NOT NULL, PRIMARY KEY (source_table, entry, position))"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.fence_runs (
                token text PRIMARY KEY, via text NOT NULL, who text,
                started_at timestamptz NOT NULL DEFAULT clock_timestamp(), finished_at timestamptz,
                ok boolean, partitions int, seconds double precision, detail text)"""
        ).format(s),
        sql.SQL(
            """CREATE TABLE IF NOT EXISTS {}.heartbeats (
                worker_id text PRIMARY KEY, role text NOT NULL, host text, pid int,
                started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                at timestamptz NOT NULL DEFAULT clock_timestamp(), partitions jsonb,
                lag bigint, lag_low bigint, lag_low_at timestamptz, unassigned_tables jsonb,
                detail jsonb)"""
        ).format(s),
        sql.SQL(
            "ALTER TABLE {}.offsets ADD COLUMN IF NOT EXISTS snapshot_floor bigint NOT NULL DEFAULT 0"
        ).format(s),
        sql.SQL("ALTER TABLE {}.verify_runs ADD COLUMN IF NOT EXISTS mapping_hash text").format(s),
        sql.SQL("ALTER TABLE {}.cutover_audit ADD COLUMN IF NOT EXISTS evidence jsonb").format(s),
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
    snapshot_floor: int = 0
    """The LSN of the newest snapshot sync applied on this partition (records without
    crossfade's position header, from Kafka Connect, are positioned above it)."""


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


def stored_offsets(conn: psycopg.Connection, schema: str, group_id: str) -> list[StoredOffset]:
    rows = conn.execute(
        sql.SQL(
            "SELECT topic, partition, next_offset, epoch, owner, snapshot_floor FROM {}.offsets "
            "WHERE group_id=%s ORDER BY topic, partition"
        ).format(sql.Identifier(schema)),
        (group_id,),
    ).fetchall()
    return [StoredOffset(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]


def has_table(conn: psycopg.Connection, schema: str, table: str) -> bool:
    """Whether ``<schema>.<table>`` exists (read-only commands never create the schema)."""
    row = conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone()
    return bool(row and row[0])


# -- dead letters, deferred and filtered rows: the one count -----------------------------------
@dataclass
class TableCounts:
    """Open ledger outcomes of one source table."""

    dead_letters: int = 0
    """Open dead letters (a rule failed, or undecodable), acknowledged or not."""
    unacknowledged: int = 0
    """Of the open dead letters and held changes, those no ``crossfade dlq ack`` covered."""
    held: int = 0
    """Changes waiting behind an undecodable change of their key (open until it is resolved)."""
    deferred: int = 0
    filtered: int = 0
    mapped: int = 0
    """Source keys whose newest change is in the target (mapped, or replayed by ``dlq replay``)."""

    def as_dict(self) -> dict[str, int]:
        return {
            "dead_letters": self.dead_letters,
            "unacknowledged": self.unacknowledged,
            "held": self.held,
            "deferred": self.deferred,
            "filtered": self.filtered,
        }


@dataclass
class LedgerCounts:
    """What is open in the ledger now, per source table and per rule: the figure ``dlq list``,
    ``status``, the console, the gauges and the dead-letter gate all show."""

    tables: dict[str, TableCounts] = field(default_factory=dict)
    by_rule: dict[tuple[str, str], int] = field(default_factory=dict)
    """(rule, source table) -> open dead letters."""
    filtered_by_rule: dict[tuple[str, str], int] = field(default_factory=dict)
    accounted: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per source table, its keys by ledger outcome (records that could not be decoded, keyed by
    where they were read, are not source rows and are left out): the accounting's right side."""

    def table(self, name: str) -> TableCounts:
        return self.tables.get(name) or TableCounts()

    def _sum(self, attr: str) -> int:
        return sum(getattr(t, attr) for t in self.tables.values())

    @property
    def dead_letters(self) -> int:
        return self._sum("dead_letters")

    @property
    def unacknowledged(self) -> int:
        return self._sum("unacknowledged")

    @property
    def held(self) -> int:
        return self._sum("held")

    @property
    def deferred(self) -> int:
        return self._sum("deferred")

    @property
    def filtered(self) -> int:
        return self._sum("filtered")

    def as_dict(self) -> dict[str, Any]:
        return {
            "dead_letters": self.dead_letters,
            "unacknowledged": self.unacknowledged,
            "held": self.held,
            "deferred": self.deferred,
            "filtered": self.filtered,
            "by_table": {t: c.as_dict() for t, c in sorted(self.tables.items())},
        }


_OPEN = ("dead_letter", "held")
"""Ledger outcomes that block a key: a dead letter, and the changes held behind one."""


def ledger_counts(conn: psycopg.Connection, schema: str) -> LedgerCounts:
    """Open dead letters (and how many no acknowledgement covers), held changes, deferred and
    filtered rows per source table, and the accounting, from the ledger. Empty when sync never
    ran. One query (one pass over the ledger)."""
    out = LedgerCounts()
    if not has_table(conn, schema, "ledger"):
        return out
    s = sql.Identifier(schema)
    acked = (
        sql.SQL(
            "EXISTS (SELECT 1 FROM {}.dlq_acked a WHERE a.source_table = l.source_table "
            "AND a.entry = l.entry AND a.position = l.position)"
        ).format(s)
        if has_table(conn, schema, "dlq_acked")
        else sql.SQL("false")
    )
    rows = conn.execute(
        sql.SQL(
            "SELECT l.source_table, l.outcome, coalesce(l.rule, ''), l.entry LIKE '@%%', count(*), "
            "count(*) FILTER (WHERE l.outcome IN ('dead_letter', 'held') AND NOT {acked}) "
            "FROM {s}.ledger l GROUP BY 1, 2, 3, 4"
        ).format(s=s, acked=acked)
    ).fetchall()
    for table, outcome, rule, by_place, n, unacked in rows:
        c = out.tables.setdefault(table, TableCounts())
        n, unacked = int(n), int(unacked)
        if not by_place:
            acc = out.accounted.setdefault(table, {})
            acc[outcome] = acc.get(outcome, 0) + n
        if outcome == "dead_letter":
            c.dead_letters += n
            out.by_rule[(rule, table)] = out.by_rule.get((rule, table), 0) + n
        elif outcome == "held":
            c.held += n
        elif outcome == "deferred":
            c.deferred += n
        elif outcome == "filtered":
            c.filtered += n
            out.filtered_by_rule[(rule, table)] = out.filtered_by_rule.get((rule, table), 0) + n
        elif outcome in ("mapped", "replayed"):
            c.mapped += n
        c.unacknowledged += unacked
    return out


def dead_letter_groups(
    conn: psycopg.Connection, schema: str, examples: int = 5
) -> list[tuple[str, str, int, str, str, list[dict[str, Any]]]]:
    """Open dead letters grouped by rule and source table, most first: ``(rule, table, records,
    first seen, last seen, newest examples)``, each example's key, reason and where the record
    was read (``dlq list`` and the console show these)."""
    if not has_table(conn, schema, "ledger"):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT rule, source_table, count(*), min(first_at)::text, max(at)::text, "
            "(array_agg(json_build_object('key', coalesce(source_key::text, entry), 'reason', reason, 'topic', topic, "
            "'partition', partition, 'offset', \"offset\") ORDER BY at DESC))[1:%s] "
            "FROM {}.ledger WHERE outcome = 'dead_letter' GROUP BY rule, source_table ORDER BY count(*) DESC, rule"
        ).format(sql.Identifier(schema)),
        (examples,),
    ).fetchall()
    return [(r[0], r[1], int(r[2]), r[3], r[4], list(r[5] or [])) for r in rows]


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


def acknowledge_dead_letters(
    conn: psycopg.Connection, schema: str, who: str, note: str | None
) -> tuple[int, int]:
    """``crossfade dlq ack``: the open dead letters (and held changes) no acknowledgement covers
    yet are acknowledged by ``who``, with ``note``; the acknowledgement is also a row of the
    audit log (``cutover_audit``, gate ``dlq_ack``). Returns (open now, newly acknowledged).

    A key dead-lettered again later (a newer position) is not covered: it is open anew."""
    s = sql.Identifier(schema)
    with conn.transaction():
        counts = ledger_counts(conn, schema)
        row = conn.execute(
            sql.SQL(
                "INSERT INTO {}.dlq_acks (who, dead_lettered, note) VALUES (%s, %s, %s) RETURNING id"
            ).format(s),
            (who, counts.unacknowledged, note),
        ).fetchone()
        assert row is not None
        ack_id = int(row[0])
        new = 0
        if has_table(conn, schema, "ledger"):
            new = conn.execute(
                sql.SQL(
                    "INSERT INTO {s}.dlq_acked (source_table, entry, position, ack_id) "
                    "SELECT source_table, entry, position, %s FROM {s}.ledger "
                    "WHERE outcome IN ('dead_letter', 'held') ON CONFLICT DO NOTHING"
                ).format(s=s),
                (ack_id,),
            ).rowcount
        open_now = counts.dead_letters + counts.held
        conn.execute(
            sql.SQL("UPDATE {}.dlq_acks SET dead_lettered = %s WHERE id = %s").format(s),
            (max(new, 0), ack_id),
        )
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.cutover_audit (run_id, who, dry_run, gate, ok, detail, seconds) "
                "VALUES (%s, %s, false, 'dlq_ack', true, %s, 0)"
            ).format(s),
            (
                f"dlq-ack-{ack_id}",
                who,
                f"acknowledged {new} dead letter(s) ({open_now} open)"
                + (f": {note}" if note else ""),
            ),
        )
    return open_now, max(new, 0)


# -- fences --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FenceRun:
    token: str
    via: str
    who: str | None
    started_at: datetime
    finished_at: datetime | None
    ok: bool | None
    partitions: int | None
    seconds: float | None
    detail: str | None
    age_s: float | None
    """Seconds since it finished (None while it runs)."""


def fence_started(conn: psycopg.Connection, schema: str, token: str, via: str, who: str) -> None:
    conn.execute(
        sql.SQL("INSERT INTO {}.fence_runs (token, via, who) VALUES (%s, %s, %s)").format(
            sql.Identifier(schema)
        ),
        (token, via, who),
    )


def fence_finished(
    conn: psycopg.Connection,
    schema: str,
    token: str,
    *,
    ok: bool,
    partitions: int,
    seconds: float,
    detail: str | None = None,
) -> None:
    conn.execute(
        sql.SQL(
            "UPDATE {}.fence_runs SET finished_at = clock_timestamp(), ok = %s, partitions = %s, "
            "seconds = %s, detail = %s WHERE token = %s"
        ).format(sql.Identifier(schema)),
        (ok, partitions, seconds, detail, token),
    )


def latest_fences(conn: psycopg.Connection, schema: str, limit: int = 1) -> list[FenceRun]:
    """The newest fence runs, newest first (running ones included)."""
    if not has_table(conn, schema, "fence_runs"):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT token, via, who, started_at, finished_at, ok, partitions, seconds, detail, "
            "EXTRACT(EPOCH FROM clock_timestamp() - finished_at)::float8 FROM {}.fence_runs "
            "ORDER BY started_at DESC LIMIT %s"
        ).format(sql.Identifier(schema)),
        (limit,),
    ).fetchall()
    return [FenceRun(*r) for r in rows]


# -- heartbeats ----------------------------------------------------------------------------------
@dataclass
class Heartbeat:
    """What a capture process or sync worker reports about itself (:func:`write_heartbeat`)."""

    worker_id: str
    role: str  # capture | sync
    partitions: list[str] | None = None
    """``topic[partition]`` held by a sync worker."""
    lag: int | None = None
    lag_low: int | None = None
    lag_low_at: datetime | None = None
    """The lowest lag since the lag last fell (and when): a lag far above it for long is growing."""
    unassigned_tables: list[str] | None = None
    """Configured tables this worker found with no partition assigned to any worker (the stall
    watchdog fills it; empty or None when it has nothing to report)."""
    detail: dict[str, Any] = field(default_factory=dict)
    age_s: float = 0.0
    """Seconds since it was written (set when read)."""
    started_at: datetime | None = None
    host: str | None = None
    pid: int | None = None


def write_heartbeat(conn: psycopg.Connection, schema: str, hb: Heartbeat) -> None:
    """Upsert this process's heartbeat (autocommit connection: a statement of its own)."""
    conn.execute(
        sql.SQL(
            """INSERT INTO {}.heartbeats AS h (worker_id, role, host, pid, at, partitions, lag,
                   lag_low, lag_low_at, unassigned_tables, detail)
               VALUES (%s, %s, %s, %s, clock_timestamp(), %s, %s, %s, %s, %s, %s)
               ON CONFLICT (worker_id) DO UPDATE SET at = clock_timestamp(), role = EXCLUDED.role,
                   partitions = EXCLUDED.partitions, lag = EXCLUDED.lag, lag_low = EXCLUDED.lag_low,
                   lag_low_at = EXCLUDED.lag_low_at, unassigned_tables = EXCLUDED.unassigned_tables,
                   detail = EXCLUDED.detail"""
        ).format(sql.Identifier(schema)),
        (
            hb.worker_id,
            hb.role,
            socket.gethostname(),
            os.getpid(),
            json.dumps(hb.partitions) if hb.partitions is not None else None,
            hb.lag,
            hb.lag_low,
            hb.lag_low_at,
            json.dumps(hb.unassigned_tables) if hb.unassigned_tables is not None else None,
            json.dumps(hb.detail, default=str),
        ),
    )


def drop_heartbeat(conn: psycopg.Connection, schema: str, worker_id: str) -> None:
    """A process that stops cleanly takes its heartbeat away (it is not a stalled worker)."""
    conn.execute(
        sql.SQL("DELETE FROM {}.heartbeats WHERE worker_id = %s").format(sql.Identifier(schema)),
        (worker_id,),
    )


def read_heartbeats(conn: psycopg.Connection, schema: str) -> list[Heartbeat]:
    """Every heartbeat row with its age (by the target database's clock, as it was written)."""
    if not has_table(conn, schema, "heartbeats"):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT worker_id, role, partitions, lag, lag_low, lag_low_at, unassigned_tables, "
            "detail, EXTRACT(EPOCH FROM clock_timestamp() - at)::float8, started_at, host, pid "
            "FROM {}.heartbeats ORDER BY role, worker_id"
        ).format(sql.Identifier(schema))
    ).fetchall()
    return [
        Heartbeat(
            r[0],
            r[1],
            list(r[2]) if r[2] is not None else None,
            r[3],
            r[4],
            r[5],
            list(r[6]) if r[6] is not None else None,
            dict(r[7] or {}),
            float(r[8]),
            r[9],
            r[10],
            r[11],
        )
        for r in rows
    ]


# -- what a verify depends on --------------------------------------------------------------------
def mapping_fingerprint(mapping: Any) -> str:
    """A short hash of the mapping as loaded (None: every table identity-mapped)."""
    import hashlib

    text = "identity" if mapping is None else mapping.model_dump_json()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def note_mapping(conn: psycopg.Connection, schema: str, mapping_hash: str) -> None:
    """Record the mapping sync runs with; a different one than before marks when it changed (a
    verify older than that no longer says anything about the target)."""
    s = sql.Identifier(schema)
    with conn.transaction():
        row = conn.execute(
            sql.SQL("SELECT value FROM {}.meta WHERE key = 'mapping_hash' FOR UPDATE").format(s)
        ).fetchone()
        if row is not None and row[0] == mapping_hash:
            return
        for key, value in (("mapping_hash", mapping_hash), ("mapping_changed_at", None)):
            conn.execute(
                sql.SQL(
                    "INSERT INTO {}.meta (key, value) VALUES (%s, coalesce(%s, clock_timestamp()::text)) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
                ).format(s),
                (key, value),
            )


def meta(conn: psycopg.Connection, schema: str) -> dict[str, str]:
    if not has_table(conn, schema, "meta"):
        return {}
    return dict(
        conn.execute(sql.SQL("SELECT key, value FROM {}.meta").format(sql.Identifier(schema)))
    )
