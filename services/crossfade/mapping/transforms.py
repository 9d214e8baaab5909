"""Built-in value transforms, and the registry user transforms join.

A *transform factory* takes keyword arguments from the mapping config and returns a *transform*:
a pure function ``value -> value`` on the mapping's normal form (Python values as psycopg returns
them: ``str``, ``int``, ``Decimal``, ``date``, ``datetime``...). Transforms compose left to right
(``transforms: [trim, lower]``).

Contract of a transform:

* ``None`` passes through unchanged unless the transform says otherwise (``default``,
  ``coalesce``, ``concat``, ``const``).
* A value it cannot handle raises :class:`TransformError` with a message a person can act on
  ("'0207 946 09' is not a valid GB phone number"); the column's ``on_error`` decides whether
  that rejects the row, becomes NULL, or keeps the value.
* It is deterministic and has no side effects (no network: email deliverability is never
  checked), so verify can re-run the mapping and expect the same answer.

In YAML a transform is named alone (``email``), with arguments (``{phone: {region: GB}}``), or
with its one main argument (``{split_name: first}``). User transforms are registered under a name
in ``mapping.transforms`` as ``module:function`` (a factory as above), or published by a package
in the ``crossfade.transforms`` entry point group.

A mapping is data, not code: validating it never imports or calls a user transform
(:func:`validating`), and a ``module:function`` runs only when its module is under a prefix the
operator lists in the configuration's ``transform_modules`` (the mapping file cannot widen it).
"""

from __future__ import annotations

import datetime as dt
import decimal
import importlib
import inspect
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from importlib import metadata
from typing import Any

from crossfade.config.mapping import (
    ENTRY_POINT_GROUP,
    module_allowed,
    refusal,
)

Transform = Callable[[Any], Any]
TransformFactory = Callable[..., Transform]


class TransformError(ValueError):
    """A value the transform cannot turn into a valid output (the message names the value)."""


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _text(v: Any, what: str) -> str:
    if isinstance(v, str):
        return v
    raise TransformError(f"{what} expects text, got {type(v).__name__} {_short(v)}")


# ---------------------------------------------------------------------------------------------
# Whitespace and case
# ---------------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")


def trim() -> Transform:
    """Strip leading and trailing whitespace (non-text values pass through)."""
    return lambda v: v.strip() if isinstance(v, str) else v


def collapse_whitespace() -> Transform:
    """Strip, and turn every inner run of whitespace (tabs, newlines, NBSP...) into one space."""
    return lambda v: _WS.sub(" ", v).strip() if isinstance(v, str) else v


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
            _display(x).strip() if skip_empty else _display(x)
            for x in items
            if not (skip_empty and _empty(x))
        ]
        if not parts:
            return None
        return sep.join(parts)

    return t


def _display(v: Any) -> str:
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
            f"{_short(v)} is not in the lookup table ({', '.join(sorted(map(str, table))[:8])})"
        )

    return t


_MISSING = object()


# ---------------------------------------------------------------------------------------------
# Email
# ---------------------------------------------------------------------------------------------


def email(lowercase: bool = True) -> Transform:
    """Validate and normalise an email address with email-validator (syntax only, no DNS).

    The domain is always lower-cased (IDNA-normalised); the local part too with ``lowercase``
    (true of every mainstream provider, and what dedup wants). Invalid addresses raise
    TransformError with email-validator's reason.
    """
    from email_validator import EmailNotValidError, validate_email

    def t(v: Any) -> Any:
        if v is None:
            return None
        s = _text(v, "email").strip()
        try:
            res = validate_email(s, check_deliverability=False, allow_smtputf8=True)
        except EmailNotValidError as exc:
            raise TransformError(f"{_short(s)} is not a valid email address ({exc})") from None
        out = res.normalized
        if lowercase:
            local, _, domain = out.rpartition("@")
            out = f"{local.lower()}@{domain.lower()}"
        return out

    return t


def is_valid_email(value: Any) -> bool:
    """True when ``value`` is a syntactically valid email address (email-validator, no DNS)."""
    try:
        email()(value)
    except TransformError:
        return False
    return value is not None


# ---------------------------------------------------------------------------------------------
# Phone numbers
# ---------------------------------------------------------------------------------------------


def phone(region: str = "US", format: str = "E164", require_valid: bool = True) -> Transform:  # noqa: A002
    """Parse a phone number with phonenumbers and format it (E.164 by default: ``+442079460958``).

    ``region`` is the default region for numbers written without a country code (ISO 3166
    alpha-2). ``require_valid`` refuses numbers that parse but cannot exist (wrong length for
    the region); without it, any parseable number is formatted.
    """
    import phonenumbers

    fmt = {
        "E164": phonenumbers.PhoneNumberFormat.E164,
        "INTERNATIONAL": phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        "NATIONAL": phonenumbers.PhoneNumberFormat.NATIONAL,
    }.get(format.upper())
    if fmt is None:
        raise ValueError("format must be E164, INTERNATIONAL or NATIONAL")
    region = region.upper()

    def t(v: Any) -> Any:
        if v is None:
            return None
        s = str(v).strip() if isinstance(v, int) else _text(v, "phone").strip()
        if not s:
            raise TransformError("empty phone number")
        try:
            num = phonenumbers.parse(s, region)
        except phonenumbers.NumberParseException as exc:
            raise TransformError(f"{_short(s)} is not a phone number ({exc})") from None
        if require_valid and not phonenumbers.is_valid_number(num):
            raise TransformError(
                f"{_short(s)} is not a valid phone number (default region {region})"
            )
        return phonenumbers.format_number(num, fmt)

    return t


# ---------------------------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------------------------

_PARTICLES = frozenset(
    {
        "van",
        "von",
        "der",
        "den",
        "de",
        "del",
        "della",
        "da",
        "di",
        "du",
        "la",
        "le",
        "ten",
        "ter",
        "bin",
        "al",
    }
)
_NAME_TOKEN = re.compile(r"([^\s\-']+)")


def _cap_token(tok: str) -> str:
    low = tok.lower()
    if low.startswith("mc") and len(tok) > 2:
        return "Mc" + low[2:].capitalize()
    return low.capitalize()


def _name_case(s: str) -> str:
    words = s.split(" ")
    out = []
    for i, w in enumerate(words):
        if i > 0 and w.lower() in _PARTICLES:
            out.append(w.lower())
        else:
            out.append(_NAME_TOKEN.sub(lambda m: _cap_token(m.group(1)), w))
    return " ".join(out)


def name(case: str = "auto") -> Transform:
    """Tidy a person's name: collapse whitespace, fix the case.

    ``case``: ``auto`` re-cases names written all upper or all lower (``JOHN O'NEIL`` -> ``John
    O'Neil``, ``mary mcdonald`` -> ``Mary McDonald``, particles like ``van`` stay lower) and keeps
    mixed case as typed (``DeVito``); ``title`` always re-cases; ``keep`` only fixes spacing.
    """
    if case not in ("auto", "title", "keep"):
        raise ValueError("case must be auto, title or keep")

    def t(v: Any) -> Any:
        if v is None:
            return None
        s = _WS.sub(" ", _text(v, "name")).strip()
        if case == "keep" or not s:
            return s
        if case == "title" or s.isupper() or s.islower():
            return _name_case(s)
        return s

    return t


_SUFFIXES = frozenset({"jr", "jr.", "sr", "sr.", "ii", "iii", "iv", "phd", "md"})
_TITLES = frozenset({"mr", "mr.", "mrs", "mrs.", "ms", "ms.", "miss", "dr", "dr.", "prof", "prof."})


def split_name_parts(full: str) -> dict[str, str | None]:
    """Split a full name into ``first``, ``middle``, ``last`` (``Last, First M.`` understood).

    Leading titles (Mr, Dr) and trailing suffixes (Jr, III) are dropped; particles stay with the
    last name (``Ludwig van Beethoven`` -> last ``van Beethoven``).
    """
    s = _WS.sub(" ", full).strip()
    if "," in s:
        last, _, rest = s.partition(",")
        words = rest.split()
        words = [w for w in words if w.lower() not in _TITLES and w.lower() not in _SUFFIXES]
        return {
            "first": words[0] if words else None,
            "middle": " ".join(words[1:]) or None,
            "last": last.strip() or None,
        }
    words = s.split()
    while words and words[0].lower() in _TITLES:
        words = words[1:]
    while len(words) > 1 and words[-1].lower().strip(",") in _SUFFIXES:
        words = words[:-1]
    if not words:
        return {"first": None, "middle": None, "last": None}
    if len(words) == 1:
        return {"first": words[0], "middle": None, "last": None}
    # particles before the last word belong to the last name
    i = len(words) - 1
    while i > 1 and words[i - 1].lower() in _PARTICLES:
        i -= 1
    return {"first": words[0], "middle": " ".join(words[1:i]) or None, "last": " ".join(words[i:])}


def split_name(part: str = "first") -> Transform:
    """One part (``first``, ``middle``, ``last``) of a full name; see :func:`split_name_parts`."""
    if part not in ("first", "middle", "last"):
        raise ValueError("part must be first, middle or last")

    def t(v: Any) -> Any:
        if v is None:
            return None
        return split_name_parts(_text(v, "split_name"))[part]

    return t


# ---------------------------------------------------------------------------------------------
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
        f"{_short(s)} is not a date in a known format ({', '.join(formats) or 'ISO 8601'})"
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
        s = _text(v, "date").strip()
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
            s = _text(v, "datetime").strip()
            if not s:
                return None
            out = _parse_datetime(s, fmts, dayfirst, fallback)
        if tz is not None and out.tzinfo is None:
            out = out.replace(tzinfo=tz)
        return out

    return t


# ---------------------------------------------------------------------------------------------
# Countries
# ---------------------------------------------------------------------------------------------

_COUNTRY_ALIASES = {
    "uk": "GB",
    "england": "GB",
    "scotland": "GB",
    "wales": "GB",
    "great britain": "GB",
    "usa": "US",
    "u.s.a.": "US",
    "u.s.": "US",
    "america": "US",
    "holland": "NL",
}


@lru_cache(maxsize=4096)
def _country_lookup(key: str) -> Any:
    import pycountry

    alias = _COUNTRY_ALIASES.get(key.casefold())
    if alias:
        return pycountry.countries.get(alpha_2=alias)
    try:
        return pycountry.countries.lookup(key)
    except LookupError:
        pass
    if len(key) > 3:
        try:
            hits = pycountry.countries.search_fuzzy(key)
        except LookupError:
            return None
        return hits[0] if len(hits) == 1 else None
    return None


def country(output: str = "alpha2") -> Transform:
    """A country code or name (``gb``, ``GBR``, ``United Kingdom``, ``UK``) to ISO 3166 (pycountry).

    ``output``: ``alpha2`` (``GB``), ``alpha3`` (``GBR``) or ``name``. Unknown countries raise
    TransformError.
    """
    attr = {"alpha2": "alpha_2", "alpha3": "alpha_3", "name": "name"}.get(output)
    if attr is None:
        raise ValueError("output must be alpha2, alpha3 or name")

    def t(v: Any) -> Any:
        if v is None:
            return None
        s = _WS.sub(" ", _text(v, "country")).strip()
        if not s:
            return None
        hit = _country_lookup(s)
        if hit is None:
            raise TransformError(f"{_short(s)} is not a known country (ISO 3166 code or name)")
        return getattr(hit, attr)

    return t


# ---------------------------------------------------------------------------------------------
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
            raise TransformError(f"{_short(v)} is not a whole number")
        return int(v)
    s = str(v).strip().replace(",", "").replace("_", "")
    try:
        return int(s)
    except ValueError:
        raise TransformError(f"{_short(v)} is not an integer") from None


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
        raise TransformError(f"{_short(v)} is not a number") from None


def _cast_float(v: Any) -> float:
    try:
        return float(v.strip().replace(",", "")) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        raise TransformError(f"{_short(v)} is not a number") from None


def _cast_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise TransformError(f"{_short(v)} is not a boolean (true/false, yes/no, y/n, 1/0)")


def _cast_text(v: Any) -> str:
    if isinstance(v, str):
        return v
    return _display(v)


def _cast_uuid(v: Any) -> Any:
    import uuid

    if isinstance(v, uuid.UUID):
        return v
    try:
        return uuid.UUID(str(v).strip())
    except ValueError:
        raise TransformError(f"{_short(v)} is not a UUID") from None


def _cast_json(v: Any) -> Any:
    import json

    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            raise TransformError(f"{_short(v)} is not JSON") from None
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


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

BUILTINS: dict[str, TransformFactory] = {
    "trim": trim,
    "collapse_whitespace": collapse_whitespace,
    "lower": lower,
    "upper": upper,
    "casefold": casefold,
    "null_if": null_if,
    "default": default,
    "const": const,
    "replace": replace,
    "digits": digits,
    "truncate": truncate,
    "concat": concat,
    "coalesce": coalesce,
    "lookup": lookup,
    "email": email,
    "phone": phone,
    "name": name,
    "split_name": split_name,
    "date": date,
    "datetime": datetime,
    "country": country,
    "cast": cast,
}

EXAMPLES: dict[str, list[tuple[Any, Any]]] = {
    "trim": [("trim", "  Ann Lee ")],
    "collapse_whitespace": [("collapse_whitespace", " Ann \t  Lee\n")],
    "lower": [("lower", "Ann.Lee@Example.COM")],
    "upper": [("upper", "gb")],
    "casefold": [("casefold", "Straße")],
    "null_if": [({"null_if": {"values": ["N/A", "-"]}}, "N/A"), ("null_if", "   ")],
    "default": [({"default": "unknown"}, None)],
    "const": [({"const": "legacy-crm"}, "anything")],
    "replace": [({"replace": {"pattern": "[^0-9]", "repl": ""}}, "020-7946 0958")],
    "digits": [("digits", "+44 (0)20 7946 0958")],
    "truncate": [({"truncate": 5}, "Kensington")],
    "concat": [({"concat": ", "}, ["1 High St", None, "London"]), ("concat", ["Ann", "Lee"])],
    "coalesce": [("coalesce", [None, " ", "+44 20 7946 0958"])],
    "lookup": [
        ({"lookup": {"A": "active", "I": "inactive"}}, "a"),
        ({"lookup": {"table": {"A": "active"}, "on_missing": "default", "default": "other"}}, "X"),
    ],
    "email": [("email", " John.Smith@Example.COM "), ("email", "jane@")],
    "phone": [({"phone": {"region": "GB"}}, "(020) 7946-0123"), ("phone", "12345")],
    "name": [("name", "  JOHN   O'NEIL "), ("name", "mary mcdonald"), ("name", "Danny DeVito")],
    "split_name": [({"split_name": "last"}, "Ludwig van Beethoven"), ("split_name", "Smith, John")],
    "date": [({"date": {"formats": ["%d/%m/%Y"]}}, "03/04/2020"), ("date", "2020-04-03")],
    "datetime": [({"datetime": {"timezone": "Europe/London"}}, "2020-04-03 10:30")],
    "country": [("country", "United Kingdom"), ({"country": "alpha3"}, "gb"), ("country", "UK")],
    "cast": [({"cast": "integer"}, "1,234"), ({"cast": "boolean"}, "yes")],
}
"""Per built-in: (spec as in YAML, an input). docs/mapping.md shows what each gives (computed,
so the reference cannot drift from the code)."""

OUTPUT_TYPES: dict[str, str] = {
    "email": "text",
    "phone": "text",
    "name": "text",
    "split_name": "text",
    "concat": "text",
    "country": "text",
    "date": "date",
    "datetime": "timestamp",
    "digits": "text",
    "lower": "text",
    "upper": "text",
    "casefold": "text",
    "collapse_whitespace": "text",
    "trim": "text",
}
"""What a built-in returns, for the schema check (absent: same as its input)."""


IMPORT_PATH_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
"""``package.module:function`` (what ``mapping.transforms`` maps a name to)."""

_VALIDATING: ContextVar[list[str] | None] = ContextVar(
    "crossfade_transforms_validating", default=None
)


@contextmanager
def validating() -> Iterator[list[str]]:
    """Build transforms without running user code: inside this block a :class:`Registry` checks
    that every user transform's name resolves (``mapping.transforms``, an import path, an entry
    point's *metadata*) and hands back a stand-in (the identity) instead of importing its module
    or calling its factory. Built-ins are crossfade's own code and are built as usual, so their
    arguments are checked. Yields the import paths of the user transforms seen, for the
    operator's allow-list check (:func:`crossfade.config.mapping.refused_paths`)."""
    seen: list[str] = []
    token = _VALIDATING.set(seen)
    try:
        yield seen
    finally:
        _VALIDATING.reset(token)


def _import_path(path: str, prefixes: tuple[str, ...]) -> TransformFactory:
    if not IMPORT_PATH_RE.match(path):
        raise ValueError(f"{path!r} is not an import path like 'package.module:function'")
    if not module_allowed(path, prefixes):
        raise ValueError(refusal(path, prefixes))
    mod_name, _, attr = path.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {mod_name} for transform {path!r} ({exc})") from None
    obj: Any = mod
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ValueError(f"{mod_name} has no {attr} (transform {path!r})")
    if not callable(obj):
        raise ValueError(f"{path!r} is not callable")
    return obj


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _stand_in(**_kwargs: Any) -> Transform:
    """What a user transform builds to while validating: its code is neither imported nor run."""
    return lambda v: v


class Registry:
    """Names -> transform factories: built-ins, then ``mapping.transforms``, then entry points.

    A user name may not shadow a built-in (a typo in a name should not silently swap the code).
    ``module:function`` (registered in ``mapping.transforms`` or named directly) is imported only
    when its module is under one of ``allowed_modules`` (the operator's ``transform_modules``);
    entry points are loaded by name (their package is installed by the operator). Nothing is
    imported before a transform is first built, and nothing at all inside :func:`validating`.
    Raises ValueError (one line) for a refused, unknown or unloadable transform.
    """

    def __init__(
        self, user: Mapping[str, str] | None = None, allowed_modules: Iterable[str] = ()
    ) -> None:
        self._factories: dict[str, TransformFactory] = dict(BUILTINS)
        self._allowed = tuple(allowed_modules)
        self._paths: dict[str, str] = {}
        for n, path in (user or {}).items():
            if n in BUILTINS:
                raise ValueError(
                    f"transform name {n!r} is a built-in; register it under another name"
                )
            if not IMPORT_PATH_RE.match(path):
                raise ValueError(
                    f"transform {n!r}: {path!r} is not an import path like 'package.module:function'"
                )
            self._paths[n] = path

    def names(self) -> list[str]:
        return sorted(set(self._factories) | set(self._paths) | set(_entry_points()))

    def factory(self, name: str) -> TransformFactory:
        f = self._factories.get(name)
        if f is not None:
            return f
        seen = _VALIDATING.get()
        path = self._paths.get(name, name if ":" in name else None)
        if path is not None:  # registered in mapping.transforms, or an import path used directly
            if seen is not None:
                if not IMPORT_PATH_RE.match(path):
                    raise ValueError(
                        f"{path!r} is not an import path like 'package.module:function'"
                    )
                seen.append(path)
                return _stand_in
            f = _import_path(path, self._allowed)
        else:
            ep = _entry_points().get(name)
            if ep is None:
                raise ValueError(
                    f"unknown transform {name!r} (built-ins: {', '.join(sorted(BUILTINS))})"
                )
            if seen is not None:
                return _stand_in
            f = ep.load()
        self._factories[name] = f
        return f

    def build(
        self, spec: str | Mapping[str, Any], defaults: Mapping[str, Any] | None = None
    ) -> tuple[str, Transform]:
        """(name, transform) from a YAML spec: ``name``, ``{name: {args}}`` or ``{name: arg}``.

        ``defaults`` fill arguments the spec leaves out when the factory takes them (e.g. the
        mapping's default phone ``region``). Raises ValueError naming the transform.
        """
        if isinstance(spec, str):
            name_, args = spec, None
        else:
            if len(spec) != 1:
                raise ValueError(
                    f"a transform is one name with its arguments, got keys {sorted(spec)}"
                )
            ((name_, args),) = spec.items()
        factory = self.factory(name_)
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}  # type: ignore[assignment]
        kwargs: dict[str, Any]
        if args is None:
            kwargs = {}
        elif isinstance(args, Mapping) and args and all(k in params for k in args):
            kwargs = dict(args)  # {phone: {region: GB}}
        else:  # {split_name: first}, {lookup: {A: active}}: the main (first) argument
            first = next(iter(params), None)
            if first is None:
                raise ValueError(f"transform {name_} takes no arguments")
            kwargs = {first: args}
        for k, v in (defaults or {}).items():
            if k in params and k not in kwargs:
                kwargs[k] = v
        try:
            return name_, factory(**kwargs)
        except TypeError as exc:
            raise ValueError(f"transform {name_}: {exc}") from None
        except ValueError as exc:
            raise ValueError(f"transform {name_}: {exc}") from None


def chain(steps: list[Transform]) -> Transform:
    """One transform applying ``steps`` left to right."""
    if not steps:
        return lambda v: v
    if len(steps) == 1:
        return steps[0]

    def t(v: Any) -> Any:
        for s in steps:
            v = s(v)
        return v

    return t


def strip_accents(s: str) -> str:
    """``Zoë Müller`` -> ``Zoe Muller`` (for matching, not display)."""
    return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
