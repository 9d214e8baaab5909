"""Initial load by parallel COPY, handed over to Debezium's stream at the slot's consistent point.

``capture.initial_load: copy`` (the default). Instead of Debezium reading every row and sending it
through Kafka as a change event, capture:

1. creates the publication (the table list Debezium would give it) and then the logical
   replication slot itself, on a replication connection, with ``SNAPSHOT 'export'``: the slot's
   consistent point S and a snapshot that sees exactly the transactions committed before S;
2. records S as this broker epoch's snapshot floor (``state_dir/snapshot-<epoch>.json``, see
   :func:`crossfade.events.model.position`) and the load as started (``load-<epoch>.json``);
3. in the target, per table and in one transaction: creates the table if missing (sync's
   :func:`crossfade.target.ddl.ensure_target_table`), empties it, raises the table's
   watermark to ``S << 64`` and drops its tombstones. This is the end-of-snapshot sweep done up
   front: everything the target held came from an older snapshot or stream, and the load is a
   complete image at S. A thread does it table by table and queues each table's chunks
   (:mod:`.copy_plan`) once the table is ready: the first tables copy while the next are prepared;
4. ``initial_load_workers`` processes (:mod:`crossfade.capture.copy_worker`, each driven by a
   thread; started first, their start-up overlapping steps 1-3: :mod:`.copy_stream`) each import the exported snapshot (``REPEATABLE READ`` + ``SET TRANSACTION SNAPSHOT``)
   and COPY chunks of the tables (block ranges, ``ctid``) straight into the target tables, every
   row with ``_cf_pos = S << 64``, the position of a snapshot row;
   the replication connection stays open (idle) until every worker has imported the snapshot;
   the workers' own transactions then keep it;
5. marks the load done. Debezium starts with ``snapshot.mode=no_data`` on that slot as soon as
   the exporting connection has let go of it (its start-up takes seconds: it overlaps the copy),
   and streams from S; capture's handler holds every batch until the load is done, so nothing
   streamed reaches Kafka (or is acknowledged to Debezium) before the rows it follows. A
   transaction in flight across S commits after S and is streamed with an LSN below S: its
   position ``(S, lsn)`` still beats the copied row's ``(S, 0)``.

Capture also sends the sweep markers at S through every change topic, as after a Debezium
snapshot, so the stream after a load looks the same to sync.

A crash at any point before the load is marked done leaves it not done: the restart drops the
slot (Debezium has acknowledged nothing from it: its batches were held) and loads again from
step 1 (step 3 empties what the first attempt copied).

With a ``mapping.tables`` entry (or ``initial_load: events``, for any tables): step 3 only notes
the slot, step 4 sends the rows to the change topics as snapshot events at S
(:mod:`crossfade.capture.snapshot_events`) for sync to map, and the sweep markers follow them
before the load is marked done. A column type the events do not cover makes it Debezium's
snapshot (one INFO line).

Append-only tables (no primary key) are copied in one stream with their content hash
(``_cf_hash``), identical rows collapsing into one as they do through Debezium.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_fixed,
)

from crossfade import metrics
from crossfade.capture.connector import captured_tables
from crossfade.capture.copy_plan import CHUNK_PAGES as CHUNK_PAGES
from crossfade.capture.copy_plan import Chunk, block_ranges, table_chunks
from crossfade.capture.copy_stream import CopyStream, start_streams
from crossfade.capture.pacing import Pacer, Schedule
from crossfade.capture.snapshot_events import StreamLoad
from crossfade.catalog import read_shape
from crossfade.config import Settings
from crossfade.db import connect, retrying
from crossfade.errors import CrossfadeError
from crossfade.events.model import SHIFT, position
from crossfade.target.ddl import add_column_from_source, ensure_target_table, sync_enum
from crossfade.target.store import (
    clear_tombstones,
    ensure_schema,
    note_copy_load,
    note_copy_load_slot,
    raise_watermark,
)

log = logging.getLogger(__name__)

_SESSION = (
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; "
    "SET extra_float_digits = 3; SET bytea_output = 'hex'"
)
"""Both ends of every COPY: text output the other side reads back exactly."""


def copy_load_mode(settings: Settings) -> str | None:
    """``copy``: rows copied into the target (``initial_load: copy``, no mapping); ``stream``:
    rows sent to the change topics as snapshot events for sync to map (:mod:`.snapshot_events`:
    ``initial_load: copy`` with a ``mapping.tables`` entry, or ``events`` for any tables); None:
    Debezium's snapshot (``initial_load: debezium``). A table whose column types the snapshot
    events do not cover makes a ``stream`` load Debezium's snapshot (:func:`~crossfade.capture.snapshot_events.stream_load`)."""
    mode = settings.capture.initial_load
    if mode == "events":
        return "stream"
    if mode == "copy" and settings.mapping and settings.mapping.tables:
        log.info(
            "tables with a mapping load as snapshot events by COPY for sync to map, unless a "
            "column type needs Debezium's snapshot (a line then says which); "
            "capture.initial_load: debezium loads them through Debezium's snapshot instead, "
            "which a rewind can replay"
        )
        return "stream"
    return "copy" if mode == "copy" else None


def _follow_source(src: psycopg.Connection, tgt: psycopg.Connection, table: str, shape: Any) -> Any:
    """The target table made to hold every value of the source's rows at the snapshot: enum
    labels and columns the source gained since the target table was created (a load started
    again after a crash, with writes going on meanwhile; seen as a COPY failing on every restart
    with ``invalid input value for enum``, issue 21). Catalog reads see the present, which holds
    everything the snapshot's rows use."""
    now = read_shape(src, table)
    if now is None:  # gone since ensure_target_table: the COPY says so
        return shape
    for col in now.columns:
        if col.enum:
            sync_enum(src, tgt, col.enum)
    have = {c.name for c in shape.columns}
    missing = [c.name for c in now.columns if c.name not in have]
    for name in missing:  # every row is copied again: no fill of older rows to record
        add_column_from_source(src, tgt, table, table, name)
    return ensure_target_table(src, tgt, table, table, False) if missing else shape


class LoadState:
    """``state_dir/load-<epoch>.json``: the slot position of this epoch's COPY load and whether it
    completed (Debezium may stream only then)."""

    def __init__(self, state_dir: Path, epoch: str) -> None:
        self.epoch = epoch
        self.path = state_dir / f"load-{epoch}.json"

    def read(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        return dict(json.loads(self.path.read_text()))

    @property
    def done(self) -> bool:
        d = self.read()
        return bool(d and d.get("done"))

    def write(self, **state: Any) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self.path)


class _SlotActive(Exception):
    pass


class CopyLoad:
    """Runs steps 1-5 of the module docstring once; :meth:`run` returns S (the slot's LSN)."""

    def __init__(
        self,
        settings: Settings,
        state: LoadState,
        on_slot: Callable[[int], None] = lambda lsn: None,
        before_done: Callable[[int], None] = lambda lsn: None,
        on_slot_free: Callable[[int], None] = lambda lsn: None,
        pacer: Pacer | None = None,
        stream: StreamLoad | None = None,
    ) -> None:
        """``on_slot(S)`` runs once the slot exists, before any row is copied (capture persists
        the snapshot floor there); ``on_slot_free(S)`` once every COPY stream has imported the
        snapshot and the exporting connection is closed (Debezium may take the slot);
        ``before_done(S)`` after every row is committed, before the load is marked done.
        ``pacer``: off-peak windows and the rate cap (:mod:`crossfade.capture.pacing`): the load
        begins only inside a window, each COPY stream takes its next chunk only inside one (a
        chunk in flight completes), and each stream copies at most its share of the cap.
        ``stream``: the tables are mapped: their rows go to the change topics as snapshot
        events (:mod:`crossfade.capture.snapshot_events`), the target is not touched."""
        self.stream = stream
        self.pacer = pacer or Pacer(Schedule(), None)
        self.streams = 1
        self.settings = settings
        self.state = state
        self.cap = settings.capture
        self.workers = settings.capture.initial_load_workers
        self.rows: dict[str, int] = {}
        self.total_chunks = 0
        self.marked = False
        """The load's end is recorded in the target (:meth:`mark_done`)."""
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)
        self._open: dict[str, int] = {}  # events: chunks not yet acknowledged, per table
        self._tables = list(settings.tables)
        self._on_slot = on_slot
        self._on_slot_free = on_slot_free
        self._before_done = before_done

    # -- slot -----------------------------------------------------------------------------------
    def _ensure_publication(self, src: psycopg.Connection) -> None:
        """The publication must exist before the slot: pgoutput reads it at the decoded position.
        As Debezium's filtered mode does: one that holds exactly the captured tables is used as
        it is (a DBA's, made by ``prepare-source``: no ownership needed), one with other tables
        is set to them, a missing one is created."""
        tables = captured_tables(self.settings)
        exists = src.execute(
            "SELECT ARRAY(SELECT schemaname || '.' || tablename FROM pg_publication_tables t "
            "WHERE t.pubname = p.pubname) FROM pg_publication p WHERE p.pubname = %s",
            (self.cap.publication_name,),
        ).fetchone()
        if exists and set(exists[0] or []) == set(tables):
            return
        targets = sql.SQL(", ").join(sql.Identifier(*t.split(".", 1)) for t in tables)
        if exists:
            src.execute(
                sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(
                    sql.Identifier(self.cap.publication_name), targets
                )
            )
        else:
            src.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(self.cap.publication_name), targets
                )
            )

    @retry(
        retry=retry_if_exception_type(_SlotActive),
        wait=wait_fixed(1),
        stop=stop_after_delay(30),
        reraise=True,
    )
    def _drop_slot(self, src: psycopg.Connection) -> None:
        row = src.execute(
            "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
            (self.cap.slot_name,),
        ).fetchone()
        if row is None:
            return
        if row[0] is not None:  # a killed capture's walsender may take a moment to notice
            raise _SlotActive(row[0])
        src.execute("SELECT pg_drop_replication_slot(%s)", (self.cap.slot_name,))
        log.info("dropped replication slot %s: the initial load starts over", self.cap.slot_name)

    def _create_slot(self) -> tuple[psycopg.Connection, int, str]:
        """Replication connection, consistent point, exported snapshot name. The connection must
        stay open and run nothing else while the snapshot is imported."""
        conninfo = self.settings.source.conninfo
        rconn = psycopg.connect(conninfo, autocommit=True, replication="database")
        # walsender commands take the simple query protocol only: PQexec
        cmd = f"CREATE_REPLICATION_SLOT {self.cap.slot_name} LOGICAL pgoutput (SNAPSHOT 'export')".encode()
        res = rconn.pgconn.exec_(cmd)
        if res.status != psycopg.pq.ExecStatus.TUPLES_OK:
            msg = (res.error_message or b"").decode(errors="replace").strip()
            rconn.close()
            raise CrossfadeError(
                f"cannot create the replication slot {self.cap.slot_name} on the legacy database ({msg})",
                "check max_replication_slots/max_wal_senders and the REPLICATION privilege",
            )
        lsn_raw, snapshot_raw = res.get_value(0, 1), res.get_value(0, 2)
        if lsn_raw is None or snapshot_raw is None:
            rconn.close()
            raise CrossfadeError(
                f"the legacy database created slot {self.cap.slot_name} without a consistent "
                "point or an exported snapshot",
                "drop the slot and check that the server supports SNAPSHOT 'export' (PostgreSQL 10+)",
            )
        lsn_text = lsn_raw.decode()
        snapshot = snapshot_raw.decode()
        hi, lo = lsn_text.split("/")
        return rconn, (int(hi, 16) << 32) | int(lo, 16), snapshot

    # -- target ---------------------------------------------------------------------------------
    def _feed(
        self,
        plan: psycopg.Connection,
        work: queue.Queue[Chunk | None],
        pos: int,
        n: int,
        errors: list[BaseException],
    ) -> None:
        """Step 3 and the chunks, table by table: a table's chunks are queued once it is emptied
        with its watermark raised to ``pos``, so the copy of the first tables overlaps the
        preparation of the next (it took 0.1-1 s for the five bench tables on a loaded machine,
        before any row was copied). ``plan`` holds the snapshot; ``n`` ends queued at the end
        (0: the caller queues them)."""
        s, bk = self.settings, self.settings.sync.bookkeeping_schema
        try:
            with plan, connect(s.source, "source") as src, connect(s.target, "target") as tgt:
                ensure_schema(tgt, bk)
                # a fence row written before this slot existed was never streamed by it
                note_copy_load_slot(tgt, bk, self.state.epoch, pos >> SHIFT)
                for table in s.tables:
                    if errors:
                        return
                    shape = ensure_target_table(src, tgt, table, table, s.sync.create_tables, bk)
                    shape = _follow_source(src, tgt, table, shape)
                    self._empty(tgt, table, pos)
                    for chunk in table_chunks(plan, table, shape, pos):
                        self.total_chunks += 1
                        work.put(chunk)
                plan.rollback()
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            errors.append(exc)
        finally:
            for _ in range(n):
                work.put(None)

    def _empty(self, tgt: psycopg.Connection, table: str, pos: int) -> None:
        """Step 3's transaction for one table: emptied, watermark raised, tombstones dropped.
        Tried again (5 attempts in all) on a transient failure, above all a deadlock: a sync worker
        applying the sweep marker at S (sent when the slot was made) raises the same watermark
        row and then reads the table, the reverse order of TRUNCATE then watermark (seen in CI:
        the whole load failed on it). The transaction is all or nothing, so again is safe."""
        schema, name = table.split(".", 1)
        bk = self.settings.sync.bookkeeping_schema

        def again(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            log.warning("emptying %s for the initial load: %s; trying again", table, exc)

        for attempt in retrying(again, stop=stop_after_attempt(5), max_wait_s=2.0):
            with attempt, tgt.transaction():
                tgt.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(schema, name)))
                raise_watermark(tgt, bk, table, pos, "initial load")
                clear_tombstones(tgt, bk, table)

    def _prepare_stream(self, pos: int) -> dict[str, Any]:
        """Step 3 for mapped tables: only the slot noted (sync maps the snapshot events and
        the sweep at the end removes what the snapshot no longer holds, as after Debezium's)."""
        s = self.settings
        with connect(s.target, "target") as tgt:
            ensure_schema(tgt, s.sync.bookkeeping_schema)
            note_copy_load_slot(tgt, s.sync.bookkeeping_schema, self.state.epoch, pos >> SHIFT)
        return {}

    # -- chunks ---------------------------------------------------------------------------------
    # -- workers --------------------------------------------------------------------------------
    def _first_order(self, snapshot: str) -> dict[str, Any]:
        """A COPY worker's first order: where to connect and which snapshot to import."""
        s = self.settings
        return {
            "source": s.source.conninfo,
            "target": s.target.conninfo,
            "source_timeout": s.source.connect_timeout_s,
            "target_timeout": s.target.connect_timeout_s,
            "snapshot": snapshot,
            "session": _SESSION,
            "client_config": self.stream.kafka if self.stream is not None else None,
        }

    def _worker(
        self,
        stream: CopyStream,
        snapshot: str,
        work: queue.Queue[Chunk | None],
        imported: threading.Barrier,
        errors: list[BaseException],
    ) -> None:
        """Drives one :mod:`crossfade.capture.copy_worker` process: this thread only passes orders
        and waits (never holding the interpreter lock while the rows flow)."""
        try:
            stream.ask(self._first_order(snapshot))
            imported.wait()
            while not errors:
                if self.pacer.wait_window():  # outside the windows: hold before the next chunk
                    raise CrossfadeError("capture stopped during the initial COPY load")
                chunk = work.get()
                if chunk is None:  # the end
                    break
                self._one_chunk(stream.ask, chunk, errors)
            stream.finish()
        except threading.BrokenBarrierError:
            return
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            errors.append(exc)
            imported.abort()
        finally:
            stream.close()

    def _one_chunk(
        self, ask: Callable[..., Any], chunk: Chunk, errors: list[BaseException]
    ) -> None:
        """One chunk's order to a COPY stream, its rows counted once it answers."""
        self._wait_turn(chunk.table, errors)
        what = (
            chunk.order
            if chunk.order is not None
            else {"target_sql": chunk.target_sql.as_string() if chunk.target_sql else ""}
        )
        n = int(
            ask(
                {
                    **what,
                    "source_sql": chunk.source_sql.as_string(),
                    "label": chunk.label,
                    "rate": self.pacer.rate / self.streams,
                }
            )["rows"]
        )
        with self._turn:
            self.rows[chunk.table] = self.rows.get(chunk.table, 0) + n
            if chunk.table in self._open:  # snapshot events only: their tables take turns
                self._open[chunk.table] -= 1
                self._turn.notify_all()
        # the initial load's progress, as Debezium's snapshot counts its rows
        metrics.SNAPSHOT_ROWS.labels(table=chunk.table).inc(n)

    def _wait_turn(self, table: str, errors: list[BaseException]) -> None:
        """Snapshot events go out table by table in the configured order, as Debezium's snapshot
        sends them (parents first; the three demo tables at once took sync twice as long): a
        table's chunks start once every earlier table's are acknowledged."""
        if table not in self._open:  # rows copied into the target: no turns
            return
        with self._turn:
            while not errors and any(
                self._open.get(t) for t in self._tables[: self._tables.index(table)]
            ):
                self._turn.wait(0.5)

    def mark_done(self) -> bool:
        """Record the load's end in the target (``rewind`` refuses checkpoints older than it);
        False when the target does not answer now: the load is done all the same (its rows are
        committed) and capture's heartbeat records the end later (a later mark only refuses
        more checkpoints, never accepts one from before the load)."""
        bk = self.settings.sync.bookkeeping_schema
        try:
            with connect(self.settings.target, "target") as tgt:
                note_copy_load(tgt, bk, self.state.epoch, done=True)
        except (psycopg.Error, CrossfadeError) as exc:
            log.warning("the initial load's end is not recorded in the target yet: %s", exc)
            return False
        self.marked = True
        return True

    def _finish(self, lsn: int, t0: float, copy_s: float, streams: int) -> None:
        """Step 5: the rows are committed; after ``before_done``, mark the load done."""
        self._before_done(lsn)
        self.mark_done()
        dt = time.monotonic() - t0
        total = sum(self.rows.values())
        self.state.write(
            lsn=lsn,
            done=True,
            slot=self.cap.slot_name,
            rows=self.rows,
            seconds=dt,
            copy_seconds=copy_s,
        )
        log.info(
            "initial load done: %d rows in %.1f s (%.0f rows/s, %d streams); Debezium streams from the slot",
            total,
            dt,
            total / dt if dt else 0,
            streams,
        )

    # -- run ------------------------------------------------------------------------------------
    def run(self) -> int:
        if self.pacer.wait_window():  # nothing is held on the legacy side before a window opens
            raise CrossfadeError("capture stopped before the initial load's window opened")
        t0 = time.monotonic()
        streams = start_streams(self.workers)  # first: they start up while the slot is made
        try:
            lsn, copy_s, n = self._load(streams)
        finally:
            for stream in streams:
                stream.close()
        self._finish(lsn, t0, copy_s, n)
        return lsn

    def _load(self, streams: list[CopyStream]) -> tuple[int, float, int]:
        """Steps 1-4: (S, the copy's seconds, the streams used)."""
        s = self.settings
        with connect(s.target, "target") as tgt:
            # before the slot is dropped: a checkpoint from now until the load ends cannot be
            # rewound to (checkpoint.rewind), and no fence trusts the slot's position meanwhile
            ensure_schema(tgt, s.sync.bookkeeping_schema)
            note_copy_load(tgt, s.sync.bookkeeping_schema, self.state.epoch, done=False)
        with connect(s.source, "source") as src:
            self._ensure_publication(src)
            self._drop_slot(src)
        rconn, lsn, snapshot = self._create_slot()
        try:
            pos = position(lsn, snapshot=True)
            self.state.write(lsn=lsn, done=False, slot=self.cap.slot_name)
            self._on_slot(lsn)
            log.info(
                "initial load by COPY at LSN %X/%X (snapshot %s)",
                lsn >> 32,
                lsn & 0xFFFFFFFF,
                snapshot,
            )
            plan = connect(s.source, "source", autocommit=False)  # closed by who plans
            try:
                plan.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                plan.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            except BaseException:
                plan.close()
                raise
            work: queue.Queue[Chunk | None] = queue.Queue()
            errors: list[BaseException] = []
            feed = None
            if self.stream is None and not self.pacer.rate:  # chunks as the tables are ready
                n = self.streams = len(streams)
                feed = threading.Thread(
                    target=self._feed,
                    args=(plan, work, pos, n, errors),
                    name="copy-plan",
                    daemon=True,
                )
                feed.start()
            else:  # every chunk first: a rate cap's share needs the streams that get work
                if self.stream is None:
                    self._feed(plan, work, pos, 0, errors)
                else:
                    self._plan_stream(plan, work, lsn, pos)
                n = self.streams = max(1, min(len(streams), work.qsize()))
                for _ in range(n):
                    work.put(None)
            try:
                copy_s = self._copy(streams, n, work, snapshot, rconn, lsn, errors)
            finally:
                if feed is not None:
                    feed.join()
            if errors:
                exc = errors[0]
                if isinstance(exc, CrossfadeError):
                    raise exc
                raise CrossfadeError(
                    f"the initial COPY load failed: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}",
                    "fix the cause and start capture again; the load starts over",
                ) from exc
        finally:
            rconn.close()
        return lsn, copy_s, n

    def _plan_stream(
        self, plan: psycopg.Connection, work: queue.Queue[Chunk | None], lsn: int, pos: int
    ) -> None:
        """Snapshot events: step 3 and every chunk queued."""
        self._prepare_stream(pos)
        with plan:
            chunks = [
                Chunk(c.table, c.source_sql, None, c.label, c.order)
                for c in self.stream.chunks(plan, lsn, pos, block_ranges)  # type: ignore[union-attr]
            ]
            plan.rollback()
        for c in chunks:
            work.put(c)
            self._open[c.table] = self._open.get(c.table, 0) + 1
        self.total_chunks = len(chunks)

    def _copy(
        self,
        streams: list[CopyStream],
        n: int,
        work: queue.Queue[Chunk | None],
        snapshot: str,
        rconn: psycopg.Connection,
        lsn: int,
        errors: list[BaseException],
    ) -> float:
        """The queued chunks through ``n`` streams; the exporting connection closed once every
        stream holds the snapshot. Returns the copy's seconds."""
        for extra in streams[n:]:  # no work for it: exits without connecting
            with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                extra.finish()
        imported = threading.Barrier(n + 1)
        threads = [
            threading.Thread(
                target=self._worker,
                args=(stream, snapshot, work, imported, errors),
                name=f"copy-{i}",
                daemon=True,
            )
            for i, stream in enumerate(streams[:n])
        ]
        for t in threads:
            t.start()
        with contextlib.suppress(threading.BrokenBarrierError):
            imported.wait()
        t_copy = time.monotonic()
        # every worker holds the snapshot now: the exporting connection may go, which frees
        # the slot for Debezium (a slot serves one replication connection at a time)
        rconn.close()
        if not errors:
            self._on_slot_free(lsn)
        for t in threads:
            t.join()
        return time.monotonic() - t_copy  # the rows' own time (window waits included)


class LoadGate:
    """The COPY load in a thread beside Debezium's start-up (JVM, connector, replication stream:
    seconds of their own). Debezium may start once the slot exists (:meth:`wait_slot`); the change
    handler holds every batch until the rows are in (:meth:`wait_loaded`), so nothing streamed is
    applied, nor acknowledged to Debezium, before the load it follows."""

    def __init__(self, load: CopyLoad | None, on_error: Callable[[], None] = lambda: None) -> None:
        """``load`` None: the load was done by an earlier run."""
        self.error: BaseException | None = None
        self._slot = threading.Event()
        self._loaded = threading.Event()
        self.load = load
        self._on_error = on_error
        if load is None:
            self._slot.set()
            self._loaded.set()
            return
        load._on_slot_free = lambda lsn: self._slot.set()
        threading.Thread(target=self._run, args=(load,), name="copy-load", daemon=True).start()

    def _run(self, load: CopyLoad) -> None:
        try:
            load.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the capture thread
            self.error = exc
        self._slot.set()
        self._loaded.set()  # first: Debezium's close (on_error) waits for a handler held here
        if self.error is not None:
            self._on_error()

    @property
    def loaded(self) -> bool:
        return self._loaded.is_set()

    def wait_slot(self) -> None:
        """Until the slot exists and is free; raises the load's error if it failed before."""
        self._slot.wait()
        if self.error is not None:
            raise self.error

    def wait_loaded(self, stopping: threading.Event) -> None:
        """Until the load is done. Raises its error, or when capture stops first (the handler must
        then fail its batch: returning would let Debezium commit offsets past unloaded rows)."""
        while not self._loaded.wait(0.5):
            if stopping.is_set():
                raise CrossfadeError(
                    "capture stopped during the initial COPY load",
                    "start it again: the load starts over",
                )
        if self.error is not None:
            raise self.error
