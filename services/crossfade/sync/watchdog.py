"""Nothing stalls silently (DESIGN decision 9): a sync worker's continuous watch over its tables.

Every ``interval_s`` a background thread of the worker looks at each configured table and asks:

* **Does its topic exist?** (the broker's metadata). A missing topic means capture has not
  (re)created it: after a broker restart that lost the log, or before capture ever ran.
* **Is some partition of it assigned to a worker of the group?** A partition this worker holds
  is assigned. Otherwise the group's members tell through the target: every member claims each
  partition it is given (``<bookkeeping>.offsets``: owner and ``updated_at``) when its assignment
  arrives, and with the eager protocol crossfade uses every rebalance revokes and re-claims every
  partition. A table none of whose offset rows was touched since this worker's current
  generation began (its last revocation, or its subscription) is assigned to nobody. That is the
  silent stall of issue 21: librdkafka learned the topics of a subscription only from metadata
  refreshed every five minutes, so topics that vanished with a broker's log and reappeared were
  not assigned again for minutes, or at all.
* **Does it make progress while its topic grows?** For each partition this worker holds: the
  broker's log end (ListOffsets) above the offset stored in the target, and that stored offset
  unchanged for ``stall_after_s``. On Tansu, ListOffsets under-reports (STACK.md: the last
  batch's base + 1), so records waiting only in a partition's last batch are noticed once the log
  grows again; never a false alarm. A partition is *busy elsewhere*, not stalled, while the
  worker commits batches (one within ``stall_after_s``) and its consumer has fetched the
  partition's waiting records (its fetch position, :attr:`WorkerView.fetched`, above the stored
  offset): they wait in the consumer's local queue, one FIFO of up to 100,000 prefetched records
  of all partitions, behind the records of busy partitions fetched before them. A partition
  whose load is done and that grows by a fence's markers only waited there longer than a minute
  during a 1M-row load with two workers, and the re-subscribe that followed revoked every
  partition of both workers, a dozen times a load (issue 22). A partition not fetched, or a
  worker that commits nothing, is still a stall. The partitions of other workers are their own
  watches' to judge (only the owner's consumer knows its fetch positions).

A condition that lasts ``stall_after_s`` makes the table *stalled*: :attr:`TableWatch.stalled`
names it with the reason (the worker's ``/readyz``, ``crossfade_sync_table_stalled{table}`` and
its WARNING log read it), and when re-subscribing can help (the topic exists and the broker and
the target answer) :attr:`TableWatch.resubscribe` is set for the consume loop, at most once per
``stall_after_s``. When the condition clears the table leaves :attr:`stalled` with an INFO line.

The watch has its own target connection (read-only, with TCP keepalives and a user timeout, so a
cut network cannot hang it) and its own admin client. A failure of either counts as a condition
for every table (no progress can be seen), without a re-subscribe.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from crossfade.target.store import offsets_age

log = logging.getLogger(__name__)

#: libpq options of the watch's connection: a dead or cut link errors within ~20 s instead of
#: blocking the thread until the kernel gives up (minutes).
DB_TIMEOUTS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
    "options": "-c statement_timeout=10000",
}
_WARN_EVERY_S = 300.0
"""A table still stalled is named again in the log this often."""


@dataclass(frozen=True, slots=True)
class WorkerView:
    """What the watch reads from its worker (callables: the worker's state changes under it)."""

    owned: Callable[[], set[tuple[str, int]]]
    """Partitions this worker holds now."""
    generation_started: Callable[[], float]
    """``time.monotonic()`` of this worker's last revocation (or subscription): claims made after
    it belong to the current generation of the group."""
    paused: Callable[[], bool] = lambda: False
    """``crossfade pause sync`` holds this worker (no progress is expected: none is a stall)."""
    held: Callable[[], Collection[str]] = lambda: ()
    """Tables held back until their parents' snapshot finished (:mod:`crossfade.sync.load_order`):
    no progress is expected on them either."""
    lock_wait: Callable[[], str | None] = lambda: None
    """What this worker's claim waits for, once it waited long (:mod:`crossfade.sync.lock_wait`):
    named in the reason of a table left unassigned meanwhile."""
    fetched: Callable[[], Mapping[tuple[str, int], int]] = lambda: {}
    """Held partition -> its consumer's fetch position (:attr:`crossfade.sync.consumer.
    GroupMember.fetched`): records below it are in the consumer's local queue."""
    progressed_s_ago: Callable[[], float | None] = lambda: None
    """Seconds since this worker last committed a batch (None: never)."""


@dataclass(frozen=True, slots=True)
class Finding:
    """Why a table is not assigned and progressing, as one look found it."""

    kind: str
    """``broker``, ``target``, ``missing``, ``unassigned`` or ``progress``."""
    reason: str
    fixable: bool
    """Re-subscribing may help (the topic exists, broker and target answer)."""
    timed: bool = False
    """The finding already measured its duration (no progress): due at once."""


@dataclass(slots=True)
class _Cond:
    since: float
    finding: Finding
    warned_at: float = 0.0
    warned_kind: str = ""


class TableWatch:
    """The watch over ``topics`` (topic -> configured table) of one worker of ``group_id``.

    :meth:`start` runs it in a daemon thread until :meth:`stop`; :meth:`check` runs one round
    (tests call it directly). Nothing here raises: a failing look is a reason in :attr:`stalled`.
    """

    def __init__(
        self,
        *,
        topics: Mapping[str, str],
        group_id: str,
        bookkeeping_schema: str,
        client_conf: Mapping[str, Any],
        target_conninfo: str,
        connect_timeout_s: int,
        view: WorkerView,
        stall_after_s: float,
        interval_s: float | None = None,
    ) -> None:
        self.topics = dict(topics)
        self.group_id = group_id
        self.bk = bookkeeping_schema
        self.view = view
        self.stall_after_s = stall_after_s
        self.interval_s = interval_s or min(5.0, max(0.5, stall_after_s / 4))
        self._client_conf = dict(client_conf)
        self._conninfo = target_conninfo
        self._connect_timeout_s = connect_timeout_s
        self._admin: AdminClient | None = None
        self._conn: psycopg.Connection | None = None
        self._conds: dict[str, _Cond] = {}
        self._progress: dict[tuple[str, int], tuple[int, float]] = {}
        """(topic, partition) -> (stored offset last seen, when it last moved or caught up)."""
        self._last_resubscribe = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stalled: dict[str, str] = {}
        """Configured table -> why it is stalled (replaced whole on every round: safe to read
        from other threads)."""
        self.resubscribe = threading.Event()
        """Set when a stall re-subscribing may cure has lasted ``stall_after_s``; the consume
        loop clears it when it acts."""

    # -- life -----------------------------------------------------------------------------------
    def start(self) -> TableWatch:
        # "sync-watchdog" of thread "sync", "sync-2-watchdog" of "sync-2" (sync.workers: the
        # worker's name in its log lines, crossfade.ops.logs)
        name = threading.current_thread().name
        self._thread = threading.Thread(
            target=self._run,
            name=f"{name if name.startswith('sync') else 'sync'}-watchdog",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watch must outlive anything it looks at
                log.exception("table watch round failed")

    # -- one round --------------------------------------------------------------------------------
    def check(self, now: float | None = None) -> dict[str, str]:
        """Look once at every table; return (and publish as :attr:`stalled`) the stalled ones."""
        now = time.monotonic() if now is None else now
        conds: dict[str, Finding | None] = {}
        parts, broker_err = self._partitions()
        rows, db_err = self._stored()
        ends = self._ends(parts) if parts is not None else {}
        owned = self.view.owned()
        elapsed = now - self.view.generation_started()
        held = self.view.held()
        busy = self._busy_elsewhere()
        for topic, table in self.topics.items():
            if broker_err is not None:
                conds[table] = Finding(
                    "broker", f"the broker does not answer ({broker_err})", False
                )
            elif db_err is not None:
                conds[table] = Finding(
                    "target", f"the target database does not answer ({db_err})", False
                )
            else:
                assert parts is not None and rows is not None
                conds[table] = self._look(
                    topic,
                    parts.get(topic),
                    rows,
                    ends,
                    owned,
                    elapsed,
                    now,
                    held=table in held,
                    busy=busy,
                )
        return self._publish(conds, now)

    def _look(
        self,
        topic: str,
        n_parts: int | None,
        rows: dict[tuple[str, int], tuple[int, float]],
        ends: dict[tuple[str, int], int],
        owned: set[tuple[str, int]],
        elapsed: float,
        now: float,
        *,
        held: bool = False,
        busy: Mapping[tuple[str, int], int] | None = None,
    ) -> Finding | None:
        """What is wrong with one table, or None when it is assigned and progressing. ``busy``:
        the fetch positions of this worker's partitions while it commits batches (see
        :meth:`_busy_elsewhere`); None when it does not."""
        if not n_parts:
            return Finding(
                "missing",
                f"its topic {topic} does not exist on the broker (capture has not created it "
                "since the broker started: is capture running?)",
                False,
            )
        tps = [(topic, p) for p in range(n_parts)]
        stuck: Finding | None = None
        for tp in tps:  # every partition's progress is followed, whatever is reported
            stored = rows[tp][0] if tp in rows else 0
            end = ends.get(tp)
            seen = self._progress.get(tp)
            if (
                end is None
                or end <= stored
                or seen is None
                or seen[0] != stored
                or self.view.paused()
                or held
                or tp not in owned  # its owner's watch judges it
            ):
                self._progress[tp] = (stored, now)
            elif busy is not None and busy.get(tp, -1) > stored:
                continue  # fetched, queued behind other partitions' records: busy elsewhere
            elif stuck is None and now - seen[1] >= self.stall_after_s:
                stuck = Finding(
                    "progress",
                    f"no progress on {topic}[{tp[1]}] for {now - seen[1]:.0f} s while its log "
                    f"grows (stored offset {stored}, log end at least {end})",
                    True,
                    timed=True,
                )
        # a claim or a batch after this generation began (1 s for the clocks' reading order)
        touched = [tp for tp in tps if tp in rows and rows[tp][1] <= elapsed + 1.0]
        if not touched and not any(tp in owned for tp in tps):
            waiting = self.view.lock_wait()
            return Finding(
                "unassigned",
                f"no partition of {topic} is assigned to a worker of group {self.group_id} "
                f"(none claimed in the {elapsed:.0f} s since this worker's last rebalance)"
                + (f"; {waiting}" if waiting else ""),
                True,
            )
        return stuck

    def _busy_elsewhere(self) -> Mapping[tuple[str, int], int] | None:
        """The fetch positions of this worker's partitions when it committed a batch within
        ``stall_after_s`` (a partition fetched above its stored offset then waits its turn in
        the consumer's queue), else None (no partition is excused)."""
        ago = self.view.progressed_s_ago()
        if ago is None or ago >= self.stall_after_s:
            return None
        return self.view.fetched()

    def _publish(self, conds: dict[str, Finding | None], now: float) -> dict[str, str]:
        stalled: dict[str, str] = {}
        want = False
        for table, found in conds.items():
            prev = self._conds.get(table)
            if found is None:
                if prev is not None and table in self.stalled:
                    log.info(
                        "table %s is no longer stalled (after %.0f s)", table, now - prev.since
                    )
                self._conds.pop(table, None)
                continue
            c = self._conds.setdefault(table, _Cond(now, found))
            c.finding = found
            if not (found.timed or now - c.since >= self.stall_after_s):
                continue
            stalled[table] = found.reason
            if now - c.warned_at >= _WARN_EVERY_S or c.warned_kind != found.kind:
                c.warned_at, c.warned_kind = now, found.kind
                if found.timed:  # its reason says for how long ("stalled for 0 s: ... for 60 s")
                    log.warning("table %s is stalled: %s", table, found.reason)
                else:
                    log.warning(
                        "table %s is stalled for %.0f s: %s", table, now - c.since, found.reason
                    )
            want |= found.fixable
        self.stalled = stalled
        if want and now - self._last_resubscribe >= self.stall_after_s:
            self._last_resubscribe = now
            self.resubscribe.set()
        return stalled

    # -- reads --------------------------------------------------------------------------------------
    def _admin_client(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self._client_conf)
        return self._admin

    def _partitions(self) -> tuple[dict[str, int] | None, str | None]:
        """Partitions per configured topic (0: absent). All topics' metadata: asking for one by
        name makes a broker with auto-creation (Tansu always) create it."""
        try:
            md = self._admin_client().list_topics(timeout=5)
        except KafkaException as exc:
            return None, _first_line(exc)
        out = {}
        for topic in self.topics:
            t = md.topics.get(topic)
            out[topic] = 0 if t is None or t.error is not None else len(t.partitions)
        return out, None

    def _ends(self, parts: dict[str, int]) -> dict[tuple[str, int], int]:
        """Log end per partition (a lower bound on Tansu); partitions that did not answer are left
        out (their progress is not judged this round)."""
        want = {
            TopicPartition(t, p): OffsetSpec.latest() for t, n in parts.items() for p in range(n)
        }
        if not want:
            return {}
        out: dict[tuple[str, int], int] = {}
        try:
            futures = self._admin_client().list_offsets(want, request_timeout=5)
        except KafkaException:
            return out
        for tp, fut in futures.items():
            with contextlib.suppress(Exception):
                out[(tp.topic, tp.partition)] = int(fut.result(timeout=10).offset)
        return out

    def _stored(self) -> tuple[dict[tuple[str, int], tuple[int, float]] | None, str | None]:
        """(topic, partition) -> (stored next offset, seconds since its row was last touched)."""
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = psycopg.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=self._connect_timeout_s,
                    **DB_TIMEOUTS,
                )
            rows = offsets_age(self._conn, self.bk, self.group_id, list(self.topics))
        except psycopg.Error as exc:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    self._conn.close()
                self._conn = None
            return None, _first_line(exc)
        return {(t, int(p)): (int(n), float(age)) for t, p, n, age in rows}, None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"
