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

from collections.abc import Iterator
from importlib import metadata
from typing import Any

import prometheus_client
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

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
CAPTURE_HANDLER_CPU = Counter(
    "crossfade_capture_handler_cpu_seconds_total",
    "CPU time of the thread running capture's handler while it handled batches (read from the "
    "JVM, encode, produce, delivery reports; JVM work on that thread included). Against the "
    "thread's whole CPU it shows what the engine itself spends on that thread between batches.",
)
SNAPSHOT_ROWS = Counter(
    "crossfade_capture_snapshot_rows_total",
    "Rows of the initial load, by source table: copied into the target or sent to the change "
    "topics as snapshot events by the COPY load (capture.initial_load: copy, events), or "
    "published from Debezium's snapshot.",
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
    "held it (stays at its last value while the table is idle; with sync.workers above 1, the "
    "largest of the process's workers' values).",
    ["table"],
)
SYNC_LAST_APPLIED_SOURCE_TS = Gauge(
    "crossfade_sync_last_applied_source_timestamp_seconds",
    "Source commit time of the newest event applied to each table (Unix time; with "
    "sync.workers above 1, the newest of the process's workers).",
    ["table"],
)
SYNC_LAST_BATCH_TS = Gauge(
    "crossfade_sync_last_batch_timestamp_seconds",
    "When a sync worker of this process last committed a batch (Unix time).",
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
    "crossfade_sync_assigned_partitions",
    "Partitions assigned to this process's sync workers (sync.workers), all together; a parent of "
    "sync.processes children adds theirs.",
)
SYNC_TABLE_HELD = Gauge(
    "crossfade_sync_table_held",
    "1 while sync holds back the table's partitions during an initial load until the tables its "
    "mapping's references point at have finished their snapshot (sync.parents_first_wait_s), "
    "else 0.",
    ["table"],
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

# Debezium's op codes -> the `op` label of crossfade_capture_events_total
OP_NAMES = {"c": "insert", "u": "update", "d": "delete", "r": "snapshot", "t": "truncate"}
CAPTURE_OPS = tuple(OP_NAMES.values())
SYNC_OPS = ("upsert", "delete")
DLQ_RULES = ("decode",)
TARGET_RULE = "target"
"""The rule of a mapped row the new database refused (crossfade.sync.refused): one label value
for every constraint, which the dead letter's reason names."""
COMPONENTS = ("capture", "sync")

try:
    BUILD.info({"version": metadata.version("crossfade")})
except metadata.PackageNotFoundError:  # running from a source tree without installing
    BUILD.info({"version": "unknown"})
