"""The registry: built-in names, their examples and output types, and the user transforms that
join them.

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

import importlib
import inspect
import re
from collections.abc import Iterable, Iterator, Mapping
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
from crossfade.mapping.transforms.base import Transform, TransformFactory
from crossfade.mapping.transforms.casts import cast
from crossfade.mapping.transforms.contact import country, email, name, phone, split_name
from crossfade.mapping.transforms.dates import date, datetime
from crossfade.mapping.transforms.text import (
    casefold,
    coalesce,
    collapse_whitespace,
    concat,
    const,
    default,
    digits,
    lookup,
    lower,
    null_if,
    replace,
    trim,
    truncate,
    upper,
)

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
