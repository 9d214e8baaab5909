"""The compiled mapping: a pure function from one legacy row to its outcome.

:class:`Mapper` is built once from the config (:func:`compile_mapping` checks it without a
database) and then answers, for a source row given in the *normal form* — a ``dict`` of Python
values as psycopg returns them from the legacy database (``str``, ``int``, ``Decimal``, ``date``,
``datetime``, ``UUID``, lists, dicts...); :func:`crossfade.mapping.values.event_row` turns a
Debezium change event into the same form —

* :class:`Mapped`: one :class:`TargetRow` per target of the table (values in the same normal
  form, the target key), plus warnings of ``severity: warn`` rules;
* :class:`Rejected`: every rule that failed, in a stable order (``rule`` is the first): a
  transform or cast that failed, a required value missing, a pattern/range/enum/length check,
  a parent that does not exist. The whole source row is rejected — never half of its targets;
* :class:`Filtered`: the filter that matched, with the reason.

The same row always gives the same outcome (no clock, no network, no database), so verify can
map a source row and compare it with the target row. Referential rules need to know which parent
keys exist: the caller passes ``parents`` (a :class:`ParentKeys`); without it those rules are not
evaluated. A referential failure is ``deferrable`` when its rule's window (its ``window_s``, else
``mapping.defaults.references_window_s``) is above zero: sync holds the row until the parent
arrives or the window ends (FAULTS 27, 38), and decides by the parent's known state (filtered,
dead-lettered, deleted) and the rule's ``on_parent_left`` what happens then.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from crossfade.errors import ConfigError
from crossfade.mapping.filters import CompiledFilter, FilterError, out_of_range
from crossfade.mapping.transforms import (
    CASTS,
    OUTPUT_TYPES,
    Registry,
    Transform,
    TransformError,
    chain,
)

if TYPE_CHECKING:
    from crossfade.config.mapping import (
        ColumnRules,
        ColumnSpec,
        MappingConfig,
        MappingDefaults,
        Reference,
        TargetSpec,
    )


# ---------------------------------------------------------------------------------------------
# Outcomes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failure:
    """One rule that a row failed.

    ``rule`` is stable and unique per check, e.g. ``crm.people.email:required``,
    ``crm.people.phone:transform:phone``, ``crm.people.account_id:references`` or
    ``crm.people:contactable`` (a row rule): dead letters and the audit group by it.
    """

    rule: str
    kind: str  # source | transform | cast | required | pattern | range | enum | length | too_long | too_large | references | row
    message: str
    target: str | None = None
    column: str | None = None
    value: Any = None
    severity: str = "reject"
    deferrable: bool = False
    window_s: float = 0.0
    parent: tuple[str, str] | None = None
    """For a ``references`` failure: the parent (target table, column) the value refers to."""
    on_parent_left: str = "dead_letter"
    """For a ``references`` failure: the rule's policy (model.Reference.on_parent_left)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "kind": self.kind,
            "message": self.message,
            "target": self.target,
            "column": self.column,
            "value": jsonable(self.value),
            "severity": self.severity,
            "deferrable": self.deferrable,
            **({"parent": list(self.parent)} if self.parent else {}),
        }


def jsonable(v: Any) -> Any:
    if v is None or isinstance(v, str | int | float | bool):
        return v
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    return str(v)


@dataclass(frozen=True, slots=True)
class TargetRow:
    table: str
    values: dict[str, Any]
    key: tuple[Any, ...] | None
    """Values of the target key columns (None when the key is not known yet)."""
    unavailable: frozenset[str] = frozenset()
    """Target columns computed from source columns Debezium did not send (unchanged TOAST):
    sync must keep the target's current value for them."""


@dataclass(frozen=True, slots=True)
class Mapped:
    source_table: str
    source_key: tuple[Any, ...] | None
    rows: tuple[TargetRow, ...]
    warnings: tuple[Failure, ...] = ()
    outcome = "mapped"


@dataclass(frozen=True, slots=True)
class Rejected:
    source_table: str
    source_key: tuple[Any, ...] | None
    failures: tuple[Failure, ...]
    rows: tuple[TargetRow, ...] = ()
    """The target rows as far as they could be computed (a failed column is missing): what a
    child would be if its parent were there (sync keeps the parent it refers to)."""
    outcome = "rejected"

    @property
    def rule(self) -> str:
        """The rule named in the dead letter (the first that failed)."""
        return self.failures[0].rule

    @property
    def reason(self) -> str:
        return "; ".join(f"{f.rule}: {f.message}" for f in self.failures)

    @property
    def deferrable(self) -> bool:
        """Only missing parents failed, and each has a window: hold the row, retry later."""
        return all(f.deferrable for f in self.failures)


@dataclass(frozen=True, slots=True)
class Filtered:
    source_table: str
    source_key: tuple[Any, ...] | None
    filter: str
    """``<source table>:filter:<name>``."""
    reason: str
    outcome = "filtered"


Outcome = Mapped | Rejected | Filtered


class ParentKeys(Protocol):
    """Answers whether ``value`` is a key of the parent ``table.column``; None when unknown."""

    def __call__(self, table: str, column: str, value: Any) -> bool | None: ...


@dataclass
class KeySets:
    """A :class:`ParentKeys` over in-memory sets (audit, dry-run, tests). Tables never added
    answer None (unknown), so their rules are skipped rather than failed."""

    sets: dict[tuple[str, str], set[Any]] = field(default_factory=dict)

    def add(self, table: str, column: str, value: Any) -> None:
        self.sets.setdefault((table, column), set()).add(_hashable(value))

    def track(self, table: str, column: str) -> None:
        self.sets.setdefault((table, column), set())

    def __call__(self, table: str, column: str, value: Any) -> bool | None:
        s = self.sets.get((table, column))
        if s is None:
            return None
        return _hashable(value) in s


def _hashable(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


# ---------------------------------------------------------------------------------------------
# Compiled parts
# ---------------------------------------------------------------------------------------------


class _ColumnFailure(Exception):
    def __init__(self, failure: Failure) -> None:
        self.failure = failure


_ABSENT = object()


@dataclass
class CompiledColumn:
    target: str
    name: str
    spec: ColumnSpec
    sources: tuple[str, ...]
    steps: list[tuple[str, Transform]]
    produced_type: str | None
    """What the schema check compares with the target column: a cast name, a transform's output
    type, ``source`` (the source column's type) or ``const``."""

    def __post_init__(self) -> None:  # what compute asks of the spec, once rather than per row
        self.const, self.default = self.spec.is_const, self.spec.default
        self.single = None if self.const or isinstance(self.spec.from_, list) else self.sources[0]

    def compute(self, row: Mapping[str, Any]) -> Any:
        spec = self.spec
        if self.const:
            value: Any = spec.const
        else:  # the common case first: one source column, in the row
            value = row.get(self.single, _ABSENT) if self.single is not None else _ABSENT
            if value is _ABSENT:
                got = [row.get(c, _ABSENT) for c in self.sources]
                missing = [c for c, v in zip(self.sources, got, strict=True) if v is _ABSENT]
                if missing:
                    msg = f"the source row has no column {', '.join(missing)}"
                    rule = f"{self.target}.{self.name}:source"
                    raise _ColumnFailure(Failure(rule, "source", msg, self.target, self.name))
                value = got if isinstance(spec.from_, list) else got[0]
        if not self.steps:
            return self.default if value is None else value
        original = value
        for tname, step in self.steps:
            try:
                value = step(value)
            except (TransformError, ValueError, TypeError, ArithmeticError) as exc:
                kind = "cast" if tname.startswith("cast:") else "transform"
                rule = (
                    f"{self.target}.{self.name}:{tname if kind == 'cast' else 'transform:' + tname}"
                )
                if spec.on_error == "null":
                    return spec.default
                if spec.on_error == "keep":
                    return original
                raise _ColumnFailure(
                    Failure(rule, kind, str(exc), self.target, self.name, original)
                ) from None
        return self.default if value is None else value


@dataclass
class CompiledTarget:
    spec: TargetSpec
    table: str
    columns: list[CompiledColumn]
    copy_columns: bool
    consumed: frozenset[str]
    key: tuple[str, ...] | None
    rules: list[tuple[str, ColumnRules, list[Callable[[Any, ParentKeys | None], Failure | None]]]]

    def map(
        self, row: Mapping[str, Any], parents: ParentKeys | None, unavailable: frozenset[str]
    ) -> tuple[TargetRow | None, list[Failure]]:
        failures: list[Failure] = []
        values: dict[str, Any] = {}
        lost: set[str] = set()
        for col in self.columns:
            if unavailable and any(s in unavailable for s in col.sources):
                lost.add(col.name)
                values[col.name] = None
                continue
            try:
                values[col.name] = col.compute(row)
            except _ColumnFailure as cf:
                failures.append(cf.failure)
        if self.copy_columns:
            for c, v in row.items():
                if c not in self.consumed and c not in values:
                    values[c] = v
                    if c in unavailable:
                        lost.add(c)
        broken = {f.column for f in failures}
        for column, _rules, checks in self.rules:
            if column in broken or column in lost:
                continue
            v = values.get(column)
            for check in checks:
                f = check(v, parents)
                if f is not None:
                    failures.append(f)
        for rr in self.spec.row_rules:
            cols = rr.require_any
            if any(c in broken or c in lost for c in cols):
                continue  # a value that failed (already reported) or was not sent is not "empty"
            if all(_blank(values.get(c)) for c in cols):
                failures.append(
                    Failure(
                        f"{self.table}:{rr.name}",
                        "row",
                        f"none of {', '.join(cols)} has a value",
                        self.table,
                        None,
                        None,
                        rr.severity,
                    )
                )
        key = tuple(values.get(k) for k in self.key) if self.key is not None else None
        return TargetRow(self.table, values, key, frozenset(lost)), failures


def _blank(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _rule_checks(
    table: str, column: str, r: ColumnRules, defaults: MappingDefaults | None = None
) -> list[Callable[[Any, ParentKeys | None], Failure | None]]:
    checks: list[Callable[[Any, ParentKeys | None], Failure | None]] = []
    base = f"{table}.{column}"
    sev = r.severity

    def fail(check: str, kind: str, msg: str, v: Any, **kw: Any) -> Failure:
        return Failure(f"{base}:{check}", kind, msg, table, column, v, sev, **kw)

    if r.required:
        checks.append(
            lambda v, _p: (
                fail("required", "required", "is required but missing", v) if _blank(v) else None
            )
        )
    if r.pattern is not None:
        rx = re.compile(r.pattern)

        def pattern(v: Any, _p: Any) -> Failure | None:
            if v is None or rx.fullmatch(str(v)):
                return None
            return fail("pattern", "pattern", f"{v!r} does not match {r.pattern}", v)

        checks.append(pattern)
    if r.min is not None or r.max is not None:

        def range_(v: Any, _p: Any) -> Failure | None:
            why = None if v is None else out_of_range(v, r.min, r.max)
            return None if why is None else fail("range", "range", why, v)

        checks.append(range_)
    if r.enum is not None:
        allowed = list(r.enum)

        def enum(v: Any, _p: Any) -> Failure | None:
            if v is None or v in allowed:
                return None
            return fail("enum", "enum", f"{v!r} is not one of {', '.join(map(str, allowed))}", v)

        checks.append(enum)
    if r.min_length is not None or r.max_length is not None:

        def length(v: Any, _p: Any) -> Failure | None:
            if v is None:
                return None
            n = len(str(v))
            if r.min_length is not None and n < r.min_length:
                return fail("length", "length", f"{v!r} is shorter than {r.min_length}", v)
            if r.max_length is not None and n > r.max_length:
                return fail("length", "length", f"{v!r} is longer than {r.max_length}", v)
            return None

        checks.append(length)
    ref = r.reference
    if ref is not None:
        checks.append(_reference_check(ref, fail, defaults))
    return checks


def reference_window(ref: Reference, defaults: MappingDefaults | None) -> float:
    """The window of a ``references`` rule: its own, else the mapping's default (300 s)."""
    if ref.window_s is not None:
        return ref.window_s
    return defaults.references_window_s if defaults is not None else 300.0


def reference_policy(ref: Reference, defaults: MappingDefaults | None) -> str:
    """The ``on_parent_left`` of a ``references`` rule: its own, else the mapping's default."""
    if ref.on_parent_left is not None:
        return ref.on_parent_left
    return defaults.on_parent_left if defaults is not None else "dead_letter"


def _reference_check(
    ref: Reference, fail: Callable[..., Failure], defaults: MappingDefaults | None
) -> Callable[[Any, ParentKeys | None], Failure | None]:
    window = reference_window(ref, defaults)
    policy = reference_policy(ref, defaults)

    def references(v: Any, parents: ParentKeys | None) -> Failure | None:
        if v is None or parents is None:
            return None
        if parents(ref.table, ref.column, v) is False:
            return fail(
                "references",
                "references",
                f"no {ref.table} row has {ref.column} = {v!r} (orphan)",
                v,
                deferrable=window > 0,
                window_s=window,
                parent=(ref.table, ref.column),
                on_parent_left=policy,
            )
        return None

    return references


# ---------------------------------------------------------------------------------------------
# The mapper
# ---------------------------------------------------------------------------------------------


@dataclass
class CompiledTable:
    source: str
    filters: list[CompiledFilter]
    targets: list[CompiledTarget]
    identity: bool


class Mapper:
    """The mapping for every configured source table (identity for those without an entry).

    ``source_keys`` (source table -> primary-key columns) lets outcomes carry the source key and
    lets unset target keys default to renamed source key columns; the schema check supplies it
    from the legacy catalog.
    """

    def __init__(
        self,
        config: MappingConfig | None,
        tables: Iterable[str] = (),
        source_keys: Mapping[str, list[str]] | None = None,
        skip: Iterable[str] = (),
    ) -> None:
        """``skip``: tables left out (append-only tables: copied as they are, keyed by nothing)."""
        from crossfade.config.mapping import MappingConfig

        self.config = config or MappingConfig()
        self.registry = Registry(self.config.transforms, self.config.transform_modules)
        self.source_keys = {t: list(k) for t, k in (source_keys or {}).items()}
        self.tables: dict[str, CompiledTable] = {}
        left_out = set(skip)
        for t in dict.fromkeys([*tables, *self.config.tables]):
            if t not in left_out:
                self.tables[t] = self._compile_table(t)

    # -- compile ------------------------------------------------------------------------------
    def _defaults(self) -> dict[str, Any]:
        d = self.config.defaults
        return {"region": d.phone_region, "formats": d.date_formats or None, "dayfirst": d.dayfirst}

    def _build(self, spec: Any, where: str) -> tuple[str, Transform]:
        try:
            return self.registry.build(spec, self._defaults())
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def _compile_table(self, source: str) -> CompiledTable:
        from crossfade.config.mapping import ColumnSpec, TargetSpec

        tm = self.config.tables.get(source)
        if tm is None:
            spec = TargetSpec(table=source, include_unmapped=True)
            return CompiledTable(source, [], [self._compile_target(source, spec, 0)], identity=True)
        filters = []
        for i, f in enumerate(tm.filters):
            conds = []
            for j, c in enumerate(f.when):
                steps = [
                    self._build(s, f"mapping.tables.{source}.filters[{i}].when[{j}].transforms")[1]
                    for s in c.transforms
                ]
                conds.append((c, chain(steps)))
            filters.append(CompiledFilter(source, f, conds))
        targets = [self._compile_target(source, t, i) for i, t in enumerate(tm.targets)]
        _ = ColumnSpec
        return CompiledTable(source, filters, targets, identity=False)

    def _compile_target(self, source: str, spec: TargetSpec, index: int) -> CompiledTarget:
        where = f"mapping.tables.{source}.targets[{index}]"
        cols: list[CompiledColumn] = []
        consumed: set[str] = set()
        for name, cs in spec.column_specs().items():
            sources: tuple[str, ...] = ()
            if not cs.is_const:
                sources = tuple(cs.from_) if isinstance(cs.from_, list) else (cs.from_ or name,)
            consumed.update(sources)
            steps = [
                self._build(s, f"{where}.columns.{name}.transforms[{k}]")
                for k, s in enumerate(cs.transforms)
            ]
            produced: str | None = "const" if cs.is_const else "source"
            for tname, _ in steps:
                produced = OUTPUT_TYPES.get(tname, produced)
            if cs.cast is not None:
                steps.append((f"cast:{cs.cast}", _null_safe(CASTS[cs.cast])))
                produced = cs.cast
            if isinstance(cs.from_, list) and not cs.transforms:
                raise ConfigError(
                    f"{where}.columns.{name}: `from` lists several columns; add a transform that combines them (concat, coalesce)"
                )
            cols.append(CompiledColumn(spec.table, name, cs, sources, steps, produced))
        names = {c.name for c in cols}
        for col in spec.rules:
            if col not in names and not spec.include_unmapped:
                raise ConfigError(
                    f"{where}.rules.{col}: {spec.table} gets no column {col} from this mapping"
                )
        for rr in spec.row_rules:
            for col in rr.require_any:
                if col not in names and not spec.include_unmapped:
                    raise ConfigError(
                        f"{where}.row_rules.{rr.name}: {spec.table} gets no column {col} from this mapping"
                    )
        key: tuple[str, ...] | None = tuple(spec.key) if spec.key else None
        if spec.key:
            for k in spec.key:
                if k not in names and not spec.include_unmapped:
                    raise ConfigError(
                        f"{where}.key: {spec.table} gets no column {k} from this mapping"
                    )
        elif source in self.source_keys:
            pk = self.source_keys[source]
            if spec.include_unmapped and not spec.columns:
                key = tuple(pk)
            else:
                renamed = {
                    c.sources[0]: c.name
                    for c in cols
                    if len(c.sources) == 1
                    and not c.spec.transforms
                    and c.spec.cast is None
                    and not isinstance(c.spec.from_, list)
                }
                if all(p in renamed for p in pk):
                    key = tuple(renamed[p] for p in pk)
                elif spec.include_unmapped and all(p not in consumed for p in pk):
                    key = tuple(pk)
        rules = [
            (col, r, _rule_checks(spec.table, col, r, self.config.defaults))
            for col, r in spec.rules.items()
        ]
        return CompiledTarget(
            spec, spec.table, cols, spec.include_unmapped, frozenset(consumed), key, rules
        )

    def add_checks(
        self,
        target: str,
        checks: Mapping[str, Callable[[Any, ParentKeys | None], Failure | None]],
        *,
        unless_required: bool = False,
    ) -> None:
        """Add a check per column (what the target's shape asks, :mod:`crossfade.mapping.
        target_fit`) to every mapping into ``target`` that fills the column (a copy of unmapped
        columns may fill any). ``unless_required``: not where the column's own ``required``
        rule already says it."""
        for ct in self.tables.values():
            for t in ct.targets:
                if t.table != target:
                    continue
                produced = {c.name for c in t.columns}
                for col, check in sorted(checks.items()):
                    if col not in produced and not t.copy_columns:
                        continue
                    if unless_required and col in t.spec.rules and t.spec.rules[col].required:
                        continue
                    t.rules.append((col, None, [check]))  # type: ignore[arg-type]

    # -- use ----------------------------------------------------------------------------------
    def table(self, source: str) -> CompiledTable:
        t = self.tables.get(source)
        if t is None:
            raise KeyError(f"{source} is not a configured source table")
        return t

    def target_tables(self) -> list[str]:
        return list(dict.fromkeys(t.table for ct in self.tables.values() for t in ct.targets))

    def sources_of(self, target: str) -> list[str]:
        return [s for s, ct in self.tables.items() if any(t.table == target for t in ct.targets)]

    def source_key(self, source: str, row: Mapping[str, Any]) -> tuple[Any, ...] | None:
        pk = self.source_keys.get(source)
        return tuple(row.get(c) for c in pk) if pk else None

    def map_row(
        self,
        source: str,
        row: Mapping[str, Any],
        *,
        parents: ParentKeys | None = None,
        unavailable: frozenset[str] = frozenset(),
    ) -> Outcome:
        """Map one source row (normal form). Pure: same row, same parents -> same outcome.

        ``unavailable``: source columns whose value was not sent (unchanged TOAST); target
        columns computed from them are listed in :attr:`TargetRow.unavailable` and not checked.
        Raises KeyError for a table that is not configured.
        """
        ct = self.table(source)
        skey = self.source_key(source, row)
        for f in ct.filters:
            try:
                why = f.match(row)
            except FilterError as exc:
                return Rejected(source, skey, (Failure(f.rule, "filter", str(exc)),))
            if why is not None:
                return Filtered(source, skey, f.rule, why)
        rows: list[TargetRow] = []
        failures: list[Failure] = []
        for t in ct.targets:
            trow, fs = t.map(row, parents, unavailable)
            rows.append(trow)  # type: ignore[arg-type]
            failures.extend(fs)
        rejects = tuple(f for f in failures if f.severity == "reject")
        if rejects:
            return Rejected(source, skey, rejects, tuple(rows))
        return Mapped(
            source, skey, tuple(rows), tuple(f for f in failures if f.severity != "reject")
        )

    def map_key(self, source: str, key: Mapping[str, Any]) -> list[tuple[str, tuple[Any, ...]]]:
        """The target keys a source key maps to (for applying a delete), one per target.

        Raises :class:`ConfigError` when a target key is not computable from the source key alone
        (the schema check refuses such mappings at startup).
        """
        out = []
        for t in self.table(source).targets:
            if t.key is None:
                raise ConfigError(
                    f"target {t.table} of {source} has no known key", "set `key:` in the mapping"
                )
            values: dict[str, Any] = {}
            for k in t.key:
                col = next((c for c in t.columns if c.name == k), None)
                if col is None:  # copied unmapped column
                    values[k] = key[k]
                    continue
                try:
                    values[k] = col.compute(key)
                except _ColumnFailure as cf:
                    raise ConfigError(
                        f"target key {t.table}.{k} is not computable from the key of {source} ({cf.failure.message})"
                    ) from None
            out.append((t.table, tuple(values[k] for k in t.key)))
        return out


def _null_safe(fn: Callable[[Any], Any]) -> Transform:
    """``fn`` for non-NULL values; NULL stays NULL."""

    def cast(v: Any) -> Any:
        return None if v is None else fn(v)

    return cast


def compile_mapping(
    config: MappingConfig,
    tables: Iterable[str] = (),
    source_keys: Mapping[str, list[str]] | None = None,
) -> Mapper:
    """Build the :class:`Mapper`; raises :class:`ConfigError` naming the config path of anything
    that does not compile (unknown transform, bad arguments, rules on unmapped columns)."""
    return Mapper(config, tables, source_keys)
