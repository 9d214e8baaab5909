"""Rules the target's shape adds to the mapping: a row sync could not write as it was mapped is a
dead letter naming the rule, not a batch the database refuses (sync stopped) nor a value cut.

* ``<target>.<column>:not_null`` — a NOT NULL column (without a ``required`` rule of its own)
  left empty;
* ``<target>.<column>:too_long`` — a text longer than its ``character varying(n)`` or
  ``character(n)`` column, or a bit string longer than its ``bit varying(n)`` or ``bit(n)``
  column (an array's elements each). On INSERT and COPY PostgreSQL refuses such a value (the
  plain path's batch failed and sync stopped), and an explicit cast cuts it without a word (the
  dedup sink's golden records went through one: a member's long name was stored cut). As
  PostgreSQL does on INSERT, spaces past a text's limit are dropped, not refused;
* ``<target>.<column>:too_large`` — a number too large for its ``numeric(p,s)`` column
  (PostgreSQL refuses it on every path: "numeric field overflow", sync stopped).

Only values whose text PostgreSQL is sure to make the same way are measured: a ``str`` and an
``int`` for a length, an ``int`` and a ``Decimal`` for a ``numeric(p,s)``. Anything else over the
limit (a date into a ``varchar(8)``, a float into a ``numeric(4,2)``) is refused by the database
as before (sync stops with its message); no write or lookup of sync casts a value to a length any
more (:func:`crossfade.catalog.uncut`). Rounding is not refused: ``numeric(p,s)`` and
``timestamp(p)`` round a value to their scale or precision the same way on every path (a cast, an
INSERT, COPY, verify's expected rows).

The same mapper runs in sync, ``dlq replay``, audit, dry-run and verify
(:func:`crossfade.mapping.schema_check.load_mapper` adds these rules when it reads the target's
catalog), so they all agree on the outcome of such a row.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Callable, Mapping
from typing import Any

from crossfade.catalog import TableShape, length_limit
from crossfade.mapping.engine import Failure, Mapper

Check = Callable[[Any, Any], Failure | None]
_NUMERIC = re.compile(r"numeric\((\d+),(-?\d+)\)((?:\[\])*)")


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
    (rule ``<target>.<column>:too_long``) or too large for its ``numeric(p,s)``
    (``:too_large``)."""
    checks: dict[str, Check] = {}
    for col, type_sql in types.items():
        limit = length_limit(type_sql)
        if limit is not None:
            kind, n = limit
            checks[col] = too_long_check(target, col, type_sql, n, bits=kind.startswith("bit"))
        m = _NUMERIC.fullmatch(type_sql)
        if m is not None:
            p, s = int(m.group(1)), int(m.group(2))
            checks[col] = too_large_check(target, col, type_sql, p, s)
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
        long = _first_over(v, type_sql, over)
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


def too_large_check(target: str, col: str, type_sql: str, p: int, s: int) -> Check:
    """The ``:too_large`` check of a ``numeric(p,s)`` column: PostgreSQL rounds a value to
    ``s`` decimals (half away from zero), then refuses it ("numeric field overflow") if more
    than ``p - s`` digits are left before the point; an infinity too. Only ``int`` and
    ``Decimal`` values are measured (a float's digits are the database's to make)."""
    ctx = decimal.Context(prec=p + abs(s) + 10)
    # the smallest magnitude that rounds up to 10^(p-s)
    bound = ctx.subtract(ctx.power(10, p - s), decimal.Decimal(5).scaleb(-s - 1, ctx))

    def over(v: Any) -> bool:
        if isinstance(v, int) and not isinstance(v, bool):
            return abs(v) >= bound
        if isinstance(v, decimal.Decimal) and not v.is_nan():
            return v.is_infinite() or abs(v) >= bound
        return False

    def too_large(v: Any, _p: Any) -> Failure | None:
        big = _first_over(v, type_sql, over)
        if big is None:
            return None
        return Failure(
            f"{target}.{col}:too_large",
            "too_large",
            f"is {big}, too large for {target}.{col} ({type_sql}: at most {p - s} digits before "
            f"the point once rounded to {s} decimals); widen the column or change it in the "
            "legacy row or the mapping",
            target,
            col,
            v,
        )

    return too_large


def _first_over(v: Any, type_sql: str, over: Callable[[Any], bool]) -> Any:
    """The value (an array column's: its first element) that ``over`` finds over the limit,
    else None."""
    items = v if isinstance(v, list) and type_sql.endswith("]") else [v]
    return next((x for x in items if over(x)), None)
