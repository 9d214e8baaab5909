"""Mapped source tables in the live sync: map, cleanse, validate, filter, defer, dead-letter.

A source table with an entry under ``mapping.tables`` does not land in a same-named target table:
each change goes through the compiled :class:`~crossfade.mapping.engine.Mapper` (the same pure
function audit, dry-run and verify use) and its outcome decides what happens, per source key,
inside the batch transaction:

* **mapped** — one row per target of the table, upserted with the guarded set-based apply of
  :mod:`crossfade.target.apply` (``_cf_pos`` column, tombstones and watermarks per *target* table
  and *target* key);
* **deleted** at the source — :meth:`Mapper.map_key` gives the target keys, deleted (tombstoned);
* **filtered** — the row is kept out of the target (its target rows are deleted, as for a
  delete) and the filter and reason are recorded;
* **rejected** — a rule failed: the record goes to the dead-letter topic with its original bytes,
  the rule and the reason, is counted in ``crossfade_dead_lettered_total{table,rule}`` and
  recorded for ``crossfade dlq list/replay``; the key's target rows are removed, so the target
  holds exactly the rows that pass (accounting closes: source = target + dead letters + filtered);
* **deferred** — only ``references`` rules failed and a parent may still come (a child before
  its parent, FAULTS 27 and 38: changes of different tables are not ordered across topics): the
  key's target rows are removed; the row is mapped again the moment its parent arrives (in the
  transaction that applies the parent), retried every second, and dead-lettered when its window
  (``window_s``, default ``mapping.defaults.references_window_s``) ends — or at once when the
  parent is known to be filtered or dead-lettered (``parent left``);
* **parent_left** — under ``on_parent_left: delete``: the parent is known gone, the child is out
  of the target and not a dead letter; it comes back with its parent.

Children follow their parents (:mod:`crossfade.sync.children`): a child's change event is kept in
the ledger with the parent values it refers to, and whenever a parent arrives, leaves, or (dedup)
moves to another survivor, its children are mapped again in the same transaction.

Every outcome is written to ``<bookkeeping>.ledger`` under the source key with the change's
position, guarded like the target rows: an event older than the key's ledger position (a change
re-sent after a capture restart) is skipped, so it can neither reopen a resolved dead letter nor
undo a later decision. Re-running a held record (a deferral's retry, ``dlq replay``) passes at
its own position.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from crossfade.catalog import POS_COLUMN, TableShape, read_shape
from crossfade.errors import ConfigError, SchemaMismatch
from crossfade.events.model import ChangeEvent
from crossfade.mapping.engine import (
    Failure,
    Filtered,
    Mapped,
    Mapper,
    Rejected,
    TargetRow,
    jsonable,
)
from crossfade.mapping.values import event_key, event_row
from crossfade.sync import children
from crossfade.sync.key_text import key_text
from crossfade.sync.refused import RULE
from crossfade.target.apply import ApplyResult, TableApplier, collapse, event_key_id
from crossfade.target.store import ensure_schema, orphaned_parent_values
from crossfade.target.store.ledger import (
    Held,
    Origin,
    forget_below,
    ledger_positions,
    write_ledger,
)

if TYPE_CHECKING:
    from crossfade.sync.parents import TargetParents

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RowChange:
    key: tuple[Any, ...]
    values: dict[str, Any] | None  # None: delete
    position: int
    unavailable: frozenset[str] = frozenset()


@dataclass(slots=True)
class MappedResult:
    applied: int = 0
    deleted: int = 0
    skipped: int = 0
    filtered: int = 0
    deferred: int = 0
    dead_letters: list[Held] = field(default_factory=list)
    toast_missing: list[str] = field(default_factory=list)
    by_outcome: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    filters: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Filter name -> rows it kept out (metrics)."""
    parent_changes: children.ParentChanges = field(default_factory=children.ParentChanges)
    """Parents that arrived, left or changed survivor: their children are mapped again."""
    outcomes: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    """Ledger entry -> (outcome, rule) of each change processed (not of those skipped)."""

    def add(self, other: MappedResult) -> None:
        """Sum ``other`` (another part of the same run) into this one."""
        for name in ("applied", "deleted", "skipped", "filtered", "deferred"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.dead_letters += other.dead_letters
        self.toast_missing += other.toast_missing
        for k, n in other.by_outcome.items():
            self.by_outcome[k] += n
        for k, n in other.filters.items():
            self.filters[k] += n
        self.parent_changes.update(other.parent_changes)
        self.outcomes.update(other.outcomes)


class TargetWriter:
    """Guarded apply of mapped rows to one target table (keyed by the mapping's target key).

    Rows of one target normally carry the same columns; a row with other columns (a mapping that
    copies unmapped source columns, a source that gained one) gets an applier of its own."""

    def __init__(
        self,
        shape: TableShape,
        key: tuple[str, ...],
        produced: tuple[str, ...],
        bookkeeping_schema: str,
    ) -> None:
        self.shape = shape
        self.key = key
        self.bk = bookkeeping_schema
        names = [c.name for c in shape.columns]
        self.order = {c: i for i, c in enumerate(names)}
        self.default_cols = tuple(
            sorted({*produced, *key} & set(names), key=self.order.__getitem__)
        )
        self.json_cols = {c.name for c in shape.columns if c.type_sql in ("json", "jsonb")}
        self._appliers: dict[tuple[str, ...], TableApplier] = {}
        self.redirects: list[tuple[str, str]] = []
        """(column, deduplicated parent table): values are legacy parent keys, written as the
        key of the parent's survivor (crossfade.sync.sinks.dedup)."""

    @property
    def table(self) -> str:
        return self.shape.qualified

    def applier(self, cols: tuple[str, ...] | None = None) -> TableApplier:
        cols = cols or self.default_cols
        a = self._appliers.get(cols)
        if a is None:
            sub = TableShape(
                self.shape.schema,
                self.shape.name,
                tuple(self.shape.column(c) for c in cols),
                self.key,
            )
            a = TableApplier(sub, self.bk, stage_tag="|".join(cols))
            self._appliers[cols] = a
        return a

    def _value(self, col: str, v: Any) -> Any:
        if v is not None and col in self.json_cols:
            return Jsonb(v)
        return v

    def apply(
        self, conn: psycopg.Connection, changes: list[RowChange], *, replay: bool = False
    ) -> ApplyResult:
        total = ApplyResult()
        if not changes:
            return total
        best: dict[str, RowChange] = {}
        for ch in changes:  # one change per target key: the newest
            k = key_text(ch.key)
            cur = best.get(k)
            if cur is None or ch.position >= cur.position:
                best[k] = ch
        first = self.applier()
        wm = first.prepare(conn)
        groups: dict[tuple[str, ...], list[tuple[str, RowChange]]] = defaultdict(list)
        for k, ch in best.items():
            if ch.values is None:
                cols = self.default_cols
            else:
                cols = tuple(
                    sorted((c for c in ch.values if c in self.order), key=self.order.__getitem__)
                )
            groups[cols].append((k, ch))
        total.skipped = len(changes) - len(best)
        self._redirect(conn, best.values())
        kidx = {c: i for i, c in enumerate(self.key)}
        for cols, items in groups.items():
            a = self.applier(cols)
            a.prepare(conn, watermark=False)

            def rows(
                cols: tuple[str, ...] = cols, items: list[tuple[str, RowChange]] = items
            ) -> Iterable[tuple[Any, ...]]:
                for k, ch in items:
                    if wm >= 0 and ch.position < wm:
                        continue
                    if ch.values is None:
                        vals = [ch.key[kidx[c]] if c in kidx else None for c in cols]
                    else:
                        vals = [self._value(c, ch.values.get(c)) for c in cols]
                    unavail = sorted(ch.unavailable & set(cols)) or None
                    yield (*vals, ch.position, ch.values is None, k, unavail)

            r = a.apply_rows(conn, rows(), len(items), wm, replay=replay)
            total.applied += r.applied
            total.deleted += r.deleted
            total.skipped += r.skipped
            total.toast_missing.extend(r.toast_missing)
        return total

    def _redirect(self, conn: psycopg.Connection, changes: Iterable[RowChange]) -> None:
        if not self.redirects:
            return
        from crossfade.sync.sinks.dedup import resolve

        rows = [ch for ch in changes if ch.values is not None]
        for col, parent in self.redirects:
            survivors = resolve(
                conn,
                self.bk,
                parent,
                [ch.values[col] for ch in rows if ch.values and ch.values.get(col) is not None],
            )
            for ch in rows:
                assert ch.values is not None
                v = ch.values.get(col)
                s = survivors.get(key_text([v])) if v is not None else None
                if s is not None and s[0] != jsonable(v):
                    ch.values = {**ch.values, col: s[0]}

    def truncate(self, conn: psycopg.Connection, pos: int, reason: str) -> int:
        a = self.applier()
        a.prepare(conn, watermark=False)
        return a.truncate(conn, pos, reason)

    def take_moved(self) -> list[str]:
        """Parent values whose survivor changed in the last apply (only dedup targets have any)."""
        return []


@dataclass(slots=True)
class _Step:
    """One source key's change on its way through :meth:`MappedSource.process`."""

    event: ChangeEvent
    entry: str
    key_row: dict[str, Any]
    held: Held
    prev: str | None
    out: Mapped | Rejected | Filtered | None = None


class MappedSource:
    """One mapped source table: its events -> outcomes -> target changes and ledger rows."""

    def __init__(
        self,
        mapper: Mapper,
        source: str,
        pg_types: Mapping[str, str],
        writers: Mapping[str, TargetWriter],
        bookkeeping_schema: str,
        parent_index: Mapping[tuple[str, str], list[str]] | None = None,
    ) -> None:
        self.mapper = mapper
        self.source = source
        self.pg_types = dict(pg_types)
        self.writers = writers
        self.targets = [t.table for t in mapper.table(source).targets]
        self.pk = mapper.source_keys.get(source) or []
        if not self.pk:
            raise ConfigError(
                f"mapped source table {source} has no primary key",
                "give it one, or leave it unmapped",
            )
        self.bk_name = bookkeeping_schema
        self.bk = sql.Identifier(bookkeeping_schema)
        self.ref_rules = children.ref_rules(mapper, source)
        """This table's ``references`` rules: it is a child; its events are kept in the ledger."""
        referenced = children.referenced_columns(mapper)
        self.parent_cols = {t: sorted(referenced[t]) for t in self.targets if t in referenced}
        """Targets of this table that children refer to -> the columns they refer to."""
        self.parent_index = parent_index or {}
        self.left = children.ParentChanges()
        """Parents a truncate removed (:meth:`take_left`)."""

    def entry_of(self, e: ChangeEvent) -> tuple[str, list[Any], dict[str, Any]]:
        k = event_key(e, self.pg_types)
        values = [k.get(c) for c in self.pk]
        return key_text(values), [jsonable(v) for v in values], k

    def process(
        self,
        conn: psycopg.Connection,
        events: list[ChangeEvent],
        origins: Mapping[tuple[str, str, int], Origin],
        parents: TargetParents | None,
        *,
        replay: bool = False,
        rerun: bool = False,
        expired: frozenset[str] = frozenset(),
        refused: Mapping[str, str] | None = None,
    ) -> MappedResult:
        """Map and apply c/u/r/d events of this source table inside the caller's transaction.

        ``origins``: (source table, raw key id, position) -> where the event was read (dead
        letters and children keep it; snapshot rows of two tables share a position and a key).
        ``replay``: a rewind's replay; ``rerun``: a held record re-run (deferral retry, a parent
        that changed, dlq replay); both pass at the position the ledger already holds.
        ``expired``: entries whose deferral window has ended (a still-missing parent
        dead-letters them). ``refused``: entries the target refused -> why (dead letters of rule
        ``target``, :mod:`crossfade.sync.refused`). :attr:`MappedResult.parent_changes` says
        which parents this changed (the caller re-runs their children, :mod:`crossfade.sync.children`)."""
        res = MappedResult()
        if not events:
            return res
        steps = self._steps(conn, events, origins, parents, res, again=replay or rerun)
        for st in steps:
            why = refused.get(st.entry) if refused else None
            if why is not None and isinstance(st.out, Mapped):
                fail = Failure(RULE, RULE, why, target=", ".join(self.targets))
                st.out = Rejected(self.source, None, (fail,), st.out.rows)
        waiting = [
            f
            for st in steps
            if isinstance(st.out, Rejected) and st.out.deferrable
            for f in st.out.failures
        ]
        states = (
            children.parent_states(conn, self.bk_name, self.parent_index, waiting, key_text)
            if waiting
            else {}
        )
        changes: dict[str, list[RowChange]] = defaultdict(list)
        held: list[Held] = []
        refs: list[tuple[str, children.RefRule, str]] = []
        for st in steps:
            self._decide(st, states, expired, changes, res, refs)
            res.by_outcome[st.held.outcome] += 1
            res.outcomes[st.entry] = (st.held.outcome, st.held.rule)
            held.append(st.held)
            self._note_parent_change(st, res)
        write_ledger(conn, self.bk_name, held)
        if self.ref_rules:
            children.write_refs(conn, self.bk_name, self.source, [st.entry for st in steps], refs)
        # a re-run passes what its own earlier outcome wrote at the same position (a tombstone)
        self._apply_targets(conn, changes, res, replay=replay or rerun)
        if parents is not None and res.parent_changes:
            parents.forget(res.parent_changes)
        res.filtered = res.by_outcome["filtered"]
        res.deferred = res.by_outcome["deferred"]
        return res

    def _steps(
        self,
        conn: psycopg.Connection,
        events: list[ChangeEvent],
        origins: Mapping[tuple[str, str, int], Origin],
        parents: TargetParents | None,
        res: MappedResult,
        *,
        again: bool,
    ) -> list[_Step]:
        """One step per key (its newest change) that the ledger lets through, mapped.
        ``again``: a replay or re-run, which passes at the position the ledger holds."""
        survivors = collapse(events)
        res.skipped = len(events) - len(survivors)
        keyed = [(e, *self.entry_of(e)) for e in survivors]
        stored = ledger_positions(conn, self.bk_name, self.source, [k for _, k, _, _ in keyed])
        steps: list[_Step] = []
        todo: list[tuple[_Step, dict[str, Any], frozenset[str]]] = []
        for e, entry, skey, key_row in keyed:
            have = stored.get(entry)
            if have is not None and (e.position < have[0] or (e.position == have[0] and not again)):
                res.skipped += 1
                continue
            origin = origins.get((e.table, event_key_id(e), e.position))
            h = Held(self.source, entry, e.position, "mapped", skey, origin=origin)
            h.keep_origin = bool(self.ref_rules)
            st = _Step(e, entry, key_row, h, have[1] if have else None)
            if have is not None and have[1] == "dead_letter":
                h.prev_rule = have[2]
            if not e.is_delete:
                todo.append((st, *event_row(e, self.pg_types)))
            steps.append(st)

        def map_one(t: tuple[_Step, dict[str, Any], frozenset[str]], p: Any) -> Any:
            return self.mapper.map_row(self.source, t[1], parents=p, unavailable=t[2])

        # the batch's parents are looked up together (TargetParents.map_batch), not row by row
        outs = parents.map_batch(todo, map_one) if parents is not None else None
        for i, t in enumerate(todo):
            t[0].out = outs[i] if outs is not None else map_one(t, None)
        return steps

    def _apply_targets(
        self,
        conn: psycopg.Connection,
        changes: Mapping[str, list[RowChange]],
        res: MappedResult,
        *,
        replay: bool,
    ) -> None:
        """Write the target rows of the decided changes, target by target; parents whose
        survivor moved (dedup) are noted for their children (locked by the caller's
        :meth:`~crossfade.sync.sinks.mapped.MappedTables.follow_parents`)."""
        for target in self.targets:
            w = self.writers[target]
            r = w.apply(conn, changes.get(target, []), replay=replay)
            res.applied += r.applied
            res.deleted += r.deleted
            res.toast_missing.extend(r.toast_missing)
            moved = children.ParentChanges()
            for value in w.take_moved():  # members whose survivor changed (dedup)
                moved.add(target, value)
            res.parent_changes.update(moved)

    def _decide(
        self,
        st: _Step,
        states: Mapping[tuple[str, str, str], children.ParentState],
        expired: frozenset[str],
        changes: dict[str, list[RowChange]],
        res: MappedResult,
        refs: list[tuple[str, children.RefRule, str]],
    ) -> None:
        """The outcome of one change: target changes, the ledger row, the child's references."""
        e, h, out = st.event, st.held, st.out
        rows: tuple[TargetRow, ...] = ()
        if out is None:
            h.outcome = "deleted"
            self._delete_targets(changes, st.key_row, e.position)
            return
        if isinstance(out, Filtered):
            h.outcome, h.rule, h.reason = "filtered", out.filter, out.reason
            res.filters[out.filter] += 1
            self._delete_targets(changes, st.key_row, e.position)
            return
        if isinstance(out, Mapped):
            rows = out.rows
        else:
            h.rule, h.reason = out.rule, out.reason
            h.failures = [f.as_dict() for f in out.failures]
            rows = out.rows
            h.outcome, why = (
                self._parent_outcome(st, out, states, st.entry in expired)
                if out.deferrable
                else ("dead_letter", None)
            )
            if why is not None:
                h.reason = why
            if h.outcome == "deferred":
                h.window_s = max(f.window_s for f in out.failures)
            if h.outcome != "mapped":  # kept children apply their rows below
                if h.outcome != "deferred" or st.prev != "deferred":
                    self._delete_targets(changes, st.key_row, e.position)
                if h.outcome == "dead_letter" and not (
                    st.prev == "dead_letter" and h.prev_rule == h.rule
                ):
                    res.dead_letters.append(h)  # a dead letter re-run as it was is not new
                refs.extend(
                    (st.entry, r, key_text([v])) for r, v in children.row_refs(self.ref_rules, rows)
                )
                return
        for tr in rows:
            if tr.key is None:
                raise ConfigError(
                    f"target {tr.table} of {self.source} has no known key",
                    "set `key:` in the mapping",
                )
            changes[tr.table].append(RowChange(tr.key, tr.values, e.position, tr.unavailable))
        refs.extend(
            (st.entry, r, key_text([v])) for r, v in children.row_refs(self.ref_rules, rows)
        )

    def _parent_outcome(
        self,
        st: _Step,
        out: Rejected,
        states: Mapping[tuple[str, str, str], children.ParentState],
        expired: bool,
    ) -> tuple[str, str | None]:
        """(outcome, reason) of a child whose only failures are missing parents.

        Waits (``deferred``) while a parent may still come; a parent known to be filtered or
        dead-lettered decides at once, one deleted at the source when the window ends (its
        children's own deletes are usually in flight through their topic). The rules'
        ``on_parent_left`` says what a known-gone parent does to the child."""
        gone: list[str] = []
        bad = False
        for f in out.failures:
            assert f.parent is not None
            ps = states.get((f.parent[0], f.parent[1], key_text([f.value])))
            if ps is not None and ps.outcome in children.GONE:
                gone.append(f"{f.rule}: its parent {ps.describe()}")
                bad = bad or ps.outcome != "deleted"
        policies = {f.on_parent_left for f in out.failures}
        # several rules disagree: the strictest wins
        policy = (
            "dead_letter"
            if "dead_letter" in policies
            else "delete"
            if "delete" in policies
            else "keep"
        )
        if policy == "keep" and st.prev in children.PRESENT:
            return "mapped", None  # kept as it is (its own change still applies)
        if gone and policy == "delete":
            return "parent_left", "parent left: " + "; ".join(gone)
        if gone and (bad or expired):
            return "dead_letter", "parent left: " + "; ".join(gone)
        if expired:
            return "dead_letter", f"parent did not arrive within its window: {out.reason}"
        return "deferred", None

    def _note_parent_change(self, st: _Step, res: MappedResult) -> None:
        """A parent row that arrived in or left the target (or whose fate changed): its children
        must be mapped again."""
        if not self.parent_cols:
            return
        now = "mapped" if st.held.outcome == "replayed" else st.held.outcome
        before = "mapped" if st.prev == "replayed" else st.prev
        if now == before:
            return
        if isinstance(st.out, Mapped):
            for tr in st.out.rows:
                for col in self.parent_cols.get(tr.table, []):
                    v = tr.values.get(col)
                    if v is not None:
                        res.parent_changes.add(tr.table, key_text([v]))
            return
        for table, tkey in self.mapper.map_key(self.source, st.key_row):
            t = next(t for t in self.mapper.table(self.source).targets if t.table == table)
            for col in self.parent_cols.get(table, []):
                if t.key is not None and col in t.key:
                    res.parent_changes.add(table, key_text([tkey[t.key.index(col)]]))

    def take_left(self) -> children.ParentChanges:
        """Parents the last truncates removed, whose children must be mapped again."""
        out, self.left = self.left, children.ParentChanges()
        return out

    def _delete_targets(
        self, changes: dict[str, list[RowChange]], key_row: Mapping[str, Any], pos: int
    ) -> None:
        for target, tkey in self.mapper.map_key(self.source, key_row):
            changes[target].append(RowChange(tkey, None, pos))

    def truncate(self, conn: psycopg.Connection, pos: int, reason: str) -> int:
        shared = [t for t in self.targets if len(self.mapper.sources_of(t)) > 1]
        if shared:
            raise SchemaMismatch(
                f"{reason} of {self.source}, whose target {shared[0]} also holds rows of "
                f"{', '.join(s for s in self.mapper.sources_of(shared[0]) if s != self.source)}: crossfade cannot tell them apart",
                f"delete the rows of {self.source} from {shared[0]} by hand, then restart sync",
            )
        n = sum(self.writers[t].truncate(conn, pos, reason) for t in self.targets)
        # parents removed without a change of their own (a TRUNCATE, or a re-snapshot's sweep)
        # that children still refer to: their children are mapped again like those of any
        # parent that left
        from crossfade.sync.sinks.dedup import DedupWriter

        for target, cols in self.parent_cols.items():
            w = self.writers[target]
            for col in cols:
                for value in orphaned_parent_values(
                    conn,
                    self.bk_name,
                    target,
                    col,
                    w.shape.column(col).type_sql,
                    dedup=isinstance(w, DedupWriter),
                ):
                    self.left.add(target, value)
        forget_below(conn, self.bk_name, self.source, pos)
        return n


def ensure_position_column(conn: psycopg.Connection, table: str) -> None:
    """Mapped target tables get ``_cf_pos`` too (the guard of DESIGN decision 2)."""
    schema, name = table.split(".", 1)
    conn.execute(
        sql.SQL("ALTER TABLE {}.{} ADD COLUMN IF NOT EXISTS {} numeric").format(
            sql.Identifier(schema), sql.Identifier(name), sql.Identifier(POS_COLUMN)
        )
    )


def build_mapped(
    mapper: Mapper, report: Any, conn: psycopg.Connection, bookkeeping_schema: str
) -> tuple[dict[str, MappedSource], dict[str, TargetWriter], dict[str, TableShape]]:
    """The :class:`MappedSource` of every mapped (non-identity) source table, their target
    writers, and the shapes of all target tables (for :class:`~crossfade.sync.parents.TargetParents`)."""
    sources = [s for s, ct in mapper.tables.items() if not ct.identity]
    from crossfade.sync.sinks import dedup

    writers: dict[str, Any] = {}
    shapes: dict[str, TableShape] = {}
    # dedup_members, crosswalk and child_refs: the store's DDL (dlq replay builds this too)
    ensure_schema(conn, bookkeeping_schema)
    with conn.transaction():  # several workers starting at once: one creates, the others wait
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('crossfade.bookkeeping'))")
        for table in mapper.target_tables():
            ensure_position_column(conn, table)
    for table in mapper.target_tables():
        found = read_shape(conn, table)
        if found is None:
            raise ConfigError(
                f"target table {table} (in the mapping) does not exist",
                "create it in the new database",
            )
        shapes[table] = found
    for s in sources:
        for t in mapper.table(s).targets:
            if t.table in writers:
                continue
            shape = shapes[t.table]
            produced = tuple(c.name for c in t.columns)
            if t.copy_columns:
                produced = tuple(c.name for c in shape.columns)
            assert t.key is not None
            spec = mapper.config.dedup.get(t.table)
            if spec is not None:
                writers[t.table] = dedup.DedupWriter(
                    shape,
                    tuple(t.key),
                    produced,
                    spec,
                    mapper,
                    bookkeeping_schema,
                )
            else:
                w = TargetWriter(shape, tuple(t.key), produced, bookkeeping_schema)
                for col, r, _checks in t.rules:
                    ref = r.reference if r is not None else None
                    if ref is not None and ref.table in mapper.config.dedup:
                        w.redirects.append((col, ref.table))
                writers[t.table] = w
    index = children.parent_entries(mapper)
    out = {
        s: MappedSource(mapper, s, report.pg_types(s), writers, bookkeeping_schema, index)
        for s in sources
    }
    return out, writers, shapes
