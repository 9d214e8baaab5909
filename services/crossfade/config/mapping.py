"""The ``mapping:`` section of the crossfade config: what a legacy row becomes in the new database.

.. code-block:: yaml

    mapping:
      defaults: {phone_region: GB, references_window_s: 300}
      tables:
        public.contacts:                       # a source table listed under `tables:`
          filters:                             # rows that are not migrated (counted and listed)
            - name: inactive-before-2015
              when: [{column: active, eq: false}, {column: updated_at, before: 2015-01-01}]
          targets:                             # one source row -> one row in each target
            - table: crm.people
              key: [legacy_id]
              columns:
                legacy_id: id                  # a rename
                email: {from: email, transforms: [email]}
                first_name: {from: full_name, transforms: [{split_name: first}]}
                address: {from: [street, city], transforms: [{concat: ", "}]}
                source_system: {const: legacy-crm}
              rules:
                email: {required: true}
                account_id: {references: crm.accounts.legacy_id}
      dedup:
        crm.people:                            # a target table
          match:
            - {name: same-email, all: [{column: email}]}
            - {name: phone-and-name, all: [{column: phone}, {column: full_name, method: fuzzy, threshold: 90}]}
          survivorship: {recency: updated_at}

A source table under ``tables:`` without an entry here is copied as is (identity). Every model
refuses unknown keys, so a typo is one message naming the field.

This is the mapping *language*: names and arguments, checked for shape here. Whether every
transform name resolves and every built-in's argument fits is the engine's knowledge
(``crossfade.mapping``): it installs its check with :func:`install_check` when imported, and
:class:`MappingConfig` runs it on validation (config sits below the engine and never imports it).
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")
COLUMN_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")

TransformSpec = str | dict[str, Any]

ENTRY_POINT_GROUP = "crossfade.transforms"
"""The entry point group installed packages publish transforms in."""
"""``name``, ``{name: {arg: value}}`` or ``{name: main_arg}`` (see crossfade.mapping.transforms)."""

CastName = Literal[
    "text",
    "integer",
    "bigint",
    "smallint",
    "numeric",
    "float",
    "boolean",
    "date",
    "timestamp",
    "timestamptz",
    "uuid",
    "json",
]


class _Strict(BaseModel):
    # the docstring under each field is its description (docs/mapping.md, the Helm schema)
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True
    )


def _table(v: str) -> str:
    if not TABLE_RE.match(v):
        raise ValueError(f"{v!r} is not schema.table (e.g. public.accounts)")
    return v


def _column(v: str) -> str:
    if not COLUMN_RE.match(v):
        raise ValueError(f"{v!r} is not a column name")
    return v


class ColumnSpec(_Strict):
    """How one target column is computed from the source row."""

    from_: str | list[str] | None = Field(None, alias="from")
    """Source column, or a list of columns handed to the first transform as a list (``concat``,
    ``coalesce``). Unset together with ``const``: the source column of the same name."""
    const: Any = None
    """A constant value (e.g. the name of the source system). Excludes ``from``."""
    transforms: list[TransformSpec] = Field(default_factory=list)
    """Applied left to right to the source value."""
    cast: CastName | None = None
    """Cast the transformed value to this type (``'42'`` -> 42 with ``integer``)."""
    default: Any = None
    """Value when the result is NULL."""
    on_error: Literal["reject", "null", "keep"] = "reject"
    """When a transform or the cast fails: reject the row (dead-letter it, naming the failure),
    write NULL, or keep the source value unchanged."""

    @model_validator(mode="after")
    def _one_source(self) -> ColumnSpec:
        if "const" in self.model_fields_set and self.from_ is not None:
            raise ValueError("give either `from` or `const`, not both")
        sources = [self.from_] if isinstance(self.from_, str) else (self.from_ or [])
        for c in sources:
            _column(c)
        if isinstance(self.from_, list) and not self.from_:
            raise ValueError("`from` lists no column")
        return self

    @property
    def is_const(self) -> bool:
        return "const" in self.model_fields_set


ParentLeftPolicy = Literal["dead_letter", "delete", "keep"]


class Reference(_Strict):
    """Referential rule: the value must be a key of a parent target table.

    In the live sync a child whose parent is not in the target yet is *deferred* (changes of
    different tables travel in different topics, so a child can arrive before the parent its
    source transaction committed with); it is applied the moment the parent arrives, and becomes
    a dead letter only when its window ends or when the parent is known to be filtered,
    dead-lettered or deleted at the source. See docs/mapping.md, "Parents and children"."""

    table: str
    """The parent target table (schema.table)."""
    column: str
    """The parent's key column the value refers to."""
    window_s: float | None = Field(default=None, ge=0)
    """How long a child may wait for its parent, in seconds. Unset: ``mapping.defaults.
    references_window_s`` (300). ``0`` dead-letters a child whose parent is not there yet at
    once, which makes the order of topics a verdict: use it only for parents loaded beforehand."""
    on_parent_left: ParentLeftPolicy | None = None
    """What happens to children already migrated when their parent leaves the target (deleted
    at the source, filtered, dead-lettered): ``dead_letter`` (removed from the target, deferred
    for the window, then a dead letter with the reason "parent left"), ``delete`` (removed from
    the target, recorded as ``parent_left``, not a dead letter) or ``keep`` (left as they are,
    pointing at a key the target no longer has). Either way a child comes back when its parent
    does. Unset: ``mapping.defaults.on_parent_left`` (``dead_letter``)."""

    @field_validator("table")
    @classmethod
    def _t(cls, v: str) -> str:
        return _table(v)


class ColumnRules(_Strict):
    """Checks on one target column's mapped value. Each check is a rule of its own, named
    ``<target table>.<column>:<check>`` in rejects, dead letters and the audit."""

    required: bool = False
    """Not NULL and not blank."""
    pattern: str | None = None
    """The text value must match this regular expression (``re.fullmatch``)."""
    min: float | dt.date | None = None
    """Smallest allowed value (numbers, dates). NaN (float or numeric) is within no range: it
    fails ``min`` and ``max`` alike; the infinities compare as they are. A bound of NaN, or a
    ``min`` of ``.inf``, is refused when the mapping loads (``min: -.inf`` refuses only NaN),
    and so is a ``min`` above the ``max``."""
    max: float | dt.date | None = None
    """Largest allowed value (NaN fails it, as ``min``; a bound of NaN or ``-.inf``, or below
    the ``min``, is refused when the mapping loads)."""
    enum: list[Any] | None = None
    """The value must be one of these."""
    min_length: int | None = Field(None, ge=0)
    """Shortest allowed text (characters)."""
    max_length: int | None = Field(None, ge=0)
    """Longest allowed text (characters)."""
    references: str | Reference | None = None
    """``schema.table.column`` of the parent, or ``{table, column, window_s, on_parent_left}``."""
    severity: Literal["reject", "warn"] = "reject"
    """``warn``: reported by audit and dry-run, the row is still migrated."""

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(
                    f"pattern {v!r} is not a valid regular expression ({exc})"
                ) from None
        return v

    @field_validator("references")
    @classmethod
    def _references(cls, v: str | Reference | None) -> str | Reference | None:
        if isinstance(v, str):
            parts = v.split(".")
            if len(parts) != 3 or not all(COLUMN_RE.match(p) for p in parts):
                raise ValueError(f"{v!r} is not schema.table.column")
            return Reference(table=f"{parts[0]}.{parts[1]}", column=parts[2])
        return v

    @property
    def reference(self) -> Reference | None:
        return self.references if isinstance(self.references, Reference) else None


class RowRule(_Strict):
    """A check across columns of one target row."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """The rule's name: failures are named ``<target table>:<name>``."""
    require_any: list[str] = Field(min_length=1)
    """At least one of these columns is not NULL/blank (e.g. ``[email, phone]``)."""
    severity: Literal["reject", "warn"] = "reject"
    """``warn``: reported by audit and dry-run, the row is still migrated."""


class TargetSpec(_Strict):
    """One target row computed from each (unfiltered) source row."""

    table: str
    """Target table, schema.table."""
    key: list[str] | None = None
    """Target key columns (the upsert key). Unset: the target columns that rename a source
    primary-key column (``legacy_id: id``). They must be computable from the source primary key
    alone, so a source delete can be applied."""
    columns: dict[str, ColumnSpec | str] = Field(default_factory=dict)
    """Target column -> spec; a string is shorthand for ``{from: <string>}``."""
    include_unmapped: bool = False
    """Also copy every source column not named in ``columns`` (nor consumed by one) by name."""
    rules: dict[str, ColumnRules] = Field(default_factory=dict)
    """Target column -> checks."""
    row_rules: list[RowRule] = Field(default_factory=list)
    """Checks across columns of the target row."""
    keys_disjoint: bool = False
    """Several source tables write this target and you vouch their keys never collide."""

    @field_validator("table")
    @classmethod
    def _t(cls, v: str) -> str:
        return _table(v)

    @field_validator("columns")
    @classmethod
    def _columns(cls, v: dict[str, ColumnSpec | str]) -> dict[str, ColumnSpec | str]:
        for name, spec in v.items():
            _column(name)
            if isinstance(spec, str):
                _column(spec)
        return v

    @model_validator(mode="after")
    def _bounds(self) -> TargetSpec:
        """A ``min``/``max`` no value can be compared with (NaN: every comparison is false, so
        it let every value through) or that every number fails (``min: .inf``, ``max: -.inf``)
        is a mistake, said when the mapping loads; ``max: .inf`` (refuses only NaN) is not."""
        for col, r in self.rules.items():
            for which, bound, void in (("min", r.min, math.inf), ("max", r.max, -math.inf)):
                if not isinstance(bound, float):
                    continue
                if math.isnan(bound):
                    raise ValueError(
                        f"rule {self.table}.{col}:{which} is NaN, which no value compares "
                        f"with (every value would pass): write a number or a date, or leave "
                        f"{which} out"
                    )
                if bound == void:
                    raise ValueError(
                        f"rule {self.table}.{col}:{which} is {bound}, which every finite "
                        f"number fails: write a finite bound, or leave {which} out"
                    )
            if _above(r.min, r.max):
                raise ValueError(
                    f"rule {self.table}.{col}:min is {r.min}, above its max {r.max}, which "
                    f"every value fails: swap them, or correct the one mistyped"
                )
        return self

    def column_specs(self) -> dict[str, ColumnSpec]:
        return {
            n: ColumnSpec.model_validate({"from": s}) if isinstance(s, str) else s
            for n, s in self.columns.items()
        }


class Condition(_Strict):
    """One condition on a source column; a filter holds when all its conditions hold. A literal
    of NaN (``.nan``, or ``"NaN"`` for a number column) is refused when the mapping loads: no
    value compares with it, so the filter would hold for every row or for none."""

    column: str
    """The source column tested."""
    transforms: list[TransformSpec] = Field(default_factory=list)
    """Applied to the value before comparing (e.g. parse a legacy text date)."""
    eq: Any = None
    """Equal to this value (written as the column's type: ``true``, ``42``, ``2019-01-01``)."""
    ne: Any = None
    """Not equal to this value (NULL is not equal to anything and matches)."""
    in_: list[Any] | None = Field(None, alias="in")
    """One of these values."""
    not_in: list[Any] | None = None
    """None of these values."""
    lt: Any = None
    """Less than this number, date or text (NULL never compares)."""
    le: Any = None
    """Less than or equal to this."""
    gt: Any = None
    """Greater than this."""
    ge: Any = None
    """Greater than or equal to this."""
    before: dt.datetime | dt.date | None = None
    """Date or timestamp strictly before this (NULL is never before anything; ISO text in a
    text column is read as a date, other text never holds)."""
    after: dt.datetime | dt.date | None = None
    """Date or timestamp strictly after this."""
    is_null: bool | None = None
    """``true``: the value is NULL; ``false``: it is not."""
    matches: str | None = None
    """Text matching this regular expression (``re.search``)."""

    @field_validator("column")
    @classmethod
    def _c(cls, v: str) -> str:
        return _column(v)

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        tests = self.model_fields_set - {"column", "transforms"}
        if len(tests) != 1:
            raise ValueError(
                f"condition on {self.column} needs exactly one test "
                "(eq, ne, in, not_in, lt, le, gt, ge, before, after, is_null, matches)"
            )
        if self.matches is not None:
            re.compile(self.matches)
        return self

    @model_validator(mode="after")
    def _no_nan(self) -> Condition:
        """A literal of NaN compares with nothing (every comparison with it is false): the
        filter would hold for every row or for none, silently. Said when the mapping loads."""
        if self.test in _COMPARING:
            value = getattr(self, self.test)
            values = value if self.test in ("in_", "not_in") else [value]
            if any(is_nan(v) for v in values or []):
                raise ValueError(f"condition on {self.column}: {nan_literal(self.test)}")
        return self

    @property
    def test(self) -> str:
        ((name,),) = [tuple(self.model_fields_set - {"column", "transforms"})]
        return name


_COMPARING = ("eq", "ne", "in_", "not_in", "lt", "le", "gt", "ge")
"""The tests of a :class:`Condition` that compare the value with a literal (or a list)."""


def nan_literal(test: str) -> str:
    """Why a filter's literal of NaN is refused (at load, or converted from text by the schema
    check: :mod:`crossfade.mapping.literals`)."""
    what = "holds" if test in ("in_", "not_in") else "is"
    return (
        f"{test.rstrip('_')} {what} NaN, which no value compares with (the filter would hold "
        "for every row or for none): write a number, or leave the condition out"
    )


def is_nan(v: Any) -> bool:
    """A float or Decimal NaN (YAML's ``.nan``; numeric's ``'NaN'``, quiet or signalling)."""
    if isinstance(v, float):
        return math.isnan(v)
    return isinstance(v, decimal.Decimal) and v.is_nan()


def _above(lo: float | dt.date | None, hi: float | dt.date | None) -> bool:
    """``min`` above ``max`` (of one kind: a number and a date are the schema check's to
    refuse, :mod:`crossfade.mapping.literals`)."""
    if lo is None or hi is None or isinstance(lo, float) != isinstance(hi, float):
        return False
    try:
        return bool(lo > hi)  # type: ignore[operator]
    except TypeError:  # a date against a datetime
        return False


class FilterSpec(_Strict):
    """Source rows matching ``when`` are not migrated; each is counted and listed as filtered."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """The filter's name: filtered rows are recorded under ``<source table>:filter:<name>``."""
    when: list[Condition] = Field(min_length=1)
    """Conditions on source columns; the row is filtered when all of them hold."""


class TableMapping(_Strict):
    """What one source table becomes."""

    filters: list[FilterSpec] = Field(default_factory=list)
    """Rows matching any filter are not migrated (counted and listed)."""
    targets: list[TargetSpec] = Field(min_length=1)
    """Target rows made from each source row (one source row may feed several tables)."""


class MatchCondition(_Strict):
    """One condition of a match rule, on a mapped (target) column."""

    column: str
    """A mapped (target) column."""
    method: Literal["exact", "fuzzy"] = "exact"
    """``exact``: equal after ``normalise`` (and never on NULL/blank); ``fuzzy``: rapidfuzz
    similarity at least ``threshold``."""
    threshold: float = Field(90, ge=0, le=100)
    """Least similarity (0-100) of a ``fuzzy`` condition."""
    scorer: Literal["token_sort_ratio", "token_set_ratio", "ratio", "WRatio"] = "token_sort_ratio"
    """rapidfuzz's scorer for ``fuzzy``: ``token_sort_ratio`` ignores word order, ``token_set_ratio``
    also extra words, ``ratio`` compares as typed, ``WRatio`` weighs several."""
    normalise: list[TransformSpec] = Field(
        default_factory=lambda: list[TransformSpec](["collapse_whitespace", "casefold"])
    )
    """Applied to both values before comparing (matching only; the row keeps its value)."""


class MatchRule(_Strict):
    """Two records are the same entity when every condition holds. At least one condition is
    exact: it is the blocking key, so matching stays linear in the number of rows."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """The rule's name (shown with every merge it makes)."""
    all: list[MatchCondition] = Field(min_length=1)
    """Conditions that must all hold."""

    @model_validator(mode="after")
    def _blocking(self) -> MatchRule:
        if not any(c.method == "exact" for c in self.all):
            raise ValueError(
                f"match rule {self.name} needs at least one exact condition (the blocking key)"
            )
        return self


SurvivorshipRule = Literal[
    "most_recent_non_empty", "oldest_non_empty", "survivor", "preferred_source", "longest"
]

OPTION_DOCS: dict[str, dict[str, str]] = {
    "survivorship": {
        "most_recent_non_empty": "the value of the most recent member (by ``recency``) that "
        "has one",
        "oldest_non_empty": "the value of the oldest member that has one",
        "survivor": "the survivor's own value, even when empty",
        "preferred_source": "the first non-empty value from the most trusted source table "
        "(``sources``, in order), then the most recent",
        "longest": "the longest value (as text)",
    },
    "survivor": {
        "oldest": "the member with the oldest ``recency`` value (members without one count as "
        "oldest; then the lowest key)",
        "most_recent": "the member with the newest ``recency`` value",
        "lowest_key": "the member with the lowest key",
    },
    "method": {
        "exact": "equal after ``normalise`` (blank and NULL never match); the exact conditions "
        "of a rule are its blocking key",
        "fuzzy": "rapidfuzz similarity (``scorer``) at least ``threshold`` after ``normalise``",
    },
    "on_error": {
        "reject": "the row is rejected: a dead letter under ``<table>.<column>:transform:<name>`` "
        "or ``:cast:<type>``",
        "null": "the column is NULL (then ``default``)",
        "keep": "the source value is kept unchanged",
    },
    "on_parent_left": {
        "dead_letter": "the child leaves the target with its parent and waits (deferred) for "
        'the window, then becomes a dead letter with the reason "parent left" (at once when the '
        "parent is filtered or a dead letter)",
        "delete": "the child leaves the target with its parent; recorded as ``parent_left``, "
        "not a dead letter",
        "keep": "a child already migrated stays as it is, pointing at a key the target no longer "
        "has; its own changes still apply",
    },
    "severity": {
        "reject": "a failing row is not migrated (a dead letter in sync)",
        "warn": "reported by audit and dry-run; the row is migrated",
    },
}
"""A sentence for every value of the mapping's option lists (docs/mapping.md is built from it:
a value without one fails the reference's test)."""


class ColumnSurvivorship(_Strict):
    """A survivorship rule with its options, for one column."""

    rule: SurvivorshipRule
    """Which member's value the golden record keeps (see the survivorship rules)."""
    sources: list[str] = Field(default_factory=list)
    """For ``preferred_source``: source tables in order of trust (then most recent)."""


class Survivorship(_Strict):
    """How the golden record of a duplicate group is built."""

    recency: str | None = None
    """Target column ordering members in time (e.g. ``updated_at``). Unset: key order."""
    survivor: Literal["oldest", "most_recent", "lowest_key"] = "oldest"
    """Whose key the golden record keeps (every member's key resolves to it in the crosswalk)."""
    default: SurvivorshipRule = "most_recent_non_empty"
    """The rule of every column not under ``columns``."""
    columns: dict[str, SurvivorshipRule | ColumnSurvivorship] = Field(default_factory=dict)
    """Target column -> its own rule."""


class DedupSpec(_Strict):
    """Duplicate matching and the golden record of one target table."""

    match: list[MatchRule] = Field(min_length=1)
    """Two records are one entity when any rule holds (groups are transitive)."""
    survivorship: Survivorship = Survivorship()
    """How the golden record of a group is built."""


class MappingDefaults(_Strict):
    """Defaults for every table of the mapping."""

    phone_region: str = Field("US", pattern=r"^[A-Z]{2}$")
    """Region of phone numbers written without a country code (ISO 3166 alpha-2). Quote codes
    YAML reads as booleans: ``phone_region: "NO"`` (Norway)."""
    date_formats: list[str] = Field(default_factory=list)
    """``strptime`` formats the ``date``/``datetime`` transforms try first."""
    dayfirst: bool = False
    """Read ambiguous dates like 03/04/2020 as 3 April."""
    references_window_s: float = Field(default=300, ge=0)
    """How long a child waits for its parent when its ``references`` rule sets no ``window_s``
    (seconds)."""
    on_parent_left: ParentLeftPolicy = "dead_letter"
    """The ``on_parent_left`` of ``references`` rules that set none."""


class MappingConfig(_Strict):
    """The ``mapping`` section (see the module docstring)."""

    defaults: MappingDefaults = MappingDefaults.model_validate({})
    """Defaults for every table: phone region, date formats, the parent window and policy."""
    tables: dict[str, TableMapping] = Field(default_factory=dict)
    """Source table (schema.table, also listed under ``tables:``) -> its mapping."""
    dedup: dict[str, DedupSpec] = Field(default_factory=dict)
    """Target table -> duplicate matching and survivorship."""
    transforms: dict[str, str] = Field(default_factory=dict)
    """User transforms: name -> ``module:function`` (a factory returning ``value -> value``). Its
    module must be under a prefix listed in the configuration's ``transform_modules``."""

    @field_validator("tables", "dedup")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for t in v:
            _table(t)
        return v

    _transform_modules: tuple[str, ...] = PrivateAttr(default=())
    """Module prefixes user transforms may be imported from: set from the configuration's
    ``transform_modules`` (never from the mapping itself)."""
    _user_transforms: tuple[str, ...] = PrivateAttr(default=())
    """``module:function`` of every user transform the mapping names (seen while validating)."""

    @model_validator(mode="after")
    def _compiles(self) -> MappingConfig:
        # every transform name resolves, every built-in's argument fits: a typo fails at load,
        # naming it. No user code runs here (the engine's check builds stand-ins).
        if _CHECK is None:
            # nothing imported crossfade.mapping yet (a library caller): the shape is checked, and
            # the engine checks names and arguments when it compiles the mapping (ConfigError),
            # and refuses an unlisted module:function then (Registry). The CLI installs the check.
            return self
        self._user_transforms = tuple(dict.fromkeys(_CHECK(self)))
        return self

    @property
    def user_transform_paths(self) -> tuple[str, ...]:
        """``module:function`` of every user transform the mapping names."""
        return self._user_transforms

    @property
    def transform_modules(self) -> tuple[str, ...]:
        """Module prefixes user transforms may be imported from (see :meth:`allow_modules`)."""
        return self._transform_modules

    def allow_modules(self, prefixes: tuple[str, ...]) -> None:
        """Set by the configuration that holds this mapping, from its ``transform_modules``.

        Raises ValueError (one line per refused transform) when a ``module:function`` the mapping
        names is under none of ``prefixes``; nothing is imported either way."""
        refused = refused_paths(self._user_transforms, prefixes)
        if refused:
            raise ValueError("; ".join(refusal(p, prefixes) for p in refused))
        self._transform_modules = tuple(prefixes)


MappingCheck = Callable[[MappingConfig], Iterable[str]]
"""Checks a mapping against the engine without running user code: raises ValueError (one line
naming the problem) for an unknown transform or a built-in's bad argument; returns the
``module:function`` paths of the user transforms the mapping names."""

_CHECK: MappingCheck | None = None


def install_check(check: MappingCheck) -> None:
    """Installed by ``crossfade.mapping`` when it is imported; :class:`MappingConfig` runs it on
    every validation from then on (before it, a mapping is checked for shape only; the engine
    checks the rest when it compiles)."""
    global _CHECK
    _CHECK = check


def module_allowed(path: str, prefixes: Iterable[str]) -> bool:
    """Whether ``module:function``'s module is one of ``prefixes`` or inside one (``acme`` allows
    ``acme.rules:f``, not ``acme_evil:f``)."""
    mod = path.partition(":")[0]
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def refused_paths(paths: Iterable[str], prefixes: Iterable[str]) -> list[str]:
    """The import paths among ``paths`` that no prefix of ``prefixes`` allows, in order."""
    allowed = tuple(prefixes)
    return list(dict.fromkeys(p for p in paths if not module_allowed(p, allowed)))


def refusal(path: str, prefixes: Iterable[str]) -> str:
    """One line saying why a user transform may not run, and what to do."""
    listed = ", ".join(prefixes) or "none"
    return (
        f"transform {path!r} is not allowed: a mapping runs built-ins, transforms published by an "
        f"installed package in the {ENTRY_POINT_GROUP!r} entry point group, and module:function "
        f"under a prefix the operator lists in `transform_modules` (listed: {listed})"
    )
