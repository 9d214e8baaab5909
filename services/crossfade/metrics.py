"""Every metric crossfade exports, declared here and nowhere else (the ground floor: every part
publishes through it, and it imports none of them).

Naming follows the Prometheus conventions: the ``crossfade_`` prefix, base units in the name
(``_seconds``, ``_bytes``, ``_records``), ``_total`` on counters, timestamps as
``_timestamp_seconds`` (Unix time). Labels stay bounded: ``table`` (the configured source
tables), ``op``, ``partition`` (the change topics' partitions), ``rule`` (dead-letter rules),
``kind`` (``transient``/``terminal``, the error tree's kinds), ``component`` (capture, sync,
console), ``gate`` and ``slot``. Nothing per key, per offset or per error message.

Hot-path cost: the services count into plain dicts per record (they already do) and publish to
these metrics once per batch through :class:`CaptureMeter` and :class:`SyncMeter`; consumer lag
is recomputed at most once a second from values the consumer already holds.

The HTTP endpoints that serve them (/metrics, /healthz, /readyz) are in ``crossfade.ops.probes``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import prometheus_client
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from crossfade.config import Settings

log = logging.getLogger(__name__)

# The ``_created`` series prometheus-client adds beside each counter only double the series count.
prometheus_client.disable_created_metrics()


class OptionalGauge(Collector):
    """An unlabelled gauge with no sample until it is set (prometheus-client's shows 0 from the
    start: a verify that never ran would read as one that failed). ``clear`` removes the sample."""

    def __init__(self, name: str, documentation: str, registry: Any = REGISTRY) -> None:
        self.name = name
        self.documentation = documentation
        self._value: float | None = None
        registry.register(self)

    def set(self, value: float) -> None:
        self._value = float(value)

    def clear(self) -> None:
        self._value = None

    @property
    def value(self) -> float | None:
        return self._value

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily(self.name, self.documentation)]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        value = self._value
        family = GaugeMetricFamily(self.name, self.documentation)
        if value is not None:
            family.add_metric([], value)
        yield family


# -- capture ----------------------------------------------------------------------------------

CAPTURE_EVENTS = Counter(
    "crossfade_capture_events_total",
    "Change events capture published to Kafka (acknowledged by the broker), by source table and "
    "operation (insert, update, delete, snapshot, truncate).",
    ["table", "op"],
)
CAPTURE_HEARTBEATS = Counter(
    "crossfade_capture_heartbeats_total", "Debezium heartbeats capture received from the connector."
)
CAPTURE_LAST_HEARTBEAT = Gauge(
    "crossfade_capture_last_heartbeat_timestamp_seconds",
    "When capture last received a Debezium heartbeat, or started if none came yet (Unix time).",
)
CAPTURE_LAST_EVENT_SOURCE_TS = Gauge(
    "crossfade_capture_last_event_source_timestamp_seconds",
    "Source commit time of the newest change event capture published (Unix time).",
)
CAPTURE_FENCES = Counter(
    "crossfade_capture_fences_total", "Fence rows capture saw and broadcast to every partition."
)
CAPTURE_BATCH_SIZE = Histogram(
    "crossfade_capture_batch_size_records",
    "Records in one Debezium batch capture handled (heartbeats and fence rows included).",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 4096, 10_000),
)
CAPTURE_BATCH_DURATION = Histogram(
    "crossfade_capture_batch_duration_seconds",
    "Time capture spent on one Debezium batch: read it from the JVM, encode, produce, and wait "
    "for the broker's acknowledgements. rate(_sum) is the fraction of time capture's handler is "
    "busy: well below 1 while the slot's WAL grows means the limit is before it (Debezium, the "
    "walsender).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)
CAPTURE_FLUSH_DURATION = Histogram(
    "crossfade_capture_flush_duration_seconds",
    "Of a batch's time, the wait for the broker to acknowledge every record (Debezium may mark "
    "the batch processed only then).",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120),
)
SNAPSHOT_ROWS = Counter(
    "crossfade_capture_snapshot_rows_total",
    "Rows capture published from Debezium's initial snapshot, by source table.",
    ["table"],
)
SNAPSHOT_RUNNING = Gauge(
    "crossfade_capture_snapshot_running", "1 while Debezium's snapshot is being published, else 0."
)
SLOT_RETAINED_WAL = Gauge(
    "crossfade_replication_slot_retained_wal_bytes",
    "WAL the legacy database keeps for crossfade's replication slot "
    "(pg_current_wal_lsn() - restart_lsn): grows, and fills the disk, while capture does not confirm.",
    ["slot"],
)
SLOT_ACTIVE = Gauge(
    "crossfade_replication_slot_active",
    "1 when a connection (Debezium) streams from the replication slot, 0 when it is idle or absent.",
    ["slot"],
)
LOAD_PAUSED = Gauge(
    "crossfade_capture_load_paused",
    "1 while the initial load (COPY or Debezium's snapshot) waits outside capture.load_windows, "
    "else 0.",
)
LOAD_NEXT_WINDOW = Gauge(
    "crossfade_capture_load_next_window_seconds",
    "Seconds until the next load window opens while the initial load waits for it (0: inside a "
    "window, no windows, or no load).",
)
PAUSED = Gauge(
    "crossfade_paused",
    "1 while an operator holds the component with `crossfade pause` (capture: Debezium's slot "
    "retains WAL; sync: nothing is applied), as this process last read it, else 0.",
    ["component"],
)
SOURCE_ROWS = Gauge(
    "crossfade_source_table_rows_estimate",
    "Live rows of each source table as PostgreSQL's statistics estimate them (n_live_tup).",
    ["table"],
)

# -- sync -------------------------------------------------------------------------------------

SYNC_EVENTS_APPLIED = Counter(
    "crossfade_sync_events_applied_total",
    "Change events sync wrote to the target, by table and operation (upsert, delete); counted "
    "when their batch committed.",
    ["table", "op"],
)
SYNC_EVENTS_SKIPPED = Counter(
    "crossfade_sync_events_skipped_total",
    "Change events the source-position guard skipped (older than the target row: duplicates).",
    ["table"],
)
SYNC_BATCH_SIZE = Histogram(
    "crossfade_sync_batch_size_records",
    "Kafka records in one applied batch (one target transaction).",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 25_000, 100_000),
)
SYNC_BATCH_DURATION = Histogram(
    "crossfade_sync_batch_duration_seconds",
    "Time to decode and apply one batch and commit it in the target, retries included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
SYNC_E2E_LAG = Gauge(
    "crossfade_sync_end_to_end_lag_seconds",
    "Source commit to target commit of the newest event of the table in the last batch that "
    "held it (stays at its last value while the table is idle).",
    ["table"],
)
SYNC_LAST_APPLIED_SOURCE_TS = Gauge(
    "crossfade_sync_last_applied_source_timestamp_seconds",
    "Source commit time of the newest event applied to each table (Unix time).",
    ["table"],
)
SYNC_LAST_BATCH_TS = Gauge(
    "crossfade_sync_last_batch_timestamp_seconds",
    "When this worker last committed a batch (Unix time).",
)
SYNC_FENCE_LAG = Gauge(
    "crossfade_sync_fence_lag_seconds",
    "Commit of the last fence row in the legacy database to the commit of its marker in the "
    "target (end-to-end lag proven through the pipeline).",
)
SYNC_FENCES = Counter(
    "crossfade_sync_fence_markers_total", "Fence markers applied (one per partition and fence)."
)
SYNC_CONSUMER_LAG = Gauge(
    "crossfade_sync_consumer_lag_records",
    "Records in the partition after the consumer's position (high watermark the consumer learned "
    "from its own fetches; a hint: the fence is the proof).",
    ["table", "partition"],
)
SYNC_ASSIGNED = Gauge(
    "crossfade_sync_assigned_partitions", "Partitions assigned to this sync worker."
)
SYNC_RESUBSCRIBES = Counter(
    "crossfade_sync_resubscribes_total",
    "Times this sync worker left the consumer group and subscribed again because a table stalled.",
)
DEAD_LETTERED = Counter(
    "crossfade_dead_lettered_total",
    "Records sent to the dead-letter topic, by table and the rule they failed.",
    ["table", "rule"],
)

# -- shared -----------------------------------------------------------------------------------

FILTERED = Counter(
    "crossfade_filtered_total",
    "Source changes the mapping's filters kept out of the target, by table and filter.",
    ["table", "filter"],
)
DEFERRED = Counter(
    "crossfade_deferred_total",
    "Source changes held back because a referenced parent had not arrived yet (retried, then dead-lettered).",
    ["table"],
)
RETRIES = Counter(
    "crossfade_retries_total",
    "Retries after transient errors, by component and what failed (database, broker, other).",
    ["component", "reason"],
)
ERRORS = Counter(
    "crossfade_errors_total",
    "Errors by component and kind: transient (retried) or terminal (the service stopped).",
    ["component", "kind"],
)
BUILD = Info("crossfade_build", "crossfade version.")

# -- verify and cutover (set by those commands and by the console) ----------------------------

VERIFY_MISMATCHED = Gauge(
    "crossfade_verify_mismatched_rows",
    "Rows that differ between legacy and new (missing, extra or different) in the latest verify, by table.",
    ["table"],
)
VERIFY_LAST_RUN = OptionalGauge(
    "crossfade_verify_last_run_timestamp_seconds", "When the latest verify finished (Unix time)."
)
VERIFY_PASSED = OptionalGauge(
    "crossfade_verify_passed",
    "1 when the latest verify found every table equal, 0 when it found a difference or failed "
    "(absent: no verify known).",
)
CUTOVER_GATE_OK = Gauge(
    "crossfade_cutover_gate_ok",
    "Cutover go/no-go gates: 1 green, 0 not green (red, stale or unknown; absent: not evaluated "
    "yet), as the console, status or the cutover last evaluated them.",
    ["gate"],
)
CUTOVER_GATE_EVIDENCE_AGE = Gauge(
    "crossfade_cutover_gate_evidence_age_seconds",
    "Age of the evidence a cutover gate was last evaluated from (the fence, the verify run, the "
    "oldest heartbeat); absent when the gate reads its evidence anew.",
    ["gate"],
)

# -- what is open in the ledger now (crossfade.target.store.ledger_counts: the one count) ---

DEAD_LETTERS_OPEN = Gauge(
    "crossfade_dead_letters_open",
    "Dead letters open now (not replayed, superseded or dropped), by source table; the counter "
    "crossfade_dead_lettered_total counts every record ever sent to the dead-letter topic.",
    ["table"],
)
DEAD_LETTERS_UNACKNOWLEDGED = Gauge(
    "crossfade_dead_letters_unacknowledged",
    "Open dead letters and held changes no `crossfade dlq ack` covers, by source table (the "
    "dead_letters gate fails while any is).",
    ["table"],
)
DEFERRED_ROWS = Gauge(
    "crossfade_deferred_rows",
    "Source rows deferred now (waiting for a parent row within its window), by source table.",
    ["table"],
)
FILTERED_ROWS = Gauge(
    "crossfade_filtered_rows",
    "Source rows the mapping's filters keep out of the target now, by source table.",
    ["table"],
)

_OPS = {"c": "insert", "u": "update", "d": "delete", "r": "snapshot", "t": "truncate"}
CAPTURE_OPS = tuple(_OPS.values())
SYNC_OPS = ("upsert", "delete")
DLQ_RULES = ("decode",)
COMPONENTS = ("capture", "sync")

# -- which process exports what ----------------------------------------------------------------
# Every metric lives in one registry, but a process publishes only the series of the components it
# runs: a sync worker exporting capture's gauges at zero reads, to an alert, as a capture that
# stopped. ``console`` is the console (gates, the ledger's counts, the latest verify, the slot,
# read from the databases); ``verify`` what `crossfade verify --pushgateway` pushes. Families
# not listed (crossfade_ready, errors and retries by component, build info, the process's own)
# are every process's.
EXPORTED_BY: dict[str, tuple[Any, ...]] = {
    "capture": (
        CAPTURE_EVENTS,
        CAPTURE_HEARTBEATS,
        CAPTURE_LAST_HEARTBEAT,
        CAPTURE_LAST_EVENT_SOURCE_TS,
        CAPTURE_FENCES,
        CAPTURE_BATCH_SIZE,
        CAPTURE_BATCH_DURATION,
        CAPTURE_FLUSH_DURATION,
        SNAPSHOT_ROWS,
        SNAPSHOT_RUNNING,
        SLOT_RETAINED_WAL,
        SLOT_ACTIVE,
        SOURCE_ROWS,
        LOAD_PAUSED,
        LOAD_NEXT_WINDOW,
        PAUSED,
    ),
    "sync": (
        SYNC_EVENTS_APPLIED,
        SYNC_EVENTS_SKIPPED,
        SYNC_BATCH_SIZE,
        SYNC_BATCH_DURATION,
        SYNC_E2E_LAG,
        SYNC_LAST_APPLIED_SOURCE_TS,
        SYNC_LAST_BATCH_TS,
        SYNC_FENCE_LAG,
        SYNC_FENCES,
        SYNC_CONSUMER_LAG,
        SYNC_ASSIGNED,
        SYNC_RESUBSCRIBES,
        DEAD_LETTERED,
        FILTERED,
        DEFERRED,
        PAUSED,
    ),
    "console": (
        CUTOVER_GATE_OK,
        CUTOVER_GATE_EVIDENCE_AGE,
        DEAD_LETTERS_OPEN,
        DEAD_LETTERS_UNACKNOWLEDGED,
        DEFERRED_ROWS,
        FILTERED_ROWS,
        VERIFY_MISMATCHED,
        VERIFY_LAST_RUN,
        VERIFY_PASSED,
        SLOT_RETAINED_WAL,
        SLOT_ACTIVE,
    ),
    "verify": (VERIFY_MISMATCHED, VERIFY_LAST_RUN, VERIFY_PASSED),
}
_OWNERS: dict[str, set[str]] = {}
for _component, _metrics in EXPORTED_BY.items():
    for _m in _metrics:
        for _family in _m.describe():
            _OWNERS.setdefault(_family.name, set()).add(_component)


class ComponentView:
    """A read-only view of ``registry`` holding only the families ``components`` export (and
    those every process exports): what a process's ``/metrics`` serves."""

    def __init__(self, components: Iterable[str], registry: Any = REGISTRY) -> None:
        self.components = frozenset(components)
        unknown = self.components - set(EXPORTED_BY)
        if unknown:
            raise ValueError(f"unknown component(s) {sorted(unknown)}")
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        for family in self.registry.collect():
            owners = _OWNERS.get(family.name)
            if owners is None or owners & self.components:
                yield family


try:
    BUILD.info({"version": metadata.version("crossfade")})
except metadata.PackageNotFoundError:  # running from a source tree without installing
    BUILD.info({"version": "unknown"})


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
    for table in settings.tables:
        if "capture" in components:
            for op in CAPTURE_OPS:
                CAPTURE_EVENTS.labels(table=table, op=op)
            SNAPSHOT_ROWS.labels(table=table)
        if "sync" in components:
            for op in SYNC_OPS:
                SYNC_EVENTS_APPLIED.labels(table=table, op=op)
            SYNC_EVENTS_SKIPPED.labels(table=table)
            for rule in DLQ_RULES:
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
    ) -> None:
        """``stats``: the producer's running totals (heartbeats, fences, last source time,
        ``ChangeProducer.stats``); ``snapshot_running``: the initial snapshot is not yet whole;
        ``counts``: records produced per (destination topic, Debezium op) in this batch;
        ``records``, ``seconds``, ``flush_seconds``: the batch's size, the time it took, and of
        that the wait for the broker's acknowledgements (not observed when None)."""
        if records is not None:
            CAPTURE_BATCH_SIZE.observe(records)
        if seconds is not None:
            CAPTURE_BATCH_DURATION.observe(seconds)
        if flush_seconds is not None:
            CAPTURE_FLUSH_DURATION.observe(flush_seconds)
        for (dest, op), n in counts.items():
            table = self._table.get(dest)
            name = _OPS.get(op or "")
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
                SYNC_E2E_LAG.labels(table=table).set(max(now - ts / 1000, 0.0))
                SYNC_LAST_APPLIED_SOURCE_TS.labels(table=table).set(ts / 1000)
        if self._fences:
            SYNC_FENCES.inc(self._fences)
            if self._fence_ts:
                SYNC_FENCE_LAG.set(max(now - self._fence_ts / 1000, 0.0))
        self.discard()

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
        SYNC_ASSIGNED.set(len(owned))
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


# -- readiness --------------------------------------------------------------------------------


@dataclass
class Check:
    component: str
    name: str
    fn: Callable[[], bool]


class Readiness(Collector):
    """Named readiness checks registered by the services; also exported as
    ``crossfade_ready{component}`` (1 when all of that component's checks pass) so alerts see it."""

    def __init__(self) -> None:
        self._checks: dict[tuple[str, str], Check] = {}
        self._lock = threading.Lock()

    def register(self, component: str, name: str, fn: Callable[[], bool]) -> None:
        with self._lock:
            self._checks[(component, name)] = Check(component, name, fn)

    def clear(self) -> None:
        with self._lock:
            self._checks.clear()

    def evaluate(self) -> dict[str, dict[str, bool]]:
        with self._lock:
            checks = list(self._checks.values())
        out: dict[str, dict[str, bool]] = {}
        for c in checks:
            try:
                ok = bool(c.fn())
            except Exception as exc:  # noqa: BLE001 - a failing check is "not ready"
                log.debug("readiness check %s/%s failed: %s", c.component, c.name, exc)
                ok = False
            out.setdefault(c.component, {})[c.name] = ok
        return out

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "crossfade_ready",
            "1 when every readiness check of the component passes (what /readyz answers), else 0.",
            labels=["component"],
        )
        for component, checks in sorted(self.evaluate().items()):
            g.add_metric([component], 1.0 if all(checks.values()) else 0.0)
        yield g


READINESS = Readiness()
REGISTRY.register(READINESS)


class StalledTables(Collector):
    """``crossfade_sync_table_stalled{table}``, read from the watched workers at scrape time (a
    worker blocked waiting for the broker or the target still reports what its watch sees)."""

    def __init__(self) -> None:
        self._workers: list[tuple[list[str], Callable[[], Mapping[str, str]]]] = []
        self._lock = threading.Lock()

    def watch(self, tables: list[str], stalled: Callable[[], Mapping[str, str]]) -> None:
        with self._lock:
            self._workers.append((list(tables), stalled))

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "crossfade_sync_table_stalled",
            "1 while the sync worker sees the table stalled: no partition of its topic assigned to "
            "any worker, the topic missing, or no progress while its log grows, for "
            "sync.stall_after_s (the WARNING log says which); else 0.",
            labels=["table"],
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = self._family()
        with self._lock:
            workers = list(self._workers)
        seen: dict[str, bool] = {}
        for tables, fn in workers:
            stalled = fn()
            for t in tables:
                seen[t] = seen.get(t, False) or t in stalled
        for t, bad in sorted(seen.items()):
            g.add_metric([t], 1.0 if bad else 0.0)
        yield g


STALLED_TABLES = StalledTables()
REGISTRY.register(STALLED_TABLES)
EXPORTED_BY["sync"] = (*EXPORTED_BY["sync"], STALLED_TABLES)  # declared after EXPORTED_BY
for _family in STALLED_TABLES.describe():
    _OWNERS.setdefault(_family.name, set()).add("sync")
