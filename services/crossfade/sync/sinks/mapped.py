"""Mapped tables as sinks: a source table's changes go through the mapping
(:class:`crossfade.sync.sinks.mapped_source.MappedSource`: map, cleanse, validate, filter, defer,
dead-letter, dedup) inside the batch transaction, and children follow their parents
(:mod:`crossfade.sync.children`).

:class:`MappedTables` holds a worker's (or a ``dlq replay``'s) mapped sources and runs what they
share: a run of one table (:meth:`MappedTables.process`), the re-run of ledger rows (deferred
rows, children of parents that changed), and following parents until nothing changes."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import psycopg

from crossfade import metrics
from crossfade.events.decode import POSITION_HEADER, EventDecoder
from crossfade.events.model import ChangeEvent
from crossfade.sync.children import (
    ParentChanges,
    children_to_rerun,
    ledger_parents,
    lock_parents,
)
from crossfade.sync.parents import make_parents
from crossfade.sync.planner import PartitionPlan, Run
from crossfade.sync.refused import isolate, refusal
from crossfade.sync.sinks import Tx
from crossfade.sync.sinks.mapped_source import MappedResult, MappedSource
from crossfade.target.apply import event_key_id
from crossfade.target.store import deferred_rows
from crossfade.target.store.ledger import Origin

log = logging.getLogger(__name__)


class MappedTables:
    """The mapped source tables of one worker."""

    def __init__(
        self,
        mapped: dict[str, MappedSource],
        writers: dict[str, Any],
        shapes: dict[str, Any],
        order: list[str],
        bookkeeping_schema: str,
    ) -> None:
        self.mapped = mapped
        self.writers = writers
        self.shapes = shapes
        self.order = order
        """Source tables, parents of a mapping's references first."""
        self.bk = bookkeeping_schema
        self.decoder: EventDecoder | None = None
        ms = next(iter(mapped.values()), None)
        self.ledger_parents = ledger_parents(ms.mapper) if ms is not None else {}
        """Parents whose ledger rows stand in for their lock (sync.children.ledger_parents)."""

    def __bool__(self) -> bool:
        return bool(self.mapped)

    def __contains__(self, table: object) -> bool:
        return table in self.mapped

    def begin(self, tx: Tx) -> None:
        """Start a batch transaction: the parents it sees, no parent changed yet."""
        tx.parent_changes = ParentChanges()
        tx.parents = (
            make_parents(tx.conn, self.shapes, self.writers, self.bk, self.ledger_parents)
            if self
            else None
        )

    def sink(self, table: str) -> MappedSink:
        return MappedSink(self, self.mapped[table])

    def process(
        self,
        tx: Tx,
        ms: MappedSource,
        events: list[ChangeEvent],
        *,
        replay: bool = False,
        rerun: bool = False,
        expired: frozenset[str] = frozenset(),
    ) -> MappedResult:
        """Map and apply ``events`` of ``ms``; collect its dead letters, parent changes and
        counts in ``tx``. With ``tx.isolate``, rows the target refuses become dead letters
        (:mod:`crossfade.sync.refused`)."""
        kw: dict[str, Any] = {"replay": replay, "rerun": rerun, "expired": expired}
        if not tx.isolate:
            return self._process(tx, ms, events, **kw)

        def refuse(e: ChangeEvent, exc: psycopg.Error) -> MappedResult:
            why = refusal(", ".join(ms.targets), exc)
            # one line per row at DEBUG: the dead-letter log sums them up per table each minute
            log.debug("%s: row %s dead-lettered: %s", ms.source, ms.entry_of(e)[0], why)
            return self._process(tx, ms, [e], refused={ms.entry_of(e)[0]: why}, **kw)

        out = MappedResult()
        for res in isolate(
            tx.conn,
            events,
            lambda part: self._process(tx, ms, part, **kw),
            refuse,
            lambda: self._fresh_parents(tx),
        ):
            out.add(res)
        return out

    def _fresh_parents(self, tx: Tx) -> None:
        """After a rolled-back attempt: parents it found may be gone with it."""
        if tx.parents is not None:
            tx.parents = make_parents(
                tx.conn, self.shapes, self.writers, self.bk, self.ledger_parents
            )

    def _process(
        self,
        tx: Tx,
        ms: MappedSource,
        events: list[ChangeEvent],
        *,
        replay: bool,
        rerun: bool,
        expired: frozenset[str],
        refused: Mapping[str, str] | None = None,
    ) -> MappedResult:
        res = ms.process(
            tx.conn,
            events,
            tx.origins,
            tx.parents,
            replay=replay,
            rerun=rerun,
            expired=expired,
            refused=refused,
        )
        tx.dead.extend((h, ms.source) for h in res.dead_letters)
        assert tx.parent_changes is not None
        tx.parent_changes.update(res.parent_changes)
        tx.pending.filtered[ms.source] += res.filtered
        for name, n in res.filters.items():
            metrics.filtered(ms.source, name, n)
        if not rerun:
            tx.pending.deferred[ms.source] += res.deferred
        return res

    def retry_deferred(
        self, tx: Tx, tps: list[tuple[str, int]], *, expired_only: bool = False
    ) -> None:
        """Re-run deferred rows (a child whose parent had not arrived) of these partitions: the
        parent may be here now; past their window they are dead-lettered. ``expired_only``: only
        those whose window has ended (a parent's arrival re-runs its children by itself)."""
        if not tps:
            return
        rows = deferred_rows(tx.conn, self.bk, list(self.mapped), tps, expired_only=expired_only)
        self.rerun(tx, rows, "deferred rows")

    def rerun(self, tx: Tx, rows: list[tuple[Any, ...]], what: str) -> int:
        """Map again held or child rows of the ledger: (source table, entry, topic, partition,
        offset, key, value, headers, window over), parents first; how many were mapped."""
        if not rows:
            return 0
        assert self.decoder is not None
        by_table: dict[str, list[ChangeEvent]] = defaultdict(list)
        expired: dict[str, set[str]] = defaultdict(set)
        for table, entry, topic, partition, offset, key, value, headers, is_expired in rows:
            if table not in self.mapped:
                continue
            headers = headers or {}
            e = self.decoder.decode(key, value, table, headers.get(POSITION_HEADER))
            by_table[table].append(e)
            tx.origins[(e.table, event_key_id(e), e.position)] = Origin(
                topic, partition, offset, key, value, headers
            )
            if is_expired:
                expired[table].add(entry)
        done = 0
        for table in [t for t in self.order if t in by_table]:
            res = self.process(
                tx,
                self.mapped[table],
                by_table[table],
                rerun=True,
                expired=frozenset(expired[table]),
            )
            tx.pending.count(table, res)
            done += len(res.outcomes)
            moved = {k: n for k, n in res.by_outcome.items() if n and k != "deferred"}
            if moved:
                log.info("%s of %s mapped again: %s", what, table, moved)
        return done

    def follow_parents(self, tx: Tx) -> int:
        """Map again, in this transaction, the children of every parent that arrived, left or
        moved to another survivor (dedup) in it: a child finds its parent or loses it, whatever
        the order in which both arrived (sync.children). A child that is itself a parent makes
        another round. Returns how many children were mapped again.

        The changed parents' locks (:func:`~crossfade.sync.children.lock_parents`) are taken
        here, once per round, just before their children are read: the handshake needs only
        that order, and a batch holding them from its first write made two workers take turns
        for whole batches (a load's 5,000 new parents take nearly every lock bucket). Parents
        still changing after the last round are locked too, though not followed."""
        rounds = len(self.order) + 2
        done = 0
        for _ in range(rounds):
            changes, tx.parent_changes = tx.parent_changes, ParentChanges()
            if not changes:
                return done
            lock_parents(tx.conn, changes)
            done += self.rerun(tx, children_to_rerun(tx.conn, self.bk, changes), "children")
        if tx.parent_changes:
            log.warning("children still changing after %d rounds (a cycle of references?)", rounds)
            # not followed, still locked: a child looking for one waits for this commit
            lock_parents(tx.conn, tx.parent_changes)
            tx.parent_changes = ParentChanges()
        return done


class MappedSink:
    """:class:`~crossfade.sync.sinks.TableSink` of one mapped source table."""

    def __init__(self, tables: MappedTables, ms: MappedSource) -> None:
        self.tables = tables
        self.ms = ms

    def begin(self, tx: Tx, parts: list[PartitionPlan]) -> None:
        pass

    def apply(self, tx: Tx, run: Run) -> MappedResult:
        return self.tables.process(tx, self.ms, run.events, replay=run.replay)

    def truncate(self, tx: Tx, pos: int, reason: str) -> int:
        n = self.ms.truncate(tx.conn, pos, reason)
        assert tx.parent_changes is not None
        tx.parent_changes.update(self.ms.take_left())
        return n
