"""Rules the target's shape adds to the mapping: a row sync could not write as it was mapped is a
dead letter naming the rule, not a batch the database refuses (sync stopped) nor a value cut.

* ``<target>.<column>:not_null`` — a NOT NULL column (without a ``required`` rule of its own)
  left empty;
* ``<target>.<column>:too_long`` — a text longer than its ``character varying(n)`` or
  ``character(n)`` column, or a bit string longer than its ``bit varying(n)`` or ``bit(n)``
  column (an array's elements each). On INSERT and COPY PostgreSQL refuses such a value (the
  plain path's batch failed and sync stopped), and an explicit cast cuts it without a word (the
  dedup sink's golden records went through one: a member's long name was stored cut). As
  PostgreSQL does on INSERT, spaces past a text's limit are dropped, not refused.

Only what PostgreSQL's text of the value is sure to be is measured: a ``str`` and an ``int``.
Anything else over the limit (a date into a ``varchar(8)``) is refused by the database as before
(sync stops with its message); nothing on any path casts a value to a length any more
(:func:`crossfade.catalog.uncut`). ``numeric(p,s)`` and ``timestamp(p)`` are not checked: they
round a value to their scale or precision the same way on every path (a cast, an INSERT, COPY,
verify's expected rows), and a value too large for ``numeric(p,s)`` is refused by the database.

The same mapper runs in sync, ``dlq replay``, audit, dry-run and verify
(:func:`crossfade.mapping.schema_check.load_mapper` adds these rules when it reads the target's
catalog), so they all agree on the outcome of such a row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from crossfade.catalog import TableShape, length_limit
from crossfade.mapping.engine import Failure, Mapper

Check = Callable[[Any, Any], Failure | None]


def require_target(mapper: Mapper, shape: TableShape) -> None:
    """Add the rules of the module docstring for target table ``shape`` to ``mapper``."""
    require_not_null(mapper, shape.qualified, {c.name for c in shape.columns if c.not_null})
    require_fits(mapper, shape.qualified, {c.name: c.type_sql for c in shape.columns})


def require_not_null(mapper: Mapper, target: str, columns: set[str]) -> None:
    """Reject rows that would leave a NOT NULL column of ``target`` empty (rule
    ``<target>.<column>:not_null``) instead of failing the whole batch in the database."""

    def check(col: str) -> Check:
        def not_null(v: Any, _p: Any) -> Failure | None:
            if v is not None:
                return None
            return Failure(
                f"{target}.{col}:not_null",
                "required",
                "is NULL but the target column is NOT NULL",
                target,
                col,
                v,
            )

        return not_null

    mapper.add_checks(target, {c: check(c) for c in columns}, unless_required=True)


def require_fits(mapper: Mapper, target: str, types: Mapping[str, str]) -> None:
    """Reject rows whose value of a column of ``target`` (column -> its type, as
    :func:`crossfade.catalog.read_shape` gives it) is longer than the column's length limit
    (rule ``<target>.<column>:too_long``)."""
    checks: dict[str, Check] = {}
    for col, type_sql in types.items():
        limit = length_limit(type_sql)
        if limit is not None:
            kind, n = limit
            checks[col] = too_long_check(target, col, type_sql, n, bits=kind.startswith("bit"))
    mapper.add_checks(target, checks)


def too_long_check(target: str, col: str, type_sql: str, limit: int, *, bits: bool) -> Check:
    """The ``:too_long`` check of one column: at most ``limit`` characters (``bits``: bits)."""
    unit = "bits" if bits else "characters"

    def over(v: Any) -> bool:
        if isinstance(v, str):
            return len(v if bits else v.rstrip(" ")) > limit
        if isinstance(v, int) and not isinstance(v, bool) and not bits:
            return len(str(v)) > limit
        return False  # its text is the database's to make (module docstring)

    def too_long(v: Any, _p: Any) -> Failure | None:
        items = v if isinstance(v, list) and type_sql.endswith("]") else [v]
        long = next((x for x in items if over(x)), None)
        if long is None:
            return None
        return Failure(
            f"{target}.{col}:too_long",
            "too_long",
            f"is {len(str(long))} {unit} long, over the {limit} of {target}.{col} ({type_sql}); "
            "not cut: shorten it in the legacy row or the mapping, or widen the column",
            target,
            col,
            v,
        )

    return too_long
