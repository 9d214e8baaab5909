"""The expected rows of a mapped target (:mod:`crossfade.verify.mapped`), streamed by COPY into a
temporary table of the target database shaped like the target, and rows of it (or of the target)
read back by key, through :func:`canon`."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from crossfade.catalog import TableShape
from crossfade.config import Settings
from crossfade.db import connect

_seq = itertools.count()

Key = tuple[Any, ...]


def canon(row: Iterable[Any] | None) -> tuple[Any, ...] | None:
    """A row as Python compares it the way PostgreSQL's ``IS NOT DISTINCT FROM`` does (NaN equals
    NaN): expected rows, target rows and their re-reads are compared through it."""
    if row is None:
        return None
    out = []
    for v in row:
        if isinstance(v, float | Decimal) and v != v:  # NaN
            out.append("NaN")
        else:
            out.append(v)
    return tuple(out)


class Expected:
    """Expected rows of one target, streamed into a temp table in the target database."""

    def __init__(
        self, settings: Settings, shape: TableShape, key: tuple[str, ...], cols: list[str]
    ) -> None:
        self.shape, self.key, self.cols = shape, key, cols
        # a session of its own: one COPY at a time per connection, and the temp table lives there
        self.conn = tgt = connect(settings.target, "target")
        self.name = sql.Identifier(f"cf_expect_{next(_seq)}")
        self.json_cols = {c.name for c in shape.columns if c.type_sql in ("json", "jsonb")}
        tgt.execute(
            sql.SQL("CREATE TEMP TABLE {} AS SELECT {} FROM {}.{} WITH NO DATA").format(
                self.name,
                sql.SQL(", ").join(map(sql.Identifier, cols)),
                sql.Identifier(shape.schema),
                sql.Identifier(shape.name),
            )
        )
        self._cur = tgt.cursor()
        self._copy_cm = self._cur.copy(
            sql.SQL("COPY {} ({}) FROM STDIN").format(
                self.name, sql.SQL(", ").join(map(sql.Identifier, cols))
            )
        )
        self._copy = self._copy_cm.__enter__()
        self.rows = 0

    def write(self, values: dict[str, Any]) -> None:
        self._copy.write_row(
            [
                Jsonb(values.get(c))
                if c in self.json_cols and values.get(c) is not None
                else values.get(c)
                for c in self.cols
            ]
        )
        self.rows += 1

    def finish(self) -> None:
        self._copy_cm.__exit__(None, None, None)
        self._cur.close()

    def rows_of(self, keys: list[Key]) -> dict[Key, tuple[Any, ...] | None]:
        """The expected rows of ``keys`` (None where none is expected)."""
        return rows_of(self.conn, self.name, self.shape, self.key, self.cols, keys)

    def close(self) -> None:
        self.conn.rollback()
        self.conn.close()


def _cast(shape: TableShape, col: str) -> sql.Composable:
    # format_type's text names an enum as the target knows it (Column.enum is (schema, name) now)
    return sql.SQL(shape.column(col).type_sql)


def rows_of(
    conn: Any,
    relation: sql.Composable,
    shape: TableShape,
    key: tuple[str, ...],
    cols: list[str],
    keys: list[Key],
) -> dict[Key, tuple[Any, ...] | None]:
    """``cols`` of the rows of ``relation`` (the target table, or the expected rows' temporary
    table shaped like it) with these ``keys``, through :func:`canon`; None for a key it lacks.
    JSON is compared as jsonb (key order and spacing are not differences)."""
    out: dict[Key, tuple[Any, ...] | None] = dict.fromkeys(keys)
    if not keys:
        return out
    I = sql.Identifier  # noqa: E741,N806
    json_cols = {c.name for c in shape.columns if c.type_sql in ("json", "jsonb")}
    sel = sql.SQL(", ").join(
        sql.SQL("r.{}::jsonb").format(I(c)) if c in json_cols else sql.SQL("r.{}").format(I(c))
        for c in cols
    )
    keys_in = sql.SQL(", ").join(sql.SQL("%s::{}[]").format(_cast(shape, k)) for k in key)
    on = sql.SQL(" AND ").join(sql.SQL("r.{0} = w.{0}").format(I(k)) for k in key)
    q = sql.SQL(
        "SELECT {k}, {sel} FROM {rel} r JOIN unnest({arrays}) AS w({names}) ON {on}"
    ).format(
        k=sql.SQL(", ").join(sql.SQL("r.{}").format(I(k)) for k in key),
        sel=sel,
        rel=relation,
        arrays=keys_in,
        names=sql.SQL(", ").join(map(I, key)),
        on=on,
    )
    params = [[k[i] for k in keys] for i in range(len(key))]
    for r in conn.execute(q, params).fetchall():
        out[tuple(r[: len(key)])] = canon(r[len(key) :])
    return out
