"""Parents and children of ``references`` rules in the live sync.

Changes of different tables travel in different topics, so sync sees a child and its parent in
no particular order, and a parent's later fate (deleted at the source, filtered, dead-lettered,
merged into a golden record by dedup, handed to another survivor) reaches sync long after its
children were written. This module keeps what it takes to put children right whatever the order:

* ``<bookkeeping>.child_refs``: per child source row (``child_source``, ``child_entry`` = its
  ledger entry) and reference column, the parent value it refers to *as written at the source*
  (for a deduplicated parent: the member's own key, never the survivor's). It is rewritten with
  every change of the child, and the child's change event is kept in the ledger with it, so the
  child can be mapped again at its own position at any time;
* :class:`ParentChanges`: the parent values whose state changed in a batch: a parent row that
  arrived or left the target, a member whose survivor changed (merge, split, survivor handover,
  survivor deleted or dead-lettered);
* :func:`children_to_rerun`: the ledger rows of the children of those parents, which the worker
  maps again in the same transaction (:mod:`crossfade.sync.worker`): a child now finds its parent
  (applied, pointing at the current survivor), or loses it (deferred, then a dead letter with the
  reason "parent left", or ``parent_left`` under ``on_parent_left: delete``);
* :func:`parent_states`: what the ledger knows of a missing parent (deleted, filtered,
  dead-lettered, deferred), so a child is not kept waiting for a parent that is known not to come.

Parents are identified by (target table, value text): ``key_text([value])`` of the referenced
column, which for a deduplicated target is the member key of the crosswalk.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from crossfade.mapping.engine import Failure, Mapper, TargetRow, reference_policy
from crossfade.target.store import (
    children_ledger_rows,
    replace_child_refs,
    share_ledger_states,
)

PRESENT = frozenset({"mapped", "replayed"})
"""Ledger outcomes of a source row whose target rows are in the target."""
GONE = frozenset({"deleted", "filtered", "dead_letter", "parent_left"})
"""Ledger outcomes of a source row known not to be in the target."""


@dataclass(frozen=True, slots=True)
class RefRule:
    """A ``references`` rule of a child target: ``target.column`` -> ``parent.parent_column``."""

    target: str
    column: str
    parent: str
    parent_column: str
    policy: str


@dataclass
class ParentChanges:
    """Parent values (target table -> value texts) whose state changed in this transaction."""

    values: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))

    def add(self, table: str, value_text: str) -> None:
        self.values[table].add(value_text)

    def update(self, other: ParentChanges) -> None:
        for t, vs in other.values.items():
            self.values[t] |= vs

    def __bool__(self) -> bool:
        return any(self.values.values())

    def pairs(self) -> list[tuple[str, str]]:
        return [(t, v) for t, vs in self.values.items() for v in sorted(vs)]


def ref_rules(mapper: Mapper, source: str) -> list[RefRule]:
    """The ``references`` rules of the targets ``source`` maps into."""
    out = []
    for t in mapper.table(source).targets:
        for col, r, _checks in t.rules:
            ref = r.reference if r is not None else None
            if ref is not None:
                out.append(
                    RefRule(
                        t.table,
                        col,
                        ref.table,
                        ref.column,
                        reference_policy(ref, mapper.config.defaults),
                    )
                )
    return out


def referenced_columns(mapper: Mapper) -> dict[str, set[str]]:
    """Parent target table -> the columns children refer to."""
    out: dict[str, set[str]] = defaultdict(set)
    for s in mapper.tables:
        for r in ref_rules(mapper, s):
            out[r.parent].add(r.parent_column)
    return out


def parent_entries(mapper: Mapper) -> dict[tuple[str, str], list[str]]:
    """(parent target, column) -> the source tables whose ledger entry of a parent is
    ``key_text([value])``: the column is the whole target key and renames the source's one-column
    primary key (the usual ``account_id: id``). Other parents have no known state (a child waits
    for them until its window ends)."""
    out: dict[tuple[str, str], list[str]] = defaultdict(list)
    for ptable, cols in referenced_columns(mapper).items():
        for col in cols:
            for s in mapper.sources_of(ptable):
                pk = mapper.source_keys.get(s) or []
                for t in mapper.table(s).targets:
                    if t.table != ptable or t.key != (col,) or len(pk) != 1:
                        continue
                    c = next((c for c in t.columns if c.name == col), None)
                    renamed = (
                        c is not None
                        and c.sources == (pk[0],)
                        and not c.spec.transforms
                        and c.spec.cast is None
                    ) or (c is None and col == pk[0])
                    if renamed:
                        out[(ptable, col)].append(s)
    return out


def ledger_parents(mapper: Mapper) -> dict[tuple[str, str], list[str]]:
    """:func:`parent_entries` of the parents every source of whose table is there: such a
    parent enters the target only through a change of one of those sources' rows, which
    rewrites that row's ledger entry. A worker that share-locks the parent's ledger rows
    (:meth:`~crossfade.sync.parents.TargetParents.map_batch`) then has the handshake without
    the parent's lock: a changer that wrote them first is waited for, one that writes them
    after waits for the worker's commit and then reads its child in ``child_refs``."""
    return {
        pc: srcs
        for pc, srcs in parent_entries(mapper).items()
        if set(srcs) == set(mapper.sources_of(pc[0]))
    }


def row_refs(rules: Iterable[RefRule], rows: Iterable[TargetRow]) -> list[tuple[RefRule, Any]]:
    """(rule, source value) of every reference a child's target rows hold (NULL refers to none)."""
    by_table = {r.table: r for r in rows}
    out = []
    for rule in rules:
        row = by_table.get(rule.target)
        if row is None:
            continue
        v = row.values.get(rule.column)
        if v is not None:
            out.append((rule, v))
    return out


def write_refs(
    conn: psycopg.Connection,
    schema: str,
    source: str,
    entries: list[str],
    refs: list[tuple[str, RefRule, str]],
) -> None:
    """Replace the child_refs of ``entries`` (child rows of ``source``) by ``refs``:
    (entry, rule, parent value text)."""
    if not entries:
        return
    replace_child_refs(
        conn,
        schema,
        source,
        entries,
        [(e, r.target, r.column, r.parent, v) for e, r, v in refs],
    )


@dataclass(frozen=True, slots=True)
class ParentState:
    """What the ledger says of a parent a child did not find."""

    source_table: str
    entry: str
    outcome: str
    rule: str | None

    def describe(self) -> str:
        where = f"{self.source_table} {self.entry}"
        if self.outcome == "deleted":
            return f"{where} was deleted at the source"
        if self.outcome == "filtered":
            return f"{where} is filtered ({self.rule})"
        if self.outcome == "dead_letter":
            return f"{where} is a dead letter ({self.rule})"
        if self.outcome == "parent_left":
            return f"{where} left with its own parent"
        return f"{where} is {self.outcome}"


def parent_states(
    conn: psycopg.Connection,
    schema: str,
    index: Mapping[tuple[str, str], list[str]],
    failures: Iterable[Failure],
    key_text: Any,
) -> dict[tuple[str, str, str], ParentState]:
    """(parent table, column, value text) -> the ledger state of that parent, for the
    ``references`` failures whose parent has a known ledger entry (see :func:`parent_entries`).
    Parents the ledger has never seen are absent.

    The parents' ledger rows stay share-locked until the caller commits: a worker bringing such
    a parent back (a filtered account reactivated, a dead letter fixed) waits, then finds this
    child among the parent's children; had it committed first, this reads its new state. Without
    the lock a child could be dead-lettered for a parent that came back at the same moment."""
    want: dict[tuple[str, str], list[tuple[str, str, str]]] = defaultdict(list)
    for f in failures:
        if f.parent is None:
            continue
        vt = key_text([f.value])
        for s in index.get(f.parent, []):
            want[(s, vt)].append((f.parent[0], f.parent[1], vt))
    if not want:
        return {}
    rows = share_ledger_states(conn, schema, [s for s, _e in want], [e for _s, e in want])
    out: dict[tuple[str, str, str], ParentState] = {}
    for s, e, outcome, rule in rows:
        for k in want.get((s, e), []):
            st = ParentState(s, e, outcome, rule)
            if k not in out or outcome in GONE:  # a parent of several sources: the known fate
                out[k] = st
    return out


PARENT_LOCKS = 1024
"""Advisory locks the parents' handshake spreads over (:func:`lock_parents`): a parent's lock is
one of these, chosen by the hash of (table, value text). One lock per parent made a batch hold as
many as it had parents missing or changed, and PostgreSQL's lock table (64 per connection by
default, shared) ran out: a 1M-row mapped load's sync retried ``out of shared memory`` forever
(issue 22). With buckets a transaction holds at most this many; two parents sharing a bucket only
make one worker wait for another's commit, which the handshake allows."""

_BUCKETS = (
    "(hashtextextended(k, 0) & "
    + str(PARENT_LOCKS - 1)
    + ")::int AS b FROM unnest(%b::text[]) AS k"
)
_LOCK = {
    shared: "SELECT "
    + fn
    + "(hashtext('crossfade.parent'), b) FROM (SELECT DISTINCT "
    + _BUCKETS
    + " ORDER BY b) AS s"
    for shared, fn in ((False, "pg_advisory_xact_lock"), (True, "pg_advisory_xact_lock_shared"))
}
"""The buckets of these keys, each once, in one order (ascending): two writers cannot wait for
each other on them. The two-int advisory lock space, apart from crossfade's other locks."""


def _lock_key(table: str, value_text: str) -> str:
    return f"crossfade.parent:{table}:{value_text}"


def _take(conn: psycopg.Connection, pairs: Iterable[tuple[str, str]], *, shared: bool) -> None:
    keys = [_lock_key(t, v) for t, v in pairs]
    if keys:
        conn.execute(_LOCK[shared], (keys,))


def lock_parents(conn: psycopg.Connection, changes: ParentChanges) -> None:
    """Take, until commit, the lock of every parent whose state this transaction changes.

    The handshake with :func:`wait_for_parent`: a worker that did not find a parent takes the
    parent's lock shared (waiting for a changer that holds it), then looks again. The changer
    takes it after its writes and just before it reads the parent's children
    (:meth:`~crossfade.sync.sinks.mapped.MappedTables.follow_parents`): if the worker took it
    first, the changer waits for the worker's commit and then finds its child in
    ``child_refs``; if the changer took it first, the worker waits for the changer's commit and
    then finds the parent. Either way no child is decided on a parent state that is about to
    change unseen. A parent's lock is its bucket's (:data:`PARENT_LOCKS`), taken in ascending
    order. A parent whose ledger rows are there (:func:`ledger_parents`) is waited for on them
    instead: every change that brings it in rewrites one of them before this lock."""
    _take(conn, changes.pairs(), shared=False)


def wait_for_parent(conn: psycopg.Connection, table: str, value_text: str) -> None:
    """Wait for a transaction changing this parent (:func:`lock_parents`) to end; the lock is
    shared and held until this transaction ends (see there)."""
    _take(conn, [(table, value_text)], shared=True)


def wait_for_parents(conn: psycopg.Connection, parents: Iterable[tuple[str, str]]) -> None:
    """:func:`wait_for_parent` for many (table, value text) at once, in one statement, in the
    order :func:`lock_parents` takes them."""
    _take(conn, parents, shared=True)


def children_to_rerun(
    conn: psycopg.Connection, schema: str, changes: ParentChanges
) -> list[tuple[Any, ...]]:
    """Ledger rows (source_table, entry, topic, partition, offset, key, value, headers, expired)
    of the children of the changed parents that must be mapped again: those in the target, those
    waiting (deferred, ``parent_left``) and dead letters whose only failures are references.
    Locks them (``FOR UPDATE``) so a concurrent change of the child waits for this transaction."""
    pairs = changes.pairs()
    if not pairs:
        return []
    return children_ledger_rows(conn, schema, [t for t, _v in pairs], [v for _t, v in pairs])
