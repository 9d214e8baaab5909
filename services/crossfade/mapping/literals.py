"""Literals of filters and rules against the type of the column they test.

A YAML literal carries YAML's type, not the column's: ``lt: "2019-01-01"`` is text, ``eq: flase``
is text, ``eq: NO`` is the boolean false. Compared with a ``date`` or ``boolean`` value such a
literal never matches, so a filter would silently keep every row (or a rule reject every row).
The schema check (:mod:`crossfade.mapping.schema_check`) runs these checks with the column's
type family (:func:`~crossfade.mapping.schema_check.category`):

* a filter literal that converts unambiguously to the column's type (ISO date text for a date,
  a number written as text for a number, ``"true"`` for a boolean, UUID text for a uuid) is
  converted, and a warning says so;
* anything else is an error naming the config path, the column, both types and the fix.

Rules (``min``/``max``/``enum``) are checked the same way and never converted: their checks are
compiled already, and a rule that can only fail is a mistake to fix in the mapping.
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from crossfade.config.mapping import is_nan, nan_literal
from crossfade.mapping.filters import value_kind

if TYPE_CHECKING:
    from crossfade.config.mapping import ColumnRules, Condition

# column family (schema_check.category) -> the value kinds (engine.value_kind) that compare with it
_KINDS = {
    "text": {"text"},
    "int": {"number"},
    "numeric": {"number"},
    "bool": {"bool"},
    "date": {"date"},
    "timestamp": {"timestamp", "date"},
    "timestamptz": {"timestamp", "date"},
    "uuid": {"uuid"},
    "json": {"json", "text", "number", "bool"},
}
_SHOW = {
    "text": "text",
    "number": "a number",
    "bool": "a boolean",
    "date": "a date",
    "timestamp": "a timestamp",
    "uuid": "a UUID",
    "json": "JSON",
    "bytes": "bytes",
}
_FIX = {
    "text": "quote it",
    "int": "write a number, unquoted",
    "numeric": "write a number, unquoted",
    "bool": "write true or false, unquoted",
    "date": "write the date unquoted (2019-01-01) or use before:/after:",
    "timestamp": "write the timestamp unquoted (2019-01-01 10:00:00) or use before:/after:",
    "timestamptz": "write the timestamp unquoted (2019-01-01T10:00:00Z) or use before:/after:",
    "uuid": "quote the UUID",
}
_TRUE = {"true", "t", "yes", "y", "on", "1"}
_FALSE = {"false", "f", "no", "n", "off", "0"}
_YAML_BOOL = " (YAML reads unquoted yes/no/on/off/y/n as booleans: quote a code like 'NO')"


def _convert(v: Any, cat: str) -> tuple[bool, Any]:
    """(converted?, value): ``v`` in the column's type when that is unambiguous."""
    if not isinstance(v, str):
        if cat in ("int", "numeric") or cat == "text":
            return False, v
        if cat in ("timestamp", "timestamptz") and isinstance(v, dt.date):
            return False, v
        return False, v
    s = v.strip()
    try:
        if cat in ("int", "numeric"):
            d = decimal.Decimal(s)
            return True, int(d) if d == d.to_integral_value() and cat == "int" else d
        if cat == "date":
            return True, dt.date.fromisoformat(s)
        if cat in ("timestamp", "timestamptz"):
            return True, dt.datetime.fromisoformat(s)
        if cat == "uuid":
            return True, uuid.UUID(s)
        if cat == "bool" and s.lower() in _TRUE | _FALSE:
            return True, s.lower() in _TRUE
    except (ValueError, decimal.InvalidOperation):
        pass
    return False, v


def _problem(v: Any, cat: str, column: str, type_sql: str, where: str, what: str) -> str:
    kind = value_kind(v) or type(v).__name__
    hint = _YAML_BOOL if kind == "bool" and cat == "text" else ""
    return (
        f"{where}: {what} {v!r} is {_SHOW.get(kind, kind)}, but {column} is {type_sql}: it would "
        f"never compare equal or in order; {_FIX.get(cat, 'write it as the column type')}{hint}"
    )


class Findings(Protocol):
    """Where the checks below put what they find (``SchemaReport`` in
    :mod:`crossfade.mapping.schema_check`, which imports this module): errors and warnings."""

    @property
    def errors(self) -> list[str]: ...
    @property
    def warnings(self) -> list[str]: ...


def _fits(v: Any, cat: str) -> bool:
    kinds = _KINDS.get(cat)
    return v is None or kinds is None or value_kind(v) in kinds


def check_condition(
    c: Condition, cat: str, column: str, type_sql: str, where: str, report: Findings
) -> Condition:
    """``c`` with its literal converted to the column's type where needed (a warning says so),
    or ``c`` unchanged; an impossible comparison is an error in ``report``."""
    test = c.test
    if test in ("is_null",):
        return c
    if test == "matches":
        if cat not in ("text", "json"):
            report.errors.append(
                f"{where}: matches tests text, but {column} is {type_sql}; add a transform "
                "that makes text of it (e.g. `transforms: [{cast: text}]`) or use eq/in"
            )
        return c
    if test in ("before", "after"):
        if cat not in ("date", "timestamp", "timestamptz", "text"):
            report.errors.append(
                f"{where}: {test} tests dates, but {column} is {type_sql}; use lt/gt for numbers"
            )
        return c
    field = "in_" if test == "in_" else test
    value = getattr(c, field)
    values = list(value or []) if test in ("in_", "not_in") else [value]
    out: list[Any] = []
    changed = False
    for v in values:
        if _fits(v, cat):
            out.append(v)
            continue
        ok, conv = _convert(v, cat)
        if ok and is_nan(conv):  # 'NaN' as text, a number for a numeric column
            report.errors.append(f"{where}: {v!r} read as {type_sql}: {nan_literal(test)}")
            out.append(v)
            continue
        if ok and _fits(conv, cat):
            report.warnings.append(
                f"{where}: {test.rstrip('_')} {v!r} is text and {column} is {type_sql}: "
                f"compared as {conv!r} (write it unquoted to silence this)"
            )
            out.append(conv)
            changed = True
            continue
        report.errors.append(_problem(v, cat, column, type_sql, where, test.rstrip("_")))
        out.append(v)
    if not changed:
        return c
    new = out if test in ("in_", "not_in") else out[0]
    return c.model_copy(update={field: new})


def check_rules(
    r: ColumnRules, cat: str, column: str, type_sql: str, where: str, report: Findings
) -> None:
    """Errors in ``report`` for ``min``/``max``/``enum`` values that cannot compare with the
    produced column type."""
    for name in ("min", "max"):
        v = getattr(r, name)
        if v is None:
            continue
        if cat in ("int", "numeric") and value_kind(v) == "number":
            continue
        if cat in ("date", "timestamp", "timestamptz") and value_kind(v) in ("date", "timestamp"):
            continue
        if cat in ("json", "other"):
            continue
        report.errors.append(
            _problem(v, cat, column, type_sql, f"{where}.{name}", name)
            if cat in _FIX and cat != "text"
            else f"{where}.{name}: {column} is {type_sql}; min/max compare numbers or dates "
            "(use min_length/max_length for text, or a cast)"
        )
    for v in r.enum or []:
        if not _fits(v, cat):
            report.errors.append(_problem(v, cat, column, type_sql, f"{where}.enum", "enum value"))
