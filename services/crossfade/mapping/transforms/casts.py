"""Casts (a column's ``cast:``, and the ``cast`` transform): the value as the target column's
Python type."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable
from typing import Any

from crossfade.mapping.transforms.base import Transform, TransformError, short_repr
from crossfade.mapping.transforms.dates import date, datetime
from crossfade.mapping.transforms.text import display_text

# Casts (``cast:`` of a column): the value as the target column's Python type
# ---------------------------------------------------------------------------------------------

_TRUE = frozenset({"t", "true", "y", "yes", "1", "on"})
_FALSE = frozenset({"f", "false", "n", "no", "0", "off"})


def _cast_int(v: Any) -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float | decimal.Decimal):
        if v != int(v):
            raise TransformError(f"{short_repr(v)} is not a whole number")
        return int(v)
    s = str(v).strip().replace(",", "").replace("_", "")
    try:
        return int(s)
    except ValueError:
        raise TransformError(f"{short_repr(v)} is not an integer") from None


def _cast_numeric(v: Any) -> decimal.Decimal:
    if isinstance(v, decimal.Decimal):
        return v
    if isinstance(v, bool):
        return decimal.Decimal(int(v))
    if isinstance(v, int):
        return decimal.Decimal(v)
    if isinstance(v, float):
        return decimal.Decimal(repr(v))
    try:
        return decimal.Decimal(str(v).strip().replace(",", ""))
    except decimal.InvalidOperation:
        raise TransformError(f"{short_repr(v)} is not a number") from None


def _cast_float(v: Any) -> float:
    try:
        return float(v.strip().replace(",", "")) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        raise TransformError(f"{short_repr(v)} is not a number") from None


def _cast_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise TransformError(f"{short_repr(v)} is not a boolean (true/false, yes/no, y/n, 1/0)")


def _cast_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    return display_text(v)


def _cast_uuid(v: Any) -> Any:
    import uuid

    if isinstance(v, uuid.UUID):
        return v
    try:
        return uuid.UUID(str(v).strip())
    except ValueError:
        raise TransformError(f"{short_repr(v)} is not a UUID") from None


def _cast_json(v: Any) -> Any:
    import json

    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            raise TransformError(f"{short_repr(v)} is not JSON") from None
    return v


_DATE_T = date()
_DATETIME_T = datetime()


def _cast_timestamptz(v: Any) -> dt.datetime:
    out = _DATETIME_T(v)
    if out.tzinfo is None:
        out = out.replace(tzinfo=dt.UTC)
    return out


def _cast_timestamp(v: Any) -> dt.datetime:
    out = _DATETIME_T(v)
    if out.tzinfo is not None:
        out = out.astimezone(dt.UTC).replace(tzinfo=None)
    return out


CASTS: dict[str, Callable[[Any], Any]] = {
    "text": _cast_text,
    "integer": _cast_int,
    "bigint": _cast_int,
    "smallint": _cast_int,
    "numeric": _cast_numeric,
    "float": _cast_float,
    "boolean": _cast_bool,
    "date": lambda v: _DATE_T(v),
    "timestamp": _cast_timestamp,
    "timestamptz": _cast_timestamptz,
    "uuid": _cast_uuid,
    "json": _cast_json,
}
"""``cast:`` names and the function that casts a non-NULL value (raising TransformError)."""


def cast(to: str) -> Transform:
    """The value as ``to`` (a ``cast:`` type: ``integer``, ``date``, ``boolean``...); a value that
    is not one raises TransformError. Same as a column's ``cast:``, usable inside a chain."""
    fn = CASTS.get(to)
    if fn is None:
        raise ValueError(f"unknown cast {to!r} (one of {', '.join(CASTS)})")
    return lambda v: None if v is None else fn(v)
