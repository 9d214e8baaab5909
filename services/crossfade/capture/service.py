"""Capture: the embedded Debezium engine publishing change events to Kafka as Avro.

Commit order of one Debezium batch (why a crash anywhere loses nothing):

1. each record is converted to Avro (schema derived from Debezium's table schema) and produced,
   keyed by primary key, with an idempotent producer;
2. the producer is flushed and every delivery report checked: any failure raises, the engine
   stops, the process exits non-zero;
3. only then does the handler return, so Debezium marks the batch processed and its source offsets
   (kept in ``state_dir/offsets-<epoch>.dat``) may advance.

A restart therefore re-sends at most the batches after the last offset flush; the sync's
source-position guard drops those duplicates.

The broker's log is identified by its epoch (:mod:`crossfade.events.kafka`). A new epoch means the
broker lost what crossfade wrote, so capture starts a fresh offsets file: Debezium re-snapshots,
and at the end of the snapshot capture emits a ``sweep`` marker per table so sync deletes rows the
snapshot no longer holds. A delivery offset lower than one seen before for the same partition means
the broker lost its log while capture ran: capture stops (exit ≠ 0) and the restart re-snapshots;
so does an epoch gone with nothing outstanding (:mod:`crossfade.capture.epoch_watch`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Producer

from crossfade import metrics
from crossfade.capture import jvm_archive
from crossfade.capture.batch import BatchReader, bulk_engine, import_bridge
from crossfade.capture.connector import FENCE_TABLE, SIGNAL_TABLE, embedded_properties
from crossfade.capture.dbz_meters import DebeziumMeters
from crossfade.capture.engine_stop import HandlerPhase, close_engine
from crossfade.capture.epoch_watch import LOST_HINT, EpochWatch, log_replaced
from crossfade.capture.handler import batch_handler
from crossfade.capture.heartbeat import CaptureHeartbeat, PauseHold
from crossfade.capture.initial_load import CopyLoad, LoadGate, LoadState, copy_load_mode
from crossfade.capture.json_avro import JsonAvroEncoder
from crossfade.capture.jvm_avro import JvmAvroEncoder, JvmAvroReader
from crossfade.capture.pacing import Pacer
from crossfade.capture.preflight import check_source
from crossfade.capture.snapshot_events import producer_config, stream_load
from crossfade.capture.stats import CaptureStats
from crossfade.config import Settings
from crossfade.errors import BrokerDataLost, BrokerUnavailable, CrossfadeError, SchemaMismatch
from crossfade.events.avro_codec import ConnectCodecCache
from crossfade.events.decode import EPOCH_HEADER, POSITION_HEADER
from crossfade.events.framing import frame_confluent, frame_single_object
from crossfade.events.kafka import (
    CONTROL_HEADER,
    Admin,
    ControlRecord,
    ensure_epoch,
)
from crossfade.events.model import ORIGIN_PREFIX, format_lsn, position
from crossfade.events.schema_store import RegistryRegistrar, SchemaPublisher

log = logging.getLogger(__name__)


_SNAPSHOT_FLAGS = frozenset(
    {"true", "first", "first_in_data_collection", "last_in_data_collection", "last"}
)

_CONTROL = ("", "")
"""A destination whose records are handled as control rows, not produced (:meth:`_control_row`)."""
_LOG4J = Path(__file__).with_name("log4j2.properties")
_POLL_EVERY = 64  # records produced between two polls for delivery reports (~0.4 µs a poll)
_EPOCH_CHECK_S = 5.0
"""Deliveries outstanding this long make capture check that the broker still holds its log."""
_STOP_CHECK_S = 0.5
"""A flush waiting for Kafka's acknowledgements looks whether capture stops this often."""


class ChangeProducer:
    """Turns Debezium JSON records into Avro Kafka records; one instance per capture process."""

    def __init__(
        self, settings: Settings, publisher: SchemaPublisher, partitions: dict[str, int]
    ) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.publisher = publisher
        self.partitions = partitions  # change topic -> partition count
        self.fence_topic = self.kafka.table_topic(FENCE_TABLE)
        self.signal_topic = self.kafka.table_topic(SIGNAL_TABLE)
        # idempotent, all acks, the Java clients' partitioner (murmur2: a key lands in the same
        # partition whichever runtime produced it), no topic created by a produce (a broker
        # restarted empty: capture notices the lost log instead, see flush)
        self.producer = Producer(producer_config(self.kafka.client_config()))
        self._codecs = ConnectCodecCache()
        self._json = JsonAvroEncoder(self._compile)
        self._encode: Any = self._json.encode  # (raw, subject, schema text) -> (Avro, payload)
        self._payload: Any = JsonAvroEncoder.payload
        self._reader: Any = BatchReader()
        if settings.capture.converter == "jvm":  # Avro from the JVM: capture/jvm_avro.py
            self._reader = JvmAvroReader()
            jvm = JvmAvroEncoder(self._reader, self._compile)
            self._encode, self._payload = jvm.encode, jvm.payload
        self._published: dict[int, int] = {}
        self._registry = (
            RegistryRegistrar(settings.kafka.schema_registry_url)
            if settings.kafka.schema_registry_url
            else None
        )
        self._errors: list[str] = []
        self._last_offset: dict[tuple[str, int], int] = {}
        self.stats = CaptureStats()
        self.meter = metrics.CaptureMeter(settings)
        self.snapshot_lsn: int | None = None
        self._unswept_snapshot_lsn: int | None = None
        self.snapshot_rows: dict[str, int] = {}  # per topic, this run's snapshot (progress display)
        self.progress: Any = None  # capture.progress.SnapshotProgress on a terminal
        self.on_snapshot_done: Any = None  # called with the LSN (capture/snapshot_guard.py)
        self._headers: list[tuple[str, bytes]] = []
        self._deliver = self._on_delivery  # bound once: produce takes it per record
        self.epoch: str | None = None
        self.floor = 0
        self._floor_file: Path | None = None
        self.stream_lsn = 0
        """Highest LSN of a streamed record seen (incremental snapshot rows are placed at it)."""
        self.pacer: Pacer | None = None
        """Off-peak pacing of Debezium's snapshot (set by :class:`CaptureService`)."""
        self._window_checked = False
        self._subjects: dict[str, tuple[str, str]] = {}
        """Topic -> its key and value subjects, or _CONTROL (see :meth:`_dest_subjects`)."""
        self._unpolled = 0
        self.phase = HandlerPhase()  # where Debezium's handler is (capture/engine_stop.py)
        self.stopping: threading.Event | None = None  # capture's: a flush stops waiting then

    def set_epoch(self, epoch: str, state_dir: Path) -> None:
        """Stamp every record with the broker epoch (sync notices a replaced log per record) and
        load this epoch's snapshot floor (see :func:`crossfade.events.model.position`)."""
        self.epoch = epoch
        self._headers = [(EPOCH_HEADER, epoch.encode())]
        self._floor_file = state_dir / f"snapshot-{epoch}.json"
        if self._floor_file.exists():
            self.floor = int(json.loads(self._floor_file.read_text())["lsn"])

    def _note_stream_lsn(self, payload: dict[str, Any]) -> None:
        lsn = (payload.get("source") or {}).get("lsn")
        if lsn is not None and (payload.get("source") or {}).get("snapshot") in (None, "false"):
            self.stream_lsn = max(self.stream_lsn, int(lsn))

    def _set_floor(self, lsn: int) -> None:
        if lsn == self.floor:
            return
        self.floor = lsn
        if self._floor_file is not None:
            tmp = self._floor_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"lsn": lsn}))
            tmp.replace(self._floor_file)

    # -- delivery -----------------------------------------------------------------------------
    def _on_delivery(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}: {err.str()}")
            return
        tp = (msg.topic(), msg.partition())
        off = msg.offset()
        last = self._last_offset.get(tp)
        if last is not None and off <= last:
            self._errors.append(
                f"LOG RESET {msg.topic()}[{msg.partition()}] offset {off} after {last}"
            )
        self._last_offset[tp] = off

    def flush(self, timeout: float = 120) -> None:
        """Wait for every delivery report; raise on any failure (the batch is then not marked).

        While deliveries are outstanding, every few seconds the broker's epoch is read: a broker
        restarted empty (our topics gone with its log) stops capture at once with
        :class:`BrokerDataLost`, instead of after ``timeout`` seconds of a producer waiting for
        topics that no longer exist (issue 21)."""
        deadline = time.monotonic() + timeout
        # waits of _STOP_CHECK_S: a stop ends the handler's batch within that (Debezium's close
        # waits for it); the epoch is read once every _EPOCH_CHECK_S of them
        waited = min(_STOP_CHECK_S, timeout)
        remaining = self.producer.flush(waited)
        looked = 0.0
        while remaining and time.monotonic() < deadline:
            self.phase.enter(f"waiting for Kafka to acknowledge {remaining} change events")
            if self.stopping is not None and self.stopping.is_set():  # unacked: a restart resends
                raise CrossfadeError(f"capture stopped while {remaining} events awaited Kafka")
            if waited - looked >= _EPOCH_CHECK_S:
                looked = waited
                lost = self._log_replaced()
                if lost is not None:
                    raise BrokerDataLost(
                        f"the broker lost its log while capture ran ({lost}; {remaining} change "
                        "events undelivered)",
                        LOST_HINT,
                    )
            wait = max(0.0, min(_STOP_CHECK_S, deadline - time.monotonic()))
            waited += wait
            remaining = self.producer.flush(wait)
        if remaining:
            raise BrokerUnavailable(
                f"{remaining} change events not acknowledged by Kafka within {timeout:.0f} s"
            )
        if self._errors:
            errs, self._errors = self._errors, []
            if any(e.startswith("LOG RESET") for e in errs):
                raise BrokerDataLost(
                    f"the broker lost its log while capture ran ({errs[0]})", LOST_HINT
                )
            raise BrokerUnavailable(
                f"Kafka refused change events: {errs[0]}"
                + (f" (+{len(errs) - 1} more)" if len(errs) > 1 else "")
            )

    def _log_replaced(self) -> str | None:
        return log_replaced(self.kafka, self.epoch)  # capture/epoch_watch.py

    # -- conversion ---------------------------------------------------------------------------
    @property
    def _registry(self) -> RegistryRegistrar | None:
        """The Schema Registry capture registers its schemas with, if any."""
        return self._registrar

    @_registry.setter
    def _registry(self, registrar: RegistryRegistrar | None) -> None:
        self._registrar = registrar
        self._json.by_subject = registrar is not None  # a subject's own id per schema

    def _compile(self, schema: dict[str, Any], key: str | None, subject: str) -> tuple[Any, Any]:
        """Codec for a Connect schema and the framing of its records, the schema published
        (schemas topic) or registered (Schema Registry, Confluent wire format) before first use."""
        cc = self._codecs.get(schema, key=key)
        # the frame's header, built once: framing a record is one concatenation
        if self._registry is not None:
            sid = self._registry.register(subject, cc.avro.schema)
            return cc, frame_confluent(sid, b"").__add__
        fp = self._published.get(id(cc))
        if fp is None:
            fp = self.publisher.publish(cc.avro.schema).fingerprint
            self._published[id(cc)] = fp
        return cc, frame_single_object(fp, b"").__add__

    def frame_prefix(self, schema: dict[str, Any], subject: str) -> bytes:
        """The bytes a record of this Connect schema is framed with (the schema published or
        registered now): the COPY streams' snapshot events frame their Avro with them."""
        return bytes(self._compile(schema, None, subject)[1](b""))

    def _sweep_if_snapshot_ended(self) -> None:
        """Emit the end-of-snapshot sweep once, before anything that follows the snapshot.

        Debezium flags the snapshot's final record ``last``, but a snapshot restarted after a
        crash was seen to end without one: the first record after the snapshot (a streamed
        change, a heartbeat or a fence) triggers the sweep too. Per partition the producer keeps
        order, so the sweep lands after every snapshot record and before what follows.
        """
        if self._unswept_snapshot_lsn is None:
            return
        lsn, self._unswept_snapshot_lsn = self._unswept_snapshot_lsn, None
        self._emit_sweeps(lsn)
        self.stats.snapshot_done = True
        log.info("snapshot complete at LSN %s; sweep markers sent", format_lsn(lsn))
        if self.on_snapshot_done is not None:
            self.on_snapshot_done(lsn)

    def handle(self, records: Any) -> None:
        """Produce one Debezium batch and wait for the broker's acknowledgements.

        Off-peak pacing of Debezium's snapshot (``capture.load_windows``/``load_rate``, when
        Debezium loads) happens here, by holding this handler: a batch with snapshot rows waits
        for a window before its first snapshot row is produced, and after a batch the rate cap's
        debt is waited out before returning. Debezium then blocks too (its snapshot reader stops
        at its full queue), with its snapshot transaction open: nothing is acknowledged, nothing
        is skipped, and the load resumes with the next row. Holding the handler is the only way
        to slow an embedded Debezium from outside it, and it keeps the commit order above."""
        t0, cpu0 = time.monotonic(), time.thread_time()
        counts: dict[tuple[str, str | None], int] = {}  # (topic, op) -> records, for metrics
        self.phase.enter("producing a Debezium batch to Kafka")
        rows = self._reader.read(records)
        self._window_checked = False
        snapshot_rows = 0
        for row in rows:
            snapshot_rows += self._produce_row(row, counts)
        t_flush = time.monotonic()
        self.flush()
        t1 = time.monotonic()
        self.stats.last_batch_at = time.time()
        # acknowledged by the broker: count it
        self.meter.batch(
            self.stats,
            self.snapshot_running,
            counts,
            len(rows),
            t1 - t0,
            t1 - t_flush,
            time.thread_time() - cpu0,
        )
        if self.progress is not None:
            if self.stats.snapshot_done:
                self.progress.update(self.snapshot_rows)
                self.progress.finish()
            elif self.snapshot_rows:
                self.progress.update(self.snapshot_rows)
        if snapshot_rows and self.pacer is not None:
            self.phase.enter("pacing Debezium's snapshot (capture.load_rate)")
            if self.pacer.admit(snapshot_rows):
                raise CrossfadeError("capture stopped while pacing (capture.load_rate)")

    def _control_row(self, dest: str, raw_value: Any, value_schema: Any) -> bool:
        """Debezium's heartbeats, signals and the fence table: handled here (True), not produced
        as change events."""
        if dest.startswith("__debezium-heartbeat"):
            self.stats.heartbeats += 1
            self._sweep_if_snapshot_ended()
            return True
        if dest == self.signal_topic:
            # Debezium's signals and incremental-snapshot window markers are its own business;
            # only their stream position counts (see the incremental case below)
            if raw_value is not None:
                self._note_stream_lsn(self._payload(raw_value, value_schema))
            return True
        if dest == self.fence_topic:
            if raw_value is not None:
                fence = self._payload(raw_value, value_schema)
                self._note_stream_lsn(fence)
                self._sweep_if_snapshot_ended()
                self._broadcast_fence(fence)
            return True
        return False

    def _wait_for_window(self) -> None:
        """Before a batch's first snapshot row: hold until a load window is open."""
        if self._window_checked or self.pacer is None:
            return
        self._window_checked = True
        self.phase.enter("waiting for a load window (capture.load_windows)")
        if self.pacer.wait_window():
            raise CrossfadeError("capture stopped while its snapshot waited for a load window")

    def _place(self, source: dict[str, Any]) -> tuple[int, bool]:
        """The position (see :func:`crossfade.events.model.position`) of the record whose
        ``source`` block this is and whether it is the snapshot's last row; moves the floor and
        the stream position."""
        self.stats.last_source_ts_ms = int(source.get("ts_ms") or 0)
        snap = source.get("snapshot")
        lsn = int(source.get("lsn") or 0)
        is_snapshot = snap in _SNAPSHOT_FLAGS
        snap_last = False
        if snap == "incremental":
            # An incremental snapshot's row (verify --repair) carries no LSN. It was read
            # after the window-open marker was streamed, and every key changed while the
            # window was open was dropped from the chunk by Debezium, so it is at least as
            # new as the stream so far: it gets that position, as a snapshot row, and the
            # floor rises to it so that a transaction in flight across the read (streamed
            # later with an older LSN) still wins over it, as at the initial snapshot.
            lsn = max(self.stream_lsn, self.floor)
            self._set_floor(lsn)
            is_snapshot = True
        elif is_snapshot:
            self._wait_for_window()
            self.snapshot_lsn = lsn
            self._unswept_snapshot_lsn = lsn
            self._set_floor(lsn)
            snap_last = snap == "last"
        else:
            if self._unswept_snapshot_lsn is not None:
                self._sweep_if_snapshot_ended()
            if lsn > self.stream_lsn:
                self.stream_lsn = lsn
        return position(lsn, snapshot=is_snapshot, floor=self.floor), snap_last

    def _produce_row(self, row: Any, counts: dict[tuple[str, str | None], int]) -> int:
        """Produce one record of a batch; 1 when it was a row of the initial snapshot."""
        dest, raw_key, raw_value, key_schema, value_schema = row
        subjects = self._subjects.get(dest)
        if subjects is None:
            subjects = self._subjects[dest] = self._dest_subjects(dest)
        if subjects is _CONTROL:
            self._control_row(dest, raw_value, value_schema)
            return 0
        key_bytes = self._encode(raw_key, subjects[0], key_schema)[0]
        value_bytes, payload = self._encode(raw_value, subjects[1], value_schema)
        snap_last = False
        if payload is not None:
            source = payload.get("source") or {}
            origin = source.get("origin")
            if origin and str(origin).startswith(ORIGIN_PREFIX):
                # written by a crossfade sync (the other direction): sending it back would echo
                self.stats.echoes_skipped += 1
                return 0
            pos, snap_last = self._place(source)
            headers = [*self._headers, (POSITION_HEADER, str(pos).encode())]
        else:
            headers = self._headers
        self._send(dest, key_bytes, value_bytes, headers)
        produced = self.stats.produced
        produced[dest] = produced.get(dest, 0) + 1
        loaded = 0
        if payload is not None and self._unswept_snapshot_lsn is not None:
            self.snapshot_rows[dest] = self.snapshot_rows.get(dest, 0) + 1
            loaded = int(source.get("snapshot") in _SNAPSHOT_FLAGS)
        op = payload.get("op") if payload else None
        counts[(dest, op)] = counts.get((dest, op), 0) + 1
        self._unpolled += 1
        if self._unpolled >= _POLL_EVERY:  # delivery reports (the flush serves the rest)
            self._unpolled = 0
            self.producer.poll(0)
        if snap_last:
            self._sweep_if_snapshot_ended()
        return loaded

    def _dest_subjects(self, dest: str) -> tuple[str, str]:
        """A destination's key and value subjects, or :data:`_CONTROL` for Debezium's heartbeats,
        signals and the fence table (:meth:`_control_row`)."""
        if (
            dest.startswith("__debezium-heartbeat")
            or dest == self.signal_topic
            or dest == self.fence_topic
        ):
            return _CONTROL
        return (f"{dest}-key", f"{dest}-value")

    def _send(self, dest: str, key: bytes | None, value: bytes | None, headers: list[Any]) -> None:
        try:
            self._produce(dest, key, value, headers)
        except BufferError:  # the local queue is full: serve delivery reports, try once more
            self.producer.poll(1.0)
            self._produce(dest, key, value, headers)
        except Exception as exc:  # KafkaException: e.g. MSG_SIZE_TOO_LARGE
            raise CrossfadeError(
                f"Kafka refused a change event of {len(value or b'')} bytes for {dest} ({exc})",
                "raise the broker's message.max.bytes / the topic's max.message.bytes, or exclude the column",
            ) from None

    def _produce(
        self, dest: str, key: bytes | None, value: bytes | None, headers: list[Any]
    ) -> None:
        """A record without a key (truncate) goes to partition 0, whose position watermark
        orders it against the other partitions' events (see target.apply)."""
        if key is not None:
            self.producer.produce(
                dest, key=key, value=value, on_delivery=self._deliver, headers=headers
            )
        else:
            self.producer.produce(
                dest, value=value, on_delivery=self._deliver, headers=headers, partition=0
            )

    @property
    def snapshot_running(self) -> bool:
        """True until the end-of-snapshot sweep went out (sync then knows the snapshot is whole)."""
        return self._unswept_snapshot_lsn is not None or (
            self.snapshot_lsn is not None and not self.stats.snapshot_done
        )

    def _control(self, rec: ControlRecord, topics: list[str]) -> None:
        for topic in topics:
            for p in range(self.partitions[topic]):
                self.producer.produce(
                    topic,
                    key=None,
                    value=rec.encode(),
                    partition=p,
                    headers=[(CONTROL_HEADER, rec.kind.encode()), *self._headers],
                    on_delivery=self._on_delivery,
                )

    def _emit_sweeps(self, lsn: int) -> None:
        for table in self.settings.tables:
            topic = self.kafka.table_topic(table)
            # the count lets sync apply the sweep only once every partition passed its marker
            rec = ControlRecord("sweep", table, lsn, partitions=self.partitions[topic])
            self._control(rec, [topic])

    def _broadcast_fence(self, payload: dict[str, Any]) -> None:
        after = payload.get("after") or {}
        if payload.get("op") not in ("c", "r") or not after.get("token"):
            return
        source = payload.get("source") or {}
        self.stats.fences += 1
        for table in self.settings.tables:
            rec = ControlRecord(
                "fence",
                table,
                int(source.get("lsn") or 0),
                str(after["token"]),
                int(source.get("ts_ms") or 0),
            )
            self._control(rec, [self.kafka.table_topic(table)])


class CaptureService:
    """Runs preflight, prepares topics and the epoch, then the Debezium engine until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: Any = None
        self.producer: ChangeProducer | None = None
        self.epoch: str | None = None
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.gate: LoadGate | None = None
        self.worker_id = f"capture-{uuid.uuid4().hex[:8]}"
        self.pause = PauseHold(self.stopping)  # crossfade pause capture (capture/heartbeat.py)
        self.pacer = Pacer.from_settings(settings, wait=self.stopping.wait, held=self.pause.held)
        self._engine_pid = os.getpid()  # a fork (verify's workers) must not close the engine

    def prepare(self) -> Path:
        """Preflight and Kafka setup; return the Debezium offsets file for this epoch."""
        s = self.settings
        check_source(s)
        admin = Admin(s.kafka.client_config())
        admin.ping()
        topics = [s.kafka.table_topic(t) for t in s.tables]
        admin.ensure_topics(topics, s.kafka.partitions, s.kafka.replication_factor)
        admin.ensure_topics(
            [s.kafka.schemas_topic], 1, s.kafka.replication_factor, {"cleanup.policy": "compact"}
        )
        admin.ensure_topics([s.kafka.dlq_topic], 1, s.kafka.replication_factor)
        epoch, created = ensure_epoch(
            admin, s.kafka.client_config(), s.kafka.control_topic, s.kafka.replication_factor
        )
        self.epoch = epoch
        state = Path(s.capture.state_dir)
        state.mkdir(parents=True, exist_ok=True)
        offsets = state / f"offsets-{epoch}.dat"
        older = [p for p in state.glob("offsets-*.dat") if p != offsets]
        if not offsets.exists() and older:
            log.warning(
                "broker log epoch %s is new (%s): the broker lost what crossfade wrote; "
                "Debezium will re-snapshot the source and sync will sweep stale rows",
                epoch,
                "created now" if created else "created by another capture",
            )
        partitions = {t: admin.partitions(t) or s.kafka.partitions for t in topics}
        publisher = SchemaPublisher(s.kafka.client_config(), s.kafka.schemas_topic)
        self.producer = ChangeProducer(s, publisher, partitions)
        self.producer.set_epoch(epoch, state)
        try:  # a terminal gets a progress bar per table while Debezium snapshots
            from crossfade.capture.progress import for_terminal
            from crossfade.db import connect as _connect

            with _connect(s.source, "source") as conn:
                self.producer.progress = for_terminal(
                    conn, list(s.tables), {t: s.kafka.table_topic(t) for t in s.tables}
                )
        except Exception as exc:  # noqa: BLE001 - a courtesy, never a reason to stop
            log.debug("no snapshot progress display: %s", exc)
        log.debug("preflight, topics and broker epoch %s ready", epoch)
        return offsets

    def run(self) -> None:
        """Block until :meth:`stop` or a failure; re-raise the failure (exit ≠ 0)."""
        offsets = self.prepare()
        assert self.producer is not None  # prepare() sets it
        self.producer.pacer = self.pacer
        self.producer.stopping = self.stopping
        gate = self.gate = self._copy_load(offsets)
        meters = DebeziumMeters()  # Debezium's per-event JMX metrics off (capture/dbz_meters.py)
        producer = self.producer
        handler = batch_handler(
            producer.handle, producer.phase, gate, self.pause.hold, self.stopping, meters.check
        )

        jvm_opts = [
            f"-Dlog4j2.configurationFile={_LOG4J}",
            # SIGTERM/SIGINT stay with Python, whose handler stops the engine in order; the JVM's
            # own handler would start its shutdown while a batch is inside Python (seen: SIGSEGV)
            "-Xrs",
            f"-XX:ErrorFile={tempfile.gettempdir()}/crossfade_hs_err_%p.log",
            *jvm_archive.options(),  # Debezium's classes from a class-data archive, if built
            *self.settings.capture.jvm_options,
        ]
        props = embedded_properties(self.settings, offsets)
        if gate is not None:
            props["snapshot.mode"] = (
                "no_data"  # the rows go straight to the target: stream from the slot
            )
        metrics.SlotPoller(self.settings, self.stopping).start()  # retained WAL, own connection
        # the sync_alive gate's evidence, in the target database; also where the pause is read
        # and the load's progress reported, so it starts before a load that waits for a window
        CaptureHeartbeat(self).start()
        # the broker's epoch, looked for with nothing outstanding too (capture/epoch_watch.py)
        watch = EpochWatch(self.settings.kafka, self.epoch, self.stopping, self._close_engine)
        watch.start()
        if gate is not None:
            import_bridge()  # off the path from the free slot to Debezium's first batch
            try:
                gate.wait_slot()  # Debezium starts (seconds) while the COPY load runs
            except CrossfadeError:
                if self.stopping.is_set():
                    return
                raise
        self.engine = bulk_engine(props, handler, jvm_opts, self.settings.capture.converter, meters)
        self.ready.set()
        log.info("capture running (epoch %s, offsets %s)", self.epoch, offsets)
        try:
            # a close before the engine was assigned did not reach it: stopping says it came
            if watch.error is None and not self.stopping.is_set():
                self.engine.run()
        except BaseException as exc:
            if self.stopping.is_set():
                return
            failed = watch.error or (gate.error if gate is not None else None)
            if failed is not None:
                raise failed from None
            if isinstance(exc, CrossfadeError):
                raise
            raise CrossfadeError(f"Debezium stopped: {_java_message(exc)}") from exc
        failed = watch.error or (gate.error if gate is not None else None)
        if failed is not None and not self.stopping.is_set():
            raise failed
        if not self.stopping.is_set():
            raise CrossfadeError(
                "Debezium stopped on its own (see the log above for its reason)",
                "fix the cause and start capture again; it resumes from its last offsets",
            )

    def _copy_load(self, offsets: Path) -> LoadGate | None:
        """``capture.initial_load: copy`` (:mod:`crossfade.capture.initial_load`): the gate of this
        epoch's COPY load, started unless done before; None when Debezium loads. An epoch whose
        Debezium offsets exist without a COPY load was loaded by Debezium: it stays so."""
        s, producer = self.settings, self.producer
        assert producer is not None and self.epoch is not None
        state = LoadState(Path(s.capture.state_dir), self.epoch)
        mode = copy_load_mode(s)
        if mode is None or (offsets.exists() and state.read() is None):
            return None
        stream = (
            stream_load(s, producer.frame_prefix, self.epoch)
            if mode == "stream" and not state.done
            else None
        )
        if mode == "stream" and not state.done and stream is None:
            # a type the snapshot events do not cover: Debezium snapshots, from nothing
            offsets.unlink(missing_ok=True)
            state.path.unlink(missing_ok=True)
            return None
        producer.stats.snapshot_done = True  # no Debezium snapshot in this epoch
        if state.done:
            return LoadGate(None)
        # a load that did not finish: Debezium never acknowledged a batch, but any offsets it kept
        # belong to the slot the load drops
        offsets.unlink(missing_ok=True)

        def floor_and_sweep(lsn: int) -> None:
            # the same markers as after a Debezium snapshot (the load empties the target up front,
            # so they delete nothing); produced now, acknowledged before the load is marked done
            producer._set_floor(lsn)
            if stream is None:
                producer._emit_sweeps(lsn)
                producer.producer.poll(0)

        def sweep_and_flush(lsn: int) -> None:
            # snapshot events: the sweep follows them on every partition (the COPY streams'
            # producers had every event acknowledged before this), as after Debezium's snapshot
            if stream is not None:
                producer._emit_sweeps(lsn)
            producer.flush()

        load = CopyLoad(
            s,
            state,
            on_slot=floor_and_sweep,
            before_done=sweep_and_flush,
            pacer=self.pacer,
            stream=stream,
        )
        return LoadGate(load, on_error=self._close_engine)

    def stop(self) -> None:
        self.stopping.set()
        self._close_engine()

    def stop_waits_on(self) -> str:
        """What capture's stop waits on (the runner's line when it outlasts its bound)."""
        if self.engine is None:
            return "capture was starting: preflight, topics or the COPY load's slot"
        phase = self.producer.phase if self.producer is not None else HandlerPhase()
        return f"Debezium's engine has not stopped; its handler is {phase.describe()}"

    def _close_engine(self) -> None:
        """End Debezium's run (stop; a failed load: the capture thread then raises its error)."""
        if self.engine is not None:
            close_engine(self.engine, getattr(self.producer, "phase", None), self._engine_pid)


def _java_message(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return msg[0] if msg else type(exc).__name__


__all__ = ["CaptureService", "ChangeProducer", "SchemaMismatch"]
