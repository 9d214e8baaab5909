"""The shape of a table as crossfade sees it, read from pg_catalog: its columns (type, NOT NULL,
enum) and primary key, crossfade's own columns (``_cf_pos``, ``_cf_hash``) left out. Ground floor:
the mapping's schema check, the target's DDL, sync, verify and the demo read tables through it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

POS_COLUMN = "_cf_pos"
HASH_COLUMN = "_cf_hash"
"""Append-only tables (no primary key): the row's content hash, unique together with _cf_pos."""


def written_since(snapshot: str, alias: str = "r", *, since: bool = True) -> sql.Composed:
    """The predicate "row ``alias`` was written (inserted or updated) by a transaction that
    ``snapshot`` (``pg_current_snapshot()`` as text, PostgreSQL 13+) does not see" — a superset:
    a few rows committed just before it match too; ``since=False``: the other rows. Every such
    transaction has an id at or above the snapshot's ``xmin``: ``age(xmin) <= age(<snapshot
    xmin>)`` selects them, both ages taken against the same transaction counter, so it holds
    across the 32-bit wraparound (a frozen row's age is the largest there is)."""
    low = int(snapshot.split(":")[0]) % 2**32
    return sql.SQL("age({}.xmin) {} age({}::xid)").format(
        sql.Identifier(alias), sql.SQL("<=" if since else ">"), sql.Literal(str(low))
    )


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type_sql: str  # as format_type prints it, e.g. 'numeric(12,3)', 'public.mood[]'
    not_null: bool
    enum: tuple[str, str] | None = None
    """(schema, type name) when the column (or its element) is an enum: kept apart, since either
    may contain a dot (``"odd.schema"."mood.v2"``)."""


@dataclass(frozen=True, slots=True)
class TableShape:
    schema: str
    name: str
    columns: tuple[Column, ...]
    pk: tuple[str, ...]

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


_LENGTH_TYPE = re.compile(r"(character varying|character|bit varying|bit)\((\d+)\)((?:\[\])*)")
_UNCUT = {
    "character varying": "character varying",
    "character": "bpchar",
    "bit varying": "bit varying",
    "bit": "bit varying",
}


def length_limit(type_sql: str) -> tuple[str, int] | None:
    """``(type, n)`` of a column type with a length limit an explicit cast cuts a value to
    (``character varying(n)``, ``character(n)``, ``bit varying(n)``, ``bit(n)``, or an array of
    one: the limit of its elements), else None."""
    m = _LENGTH_TYPE.fullmatch(type_sql)
    return (m.group(1), int(m.group(2))) if m else None


def uncut(type_sql: str) -> str:
    """The type to cast a value to before it meets a column of ``type_sql``: the same type
    without a length limit. An explicit ``CAST(v AS varchar(5))`` truncates an over-long value
    without a word (SQL standard; ``bit(n)`` also pads a short one), where an assignment to the
    column raises; cast to the unlimited type, the value is stored as it is or refused, and a
    lookup (``WHERE k = CAST(v AS ...)``) finds no row rather than the row of a cut value.
    Other types are returned as they are (``numeric(p,s)`` and ``timestamp(p)`` round the same
    way when cast and when assigned)."""
    m = _LENGTH_TYPE.fullmatch(type_sql)
    return _UNCUT[m.group(1)] + m.group(3) if m else type_sql


_SHAPE_SQL = """
SELECT a.attname,
       CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod)
            WHEN et.typtype = 'd' THEN format_type(et.typbasetype, et.typtypmod) || '[]'
            ELSE format_type(a.atttypid, a.atttypmod) END,
       a.attnotnull,
       CASE WHEN t.typtype = 'e' THEN ARRAY[tn.nspname::text, t.typname::text]
            WHEN et.typtype = 'e' THEN ARRAY[etn.nspname::text, et.typname::text] END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_namespace tn ON tn.oid = t.typnamespace
LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
LEFT JOIN pg_namespace etn ON etn.oid = et.typnamespace
WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_PK_SQL = """
SELECT a.attname FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE n.nspname = %s AND c.relname = %s AND i.indisprimary ORDER BY k.ord
"""


def read_shape(conn: psycopg.Connection, table: str) -> TableShape | None:
    """The table's columns and primary key, or None if it does not exist."""
    schema, name = table.split(".", 1)
    rows = conn.execute(_SHAPE_SQL, (schema, name)).fetchall()
    if not rows:
        return None
    pk = tuple(r[0] for r in conn.execute(_PK_SQL, (schema, name)).fetchall())
    cols = tuple(
        Column(r[0], r[1], bool(r[2]), (r[3][0], r[3][1]) if r[3] else None)
        for r in rows
        if r[0] not in (POS_COLUMN, HASH_COLUMN)
    )
    return TableShape(schema, name, cols, pk)
