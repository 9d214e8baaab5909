"""The batch planner: what a polled batch means, before anything is written. PURE: no broker, no
database (the one question only the target can answer, whether a dead letter a key waits behind
is still open, is asked by the commit step between :meth:`Planner.decode` and
:meth:`BatchPlan.settle`).

From the records of a batch that are not applied yet (at or above each partition's stored
offset), in their partition's order:

1. decode each (:meth:`Planner.decode`): a control record (fence, snapshot sweep), a change
   event, a tombstone (nothing), or a :class:`DeadLetter` (an undecodable record, with its
   reason; its key, when that decodes, is *poisoned*: the key's later changes wait behind it);
2. hold back the changes of a poisoned key (:meth:`BatchPlan.settle`): a ledger row ``held`` each,
   applied by ``dlq replay`` once the dead letter is resolved;
3. cut each table's items into steps (:meth:`BatchPlan.steps`): runs of change events applied
   set-based, with a truncate, a sweep or a fence applied in order between them, and a run never
   spanning the end of a rewind's replay (the leading records below the replay epoch's
   ``until_offset`` apply with the replay guard, :mod:`crossfade.target.apply`);
4. the batch's positions: per partition the next offset to store, whether it completes a replay,
   and the snapshot floors that moved (records without crossfade's position header, Kafka
   Connect, are positioned above the newest snapshot applied on their partition).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from crossfade.errors import DecodeError
from crossfade.events.decode import POSITION_HEADER, EventDecoder
from crossfade.events.kafka import CONTROL_HEADER, ControlRecord, record_headers, record_place
from crossfade.events.model import ChangeEvent
from crossfade.target.apply import event_key_id
from crossfade.target.store.ledger import Held, Origin

TP = tuple[str, int]
Item = ChangeEvent | ControlRecord


class Record(Protocol):
    """What the planner reads of a Kafka message (a confluent_kafka ``Message`` is one)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...


@dataclass(slots=True)
class DeadLetter:
    msg: Any
    reason: str
    table: str
    key_id: str | None = None
    """The record's key (as :func:`crossfade.target.apply.event_key_id` spells it) when the key could be
    decoded: later changes of that key are held back until the dead letter is resolved."""

    @property
    def entry(self) -> str:
        return place_entry(self.msg)

    def ledger_row(self) -> Held:
        return Held(
            self.table,
            self.entry,
            0,
            "dead_letter",
            json.loads(self.key_id) if self.key_id else None,
            rule="decode",
            reason=self.reason,
            origin=origin_of(self.msg),
        )


@dataclass(frozen=True, slots=True)
class Run:
    """Change events of one table and partition, applied set-based in one go."""

    events: list[ChangeEvent]
    replay: bool


@dataclass(frozen=True, slots=True)
class Truncate:
    """A TRUNCATE at the source: voids the table below its position."""

    event: ChangeEvent


@dataclass(frozen=True, slots=True)
class Marker:
    """A control record in the table's stream: ``sweep`` (a snapshot ended) or ``fence``."""

    record: ControlRecord


Step = Run | Truncate | Marker


@dataclass(slots=True)
class PartitionPlan:
    """One partition's part of the batch."""

    tp: TP
    table: str
    next_offset: int
    """The offset after the batch's last record of the partition: what the commit stores."""
    items: list[Item] = field(default_factory=list)
    replayed: int = 0
    """How many leading items a rewind's replay re-applies."""
    replay_done: bool = False
    """The batch reaches the end of the partition's replay."""
    _pending: list[tuple[Any, Item, str | None]] = field(default_factory=list)

    def steps(self) -> list[Step]:
        """The items as steps: change events set-based in runs; a truncate, sweep or fence in
        order between them; a run never spans the end of a replay."""
        out: list[Step] = []
        run: list[ChangeEvent] = []
        for i, x in enumerate([*self.items, None]):
            if isinstance(x, ChangeEvent) and x.op != "t" and i != self.replayed:
                run.append(x)
                continue
            if run:
                out.append(Run(run, i <= self.replayed))
                run = []
            if isinstance(x, ChangeEvent) and x.op != "t":  # the first record after the replay
                run.append(x)
            elif isinstance(x, ChangeEvent):
                out.append(Truncate(x))
            elif x is not None:
                out.append(Marker(x))
        return out


@dataclass(slots=True)
class BatchPlan:
    partitions: dict[TP, PartitionPlan] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    origins: dict[tuple[str, str, int], Origin] = field(default_factory=dict)
    """(table, key id, position) -> where a mapped table's change was read (dead letters and
    children keep it)."""
    suspects: dict[tuple[str, str], str] = field(default_factory=dict)
    """(table, key id) -> the dead letter entry an earlier batch left for the key: whether it is
    still open decides whether the key's changes wait (:meth:`settle`)."""
    floors_moved: set[TP] = field(default_factory=set)

    def settle(self, still_open: Iterable[str], planner: Planner) -> None:
        """Hold back the changes of keys whose dead letter is in ``still_open`` (entries the
        target says are still dead letters); the others are released. Fills the partitions'
        items, replay counts and the origins of mapped tables."""
        still = set(still_open)
        for k, entry in self.suspects.items():
            # resolved (a dlq replay committed first); a key poisoned again in this batch stays
            if entry not in still and planner.poisoned.get(k) == entry:
                del planner.poisoned[k]
        for pp in self.partitions.values():
            until = planner.replay_until.get(pp.tp)
            mapped = pp.table in planner.mapped
            for m, d, hold in pp._pending:
                if hold is not None and (hold in still or hold.startswith("!")):
                    assert isinstance(d, ChangeEvent)
                    self.held.append(_held(m, d, hold.removeprefix("!")))
                    continue
                pp.items.append(d)
                if mapped and isinstance(d, ChangeEvent):
                    self.origins[(d.table, event_key_id(d), d.position)] = origin_of(m, d.position)
                if until is not None and record_place(m)[2] < until:
                    pp.replayed = len(pp.items)
            pp._pending = []

    def tables(self, order: Iterable[str]) -> list[tuple[str, list[PartitionPlan]]]:
        """The batch's partitions per table, tables in ``order`` (a mapping's parents first)."""
        by_table: dict[str, list[PartitionPlan]] = {}
        for pp in self.partitions.values():
            by_table.setdefault(pp.table, []).append(pp)
        return [(t, by_table[t]) for t in order if t in by_table]

    def dead_in(self, tp: TP, mapped_dead: Iterable[Held]) -> int:
        """Dead letters of partition ``tp``: undecodable ones and those of the mapping."""
        return sum(1 for d in self.dead if record_place(d.msg)[:2] == tp) + sum(
            1
            for h in mapped_dead
            if h.origin is not None and (h.origin.topic, h.origin.partition) == tp
        )


class Planner:
    """Decodes batches for one worker. It keeps what later batches need: the snapshot floor of
    each partition, the keys poisoned by a dead letter, the partitions being replayed."""

    def __init__(
        self,
        decoder: EventDecoder | None,
        topics: Mapping[str, str],
        mapped: Iterable[str] = (),
        rename: Callable[[ChangeEvent], ChangeEvent] | None = None,
    ) -> None:
        self.decoder = decoder
        """Set before the first batch (it reads the schema store)."""
        self.rename = rename
        """Applied to every decoded change event (the reverse sync's legacy column names)."""
        self.topics = dict(topics)
        """Topic -> source table."""
        self.mapped = frozenset(mapped)
        """Source tables with a mapping: their changes keep their origin."""
        self.floors: dict[TP, int] = {}
        """Per partition: the LSN of the newest snapshot applied there (stored beside its offset)."""
        self.poisoned: dict[tuple[str, str], str] = {}
        """(table, key id) -> the dead letter (undecodable change) later changes of the key wait for."""
        self.replay_until: dict[TP, int] = {}
        """Partitions being replayed after a rewind -> the offset where the replay ends."""

    def decode(self, fresh: Mapping[TP, list[Any]]) -> BatchPlan:
        """Step 1 of the module docstring for the records not applied yet, per partition in
        offset order. Call :meth:`BatchPlan.settle` next."""
        plan = BatchPlan()
        fresh_poison: set[tuple[str, str]] = set()
        for tp, ms in fresh.items():
            if not ms:
                continue
            table = self.topics.get(tp[0], tp[0])
            nxt = record_place(ms[-1])[2] + 1
            until = self.replay_until.get(tp)
            pp = PartitionPlan(tp, table, nxt, replay_done=until is not None and nxt >= until)
            plan.partitions[tp] = pp
            pending = pp._pending
            # while nothing waits to be settled, a change settle would only move over goes to
            # the items at once (no replay to count, no origin to keep): the common case
            items = pp.items if until is None and table not in self.mapped else None
            for m in ms:
                d = self._decode_record(m, tp, table, plan)
                if type(d) is ChangeEvent and (d.key is None or not self.poisoned):
                    if items is not None and not pending:
                        items.append(d)
                    else:
                        pending.append((m, d, None))
                    continue
                if isinstance(d, DeadLetter):
                    plan.dead.append(d)
                    if d.key_id is not None:
                        self.poisoned[(d.table, d.key_id)] = d.entry
                        fresh_poison.add((d.table, d.key_id))
                    continue
                if d is None:
                    continue
                hold = None
                if isinstance(d, ChangeEvent) and d.key is not None and self.poisoned:
                    k = (d.table, event_key_id(d))
                    entry = self.poisoned.get(k)
                    if entry is not None and k in fresh_poison:
                        hold = "!" + entry  # poisoned in this very batch: held, nothing to ask
                    elif entry is not None:
                        hold = plan.suspects[k] = entry
                pp._pending.append((m, d, hold))
        return plan

    def decode_one(
        self, m: Any, plan: BatchPlan
    ) -> ChangeEvent | ControlRecord | DeadLetter | None:
        """One record: a control record, a change event, None (a tombstone), or a dead letter."""
        topic, partition, _offset = record_place(m)
        return self._decode_record(m, (topic, partition), self.topics.get(topic, topic), plan)

    def _decode_record(
        self, m: Any, tp: TP, table: str, plan: BatchPlan
    ) -> ChangeEvent | ControlRecord | DeadLetter | None:
        """:meth:`decode_one` of a record of partition ``tp`` (of ``table``): the per-record
        part, with the headers read in one pass (it runs for every event of every batch)."""
        assert self.decoder is not None
        # confluent_kafka converts a record's headers once and hands out that list after: ~0.1 us
        # a call, where a dict by id(message) cost ~0.8 us a lookup (ids share their low bits)
        hs = m.headers()
        control = pos = None
        if hs:
            if type(hs) is not list and isinstance(hs, dict):
                hs = list(hs.items())
            found_pos = False
            for k, v in hs:  # the first of each name counts (control_kind, header_in)
                if k == CONTROL_HEADER:
                    control = True
                    break
                if k == POSITION_HEADER and not found_pos:
                    found_pos = True
                    if isinstance(v, bytes):  # a header is bytes from anyone: never fail on them
                        pos = v.decode("utf-8", "replace")
                    elif v is not None:
                        pos = str(v)
        value = m.value()
        if control:
            try:
                return ControlRecord.decode(value or b"")
            except Exception as exc:
                return DeadLetter(m, f"corrupt control record: {exc}", table)
        if value is None:
            return None  # tombstone (compaction marker): nothing to apply
        try:
            # every shape problem of one record is a DecodeError (crossfade.events.decode):
            # the record is dead-lettered with the reason, the batch goes on
            floor = self.floors.get(tp, 0)
            e = self.decoder.decode(m.key(), value, table, pos, floor)
            if pos is None and e.snapshot not in ("false", "incremental") and e.lsn > floor:
                # a snapshot record from Kafka Connect: what streams after it on this partition
                # is positioned above it (a change in flight across the snapshot still wins)
                self.floors[tp] = e.lsn
                plan.floors_moved.add(tp)
            return self.rename(e) if self.rename is not None else e
        except DecodeError as exc:
            key_id = None
            with contextlib.suppress(Exception):
                kd, _codec = self.decoder.decoder.decode_with_schema(m.key() or b"")
                if isinstance(kd, dict):
                    key_id = json.dumps(kd, sort_keys=True, default=str)
            return DeadLetter(m, str(exc), table, key_id)


def place_entry(m: Any) -> str:
    """The ledger entry of a record kept by where it was read: ``@topic/partition/offset``."""
    return f"@{m.topic()}/{m.partition()}/{m.offset()}"


def origin_of(m: Any, pos: int | None = None) -> Origin:
    """Where ``m`` was read, to re-run it later (a deferral, a dead letter). ``pos``: its decoded
    position, kept as the position header when the record has none (Kafka Connect): a re-run
    then orders it as sync did, snapshot floor included."""
    headers = {
        k: v.decode("utf-8", "replace") if isinstance(v, bytes) else v
        for k, v in record_headers(m)
        if v is not None
    }
    if pos is not None and POSITION_HEADER not in headers:
        headers[POSITION_HEADER] = str(pos)
    return Origin(*record_place(m), m.key(), m.value(), headers)


def _held(m: Any, e: ChangeEvent, entry: str) -> Held:
    return Held(
        e.table,
        place_entry(m),
        e.position,
        "held",
        json.loads(event_key_id(e)),
        rule="held",
        reason=f"an earlier change of this key is a dead letter ({entry})",
        origin=origin_of(m, e.position),
    )
