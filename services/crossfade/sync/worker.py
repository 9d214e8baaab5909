"""The sync worker: Kafka consumer group -> decode -> guarded, set-based apply -> target.

Commit point of a batch, in order (DESIGN decision 1):

1. consume up to ``sync.batch_size`` records (one ``consume`` call, so a rebalance never splits
   a batch: callbacks run inside ``consume``);
2. in ONE target transaction, the commit step (:mod:`crossfade.sync.commit`, whose numbered
   docstring is its shape): fencing, the planner's decode and holds
   (:mod:`crossfade.sync.planner`), dead letters, apply per table through its sink
   (:mod:`crossfade.sync.sinks`), next offsets, stats and fences; COMMIT;
3. commit the same offsets to Kafka asynchronously, for lag display only.

A crash before 2 completes rolls the batch back whole; the restart (or the next owner) seeks to
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
from collections.abc import Callable
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from tenacity import RetryCallState

from crossfade import metrics
from crossfade.config import Settings
from crossfade.db import connect, end_idle_transactions_after, retrying
from crossfade.errors import (
    BrokerDataLost,
    CrossfadeError,
    DatabaseUnavailable,
    PreflightError,
    StaleAssignment,
    lacks_resource,
    one_line,
)
from crossfade.events.avro_codec import preload_reader
from crossfade.events.decode import EPOCH_HEADER, EventDecoder, header_in
from crossfade.events.kafka import record_place
from crossfade.events.model import ChangeEvent
from crossfade.sync import dead_epoch, refused
from crossfade.sync.commit import BatchCommit, lock_owned
from crossfade.sync.consumer import GroupMember
from crossfade.sync.dead_letters import DeadLetterTopic
from crossfade.sync.heartbeat import LagLow, sync_heartbeat
from crossfade.sync.load_order import LoadOrder, LoadOrderHook, waits_for
from crossfade.sync.lock_wait import LockWait
from crossfade.sync.origin import tag_session
from crossfade.sync.planner import Planner
from crossfade.sync.progress_log import JoinProgress, RejectLog
from crossfade.sync.sinks import TableSink, Tx
from crossfade.sync.sinks.identity import IdentityTables
from crossfade.sync.sinks.mapped import MappedTables
from crossfade.sync.sinks.mapped_source import build_mapped
from crossfade.sync.stats import SyncStats
from crossfade.sync.watchdog import TableWatch, WorkerView
from crossfade.target.store import (
    StoredOffset,
    claim_partitions,
    decode_dead_letters,
    drop_heartbeat,
    ensure_schema,
    ledger_counts,
    pending_replays,
    write_heartbeat,
)

log = logging.getLogger(__name__)

RESOURCE_RETRIES_BEFORE_ERROR = 3
"""A target short of a resource (``errors.lacks_resource``) is retried like any transient error,
but from this retry on each one is logged at ERROR: waiting alone will not fix it."""

Rename = Callable[[ChangeEvent], ChangeEvent]


class SyncWorker:
    """One member of the sync consumer group. ``run`` blocks until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        *,
        stop: threading.Event | None = None,
        worker_id: str | None = None,
        on_batch: Callable[[SyncWorker], None] | None = None,
        tables: IdentityTables | None = None,
        rename: Rename | None = None,
        on_connect: Callable[[psycopg.Connection], None] | None = None,
        require_origin: bool = False,
    ) -> None:
        """``tables``: the identity-mapped tables and how the target follows them (the reverse
        sync passes its legacy tables); ``rename``: applied to every decoded change event;
        ``on_connect``: run on every new target session; ``require_origin``: fail instead of
        writing untagged (the fallback direction: an echo would loop)."""
        self.settings = settings
        self.stop = stop or threading.Event()
        self.worker_id = worker_id or f"{uuid.uuid4().hex[:8]}"
        self.on_batch = on_batch
        self.kafka = settings.kafka
        self.bk = settings.sync.bookkeeping_schema
        self.topics = {self.kafka.table_topic(t): t for t in settings.tables}
        self.stats = SyncStats()
        self.meter = metrics.SyncMeter()  # publishes per committed batch, never per record
        self.tables = tables or IdentityTables(settings)
        """Identity-mapped tables (:mod:`crossfade.sync.sinks.identity`)."""
        self.mapped = MappedTables({}, {}, {}, list(settings.tables), self.bk)
        """Source tables with a mapping (:mod:`crossfade.sync.sinks.mapped`)."""
        self.planner = Planner(None, self.topics, rename=rename)
        """Decodes batches; keeps snapshot floors, poisoned keys and replays across them."""
        self.conn: psycopg.Connection | None = None
        self._dlq: DeadLetterTopic | None = None
        self._commit: BatchCommit | None = None
        self.on_connect = on_connect
        self.group = GroupMember(settings, self.worker_id, self.stop, self.topics, self._claim)
        """Subscription, assignment, epoch, claims (:mod:`crossfade.sync.consumer`)."""
        self._pending = SyncStats()
        self._next_epoch_check = 0.0
        self._next_deferred_retry = 0.0
        self.deferred_checked_at = 0.0
        """time.time() of the last committed retry of deferred rows (the demo waits for one after its fence)."""
        self._next_poison_check = 0.0
        self.rejects = RejectLog()
        """Expected rejects at INFO, a summary per table and rule each minute."""
        self.connected_once = False
        """Whether the target accepted this worker once: a refused connect after that is a restart
        (waited for), not a wrong DSN; a mapped-only config has no appliers to tell it by."""
        self.origin: str | None = None
        """Replication origin tagging this worker's target session ("" when tagging failed)."""
        self.require_origin = require_origin
        self._next_counts = 0.0
        self.lag_low = LagLow()
        self.watch: TableWatch | None = None
        self.lock_wait = LockWait(
            settings.target.conninfo,
            settings.target.connect_timeout_s,
            warn_s=settings.sync.claim_wait_warn_s,
            idle_timeout_s=settings.sync.idle_in_transaction_timeout_s,
        )
        """Names the holder of a lock a claim waits for (:mod:`crossfade.sync.lock_wait`)."""

    @property
    def owner(self) -> dict[tuple[str, int], str]:
        """Partitions held -> the owner token of their claim."""
        return self.group.owner

    @property
    def consumer(self) -> Consumer | None:
        return self.group.consumer

    @property
    def epoch(self) -> str | None:
        return self.group.epoch

    @property
    def ready(self) -> threading.Event:
        """Set once the first partitions were assigned."""
        return self.group.ready

    @property
    def left_in_group(self) -> bool:
        return self.group.left_in_group

    @property
    def appliers(self) -> dict[str, Any]:
        """The identity-mapped tables' appliers (table -> applier)."""
        return self.tables.appliers

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
            if not self.connected_once:
                raise  # never connected: a wrong DSN or user, say so and stop
            raise DatabaseUnavailable(str(exc)) from None  # it was up: a restart, wait for it
        self.connected_once = True
        # frozen inside a batch (SIGSTOP, GC pause), this session would keep its offset row locks,
        # and its successor's claim waiting for them, as long as the TCP connection lives
        end_idle_transactions_after(conn, self.settings.sync.idle_in_transaction_timeout_s)
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
        if self.on_connect is not None:
            self.on_connect(conn)
        return conn

    def _setup_tables(self) -> None:
        assert self.conn is not None
        ensure_schema(self.conn, self.bk)
        mapping = self.settings.mapping
        mapped = set(mapping.tables) if mapping is not None else set()
        with connect(self.settings.source, self.tables.source_label) as src:
            self.tables.setup(src, self.conn, [t for t in self.settings.tables if t not in mapped])
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
                from crossfade.mapping.audit import parents_first, source_parents

                self.mapped = MappedTables(
                    *build_mapped(mapper, report, self.conn, self.bk),
                    parents_first(mapper),
                    self.bk,
                )
                self._hold_children(source_parents(mapper))
                self.planner.mapped = frozenset(self.mapped.mapped)
                log.info(
                    "mapped source tables: %s",
                    ", ".join(
                        f"{s} -> {', '.join(m.targets)}" for s, m in self.mapped.mapped.items()
                    ),
                )

    def _hold_children(self, parents: dict[str, set[str]]) -> None:
        """During an initial load, children wait for their parents (:mod:`.load_order`)."""
        s = self.settings.sync
        waits = waits_for({t: ps for t, ps in parents.items() if t in self.topics.values()})
        if waits and s.parents_first_wait_s > 0:
            order = LoadOrder(waits, s.parents_first_wait_s)
            self.group.load_order = LoadOrderHook(order, self.topics, self.bk, s.group_id)

    def _sink(self, table: str) -> TableSink:
        return self.mapped.sink(table) if table in self.mapped else self.tables.sink(table)

    # -- assignment ---------------------------------------------------------------------------

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
                owned=self.group.owned,
                generation_started=lambda: self.group.generation_started,
                paused=lambda: self.group.pause.paused,
                held=lambda: self.group.load_order.held() if self.group.load_order else (),
                lock_wait=lambda: self.lock_wait.current,
                fetched=lambda: self.group.fetched,
                progressed_s_ago=lambda: time.time() - (self.stats.last_batch_at or 0),
            ),
            stall_after_s=s.sync.stall_after_s,
        ).start()

    def _claim(
        self, tps: list[tuple[str, int]], epoch: str
    ) -> tuple[str, dict[tuple[str, int], int]]:
        """Claim ``tps`` in the target (:class:`~crossfade.sync.consumer.GroupMember` keeps the
        token); load their snapshot floors and open replays into the planner."""
        token = f"{self.worker_id}:{uuid.uuid4().hex[:8]}"
        what = "the claim of " + ", ".join(f"{t}[{p}]" for t, p in sorted(tps))

        def claim() -> dict[tuple[str, int], StoredOffset]:
            conn = self._db()
            # waits for a batch of the partitions' previous owner still holding their offset rows
            with self.lock_wait.watching(what, conn.info.backend_pid):
                return claim_partitions(
                    conn, self.bk, self.settings.sync.group_id, tps, epoch, token
                )

        stored = self._with_db_retry(claim)
        for tp in tps:
            self.planner.floors[tp] = stored[tp].snapshot_floor
        self._with_db_retry(lambda: self._load_replays(tps, epoch))
        return token, {tp: s.next_offset for tp, s in stored.items()}

    def _load_replays(self, tps: list[tuple[str, int]], epoch: str) -> None:
        replays = pending_replays(self._db(), self.bk, self.settings.sync.group_id, epoch)
        for tp in tps:
            self.planner.replay_until.pop(tp, None)
            if tp in replays:
                self.planner.replay_until[tp] = replays[tp]
                log.info("replaying %s[%d] up to offset %d (rewind)", tp[0], tp[1], replays[tp])

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
            stuck = lacks_resource(exc) and rs.attempt_number >= RESOURCE_RETRIES_BEFORE_ERROR
            log.log(
                logging.ERROR if stuck else logging.WARNING,
                "transient error, retry %d in %.1fs: %s%s",
                rs.attempt_number,
                rs.next_action.sleep if rs.next_action else 0,
                one_line(exc),
                "; sync makes no progress until the target server has the resource"
                if stuck
                else "",
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
        """Connect, join the consumer group and set up meanwhile, then consume and apply until
        :attr:`stop` is set; raise what stops sync."""
        # a target starting up or recovering from a crash is waited for (connect() says which);
        # one that cannot be reached stops sync at once, before it waits for capture's epoch
        self.conn = self._with_db_retry(self._connect_target)
        group = self.group
        group.epoch = group.wait_for_epoch()
        # The join takes seconds of the broker's own (Tansu: half the session timeout; Kafka:
        # group.initial.rebalance.delay.ms): it goes on while the target tables are set up (that
        # waits for a COPY load's TRUNCATEs). Nothing is claimed before the setup is done:
        # assignments are taken in consume() (on_assign).
        group.subscribe()

        def setup() -> None:
            self._db()  # reconnects after a retry closed the connection
            self._setup_tables()

        try:
            self._with_db_retry(setup)
        except BaseException:
            self.stop.set()  # stopping: a pending join completes without a claim (finish_join)
            group.leave()
            raise
        log.debug("target tables set up")
        preload_reader()  # while the join waits on the broker, not in the first batch
        self._start_watch()  # from here on a stall is reported, waiting for capture included
        try:
            self._consume_loop()
        finally:
            if self.watch is not None:
                self.watch.stop()

    def _consume_loop(self) -> None:
        s = self.settings
        group = self.group
        self.planner.decoder = self.mapped.decoder = EventDecoder(self.kafka)
        client_conf = {**self.kafka.client_config(), "enable.idempotence": True, "acks": "all"}
        self._dlq = DeadLetterTopic(
            Producer(client_conf), self.kafka.dlq_topic, self.rejects, lambda: Producer(client_conf)
        )
        self._commit = BatchCommit(
            bookkeeping_schema=self.bk,
            group_id=s.sync.group_id,
            planner=self.planner,
            sinks=self._sink,
            mapped=self.mapped,
            dead_letters=self._dlq,
            meter=self.meter,
        )
        consumer = group.consumer
        assert consumer is not None  # subscribed in run()
        timeout = s.sync.batch_timeout_ms / 1000
        joining = JoinProgress(s.sync.group_id, len(self.topics), since=group.generation_started)
        try:
            while not self.stop.is_set():
                joining.tick(group.in_group)
                group.look_at_join()  # a rebalance wedged by a departed leader (Tansu)
                self._dlq.on_epoch(group.epoch)
                self.rejects.flush()
                try:
                    msgs = (group.consumer or consumer).consume(s.sync.batch_size, timeout)
                except KafkaException as exc:
                    log.warning("consume failed: %s", exc)
                    metrics.error("sync", "transient")
                    self.stop.wait(1)
                    continue
                # consumer lag, at most once a second
                self.meter.poll(group.consumer, self.owner, self.topics)
                self._pauses()
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
                        refused.apply_or_isolate(
                            lambda iso: self._with_db_retry(lambda: self._retry_idle(iso)), True
                        )
                    except StaleAssignment as exc:
                        log.warning("%s", exc)
                if not msgs and time.monotonic() >= self._next_epoch_check:
                    self._next_epoch_check = time.monotonic() + 10
                    group.look_at_epoch()
                if group.pending_reclaim:
                    group.pending_reclaim = False
                    group.reclaim_all()
                    continue
                if self.watch is not None and self.watch.resubscribe.is_set():
                    self.watch.resubscribe.clear()
                    stalled = ", ".join(sorted(self.stalled_tables)) or "-"
                    if group.resubscribe(f"stalled table(s) {stalled}"):
                        continue  # the new consumer reads msgs again from the stored offsets
                    # not re-subscribed (a rebalance is pending): this consumer is past msgs,
                    # so they are applied now, or they would be lost
                if msgs:
                    self._process(msgs)
        finally:
            try:
                group.leave()
            finally:
                self.meter.close()
                self.rejects.flush(force=True)
                self._drop_heartbeat()
                if self.conn is not None:
                    self.conn.close()
                self._dlq.close(10)

    def _pauses(self) -> None:
        """``crossfade pause sync`` and the heartbeat when due, then the children held during a
        load (:mod:`crossfade.sync.load_order`)."""
        group = self.group
        hold = group.load_order
        if group.heartbeat_due():  # the pause first: the heartbeat then shows it
            group.pause.check(group.consumer, self._db)
            if hold is not None:  # a resume of sync must not resume held children
                hold.apply(group.consumer, group.pause.paused)
            self._heartbeat()
        if hold is not None:
            hold.check(group.consumer, self._db, group.pause.paused)

    # -- heartbeat ----------------------------------------------------------------------------
    def _heartbeat(self) -> None:
        """Report this worker in ``<bookkeeping>.heartbeats`` (:mod:`crossfade.sync.heartbeat`).
        A target that does not answer skips it (the batch path waits for the target); the
        ``sync_alive`` gate then sees it age."""
        now = time.monotonic()
        hold = self.group.load_order
        hb = sync_heartbeat(
            self.worker_id,
            self.owner,
            self.meter.lag,
            self.lag_low,
            self.stats,
            unassigned_tables=self.unassigned_tables,
            epoch=self.epoch,
            paused=self.group.pause.paused,
            held=hold.held() if hold is not None else {},
        )
        try:
            write_heartbeat(self._db(), self.bk, hb)
            if self.mapped and now >= self._next_counts:
                self._next_counts = now + 30
                metrics.set_ledger_counts(ledger_counts(self._db(), self.bk))
        except (psycopg.Error, CrossfadeError) as exc:
            log.debug("heartbeat not written: %s", one_line(exc))
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
                self.group.pending_reclaim = self.group.epoch_changed()
                self.stop.wait(1)
                return
            log.warning("Kafka error on %s[%s]: %s", m.topic(), m.partition(), err.str())
        if not good:
            return
        if self._foreign_epoch(good):
            epoch = self.epoch
            if epoch is None or self.group.current_epoch() != epoch:
                self.group.reclaim_all()  # the log was replaced (or cannot be told yet)
                return
            good = dead_epoch.pass_over(good, epoch)  # the same log: a dead capture's leftovers
        t0 = time.monotonic()

        def apply() -> None:  # a mapped row the target refuses: a dead letter (sync.refused)
            refused.apply_or_isolate(
                lambda iso: self._with_db_retry(lambda: self._apply_batch(good, iso)),
                bool(self.mapped),
            )

        try:
            try:
                apply()
            except psycopg.errors.InvalidTextRepresentation as exc:
                if "enum" not in str(exc):
                    raise self._type_changed(exc) or exc from None
                # a label added to a source enum: add it to the target (or another worker just
                # did, and nothing is left to add), then apply again, once
                self._with_db_retry(lambda: self.tables.sync_enums(self._db()))
                try:
                    apply()
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

    def _foreign_epoch(self, good: list[Message]) -> bool:
        """Whether a record is from another broker epoch (the log was replaced under us)."""
        epoch = self.epoch
        ours = epoch.encode() if epoch is not None else None
        for m in good:
            hs = m.headers()
            if type(hs) is list and hs and hs[0][0] == EPOCH_HEADER and hs[0][1] == ours:
                continue  # capture's first header: this epoch (header_in's answer, cheaper)
            ep = header_in(hs, EPOCH_HEADER)
            if ep is not None and ep != epoch:
                log.warning(
                    "record of epoch %s on %s[%d] (ours %s)", ep, m.topic(), m.partition(), epoch
                )
                return True
        return False

    def _type_changed(self, exc: psycopg.Error) -> CrossfadeError | None:
        """An identity table refused a value: its source column changed type? (sync.refused)"""
        return refused.type_changed(self.settings, self.appliers, exc)

    def _handle_out_of_range(self, m: Message) -> None:
        if self.group.epoch_changed() or self.group.current_epoch() is None:
            self.group.reclaim_all()
            return
        raise BrokerDataLost(
            f"the offset stored for {m.topic()}[{m.partition()}] is beyond the end of the broker's log, "
            "yet the broker epoch is unchanged",
            "the topic lost data (retention or deletion): restart capture with a new snapshot, "
            "or rewind sync to a checkpoint that is still in the topic",
        )

    # -- one transaction ----------------------------------------------------------------------

    def _load_poisoned(self) -> None:
        """Keys whose change could not be decoded: their later changes wait (FAULTS 25)."""
        rows = decode_dead_letters(self._db(), self.bk)
        self.planner.poisoned = {
            (t, json.dumps(k, sort_keys=True, default=str)): e for t, k, e in rows
        }

    def _apply_batch(self, msgs: list[Message], isolate: bool = False) -> None:
        """One attempt at the batch's transaction (:mod:`crossfade.sync.commit`); ``isolate``:
        rows the target refuses as dead letters (:mod:`crossfade.sync.refused`)."""
        assert self._commit is not None
        # counts of this attempt only: merged after the commit, so a retried batch counts once
        self.meter.discard()
        tx = Tx(self._db(), isolate=isolate)
        self._pending = tx.pending
        # a table refreshed for ADD COLUMN inside this transaction reverts with it: a rolled-back
        # attempt (enum label to add, connection cut, stale owner) must not leave an applier that
        # expects a column the target does not have
        appliers, floors = dict(self.tables.appliers), dict(self.planner.floors)
        try:
            done = self._commit.run(tx, msgs, self.owner, self.mapped.order)
        except BaseException:
            self.tables.appliers, self.planner.floors = appliers, floors
            raise
        for tp in done:  # committed
            self.planner.replay_until.pop(tp, None)
            log.info("replay of %s[%d] complete", tp[0], tp[1])

    def _retry_idle(self, isolate: bool = False) -> None:
        """Retry the deferred rows of every owned partition (their parent may have come through
        another partition; past their window they must expire even when nothing arrives)."""
        if not self.mapped or not self.owner:
            return
        assert self._commit is not None
        tx = Tx(self._db(), isolate=isolate)
        self._pending = tx.pending
        with tx.conn.transaction():
            tps = list(self.owner)
            lock_owned(tx.conn, self.bk, self.settings.sync.group_id, self.owner, tps)
            self.mapped.begin(tx)
            self.mapped.retry_deferred(tx, tps)
            self.mapped.follow_parents(tx)
            if tx.dead:
                self._commit.dead_letters.rejected(tx.dead, self._commit.count_dead(tx))
        self._merge_pending()
        self.deferred_checked_at = time.time()

    def _merge_pending(self) -> None:
        self.stats.add(self._pending)
        for table, n in self._pending.deferred.items():
            if n:
                metrics.deferred(table, n)
        self._pending = SyncStats()
