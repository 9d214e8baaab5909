"""Meters: what the services publish, as values (never a worker or service object): verify
results, gates, the ledger's counts, retries and errors, and the per-batch meters of capture and
sync (:class:`CaptureMeter`, :class:`SyncMeter`) and the slot poller."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import prometheus_client

from crossfade.metrics.declarations import (
    CAPTURE_BATCH_DURATION,
    CAPTURE_BATCH_SIZE,
    CAPTURE_EVENTS,
    CAPTURE_FENCES,
    CAPTURE_FLUSH_DURATION,
    CAPTURE_HANDLER_CPU,
    CAPTURE_HEARTBEATS,
    CAPTURE_LAST_EVENT_SOURCE_TS,
    CAPTURE_LAST_HEARTBEAT,
    CAPTURE_OPS,
    COMPONENTS,
    CUTOVER_GATE_EVIDENCE_AGE,
    CUTOVER_GATE_OK,
    DEAD_LETTERED,
    DEAD_LETTERS_OPEN,
    DEAD_LETTERS_UNACKNOWLEDGED,
    DEFERRED,
    DEFERRED_ROWS,
    DLQ_RULES,
    ERRORS,
    FILTERED,
    FILTERED_ROWS,
    OP_NAMES,
    PAUSED,
    RETRIES,
    SLOT_ACTIVE,
    SLOT_RETAINED_WAL,
    SNAPSHOT_ROWS,
    SNAPSHOT_RUNNING,
    SOURCE_ROWS,
    SYNC_ASSIGNED,
    SYNC_BATCH_DURATION,
    SYNC_BATCH_SIZE,
    SYNC_CONSUMER_LAG,
    SYNC_E2E_LAG,
    SYNC_EVENTS_APPLIED,
    SYNC_EVENTS_SKIPPED,
    SYNC_FENCE_LAG,
    SYNC_FENCES,
    SYNC_LAST_APPLIED_SOURCE_TS,
    SYNC_LAST_BATCH_TS,
    SYNC_OPS,
    SYNC_RESUBSCRIBES,
    TARGET_RULE,
    VERIFY_LAST_RUN,
    VERIFY_MISMATCHED,
    VERIFY_PASSED,
)
from crossfade.metrics.exported import ComponentView
from crossfade.metrics.readiness import READINESS

if TYPE_CHECKING:
    from crossfade.config import Settings

log = logging.getLogger(__name__)


def set_verify_result(
    mismatched: Mapping[str, int], finished_at: float | None = None, passed: bool | None = None
) -> None:
    """Publish a verify run: mismatched rows per table (0 for a table that matched), when it
    finished, and whether it passed (default: no table mismatched). The run replaces the previous
    one: a table it did not cover keeps no series of an older run."""
    VERIFY_MISMATCHED.clear()
    for table, n in mismatched.items():
        VERIFY_MISMATCHED.labels(table=table).set(n)
    VERIFY_LAST_RUN.set(finished_at if finished_at is not None else time.time())
    ok = passed if passed is not None else not any(mismatched.values())
    VERIFY_PASSED.set(1 if ok else 0)


def push_verify_result(url: str, topic_prefix: str, timeout: float = 10.0) -> None:
    """Push the verify series (``crossfade_verify_*``, as :func:`set_verify_result` left them) to
    the Prometheus Pushgateway at ``url``: job ``crossfade-verify``, grouped by ``topic_prefix``
    so two migrations keep their own. Raises ``OSError``/``URLError`` when it does not answer."""

    class _VerifyOnly:
        def collect(self) -> Iterator[Any]:
            return (
                f
                for f in ComponentView(["verify"]).collect()
                if f.name.startswith("crossfade_verify_")
            )

    prometheus_client.push_to_gateway(
        url,
        job="crossfade-verify",
        registry=_VerifyOnly(),
        grouping_key={"topic_prefix": topic_prefix},
        timeout=timeout,
    )


def set_gate(gate: str, ok: bool | None) -> None:
    """Publish a cutover gate: green (True), red (False), or not evaluated (None: series removed)."""
    if ok is None:
        with contextlib.suppress(KeyError):
            CUTOVER_GATE_OK.remove(gate)
        return
    CUTOVER_GATE_OK.labels(gate=gate).set(1 if ok else 0)


_STATE_OK = {"ok": True, "failed": False, "stale": False, "unknown": False}


def set_gate_state(gate: str, state: str, age_s: float | None = None) -> None:
    """Publish an evaluated gate (:mod:`crossfade.cutover.gate_model`): 1 only when green."""
    set_gate(gate, _STATE_OK.get(state, False))
    if age_s is None:
        with contextlib.suppress(KeyError):
            CUTOVER_GATE_EVIDENCE_AGE.remove(gate)
    else:
        CUTOVER_GATE_EVIDENCE_AGE.labels(gate=gate).set(max(age_s, 0.0))


def set_ledger_counts(counts: Any) -> None:
    """Publish :func:`crossfade.target.store.ledger_counts` (a ``LedgerCounts``): the open
    dead letters, deferred and filtered rows per source table, as every command counts them."""
    for table, c in counts.tables.items():
        DEAD_LETTERS_OPEN.labels(table=table).set(c.dead_letters)
        DEAD_LETTERS_UNACKNOWLEDGED.labels(table=table).set(c.unacknowledged)
        DEFERRED_ROWS.labels(table=table).set(c.deferred)
        FILTERED_ROWS.labels(table=table).set(c.filtered)


def init_labels(settings: Settings, components: Iterable[str] = COMPONENTS) -> None:
    """Create every known label combination of ``components`` at 0, so rates and alerts see a
    series from the start (a counter that first appears at 1 hides its first increase from
    ``rate``). Only the components the process runs: ``/metrics`` serves no others'."""
    components = set(components)
    mapped = set(settings.mapping.tables) if settings.mapping is not None else set()
    for table in settings.tables:
        if "capture" in components:
            for op in CAPTURE_OPS:
                CAPTURE_EVENTS.labels(table=table, op=op)
            SNAPSHOT_ROWS.labels(table=table)
        if "sync" in components:
            for op in SYNC_OPS:
                SYNC_EVENTS_APPLIED.labels(table=table, op=op)
            SYNC_EVENTS_SKIPPED.labels(table=table)
            for rule in (*DLQ_RULES, *((TARGET_RULE,) if table in mapped else ())):
                DEAD_LETTERED.labels(table=table, rule=rule)
    for component in components & set(COMPONENTS):
        PAUSED.labels(component=component)
        for reason in ("database", "broker", "other"):
            RETRIES.labels(component=component, reason=reason)
        for kind in ("transient", "terminal"):
            ERRORS.labels(component=component, kind=kind)


def _reason(exc: BaseException | None) -> str:
    import psycopg

    from crossfade.errors import BrokerUnavailable, DatabaseUnavailable

    if isinstance(exc, psycopg.Error | DatabaseUnavailable):
        return "database"
    if isinstance(exc, BrokerUnavailable):
        return "broker"
    try:
        from confluent_kafka import KafkaException

        if isinstance(exc, KafkaException):
            return "broker"
    except ImportError:  # pragma: no cover
        pass
    return "other"


def retried(component: str, exc: BaseException | None) -> None:
    """Count one retry after a transient error (and the error itself)."""
    RETRIES.labels(component=component, reason=_reason(exc)).inc()
    ERRORS.labels(component=component, kind="transient").inc()


def resubscribed() -> None:
    SYNC_RESUBSCRIBES.inc()


def error(component: str, kind: str = "transient") -> None:
    ERRORS.labels(component=component, kind=kind).inc()


def dead_lettered(table: str, rule: str) -> None:
    DEAD_LETTERED.labels(table=table, rule=rule).inc()


def filtered(table: str, name: str, n: int = 1) -> None:
    FILTERED.labels(table=table, filter=name).inc(n)


def deferred(table: str, n: int = 1) -> None:
    DEFERRED.labels(table=table).inc(n)


def counting_errors(component: str, run: Callable[[], None]) -> Callable[[], None]:
    """Wrap a service's ``run`` so the failure that stops it is counted (kind from the error tree)."""

    def wrapped() -> None:
        try:
            run()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            ERRORS.labels(component=component, kind=getattr(exc, "kind", "terminal")).inc()
            raise

    return wrapped


# -- capture ----------------------------------------------------------------------------------


class CaptureMeter:
    """Publishes one acknowledged Debezium batch at a time (``ChangeProducer.handle`` calls it
    with values: it holds no reference to capture)."""

    def __init__(self, settings: Settings) -> None:
        prefix = settings.kafka.topic_prefix + "."
        self._table = {prefix + t: t for t in settings.tables}
        self._heartbeats = 0
        self._fences = 0
        # no heartbeat yet counts from the start: 0 would read as "none for 56 years"
        CAPTURE_LAST_HEARTBEAT.set(time.time())

    def batch(
        self,
        stats: Any,
        snapshot_running: bool,
        counts: Mapping[tuple[str, str | None], int],
        records: int | None = None,
        seconds: float | None = None,
        flush_seconds: float | None = None,
        cpu_seconds: float | None = None,
    ) -> None:
        """``stats``: the producer's running totals (heartbeats, fences, last source time,
        ``ChangeProducer.stats``); ``snapshot_running``: the initial snapshot is not yet whole;
        ``counts``: records produced per (destination topic, Debezium op) in this batch;
        ``records``, ``seconds``, ``flush_seconds``: the batch's size, the time it took, and of
        that the wait for the broker's acknowledgements, and the CPU time of the handler's thread
        meanwhile (not observed when None)."""
        if records is not None:
            CAPTURE_BATCH_SIZE.observe(records)
        if seconds is not None:
            CAPTURE_BATCH_DURATION.observe(seconds)
        if flush_seconds is not None:
            CAPTURE_FLUSH_DURATION.observe(flush_seconds)
        if cpu_seconds is not None:
            CAPTURE_HANDLER_CPU.inc(cpu_seconds)
        for (dest, op), n in counts.items():
            table = self._table.get(dest)
            name = OP_NAMES.get(op or "")
            if table is None or name is None:  # tombstones, topics outside the config
                continue
            CAPTURE_EVENTS.labels(table=table, op=name).inc(n)
            if op == "r":
                SNAPSHOT_ROWS.labels(table=table).inc(n)
        st = stats
        if st.heartbeats != self._heartbeats:
            CAPTURE_HEARTBEATS.inc(st.heartbeats - self._heartbeats)
            CAPTURE_LAST_HEARTBEAT.set(time.time())
            self._heartbeats = st.heartbeats
        if st.fences != self._fences:
            CAPTURE_FENCES.inc(st.fences - self._fences)
            self._fences = st.fences
        if st.last_source_ts_ms:
            CAPTURE_LAST_EVENT_SOURCE_TS.set(st.last_source_ts_ms / 1000)
        SNAPSHOT_RUNNING.set(1 if snapshot_running else 0)


_SLOT_SQL = """
SELECT active,
       pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                            ELSE pg_current_wal_lsn() END, restart_lsn)::bigint
FROM pg_replication_slots WHERE slot_name = %s
"""
_ROWS_SQL = """
SELECT schemaname || '.' || relname, n_live_tup FROM pg_stat_user_tables
WHERE schemaname || '.' || relname = ANY(%s)
"""


class SlotPoller:
    """Polls the legacy database on its own connection, in a daemon thread: the replication
    slot's retained WAL (the classic silent disk-filler) and the source tables' row estimates.

    Stops when ``stop`` is set or the thread that started it ends. A failed poll is logged once,
    counted as a transient capture error and retried at the next interval; ``ok`` tells whether
    the last poll reached the database (a readiness check of capture).
    """

    def __init__(self, settings: Settings, stop: threading.Event, interval: float = 10.0) -> None:
        self.settings = settings
        self.slot = settings.capture.slot_name
        self.stop = stop
        self.interval = interval
        self.ok = False
        self._owner = threading.current_thread()
        self._thread = threading.Thread(target=self._run, name="slot-poller", daemon=True)

    def start(self) -> SlotPoller:
        READINESS.register("capture", "source database", lambda: self.ok)
        self._thread.start()
        return self

    def poll_once(self, conn: Any) -> None:
        row = conn.execute(_SLOT_SQL, (self.slot,)).fetchone()
        if row is None:  # Debezium creates the slot when it starts streaming
            SLOT_ACTIVE.labels(slot=self.slot).set(0)
        else:
            SLOT_ACTIVE.labels(slot=self.slot).set(1 if row[0] else 0)
            if row[1] is not None:
                SLOT_RETAINED_WAL.labels(slot=self.slot).set(int(row[1]))
        for table, n in conn.execute(_ROWS_SQL, (list(self.settings.tables),)).fetchall():
            SOURCE_ROWS.labels(table=table).set(max(int(n or 0), 0))

    def _run(self) -> None:
        import psycopg

        conn: Any = None
        failing = False
        while not self.stop.is_set() and self._owner.is_alive():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(
                        self.settings.source.conninfo,
                        autocommit=True,
                        connect_timeout=self.settings.source.connect_timeout_s,
                        application_name="crossfade-slot-poller",
                    )
                self.poll_once(conn)
                self.ok = True
                if failing:
                    log.info("replication slot poll works again")
                failing = False
            except psycopg.Error as exc:
                self.ok = False
                ERRORS.labels(component="capture", kind="transient").inc()
                if not failing:
                    msg = str(exc).strip().splitlines()
                    log.warning(
                        "cannot read replication slot %s: %s",
                        self.slot,
                        msg[0] if msg else type(exc).__name__,
                    )
                failing = True
                if conn is not None:
                    conn.close()
                    conn = None
            self.stop.wait(self.interval)
        if conn is not None:
            conn.close()


# -- sync -------------------------------------------------------------------------------------


class WorkersMax:
    """A per-table gauge that several sync workers of one process set (``sync.workers``): each
    worker's latest value is kept and the gauge shows the largest, as a ``max by (table)`` over
    that many processes would (``ops/prometheus/alerts.yaml``); set in turn it would flip
    between them. Thread-safe."""

    def __init__(self, gauge: Any) -> None:
        self._gauge = gauge
        self._values: dict[str, dict[int, float]] = {}
        self._lock = threading.Lock()

    def set(self, worker: int, table: str, value: float) -> None:
        with self._lock:
            values = self._values.setdefault(table, {})
            values[worker] = value
            self._gauge.labels(table=table).set(max(values.values()))

    def forget(self, worker: int) -> None:
        """A worker stopped: its values no longer count (a table only it set keeps its sample)."""
        with self._lock:
            for table, values in self._values.items():
                if values.pop(worker, None) is not None and values:
                    self._gauge.labels(table=table).set(max(values.values()))


E2E_LAG = WorkersMax(SYNC_E2E_LAG)
LAST_APPLIED_SOURCE_TS = WorkersMax(SYNC_LAST_APPLIED_SOURCE_TS)


class SyncMeter:
    """Publishes one committed batch at a time for a sync worker (called with values: it holds no
    reference to the worker).

    Inside the target transaction the worker only *notes* source times (``note``, ``note_fence``);
    ``committed`` publishes them with the counters' growth since the previous batch, and
    ``discard`` forgets them when the batch rolled back for good. ``poll`` refreshes consumer lag
    and the assignment, at most once a second, from the worker's own thread (the consumer is not
    shared with the HTTP threads).
    """

    def __init__(self) -> None:
        self._ts: dict[str, int] = {}
        self._fence_ts = 0
        self._fences = 0
        self._seen: dict[tuple[str, str], int] = {}
        self._lag_labels: set[tuple[str, str]] = set()
        self._next_poll = 0.0
        self._assigned = 0  # this worker's share of SYNC_ASSIGNED (the process's workers add up)
        self.last_loop = time.monotonic()
        self.lag: dict[tuple[str, int], int] = {}
        """Records behind per owned partition, as the last poll found them (the heartbeat's lag)."""

    def note(self, table: str, source_ts_ms: int) -> None:
        if source_ts_ms > self._ts.get(table, 0):
            self._ts[table] = source_ts_ms

    def note_fence(self, source_ts_ms: int) -> None:
        self._fences += 1
        self._fence_ts = max(self._fence_ts, source_ts_ms)

    def discard(self) -> None:
        self._ts.clear()
        self._fence_ts = 0
        self._fences = 0

    def _grow(
        self, counter: Any, key: tuple[str, str], labels: dict[str, str], now_value: int
    ) -> None:
        d = now_value - self._seen.get(key, 0)
        if d > 0:
            counter.labels(**labels).inc(d)
        self._seen[key] = now_value

    def committed(self, stats: Any, records: int, seconds: float) -> None:
        """One batch committed: ``stats`` holds the worker's running per-table totals (``applied``,
        ``deleted``, ``skipped``); the caller then refreshes lag with :meth:`poll` (``force``)."""
        now = time.time()
        SYNC_BATCH_SIZE.observe(records)
        SYNC_BATCH_DURATION.observe(seconds)
        SYNC_LAST_BATCH_TS.set(now)
        st = stats
        for table, n in list(st.applied.items()):
            self._grow(SYNC_EVENTS_APPLIED, ("upsert", table), {"table": table, "op": "upsert"}, n)
        for table, n in list(st.deleted.items()):
            self._grow(SYNC_EVENTS_APPLIED, ("delete", table), {"table": table, "op": "delete"}, n)
        for table, n in list(st.skipped.items()):
            self._grow(SYNC_EVENTS_SKIPPED, ("skip", table), {"table": table}, n)
        for table, ts in self._ts.items():
            if ts > 0:
                E2E_LAG.set(id(self), table, max(now - ts / 1000, 0.0))
                LAST_APPLIED_SOURCE_TS.set(id(self), table, ts / 1000)
        if self._fences:
            SYNC_FENCES.inc(self._fences)
            if self._fence_ts:
                SYNC_FENCE_LAG.set(max(now - self._fence_ts / 1000, 0.0))
        self.discard()

    def _set_assigned(self, n: int) -> None:
        if n != self._assigned:
            SYNC_ASSIGNED.inc(n - self._assigned)  # a set() would hide the other workers' share
            self._assigned = n

    def close(self) -> None:
        """The worker stopped: take its share out of the process's sync gauges."""
        self._set_assigned(0)
        E2E_LAG.forget(id(self))
        LAST_APPLIED_SOURCE_TS.forget(id(self))

    def poll(
        self,
        consumer: Any,
        owner: Mapping[tuple[str, int], Any],
        topics: Mapping[str, str],
        force: bool = False,
    ) -> None:
        """Consumer lag per partition from the watermark learned by the consumer's own fetches
        (``cached=True``: the query form under-reports on Tansu, see STACK.md). ``owner``: the
        partitions the worker holds; ``topics``: topic -> table, for the labels."""
        mono = time.monotonic()
        self.last_loop = mono
        if not force and mono < self._next_poll:
            return
        self._next_poll = mono + 1.0
        if consumer is None:
            return
        from confluent_kafka import KafkaException, TopicPartition

        owned = list(owner)
        self._set_assigned(len(owned))
        labels: set[tuple[str, str]] = set()
        self.lag = {tp: n for tp, n in self.lag.items() if tp in owner}
        try:
            positions = consumer.position([TopicPartition(t, p) for t, p in owned]) if owned else []
            for tp in positions:
                if tp.offset < 0:  # nothing consumed yet: position unknown
                    continue
                try:
                    _low, high = consumer.get_watermark_offsets(tp, cached=True)
                except KafkaException:
                    continue
                if high is None or high < 0:
                    continue
                key = (topics.get(tp.topic, tp.topic), str(tp.partition))
                self.lag[(tp.topic, tp.partition)] = max(high - tp.offset, 0)
                SYNC_CONSUMER_LAG.labels(table=key[0], partition=key[1]).set(
                    max(high - tp.offset, 0)
                )
                labels.add(key)
        except (KafkaException, RuntimeError):  # closing consumer
            return
        owned_keys = {(topics.get(t, t), str(p)) for t, p in owned}
        for key in self._lag_labels - owned_keys:  # revoked: drop the series
            with contextlib.suppress(KeyError):
                SYNC_CONSUMER_LAG.remove(*key)
        self._lag_labels = labels | (self._lag_labels & owned_keys)
