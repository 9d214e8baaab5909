"""The commit step: one batch in ONE target transaction (DESIGN decision 1).

:meth:`BatchCommit.run`, in order, inside ``conn.transaction()``:

1. lock the batch's offset rows and check this worker still owns them (fencing: a stale owner
   rolls back with :class:`~crossfade.errors.StaleAssignment`); drop records below the stored
   offsets (already applied: the COMMIT went through but its acknowledgement was lost);
2. plan the rest (:mod:`crossfade.sync.planner`): decode, hold the changes of poisoned keys
   (their dead letters re-read share-locked here); produce undecodable records to the dead-letter
   topic (acknowledged by Kafka) and write their ledger rows and the held ones;
3. apply per table through its sink (:mod:`crossfade.sync.sinks`), parents of a mapping's
   references first: runs set-based, a truncate, sweep or fence in order between them;
4. mapped tables: expire deferred rows of these partitions, map again the children of parents
   that changed (in this transaction);
5. produce the mapping's dead letters and wait for Kafka's acknowledgement;
6. store the next offsets, per-partition stats, moved snapshot floors and finished replays;
   COMMIT.

A crash (or any error) before the COMMIT rolls the batch back whole; the restart seeks to the
offsets stored in the target, so nothing is lost and nothing applies twice. What the worker keeps
in memory across batches (appliers refreshed for ADD COLUMN, snapshot floors) is restored by the
caller when this raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from confluent_kafka import Message

from crossfade import metrics
from crossfade.errors import SchemaMismatch, StaleAssignment
from crossfade.events.kafka import ControlRecord, record_place
from crossfade.events.model import position
from crossfade.sync.dead_letters import DeadLetterTopic
from crossfade.sync.planner import BatchPlan, Marker, PartitionPlan, Planner, Run, Truncate
from crossfade.sync.sinks import TableSink, Tx
from crossfade.sync.sinks.mapped import MappedTables
from crossfade.target import store
from crossfade.target.store.ledger import write_ledger

log = logging.getLogger(__name__)

TP = tuple[str, int]


def lock_owned(
    conn: psycopg.Connection, bk: str, group_id: str, owner: Mapping[TP, str], tps: list[TP]
) -> dict[TP, int]:
    """Lock the offset rows of ``tps`` and check this worker still owns them (its claim token in
    ``owner``); returns each one's stored next offset. Raises :class:`StaleAssignment`."""
    stored = store.lock_offsets(conn, bk, group_id, tps)
    out: dict[TP, int] = {}
    for tp in sorted(tps):
        row = stored.get(tp)
        mine = owner.get(tp)
        if row is None or mine is None or row[1] != mine:
            raise StaleAssignment(
                f"partition {tp[0]}[{tp[1]}] is owned by another sync worker now; batch rolled back"
            )
        out[tp] = row[0]
    return out


class BatchCommit:
    """The commit step of one worker: its planner, sinks and dead-letter topic."""

    def __init__(
        self,
        *,
        bookkeeping_schema: str,
        group_id: str,
        planner: Planner,
        sinks: Callable[[str], TableSink],
        mapped: MappedTables,
        dead_letters: DeadLetterTopic,
        meter: metrics.SyncMeter,
    ) -> None:
        self.bk = bookkeeping_schema
        self.group = group_id
        self.planner = planner
        self.sinks = sinks
        """Table -> its sink for one batch (a sink may keep per-batch state: the watermark)."""
        self.mapped = mapped
        self.dead_letters = dead_letters
        self.meter = meter

    def run(
        self,
        tx: Tx,
        msgs: list[Message],
        owner: Mapping[TP, str],
        order: list[str],
    ) -> list[TP]:
        """Apply ``msgs`` (one ``consume`` call's records) in one transaction of ``tx.conn``;
        returns the partitions whose replay this batch completed (after the COMMIT)."""
        by_tp = _by_partition(msgs)
        conn = tx.conn
        with conn.transaction():
            # 1. fencing + already-applied filter
            nxt_of = lock_owned(conn, self.bk, self.group, owner, sorted(by_tp))
            fresh = {tp: _at_or_above(*by_tp[tp], nxt_of[tp]) for tp in sorted(by_tp)}
            # 2. plan: decode, holds, dead letters
            plan = self.plan(tx, fresh)
            # 3. apply per table, parents of a mapping's references first
            self.mapped.begin(tx)
            for table, parts in plan.tables(order):
                self.apply_table(tx, table, parts)
            # 4. deferred rows and children
            if self.mapped:
                self.mapped.retry_deferred(tx, list(fresh), expired_only=True)
                self.mapped.follow_parents(tx)
            # 5. the mapping's dead letters, durable before the commit
            mapped_dead = [h for h, _t in tx.dead]
            if tx.dead:
                self.dead_letters.rejected(tx.dead, self.count_dead(tx))
                tx.dead = []
            # 6. positions and stats
            self.store_positions(tx, plan, mapped_dead)
        return [tp for tp, pp in plan.partitions.items() if pp.replay_done]

    def plan(self, tx: Tx, fresh: dict[TP, list[Message]]) -> BatchPlan:
        """Step 2: the planner's decode, the target's word on open dead letters, the ledger
        rows of dead letters and held changes (dead letters produced first)."""
        plan = self.planner.decode(fresh)
        still = store.still_dead_letters(
            tx.conn, self.bk, [(t, e) for (t, _k), e in plan.suspects.items()]
        )
        plan.settle(still, self.planner)
        tx.origins = plan.origins
        if plan.dead:
            self.dead_letters.undecodable(plan.dead, self.count_dead(tx))
            write_ledger(tx.conn, self.bk, [d.ledger_row() for d in plan.dead])
        if plan.held:
            log.warning("%d change(s) held back behind a dead letter of their key", len(plan.held))
            write_ledger(tx.conn, self.bk, plan.held)
        return plan

    def apply_table(self, tx: Tx, table: str, parts: list[PartitionPlan]) -> None:
        """Step 3 for one table: its sink takes the runs, truncates, sweeps and fences of each
        of its partitions in order."""
        sink = self.sinks(table)
        sink.begin(tx, parts)
        for pp in parts:
            stats = tx.stats(pp.tp)
            for step in pp.steps():
                if isinstance(step, Run):
                    res = sink.apply(tx, step)
                    _toast_missing(table, res.toast_missing)
                    tx.pending.count(table, res)
                    stats.account(step.events, res.applied + res.deleted, res.skipped)
                elif isinstance(step, Truncate):  # TRUNCATE at the source
                    x = step.event
                    n = sink.truncate(tx, x.position, "truncate")
                    log.warning(
                        "TRUNCATE of %s at LSN %d applied: %d target rows deleted", table, x.lsn, n
                    )
                    stats.account([x], 1, 0)
                else:
                    self._marker(tx, sink, table, pp.tp, step)

    def _marker(self, tx: Tx, sink: TableSink, table: str, tp: TP, step: Marker) -> None:
        x: ControlRecord = step.record
        if x.kind == "sweep":
            # only once every partition of the table passed its marker: before that, rows of the
            # snapshot may still be on their way in another partition (store.sweeps)
            passed, needed = store.sweep_passed(
                tx.conn, self.bk, table, x.lsn, tp, x.partitions, self.group
            )
            if passed < needed:
                log.info(
                    "snapshot of %s at LSN %d: %s[%d] passed its sweep marker, %d of %d partitions; "
                    "the sweep waits for the others",
                    table,
                    x.lsn,
                    tp[0],
                    tp[1],
                    passed,
                    needed,
                )
                return
            n = sink.truncate(tx, position(x.lsn, snapshot=True), "snapshot sweep")
            if n:
                log.warning(
                    "snapshot at LSN %d no longer holds %d rows of %s: deleted", x.lsn, n, table
                )
        elif x.kind == "fence":
            self.meter.note_fence(x.source_ts_ms)
            store.record_fence(tx.conn, self.bk, x.token, tp, x.lsn, x.source_ts_ms)

    def store_positions(self, tx: Tx, plan: BatchPlan, mapped_dead: list[Any]) -> None:
        """Step 6: one statement each for the whole batch (a round trip per partition was most
        of a small batch's time on a busy target)."""
        offsets: dict[TP, int] = {}
        rows: list[tuple[Any, ...]] = []
        for tp, pp in plan.partitions.items():
            offsets[tp] = pp.next_offset
            st = tx.stats(tp)
            self.meter.note(pp.table, st.last_source_ts_ms)
            rows.append(
                (
                    pp.table,
                    tp[0],
                    tp[1],
                    st.applied,
                    st.skipped,
                    plan.dead_in(tp, mapped_dead),
                    st.last_lsn if st.last_lsn >= 0 else None,
                    st.last_source_ts_ms,
                )
            )
        store.store_next_offsets(tx.conn, self.bk, self.group, offsets)
        store.add_table_stats(tx.conn, self.bk, rows)
        for tp in sorted(plan.floors_moved):
            store.raise_snapshot_floor(tx.conn, self.bk, self.group, tp, self.planner.floors[tp])
        for tp, pp in plan.partitions.items():
            if pp.replay_done:
                store.finish_replay(tx.conn, self.bk, self.group, tp)

    @staticmethod
    def count_dead(tx: Tx) -> Callable[[str], None]:
        def count(table: str) -> None:
            tx.pending.dead_lettered[table] += 1

        return count


def _by_partition(msgs: list[Message]) -> dict[TP, tuple[list[int], list[Message]]]:
    """The records per partition, in their order, with their offsets (each record's place read
    once: this runs for every record)."""
    by_tp: dict[TP, tuple[list[int], list[Message]]] = {}
    for m in msgs:
        topic, partition, offset = m.topic(), m.partition(), m.offset()
        if topic is None or partition is None or offset is None:
            topic, partition, offset = record_place(m)  # raises, naming the defect
        group = by_tp.get((topic, partition))
        if group is None:
            group = by_tp[(topic, partition)] = ([], [])
        group[0].append(offset)
        group[1].append(m)
    return by_tp


def _at_or_above(offsets: list[int], msgs: list[Message], nxt: int) -> list[Message]:
    """The records at or above offset ``nxt`` (not applied yet): all of them, most batches."""
    if min(offsets) >= nxt:
        return msgs
    return [m for o, m in zip(offsets, msgs, strict=True) if o >= nxt]


def _toast_missing(table: str, keys: list[str]) -> None:
    if keys:
        # The row the update refers to is not in the target, so its unchanged TOASTed values
        # are unknown: refuse loudly rather than write Debezium's placeholder or NULLs.
        raise SchemaMismatch(
            f"{len(keys)} update(s) of {table} keep unchanged TOASTed values of rows missing in the target (keys {keys[:3]})",
            f"set REPLICA IDENTITY FULL on {table} in the source, or re-snapshot the table",
        )
