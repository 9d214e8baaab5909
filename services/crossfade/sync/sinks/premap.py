"""The pure part of a batch's mapping, made before its first statement (issue 22).

The commit step applies a batch's tables parents first in one transaction
(:mod:`crossfade.sync.commit`). A deduplicated target's writer takes the table's lock
(:mod:`crossfade.sync.sinks.dedup`) and holds it to the COMMIT, so whatever the batch does after
it, the other workers' dedup waits for: a second partition's run of the same table, the children's
tables, ``follow_parents``' re-runs. What a change alone decides reads nothing from the database,
so :meth:`~crossfade.sync.sinks.mapped.MappedTables.premap` makes it for every change of every
mapped table before the batch's first write (:func:`premap_run`), and the statements then run in
the same order as before with it at hand:

* the run's changes collapsed to one per key (:func:`~crossfade.target.apply.collapse`), each
  key's ledger entry, source key and key row, and where the change was read;
* the mapping's outcome with every parent answering "there" (the first pass of
  :meth:`~crossfade.sync.parents.TargetParents.map_batch`) and the parents it asked for: the
  parents are still looked up, locked and waited for at the change's turn, and a row whose parent
  is missing is mapped again then, against the state the statements before it left;
* the target keys of the source key (a delete, a row kept out), the child's references as text,
  the parent values a parent row carries, and a deduplicated target's member rows (block keys,
  the row as stored).

What reads the database stays where it was: which changes the ledger lets through (every change
is mapped here; those it refuses are dropped at their turn, as before), the parents and their
states, the dedup component, the children a changed parent has. A child that ``follow_parents``
maps again and that is a change of this batch — the same record at the same offset with the same
bytes, decoded at the same position — takes its mapping from here: mapping is pure, so it maps
the same. Nothing here writes: a crash anywhere still rolls the whole batch back.

A change (or a run) whose mapping raises is not made here: it is mapped at its turn, and raises
there (or is never mapped, when the ledger refuses it), as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from crossfade.events.model import ChangeEvent
from crossfade.mapping.engine import Mapped, Mapper, Outcome
from crossfade.mapping.values import event_row
from crossfade.sync import children
from crossfade.sync.key_text import key_text
from crossfade.sync.parents import Asking, PKey
from crossfade.target.apply import collapse, event_key_id
from crossfade.target.store.ledger import Origin

Place = tuple[str, int, int]
"""(topic, partition, offset) of a record."""


class MappedSource(Protocol):
    """What premapping reads of a :class:`crossfade.sync.sinks.mapped_source.MappedSource`."""

    mapper: Mapper
    source: str
    pg_types: dict[str, str]
    ref_rules: list[children.RefRule]
    parent_cols: dict[str, list[str]]

    def entry_of(self, e: ChangeEvent) -> tuple[str, list[Any], dict[str, Any]]: ...


@dataclass(slots=True)
class Premapped:
    """One change (a key's newest in its run), as far as the change alone decides."""

    event: ChangeEvent
    entry: str
    skey: list[Any]
    key_row: dict[str, Any]
    origin: Origin | None
    first: tuple[Outcome, dict[PKey, Any] | None] | None = None
    """The outcome with every parent there, and the parents it asked for (key -> value); None
    for a delete, or when the mapping raised (mapped at its turn)."""
    targets: list[tuple[str, tuple[Any, ...]]] | None = None
    """``Mapper.map_key`` of the key row, where the outcome may delete the key's target rows."""
    refs: list[tuple[children.RefRule, str]] | None = None
    """The references of the outcome's rows (rule, parent value text), for ``child_refs``."""
    parent_values: list[tuple[str, str]] | None = None
    """(target, value text) of the columns children refer to, of a mapped parent's rows."""
    members: dict[int, tuple[Any, ...]] | None = None
    """Index of a mapped row into a deduplicated target -> its member row, as stored."""


class Premaps:
    """The premapped changes of one batch (:class:`~crossfade.sync.sinks.Tx.premaps`)."""

    def __init__(self) -> None:
        self._runs: dict[tuple[int, int], tuple[list[ChangeEvent], list[ChangeEvent]]] = {}
        self._events: dict[int, Premapped] = {}
        self._records: dict[Place, Premapped] = {}

    def add(
        self, events: list[ChangeEvent], survivors: list[ChangeEvent], made: list[Premapped]
    ) -> None:
        if not events:
            return
        self._runs[(id(events[0]), len(events))] = (list(events), survivors)
        ids = {id(e) for e in events}
        for pm in made:
            self._events[id(pm.event)] = pm
            o = pm.origin
            if o is not None and id(pm.event) in ids:  # as read, not one collapse filled in
                self._records[(o.topic, o.partition, o.offset)] = pm

    def survivors(self, events: list[ChangeEvent]) -> list[ChangeEvent] | None:
        """The collapsed changes premapped for a run of exactly these events, else None."""
        if not events:
            return None
        hit = self._runs.get((id(events[0]), len(events)))
        if hit is None or any(a is not b for a, b in zip(hit[0], events, strict=True)):
            return None
        return hit[1]

    def of(self, e: ChangeEvent) -> Premapped | None:
        pm = self._events.get(id(e))
        return pm if pm is not None and pm.event is e else None

    def record(
        self,
        place: Place,
        key: bytes | None,
        value: bytes | None,
        headers: Mapping[str, Any],
        e: ChangeEvent,
    ) -> ChangeEvent:
        """A change read again from the ledger (``place``, its bytes and headers, ``e`` decoded
        from them): the premapped change of this batch when it is the same record, else ``e``."""
        pm = self._records.get(place)
        if pm is None or pm.origin is None:
            return e
        o, p = pm.origin, pm.event
        same = o.key == key and o.value == value and (o.headers or {}) == headers
        return p if same and p.position == e.position and p.table == e.table else e


def premap_run(
    ms: MappedSource,
    events: list[ChangeEvent],
    shapes: Mapping[str, Any],
    origins: Mapping[tuple[str, str, int], Origin],
    dedup: Mapping[str, Any],
) -> tuple[list[ChangeEvent], list[Premapped]]:
    """The collapsed changes of one run of ``ms`` and their :class:`Premapped`. ``shapes``: the
    target tables (a parent of another table is no parent: the mapping is told "unknown");
    ``dedup``: deduplicated target -> its writer (``member_row``)."""
    survivors = collapse(events)
    made: list[Premapped] = []
    for e in survivors:
        try:
            entry, skey, key_row = ms.entry_of(e)
            origin = origins.get((e.table, event_key_id(e), e.position))
            pm = Premapped(e, entry, skey, key_row, origin)
            _map(ms, pm, shapes, dedup)
        except Exception:  # noqa: BLE001 - made at its turn, and raised there, if it gets one
            continue
        made.append(pm)
    return survivors, made


def _map(
    ms: MappedSource, pm: Premapped, shapes: Mapping[str, Any], dedup: Mapping[str, Any]
) -> None:
    e = pm.event
    out: Outcome | None = None
    if not e.is_delete:
        row, unavailable = event_row(e, ms.pg_types)
        asking = Asking(shapes)
        out = ms.mapper.map_row(ms.source, row, parents=asking, unavailable=unavailable)
        pm.first = (out, asking.asked)
    if not isinstance(out, Mapped):
        pm.targets = ms.mapper.map_key(ms.source, pm.key_row)
    rows = getattr(out, "rows", ())
    if ms.ref_rules and rows:
        pm.refs = [(r, key_text([v])) for r, v in children.row_refs(ms.ref_rules, rows)]
    if isinstance(out, Mapped):
        pm.parent_values = list(_parent_values(ms.parent_cols, rows))
        members = {
            i: dedup[tr.table].member_row(key_text(tr.key), tr.key, tr.values, e.position)
            for i, tr in enumerate(rows)
            if tr.table in dedup and tr.key is not None
        }
        pm.members = members or None


def _parent_values(cols: Mapping[str, list[str]], rows: Iterable[Any]) -> Iterable[tuple[str, str]]:
    for tr in rows:
        for col in cols.get(tr.table, []):
            v = tr.values.get(col)
            if v is not None:
                yield tr.table, key_text([v])
