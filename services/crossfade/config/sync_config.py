"""``sync:``, the sync workers' settings (:class:`SyncConfig`), and how the consumer group's
session timeout is chosen for the broker at hand (:meth:`SyncConfig.session_timeout_for`)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from crossfade.config.strict import Strict

EMBEDDED_CLUSTER_ID = "crossfade"
"""The cluster id crossfade's embedded broker (Tansu, :mod:`crossfade.embedded.broker`) is started
with and reports in its metadata: how sync knows it is on that broker."""

TANSU_SESSION_TIMEOUT_MS = 2_000
"""``sync.session_timeout_ms: auto`` on the embedded broker. Tansu 0.6 answers a JoinGroup once
half the session timeout has passed, looking once a second: 1 s from 2 s down (3 s at 6 s), and
it does not enforce Kafka's ``group.min.session.timeout.ms``."""

KAFKA_SESSION_TIMEOUT_MS = 6_000
"""``sync.session_timeout_ms: auto`` on any other broker: Apache Kafka's minimum
(``group.min.session.timeout.ms``, 6 s by default; a shorter one is refused at the join)."""


class SyncConfig(Strict):
    append_only_tables: list[str] = Field(default_factory=list)
    """Source tables without a primary key that only ever receive INSERTs (logs, history):
    applied insert-only, each row identified by its source position and content, so a redelivered
    insert is a no-op. An UPDATE or DELETE on such a table stops sync with a clear message."""
    group_id: str = "crossfade-sync"
    """Kafka consumer group of the sync workers."""
    batch_size: int = Field(5000, ge=1, le=1_000_000)
    """Most records applied in one target transaction."""
    batch_timeout_ms: int = Field(50, ge=1)
    """Longest wait for a batch to fill before applying what arrived. Under load batches fill
    (``batch_size``) long before it; at low rates every change waits up to this long."""
    fetch_wait_max_ms: int = Field(50, ge=1, le=10_000)
    """How long the broker may hold the consumer's fetch when it has nothing new (librdkafka's
    ``fetch.wait.max.ms``, default 500). Apache Kafka answers as soon as data arrives, so a low
    value only adds idle requests; Tansu 0.6 was measured holding fetches with data waiting
    (latency p50 264 ms at 500, 161 ms at 50), so it is part of every change's latency there."""
    create_tables: bool = True
    """Create missing target tables (identity mapping) with the source's column types."""
    bookkeeping_schema: str = Field("crossfade", pattern=r"^[a-z_][a-z0-9_]*$")
    """Schema in the target holding offsets, tombstones and stats."""
    workers: int = Field(1, ge=1, le=16)
    """Sync workers in each ``crossfade sync`` / ``crossfade run`` process: threads, each a member
    of the consumer group with its own consumer, target session and stall watch, so that one's
    Python maps while another's statements run in the target. More than ``kafka.partitions``
    leaves the extra ones idle (the group assigns each topic's partitions apart)."""
    processes: Annotated[int, Field(ge=1, le=16)] | Literal["auto"] = 1
    """Sync processes of ``crossfade run`` (always child processes there, capture staying in the
    parent) and ``crossfade sync`` (1: in process; more: a supervisor with that many children),
    each with its own ``sync.workers`` threads and interpreter lock: 1..16, or ``auto``, the
    usable CPUs (``sched_getaffinity``) but at most ``kafka.partitions``. Default 1 (``run``: one
    child): the whole suite ran under ``auto`` in CI on 2026-12-07 and took 64 min against ~47,
    every test stack's sync starting, joining and leaving as two processes (docs/operations.md).
    The Helm chart sets 1: there sync scales by replicas."""
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    session_timeout_ms: Annotated[int, Field(ge=2_000)] | Literal["auto"] = "auto"
    """A worker that stops heartbeating loses its partitions after this long (librdkafka beats
    from its own thread, every third of it at most). ``auto`` (default): 2000 on crossfade's
    embedded broker (Tansu, known by its cluster id ``crossfade``), 6000 on any other, Apache
    Kafka's minimum (``group.min.session.timeout.ms``). Tansu answers a join only after half of
    it, so every sync start and rebalance waits that long there (1 s at 2000, 3 s at 6000); on
    Apache Kafka the join waits ``group.initial.rebalance.delay.ms`` instead, whatever this is
    (the Helm chart sets 10000). An external Tansu joins fast with 2000 set here."""
    stall_after_s: float = Field(60.0, ge=1)
    """A configured table with no partition assigned to any worker of the group, or whose
    partitions make no progress while their log grows, for this long is reported: a WARNING
    naming it, ``crossfade_sync_table_stalled{table}`` 1, ``/readyz`` false; the worker then
    re-subscribes (a rejoin from fresh metadata). Keep it above a rebalance's length (about
    ``session_timeout_ms`` when a worker dies)."""
    parents_first_wait_s: float = Field(20.0, ge=0)
    """Load: children wait for their parents' snapshot, at most this long without parent progress (docs/commands.md); 0: off."""
    idle_in_transaction_timeout_s: float = Field(60.0, ge=0)
    """PostgreSQL's ``idle_in_transaction_session_timeout`` on sync's target sessions: a worker
    frozen inside its batch transaction (SIGSTOP, a long GC pause, a hung host) has its session
    ended after this long, which releases the offset row locks its successor's claim waits for;
    when it wakes its batch is retried on a new session and refused as stale. Keep it well above
    a batch's Python time between two statements (milliseconds to a few seconds); 0: off."""
    claim_wait_warn_s: float = Field(5.0, gt=0)
    """A claim of partitions waiting this long for a lock (the offset rows of a batch another
    worker still holds) logs a WARNING naming the holder (pid, state, transaction age, last
    statement), repeated every ``claim_wait_warn_s``, and the stall watch names it."""
    tag_origin: bool = True
    """Tag sync's writes with a PostgreSQL replication origin (``crossfade_<n>``) so a capture
    running the other way (``crossfade fallback``) skips them instead of sending them back. Needs
    a superuser, or EXECUTE on ``pg_replication_origin_create`` and
    ``pg_replication_origin_session_setup``; without it sync warns once and writes untagged."""
    heartbeat_interval_s: float = Field(2.0, gt=0, le=300)
    """How often capture and every sync worker write their heartbeat (``<bookkeeping>.heartbeats``:
    partitions held, consumer lag): the evidence of the ``sync_alive`` gate."""

    def session_timeout_for(self, cluster_id: str | None) -> int:
        """The session timeout (ms) on the broker whose metadata reports ``cluster_id`` (None:
        unknown, taken for Apache Kafka's)."""
        if self.session_timeout_ms != "auto":
            return self.session_timeout_ms
        if cluster_id == EMBEDDED_CLUSTER_ID:
            return TANSU_SESSION_TIMEOUT_MS
        return KAFKA_SESSION_TIMEOUT_MS

    def session_timeout_text(self) -> str:
        """The session timeout for people: ``6000 ms``, or what ``auto`` means."""
        if self.session_timeout_ms != "auto":
            return f"{self.session_timeout_ms} ms"
        return (
            f"auto: {TANSU_SESSION_TIMEOUT_MS} ms on the embedded broker, "
            f"{KAFKA_SESSION_TIMEOUT_MS} ms elsewhere"
        )
