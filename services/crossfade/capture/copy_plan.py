"""What the identity COPY load copies: a table's chunks (block ranges of the heap, by ``ctid``),
the columns, the format (binary when both ends read it exactly, else text), the SQL of each end.
:class:`crossfade.capture.initial_load.CopyLoad` runs them through its streams."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from crossfade.catalog import HASH_COLUMN, POS_COLUMN

log = logging.getLogger(__name__)

_FIRST_USER_OID = 16384
"""PostgreSQL's FirstNormalObjectId: types below it are built in, the same OID everywhere."""
CHUNK_PAGES = 2048
"""Block range of one COPY chunk (16 MiB of heap): small enough to spread over the workers."""


@dataclass(frozen=True, slots=True)
class Chunk:
    table: str
    source_sql: sql.Composable
    target_sql: sql.Composable | None
    label: str
    order: dict[str, Any] | None = None
    """Snapshot events to produce instead of rows to copy (:mod:`.snapshot_events`)."""


def block_ranges(src: psycopg.Connection, table: str) -> list[tuple[sql.Composable | None, str]]:
    """A table's parts for the COPY streams: (ctid condition or None for the whole, label). One
    part when the table is small or not a plain heap, else block ranges of :data:`CHUNK_PAGES`;
    the last one is open-ended (the relation size is read at the snapshot, but a page count is
    only a partition of ctids: any block past it is in the last range)."""
    schema, name = table.split(".", 1)
    row = src.execute(
        "SELECT c.relkind, c.relhassubclass, pg_relation_size(c.oid) / current_setting('block_size')::int "
        "FROM pg_class c WHERE c.oid = %s::regclass",
        (sql.Identifier(schema, name).as_string(src),),
    ).fetchone()
    assert row is not None
    relkind, has_children, pages = row[0], row[1], int(row[2] or 0)
    if relkind != "r" or has_children or pages <= CHUNK_PAGES:
        return [(None, table)]
    out: list[tuple[sql.Composable | None, str]] = []
    starts = list(range(0, pages, CHUNK_PAGES))
    for i, start in enumerate(starts):
        lo = sql.Literal(f"({start},0)")
        if i + 1 < len(starts):
            cond = sql.SQL("ctid >= {}::tid AND ctid < {}::tid").format(
                lo, sql.Literal(f"({starts[i + 1]},0)")
            )
        else:
            cond = sql.SQL("ctid >= {}::tid").format(lo)
        out.append((cond, f"{table}#{i}"))
    return out


def table_columns(src: psycopg.Connection, table: str, shape: Any) -> tuple[list[str], bool]:
    """The shape's columns the source has, and whether binary COPY reads them exactly."""
    schema, name = table.split(".", 1)
    have = {
        r[0]: (r[1], r[2])
        for r in src.execute(
            "SELECT attname, atttypid, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (sql.Identifier(schema, name).as_string(src),),
        ).fetchall()
    }
    cols = [c.name for c in shape.columns if c.name in have]
    # binary COPY (about a third faster to parse) when both ends have the same built-in
    # types: a user type's binary form names its OID (enum arrays, composites), which
    # differs between the two databases
    binary = all(
        have[c.name][0] < _FIRST_USER_OID and have[c.name][1] == c.type_sql
        for c in shape.columns
        if c.name in have
    )
    return cols, binary


def table_chunks(src: psycopg.Connection, table: str, shape: Any, pos: int) -> list[Chunk]:
    """One table's COPY chunks: one stream (append-only, small or not a plain heap), else
    block ranges of :data:`CHUNK_PAGES`."""
    schema, name = table.split(".", 1)
    cols, binary = table_columns(src, table, shape)
    fmt = sql.SQL(" (FORMAT binary)" if binary else "")
    log.debug("COPY %s in %s format", table, "binary" if binary else "text")
    ident = sql.Identifier(schema, name)
    col_list = sql.SQL(", ").join(map(sql.Identifier, cols))
    if not shape.pk:
        # append-only, one stream: identical rows collapse by content hash, as through Debezium
        h = sql.SQL("md5(ROW({})::text)").format(col_list)
        source_sql = sql.SQL(
            "COPY (SELECT DISTINCT ON (_cf_h) {cols}, {pos}::numeric, _cf_h FROM "
            "(SELECT {cols}, {h} AS _cf_h FROM {t}) x) TO STDOUT"
        ).format(cols=col_list, pos=sql.Literal(str(pos)), h=h, t=ident)
        target_sql = sql.SQL("COPY {} ({}, {}, {}) FROM STDIN").format(
            ident, col_list, sql.Identifier(POS_COLUMN), sql.Identifier(HASH_COLUMN)
        )
        return [Chunk(table, source_sql, target_sql, table)]
    target_sql = sql.SQL("COPY {} ({}, {}) FROM STDIN{}").format(
        ident, col_list, sql.Identifier(POS_COLUMN), fmt
    )
    select = sql.SQL("SELECT {}, {}::numeric FROM {}").format(
        col_list, sql.Literal(str(pos)), ident
    )
    return [
        Chunk(
            table,
            sql.SQL("COPY ({}{}) TO STDOUT{}").format(
                select, sql.SQL(" WHERE {}").format(cond) if cond else sql.SQL(""), fmt
            ),
            target_sql,
            label,
        )
        for cond, label in block_ranges(src, table)
    ]
