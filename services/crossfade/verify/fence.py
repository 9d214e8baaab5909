"""The fence: lag zero, proven end to end (DESIGN decision 4), on both capture paths.

A fence row is committed in the legacy database (``crossfade.fence``). A ``fence`` marker with its
token must then reach *every partition of every change topic* after every change committed before
the row; sync records each marker in ``<bookkeeping>.fences`` in the same transaction as the data
before it. When every partition has recorded the token, every change committed in the legacy
database before the fence row is applied in the target. Two ways put the marker there, and the
first to arrive counts (sync records a token once per partition):

* **crossfade's own capture** turns the fence row's change event into the markers itself, right
  after the events before it (it produces them in order and waits for the broker);
* **any Debezium, Kafka Connect included** (there nothing of crossfade runs beside Debezium):
  this command reads the legacy WAL position ``V`` right after the fence row committed and then
  writes the row once more, so a transaction ends after ``V``. The replication slot's
  ``confirmed_flush_lsn`` reaching ``V`` means Debezium processed the fence row's transaction
  and committed its source offsets past it; Kafka Connect commits source offsets only for
  records the broker acknowledged (and the embedded engine only after capture's handler flushed
  them), and PostgreSQL would never resend what the slot confirmed, so every change committed
  before the fence is in its topic by then. This command then produces the markers to every
  partition itself: they land after all of it. This holds for a fence row written once the slot
  was consistent (otherwise Debezium's snapshot reads the row and the slot's position says
  nothing about it): the command checks that first; and never while a COPY initial load runs or
  after one created its slot past the row (the new slot is past a row it never streamed while
  the copied rows may not all be committed: ``copy_load_hides_fence``). No broker offset is queried (Tansu's ListOffsets
  under-reports, STACK.md). Debezium must flush LSNs to the slot (``flush.lsn.source``, on by
  default), and the wait includes its offset commit interval (``offset.flush.interval.ms``) and
  heartbeat interval.

Every fence is recorded in ``<bookkeeping>.fence_runs`` (who, via what, when, on how many
partitions, or why it failed): a fence made anywhere counts for the ``fence`` gate everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass

import psycopg

from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import CrossfadeError
from crossfade.events.kafka import Admin, ControlRecord, broadcast_control, current_epoch
from crossfade.target.store import (
    copy_load_hides_fence,
    ensure_schema,
    fence_applied_on,
    fence_finished,
    fence_spread,
    fence_started,
)
from crossfade.who import operator

log = logging.getLogger(__name__)

SLOT_POLL_S = 0.5
CUTOVER_POLL_S = 0.02
"""How often the cutover's fences (``via=cutover`` and the dry run's verify's) look whether
every partition recorded the marker: a fence's time is part of the write downtime, and a 0.1 s
poll rounds it up by up to 0.1 s (10% of a ~1 s freeze at pgbench scale 10, issue 20); each
look is one indexed count on the target. The replication slot is still asked every
:data:`SLOT_POLL_S`: once it confirmed the fence this command broadcasts the markers itself
(producer, epoch), blocking the wait, which with crossfade's own capture (its markers come
first) only costs time: asked every 0.1 s, 2 of 6 fences of dry runs at scale 10 took 0.10-0.14
s from the last partition's record to their end, the others 0.01-0.02 s (the broadcast the
likely cause; at 0.5 s 2 of 9, the two of over 0.8 s); with Kafka Connect the slot confirms
only at Debezium's offset commit (``offset.flush.interval.ms``), far beyond 0.5 s."""


@dataclass(frozen=True)
class FenceResult:
    token: str
    partitions: int
    seconds: float
    broadcast_by: str = "capture"
    """Who put the markers in the topics first: ``capture`` (crossfade's own) or ``fence`` (this
    command, after the replication slot confirmed the fence: Kafka Connect's path)."""
    spread: float = 0.0
    """Seconds from the first partition's record of the marker to the last one's."""


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Partitions of every change topic (broker metadata); raise if one does not exist."""
    admin = Admin(settings.kafka.client_config())
    out = {}
    for t in settings.tables:
        n = admin.partitions(settings.kafka.table_topic(t))
        if n is None:
            raise CrossfadeError(
                f"topic {settings.kafka.table_topic(t)} does not exist",
                "start capture before asking for a fence",
            )
        out[t] = n
    return out


def expected_partitions(settings: Settings) -> int:
    return sum(topic_partitions(settings).values())


def _write_fence_row(settings: Settings, token: str) -> tuple[int | None, int]:
    """Commit the fence row; return (WAL position right after its commit, its commit time in ms).
    Then write it once more, so that a transaction ends after that position (what the
    replication slot must confirm). The position is None when the replication slot was not
    consistent before the row was written: the row then belongs to Debezium's snapshot, not to
    the stream, and the slot confirming its position proves nothing (capture's own markers, for
    a fence row read in the snapshot, still come; a later fence takes the other way)."""
    with connect(settings.source, "source") as src:
        # a cutover may freeze the legacy database with default_transaction_read_only: the fence
        # must still be written (any role may turn the default off for itself)
        src.execute("SET default_transaction_read_only = off")
        streamed = src.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s "
            "AND confirmed_flush_lsn IS NOT NULL",
            (settings.capture.slot_name,),
        ).fetchone()
        row = src.execute(
            "INSERT INTO crossfade.fence (token) VALUES (%s) "
            "RETURNING (extract(epoch FROM created_at) * 1000)::bigint",
            (token,),
        ).fetchone()
        after = src.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
        src.execute("UPDATE crossfade.fence SET created_at = created_at WHERE token = %s", (token,))
    assert row is not None and after is not None
    return (int(after[0]) if streamed else None), int(row[0])


def _slot_confirmed(settings: Settings, src: psycopg.Connection, lsn: int) -> bool:
    row = src.execute(
        "SELECT confirmed_flush_lsn - '0/0'::pg_lsn FROM pg_replication_slots WHERE slot_name = %s",
        (settings.capture.slot_name,),
    ).fetchone()
    return row is not None and row[0] is not None and int(row[0]) >= lsn


def _broadcast(settings: Settings, parts: dict[str, int], token: str, lsn: int, ts_ms: int) -> None:
    conf = settings.kafka.client_config()
    epoch = None
    with contextlib.suppress(CrossfadeError):
        epoch = current_epoch(conf, settings.kafka.control_topic, timeout=5)
    broadcast_control(
        conf,
        [
            (settings.kafka.table_topic(t), n, ControlRecord("fence", t, lsn, token, ts_ms))
            for t, n in parts.items()
        ],
        epoch,
    )


def fence(
    settings: Settings, timeout: float = 120.0, poll: float = 0.1, *, via: str = "cli"
) -> FenceResult:
    """Write a fence row and wait until every partition applied it; raise on timeout.

    ``via`` names who asked (cli, console, cutover, verify, test): it is recorded with the run.
    ``poll``: seconds between looks at the partitions that recorded it."""
    if not settings.capture.fence_table:
        raise CrossfadeError(
            "capture.fence_table is off, so there is no fence", "set capture.fence_table: true"
        )
    parts = topic_partitions(settings)
    n = sum(parts.values())
    token = uuid.uuid4().hex
    bk = settings.sync.bookkeeping_schema
    t0 = time.monotonic()
    with connect(settings.target, "target") as tgt:
        try:
            fence_started(tgt, bk, token, via, operator())
        except psycopg.errors.UndefinedTable:
            ensure_schema(tgt, bk)  # a target sync has not touched since an upgrade
            fence_started(tgt, bk, token, via, operator())
        try:
            lsn, ts_ms = _write_fence_row(settings, token)
            by = _wait(settings, tgt, parts, token, lsn, ts_ms, t0, timeout, poll)
            seconds = time.monotonic() - t0
            fence_finished(tgt, bk, token, ok=True, partitions=n, seconds=seconds)
            spread = None
            with contextlib.suppress(psycopg.Error):  # a figure only: the fence went through
                spread = fence_spread(tgt, bk, token)
            return FenceResult(token, n, seconds, by, spread or 0.0)
        except BaseException as exc:
            done = fence_applied_on(tgt, bk, token)
            msg = exc.message if isinstance(exc, CrossfadeError) else type(exc).__name__
            with contextlib.suppress(psycopg.Error):
                fence_finished(
                    tgt,
                    bk,
                    token,
                    ok=False,
                    partitions=done,
                    seconds=time.monotonic() - t0,
                    detail=str(msg)[:500],
                )
            raise


def _wait(
    settings: Settings,
    tgt: psycopg.Connection,
    parts: dict[str, int],
    token: str,
    lsn: int | None,
    ts_ms: int,
    t0: float,
    timeout: float,
    poll: float,
) -> str:
    """Until every partition recorded the token; markers are broadcast here once the slot has
    confirmed the fence (unless capture's arrived first). Returns who broadcast first."""
    n = sum(parts.values())
    bk = settings.sync.bookkeeping_schema
    broadcast = False
    next_slot = 0.0
    with connect(settings.source, "source") as src:
        while True:
            done = fence_applied_on(tgt, bk, token)
            if done >= n:
                return "fence" if broadcast else "capture"
            now = time.monotonic()
            if not broadcast and lsn is not None and now >= next_slot:
                next_slot = now + SLOT_POLL_S
                if _slot_confirmed(settings, src, lsn) and not copy_load_hides_fence(tgt, bk, lsn):
                    _broadcast(settings, parts, token, lsn, ts_ms)
                    broadcast = True
                    log.debug("fence %s: slot confirmed it; markers broadcast", token[:8])
            if now - t0 > timeout:
                raise CrossfadeError(
                    f"fence {token[:8]} reached {done} of {n} partitions within {timeout:.0f} s",
                    "check that capture and sync are running (crossfade status) and retry with a longer --timeout"
                    + (
                        ""
                        if broadcast
                        else "; with Debezium on Kafka Connect, the replication slot must confirm "
                        "the fence (flush.lsn.source on, offset.flush.interval.ms well below the timeout)"
                    ),
                )
            time.sleep(poll)
