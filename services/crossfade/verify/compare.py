"""Row-by-row comparison of a source table with its (identity-mapped) target.

Both sides are streamed in primary-key order through server-side cursors and merge-joined, so a
large table is compared in bounded memory. Values are compared as PostgreSQL's text output in a
UTC session: two rows are equal when every column prints the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from crossfade.events.model import UNAVAILABLE

_MAX_LISTED = 20


@dataclass
class TableDiff:
    table: str
    source_rows: int = 0
    target_rows: int = 0
    missing: list[Any] = field(default_factory=list)  # keys in source, not in target
    extra: list[Any] = field(default_factory=list)  # keys in target, not in source
    different: list[Any] = field(default_factory=list)  # keys whose columns differ
    different_columns: dict[str, list[str]] = field(default_factory=dict)  # example key -> columns
    placeholders: int = 0  # target values holding Debezium's unavailable-value placeholder
    lacking_columns: list[str] = field(
        default_factory=list
    )  # source columns the target does not have
    n_missing: int = 0
    n_extra: int = 0
    n_different: int = 0

    @property
    def match(self) -> bool:
        return not (
            self.n_missing
            or self.n_extra
            or self.n_different
            or self.placeholders
            or self.lacking_columns
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.table,
            "source_rows": self.source_rows,
            "target_rows": self.target_rows,
            "mismatched_keys": self.n_different,
            "missing": self.n_missing,
            "extra": self.n_extra,
            "placeholders": self.placeholders,
            "lacking_columns": self.lacking_columns,
            "examples": {
                "missing": [str(k) for k in self.missing],
                "extra": [str(k) for k in self.extra],
                "different": [str(k) for k in self.different],
                "different_columns": self.different_columns,
            },
            "match": self.match,
        }


def _stream_keyless(
    conn: psycopg.Connection, table: str, columns: list[str], name: str
) -> Iterator[tuple[Any, ...]]:
    """Rows of a table without a key, as (sort key per column..., text per column...), ordered
    like Python orders the sort keys: NULL first, then text by code point (C collation)."""
    schema, rel = table.split(".", 1)
    q = sql.SQL("SELECT {vals} FROM {s}.{t} AS r ORDER BY {order}").format(
        vals=sql.SQL(", ").join(sql.SQL("r.{}::text").format(sql.Identifier(c)) for c in columns),
        s=sql.Identifier(schema),
        t=sql.Identifier(rel),
        order=sql.SQL(", ").join(
            sql.SQL('r.{}::text COLLATE "C" NULLS FIRST').format(sql.Identifier(c)) for c in columns
        ),
    )
    with conn.cursor(name=name) as cur:
        cur.itersize = 5000
        cur.execute(q)
        for row in cur:
            yield (tuple((0, "") if v is None else (1, v) for v in row), *row)


def _stream(
    conn: psycopg.Connection, table: str, columns: list[str], pk: list[str], name: str
) -> Iterator[tuple[Any, ...]]:
    if not pk:
        yield from _stream_keyless(conn, table, columns, name)
        return
    schema, rel = table.split(".", 1)
    collatable = {
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attcollation <> 0",
            (f'"{schema}"."{rel}"',),
        ).fetchall()
    }
    # Python compares str by code point: order text keys the same way (C collation)
    order = sql.SQL(", ").join(
        sql.SQL('r.{} COLLATE "C"' if c in collatable else "r.{}").format(sql.Identifier(c))
        for c in pk
    )
    q = sql.SQL("SELECT {keys}, {vals} FROM {s}.{t} AS r ORDER BY {order}").format(
        keys=sql.SQL(", ").join(sql.SQL("r.{}").format(sql.Identifier(c)) for c in pk),
        vals=sql.SQL(", ").join(sql.SQL("r.{}::text").format(sql.Identifier(c)) for c in columns),
        s=sql.Identifier(schema),
        t=sql.Identifier(rel),
        order=order,
    )
    with conn.cursor(name=name) as cur:
        cur.itersize = 5000
        cur.execute(q)
        yield from cur


def has_rows(conn: psycopg.Connection, table: str) -> bool:
    """Whether ``table`` holds a row in ``conn``'s snapshot."""
    rel = sql.Identifier(*table.split(".", 1))
    row = conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(rel)).fetchone()
    return bool(row and row[0])


def compare_table(
    source: psycopg.Connection,
    target: psycopg.Connection,
    table: str,
    columns: list[str],
    pk: list[str],
    target_table: str | None = None,
) -> TableDiff:
    """Compare ``table`` in both databases, streaming both in key order.

    The connections must not be in autocommit mode: server-side cursors need a transaction, which
    also gives each side one consistent view.
    """
    for c in (source, target):
        c.execute("SET TimeZone = 'UTC'")
    diff = TableDiff(table)
    n = len(pk) or 1  # keyless: one synthetic key, the whole row (compared as a multiset)
    src = _stream(source, table, columns, pk, "cf_cmp_src")
    tgt = _stream(target, target_table or table, columns, pk, "cf_cmp_tgt")
    s = next(src, None)
    t = next(tgt, None)
    while s is not None or t is not None:
        if t is not None and any(v is not None and UNAVAILABLE in v for v in t[n:]):
            diff.placeholders += 1
        if t is None or (s is not None and tuple(s[:n]) < tuple(t[:n])):
            assert s is not None
            diff.source_rows += 1
            diff.n_missing += 1
            if len(diff.missing) < _MAX_LISTED:
                diff.missing.append(s[:n] if n > 1 else s[0])
            s = next(src, None)
        elif s is None or tuple(t[:n]) < tuple(s[:n]):
            diff.target_rows += 1
            diff.n_extra += 1
            if len(diff.extra) < _MAX_LISTED:
                diff.extra.append(t[:n] if n > 1 else t[0])
            t = next(tgt, None)
        else:
            diff.source_rows += 1
            diff.target_rows += 1
            if s[n:] != t[n:]:
                diff.n_different += 1
                if len(diff.different) < _MAX_LISTED:
                    key = s[:n] if n > 1 else s[0]
                    diff.different.append(key)
                    diff.different_columns[str(key)] = [
                        c for c, a, b in zip(columns, s[n:], t[n:], strict=True) if a != b
                    ]
            s = next(src, None)
            t = next(tgt, None)
    return diff
