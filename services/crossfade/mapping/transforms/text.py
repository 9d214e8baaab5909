"""Text transforms: whitespace and case, nulls and defaults, patterns, several columns into one
value, lookups; and accent stripping for matching."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from crossfade.mapping.transforms.base import Transform, TransformError, short_repr

# ---------------------------------------------------------------------------------------------
# Whitespace and case
# ---------------------------------------------------------------------------------------------

WHITESPACE = re.compile(r"\s+")


def trim() -> Transform:
    """Strip leading and trailing whitespace (non-text values pass through)."""
    return lambda v: v.strip() if isinstance(v, str) else v


def collapse_whitespace() -> Transform:
    """Strip, and turn every inner run of whitespace (tabs, newlines, NBSP...) into one space."""
    return lambda v: WHITESPACE.sub(" ", v).strip() if isinstance(v, str) else v


def lower() -> Transform:
    """Lower-case text."""
    return lambda v: v.lower() if isinstance(v, str) else v


def upper() -> Transform:
    """Upper-case text."""
    return lambda v: v.upper() if isinstance(v, str) else v


def casefold() -> Transform:
    """Unicode case folding (``Straße`` -> ``strasse``): for comparing, not for display."""
    return lambda v: v.casefold() if isinstance(v, str) else v


def null_if(values: list[Any] | None = None, blank: bool = True) -> Transform:
    """NULL for blank text (with ``blank``) and for any of ``values`` (e.g. ``['N/A', '-']``)."""
    nulls = set(values or [])

    def t(v: Any) -> Any:
        if v is None:
            return None
        if blank and isinstance(v, str) and not v.strip():
            return None
        try:
            return None if v in nulls else v
        except TypeError:  # unhashable (a list, a dict)
            return v

    return t


def default(value: Any) -> Transform:
    """``value`` where the input is NULL."""
    return lambda v: value if v is None else v


def const(value: Any) -> Transform:
    """Always ``value`` (whatever the input)."""
    return lambda v: value


def replace(pattern: str, repl: str = "") -> Transform:
    """``re.sub(pattern, repl, value)`` on text."""
    rx = re.compile(pattern)
    return lambda v: rx.sub(repl, v) if isinstance(v, str) else v


def digits() -> Transform:
    """Keep only the digits of text."""
    return lambda v: "".join(c for c in v if c.isdigit()) if isinstance(v, str) else v


def truncate(length: int) -> Transform:
    """The first ``length`` characters of text."""
    if length < 0:
        raise ValueError("length must be >= 0")
    return lambda v: v[:length] if isinstance(v, str) else v


# ---------------------------------------------------------------------------------------------
# Several columns in, one value out
# ---------------------------------------------------------------------------------------------


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def concat(sep: str = " ", skip_empty: bool = True) -> Transform:
    """Join a list of values (``from: [street, city]``) with ``sep``; NULL if nothing is left."""

    def t(v: Any) -> Any:
        items = v if isinstance(v, list | tuple) else [v]
        parts = [
            display_text(x).strip() if skip_empty else display_text(x)
            for x in items
            if not (skip_empty and _empty(x))
        ]
        if not parts:
            return None
        return sep.join(parts)

    return t


def display_text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, dt.date | dt.datetime | dt.time):
        return v.isoformat()
    return str(v)


def coalesce() -> Transform:
    """The first non-empty value of a list (``from: [mobile, phone]``)."""

    def t(v: Any) -> Any:
        items = v if isinstance(v, list | tuple) else [v]
        for x in items:
            if not _empty(x):
                return x
        return None

    return t


def lookup(
    table: Mapping[str, Any],
    default: Any = None,
    on_missing: str = "error",
    case_sensitive: bool = False,
) -> Transform:
    """Map a code through ``table`` (e.g. ``{A: active, I: inactive}``).

    ``on_missing``: ``error`` (TransformError), ``default`` (``default``), ``keep`` (the input).
    Keys compare as text, trimmed, case-insensitive unless ``case_sensitive``.
    """
    if on_missing not in ("error", "default", "keep"):
        raise ValueError("on_missing must be error, default or keep")

    def norm(k: Any) -> str:
        s = str(k).strip()
        return s if case_sensitive else s.casefold()

    index = {norm(k): v for k, v in table.items()}

    def t(v: Any) -> Any:
        if v is None:
            return None
        hit = index.get(norm(v), _MISSING)
        if hit is not _MISSING:
            return hit
        if on_missing == "default":
            return default
        if on_missing == "keep":
            return v
        raise TransformError(
            f"{short_repr(v)} is not in the lookup table ({', '.join(sorted(map(str, table))[:8])})"
        )

    return t


_MISSING = object()


def strip_accents(s: str) -> str:
    """``Zoë Müller`` -> ``Zoe Muller`` (for matching, not display)."""
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
