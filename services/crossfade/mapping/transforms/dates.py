"""Date and timestamp transforms (formats tried in order, an optional time zone)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from crossfade.mapping.transforms.base import Transform, TransformError, short_repr, text_of

# Dates
# ---------------------------------------------------------------------------------------------


def _parse_datetime(s: str, formats: list[str], dayfirst: bool, fallback: bool) -> dt.datetime:
    for f in formats:
        try:
            return dt.datetime.strptime(s, f)
        except ValueError:
            continue
    try:
        return dt.datetime.fromisoformat(s)
    except ValueError:
        pass
    if fallback:
        from dateutil import parser as du

        try:
            return du.parse(s, dayfirst=dayfirst)
        except (ValueError, OverflowError):
            pass
    raise TransformError(
        f"{short_repr(s)} is not a date in a known format ({', '.join(formats) or 'ISO 8601'})"
    )


def date(
    formats: list[str] | None = None, dayfirst: bool = False, fallback: bool = True
) -> Transform:
    """Parse a legacy date into a ``date``.

    ``formats`` (``strptime`` patterns such as ``%d/%m/%Y``) are tried in order, then ISO 8601,
    then (with ``fallback``) python-dateutil's parser with ``dayfirst``. A ``date``/``datetime``
    input is taken as is (a datetime loses its time).
    """
    fmts = list(formats or [])

    def t(v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, dt.datetime):
            return v.date()
        if isinstance(v, dt.date):
            return v
        s = text_of(v, "date").strip()
        if not s:
            return None
        return _parse_datetime(s, fmts, dayfirst, fallback).date()

    return t


def datetime(
    formats: list[str] | None = None,
    dayfirst: bool = False,
    fallback: bool = True,
    timezone: str | None = None,
) -> Transform:
    """Parse a legacy timestamp into a ``datetime``; with ``timezone`` (IANA name), naive values
    are taken as local time there and the result is aware."""
    fmts = list(formats or [])
    tz = None
    if timezone is not None:
        from zoneinfo import ZoneInfo

        tz = ZoneInfo(timezone)

    def t(v: Any) -> Any:
        if v is None:
            return None
        if isinstance(v, dt.datetime):
            out = v
        elif isinstance(v, dt.date):
            out = dt.datetime(v.year, v.month, v.day)
        else:
            s = text_of(v, "datetime").strip()
            if not s:
                return None
            out = _parse_datetime(s, fmts, dayfirst, fallback)
        if tz is not None and out.tzinfo is None:
            out = out.replace(tzinfo=tz)
        return out

    return t
