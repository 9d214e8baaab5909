"""Verify of mapped targets inside the write freeze: only the target keys changed since a full verify.

A full verify (:func:`crossfade.verify.mapped.run_mapped`, the cutover's ``verify_live``) found
every mapped target equal to the mapping of one legacy snapshot, except the keys it left
unsettled. Every expected row is a function of a few legacy rows (the mapping is pure) and of
whether the parent rows its ``references`` rules name exist. So inside the freeze, for each mapped
target, only these *affected* target keys can differ (:class:`Delta`):

* the target rows written since the base's target snapshot (their ``xmin``: sync's upserts, and
  anything written by hand);
* the keys the legacy rows written since the base's legacy snapshot map to (every source of the
  target; a row now filtered or rejected counts by the key it maps to: its row must be gone);
* the keys of the ledger entries written since (:func:`crossfade.target.store.ledger.entries_written_since`:
  a delete sync applied leaves its entry there, the legacy row gone);
* the keys (and ledger entries) the full verify left unsettled;
* and their closure: the children of an affected parent key (legacy child rows whose reference
  column holds one of its values, old or new, and the children sync recorded in
  ``child_refs``), down every level. The parent rows a child's reference needs are read and
  mapped on demand (:meth:`Delta.__call__`, the :class:`~crossfade.mapping.engine.ParentKeys`
  the mapper asks), with their own parents, as the full pass's key sets answer.

Each affected key's expected row is computed from the legacy rows that make it (found through
the target key, whose columns are plain copies of source columns: the mapping's inverse is a
lookup), read at one repeatable-read snapshot, and compared with the target's row for that key
only (:func:`crossfade.verify.mapped.compare_expected` with ``only``). The ledger outcomes of the
entries involved are compared with the mapping's (the accounting of the changed entries). A row
the mapping passes but the target refused (a dead letter of rule ``target`` in the ledger now,
:mod:`crossfade.sync.refused`) is rejected, as the full verify counts it (:meth:`Delta.outcome`).
Deletes leave no ``xmin`` in legacy: a lost delete keeps its ledger entry and its target row, so
each source table's legacy count must equal its ledger's accounted rows, and each target's rows
the mapped entries of its sources (the ``row_counts`` gate's figures); when they do not add up
the target is compared in full.

Deduplicated targets (golden records): the affected members are closed over shared block keys
and the full verify's groups, regrouped with the full pass's code and compared by their keys
(a golden record, a member alone, none for a merged member); a child's reference goes to the
survivor of its member, and every child of a regrouped member is affected
(:mod:`crossfade.verify.dedup_delta`). The row counts of a deduplicated target allow for its
merged members.

A target is compared in full (:attr:`MappedDelta.full` says why) when its delta cannot be
computed safely: a target key or a reference column computed by transforms (no inverse), a
reference to a parent column that is not its key, ``on_parent_left: keep``, references in a
cycle, counts that do not add up, a lookup that fails, or more affected keys than
``max_fraction`` of its rows; a deduplicated target whose groups the full verify did not leave
(or had blocks too large to compare pairwise), that refers to a deduplicated target itself, or
whose members to regroup pass that limit or form a block too large. A target sharing a legacy
table with one compared in full is compared in full too (the full pass compares every target of
the tables it reads), and so are the parents and children of one.
"""

from __future__ import annotations

import itertools
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from crossfade.catalog import TableShape, read_shape, written_since
from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import ConfigError
from crossfade.mapping.audit import prepare, read_only, tracked_references
from crossfade.mapping.engine import (
    Failure,
    Filtered,
    KeySets,
    Mapped,
    Mapper,
    Outcome,
    Rejected,
)
from crossfade.sync.refused import RULE as REFUSED_RULE
from crossfade.target.store.children import children_of_values
from crossfade.target.store.ledger import (
    HELD_OUT,
    dead_letters_of_rule,
    entries_written_since,
    ledger_counts,
    ledger_positions,
)
from crossfade.verify.dedup_delta import DedupDelta, dedup_why, rows_problem
from crossfade.verify.delta import DeltaBase, Unsafe
from crossfade.verify.delta import norm_key as _norm
from crossfade.verify.delta_plan import (
    cast_in,
    hashable,
    plain_column,
    references_of,
    rel,
    spread,
    target_of,
    why_full,
)
from crossfade.verify.expected import Expected, Key, rows_of
from crossfade.verify.mapped import (
    MappedRun,
    SourceAccount,
    TargetResult,
    compare_expected,
    redirected,
    redirects,
    targets_of,
)

_ACCOUNTED = ("mapped", "replayed", "dead_letter", "filtered", "deferred", "parent_left")
DEFAULT_MAX_FRACTION = 0.2
"""A target with more affected keys than this fraction of its rows is compared in full."""
_seq = itertools.count()
_REFUSED = Failure(REFUSED_RULE, "target", "the target refused the row (a dead letter)")
"""Why a row the mapping passes is rejected all the same (:meth:`Delta.outcome`)."""


def ledger_rows(accounted: dict[str, dict[str, int]], source: str) -> int:
    """The rows of ``source`` sync's ledger accounts for (``accounted``: :func:`ledger_counts`)."""
    return sum(accounted.get(source, {}).get(o, 0) for o in _ACCOUNTED)


@dataclass
class MappedDelta:
    """What :func:`run_delta` found: the targets it compared by their affected keys (``run``,
    shaped as a full run's, its accounts restricted to the entries involved), and the targets
    that must be compared in full, with the reason."""

    run: MappedRun
    full: dict[str, str] = field(default_factory=dict)
    compared: dict[str, int] = field(default_factory=dict)
    """Per target compared by delta: the keys compared."""
    compare_seconds: float = 0.0
    sources: dict[str, list[str]] = field(default_factory=dict)
    """Per target (of every kind), its legacy tables."""


class Delta:
    """One delta: the legacy rows read (at one repeatable-read snapshot) and their outcomes, the
    affected keys per target, and the parent checks (it is the mapper's ``parents``)."""

    def __init__(
        self, settings: Settings, mapper: Mapper, src: Any, tgt: Any, targets: list[str]
    ) -> None:
        self.settings, self.mapper, self.src, self.tgt = settings, mapper, src, tgt
        self.bk = settings.sync.bookkeeping_schema
        self.targets = targets
        self.sources = list(dict.fromkeys(s for t in targets for s in mapper.sources_of(t)))
        self.src_shapes: dict[str, TableShape] = {}
        self.tgt_shapes: dict[str, TableShape] = {}
        self.tracked = set(tracked_references(mapper).sets)
        self.rows: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        """source -> entry -> legacy row (the rows that make affected keys)."""
        self.outcomes: dict[tuple[str, str], Outcome] = {}
        self.affected: dict[str, dict[Key, tuple[Any, ...]]] = {t: {} for t in targets}
        """target -> normalised key -> the key's values as found."""
        self.pending: dict[str, set[Key]] = defaultdict(set)
        self.entries: dict[str, set[str]] = defaultdict(set)
        """source -> ledger entries whose outcome is compared."""
        self.unsafe: dict[str, str] = {}
        self.legacy_counts: dict[str, int] = {}
        """source -> its rows at the legacy snapshot (:meth:`count`: the accounts and every
        target's counts ask for the same tables)."""
        self.refused: dict[str, set[str]] = {}
        """source -> its entries the target refused (:meth:`refused_of`)."""
        self._parents: dict[tuple[str, str, Key], bool | None] = {}
        self._asked: dict[tuple[str, str], set[Any]] = defaultdict(set)
        self._fetched: dict[tuple[str, str], dict[Any, list[dict[str, Any]]]] = defaultdict(dict)
        """(source, column) -> value -> its legacy rows, for the values asked (:meth:`prefetch`)."""
        self.children = {
            t: [
                (c, r[0], r[1], r[3])
                for c in targets
                for r in references_of(mapper, c)
                if r[2] == t
            ]
            for t in targets
        }
        """parent target -> (child target, child source, column, parent column) of the delta."""
        self.keys = {t: target_of(mapper, mapper.sources_of(t)[0], t).key or () for t in targets}
        self.redirects = redirects(mapper)
        self.crosswalk: dict[str, dict[Any, Any]] = {}
        """Deduplicated target -> member key value -> survivor key value (regrouped members)."""
        self.golden: dict[str, list[dict[str, Any]]] = {}
        """Deduplicated target -> the expected rows of its regrouped members."""
        self.merged: dict[str, int] = {}
        """Deduplicated target -> its members merged into another's golden record, now."""
        self.expected_rows: dict[str, int] = {}
        """Deduplicated target -> its rows by sync's ledger less :attr:`merged`."""

    @staticmethod
    def shape_of(conn: Any, table: str) -> TableShape:
        shape = read_shape(conn, table)
        if shape is None:
            raise Unsafe(f"{table} does not exist")
        return shape

    # -- legacy rows ---------------------------------------------------------------------------
    def entry(self, source: str, row: dict[str, Any]) -> str:
        from crossfade.sync.key_text import key_text

        return key_text(row.get(c) for c in self.mapper.source_keys.get(source) or [])

    def lookup(
        self, source: str, cols: tuple[str, ...], values: list[tuple[Any, ...]]
    ) -> list[dict[str, Any]]:
        """Legacy rows of ``source`` whose ``cols`` equal one of ``values`` (each value by its
        text, cast to the column's type); a value that is not one of that type raises Unsafe."""
        values = [v for v in values if None not in v]
        if not values:
            return []
        if source not in self.src_shapes:
            self.src_shapes[source] = self.shape_of(self.src, source)
        unnest, row = cast_in(self.src_shapes[source], cols)
        q = sql.SQL("SELECT * FROM {} r WHERE ({}) IN (SELECT * FROM {})").format(
            rel(source), row, unnest
        )
        params = [[str(v[i]) for v in values] for i in range(len(cols))]
        try:
            with self.src.transaction():  # a savepoint: the snapshot survives a failed cast
                cur = self.src.execute(q, params)
                names = [d.name for d in cur.description or []]
                return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        except psycopg.DataError as exc:
            raise Unsafe(f"{source} cannot be looked up by {', '.join(cols)}: {exc}") from None

    def prefetch(self, source: str, rows: list[dict[str, Any]], depth: int = 0) -> None:
        """Read at once the parent rows the ``references`` rules of ``rows`` (of ``source``)
        will ask for (one query per parent table instead of one per value), and theirs."""
        if not rows or depth > 8:
            return
        for ct in self.mapper.table(source).targets:
            for col, r, _checks in ct.rules:
                ref = r.reference if r is not None else None
                sc = plain_column(ct, col) if ref is not None else None
                if ref is None or sc is None or (ref.table, ref.column) not in self.tracked:
                    continue
                values = {row[sc] for row in rows if hashable(row.get(sc))}
                for ps in self.mapper.sources_of(ref.table):
                    psc = plain_column(target_of(self.mapper, ps, ref.table), ref.column)
                    todo = [
                        v for v in values if psc is not None and v not in self._asked[(ps, psc)]
                    ]
                    if psc is None or not todo:
                        continue
                    found = self.lookup(ps, (psc,), [(v,) for v in todo])
                    self._asked[(ps, psc)].update(todo)
                    for p in found:
                        if hashable(p[psc]):
                            self._fetched[(ps, psc)].setdefault(p[psc], []).append(p)
                    self.prefetch(ps, found, depth + 1)

    def _prefetched(self, source: str, col: str, value: Any) -> list[dict[str, Any]] | None:
        """The rows :meth:`prefetch` read for ``value`` (equal as Python compares, as the key
        sets of the references rules do), or None when it did not ask for it."""
        if not hashable(value) or value not in self._asked[(source, col)]:
            return None
        return self._fetched[(source, col)].get(value, [])

    def outcome(self, source: str, row: dict[str, Any]) -> Outcome:
        """The mapping's outcome of a legacy row; a row it maps but the target refused (a dead
        letter of rule ``target`` in the ledger now, :mod:`crossfade.sync.refused`) is rejected,
        as the full verify counts it: a dead letter, not expected in the target."""
        e = (source, self.entry(source, row))
        if e not in self.outcomes:
            out = self.mapper.map_row(source, row, parents=self)
            if isinstance(out, Mapped) and e[1] in self.refused_of(source):
                out = Rejected(source, out.source_key, (_REFUSED,), out.rows)
            self.outcomes[e] = out
        return self.outcomes[e]

    def refused_of(self, source: str) -> set[str]:
        """The entries of ``source`` the target refused, read once per table."""
        if source not in self.refused:
            self.refused[source] = dead_letters_of_rule(self.tgt, self.bk, source, REFUSED_RULE)
        return self.refused[source]

    def __call__(self, table: str, column: str, value: Any) -> bool | None:
        """Whether the mapping makes a row of ``table`` with ``column`` = ``value`` (the parent
        key sets of the full pass): its legacy rows read and mapped, their own parents checked."""
        if (table, column) not in self.tracked:
            return None
        memo = (table, column, _norm([value]))
        if memo in self._parents:
            got = self._parents[memo]
            if got is None:  # asked again while answering it
                raise Unsafe(f"references form a cycle through {table}.{column}")
            return got
        self._parents[memo] = None
        found = False
        for s in self.mapper.sources_of(table):
            sc = plain_column(target_of(self.mapper, s, table), column)
            if sc is None:
                raise Unsafe(f"{table}.{column} is computed from {s}")
            rows = self._prefetched(s, sc, value)
            for row in self.lookup(s, (sc,), [(value,)]) if rows is None else rows:
                out = self.outcome(s, row)
                if not isinstance(out, Mapped):
                    continue
                for tr in out.rows:
                    if tr.table == table and column in tr.values:
                        seen = KeySets()
                        seen.add(table, column, tr.values[column])
                        found = found or bool(seen(table, column, value))
        self._parents[memo] = found
        return found

    # -- the affected keys ---------------------------------------------------------------------
    def add_key(self, target: str, key: tuple[Any, ...]) -> None:
        n = _norm(key)
        if target in self.affected and n not in self.affected[target]:
            self.affected[target][n] = tuple(key)
            self.pending[target].add(n)

    def add_row(self, source: str, row: dict[str, Any]) -> None:
        """A legacy row that makes (or no longer makes: filtered, rejected) affected keys."""
        e = self.entry(source, row)
        if e in self.rows[source]:
            return
        self.rows[source][e] = row
        self.entries[source].add(e)
        self.outcome(source, row)
        for t, k in self._keys_of(source, row):
            self.add_key(t, k)

    def add_rows(self, source: str, rows: list[dict[str, Any]]) -> None:
        self.prefetch(source, [r for r in rows if self.entry(source, r) not in self.rows[source]])
        for row in rows:
            self.add_row(source, row)

    def add_entry(self, source: str, entry: str) -> None:
        """A ledger entry to compare: the keys its source key maps to are affected (the legacy
        row, if it still exists, is then read through them)."""
        import json

        self.entries[source].add(entry)
        pk = self.mapper.source_keys.get(source) or []
        values = json.loads(entry)
        if not isinstance(values, list) or len(values) != len(pk):
            raise Unsafe(f"ledger entry {entry} of {source} is not a key of it")
        for t, k in self._keys_of(source, dict(zip(pk, values, strict=True))):
            self.add_key(t, k)

    def _keys_of(self, source: str, key: dict[str, Any]) -> list[tuple[str, tuple[Any, ...]]]:
        try:
            return self.mapper.map_key(source, key)
        except ConfigError as exc:
            raise Unsafe(f"the target keys of {source} are not known from its key: {exc}") from None

    def seed(self, base: DeltaBase, limit: dict[str, int]) -> None:
        """The keys written since ``base`` on either side, its ledger entries written since, and
        what the full verify left open. A legacy table whose changed rows take a target past
        its ``limit`` is not read further (that target goes to the full compare)."""
        snap_s, snap_t = base.snapshots["source"], base.snapshots["target"]
        for s in self.sources:
            mine = [t for t in targets_of(self.mapper, [s]) if t in self.affected]
            q = sql.SQL("SELECT * FROM {} r WHERE {}").format(rel(s), written_since(snap_s))
            with self.src.cursor(name=f"cf_delta_{next(_seq)}") as cur:
                cur.itersize = 2000
                cur.execute(q)
                names = [d.name for d in cur.description or []]
                while not all(t in self.unsafe for t in mine):
                    batch = [dict(zip(names, r, strict=True)) for r in cur.fetchmany(2000)]
                    if not batch:
                        break
                    try:
                        self.add_rows(s, batch)
                    except Unsafe as exc:
                        self.unsafe.update({t: str(exc) for t in mine if t not in self.unsafe})
                    for t in mine:
                        if len(self.affected[t]) > limit[t]:
                            self.unsafe.setdefault(t, f"more than {limit[t]} keys changed")
        for t in self.targets:
            keys = sql.SQL(", ").join(
                sql.SQL("r.{}").format(sql.Identifier(k)) for k in self.keys[t]
            )
            for k in self.tgt.execute(
                sql.SQL("SELECT {} FROM {} r WHERE {}").format(keys, rel(t), written_since(snap_t))
            ):
                self.add_key(t, tuple(k))
            for k in base.mapped_keys.get(t, set()):
                self.add_key(t, k)
        written = entries_written_since(self.tgt, self.bk, self.sources, snap_t)
        for s in self.sources:
            for e in written.get(s, set()) | base.mapped_entries.get(s, set()):
                self.add_entry(s, e)

    def close(self, limit: dict[str, int]) -> None:
        """Read the legacy rows of every affected key and add what they make affected (their
        children), until nothing new comes; a target whose closure fails or passes its
        ``limit`` of keys goes to :attr:`unsafe`."""
        while any(self.pending.values()):
            work = {t: ks for t, ks in self.pending.items() if ks}
            self.pending = defaultdict(set)
            for t, ks in work.items():
                if t in self.unsafe:
                    continue
                try:
                    vals = [self.affected[t][n] for n in ks]
                    for s in self.mapper.sources_of(t):
                        ct = target_of(self.mapper, s, t)
                        inv = tuple(plain_column(ct, k) or k for k in self.keys[t])
                        self.add_rows(s, self.lookup(s, inv, vals))
                    self.add_children(t, ks)
                except Unsafe as exc:
                    self.unsafe[t] = str(exc)
                if len(self.affected[t]) > limit[t] and t not in self.unsafe:
                    self.unsafe[t] = f"more than {limit[t]} keys changed"

    def parent_values(self, t: str, ks: set[Key], col: str) -> list[Any]:
        """The values of ``t``'s column ``col`` at keys ``ks``: as the mapping makes them now
        and as the target holds them (a child may refer to either)."""
        out: list[Any] = []
        for s in self.mapper.sources_of(t):
            for e in self.rows[s]:
                got = self.outcomes.get((s, e))
                if isinstance(got, Mapped):
                    out += [
                        tr.values.get(col)
                        for tr in got.rows
                        if tr.table == t and tr.key is not None and _norm(tr.key) in ks
                    ]
        keys = [self.affected[t][n] for n in ks]
        out += self.held(t, col, keys)
        if col in self.keys[t]:
            i = self.keys[t].index(col)
            out += [k[i] for k in keys]
        return [v for v in out if v is not None]

    def held(self, t: str, col: str, keys: list[tuple[Any, ...]]) -> list[Any]:
        """Column ``col`` of the target's rows of ``t`` at ``keys`` (those it holds)."""
        shape = self.tgt_shapes.get(t) or self.shape_of(self.tgt, t)
        self.tgt_shapes[t] = shape
        texts = [tuple(None if v is None else str(v) for v in k) for k in keys]
        held = rows_of(self.tgt, rel(t), shape, self.keys[t], [col], texts)
        return [r[0] for r in held.values() if r is not None]

    def add_children(self, t: str, ks: set[Key]) -> None:
        """The child rows of the delta's targets that refer to a value of an affected key of
        ``t``: found in legacy (their reference column) and in sync's ``child_refs``."""
        from crossfade.sync.key_text import key_text

        for child, cs, col, pcol in self.children.get(t, []):
            values = self.parent_values(t, ks, pcol)
            if not values:
                continue
            sc = plain_column(target_of(self.mapper, cs, child), col)
            assert sc is not None  # why_full refused it otherwise
            self.add_rows(cs, self.lookup(cs, (sc,), [(v,) for v in values]))
            texts = sorted({key_text([v]) for v in values})
            for s, e in children_of_values(self.tgt, self.bk, t, texts):
                if s in self.sources:
                    self.add_entry(s, e)

    # -- accounting, counts, comparison --------------------------------------------------------
    def count(self, conn: Any, table: str) -> int:
        """Rows of ``table``; a legacy table's counted once (one repeatable-read snapshot)."""
        if conn is self.src and table in self.legacy_counts:
            return self.legacy_counts[table]
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(rel(table))).fetchone()
        n = int(row[0]) if row else 0
        if conn is self.src:
            self.legacy_counts[table] = n
        return n

    def accounts(
        self, sources: list[str], accounted: dict[str, dict[str, int]]
    ) -> dict[str, SourceAccount]:
        """Per source, the mapping's and the ledger's outcomes of the entries involved only: a
        partial account, whose legacy count is checked against the rows the ledger accounts
        for (``accounted``, per source and outcome: :func:`ledger_counts`)."""
        out = {}
        for s in sources:
            acc = out[s] = SourceAccount(
                s,
                source_rows=self.count(self.src, s),
                ledger_rows=ledger_rows(accounted, s),
            )
            entries = sorted(self.entries[s])
            for e in entries:
                got = self.outcomes.get((s, e)) if e in self.rows[s] else None
                if isinstance(got, Filtered):
                    acc.filtered.add(e)
                elif isinstance(got, Rejected):
                    acc.rejected.add(e)
                elif isinstance(got, Mapped):
                    acc.mapped += 1
            for e, (_pos, outcome, _rule) in ledger_positions(
                self.tgt, self.bk, s, entries
            ).items():
                if outcome in HELD_OUT:
                    acc.ledger_dead.add(e)
                elif outcome == "filtered":
                    acc.ledger_filtered.add(e)
        return out

    def counts_problem(self, t: str, accounted: dict[str, dict[str, int]]) -> str | None:
        """Why the counts do not add up for ``t`` (a delete lost since the full verify leaves
        only this trace), or None."""
        mapped = 0
        for s in self.mapper.sources_of(t):
            a = accounted.get(s, {})
            n = ledger_rows(accounted, s)
            legacy = self.count(self.src, s)
            if legacy != n:
                return f"{s} has {legacy} legacy rows, sync's ledger accounts for {n}"
            mapped += a.get("mapped", 0) + a.get("replayed", 0)
        if t in self.golden:  # its rows are counted with the differences compared
            self.expected_rows[t] = mapped - self.merged[t]
            return None
        rows = self.count(self.tgt, t)
        if rows != mapped:
            return f"{t} has {rows} rows, sync's ledger mapped {mapped}"
        return None

    def columns(self, t: str, shape: TableShape) -> list[str]:
        """The target columns the mapping produces (as the full pass compares them)."""
        wanted = set(self.keys[t])
        for s in self.mapper.sources_of(t):
            ct = target_of(self.mapper, s, t)
            wanted |= {c.name for c in ct.columns}
            if ct.copy_columns:
                wanted |= {c.name for c in shape.columns}
        return [c.name for c in shape.columns if c.name in wanted]

    def expected_values(self, t: str) -> list[dict[str, Any]]:
        """The expected rows of ``t`` at its affected keys: the regrouped members' rows of a
        deduplicated target, else the mapped rows, references to survivors redirected."""
        if t in self.golden:
            return [
                v for v in self.golden[t] if _norm(v[k] for k in self.keys[t]) in self.affected[t]
            ]
        out = []
        for s in self.mapper.sources_of(t):
            for e in self.rows[s]:
                got = self.outcomes[(s, e)]
                if isinstance(got, Mapped):
                    out += [
                        redirected(tr.values, self.redirects.get(s, []), self.crosswalk)
                        for tr in got.rows
                        if tr.table == t
                        and tr.key is not None
                        and _norm(tr.key) in self.affected[t]
                    ]
        return out

    def compare(self, t: str) -> tuple[TargetResult, dict[Key, tuple[Any, ...] | None]]:
        """The expected rows of ``t``'s affected keys against the target's rows of those keys."""
        shape = self.tgt_shapes[t]
        key = self.keys[t]
        exp = Expected(self.settings, shape, key, self.columns(t, shape))
        res = TargetResult(t, self.mapper.sources_of(t))
        try:
            for values in self.expected_values(t):
                exp.write(values)
            exp.finish()
            only = sql.Identifier(f"cf_keys_{next(_seq)}")
            cast = sql.SQL(", ").join(
                sql.SQL("w.{0}::{1} AS {0}").format(
                    sql.Identifier(k), sql.SQL(shape.column(k).type_sql)
                )
                for k in key
            )
            arrays = sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in key)
            names = sql.SQL(", ").join(map(sql.Identifier, key))
            exp.conn.execute(
                sql.SQL(
                    "CREATE TEMP TABLE {} AS SELECT DISTINCT {} FROM unnest({}) AS w({})"
                ).format(only, cast, arrays, names),
                [[k[i] for k in self.affected[t]] for i in range(len(key))],
            )
            compare_expected(exp, res, only)
            expected = exp.rows_of(list(res.differing))
        finally:
            exp.close()
        return res, expected


def run_delta(
    settings: Settings,
    sources: list[str],
    base: DeltaBase,
    *,
    max_fraction: float = DEFAULT_MAX_FRACTION,
) -> MappedDelta:
    """The delta of the targets of ``sources`` since ``base`` (see the module's docstring): one
    repeatable-read snapshot of legacy, the target as it is now (frozen and fenced, in a
    cutover). Targets it cannot compare safely are named in :attr:`MappedDelta.full`."""
    t0 = time.monotonic()
    with read_only(settings) as src, connect(settings.target, "target") as tgt:
        mapper, _schema = prepare(settings, src, check_target=True)
        targets = targets_of(mapper, sources)
        reasons = {
            t: w
            for t in targets
            if (w := why_full(mapper, t) or dedup_why(mapper, base, t, targets))
        }
        full = spread(mapper, targets, reasons)
        d = Delta(settings, mapper, src, tgt, [t for t in targets if t not in full])
        try:
            for t in d.targets:
                d.tgt_shapes[t] = d.shape_of(tgt, t)
            limit = {t: max(1, int(max_fraction * d.count(tgt, t))) for t in d.targets}
            d.seed(base, limit)
            dedup = DedupDelta(d, base)
            dedup.seed()
            dedup.settle(limit)
        except Unsafe as exc:
            d.unsafe.update({t: str(exc) for t in d.targets if t not in d.unsafe})
        accounted = ledger_counts(tgt, d.bk).accounted
        for t in d.targets:
            why = d.unsafe.get(t) or d.counts_problem(t, accounted)
            if why is not None:
                full[t] = why
        full = spread(mapper, targets, full)
        c0 = time.monotonic()
        results, expected, compared = {}, {}, {}
        for t in sorted(d.targets, key=lambda t: t not in d.golden):  # deduplicated first
            if t not in full:
                results[t], expected[t] = d.compare(t)
                compared[t] = len(d.affected[t])
            if t in d.golden and t not in full and (why := rows_problem(d, t, results[t])):
                full = spread(mapper, targets, {**full, t: why})
        results = {t: r for t, r in results.items() if t not in full}
        c1 = time.monotonic()
        accounts = d.accounts(
            [s for s in d.sources if all(t not in full for t in targets_of(mapper, [s]))],
            accounted,
        )
        src.rollback()
        tgt.rollback()
    run = MappedRun(results, accounts, time.monotonic() - t0, expected)
    return MappedDelta(run, full, compared, c1 - c0, {t: mapper.sources_of(t) for t in targets})
