"""The bookkeeping schema's DDL in the target database (``crossfade`` by default).

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
``sweeps``      per table, snapshot LSN, topic and partition: sync passed the end-of-snapshot
                sweep marker there; the sweep deletes only once every partition has.
``replay``      per consumer group and partition, while a rewind's replay runs: records below
                ``until_offset`` re-apply even at the position the target row already holds
                (decision 5; see :mod:`crossfade.target.apply`). ``finished_at`` is set when sync
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
``control``     ``crossfade pause``/``resume``: per component (capture, sync) whether an operator
                paused it, who, why and when (every process reads it at heartbeat time).
``dedup_members`` per deduplicated target table and member key: the member's key, blocking keys,
                mapped row and source position (``deleted`` once gone) (:mod:`.dedup`).
``dedup_blocks`` per deduplicated target table, block key and live member key: the index by
                which members sharing a block key are found (:mod:`.dedup` keeps it).
``crosswalk``   per deduplicated target table and member key: its survivor's key, and the rule and
                evidence of the merge (``crossfade dedup explain``).
``child_refs``  per child source row and reference column: the parent value it refers to as
                written at the source (:mod:`.children`).
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
(:mod:`.ledger`) the one count of open dead letters, deferred and filtered rows that every command shows.
"""

from __future__ import annotations

import hashlib
import re

import psycopg
from psycopg import sql

SCHEMA_VERSION = 1

#: the statements that create (and upgrade) the bookkeeping schema, in order; ``{}`` is the schema
STATEMENTS: tuple[str, ...] = (
    "CREATE SCHEMA IF NOT EXISTS {}",
    """CREATE TABLE IF NOT EXISTS {}.offsets (
                group_id text NOT NULL, topic text NOT NULL, partition int NOT NULL,
                next_offset bigint NOT NULL, epoch text NOT NULL, owner text,
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (group_id, topic, partition))""",
    """CREATE TABLE IF NOT EXISTS {}.tombstones (
                tbl text NOT NULL, key text NOT NULL, lsn numeric NOT NULL,
                PRIMARY KEY (tbl, key))""",
    """CREATE TABLE IF NOT EXISTS {}.watermarks (
                tbl text PRIMARY KEY, lsn numeric NOT NULL DEFAULT -1, reason text,
                updated_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS {}.table_stats (
                tbl text NOT NULL, topic text NOT NULL, partition int NOT NULL,
                applied bigint NOT NULL DEFAULT 0, skipped bigint NOT NULL DEFAULT 0,
                dead_lettered bigint NOT NULL DEFAULT 0,
                last_lsn bigint, last_source_ts timestamptz, last_applied_at timestamptz,
                PRIMARY KEY (tbl, topic, partition))""",
    """CREATE TABLE IF NOT EXISTS {}.fences (
                token text NOT NULL, topic text NOT NULL, partition int NOT NULL,
                lsn bigint, source_ts timestamptz, applied_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                PRIMARY KEY (token, topic, partition))""",
    """CREATE TABLE IF NOT EXISTS {}.meta (key text PRIMARY KEY, value text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS {}.replay (
                group_id text NOT NULL, topic text NOT NULL, partition int NOT NULL,
                replay_id text NOT NULL, epoch text NOT NULL, checkpoint text, from_offset bigint NOT NULL,
                until_offset bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
                created_by text, finished_at timestamptz,
                PRIMARY KEY (group_id, topic, partition, replay_id))""",
    """CREATE TABLE IF NOT EXISTS {}.checkpoints (
                name text PRIMARY KEY, created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                created_by text, group_id text NOT NULL, epoch text, source_lsn pg_lsn,
                offsets jsonb NOT NULL, note text)""",
    """CREATE TABLE IF NOT EXISTS {}.verify_runs (
                id bigserial PRIMARY KEY, started_at timestamptz NOT NULL,
                finished_at timestamptz NOT NULL DEFAULT clock_timestamp(), ok boolean NOT NULL,
                tables int NOT NULL, source_rows bigint, target_rows bigint, mismatched bigint,
                missing bigint, extra bigint, rechecked_after_fence boolean, seconds double precision,
                created_by text, report jsonb)""",
    """CREATE TABLE IF NOT EXISTS {}.cutover_audit (
                id bigserial PRIMARY KEY, run_id text NOT NULL,
                at timestamptz NOT NULL DEFAULT clock_timestamp(), who text NOT NULL,
                dry_run boolean NOT NULL, gate text NOT NULL, ok boolean NOT NULL,
                detail text, seconds double precision)""",
    """CREATE TABLE IF NOT EXISTS {}.dlq_acks (
                id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp(),
                who text NOT NULL, dead_lettered bigint NOT NULL, note text)""",
    """CREATE TABLE IF NOT EXISTS {}.ledger (
                source_table text NOT NULL, entry text NOT NULL, position numeric NOT NULL,
                outcome text NOT NULL, source_key jsonb, rule text, reason text, failures jsonb,
                topic text, partition int, "offset" bigint, key bytea, value bytea, headers jsonb,
                first_at timestamptz NOT NULL DEFAULT now(), at timestamptz NOT NULL DEFAULT now(),
                deadline timestamptz, PRIMARY KEY (source_table, entry))""",
    # a column sync added to a target mid-stream: ``since`` is the position of the first
    # change that carried it, ``fill`` the value rows had before it (PostgreSQL's "missing
    # value"). An older change without the column (re-sent by a capture restart, or from
    # another partition) predates it and fills it; a newer one means it was dropped.
    """CREATE TABLE IF NOT EXISTS {}.added_columns (
                tbl text NOT NULL, col text NOT NULL, since numeric NOT NULL, fill text,
                at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (tbl, col))""",
    """CREATE TABLE IF NOT EXISTS {}.dlq_acked (
                source_table text NOT NULL, entry text NOT NULL, position numeric NOT NULL,
                ack_id bigint NOT NULL, PRIMARY KEY (source_table, entry, position))""",
    """CREATE TABLE IF NOT EXISTS {}.fence_runs (
                token text PRIMARY KEY, via text NOT NULL, who text,
                started_at timestamptz NOT NULL DEFAULT clock_timestamp(), finished_at timestamptz,
                ok boolean, partitions int, seconds double precision, detail text)""",
    """CREATE TABLE IF NOT EXISTS {}.heartbeats (
                worker_id text PRIMARY KEY, role text NOT NULL, host text, pid int,
                started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
                at timestamptz NOT NULL DEFAULT clock_timestamp(), partitions jsonb,
                lag bigint, lag_low bigint, lag_low_at timestamptz, unassigned_tables jsonb,
                detail jsonb)""",
    # crossfade pause / resume (:mod:`.control`): one row per component
    """CREATE TABLE IF NOT EXISTS {}.control (
                component text PRIMARY KEY CHECK (component IN ('capture', 'sync')),
                paused boolean NOT NULL, by_whom text NOT NULL, reason text,
                changed_at timestamptz NOT NULL DEFAULT now())""",
    "ALTER TABLE {}.offsets ADD COLUMN IF NOT EXISTS snapshot_floor bigint NOT NULL DEFAULT 0",
    "ALTER TABLE {}.verify_runs ADD COLUMN IF NOT EXISTS mapping_hash text",
    "ALTER TABLE {}.cutover_audit ADD COLUMN IF NOT EXISTS evidence jsonb",
    "CREATE INDEX IF NOT EXISTS ledger_held ON {}.ledger (outcome, rule) "
    "WHERE outcome IN ('dead_letter', 'filtered', 'deferred')",
    # deduplication (:mod:`.dedup`, crossfade.sync.sinks.dedup): every member of a deduplicated
    # target with its blocking keys, and the crosswalk from each member key to its survivor
    """CREATE TABLE IF NOT EXISTS {}.dedup_members (
                target_table text NOT NULL, member_key text NOT NULL, key jsonb NOT NULL,
                source_table text, block_keys text[] NOT NULL DEFAULT '{{}}', row jsonb,
                position numeric NOT NULL, deleted boolean NOT NULL DEFAULT false,
                PRIMARY KEY (target_table, member_key))""",
    # one row per block key of each live member: sync's regroup and verify's dedup delta find
    # the members sharing a block key through its btree (dedup_members' arrays are not indexed:
    # the planner scans a GIN index's table for a batch's thousands of keys, issue 22). The
    # store's writers of dedup_members keep it in their transaction; the DDL's run (an upgrade)
    # makes it match dedup_members, rows missing or left over
    """CREATE TABLE IF NOT EXISTS {}.dedup_blocks (
                target_table text NOT NULL, block_key text NOT NULL, member_key text NOT NULL,
                PRIMARY KEY (target_table, block_key, member_key))""",
    "CREATE INDEX IF NOT EXISTS dedup_blocks_member ON {}.dedup_blocks (target_table, member_key)",
    "DROP INDEX IF EXISTS {}.dedup_members_blocks",
    "DELETE FROM {0}.dedup_blocks b WHERE NOT EXISTS (SELECT 1 FROM {0}.dedup_members m "
    "WHERE m.target_table = b.target_table AND m.member_key = b.member_key AND NOT m.deleted "
    "AND b.block_key = ANY(m.block_keys))",
    "INSERT INTO {0}.dedup_blocks SELECT m.target_table, b, m.member_key "
    "FROM {0}.dedup_members m, unnest(m.block_keys) b WHERE NOT m.deleted ON CONFLICT DO NOTHING",
    """CREATE TABLE IF NOT EXISTS {}.crosswalk (
                target_table text NOT NULL, member_key text NOT NULL, survivor_key text NOT NULL,
                survivor jsonb NOT NULL, source_table text, rule text, evidence jsonb,
                updated_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (target_table, member_key))""",
    "CREATE INDEX IF NOT EXISTS crosswalk_survivor ON {}.crosswalk (target_table, survivor_key)",
    # the parent value each child row of a ``references`` rule refers to (:mod:`.children`,
    # crossfade.sync.children)
    """CREATE TABLE IF NOT EXISTS {}.child_refs (
                child_source text NOT NULL, child_entry text NOT NULL, child_target text NOT NULL,
                child_column text NOT NULL, parent_table text NOT NULL, parent_value text NOT NULL,
                PRIMARY KEY (child_source, child_entry, child_target, child_column))""",
    "CREATE INDEX IF NOT EXISTS child_refs_parent ON {}.child_refs (parent_table, parent_value)",
    # the partitions sync passed a snapshot's sweep marker on (:mod:`.sweeps`)
    """CREATE TABLE IF NOT EXISTS {}.sweeps (
                tbl text NOT NULL, lsn bigint NOT NULL, topic text NOT NULL, partition int NOT NULL,
                at timestamptz NOT NULL DEFAULT clock_timestamp(),
                PRIMARY KEY (tbl, lsn, topic, partition))""",
)

#: the bookkeeping tables :data:`STATEMENTS` creates (tests/unit/test_layering.py reads these: no
#: module outside ``crossfade.target`` may name one of them in SQL)
TABLES: tuple[str, ...] = tuple(
    m.group(1) for t in STATEMENTS if (m := re.match(r"CREATE TABLE IF NOT EXISTS \{\}\.(\w+)", t))
)


def ddl(schema: str) -> list[sql.Composed]:
    """The statements of :data:`STATEMENTS` for ``schema``, then the schema version's row."""
    s = sql.Identifier(schema)
    return [sql.SQL(t).format(s) for t in STATEMENTS] + [
        sql.SQL(
            "INSERT INTO {}.meta VALUES ('schema_version', {}) ON CONFLICT (key) DO NOTHING"
        ).format(s, sql.Literal(str(SCHEMA_VERSION)))
    ]


DDL_KEY = "schema_ddl"
"""Key in ``<bookkeeping>.meta`` of the fingerprint of the :data:`STATEMENTS` last applied."""

DDL_FINGERPRINT = hashlib.sha256("\n".join(STATEMENTS).encode()).hexdigest()[:16]

DDL_LOCK_TIMEOUT = "10s"
"""How long one run of the DDL waits for a table lock before it gives up (and is retried)."""


def ensure_schema(conn: psycopg.Connection, schema: str) -> None:
    """Create the bookkeeping tables if missing (idempotent; safe with several workers).

    A schema whose ``meta`` says these very statements were applied is left alone: ``ALTER
    TABLE`` and ``CREATE INDEX`` take strong locks even when there is nothing to do, so a worker
    starting while another is inside a batch transaction would wait for it, and every other
    worker's next batch would queue behind that wait (a lock convoy). When the DDL must run, it
    waits at most :data:`DDL_LOCK_TIMEOUT` for a lock and raises ``LockNotAvailable``, which
    :func:`crossfade.db.is_transient` calls transient: the caller retries."""
    if _applied(conn, schema) == DDL_FINGERPRINT:
        return
    s = sql.Identifier(schema)
    with conn.transaction():
        # serialize concurrent first starts of several workers
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('crossfade.bookkeeping'))")
        row = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (DDL_LOCK_TIMEOUT,))
        for stmt in ddl(schema):
            conn.execute(stmt)
        conn.execute(
            sql.SQL(
                "INSERT INTO {}.meta VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ).format(s),
            (DDL_KEY, DDL_FINGERPRINT),
        )
        # a caller's own transaction (not autocommit) keeps its lock_timeout after this
        conn.execute("SELECT set_config('lock_timeout', %s, true)", (row[0] if row else "0",))


def _applied(conn: psycopg.Connection, schema: str) -> str | None:
    """The fingerprint of the DDL last applied to ``schema``; None when it was never applied or
    a bookkeeping table is missing (dropped by hand, a half-removed schema)."""
    row = conn.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = ANY(%s) AND c.relkind IN ('r', 'p')",
        (schema, list(TABLES)),
    ).fetchone()
    if not row or row[0] != len(TABLES):
        return None
    got = conn.execute(
        sql.SQL("SELECT value FROM {}.meta WHERE key = %s").format(sql.Identifier(schema)),
        (DDL_KEY,),
    ).fetchone()
    return str(got[0]) if got else None


def has_table(conn: psycopg.Connection, schema: str, table: str) -> bool:
    """Whether ``<schema>.<table>`` exists (read-only commands never create the schema)."""
    row = conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone()
    return bool(row and row[0])
