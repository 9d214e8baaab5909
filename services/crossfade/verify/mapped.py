"""Verify for mapped tables: the legacy rows, mapped, against the target.

The mapping is a pure function of a row (:class:`~crossfade.mapping.engine.Mapper`), so the
expected target is computed from a repeatable-read snapshot of the legacy tables with the code
audit uses: every source row of every source of a target table (parents first, so ``references``
rules see the parent keys that will exist), filters and rules applied, duplicate groups merged
into golden records with the same :class:`~crossfade.mapping.dedup.Deduper` and children pointed
at survivors. The expected rows stream into a temporary table in the target database shaped like
the target (PostgreSQL's own types normalise both sides) and three set queries find the missing,
extra and different keys — memory stays bounded except for the keys ``references`` rules and
deduplication need.

Accounting: for each mapped source table the report says how many rows map, are rejected (and
must be dead letters, deferred, or out with their parent) and are filtered (and must be recorded
as such) — and compares that with sync's ledger; an account that does not close is a failure,
naming what to do.

Children follow the same rules as in sync (:mod:`crossfade.sync.children`): a child whose parent
is not mapped is rejected (sync holds it as deferred, dead-lettered or ``parent_left``), a child
of a deduplicated parent points at the survivor of its member's group, and under
``on_parent_left: keep`` a child sync kept when its parent left (the ledger says ``mapped``) is
expected in the target as it is there: its reference columns are not compared.

While sync runs, a difference may be in flight. :mod:`crossfade.verify.run` re-checks every
differing target key and every ledger entry whose outcome disagrees, around a fence, as it does an
identity table's rows: a run asked for them (:class:`Want`) returns their expected rows and
outcomes (:attr:`MappedRun.expected`, :attr:`MappedRun.outcomes`), computed from its own
repeatable-read snapshot of every source table, so parents and children, duplicate groups and
filtered rows are all seen as of one moment.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from crossfade.catalog import TableShape, read_shape
from crossfade.config import Settings
from crossfade.db import connect
from crossfade.events.model import SHIFT
from crossfade.mapping.audit import (
    key_columns,
    parents_first,
    prepare,
    read_only,
    stream_rows,
    tracked_references,
    with_parents,
)
from crossfade.mapping.dedup import Deduper
from crossfade.mapping.engine import Filtered, Mapper, Outcome, Rejected, TargetRow
from crossfade.sync.key_text import key_text
from crossfade.sync.refused import RULE as REFUSED_RULE
from crossfade.target.store import dead_letters_of_rule, held_entries
from crossfade.target.store.dedup import member_block_keys
from crossfade.target.store.ledger import ledger_positions
from crossfade.verify.delta import DedupBase
from crossfade.verify.expected import Expected, Key
from crossfade.verify.golden import dedup_base, golden_rows
from crossfade.verify.kept_rows import kept, kept_rows
from crossfade.verify.mapped_pool import mapped_rows, parallel_safe
from crossfade.verify.wal_bound import wal_position

EXAMPLES = 20
MAX_KEYS = 10_000
"""Differing keys kept per target table for the re-check (more are only counted)."""
_seq = itertools.count()

Prepared = tuple[str, list[tuple[tuple[str, str], Any]], dict[str, Any] | None, Key | None, Any]
"""A target row ready to take (:meth:`_Pass.prepared`): table, (key set, value)s children
check, values (None: not compared), key, blocking keys (deduplicated targets)."""


@dataclass
class Want:
    """What a re-check needs from a run besides its own differences: the expected rows of these
    target keys, and the outcome the mapping gives these ledger entries."""

    keys: dict[str, list[Key]] = field(default_factory=dict)
    entries: dict[str, set[str]] = field(default_factory=dict)


@dataclass
class SourceAccount:
    table: str
    source_rows: int = 0
    mapped: int = 0
    rejected: set[str] = field(default_factory=set)
    filtered: set[str] = field(default_factory=set)
    ledger_dead: set[str] = field(default_factory=set)
    ledger_filtered: set[str] = field(default_factory=set)
    ledger_rows: int | None = None
    """Set by a verify of the changes (:mod:`crossfade.verify.mapped_delta`): the rows sync's
    ledger accounts for in the whole table, the sets above being those of the entries involved
    only (a *partial* account): the legacy count is checked against it."""

    @property
    def partial(self) -> bool:
        return self.ledger_rows is not None

    @property
    def accounted(self) -> int:
        """What the legacy count must equal: mapped + rejected + filtered, or in a partial
        account the rows sync's ledger accounts for."""
        if self.ledger_rows is not None:
            return self.ledger_rows
        return self.mapped + len(self.rejected) + len(self.filtered)

    def outcome(self, entry: str) -> str:
        """What the mapping made of ``entry``: ``rejected``, ``filtered`` or ``mapped`` (which
        includes a key the source no longer has: neither needs a ledger entry that holds it)."""
        if entry in self.rejected:
            return "rejected"
        if entry in self.filtered:
            return "filtered"
        return "mapped"

    def disagreeing(self) -> set[str]:
        """Entries whose outcome under the mapping is not the one sync recorded in its ledger."""
        return (self.rejected ^ self.ledger_dead) | (self.filtered ^ self.ledger_filtered)

    @property
    def closes(self) -> bool:
        return (
            self.source_rows == self.accounted
            and self.rejected == self.ledger_dead
            and self.filtered == self.ledger_filtered
        )

    def problem(self) -> str | None:
        if self.closes:
            return None
        parts = []
        if self.source_rows != self.accounted:
            parts.append(f"{self.source_rows} legacy rows, {self.accounted} accounted for")
        if self.rejected - self.ledger_dead:
            parts.append(
                f"{len(self.rejected - self.ledger_dead)} row(s) the mapping rejects are not dead letters "
                f"(e.g. {sorted(self.rejected - self.ledger_dead)[:3]}; in flight, or sync has not seen them)"
            )
        if self.ledger_dead - self.rejected:
            parts.append(
                f"{len(self.ledger_dead - self.rejected)} dead letter(s) map now "
                f"(e.g. {sorted(self.ledger_dead - self.rejected)[:3]}): run `crossfade dlq replay`"
            )
        if self.filtered != self.ledger_filtered:
            parts.append(
                f"filtered rows differ from sync's record ({len(self.filtered)} by the mapping, "
                f"{len(self.ledger_filtered)} recorded)"
            )
        return f"{self.table}: " + "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "source_rows": self.source_rows,
            "mapped": self.mapped,
            "rejected": len(self.rejected),
            "filtered": len(self.filtered),
            "dead_letters": len(self.ledger_dead),
            "filtered_recorded": len(self.ledger_filtered),
            "closes": self.closes,
            # partial: the figures above are those of the entries a verify of the changes
            # compared; the legacy rows are checked against the ledger's (accounted)
            "partial": self.partial,
            "accounted": self.accounted,
        }


@dataclass
class TargetResult:
    table: str
    sources: list[str]
    expected_rows: int = 0
    target_rows: int = 0
    missing: list[list[Any]] = field(default_factory=list)
    extra: list[list[Any]] = field(default_factory=list)
    different: list[list[Any]] = field(default_factory=list)
    n_missing: int = 0
    n_extra: int = 0
    n_different: int = 0
    merged: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    key: tuple[str, ...] = ()
    cols: list[str] = field(default_factory=list)
    """The target columns compared (the expected rows', the key included)."""
    differing: dict[Key, str] = field(default_factory=dict)
    """Differing keys -> missing | extra | different (the first ``MAX_KEYS``)."""
    shape: TableShape | None = None

    @property
    def mismatched(self) -> int:
        return self.n_missing + self.n_extra + self.n_different

    @property
    def unchecked(self) -> int:
        return max(0, self.mismatched - len(self.differing))


@dataclass
class MappedRun:
    targets: dict[str, TargetResult]
    accounts: dict[str, SourceAccount]
    seconds: float = 0.0
    expected: dict[str, dict[Key, tuple[Any, ...] | None]] = field(default_factory=dict)
    """Per target, the expected row (:func:`canon`, in ``TargetResult.cols`` order) of each key
    that differs in this run or was wanted; None: the mapping expects no row there."""
    outcomes: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per source table, the mapping's outcome of each entry whose ledger outcome disagrees in
    this run, or that was wanted."""
    producers: dict[str, dict[Key, set[tuple[str, str]]]] = field(default_factory=dict)
    """Per target, the (source table, ledger entry) of the legacy rows that make each wanted
    key's expected row (every member of a golden record's group)."""
    before: int = 0
    """The legacy WAL position read just before this run's snapshot, once the transactions
    writing then had ended (:func:`crossfade.verify.wal_bound.wal_position`): a change below it is seen by the snapshot;
    0 when that could not be made sure (no change counts as seen)."""
    dedup: dict[str, DedupBase] = field(default_factory=dict)
    """Per deduplicated target, its groups (what the verify of the changes starts from)."""


def compare_expected(exp: Expected, res: TargetResult, only: sql.Composable | None = None) -> None:
    """Compare ``exp``'s rows with the target; ``only``: a relation of the target keys compared
    (the verify of the changes: the target's other rows are not looked at)."""
    I = sql.Identifier  # noqa: E741,N806
    tgt = exp.conn
    t = sql.SQL("{}.{}").format(I(exp.shape.schema), I(exp.shape.name))
    on = sql.SQL(" AND ").join(sql.SQL("e.{0} = t.{0}").format(I(k)) for k in exp.key)
    keys_e = sql.SQL(", ").join(sql.SQL("e.{}").format(I(k)) for k in exp.key)
    keys_t = sql.SQL(", ").join(sql.SQL("t.{}").format(I(k)) for k in exp.key)

    def col(alias: str, c: str) -> sql.Composable:
        x = sql.SQL("{}.{}").format(sql.SQL(alias), I(c))
        return sql.SQL("{}::jsonb").format(x) if c in exp.json_cols else x

    row_e = sql.SQL(", ").join(col("e", c) for c in exp.cols)
    row_t = sql.SQL(", ").join(col("t", c) for c in exp.cols)
    res.expected_rows = exp.rows
    res.target_rows = int(tgt.execute(sql.SQL("SELECT count(*) FROM {}").format(t)).fetchone()[0])  # type: ignore[index]
    queries = {
        "missing": sql.SQL(
            "SELECT {k} FROM {e} e WHERE NOT EXISTS (SELECT 1 FROM {t} t WHERE {on})"
        ).format(k=keys_e, e=exp.name, t=t, on=on),
        "extra": sql.SQL(
            "SELECT {k} FROM {t} t WHERE NOT EXISTS (SELECT 1 FROM {e} e WHERE {on}){only}"
        ).format(
            k=keys_t,
            e=exp.name,
            t=t,
            on=on,
            only=sql.SQL("")
            if only is None
            else sql.SQL(" AND ({}) IN (SELECT * FROM {})").format(keys_t, only),
        ),
        "different": sql.SQL(
            "SELECT {k} FROM {e} e JOIN {t} t ON {on} WHERE ROW({re}) IS DISTINCT FROM ROW({rt})"
        ).format(k=keys_e, e=exp.name, t=t, on=on, re=row_e, rt=row_t),
    }
    res.key, res.cols, res.shape = exp.key, list(exp.cols), exp.shape
    for kind, q in queries.items():
        rows = [list(r) for r in tgt.execute(q).fetchall()]
        setattr(res, f"n_{kind}", len(rows))
        setattr(res, kind, rows[:EXAMPLES])
        for r in rows:
            if len(res.differing) < MAX_KEYS:
                res.differing.setdefault(tuple(r), kind)
    for k in res.different[:EXAMPLES]:
        cond = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(I(c)) for c in exp.key)
        e = tgt.execute(sql.SQL("SELECT * FROM {} WHERE ").format(exp.name) + cond, k).fetchone()
        tr = tgt.execute(
            sql.SQL("SELECT {} FROM {} WHERE ").format(sql.SQL(", ").join(map(I, exp.cols)), t)
            + cond,
            k,
        ).fetchone()
        if e is None or tr is None:
            continue
        cols = {
            c: {"source": _clip(a), "target": _clip(b)}
            for c, a, b in zip(exp.cols, e, tr, strict=True)
            if a != b
        }
        res.examples.append(
            {"key": dict(zip(exp.key, k, strict=True)), "kind": "different", "columns": cols}
        )
    for kind in ("missing", "extra"):
        for k in getattr(res, kind)[: EXAMPLES - len(res.examples)]:
            res.examples.append({"key": dict(zip(exp.key, k, strict=True)), "kind": kind})


def _clip(v: Any) -> Any:
    s = v if v is None or isinstance(v, int | float | bool) else str(v)
    return s[:120] + "..." if isinstance(s, str) and len(s) > 120 else s


def targets_of(mapper: Mapper, sources: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(t.table for s in sources for t in mapper.table(s).targets))


def run_mapped(
    settings: Settings,
    sources: list[str],
    on_rows: Callable[[int], None] | None = None,
    want: Want | None = None,
    workers: int = 1,
) -> MappedRun:
    """One comparison of the targets of ``sources`` (all their sources are read), from one
    repeatable-read snapshot of the legacy tables taken when it starts. ``want``: also return the
    expected rows and outcomes a re-check asks for; ``workers``: processes mapping the rows
    (:mod:`crossfade.verify.mapped_pool`; 1: this one)."""
    t0 = time.monotonic()
    with read_only(settings) as src, connect(settings.target, "target") as tgt:
        before = wal_position(src)
        mapper, _schema = prepare(settings, src, check_target=True)
        run = _Pass(settings, mapper, tgt, sources, want, workers)
        for s in run.all_sources:
            run.map_source(src, s, on_rows)
        for t in list(run.pending_dedup):
            run.finish_dedup(t)
        expected = run.compare(want)
        src.rollback()
        tgt.rollback()
    outcomes = {
        s: {
            e: a.outcome(e)
            for e in a.disagreeing() | (want.entries.get(s, set()) if want else set())
        }
        for s, a in run.accounts.items()
    }
    seconds = time.monotonic() - t0
    return MappedRun(
        run.results, run.accounts, seconds, expected, outcomes, run.producers, before, run.dedup
    )


class _Pass:
    """The state of one :func:`run_mapped`: the expected rows of each target streamed into its
    :class:`Expected`, duplicate groups collected until their members are all read, the parent
    keys ``references`` rules check, and each source table's accounting."""

    def __init__(
        self,
        settings: Settings,
        mapper: Mapper,
        tgt: Any,
        sources: list[str],
        want: Want | None,
        workers: int = 1,
    ) -> None:
        self.settings, self.mapper, self.tgt = settings, mapper, tgt
        self.workers = workers
        self.wanted = {t: set(ks) for t, ks in (want.keys if want else {}).items()}
        self.producers: dict[str, dict[Key, set[tuple[str, str]]]] = defaultdict(dict)
        self.bk = settings.sync.bookkeeping_schema
        targets = targets_of(mapper, sources)
        # the parents of a subset's references are mapped (for their keys), not compared
        needed = with_parents(mapper, targets)
        self.all_sources = [
            s
            for s in parents_first(mapper)
            if any(t.table in needed for t in mapper.table(s).targets)
            and not mapper.table(s).identity
        ]
        self.compared = {
            s for s in self.all_sources if any(t.table in targets for t in mapper.table(s).targets)
        }
        self.keys = tracked_references(mapper)
        self.shapes = {t: read_shape(tgt, t) for t in mapper.target_tables()}
        self.results = {t: TargetResult(t, mapper.sources_of(t)) for t in targets}
        produced: dict[str, list[str]] = {}
        self.tkeys: dict[str, tuple[str, ...]] = {}
        for s in self.all_sources:
            for ct in mapper.table(s).targets:
                produced.setdefault(ct.table, [])
                produced[ct.table] += [c.name for c in ct.columns]
                if ct.copy_columns:
                    produced[ct.table] += [c.name for c in self.shapes[ct.table].columns]  # type: ignore[union-attr]
                if ct.key is not None:
                    self.tkeys[ct.table] = ct.key
        self.writers: dict[str, Expected] = {}
        for t in targets:
            shape = self.shapes[t]
            assert shape is not None, t
            wanted = set(produced.get(t, [])) | set(self.tkeys.get(t, ()))
            cols = [c.name for c in shape.columns if c.name in wanted]
            self.writers[t] = Expected(settings, shape, self.tkeys[t], cols)
        self.dedupers = {
            t: Deduper(
                t,
                spec,
                mapper.registry,
                keep=self.writers[t].cols if t in self.writers else [],
                key_columns=key_columns(mapper, t),
            )
            for t, spec in mapper.config.dedup.items()
            if t in needed  # a parent's too: its crosswalk redirects the children
        }
        self.crosswalk: dict[str, dict[Any, Any]] = {}
        self.redirects = redirects(mapper)
        self.accounts: dict[str, SourceAccount] = {}
        self.pending_dedup = set(self.dedupers)
        self.dedup: dict[str, DedupBase] = {}

    def finish_dedup(self, t: str) -> None:
        """Every member of ``t`` is read: write its golden records and the rest of its rows."""
        d, w = self.dedupers[t], self.writers.get(t)  # None: a parent mapped for its keys
        groups = d.groups()
        rows, cw = golden_rows(d, groups)
        if w is not None:
            self.dedup[t] = dedup_base(d, groups, member_block_keys(self.tgt, self.bk, t))
            self.results[t].merged += sum(len(g.members) - 1 for g in groups)
            for values in rows:
                w.write(values)
        for m in d.members:
            golden = cw.get(m.key, m.key)
            if golden in self.wanted.get(t, ()) and m.source_key:
                self.producers[t].setdefault(golden, set()).add((m.source_table, m.source_key[0]))
        self.crosswalk[t] = {k[0]: v[0] for k, v in cw.items() if len(k) == 1}
        self.pending_dedup.discard(t)

    def emit(self, s: str, rows: Iterable[TargetRow], entry: str) -> None:
        """Expected rows of one mapped source row, ledger ``entry`` of ``s`` (and its keys for
        children's rules)."""
        self.take(s, self.prepared(s, rows), entry)

    def prepared(self, s: str, rows: Iterable[TargetRow]) -> list[Prepared]:
        """The part of :meth:`emit` that changes nothing (a worker process may compute it): per
        target row, its keys children check, its values with references redirected to golden
        records, and its blocking keys when deduplicated."""
        out: list[Prepared] = []
        for tr in rows:
            adds = [
                (tc, tr.values[tc[1]])
                for tc in self.keys.sets
                if tc[0] == tr.table and tc[1] in tr.values
            ]
            if tr.table not in self.writers and tr.table not in self.dedupers:
                out.append((tr.table, adds, None, tr.key, None))
                continue
            values = redirected(tr.values, self.redirects.get(s, []), self.crosswalk)
            d = self.dedupers.get(tr.table)
            blocks = None if d is None else d.matcher.block_keys(values)
            out.append((tr.table, adds, values, tr.key, blocks))
        return out

    def take(self, s: str, prepared: list[Prepared], entry: str) -> None:
        for table, adds, values, key, blocks in prepared:
            for tc, v in adds:
                self.keys.sets[tc].add(v)
            if values is None:
                continue
            if table in self.dedupers:
                assert key is not None
                self.dedupers[table].add(key, values, s, (entry,), blocks)
                continue
            if key is not None and key in self.wanted.get(table, ()):
                self.producers[table].setdefault(key, set()).add((s, entry))
            self.writers[table].write(values)

    def ready(self, s: str, out: Outcome) -> tuple[str, Any]:
        """One row's outcome as :meth:`map_source` takes it: ``f`` filtered, ``r`` rejected,
        ``k`` rejected but maybe kept (the ledger decides: the outcome), ``m`` mapped (its
        :meth:`prepared` rows). Changes nothing (a worker process may compute it)."""
        if isinstance(out, Filtered):
            return "f", None
        if isinstance(out, Rejected):
            return ("k", out) if kept(out) else ("r", None)
        return "m", self.prepared(s, out.rows)

    def map_source(self, src: Any, s: str, on_rows: Callable[[int], None] | None) -> None:
        """Map every row of source table ``s`` (its parents' duplicate groups settled first) and
        close its account against sync's ledger."""
        for parent in {p for (_col, p) in self.redirects.get(s, [])} & self.pending_dedup:
            self.finish_dedup(parent)
        acc = SourceAccount(s)
        if s in self.compared:  # a parent mapped only for its keys is not accounted for
            self.accounts[s] = acc
        kept: dict[str, Rejected] = {}
        # rows the target refused (sync.refused): the mapping passes them, the new database's
        # constraints do not; dead letters, not expected in the target
        refused = dead_letters_of_rule(self.tgt, self.bk, s, REFUSED_RULE)
        for n, (entry, (what, it)) in enumerate(self.outcomes(src, s), 1):
            acc.source_rows += 1
            if what == "f":
                acc.filtered.add(entry)
            elif what == "r" or (what == "m" and entry in refused):
                acc.rejected.add(entry)
            elif what == "k":  # on_parent_left: keep: the ledger decides
                kept[entry] = it
            else:
                acc.mapped += 1
                self.take(s, it, entry)
            if on_rows and n % 2000 == 0:
                on_rows(2000)
        acc.ledger_dead, acc.ledger_filtered = held_entries(self.tgt, self.bk, s)
        for entry, out in kept.items():  # resolved by the ledger, after the stream
            rows = kept_rows(self.tgt, self.bk, s, entry, out, self.shapes, self.tkeys)
            if rows is None:
                acc.rejected.add(entry)
            else:
                acc.mapped += 1
                self.emit(s, rows, entry)

    def outcomes(self, src: Any, s: str) -> Iterator[tuple[str, tuple[str, Any]]]:
        """(ledger entry, :meth:`ready` outcome) of every row of ``s``, in the order read: mapped
        in worker processes (:mod:`crossfade.verify.mapped_pool`) when there are several and
        ``s`` allows it."""
        rows = stream_rows(src, s, f"cf_verify_{next(_seq)}")
        if self.workers > 1 and parallel_safe(self.mapper, s):
            yield from mapped_rows(rows, self, s, self.workers)
            return
        pk = self.mapper.source_keys.get(s) or []
        for row in rows:
            out = self.mapper.map_row(s, row, parents=self.keys)
            yield key_text(row.get(c) for c in pk), self.ready(s, out)

    def compare(self, want: Want | None) -> dict[str, dict[Key, tuple[Any, ...] | None]]:
        """Compare every target with its expected rows; the expected rows of the differing keys
        and of those ``want`` asks for."""
        expected: dict[str, dict[Key, tuple[Any, ...] | None]] = {}
        try:
            for t, w in self.writers.items():
                w.finish()
                compare_expected(w, self.results[t])
                asked = {*self.results[t].differing, *(want.keys.get(t, []) if want else [])}
                if asked:
                    expected[t] = w.rows_of(list(asked))
        finally:
            for w in self.writers.values():
                w.close()
        return expected


def redirected(
    values: dict[str, Any], redirects: list[tuple[str, str]], crosswalk: dict[str, dict[Any, Any]]
) -> dict[str, Any]:
    """``values`` (a mapped row of a source whose ``redirects`` these are) with each reference
    to a deduplicated parent pointed at the survivor of its member (``crosswalk``: parent ->
    member key value -> survivor key value; a member not in it is its own survivor)."""
    out = dict(values)
    for col, parent in redirects:
        if out.get(col) in crosswalk.get(parent, {}):
            out[col] = crosswalk[parent][out[col]]
    return out


def redirects(mapper: Mapper) -> dict[str, list[tuple[str, str]]]:
    """source table -> (target column, deduplicated parent target) it refers to."""
    out: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for s, ct in mapper.tables.items():
        for t in ct.targets:
            for col, r, _checks in t.rules:
                ref = r.reference if r is not None else None
                if ref is not None and ref.table in mapper.config.dedup:
                    out[s].append((col, ref.table))
    return out


def ledger_outcomes(
    conn: Any, bookkeeping_schema: str, source: str, entries: Iterable[str]
) -> dict[str, tuple[str, int]]:
    """What sync recorded for these entries, in the mapping's words: ``rejected`` (a dead letter
    or deferred), ``filtered``, else ``mapped`` (mapped, replayed, deleted, or no entry); with
    the source LSN of the change that recorded it (0: no entry)."""
    entries = list(entries)
    out = dict.fromkeys(entries, ("mapped", 0))
    for entry, (pos, outcome, _rule) in ledger_positions(
        conn, bookkeeping_schema, source, entries
    ).items():
        said = {"dead_letter": "rejected", "deferred": "rejected", "filtered": "filtered"}
        out[entry] = (said.get(outcome, "mapped"), int(pos) >> SHIFT)
    return out


def json_keys(rows: list[list[Any]]) -> list[Any]:
    return json.loads(json.dumps(rows, default=str))
