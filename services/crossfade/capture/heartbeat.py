"""Capture's heartbeat in the target database: the ``sync_alive`` gate's evidence, the initial
load's progress and pacing as ``status`` and the console show them, and where capture reads
``crossfade pause capture`` (``<bookkeeping>.control``, :mod:`crossfade.target.store`)."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from crossfade import metrics

if TYPE_CHECKING:
    from crossfade.capture.initial_load import LoadGate
    from crossfade.capture.pacing import Pacer
    from crossfade.config import Settings

log = logging.getLogger(__name__)


class BatchCounts(Protocol):
    """What the heartbeat reads of the producer's counters (``CaptureStats`` in
    :mod:`crossfade.capture.service`)."""

    @property
    def snapshot_done(self) -> bool: ...
    @property
    def last_batch_at(self) -> float: ...
    @property
    def heartbeats(self) -> int: ...


class LoadProgress(Protocol):
    """What the heartbeat reads of capture's producer (``ChangeProducer`` in
    :mod:`crossfade.capture.service`)."""

    @property
    def stats(self) -> BatchCounts: ...
    @property
    def snapshot_running(self) -> bool: ...
    @property
    def snapshot_rows(self) -> Mapping[str, int]: ...


class CaptureState(Protocol):
    """What the heartbeat reads of the capture it beats for (``CaptureService`` in
    :mod:`crossfade.capture.service`, which imports this module: the heartbeat names only what
    it reads)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def producer(self) -> LoadProgress | None: ...
    @property
    def gate(self) -> LoadGate | None: ...
    @property
    def pacer(self) -> Pacer: ...
    @property
    def epoch(self) -> str | None: ...
    @property
    def pause(self) -> PauseHold: ...
    @property
    def worker_id(self) -> str: ...
    @property
    def stopping(self) -> threading.Event: ...


class PauseHold:
    """``crossfade pause capture`` inside capture: the heartbeat sets it from the control table
    (:meth:`CaptureHeartbeat.read_pause`), Debezium's handler calls :meth:`hold` before each
    batch."""

    def __init__(self, stopping: threading.Event) -> None:
        self._held = threading.Event()
        self.stopping = stopping
        self.holding = False
        """The handler is holding a batch now (the pause has taken effect)."""

    def held(self) -> bool:
        return self._held.is_set()

    def set(self, paused: bool) -> None:
        if paused:
            self._held.set()
        else:
            self._held.clear()

    def hold(self) -> None:
        """While paused, hold the handler before its next batch: Debezium waits with its
        position, nothing is produced nor acknowledged, the slot keeps the WAL from there. The
        batch in flight when the pause was read has completed (this runs between batches).
        Raises when capture stops meanwhile (the batch must then fail, not be acknowledged)."""
        if not self._held.is_set():
            return
        from crossfade.errors import CrossfadeError

        log.warning("capture PAUSED: holding Debezium's next batch until `crossfade resume`")
        self.holding = True
        try:
            while self._held.is_set():
                if self.stopping.wait(0.2):
                    raise CrossfadeError("capture stopped while paused", "start it again")
        finally:
            self.holding = False
        log.warning("capture resumed: Debezium's batches flow again")


class CaptureHeartbeat:
    """Writes capture's heartbeat to ``<bookkeeping>.heartbeats`` in the target database every
    ``sync.heartbeat_interval_s``, from a daemon thread with its own connection: when Debezium
    last delivered a batch (its heartbeats included), whether the initial load still runs, its
    rows so far and whether it waits for a load window, whether capture is paused. Then it reads
    the pause state: the capture handler holds before its next batch while it is set
    (:meth:`CaptureService.hold`). The row goes when capture stops cleanly; a killed capture
    leaves it to age (the gate then says capture stopped). A target that does not answer is
    retried at the next interval (the pause state read last stays)."""

    def __init__(self, service: CaptureState) -> None:
        self.service = service
        self.settings = service.settings
        self._owner = threading.current_thread()
        self._load_marked = False
        self._thread = threading.Thread(target=self._run, name="capture-heartbeat", daemon=True)

    def start(self) -> CaptureHeartbeat:
        self._thread.start()
        return self

    def load(self) -> dict[str, Any] | None:
        """The initial load as status shows it: rows so far, paused for a window, the next
        window (None once there is no load in this process)."""
        svc = self.service
        gate = svc.gate
        st = svc.producer.stats if svc.producer is not None else None
        loading = (
            bool(gate is not None and not gate.loaded)
            or bool(st and svc.producer is not None and svc.producer.snapshot_running)
            or svc.pacer.paused_since is not None  # Debezium's first snapshot row waits
        )
        pace = svc.pacer.state()
        metrics.LOAD_PAUSED.set(1 if loading and pace["paused"] else 0)
        metrics.LOAD_NEXT_WINDOW.set(pace["next_window_s"] if loading and pace["paused"] else 0)
        if not loading:
            return None
        if gate is not None and gate.load is not None:
            rows, how = dict(gate.load.rows), "copy"
        else:
            rows = dict(svc.producer.snapshot_rows) if svc.producer else {}
            how = "debezium"
        return {"by": how, "rows": rows, "total_rows": sum(rows.values()), **pace}

    def mark_load(self, conn: Any) -> None:
        """The COPY load's end, when it could not be recorded as the load ended (the target did
        not answer then): written once, on this retried connection. An epoch loaded by an
        earlier run keeps the mark it has."""
        from crossfade.target.store import copy_load_mark, note_copy_load

        svc, gate = self.service, self.service.gate
        if self._load_marked or gate is None or not gate.loaded or gate.error is not None:
            return
        if (gate.load is None or not gate.load.marked) and svc.epoch is not None:
            bk = self.settings.sync.bookkeeping_schema
            mark = copy_load_mark(conn, bk, svc.epoch)
            if mark is None or mark.done_at is None:
                note_copy_load(conn, bk, svc.epoch, done=True)
                log.info("the initial load's end is recorded in the target")
        self._load_marked = True

    def beat(self, conn: Any) -> None:
        from crossfade.target.store import Heartbeat, write_heartbeat

        svc = self.service
        st = svc.producer.stats if svc.producer is not None else None
        gate = svc.gate
        detail: dict[str, Any] = {
            "epoch": svc.epoch,
            "loading": bool(gate is not None and not gate.loaded),
            "load": self.load(),
            "paused": svc.pause.held(),
            "holding": svc.pause.holding,
            "snapshot_done": bool(st and st.snapshot_done),
            "last_batch_age_s": round(time.time() - st.last_batch_at, 1)
            if st and st.last_batch_at
            else None,
            "debezium_heartbeats": st.heartbeats if st else 0,
        }
        write_heartbeat(
            conn,
            self.settings.sync.bookkeeping_schema,
            Heartbeat(svc.worker_id, "capture", detail=detail),
        )

    def read_pause(self, conn: Any) -> None:
        """``crossfade pause capture``: set or clear the service's hold."""
        from crossfade.target.store import read_control

        state = read_control(conn, self.settings.sync.bookkeeping_schema)["capture"]
        if state.paused and not self.service.pause.held():
            log.warning("%s: capture holds before Debezium's next batch", state.line())
        self.service.pause.set(state.paused)
        metrics.PAUSED.labels(component="capture").set(1 if state.paused else 0)

    def _run(self) -> None:
        import psycopg

        from crossfade.target.store import drop_heartbeat, ensure_schema

        bk = self.settings.sync.bookkeeping_schema
        conn: Any = None
        every = self.settings.sync.heartbeat_interval_s
        while not self.service.stopping.is_set() and self._owner.is_alive():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = psycopg.connect(
                        self.settings.target.conninfo,
                        autocommit=True,
                        connect_timeout=self.settings.target.connect_timeout_s,
                        application_name="crossfade-capture-heartbeat",
                    )
                    ensure_schema(conn, bk)
                self.read_pause(conn)
                self.beat(conn)
                self.mark_load(conn)
            except psycopg.Error as exc:
                log.debug("capture heartbeat not written: %s", exc)
                if conn is not None:
                    conn.close()
                    conn = None
            self.service.stopping.wait(every)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                drop_heartbeat(conn, bk, self.service.worker_id)
            conn.close()
