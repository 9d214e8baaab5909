"""Set-based writes of bookkeeping rows: the batch's rows COPYed into a session's temporary
staging table, then merged into their table by ONE statement (as the target tables' apply does,
crossfade.target.apply). Row by row (``executemany``), psycopg's per-row parameter handling and
the server's per-statement work were most of the dedup step's CPU in a mapped load (issue 22).
A deduplicated target's golden records are staged here too (:mod:`crossfade.target.golden`, whose
module builds the statements on the target table)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

_NEEDS_QUOTES = re.compile(
    r'^$|["{},\\ \t\n\r\f\v]|^null$|[\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]',
    re.ASCII | re.IGNORECASE,
)
"""psycopg's test of an array element that needs quotes (types.array._get_needs_quotes_regexp,
delimiter ``,``), on the text rather than its UTF-8 bytes: empty, a character to escape or ASCII
white space, the word NULL in any case, or a Unicode space CockroachDB strips."""


def text_array(conn: psycopg.Connection, items: list[Any]) -> list[Any] | str:
    """``items`` as a COPY value of a ``text[]`` column: when they are all ``str`` and the
    connection's encoding UTF-8, the array literal psycopg's list dumper (crossfade.db's
    TextListDumper) writes for them, as one text, which COPY writes as the same bytes;
    else ``items`` as they are (psycopg dumps them). psycopg looks the dumper of a list up per
    value, element by element (~4.5 us for a member's two block keys, issue 22)."""
    if conn.info.encoding != "utf-8":
        return items
    parts = []
    for s in items:
        if type(s) is not str:
            return items
        if _NEEDS_QUOTES.search(s):
            s = '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(s)
    return "{" + ",".join(parts) + "}"


def stage_and_merge(
    conn: psycopg.Connection,
    like: sql.Composable,
    cols: Sequence[str],
    rows: Iterable[Sequence[Any]],
    merge: Callable[[sql.Identifier], list[tuple[sql.Composed, Sequence[Any]]]],
    extra: Sequence[tuple[str, str]] = (),
) -> None:
    """COPY ``rows`` (values of ``cols``, then of the ``extra`` (name, SQL type) columns) into a
    staging table shaped as those columns of the table ``like``, run the statements (with their
    parameters) ``merge(stage)`` builds, in order, and empty the stage.

    The staging table (``CREATE TEMP TABLE IF NOT EXISTS ... ON COMMIT DELETE ROWS``) is
    created in every call, a no-op when it exists: a rolled-back transaction takes a
    just-created one with it. On an autocommit connection outside a transaction the three steps
    run in one (the stage's rows would go at the COPY's commit)."""
    names = sql.SQL(", ").join(map(sql.Identifier, [*cols, *(n for n, _ in extra)]))
    shape = sql.SQL(", ").join(
        [
            *map(sql.Identifier, cols),
            *(sql.SQL("NULL::{} AS {}").format(sql.SQL(t), sql.Identifier(n)) for n, t in extra),
        ]
    )
    digest = hashlib.md5(shape.as_string(conn).encode() + like.as_string(conn).encode())
    stage = sql.Identifier(f"cf_bkstage_{digest.hexdigest()[:12]}")
    idle = conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE
    tx = conn.transaction() if idle else nullcontext()
    with tx, conn.cursor() as cur:
        cur.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
                "SELECT {shape} FROM {like} WITH NO DATA"
            ).format(stage=stage, shape=shape, like=like)
        )
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(stage, names)) as cp:
            for r in rows:
                cp.write_row(r)
        with conn.pipeline():  # one round trip for them all
            for stmt, params in merge(stage):
                cur.execute(stmt, params)
            cur.execute(sql.SQL("TRUNCATE {}").format(stage))
