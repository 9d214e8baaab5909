"""The parents a mapped child refers to, looked up in the target inside the batch transaction
(:class:`TargetParents`, the :class:`~crossfade.mapping.engine.ParentKeys` of a batch)."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from crossfade.catalog import TableShape, uncut
from crossfade.sync import children
from crossfade.sync.key_text import key_text
from crossfade.target.store import share_ledger_states, share_member, share_survivors

T = TypeVar("T")
R = TypeVar("R")
PKey = tuple[str, str, str]
"""(table, column, key text of the value): one parent."""


class TargetParents:
    """:class:`~crossfade.mapping.engine.ParentKeys` over the target database, inside the batch
    transaction (so a parent applied earlier in the same batch counts). Found keys are cached for
    the batch (:meth:`forget` drops parents that changed); a missing one is asked again (it may
    arrive later in the batch).

    A parent found is locked until the batch commits (``FOR KEY SHARE`` on its row, ``FOR SHARE``
    on a member's crosswalk row): a worker removing that parent, or moving that member to another
    survivor, waits for this batch, then finds this child among the parent's children and maps it
    again (:mod:`crossfade.sync.children`). A parent not found is waited for once, in case a
    worker is bringing it in at this moment (:func:`~crossfade.sync.children.wait_for_parent`;
    in :meth:`map_batch`, a parent the ledger knows is waited for on its ledger rows instead).
    Without these a child could be written beside a parent that another worker changes at the
    same moment, and nobody would look at it again.

    :meth:`map_batch` asks for the parents of many rows at once (one statement per parent
    table and column, issue 22) with the same locks and the same answers."""

    def __init__(
        self,
        conn: psycopg.Connection,
        shapes: Mapping[str, TableShape],
        dedup: Mapping[str, tuple[str, ...]] | None = None,
        bookkeeping_schema: str = "crossfade",
        ledger_index: Mapping[tuple[str, str], Sequence[str]] | None = None,
    ) -> None:
        self.conn = conn
        self.shapes = shapes
        self.dedup = dict(dedup or {})
        """Deduplicated target -> its key: a merged member has no row but resolves in the crosswalk."""
        self.bk_name = bookkeeping_schema
        self.ledger_index = dict(ledger_index or {})
        """(parent table, column) -> the source tables whose ledger rows say where every such
        parent is (:func:`~crossfade.sync.children.ledger_parents`)."""
        self._found: set[PKey] = set()
        self._waited: set[PKey] = set()

    def forget(self, changes: children.ParentChanges) -> None:
        """Drop cached answers for parents whose state changed in this transaction."""
        for table, values in changes.values.items():
            self._found = {k for k in self._found if not (k[0] == table and k[2] in values)}
            self._waited = {k for k in self._waited if not (k[0] == table and k[2] in values)}

    def __call__(self, table: str, column: str, value: Any) -> bool | None:
        shape = self.shapes.get(table)
        if shape is None:
            return None
        k = (table, column, key_text([value]))
        if k in self._found:
            return True
        if self._exists(shape, k, value):
            return True
        if k in self._waited:
            return False
        # missing: wait for a transaction bringing this parent in that holds its lock
        # (children.lock_parents), then look again; one that takes the lock after us waits for
        # this batch and finds this child among the parent's children
        self._waited.add(k)
        children.wait_for_parent(self.conn, table, k[2])
        return self._exists(shape, k, value)

    def map_batch(self, items: Sequence[T], map_one: Callable[[T, Any], R]) -> list[R]:
        """``map_one(item, parents)`` for every item, the same outcomes as with ``self`` as the
        parents, in a few statements per batch instead of round trips per row: a first pass
        answers every parent not yet found "yes" and notes it; the noted parents are looked up
        and locked together (:meth:`lookup`); those not found and not yet waited for in this
        batch are waited for together (:func:`~crossfade.sync.children.wait_for_parents`) and
        looked up once more; the items that asked for a parent still missing are mapped again
        with those answering "no". Mapping is pure, so every item gets the outcome it would
        have had asking row by row."""
        noting = _Noting(self)
        outs: list[R] = []
        asked: list[set[PKey] | None] = []
        for item in items:
            noting.asked = None
            outs.append(map_one(item, noting))
            asked.append(noting.asked)
        missing = self.lookup(noting.pending)
        wait = {k: noting.pending[k] for k in missing if k not in self._waited}
        if wait:
            # as __call__: wait for a transaction bringing them in right now, then look again;
            # a parent whose ledger rows are there is waited for on them, not on its lock
            self._waited.update(wait)
            known = self._share_ledger_rows(wait)
            children.wait_for_parents(self.conn, [(k[0], k[2]) for k in wait if k not in known])
            missing -= set(wait) - self.lookup(wait)
        if missing:
            settled = _Settled(self, missing)
            for i, item in enumerate(items):
                a = asked[i]
                if a is not None and not a.isdisjoint(missing):
                    outs[i] = map_one(item, settled)
        return outs

    def _share_ledger_rows(self, keys: Iterable[PKey]) -> set[PKey]:
        """The parents among ``keys`` whose ledger rows (every source of
        :attr:`ledger_index`) are there, share-locked until this batch commits: a worker that
        brings such a parent in rewrites one of them, so it either committed before the lock
        (waited for here; the look that follows finds the parent) or waits for this batch and
        then finds its children (:func:`~crossfade.sync.children.ledger_parents`). Those need
        no wait on the parent's lock, which a load's batches hold on nearly every bucket."""
        want = {
            k: self.ledger_index[(k[0], k[1])] for k in keys if (k[0], k[1]) in self.ledger_index
        }
        if not want:
            return set()
        pairs = sorted({(s, k[2]) for k, srcs in want.items() for s in srcs})
        rows = share_ledger_states(
            self.conn, self.bk_name, [s for s, _e in pairs], [e for _s, e in pairs]
        )
        have = {(r[0], r[1]) for r in rows}
        return {k for k, srcs in want.items() if all((s, k[2]) in have for s in srcs)}

    def lookup(self, pending: Mapping[PKey, Any]) -> set[PKey]:
        """Look up these parents (key -> value) in one statement per parent table and column
        (crosswalk first for a deduplicated target's key); the found ones are locked (see the
        class) and cached. Returns the keys not found."""
        by: dict[tuple[str, str], dict[PKey, Any]] = defaultdict(dict)
        for k, v in pending.items():
            if k not in self._found:
                by[(k[0], k[1])][k] = v
        missing: set[PKey] = set()
        for (table, column), want in sorted(by.items()):
            if self.dedup.get(table) == (column,):
                members = share_survivors(
                    self.conn, self.bk_name, table, sorted(k[2] for k in want)
                )
                self._found.update(k for k in want if k[2] in members)
                want = {k: v for k, v in want.items() if k[2] not in members}
            if want:
                found = self._rows_exist(self.shapes[table], column, want)
                self._found.update(found)
                missing.update(k for k in want if k not in found)
        return missing

    def _rows_exist(self, shape: TableShape, column: str, want: Mapping[PKey, Any]) -> set[PKey]:
        """The keys of ``want`` that ``shape.column`` has, their rows ``FOR KEY SHARE``."""
        typ = uncut(shape.column(column).type_sql)  # a cut value would find another's row
        if typ.endswith("]"):  # an array key: unnest would take its elements apart
            return {k for k, v in want.items() if self._exists(shape, k, v)}
        stmt = sql.SQL(
            "SELECT w.i FROM unnest(CAST(%s AS {}[])) WITH ORDINALITY AS w(v, i) "
            "JOIN {}.{} AS p ON p.{} = w.v FOR KEY SHARE OF p"
        ).format(
            sql.SQL(typ),
            sql.Identifier(shape.schema),
            sql.Identifier(shape.name),
            sql.Identifier(column),
        )
        # one array per Python type (psycopg types a list by its elements), in a stable order
        groups: dict[type, list[tuple[PKey, Any]]] = defaultdict(list)
        for k, v in want.items():
            pv = json.dumps(v) if isinstance(v, dict | list) else v
            groups[type(pv)].append((k, pv))
        found: set[PKey] = set()
        for _t, pairs in sorted(groups.items(), key=lambda g: g[0].__name__):
            try:
                pairs.sort(key=lambda p: p[1])
            except TypeError:
                pairs.sort(key=lambda p: p[0][2])
            rows = self.conn.execute(stmt, ([v for _k, v in pairs],)).fetchall()
            found.update(pairs[r[0] - 1][0] for r in rows)
        return found

    def _exists(self, shape: TableShape, k: PKey, value: Any) -> bool:
        table, column, vt = k
        if self.dedup.get(table) == (column,) and share_member(self.conn, self.bk_name, table, vt):
            self._found.add(k)
            return True
        typ = uncut(shape.column(column).type_sql)
        row = self.conn.execute(
            sql.SQL("SELECT 1 FROM {}.{} WHERE {} = CAST(%s AS {}) LIMIT 1 FOR KEY SHARE").format(
                sql.Identifier(shape.schema),
                sql.Identifier(shape.name),
                sql.Identifier(column),
                sql.SQL(typ),
            ),
            (value if not isinstance(value, dict | list) else json.dumps(value),),
        ).fetchone()
        ok = row is not None
        if ok:
            self._found.add(k)
        return ok


def _key(parents: TargetParents, table: str, column: str, value: Any) -> PKey | None:
    """The parent a mapping asks for, None for a table the target does not have."""
    return (table, column, key_text([value])) if table in parents.shapes else None


class _Noting:
    """The first pass of :meth:`TargetParents.map_batch`: a parent found earlier in the batch
    is there; any other is noted and answered "yes" for now."""

    def __init__(self, parents: TargetParents) -> None:
        self.parents = parents
        self.pending: dict[PKey, Any] = {}
        self.asked: set[PKey] | None = None
        """The parents the current item asked for that were not found before."""

    def __call__(self, table: str, column: str, value: Any) -> bool | None:
        k = _key(self.parents, table, column, value)
        if k is None:
            return None
        if k in self.parents._found:
            return True
        self.pending.setdefault(k, value)
        if self.asked is None:
            self.asked = set()
        self.asked.add(k)
        return True


def make_parents(
    conn: psycopg.Connection,
    shapes: Mapping[str, TableShape],
    writers: Mapping[str, Any],
    bookkeeping_schema: str,
    ledger_index: Mapping[tuple[str, str], Sequence[str]] | None = None,
) -> TargetParents:
    """The :class:`TargetParents` of a batch (deduplicated targets answer through the crosswalk)."""
    from crossfade.sync.sinks.dedup import DedupWriter

    dedup = {t: w.key for t, w in writers.items() if isinstance(w, DedupWriter)}
    return TargetParents(conn, shapes, dedup, bookkeeping_schema, ledger_index)


class _Settled:
    """The second pass of :meth:`TargetParents.map_batch`: the batch's parents are settled,
    found (locked) or missing after the wait."""

    def __init__(self, parents: TargetParents, missing: set[PKey]) -> None:
        self.parents = parents
        self.missing = missing

    def __call__(self, table: str, column: str, value: Any) -> bool | None:
        k = _key(self.parents, table, column, value)
        if k is None:
            return None
        if k in self.missing:
            return False
        return self.parents(table, column, value)  # found: cached
