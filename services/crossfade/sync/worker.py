"""The sync worker: Kafka consumer group -> decode -> guarded, set-based apply -> target.

Commit point of a batch, in order (DESIGN decision 1):

1. consume up to ``sync.batch_size`` records (one ``consume`` call, so a rebalance never splits
   a batch: callbacks run inside ``consume``);
2. decode; undecodable records are produced to the dead-letter topic and flushed;
3. in ONE target transaction: lock this batch's offset rows and check this worker still owns them
   (fencing; a stale owner rolls back with :class:`StaleAssignment`), drop records below the
   stored offset (already applied: e.g. the COMMIT went through but its acknowledgement was
   lost), apply the events table by table, store next offsets, stats and fences; COMMIT;
4. commit the same offsets to Kafka asynchronously, for lag display only.

A crash before 3 completes rolls the batch back whole; the restart (or the next owner) seeks to
the offsets stored in the target, so nothing is lost and nothing applies twice.

After ``crossfade rewind`` a partition carries a replay epoch (``<bookkeeping>.replay``): records
below its ``until_offset`` apply with ``replay=True`` (see :mod:`crossfade.target.apply`), and the
batch that passes ``until_offset`` marks the replay finished in the same transaction.

Transient errors (target or broker unreachable) are retried with exponential backoff
(tenacity), re-checking the stored offsets after every reconnect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from psycopg import sql
from tenacity import RetryCallState

from crossfade import metrics
from crossfade.catalog import read_shape
from crossfade.config import Settings
from crossfade.db import connect, retrying
from crossfade.errors import (
    BrokerDataLost,
    BrokerUnavailable,
    CrossfadeError,
    DatabaseUnavailable,
    DecodeError,
    PreflightError,
    SchemaMismatch,
    StaleAssignment,
)
from crossfade.events.decode import EPOCH_HEADER, POSITION_HEADER, EventDecoder, header_in
from crossfade.events.kafka import (
    ControlRecord,
    control_kind,
    current_epoch,
    record_headers,
    record_place,
)
from crossfade.events.model import ChangeEvent, position
from crossfade.sync.children import ParentChanges, children_to_rerun
from crossfade.sync.mapped import (
    Held,
    MappedResult,
    MappedSource,
    Origin,
    TargetParents,
    build_mapped,
    make_parents,
    write_ledger,
)
from crossfade.sync.origin import tag_session
from crossfade.sync.pause import PauseHook
from crossfade.sync.progress_log import JoinProgress, RejectLog
from crossfade.sync.watchdog import TableWatch, WorkerView
from crossfade.target.append_only import AppendOnlyApplier
from crossfade.target.apply import TableApplier, event_key_id
from crossfade.target.store import (
    Heartbeat,
    claim_partitions,
    drop_heartbeat,
    ensure_schema,
    ledger_counts,
    mapping_fingerprint,
    note_mapping,
    write_heartbeat,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DeadLetter:
    msg: Message
    reason: str
    table: str
    key_id: str | None = None
    """The record's key (as :func:`crossfade.target.apply.event_key_id` spells it) when the key could be
    decoded: later changes of that key are held back until the dead letter is resolved."""


@dataclass(slots=True)
class SyncStats:
    """Live counters (this process) for progress output and metrics."""

    applied: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    deleted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_lettered: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    filtered: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    deferred: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    batches: int = 0
    retries: int = 0
    last_batch_at: float = 0.0
    last_source_ts_ms: int = 0


class SyncWorker:
    """One member of the sync consumer group. ``run`` blocks until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        *,
        stop: threading.Event | None = None,
        worker_id: str | None = None,
        on_batch: Callable[[SyncWorker], None] | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.worker_id = worker_id or f"{uuid.uuid4().hex[:8]}"
        self.on_batch = on_batch
        self.kafka = settings.kafka
        self.bk = settings.sync.bookkeeping_schema
        self.topics = {self.kafka.table_topic(t): t for t in settings.tables}
        self.stats = SyncStats()
        self.meter = metrics.SyncMeter()  # publishes per committed batch, never per record
        self.epoch: str | None = None
        self.owner: dict[tuple[str, int], str] = {}
        self.appliers: dict[str, TableApplier] = {}
        self.conn: psycopg.Connection | None = None
        self.consumer: Consumer | None = None
        self.decoder: EventDecoder | None = None
        self._dlq: Producer | None = None
        self.ready = threading.Event()
        self._in_group = False
        """Whether this member holds a completed assignment (possibly empty) of the group."""
        self.left_in_group = False
        """Stopped without completing a pending join: the consumer was left open so that no
        LeaveGroup is sent; the process must exit without finalising it."""
        self._pending_reclaim = False
        self._pending = SyncStats()
        self._next_epoch_check = 0.0
        self.replay_until: dict[tuple[str, int], int] = {}
        """Partitions being replayed after a rewind -> the offset where the replay ends."""
        self.mapped: dict[str, MappedSource] = {}
        """Source tables with a mapping (crossfade.sync.mapped); the others are identity-mapped."""
        self.writers: dict[str, Any] = {}
        self.target_shapes: dict[str, Any] = {}
        self.table_order: list[str] = list(settings.tables)
        self._dead: list[tuple[Held, str]] = []
        """Dead letters of the batch being applied (with their table), produced before it commits."""
        self._parent_changes = ParentChanges()
        """Parents that arrived, left or moved in the transaction being applied (sync.children)."""
        self._next_deferred_retry = 0.0
        self.deferred_checked_at = 0.0
        """time.time() of the last committed retry of deferred rows (the demo waits for one after its fence)."""
        self.poisoned: dict[tuple[str, str], str] = {}
        """(table, key id) -> the dead letter (undecodable change) later changes of the key wait for."""
        self._next_poison_check = 0.0
        self.rejects = RejectLog()
        """Expected rejects at INFO, a summary per table and rule each minute."""
        self.origin: str | None = None
        """Replication origin tagging this worker's target session ("" when tagging failed)."""
        self.require_origin = False
        """Fail instead of writing untagged (the fallback direction: an echo would loop)."""
        self._headers: dict[int, tuple[Message, Any]] = {}
        """id(message) -> (message, its headers() list): read once per record of the batch."""
        self.floors: dict[tuple[str, int], int] = {}
        """Per partition: the LSN of the newest snapshot applied there (stored beside its offset).
        Records without crossfade's position header (Kafka Connect) are positioned above it."""
        self._floors_moved: set[tuple[str, int]] = set()
        self._next_heartbeat = 0.0
        self.pause = PauseHook(self.bk)  # crossfade pause sync (sync/pause.py)
        self._next_counts = 0.0
        self._lag_low: int | None = None
        self._lag_low_at = time.monotonic()
        self._lag_low_wall: float | None = None
        self.generation_started = time.monotonic()
        """When this member's current consumer-group generation began (its last revocation or
        subscription): what the table watch measures claims against."""
        self.watch: TableWatch | None = None

    @property
    def stalled_tables(self) -> dict[str, str]:
        """Configured tables this worker sees stalled -> why (:mod:`crossfade.sync.watchdog`): no
        partition assigned to any worker of the group, its topic missing, or no progress while
        its log grows, for ``sync.stall_after_s``. Empty when none is, or before :meth:`run`
        started the watch. A copy, safe to read from any thread."""
        return dict(self.watch.stalled) if self.watch is not None else {}

    @property
    def unassigned_tables(self) -> list[str] | None:
        """The tables :attr:`stalled_tables` names, as the heartbeat reports them (the sync_alive
        gate is red while any is listed); None before the watch started."""
        return sorted(self.watch.stalled) if self.watch is not None else None

    # -- setup --------------------------------------------------------------------------------
    def _connect_target(self) -> psycopg.Connection:
        try:
            conn = connect(self.settings.target, "target", autocommit=True)
        except PreflightError as exc:
            if not self.appliers:
                raise  # never connected: a wrong DSN or user, say so and stop
            raise DatabaseUnavailable(str(exc)) from None  # it was up: a restart, wait for it
        if (
            self.settings.sync.tag_origin
        ):  # so a capture the other way skips our writes (sync.origin)
            try:
                self.origin = tag_session(conn)
            except PreflightError as exc:
                if self.require_origin:
                    conn.close()
                    raise
                if self.origin != "":
                    log.warning(
                        "writes are not origin-tagged (a fallback capture would send them back): %s",
                        exc,
                    )
                self.origin = ""
        return conn

    def _setup_tables(self) -> None:
        assert self.conn is not None
        ensure_schema(self.conn, self.bk)
        note_mapping(self.conn, self.bk, mapping_fingerprint(self.settings.mapping))
        mapping = self.settings.mapping
        mapped = set(mapping.tables) if mapping is not None else set()
        with connect(self.settings.source, "source") as src:
            for table in self.settings.tables:
                if table in mapped:
                    continue
                shape = ensure_target_table(
                    src, self.conn, table, table, self.settings.sync.create_tables, self.bk
                )
                self.appliers[table] = self._applier(table, shape)
            if mapped:
                from crossfade.mapping.schema_check import load_mapper

                mapper, report = load_mapper(
                    mapping,
                    list(self.settings.tables),
                    src,
                    self.conn,
                    self.settings.sync.append_only_tables,
                )
                report.raise_for_errors()
                for w in report.warnings:
                    log.warning("mapping: %s", w)
                self.mapped, self.writers, self.target_shapes = build_mapped(
                    mapper, report, self.conn, self.bk
                )
                from crossfade.mapping.audit import parents_first

                self.table_order = parents_first(mapper)
                log.info(
                    "mapped source tables: %s",
                    ", ".join(f"{s} -> {', '.join(m.targets)}" for s, m in self.mapped.items()),
                )

    def _applier(self, table: str, shape: Any) -> TableApplier:
        assert self.conn is not None
        added = {
            col: (int(since), fill)
            for col, since, fill in self.conn.execute(
                sql.SQL("SELECT col, since, fill FROM {}.added_columns WHERE tbl = %s").format(
                    sql.Identifier(self.bk)
                ),
                (table,),
            ).fetchall()
        }
        if table in self.settings.sync.append_only_tables:
            return AppendOnlyApplier(shape, self.bk, added=added)
        return TableApplier(shape, self.bk, added=added)

    def _refresh_table(self, table: str, new_columns: list[str], since: int) -> None:
        """ADD COLUMN at the source, seen first in a change at position ``since``: add it to the
        target and record when it appeared (inside the batch transaction)."""
        assert self.conn is not None
        with connect(self.settings.source, "source") as src:
            for col in new_columns:
                fill = add_column_from_source(src, self.conn, table, table, col)
                self.conn.execute(
                    sql.SQL(
                        "INSERT INTO {0}.added_columns (tbl, col, since, fill) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (tbl, col) DO UPDATE SET since = LEAST({0}.added_columns.since, EXCLUDED.since)"
                    ).format(sql.Identifier(self.bk)),
                    (table, col, since, fill),
                )
            shape = ensure_target_table(src, self.conn, table, table, False)
        self.appliers[table] = self._applier(table, shape)

    def _add_uncarried_columns(self, table: str, applier: TableApplier) -> bool:
        """Add to the target the source's columns it lacks; True when there were any. They are
        recorded as appearing at the source's current WAL position, which is after the ADD
        COLUMN: older changes without them are filled, newer ones would mean a drop."""
        with connect(self.settings.source, "source") as src:
            shape = read_shape(src, table)
            row = src.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        extra = (
            [c.name for c in shape.columns if c.name not in applier.cols]
            if shape is not None
            else []
        )
        if not extra or row is None:
            return False
        lsn = int(row[0])
        self._refresh_table(table, extra, position(lsn, snapshot=False, floor=lsn))
        return True

    def _sync_enums(self) -> bool:
        changed = False
        with connect(self.settings.source, "source") as src:
            for applier in self.appliers.values():
                for col in applier.shape.columns:
                    if col.enum:
                        changed |= sync_enum(src, self._db(), col.enum)
        return changed

    def _wait_for_epoch(self) -> str:
        warned = False
        while not self.stop.is_set():
            epoch = self._current_epoch()
            if epoch:
                return epoch
            if not warned:
                log.info(
                    "waiting for capture to initialise the broker (%s has no epoch yet)",
                    self.kafka.control_topic,
                )
                warned = True
            self.stop.wait(1.0)
        raise CrossfadeError("stopped before capture initialised the broker")

    # -- assignment ---------------------------------------------------------------------------
    def _owned(self) -> set[tuple[str, int]]:
        """A snapshot of :attr:`owner`'s partitions from another thread (the watch's)."""
        for _ in range(10):
            try:
                return set(self.owner)
            except RuntimeError:  # changed size while copied: the consume loop was assigning
                continue
        return set()

    def _start_watch(self) -> None:
        s = self.settings
        self.watch = TableWatch(
            topics=self.topics,
            group_id=s.sync.group_id,
            bookkeeping_schema=self.bk,
            client_conf=self.kafka.client_config(),
            target_conninfo=s.target.conninfo,
            connect_timeout_s=s.target.connect_timeout_s,
            view=WorkerView(
                owned=self._owned,
                generation_started=lambda: self.generation_started,
                paused=lambda: self.pause.paused,
            ),
            stall_after_s=s.sync.stall_after_s,
        ).start()

    def _new_consumer(self) -> Consumer:
        s = self.settings
        return Consumer(
            {
                # topics of the subscription that appear later (capture recreating them after a
                # broker lost its log) are assigned within seconds, not after librdkafka's five
                # minutes (issue 21); kafka.extra may override it
                "topic.metadata.refresh.interval.ms": 10_000,
                **self.kafka.client_config(),
                "group.id": s.sync.group_id,
                "client.id": f"crossfade-sync-{self.worker_id}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # never jump silently: a stored offset beyond the log end is an error we handle
                "auto.offset.reset": "error",
                "isolation.level": "read_committed",
                "max.poll.interval.ms": s.sync.max_poll_interval_ms,
                "session.timeout.ms": s.sync.session_timeout_ms,
                "fetch.wait.max.ms": s.sync.fetch_wait_max_ms,
                "allow.auto.create.topics": False,
            }
        )

    def _subscribe(self) -> None:
        assert self.consumer is not None
        self.generation_started = time.monotonic()
        self.consumer.subscribe(
            list(self.topics),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def _resubscribe(self) -> None:
        """The watch found a table stalled (:mod:`crossfade.sync.watchdog`): leave the group and
        join again with a new consumer, so the group assigns from fresh metadata (topics that
        appeared since: an unsubscribe/subscribe of the same consumer was seen joining again with
        its cached metadata, still without them). Not while a join is pending: a LeaveGroup then
        wedges Tansu's group (:meth:`_finish_join`); the next stall report tries again."""
        assert self.consumer is not None
        stalled = ", ".join(sorted(self.stalled_tables)) or "-"
        if not self._in_group:
            log.warning(
                "stalled table(s) %s: a consumer group rebalance is pending, not re-subscribing yet",
                stalled,
            )
            return
        log.warning("stalled table(s) %s: re-subscribing to the change topics", stalled)
        metrics.resubscribed()
        self.consumer.close()  # LeaveGroup; on_revoke forgets the partitions
        self.consumer = self._new_consumer()
        self._subscribe()

    def _claim(self, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        assert self.epoch is not None
        token = f"{self.worker_id}:{uuid.uuid4().hex[:8]}"
        stored = self._with_db_retry(
            lambda: claim_partitions(
                self._db(), self.bk, self.settings.sync.group_id, tps, self.epoch or "", token
            )
        )
        for tp in tps:
            self.owner[tp] = token
            self.floors[tp] = stored[tp].snapshot_floor
        self._with_db_retry(lambda: self._load_replays(tps))
        return {tp: s.next_offset for tp, s in stored.items()}

    def _load_replays(self, tps: list[tuple[str, int]]) -> None:
        rows = (
            self._db()
            .execute(
                sql.SQL(
                    "SELECT topic, partition, max(until_offset) FROM {}.replay WHERE group_id = %s AND epoch = %s "
                    "AND finished_at IS NULL GROUP BY topic, partition"
                ).format(sql.Identifier(self.bk)),
                (self.settings.sync.group_id, self.epoch),
            )
            .fetchall()
        )
        for tp in tps:
            self.replay_until.pop(tp, None)
        for topic, partition, until in rows:
            if (topic, partition) in tps:
                self.replay_until[(topic, partition)] = int(until)
                log.info("replaying %s[%d] up to offset %d (rewind)", topic, partition, int(until))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._in_group = True
        tps = [(p.topic, p.partition) for p in partitions]
        if not tps or self.stop.is_set():  # stopping: only completing the join (_finish_join)
            return
        # a rejoin after a broker restart must not claim under the old epoch
        self.epoch = self._current_epoch() or self.epoch
        offsets = self._claim(tps)
        assigned = [TopicPartition(t, p, offsets[(t, p)]) for t, p in tps]
        consumer.assign(assigned)
        self.pause.on_assign(consumer, assigned)  # paused: the new partitions too, at once
        log.info("assigned %s", ", ".join(f"{t}[{p}]@{offsets[(t, p)]}" for t, p in tps))
        # report the new assignment before the first batch from it commits: a fence that batch
        # completes must not be read beside a heartbeat that still shows no partition
        self._next_heartbeat = 0.0
        self.ready.set()

    def _finish_join(self) -> bool:
        """Stopping while this member's join is pending at the broker (a rebalance in progress):
        let the join complete before leaving the group. False when it did not complete: the
        caller must then not send LeaveGroup (:attr:`left_in_group`).

        Tansu (0.6) acknowledges a LeaveGroup sent while the member's JoinGroup is held (the
        group waits for a killed member's session to expire), then completes that join anyway
        and elects the departed member leader of the next generation: the group never leaves
        that rebalance and no worker is ever assigned a partition again. Apache Kafka handles it.
        Waiting for the assignment (at most the session timeout, then a margin) costs a stopping
        worker a few seconds; records polled meanwhile are dropped (offsets live in the target).
        If the join does not complete, the worker goes like a killed one: the broker expires it
        after the session timeout, which Tansu handles."""
        assert self.consumer is not None
        if self._in_group:
            return True
        wait_s = self.settings.sync.session_timeout_ms / 1000 + 5
        log.info(
            "stopping during a consumer group rebalance: completing it before leaving (at most %.0f s)",
            wait_s,
        )
        deadline = time.monotonic() + wait_s
        while not self._in_group and time.monotonic() < deadline:
            try:
                self.consumer.poll(0.2)
            except KafkaException as exc:
                log.warning("consumer group rebalance not completed (%s)", exc)
                break
        if not self._in_group:
            log.warning(
                "consumer group rebalance not completed in %.0f s: leaving without LeaveGroup "
                "(the broker expires this member after sync.session_timeout_ms)",
                wait_s,
            )
        return self._in_group

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._in_group = False  # a rebalance began: until the next assignment a join is pending
        self.generation_started = time.monotonic()
        for p in partitions:
            self.owner.pop((p.topic, p.partition), None)
        self._next_heartbeat = 0.0
        if partitions:
            log.info("revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def _reclaim_all(self) -> None:
        """The broker epoch changed under us: restart every owned partition at offset 0."""
        assert self.consumer is not None
        tps = list(self.owner)
        self.epoch = self._wait_for_epoch()
        if not tps:
            return
        offsets = self._claim(tps)
        self.consumer.assign([TopicPartition(t, p, offsets[(t, p)]) for t, p in tps])
        log.warning(
            "broker epoch changed to %s: replaying %d partitions from the new log",
            self.epoch,
            len(tps),
        )

    # -- DB helpers ---------------------------------------------------------------------------
    def _db(self) -> psycopg.Connection:
        if self.conn is None or self.conn.closed or self.conn.broken:
            self.conn = self._connect_target()
        return self.conn

    def _with_db_retry(self, fn: Callable[[], Any]) -> Any:
        def before_sleep(rs: RetryCallState) -> None:
            self.stats.retries += 1
            exc = rs.outcome.exception() if rs.outcome else None
            metrics.retried("sync", exc)
            log.warning(
                "transient error, retry %d in %.1fs: %s",
                rs.attempt_number,
                rs.next_action.sleep if rs.next_action else 0,
                _one_line(exc),
            )
            if self.conn is not None:
                with contextlib.suppress(Exception):
                    self.conn.close()
                self.conn = None

        for attempt in retrying(before_sleep):
            with attempt:
                if self.stop.is_set() and attempt.retry_state.attempt_number > 1:
                    raise CrossfadeError("stopped while retrying")
                return fn()
        return None

    # -- main loop ----------------------------------------------------------------------------
    def run(self) -> None:
        """Set up, then consume and apply until :attr:`stop` is set; raise what stops sync."""
        # a target starting up or recovering from a crash is waited for (connect() says which)
        self.conn = self._with_db_retry(self._connect_target)

        def setup() -> None:
            self._db()  # reconnects after a retry closed the connection
            self._setup_tables()

        self._with_db_retry(setup)
        self._start_watch()  # from here on a stall is reported, waiting for capture included
        try:
            self._consume_loop()
        finally:
            if self.watch is not None:
                self.watch.stop()

    def _consume_loop(self) -> None:
        s = self.settings
        self.epoch = self._wait_for_epoch()
        self.decoder = EventDecoder(self.kafka)
        self._dlq = Producer(
            {**self.kafka.client_config(), "enable.idempotence": True, "acks": "all"}
        )
        self.consumer = self._new_consumer()
        self._subscribe()
        timeout = s.sync.batch_timeout_ms / 1000
        joining = JoinProgress(s.sync.group_id, len(self.topics))
        try:
            while not self.stop.is_set():
                joining.tick(self._in_group)
                self.rejects.flush()
                try:
                    msgs = self.consumer.consume(s.sync.batch_size, timeout)
                except KafkaException as exc:
                    log.warning("consume failed: %s", exc)
                    metrics.error("sync", "transient")
                    self.stop.wait(1)
                    continue
                # consumer lag, at most once a second
                self.meter.poll(self.consumer, self.owner, self.topics)
                if time.monotonic() >= self._next_heartbeat:
                    self._heartbeat()
                    self.pause.check(self.consumer, self._db)
                # A broker restarted empty may show no epoch until capture is back; a rejoin in
                # between keeps the old one, and on a new log shorter than our offsets no record
                # (and, on Tansu, no out-of-range error) ever tells us. Look every few seconds.
                if self.owner and time.monotonic() >= self._next_poison_check:
                    self._next_poison_check = time.monotonic() + 2
                    self._with_db_retry(self._load_poisoned)
                # deferred rows wait for a parent that may come through another partition
                if self.mapped and time.monotonic() >= self._next_deferred_retry:
                    self._next_deferred_retry = time.monotonic() + 1
                    try:
                        self._with_db_retry(self._retry_idle)
                    except StaleAssignment as exc:
                        log.warning("%s", exc)
                if not msgs and time.monotonic() >= self._next_epoch_check:
                    self._next_epoch_check = time.monotonic() + 10
                    if self.owner and self._epoch_changed():
                        self._pending_reclaim = True
                if self._pending_reclaim:
                    self._pending_reclaim = False
                    self._reclaim_all()
                    continue
                if self.watch is not None and self.watch.resubscribe.is_set():
                    self.watch.resubscribe.clear()
                    self._resubscribe()
                    continue
                if msgs:
                    self._process(msgs)
        finally:
            try:
                if self._finish_join() or not self.stop.is_set():
                    self.consumer.close()
                else:
                    self.left_in_group = True  # the process exits without closing it (ops/cli.py)
            finally:
                self.rejects.flush(force=True)
                self._drop_heartbeat()
                if self.conn is not None:
                    self.conn.close()
                self._dlq.flush(10)

    # -- heartbeat ----------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        """Report this worker in ``<bookkeeping>.heartbeats`` (the ``sync_alive`` gate's evidence):
        partitions held, consumer lag and how long it has stayed above its low. A target that does
        not answer skips it (the batch path waits for the target); the gate then sees it age."""
        now = time.monotonic()
        self._next_heartbeat = now + self.settings.sync.heartbeat_interval_s
        lags = [self.meter.lag[tp] for tp in self.owner if tp in self.meter.lag]
        lag = sum(lags) if lags else (0 if not self.owner else None)
        if lag is not None and (self._lag_low is None or lag <= self._lag_low):
            self._lag_low, self._lag_low_at, self._lag_low_wall = lag, now, time.time()
        hb = Heartbeat(
            self.worker_id,
            "sync",
            partitions=sorted(f"{t}[{p}]" for t, p in self.owner),
            lag=lag,
            lag_low=self._lag_low,
            lag_low_at=datetime.fromtimestamp(self._lag_low_wall, UTC)
            if self._lag_low_wall
            else None,
            unassigned_tables=self.unassigned_tables,
            detail={
                "lag_low_age_s": round(now - self._lag_low_at, 1),
                "batches": self.stats.batches,
                "last_batch_age_s": round(time.time() - self.stats.last_batch_at, 1)
                if self.stats.last_batch_at
                else None,
                "epoch": self.epoch,
                "paused": self.pause.paused,
                # records behind per topic (the console charts it per table)
                "lag_by_topic": _lag_by_topic(self.meter.lag, self.owner),
            },
        )
        try:
            write_heartbeat(self._db(), self.bk, hb)
            if self.mapped and now >= self._next_counts:
                self._next_counts = now + 30
                metrics.set_ledger_counts(ledger_counts(self._db(), self.bk))
        except (psycopg.Error, CrossfadeError) as exc:
            log.debug("heartbeat not written: %s", _one_line(exc))
            with contextlib.suppress(Exception):
                if self.conn is not None and self.conn.broken:
                    self.conn = None

    def _drop_heartbeat(self) -> None:
        with contextlib.suppress(Exception):
            if self.conn is not None and not self.conn.closed and not self.conn.broken:
                drop_heartbeat(self.conn, self.bk, self.worker_id)

    def _process(self, msgs: list[Message]) -> None:
        good: list[Message] = []
        for m in msgs:
            err = m.error()
            if err is None:
                good.append(m)
                continue
            code = err.code()
            if code == KafkaError._PARTITION_EOF:
                continue
            if code in (KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE):
                self._handle_out_of_range(m)
                return
            if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
                log.warning(
                    "topic %s unknown to the broker (restarted?); checking the epoch", m.topic()
                )
                self._pending_reclaim = self._epoch_changed()
                self.stop.wait(1)
                return
            log.warning("Kafka error on %s[%s]: %s", m.topic(), m.partition(), err.str())
        if not good:
            return
        # a record from another broker epoch means the log was replaced under us
        self._headers = {}
        for m in good:
            hs = m.headers()
            self._headers[id(m)] = (m, hs)
            ep = header_in(hs, EPOCH_HEADER)
            if ep is not None and ep != self.epoch:
                log.warning(
                    "record of epoch %s on %s[%d] (ours %s)",
                    ep,
                    m.topic(),
                    m.partition(),
                    self.epoch,
                )
                self._reclaim_all()
                return
        t0 = time.monotonic()
        try:
            try:
                self._with_db_retry(lambda: self._apply_batch(good))
            except psycopg.errors.InvalidTextRepresentation as exc:
                if "enum" not in str(exc):
                    raise self._type_changed(exc) or exc from None
                # a label added to a source enum: add it to the target (or another worker just
                # did, and nothing is left to add), then apply again, once
                self._with_db_retry(self._sync_enums)
                try:
                    self._with_db_retry(lambda: self._apply_batch(good))
                except psycopg.errors.InvalidTextRepresentation as again:
                    raise self._type_changed(again) or again from None
            except psycopg.errors.DataError as exc:
                raise self._type_changed(exc) or exc from None
        except StaleAssignment as exc:
            log.warning("%s", exc)
            self.meter.discard()
            self._pending = SyncStats()
            return
        self._merge_pending()
        if self.consumer is not None:
            commit: dict[tuple[str, int], int] = {}
            for m in good:
                topic, partition, offset = record_place(m)
                commit[(topic, partition)] = max(commit.get((topic, partition), 0), offset + 1)
            with contextlib.suppress(KafkaException):  # lag display only
                self.consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in commit.items()],
                    asynchronous=True,
                )
        self.stats.batches += 1
        self.stats.last_batch_at = time.time()
        self.meter.committed(self.stats, len(good), time.monotonic() - t0)
        self.meter.poll(self.consumer, self.owner, self.topics, force=True)
        if self.on_batch:
            self.on_batch(self)

    def _type_changed(self, exc: psycopg.Error) -> CrossfadeError | None:
        """The target refused a value: if a column changed type at the source, say which (a
        clear stop with its runbook line) instead of the driver's message; else None."""
        with connect(self.settings.source, "source") as src:
            for table, applier in self.appliers.items():
                now = read_shape(src, table)
                current = {c.name: c.type_sql for c in now.columns} if now is not None else {}
                for col in applier.shape.columns:
                    if current.get(col.name, col.type_sql) != col.type_sql:
                        return SchemaMismatch(
                            f"column {col.name} of {table} changed type at the source ({col.type_sql} -> "
                            f"{current[col.name]}) and the target refuses its new values ({_one_line(exc)})",
                            "runbook: stop writes to the table, let sync drain, migrate the target column to the "
                            "new type (ALTER TABLE ... ALTER COLUMN ... TYPE ...), restart sync (docs/operations.md)",
                        )
        return None

    def _current_epoch(self) -> str | None:
        """The broker's epoch, or None while it cannot be read (a restarting broker is waited
        for by the callers, never a reason to stop sync)."""
        try:
            return current_epoch(self.kafka.client_config(), self.kafka.control_topic, timeout=3)
        except BrokerUnavailable as exc:
            log.warning("broker epoch unreadable for now: %s", exc)
            return None

    def _epoch_changed(self) -> bool:
        epoch = self._current_epoch()
        return epoch is not None and epoch != self.epoch

    def _handle_out_of_range(self, m: Message) -> None:
        if self._epoch_changed() or self._current_epoch() is None:
            self._reclaim_all()
            return
        raise BrokerDataLost(
            f"the offset stored for {m.topic()}[{m.partition()}] is beyond the end of the broker's log, "
            "yet the broker epoch is unchanged",
            "the topic lost data (retention or deletion): restart capture with a new snapshot, "
            "or rewind sync to a checkpoint that is still in the topic",
        )

    # -- one transaction ----------------------------------------------------------------------
    def _decode(self, m: Message) -> ChangeEvent | ControlRecord | DeadLetter | None:
        assert self.decoder is not None
        topic, partition, _offset = record_place(m)
        table = self.topics.get(topic, topic)
        seen = self._headers.get(id(m))
        hs = seen[1] if seen is not None and seen[0] is m else m.headers()
        kind = control_kind(hs)
        if kind is not None:
            try:
                return ControlRecord.decode(m.value() or b"")
            except Exception as exc:
                return DeadLetter(m, f"corrupt control record: {exc}", table)
        if m.value() is None:
            return None  # tombstone (compaction marker): nothing to apply
        try:
            # every shape problem of one record is a DecodeError (crossfade.events.decode):
            # the record is dead-lettered with the reason, the batch goes on
            pos = header_in(hs, POSITION_HEADER)
            tp = (topic, partition)
            floor = self.floors.get(tp, 0)
            e = self.decoder.decode(m.key(), m.value(), table, pos, floor)
            if pos is None and e.snapshot not in ("false", "incremental") and e.lsn > floor:
                # a snapshot record from Kafka Connect: what streams after it on this partition
                # is positioned above it (a change in flight across the snapshot still wins)
                self.floors[tp] = e.lsn
                self._floors_moved.add(tp)
            return e
        except DecodeError as exc:
            key_id = None
            with contextlib.suppress(Exception):
                kd, _codec = self.decoder.decoder.decode_with_schema(m.key() or b"")
                if isinstance(kd, dict):
                    key_id = json.dumps(kd, sort_keys=True, default=str)
            return DeadLetter(m, str(exc), table, key_id)

    def _still_poisoned(
        self, conn: psycopg.Connection, e: ChangeEvent, fresh: set[tuple[str, str]]
    ) -> bool:
        """Whether ``e`` must wait behind an undecodable change of its key. The dead letter is
        share-locked and re-read in the batch transaction: a ``dlq replay`` resolving it either
        commits first (then nothing waits) or waits for this batch (then it releases what this
        batch held)."""
        if not self.poisoned:
            return False
        k = (e.table, event_key_id(e))
        entry = self.poisoned.get(k)
        if entry is None:
            return False
        if k in fresh:
            return True
        row = conn.execute(
            sql.SQL(
                "SELECT outcome FROM {}.ledger WHERE source_table = %s AND entry = %s FOR SHARE"
            ).format(sql.Identifier(self.bk)),
            (e.table, entry),
        ).fetchone()
        if row is None or row[0] != "dead_letter":
            self.poisoned.pop(k, None)
            return False
        return True

    def _load_poisoned(self) -> None:
        """Keys whose change could not be decoded: their later changes wait (FAULTS 25)."""
        rows = (
            self._db()
            .execute(
                sql.SQL(
                    "SELECT source_table, source_key, entry FROM {}.ledger WHERE outcome = 'dead_letter' "
                    "AND rule = 'decode' AND source_key IS NOT NULL"
                ).format(sql.Identifier(self.bk))
            )
            .fetchall()
        )
        self.poisoned = {(t, json.dumps(k, sort_keys=True, default=str)): e for t, k, e in rows}

    def _apply_batch(self, msgs: list[Message]) -> None:
        # counts of this attempt only: merged after the commit, so a retried batch counts once
        self._pending = SyncStats()
        self.meter.discard()
        conn = self._db()
        s = sql.Identifier(self.bk)
        group = self.settings.sync.group_id
        by_tp: dict[tuple[str, int], list[Message]] = defaultdict(list)
        for m in msgs:
            topic, partition, _offset = record_place(m)
            by_tp[(topic, partition)].append(m)
        self._dead = []
        self._parent_changes = ParentChanges()
        # a table refreshed for ADD COLUMN inside this transaction reverts with it: a rolled-back
        # attempt (enum label to add, connection cut, stale owner) must not leave an applier that
        # expects a column the target does not have
        appliers, floors = dict(self.appliers), dict(self.floors)
        self._floors_moved = set()
        try:
            self._apply_batch_tx(conn, s, group, by_tp)
        except BaseException:
            self.appliers, self.floors = appliers, floors
            raise

    def _apply_batch_tx(
        self,
        conn: psycopg.Connection,
        s: sql.Identifier,
        group: str,
        by_tp: dict[tuple[str, int], list[Message]],
    ) -> None:
        with conn.transaction():
            # 1. fencing + already-applied filter
            nxt_of = self._lock_owned(conn, sorted(by_tp))
            fresh = {
                tp: [m for m in by_tp[tp] if record_place(m)[2] >= nxt_of[tp]]
                for tp in sorted(by_tp)
            }
            # 2. decode and dead-letter; count the leading items a rewind's replay re-applies
            dead: list[DeadLetter] = []
            held: list[Held] = []
            fresh_poison: set[tuple[str, str]] = set()
            items: dict[tuple[str, int], list[ChangeEvent | ControlRecord]] = {}
            replayed: dict[tuple[str, int], int] = {}
            origins: dict[tuple[str, str, int], Origin] = {}
            for tp, ms in fresh.items():
                out: list[ChangeEvent | ControlRecord] = []
                until = self.replay_until.get(tp)
                mapped = self.topics.get(tp[0]) in self.mapped
                for m in ms:
                    d = self._decode(m)
                    if isinstance(d, DeadLetter):
                        dead.append(d)
                        if d.key_id is not None:
                            self.poisoned[(d.table, d.key_id)] = (
                                f"@{m.topic()}/{m.partition()}/{m.offset()}"
                            )
                            fresh_poison.add((d.table, d.key_id))
                    elif (
                        isinstance(d, ChangeEvent)
                        and d.key is not None
                        and self._still_poisoned(conn, d, fresh_poison)
                    ):
                        held.append(
                            Held(
                                d.table,
                                f"@{m.topic()}/{m.partition()}/{m.offset()}",
                                d.position,
                                "held",
                                json.loads(event_key_id(d)),
                                rule="held",
                                reason=f"an earlier change of this key is a dead letter ({self.poisoned[(d.table, event_key_id(d))]})",
                                origin=_origin(m, d.position),
                            )
                        )
                    elif d is not None:
                        out.append(d)
                        if mapped and isinstance(d, ChangeEvent):
                            origins[(d.table, event_key_id(d), d.position)] = _origin(m, d.position)
                        if until is not None and record_place(m)[2] < until:
                            replayed[tp] = len(out)
                items[tp] = out
            if dead:
                self._dead_letter(dead)
                write_ledger(
                    conn,
                    s,
                    [
                        Held(
                            d.table,
                            f"@{d.msg.topic()}/{d.msg.partition()}/{d.msg.offset()}",
                            0,
                            "dead_letter",
                            json.loads(d.key_id) if d.key_id else None,
                            rule="decode",
                            reason=d.reason,
                            origin=_origin(d.msg),
                        )
                        for d in dead
                    ],
                )
            if held:
                log.warning("%d change(s) held back behind a dead letter of their key", len(held))
                write_ledger(conn, s, held)
            # 3. apply per table, parents of a mapping's references first
            per_tp_stats: dict[tuple[str, int], list[int]] = {}
            parents = (
                make_parents(conn, self.target_shapes, self.writers, self.bk)
                if self.mapped
                else None
            )
            present = {self.topics[tp[0]] for tp in items if tp[0] in self.topics}
            for table in [t for t in self.table_order if t in present]:
                tps = [tp for tp in items if self.topics.get(tp[0]) == table]
                self._apply_table(
                    conn,
                    table,
                    {tp: items[tp] for tp in tps},
                    per_tp_stats,
                    replayed,
                    origins,
                    parents,
                )
            if self.mapped:
                self._retry_deferred(conn, list(fresh), parents, expired_only=True)
                self._follow_parents(conn, parents)
            mapped_dead = [h for h, _t in self._dead]  # counted below; producing clears the list
            if self._dead:
                self._produce_dead()
            # 4. offsets and stats: one statement each for the whole batch (a round trip per
            # partition was most of a small batch's time on a busy target)
            replays_done: list[tuple[str, int]] = []
            offs: list[tuple[str, int, int]] = []
            stats: list[tuple[Any, ...]] = []
            for tp, ms in fresh.items():
                if not ms:
                    continue
                nxt = record_place(ms[-1])[2] + 1
                offs.append((tp[0], tp[1], nxt))
                until = self.replay_until.get(tp)
                if until is not None and nxt >= until:
                    replays_done.append(tp)
                applied, skipped, last_lsn, last_ts = per_tp_stats.get(tp, [0, 0, -1, 0])
                self.meter.note(self.topics.get(tp[0], tp[0]), last_ts)
                ndead = sum(1 for d in dead if (d.msg.topic(), d.msg.partition()) == tp) + sum(
                    1
                    for h in mapped_dead
                    if h.origin is not None and (h.origin.topic, h.origin.partition) == tp
                )
                stats.append(
                    (
                        self.topics.get(tp[0], tp[0]),
                        tp[0],
                        tp[1],
                        applied,
                        skipped,
                        ndead,
                        last_lsn if last_lsn >= 0 else None,
                        last_ts,
                    )
                )
            if offs:
                topics, parts, nexts = map(list, zip(*offs, strict=True))
                conn.execute(
                    sql.SQL(
                        "UPDATE {}.offsets AS o SET next_offset = v.nxt, updated_at = now() "
                        "FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS v(topic, partition, nxt) "
                        "WHERE o.group_id = %s AND o.topic = v.topic AND o.partition = v.partition"
                    ).format(s),
                    (topics, parts, nexts, group),
                )
                cols = list(map(list, zip(*stats, strict=True)))
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
                    ).format(s=s),
                    cols,
                )
            for tp in sorted(self._floors_moved):
                conn.execute(
                    sql.SQL(
                        "UPDATE {}.offsets SET snapshot_floor = GREATEST(snapshot_floor, %s) "
                        "WHERE group_id = %s AND topic = %s AND partition = %s"
                    ).format(s),
                    (self.floors[tp], group, tp[0], tp[1]),
                )
            for tp in replays_done:
                conn.execute(
                    sql.SQL(
                        "UPDATE {}.replay SET finished_at = now() WHERE group_id=%s AND topic=%s AND partition=%s "
                        "AND finished_at IS NULL"
                    ).format(s),
                    (group, tp[0], tp[1]),
                )
        for tp in replays_done:  # committed
            self.replay_until.pop(tp, None)
            log.info("replay of %s[%d] complete", tp[0], tp[1])

    def _lock_owned(
        self, conn: psycopg.Connection, tps: list[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        """Lock the offset rows of ``tps`` and check this worker still owns them (fencing);
        returns each one's stored next offset. Raises :class:`StaleAssignment`.

        One statement for all of them (a round trip per partition was, with four partitions per
        topic, twenty sequential round trips per batch on a busy target). The rows are locked in
        the order of ``sorted(tps)``, as :func:`~crossfade.target.store.claim_partitions` takes them:
        ``FOR UPDATE`` locks rows as they leave the sort, and ``COLLATE "C"`` orders topic names
        as Python does."""
        want = sorted(tps)
        if not want:
            return {}
        stmt = sql.SQL(
            "SELECT o.topic, o.partition, o.next_offset, o.owner FROM {}.offsets o "
            "JOIN unnest(%s::text[], %s::int[]) AS w(topic, partition) ON o.topic = w.topic AND o.partition = w.partition "
            'WHERE o.group_id = %s ORDER BY o.topic COLLATE "C", o.partition FOR UPDATE OF o'
        ).format(sql.Identifier(self.bk))
        rows = conn.execute(
            stmt, ([t for t, _ in want], [p for _, p in want], self.settings.sync.group_id)
        ).fetchall()
        stored = {(t, p): (nxt, owner) for t, p, nxt, owner in rows}
        out: dict[tuple[str, int], int] = {}
        for tp in want:
            row = stored.get(tp)
            mine = self.owner.get(tp)
            if row is None or mine is None or row[1] != mine:
                raise StaleAssignment(
                    f"partition {tp[0]}[{tp[1]}] is owned by another sync worker now; batch rolled back"
                )
            out[tp] = int(row[0])
        return out

    def _apply_table(
        self,
        conn: psycopg.Connection,
        table: str,
        items: dict[tuple[str, int], list[ChangeEvent | ControlRecord]],
        per_tp_stats: dict[tuple[str, int], list[int]],
        replayed: dict[tuple[str, int], int] | None = None,
        origins: dict[tuple[str, str, int], Origin] | None = None,
        parents: TargetParents | None = None,
    ) -> None:
        """``replayed``: per partition, how many leading items a rewind's replay re-applies."""
        wm = [-1]
        apply: Callable[[list[ChangeEvent], bool], Any]
        truncate: Callable[[int, str], int]
        if table in self.mapped:
            ms = self.mapped[table]

            def apply(run: list[ChangeEvent], replay: bool) -> Any:
                return self._process_mapped(conn, ms, run, origins or {}, parents, replay=replay)

            def truncate(pos: int, reason: str) -> int:
                n = ms.truncate(conn, pos, reason)
                self._parent_changes.update(ms.take_left())
                return n
        else:
            applier = self.appliers[table]
            # ADD COLUMN mid-stream: the target follows the source (identity mapping). A batch holds
            # a handful of row schemas, so each is checked once, not once per event.
            # (by identity: hashing a RowSchema's nested tuples for every event is not free)
            schemas = {
                id(e.row_schema): e.row_schema
                for evs in items.values()
                for e in evs
                if isinstance(e, ChangeEvent) and e.row_schema
            }
            for rs in schemas.values():
                extra = [c for c in rs.columns if c not in applier.cols]
                if extra:
                    since = min(
                        e.position
                        for evs in items.values()
                        for e in evs
                        if isinstance(e, ChangeEvent) and e.row_schema == rs
                    )
                    self._refresh_table(table, extra, since)
                    applier = self.appliers[table]
            # a fence proves the target caught up: a column added at the source that no change
            # has carried since (no row written after the ADD COLUMN) is added here, or the
            # target would lack it for good
            fenced = any(
                isinstance(x, ControlRecord) and x.kind == "fence"
                for evs in items.values()
                for x in evs
            )
            if fenced and self._add_uncarried_columns(table, applier):
                applier = self.appliers[table]
            wm[0] = applier.prepare(conn)

            def apply(run: list[ChangeEvent], replay: bool) -> Any:
                return applier.apply(conn, run, wm[0], replay=replay)

            def truncate(pos: int, reason: str) -> int:
                return applier.truncate(conn, pos, reason)

        def account(
            tp: tuple[str, int], evs: list[ChangeEvent], res_applied: int, res_skipped: int
        ) -> None:
            st = per_tp_stats.setdefault(tp, [0, 0, -1, 0])
            st[0] += res_applied
            st[1] += res_skipped
            for e in evs:
                st[2] = max(st[2], e.lsn)
                st[3] = max(st[3], e.source_ts_ms)

        for tp, evs in items.items():
            run: list[ChangeEvent] = []
            n_replay = (replayed or {}).get(tp, 0)
            # change events apply set-based in runs; a truncate/sweep/fence applies in order
            # between, and a run never spans the end of a replay
            for i, x in enumerate([*evs, None]):
                if isinstance(x, ChangeEvent) and x.op != "t" and i != n_replay:
                    run.append(x)
                    continue
                if run:
                    res = apply(run, i <= n_replay)
                    self._toast_missing(table, res.toast_missing)
                    self._count(table, res)
                    account(tp, run, res.applied + res.deleted, res.skipped)
                    run = []
                if isinstance(x, ChangeEvent) and x.op != "t":  # the first record after the replay
                    run.append(x)
                    continue
                if x is None:
                    break
                if isinstance(x, ChangeEvent):  # TRUNCATE at the source
                    n = truncate(x.position, "truncate")
                    wm[0] = max(wm[0], x.position)
                    log.warning(
                        "TRUNCATE of %s at LSN %d applied: %d target rows deleted", table, x.lsn, n
                    )
                    account(tp, [x], 1, 0)
                elif x.kind == "sweep":
                    n = truncate(position(x.lsn, snapshot=True), "snapshot sweep")
                    wm[0] = max(wm[0], position(x.lsn, snapshot=True))
                    if n:
                        log.warning(
                            "snapshot at LSN %d no longer holds %d rows of %s: deleted",
                            x.lsn,
                            n,
                            table,
                        )
                elif x.kind == "fence":
                    self.meter.note_fence(x.source_ts_ms)
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {}.fences (token, topic, partition, lsn, source_ts) "
                            "VALUES (%s,%s,%s,%s, to_timestamp(%s/1000.0)) ON CONFLICT DO NOTHING"
                        ).format(sql.Identifier(self.bk)),
                        (x.token, tp[0], tp[1], x.lsn, x.source_ts_ms),
                    )

    # -- mapped tables ------------------------------------------------------------------------
    def _process_mapped(
        self,
        conn: psycopg.Connection,
        ms: MappedSource,
        run: list[ChangeEvent],
        origins: dict[tuple[str, str, int], Origin],
        parents: TargetParents | None,
        *,
        replay: bool = False,
        rerun: bool = False,
        expired: frozenset[str] = frozenset(),
    ) -> MappedResult:
        res = ms.process(conn, run, origins, parents, replay=replay, rerun=rerun, expired=expired)
        self._dead.extend((h, ms.source) for h in res.dead_letters)
        self._parent_changes.update(res.parent_changes)
        self._pending.filtered[ms.source] += res.filtered
        for name, n in res.filters.items():
            metrics.filtered(ms.source, name, n)
        if not rerun:
            self._pending.deferred[ms.source] += res.deferred
        return res

    def _retry_deferred(
        self,
        conn: psycopg.Connection,
        tps: list[tuple[str, int]],
        parents: TargetParents | None,
        *,
        expired_only: bool = False,
    ) -> None:
        """Re-run deferred rows (a child whose parent had not arrived) of these partitions: the
        parent may be here now; past their window they are dead-lettered. ``expired_only``: only
        those whose window has ended (a parent's arrival re-runs its children by itself)."""
        if not tps:
            return
        rows = conn.execute(
            sql.SQL(
                'SELECT source_table, entry, topic, partition, "offset", key, value, headers, now() >= deadline '
                "FROM {}.ledger WHERE outcome = 'deferred' AND source_table = ANY(%s) "
                "AND (topic || '/' || partition) = ANY(%s) {} ORDER BY first_at LIMIT 1000"
            ).format(
                sql.Identifier(self.bk),
                sql.SQL("AND now() >= deadline" if expired_only else ""),
            ),
            (list(self.mapped), [f"{t}/{p}" for t, p in tps]),
        ).fetchall()
        self._rerun(conn, rows, parents, "deferred rows")

    def _rerun(
        self,
        conn: psycopg.Connection,
        rows: list[tuple[Any, ...]],
        parents: TargetParents | None,
        what: str,
    ) -> None:
        """Map again held or child rows of the ledger: (source table, entry, topic, partition,
        offset, key, value, headers, window over), parents first."""
        if not rows:
            return
        assert self.decoder is not None
        by_table: dict[str, list[ChangeEvent]] = defaultdict(list)
        origins: dict[tuple[str, str, int], Origin] = {}
        expired: dict[str, set[str]] = defaultdict(set)
        for table, entry, topic, partition, offset, key, value, headers, is_expired in rows:
            if table not in self.mapped:
                continue
            headers = headers or {}
            e = self.decoder.decode(key, value, table, headers.get(POSITION_HEADER))
            by_table[table].append(e)
            origins[(e.table, event_key_id(e), e.position)] = Origin(
                topic, partition, offset, key, value, headers
            )
            if is_expired:
                expired[table].add(entry)
        for table in [t for t in self.table_order if t in by_table]:
            res = self._process_mapped(
                conn,
                self.mapped[table],
                by_table[table],
                origins,
                parents,
                rerun=True,
                expired=frozenset(expired[table]),
            )
            self._count(table, res)
            moved = {k: n for k, n in res.by_outcome.items() if n and k != "deferred"}
            if moved:
                log.info("%s of %s mapped again: %s", what, table, moved)

    def _follow_parents(self, conn: psycopg.Connection, parents: TargetParents | None) -> None:
        """Map again, in this transaction, the children of every parent that arrived, left or
        moved to another survivor (dedup) in it: a child finds its parent or loses it, whatever
        the order in which both arrived (sync.children). A child that is itself a parent makes
        another round."""
        bk = sql.Identifier(self.bk)
        rounds = len(self.table_order) + 2
        for _ in range(rounds):
            changes, self._parent_changes = self._parent_changes, ParentChanges()
            if not changes:
                return
            self._rerun(conn, children_to_rerun(conn, bk, changes), parents, "children")
        if self._parent_changes:
            log.warning("children still changing after %d rounds (a cycle of references?)", rounds)
            self._parent_changes = ParentChanges()

    def _retry_idle(self) -> None:
        """Retry the deferred rows of every owned partition (their parent may have come through
        another partition; past their window they must expire even when nothing arrives)."""
        if not self.mapped or not self.owner:
            return
        conn = self._db()
        self._dead = []
        self._pending = SyncStats()
        with conn.transaction():
            tps = list(self.owner)
            self._lock_owned(conn, tps)
            parents = make_parents(conn, self.target_shapes, self.writers, self.bk)
            self._parent_changes = ParentChanges()
            self._retry_deferred(conn, tps, parents)
            self._follow_parents(conn, parents)
            if self._dead:
                self._produce_dead()
        self._merge_pending()
        self.deferred_checked_at = time.time()

    def _count(self, table: str, res: Any) -> None:
        self._pending.applied[table] += res.applied
        self._pending.deleted[table] += res.deleted
        self._pending.skipped[table] += res.skipped

    def _merge_pending(self) -> None:
        for name in ("applied", "deleted", "skipped", "dead_lettered", "filtered", "deferred"):
            total, new = getattr(self.stats, name), getattr(self._pending, name)
            for table, n in new.items():
                total[table] += n
        for table, n in self._pending.deferred.items():
            if n:
                metrics.deferred(table, n)
        self._pending = SyncStats()

    def _toast_missing(self, table: str, keys: list[str]) -> None:
        if keys:
            # The row the update refers to is not in the target, so its unchanged TOASTed values
            # are unknown: refuse loudly rather than write Debezium's placeholder or NULLs.
            raise SchemaMismatch(
                f"{len(keys)} update(s) of {table} keep unchanged TOASTed values of rows missing in the target (keys {keys[:3]})",
                f"set REPLICA IDENTITY FULL on {table} in the source, or re-snapshot the table",
            )

    def _produce_dead(self) -> None:
        """Produce the batch's mapping dead letters (original bytes, rule, reason) and wait for
        Kafka's acknowledgement: the batch commits only after they are durable."""
        assert self._dlq is not None
        for h, table in self._dead:
            o = h.origin
            self._pending.dead_lettered[table] += 1
            metrics.dead_lettered(table, h.rule or "mapping")
            # an expected reject (the mapping's rules say so): INFO, summed up each minute
            self.rejects.note(table, h.rule or "mapping", h.entry, h.reason)
            headers: list[tuple[str, str | bytes | None]] = [
                ("crossfade.dlq.reason", (h.reason or "").encode()),
                ("crossfade.dlq.rule", (h.rule or "mapping").encode()),
                ("crossfade.dlq.table", table.encode()),
                ("crossfade.dlq.source_key", h.entry.encode()),
                ("crossfade.dlq.position", str(h.position).encode()),
                ("crossfade.dlq.ts", str(int(time.time() * 1000)).encode()),
            ]
            if o is not None:
                headers += [
                    ("crossfade.dlq.topic", o.topic.encode()),
                    ("crossfade.dlq.partition", str(o.partition).encode()),
                    ("crossfade.dlq.offset", str(o.offset).encode()),
                    *((k, v.encode()) for k, v in o.headers.items()),
                ]
            self._dlq.produce(
                self.kafka.dlq_topic,
                key=o.key if o else None,
                value=o.value if o else None,
                headers=headers,
            )
        self._dead = []
        if self._dlq.flush(30):
            raise BrokerUnavailable("dead-letter records not acknowledged by Kafka")

    def _dead_letter(self, dead: list[DeadLetter]) -> None:
        assert self._dlq is not None
        for d in dead:
            m = d.msg
            topic, partition, offset = record_place(m)
            self._pending.dead_lettered[d.table] += 1
            metrics.dead_lettered(d.table, "decode")
            log.error("dead-lettered %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(), d.reason)
            self._dlq.produce(
                self.kafka.dlq_topic,
                key=m.key(),
                value=m.value(),
                headers=[
                    ("crossfade.dlq.reason", d.reason.encode()),
                    ("crossfade.dlq.rule", b"decode"),
                    ("crossfade.dlq.table", d.table.encode()),
                    ("crossfade.dlq.topic", topic.encode()),
                    ("crossfade.dlq.partition", str(partition).encode()),
                    ("crossfade.dlq.offset", str(offset).encode()),
                    ("crossfade.dlq.ts", str(int(time.time() * 1000)).encode()),
                ],
            )
        # durable before the batch commits: a crash after the commit must not lose them
        if self._dlq.flush(30):
            raise BrokerUnavailable("dead-letter records not acknowledged by Kafka")


def _origin(m: Message, pos: int | None = None) -> Origin:
    """Where ``m`` was read, to re-run it later (a deferral, a dead letter). ``pos``: its decoded
    position, kept as the position header when the record has none (Kafka Connect): a re-run
    then orders it as sync did, snapshot floor included."""
    headers = {
        k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        for k, v in record_headers(m)
        if v is not None
    }
    if pos is not None and POSITION_HEADER not in headers:
        headers[POSITION_HEADER] = str(pos)
    return Origin(*record_place(m), m.key(), m.value(), headers)


def _lag_by_topic(lag: dict[tuple[str, int], int], owned: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for (topic, partition), n in lag.items():
        if (topic, partition) in owned:
            out[topic] = out.get(topic, 0) + n
    return out


def _one_line(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
