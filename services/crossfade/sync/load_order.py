"""Parents first during an initial load: sync holds back a mapped child table's partitions until
every table its mapping's ``references`` rules point at has finished its snapshot in sync.

Why: snapshot events (``capture.initial_load: events``) put every table's rows in the topics
within seconds, and a worker consuming all topics at once may map children before their parents
are applied: they are deferred, then looked at again every second until the parents come (the
deferred-children retry, its crosswalk and ledger lookups), which can double the load's time.
Holding the children back until their parents' sweep markers passed maps each child once.

When: once capture reports its snapshot in the topics (its heartbeat's ``snapshot_done``: from
the start of a load by snapshot events, at the end of Debezium's snapshot, whose sweep markers
come only after its last table; a sync that is behind then orders what is left) and until every
child's own snapshot finished in sync. Outside a load (a capture streaming without a snapshot,
or every child's snapshot finished) nothing is held.

Scheduling only: deferral still handles any order, and nothing here is needed for correctness.
The decision (:class:`LoadOrder`) reads state every worker of the group sees, in the target
(:func:`crossfade.target.store.snapshot_states`: sweep markers passed, stored offsets; capture's
heartbeat), so a worker holding a child waits for parents another worker consumes. It never
stalls silently: a parent that makes no progress for ``sync.parents_first_wait_s`` without
finishing releases its children, and so does a hold of :data:`LONGEST_HOLD` times that, with an
INFO line saying why; a release is final for the worker's life.

:class:`LoadOrderHook` applies the decision to the worker's consumer: ``pause`` on the held
tables' assigned partitions (the worker keeps polling, so it stays in its group), ``resume`` on
release, and a new assignment's partitions of a held table paused at once (like
:mod:`crossfade.sync.pause`). Held tables show in the heartbeat, the
``crossfade_sync_table_held`` gauge, and are not stalls for the table watch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg

from crossfade import metrics
from crossfade.target.store import read_heartbeats, snapshot_states

log = logging.getLogger(__name__)

CAPTURE_HEARTBEAT_FRESH_S = 30.0
"""A capture heartbeat older than this says nothing about a load now."""

LONGEST_HOLD = 30
"""A child is held at most this many ``sync.parents_first_wait_s`` in all, even while its
parents progress (10 minutes at the default: a load's parents rarely take longer, and a parent
that streams on without ever finishing a snapshot must not hold its children for ever)."""


@dataclass(frozen=True, slots=True)
class TableLoad:
    """One table's load as every worker of the group sees it."""

    done: bool
    """Its snapshot finished in sync: every partition passed the sweep marker."""
    progress: int = 0
    """The group's stored next offsets on its topic, summed: moves while sync consumes it."""


def waits_for(parents: Mapping[str, set[str]]) -> dict[str, frozenset[str]]:
    """Child table -> the parent tables it waits for: ``parents`` (a mapping's references, see
    :func:`crossfade.mapping.audit.source_parents`) without self-references, without tables
    not in ``parents`` (not part of this load), and without the edges inside a cycle (a cycle
    of tables gets no ordering: each would wait for the other)."""
    reach: dict[str, set[str]] = {}

    def reachable(t: str) -> set[str]:
        if t not in reach:
            seen: set[str] = set()
            todo = [p for p in parents.get(t, ()) if p in parents]
            while todo:
                p = todo.pop()
                if p not in seen:
                    seen.add(p)
                    todo.extend(q for q in parents.get(p, ()) if q in parents)
            reach[t] = seen
        return reach[t]

    out: dict[str, frozenset[str]] = {}
    for child, ps in parents.items():
        keep = frozenset(p for p in ps if p != child and p in parents and child not in reachable(p))
        if keep:
            out[child] = keep
    return out


class LoadOrder:
    """Which child tables to hold back now (:meth:`decide`), from the tables' load states."""

    def __init__(
        self,
        waits: Mapping[str, frozenset[str]],
        wait_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.waits = dict(waits)
        """Child -> the parents it waits for (:func:`waits_for`)."""
        self.wait_s = wait_s
        self.clock = clock
        self.held: dict[str, frozenset[str]] = {}
        """Children held now -> the parents they wait for."""
        self.released: dict[str, str] = {}
        """Children no longer considered -> why (final)."""
        self.load_seen = False
        """Capture reported a snapshot in the topics since this worker started."""
        self._progress: dict[str, tuple[int, float]] = {}
        self._since: dict[str, float] = {}

    @property
    def settled(self) -> bool:
        """Every child is released: nothing left to decide."""
        return len(self.released) == len(self.waits)

    def tables(self) -> set[str]:
        """Every table whose state :meth:`decide` reads."""
        return set(self.waits) | {p for ps in self.waits.values() for p in ps}

    def decide(
        self, states: Mapping[str, TableLoad], loading: bool, paused: bool = False
    ) -> dict[str, frozenset[str]]:
        """The children to hold now -> the parents they wait for. ``loading``: capture reports
        its snapshot in the topics (:func:`_capture_loading`); ``paused``: sync is paused (no parent can progress: not held against
        it). Logs each hold and each release once."""
        now = self.clock()
        self.load_seen |= loading
        for t in self.tables():
            progress = states.get(t, TableLoad(False)).progress
            seen = self._progress.get(t)
            if seen is None or seen[0] != progress or paused or t in self.held:
                self._progress[t] = (progress, now)  # a held parent waits too: not idle
        held: dict[str, frozenset[str]] = {}
        for child, parents in self.waits.items():
            if child in self.released or not (self.load_seen or _done(states, child)):
                continue  # outside a load nothing is held (a finished child: released at once)
            why = self._release(child, parents, states, now)
            if why is None:
                held[child] = frozenset(p for p in parents if not _done(states, p))
                if child not in self.held:
                    self._since.setdefault(child, now)
                    log.info(
                        "initial load: holding back %s until %s finished its snapshot in sync "
                        "(children mapped after their parents, not deferred)",
                        child,
                        ", ".join(sorted(held[child])),
                    )
                continue
            self.released[child] = why
            if child in self.held:
                log.info("initial load: %s no longer held back: %s", child, why)
        self.held = held
        return held

    def _release(
        self, child: str, parents: frozenset[str], states: Mapping[str, TableLoad], now: float
    ) -> str | None:
        """Why ``child`` is not to be held (any more), or None to hold it."""
        if _done(states, child):
            return "its own snapshot finished"
        waiting = sorted(p for p in parents if not _done(states, p))
        if not waiting:
            return f"{', '.join(sorted(parents))} finished its snapshot in sync"
        idle = [p for p in waiting if now - self._progress[p][1] >= self.wait_s]
        if idle:
            return (
                f"{', '.join(idle)} made no progress for {self.wait_s:.0f} s "
                "(sync.parents_first_wait_s) without finishing its snapshot"
            )
        longest = LONGEST_HOLD * self.wait_s
        if now - self._since.get(child, now) >= longest:
            return (
                f"held for {longest:.0f} s ({LONGEST_HOLD} x sync.parents_first_wait_s) while "
                f"{', '.join(waiting)} did not finish its snapshot"
            )
        return None


def _done(states: Mapping[str, TableLoad], table: str) -> bool:
    st = states.get(table)
    return st is not None and st.done


class LoadOrderHook:
    """One worker's :class:`LoadOrder`, applied to its consumer; :meth:`check` is its call in
    the consume loop (every second while a child is held or undecided)."""

    def __init__(
        self,
        order: LoadOrder,
        topics: Mapping[str, str],
        bookkeeping_schema: str,
        group_id: str,
        interval_s: float = 1.0,
    ) -> None:
        self.order = order
        self.topics = dict(topics)
        """Topic -> table."""
        self.topic_of = {t: topic for topic, t in self.topics.items()}
        self.bk = bookkeeping_schema
        self.group_id = group_id
        self.interval_s = interval_s
        self._next = 0.0
        self._paused_tps: set[tuple[str, int]] = set()

    def held(self) -> dict[str, frozenset[str]]:
        """The children held now (a copy, safe from another thread)."""
        return dict(self.order.held)

    def check(self, consumer: Any, db: Callable[[], psycopg.Connection], sync_paused: bool) -> None:
        """When due: read the tables' load states, decide, pause and resume partitions."""
        if self.order.settled or not self.order.waits:
            return
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.interval_s
        try:
            conn = db()
            tables = {t: self.topic_of[t] for t in self.order.tables() if t in self.topic_of}
            states = {
                t: TableLoad(done, progress)
                for t, (done, progress) in snapshot_states(
                    conn, self.bk, self.group_id, tables
                ).items()
            }
            loading = self.order.load_seen or _capture_loading(conn, self.bk)
        except psycopg.Error as exc:  # keep the last decision; the batch path waits for the target
            log.debug("load states not read: %s", exc)
            return
        held = self.order.decide(states, loading, sync_paused)
        for table in self.order.waits:
            metrics.SYNC_TABLE_HELD.labels(table=table).set(1 if table in held else 0)
        self.apply(consumer, sync_paused)

    def apply(self, consumer: Any, sync_paused: bool) -> None:
        """Pause the held tables' assigned partitions, resume those of released ones (unless
        ``crossfade pause sync`` holds everything)."""
        if consumer is None:
            return
        held = self.order.held
        pause, resume = [], []
        for tp in consumer.assignment():
            key = (tp.topic, tp.partition)
            if self.topics.get(tp.topic) in held:
                pause.append(tp)
                self._paused_tps.add(key)
            elif key in self._paused_tps:
                resume.append(tp)
                self._paused_tps.discard(key)
        if pause:
            consumer.pause(pause)
        if resume and not sync_paused:
            consumer.resume(resume)

    def on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        """A new assignment: its partitions of a held table paused before anything is fetched
        (``assign`` resumes partitions)."""
        held = [tp for tp in partitions if self.topics.get(tp.topic) in self.order.held]
        if held:
            consumer.pause(held)
            self._paused_tps |= {(tp.topic, tp.partition) for tp in held}


def _capture_loading(conn: psycopg.Connection, bk: str) -> bool:
    """Whether a capture process's recent heartbeat says its snapshot is in the topics (sweep
    markers included): a load by snapshot events from its start, Debezium's snapshot once it
    completed. While Debezium still snapshots, no: its sweep markers come only after its last
    table, so a child held until its parent's sweep would wait for the whole snapshot, and
    Debezium produces the tables one after another anyway. A capture that streams without a
    snapshot says neither."""
    return any(
        hb.role == "capture"
        and hb.age_s < CAPTURE_HEARTBEAT_FRESH_S
        and hb.detail.get("snapshot_done")
        for hb in read_heartbeats(conn, bk)
    )
