"""Filters of the mapping: which source rows are not migrated, and why.

A filter holds when every condition of its ``when`` holds. A literal is compared as the value's
type; one that cannot be compared with the value (text against a date, a number against text)
raises :class:`FilterError`, which the mapper turns into a rejected row under the filter's rule:
never a silent "no match" (:mod:`crossfade.mapping.literals` refuses or converts such literals
before any row is read when the column's type is known).
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crossfade.config.mapping import is_nan
from crossfade.mapping.transforms import Transform, TransformError

if TYPE_CHECKING:
    from crossfade.config.mapping import Condition, FilterSpec


def comparable(bound: Any, v: Any) -> Any:
    """The bound in the value's type where that is what a person meant (a date bound against a
    datetime value, a float bound against a Decimal)."""
    import decimal

    if bound is None:
        return None
    if (
        isinstance(v, dt.datetime)
        and isinstance(bound, dt.date)
        and not isinstance(bound, dt.datetime)
    ):
        out = dt.datetime(bound.year, bound.month, bound.day)
        return out.replace(tzinfo=v.tzinfo) if v.tzinfo is not None else out
    if isinstance(v, decimal.Decimal) and isinstance(bound, float):
        return decimal.Decimal(repr(bound))
    return bound


def out_of_range(v: Any, lo: Any, hi: Any) -> str | None:
    """Why ``v`` (not NULL) breaks a ``min``/``max`` rule (``lo``/``hi``, None for no bound);
    None when it is within. NaN is within no range: every comparison with a float NaN is false
    and one with a Decimal NaN (numeric 'NaN') raises InvalidOperation, so it is said first.
    The infinities compare as they are: below or above any finite bound."""
    if is_nan(v):
        return f"{v!r} is not a number (NaN): within no min/max range"
    low, high = comparable(lo, v), comparable(hi, v)
    try:
        if low is not None and v < low:
            return f"{v!r} is below the minimum {lo}"
        if high is not None and v > high:
            return f"{v!r} is above the maximum {hi}"
    except (TypeError, decimal.InvalidOperation):
        return f"{v!r} cannot be compared with {lo}..{hi}"
    return None


class FilterError(ValueError):
    """A filter's literal cannot be compared with the value it tests (a quoted date against a
    date, text against a boolean): the row is rejected under the filter's rule, never silently
    treated as "no match" (the schema check refuses such filters on untransformed columns)."""


def value_kind(v: Any) -> str | None:
    """The family of a Python value in the normal form: bool, number, text, date, timestamp,
    uuid, json, bytes; None for NULL or anything else."""
    import decimal
    import uuid

    if v is None:
        return None
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float | decimal.Decimal):
        return "number"
    if isinstance(v, str):
        return "text"
    if isinstance(v, dt.datetime):
        return "timestamp"
    if isinstance(v, dt.date):
        return "date"
    if isinstance(v, uuid.UUID):
        return "uuid"
    if isinstance(v, dict | list):
        return "json"
    if isinstance(v, bytes | memoryview):
        return "bytes"
    return None


@dataclass
class CompiledFilter:
    source: str
    spec: FilterSpec
    conditions: list[tuple[Condition, Transform]]

    @property
    def rule(self) -> str:
        return f"{self.source}:filter:{self.spec.name}"

    def match(self, row: Mapping[str, Any]) -> str | None:
        """The reason when every condition holds, else None. Raises :class:`FilterError` when a
        literal cannot be compared with the value."""
        reasons = []
        for cond, transform in self.conditions:
            raw = row.get(cond.column)
            try:
                v = transform(raw)
            except (TransformError, ValueError, TypeError):
                return None  # a value the condition's transforms cannot read does not filter
            ok, why = _test(cond, v)
            if not ok:
                return None
            reasons.append(why)
        return " and ".join(reasons)


def _incomparable(c: Condition, v: Any, literal: Any) -> FilterError:
    return FilterError(
        f"{c.column} is {value_kind(v) or type(v).__name__} ({_show(v)}) and the filter's "
        f"{c.test.rstrip('_')} compares it with {value_kind(literal) or type(literal).__name__} "
        f"{literal!r}: write the literal as the column's type"
    )


def _same_kind(c: Condition, v: Any, literals: Any) -> None:
    kind = value_kind(v)
    for lit in literals:
        lk = value_kind(lit)
        if kind is not None and lk is not None and lk != kind:
            raise _incomparable(c, v, lit)


def _test(c: Condition, v: Any) -> tuple[bool, str]:
    t = c.test
    col = c.column
    if t == "is_null":
        return (v is None) == c.is_null, f"{col} is {'NULL' if v is None else 'set'}"
    if t in ("eq", "ne", "in_", "not_in"):
        lits = [getattr(c, t)] if t in ("eq", "ne") else list(getattr(c, t) or [])
        _same_kind(c, v, lits)
        if t == "eq":
            return v == c.eq, f"{col} = {v!r}"
        if t == "ne":
            return v != c.ne, f"{col} = {v!r}"
        if t == "in_":
            return v in lits, f"{col} = {v!r}"
        return v not in lits, f"{col} = {v!r}"
    if v is None:
        return False, ""
    if t == "matches":
        if not isinstance(v, str):
            raise _incomparable(c, v, c.matches)
        return re.search(c.matches or "", v) is not None, f"{col} = {v!r}"
    if t in ("before", "after"):
        bound = c.before if t == "before" else c.after
        if not isinstance(v, str | dt.date):
            raise _incomparable(c, v, bound)
        vv, bb = _as_moment(v), _as_moment(bound)
        if vv is None or bb is None:
            return False, ""  # text that is no date: the condition cannot read it
        if isinstance(vv, dt.datetime) and isinstance(bb, dt.datetime):
            if (vv.tzinfo is None) != (bb.tzinfo is None):
                vv, bb = vv.replace(tzinfo=None), bb.replace(tzinfo=None)
        else:  # a date against a timestamp: compare the dates
            vv = vv.date() if isinstance(vv, dt.datetime) else vv
            bb = bb.date() if isinstance(bb, dt.datetime) else bb
        held = vv < bb if t == "before" else vv > bb
        return held, f"{col} {_show(v)} is {t} {_show(bound)}"
    literal = getattr(c, t)
    bound = comparable(literal, v)
    op = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}[t]
    try:
        held = {"lt": v < bound, "le": v <= bound, "gt": v > bound, "ge": v >= bound}[t]
    except TypeError:
        raise _incomparable(c, v, literal) from None
    if value_kind(v) != value_kind(bound) and value_kind(bound) is not None:
        raise _incomparable(c, v, literal)  # e.g. text compared with text-looking numbers
    return held, f"{col} {_show(v)} {op} {_show(literal)}"


def _as_moment(v: Any) -> dt.date | None:
    if isinstance(v, dt.date):
        return v
    if isinstance(v, str):
        try:
            return dt.datetime.fromisoformat(v.strip())
        except ValueError:
            return None
    return None


def _show(v: Any) -> str:
    if isinstance(v, dt.datetime) and v.time() == dt.time(0) and v.tzinfo is None:
        return v.date().isoformat()
    if isinstance(v, dt.datetime | dt.date):
        return v.isoformat()
    return repr(v)
