"""Chunked checksum comparison of one source table with its target, in bounded memory.

How a table is compared (both databases are only ever asked for aggregates or small ranges):

1. ``count(*)`` on both sides.
2. The key space is cut into ranges of ``chunk_rows`` source rows: each boundary is found with an
   index-ordered ``OFFSET chunk_rows - 1 LIMIT 1`` after the previous one, so no list of keys is
   ever held. The last range is open-ended, so target rows beyond the source's last key are
   compared too.
3. Per range each side computes ``count(*)`` and ``sum`` of a 64-bit hash of the row's text (the
   row of the mapped columns as text, in a session with fixed output settings: ``TimeZone=UTC``
   and friends; a column of the same type on both sides by its type's output, one whose types
   differ by its ``::text``; the target's ``_cf_pos`` and other bookkeeping columns are not part
   of it). Equal counts and sums: the range matches. The hash is ``hashtextextended(text, 0)`` (PostgreSQL's
   own 64-bit text hash, the one hash partitioning relies on; 2-2.5x faster than an md5 of the
   row cut to 64 bits, measured on pgbench_accounts) when both servers are 11 or newer, else the
   md5 cut to 64 bits; a difference is then found by md5 per row (step 4) either way.
4. A range that differs is narrowed: while either side holds more than ``leaf_rows`` rows in it,
   it is split into pieces of ``leaf_rows`` rows of the larger side and each piece is compared
   again; a piece small enough is read as ``key -> md5(row text)`` from both sides and diffed:
   keys only in the source are *missing*, only in the target *extra*, in both with another hash
   *different*.

Memory is bounded by ``leaf_rows`` (one piece of each side) plus at most ``max_keys`` differing
keys kept for the fence re-check (beyond that they are only counted).

Key values travel as their text output and come back through ``CAST(text AS <type>)``, so every
key type works (uuid, timestamps, numerics, enums). When a key column's collation is not the same
on both sides, ranges are compared under ``COLLATE "C"`` (correct, but the index cannot serve the
ordering).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql

from crossfade.catalog import POS_COLUMN, TableShape, written_since

Key = tuple[str | None, ...]
"""A primary key as the text output of each key column (UTC session)."""

SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, MDY'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
)
"""Output settings under which both sides print values identically."""


def prepare_session(conn: psycopg.Connection) -> None:
    for stmt in SESSION_SETTINGS:
        conn.execute(stmt)


@dataclass(frozen=True, slots=True)
class Agg:
    rows: int
    hash_sum: Decimal


@dataclass
class TableCompare:
    """What the chunk pass found in one table (before any re-check)."""

    table: str
    source_rows: int = 0
    target_rows: int = 0
    chunks: int = 0
    chunks_differing: int = 0
    keys: dict[Key, str] = field(default_factory=dict)
    """Differing keys kept for the re-check -> 'missing' | 'extra' | 'different'."""
    overflow: dict[str, int] = field(
        default_factory=lambda: {"missing": 0, "extra": 0, "different": 0}
    )
    """Differing keys beyond ``max_keys``: counted, not kept (and so not re-checked)."""


def _c_like(conn: psycopg.Connection, table: str, column: str) -> str | None:
    """The column's effective collation name (None for a non-collatable type)."""
    schema, name = table.split(".", 1)
    row = conn.execute(
        "SELECT CASE WHEN co.collname = 'default' THEN d.datcollate ELSE co.collname END "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
        "JOIN pg_database d ON d.datname = current_database() "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s AND a.attcollation <> 0",
        (schema, name, column),
    ).fetchone()
    return str(row[0]) if row else None


class TableComparer:
    """Compares one table; see the module docstring for the method."""

    def __init__(
        self,
        source: psycopg.Connection,
        target: psycopg.Connection,
        shape: TableShape,
        target_table: str | None = None,
        *,
        chunk_rows: int = 20_000,
        leaf_rows: int = 1_000,
        max_keys: int = 10_000,
        on_rows: Callable[[int], None] | None = None,
        target_shape: TableShape | None = None,
    ) -> None:
        """``target_shape``: the target table's columns; those of the same type on both sides
        enter the row text by their type's output, the others through ``::text``."""
        if not shape.pk:
            raise ValueError(f"{shape.qualified} has no primary key")
        self.src, self.tgt = source, target
        self.shape = shape
        self.table = shape.qualified
        self.target_table = target_table or shape.qualified
        self.chunk_rows = max(2, chunk_rows)
        self.leaf_rows = max(2, min(leaf_rows, self.chunk_rows))
        self.max_keys = max_keys
        self.on_rows = on_rows
        self.pk = list(shape.pk)
        self.pk_types = [shape.column(c).type_sql for c in self.pk]
        self.cols = [c.name for c in shape.columns]
        theirs = {c.name: c.type_sql for c in target_shape.columns} if target_shape else {}
        self._same_type = {c.name for c in shape.columns if theirs.get(c.name) == c.type_sql}
        self.result = TableCompare(self.table)
        c_cols = set()
        for c in self.pk:
            a, b = _c_like(source, self.table, c), _c_like(target, self.target_table, c)
            if a is not None and a != b:  # the same collation on both sides orders alike
                c_cols.add(c)
        self._c_cols = c_cols
        self._build_sql()

    # -- SQL ----------------------------------------------------------------------------------
    def _rel(self, qualified: str) -> sql.Composable:
        schema, name = qualified.split(".", 1)
        return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))

    def _build_sql(self) -> None:
        I = sql.Identifier  # noqa: E741,N806
        colexpr = [
            sql.SQL('r.{} COLLATE "C"').format(I(c))
            if c in self._c_cols
            else sql.SQL("r.{}").format(I(c))
            for c in self.pk
        ]
        param = [
            sql.SQL('CAST(%s AS {}) COLLATE "C"').format(sql.SQL(t))
            if c in self._c_cols
            else sql.SQL("CAST(%s AS {})").format(sql.SQL(t))
            for c, t in zip(self.pk, self.pk_types, strict=True)
        ]
        self._key_row = sql.SQL("({})").format(sql.SQL(", ").join(colexpr))
        self._param_row = sql.SQL("({})").format(sql.SQL(", ").join(param))
        self._order = sql.SQL(", ").join(colexpr)
        self._key_text = sql.SQL(", ").join(sql.SQL("r.{}::text").format(I(c)) for c in self.pk)
        # a column of one type on both sides goes into the row as it is (the row's text is then
        # the type's output: half the cost of a ::text per column, measured 0.5-0.75 s against
        # 1.2 s on pgbench_accounts); one whose types differ is compared by its ::text (char(n)
        # against text, a domain against its base type). Both sides use the same expressions.
        row_text = sql.SQL("ROW({})::text").format(
            sql.SQL(", ").join(
                sql.SQL("r.{}" if c in self._same_type else "r.{}::text").format(I(c))
                for c in self.cols
            )
        )
        self._row_md5 = sql.SQL("md5({})").format(row_text)
        if min(self.src.info.server_version, self.tgt.info.server_version) >= 110000:
            self._row_h64 = sql.SQL("hashtextextended({}, 0)").format(row_text)
        else:  # hashtextextended() came with PostgreSQL 11; both sides must use the same hash
            self._row_h64 = sql.SQL("('x' || substr(md5({}), 1, 16))::bit(64)::bigint").format(
                row_text
            )

    def _range(self, lo: Key | None, hi: Key | None) -> tuple[sql.Composable, list[Any]]:
        parts: list[sql.Composable] = []
        params: list[Any] = []
        if lo is not None:
            parts.append(sql.SQL("{} > {}").format(self._key_row, self._param_row))
            params.extend(lo)
        if hi is not None:
            parts.append(sql.SQL("{} <= {}").format(self._key_row, self._param_row))
            params.extend(hi)
        if not parts:
            return sql.SQL(""), params
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts), params

    def count(self, conn: psycopg.Connection, qualified: str) -> int:
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(self._rel(qualified))
        ).fetchone()
        return int(row[0]) if row else 0

    def boundary(self, side: str, lo: Key | None, hi: Key | None, n: int) -> Key | None:
        """The key ``n`` rows after ``lo`` (within ``hi``) on one side, None if fewer rows."""
        conn, rel = self._side(side)
        where, params = self._range(lo, hi)
        q = sql.SQL(
            "SELECT {keys} FROM {rel} AS r{where} ORDER BY {order} OFFSET {off} LIMIT 1"
        ).format(
            keys=self._key_text,
            rel=self._rel(rel),
            where=where,
            order=self._order,
            off=sql.Literal(n - 1),
        )
        row = conn.execute(q, params).fetchone()
        return tuple(row) if row else None

    def agg(self, side: str, lo: Key | None, hi: Key | None) -> Agg:
        conn, rel = self._side(side)
        where, params = self._range(lo, hi)
        q = sql.SQL("SELECT count(*), coalesce(sum({h}), 0) FROM {rel} AS r{where}").format(
            h=self._row_h64, rel=self._rel(rel), where=where
        )
        row = conn.execute(q, params).fetchone()
        assert row is not None
        return Agg(int(row[0]), Decimal(row[1]))

    def hashes(self, side: str, lo: Key | None, hi: Key | None) -> dict[Key, str]:
        conn, rel = self._side(side)
        where, params = self._range(lo, hi)
        q = sql.SQL("SELECT {keys}, {h} FROM {rel} AS r{where}").format(
            keys=self._key_text, h=self._row_md5, rel=self._rel(rel), where=where
        )
        n = len(self.pk)
        return {tuple(r[:n]): r[n] for r in conn.execute(q, params)}

    def hashes_of(
        self,
        side: str,
        keys: Iterable[Key],
        batch: int = 1000,
        *,
        conn: psycopg.Connection | None = None,
        lock: bool = False,
        version: bool = False,
    ) -> dict[Key, str]:
        """``key -> md5(row text)`` for the given keys that exist on one side.

        ``lock``: ``FOR SHARE NOWAIT`` the rows (on ``conn``, in its open transaction): nobody can
        change or delete them until that transaction ends. A row locked by somebody else raises
        :class:`psycopg.errors.LockNotAvailable` at once: waiting while holding the rows already
        locked could close a deadlock with the application's transaction, and PostgreSQL might
        abort *its* transaction to break it.

        ``version``: each md5 followed by a space and what names the write that made this row
        version (:func:`crossfade.verify.report.split_version` parts them): in the source the
        tuple's ``xmin`` (every update, delete and re-insert makes a new tuple with a new one;
        a share lock or a freeze keeps it), in the target the row's ``_cf_pos`` (the position of
        the change sync applied; empty for a row sync did not write, or a table without it)."""
        own, rel = self._side(side)
        conn = conn or own
        I = sql.Identifier  # noqa: E741,N806
        n = len(self.pk)
        names = [sql.Identifier(f"k{i}") for i in range(n)]
        join = sql.SQL(" AND ").join(
            sql.SQL("r.{} = CAST(k.{} AS {})").format(I(c), names[i], sql.SQL(t))
            for i, (c, t) in enumerate(zip(self.pk, self.pk_types, strict=True))
        )
        q = sql.SQL(
            "SELECT {keys}, {h} FROM {rel} AS r JOIN unnest({arrays}) AS k({names}) ON {join}{lock}"
        ).format(
            keys=self._key_text,
            h=self._versioned(side) if version else self._row_md5,
            rel=self._rel(rel),
            arrays=sql.SQL(", ").join(sql.SQL("%s::text[]") for _ in range(n)),
            names=sql.SQL(", ").join(names),
            join=join,
            lock=sql.SQL(" FOR SHARE OF r NOWAIT" if lock else ""),
        )
        out: dict[Key, str] = {}
        for chunk in _batches(keys, batch):
            cols = [[k[i] for k in chunk] for i in range(n)]
            for r in conn.execute(q, cols):
                out[tuple(r[:n])] = r[n]
        return out

    def _versioned(self, side: str) -> sql.Composable:
        # to_jsonb: NULL, not an error, when the target table has no _cf_pos
        ver: sql.Composable
        if side == "source":
            ver = sql.SQL("r.xmin::text")
        else:
            ver = sql.SQL("coalesce(to_jsonb(r) ->> {}, '')").format(sql.Literal(POS_COLUMN))
        return sql.SQL("{} || ' ' || {}").format(self._row_md5, ver)

    def changed_keys(self, side: str, snapshot: str) -> set[Key]:
        """Keys of the rows on one side written (inserted or updated) by a transaction that the
        snapshot ``snapshot`` (``pg_current_snapshot()`` as text, PostgreSQL 13+) does not see:
        every row changed since it was taken, by sync or by anybody else (a few rows committed
        just before it may come too: a superset). One scan of the table reading only its keys
        and row headers (no row text, no hash). A row *deleted* since is not among them: the
        counts compare those (see :mod:`crossfade.verify.delta`). The predicate:
        :func:`crossfade.catalog.written_since`."""
        conn, rel = self._side(side)
        q = sql.SQL("SELECT {keys} FROM {rel} AS r WHERE {since}").format(
            keys=self._key_text, rel=self._rel(rel), since=written_since(snapshot)
        )
        n = len(self.pk)
        return {tuple(r[:n]) for r in conn.execute(q)}

    def compare_keys(self, keys: Iterable[Key]) -> int:
        """Compare these keys' rows on both sides (md5 of the row text); differences are noted
        as the chunk pass notes them (``result.keys``, beyond ``max_keys`` only counted).
        Returns how many keys were compared."""
        keys = list(keys)
        # both servers read at once (psycopg waits without the GIL), as the chunk pass does
        with ThreadPoolExecutor(1, thread_name_prefix="verify-target") as pool:
            theirs = pool.submit(self.hashes_of, "target", keys)
            src = self.hashes_of("source", keys)
            tgt = theirs.result()
        for k in keys:
            a, b = src.get(k), tgt.get(k)
            if a == b:
                continue
            self._note(k, "extra" if a is None else "missing" if b is None else "different")
        return len(keys)

    def rows_of(self, side: str, keys: list[Key]) -> dict[Key, dict[str, str | None]]:
        """Whole rows (column -> text) for a few keys, to show which columns differ."""
        conn, rel = self._side(side)
        I = sql.Identifier  # noqa: E741,N806
        n = len(self.pk)
        out: dict[Key, dict[str, str | None]] = {}
        q = sql.SQL("SELECT {keys}, {vals} FROM {rel} AS r WHERE {cond}").format(
            keys=self._key_text,
            vals=sql.SQL(", ").join(sql.SQL("r.{}::text").format(I(c)) for c in self.cols),
            rel=self._rel(rel),
            cond=sql.SQL(" AND ").join(
                sql.SQL("r.{} = CAST(%s AS {})").format(I(c), sql.SQL(t))
                for c, t in zip(self.pk, self.pk_types, strict=True)
            ),
        )
        for k in keys:
            r = conn.execute(q, list(k)).fetchone()
            if r is not None:
                out[tuple(r[:n])] = dict(zip(self.cols, r[n:], strict=True))
        return out

    def _side(self, side: str) -> tuple[psycopg.Connection, str]:
        return (self.src, self.table) if side == "source" else (self.tgt, self.target_table)

    # -- the walk -----------------------------------------------------------------------------
    def run(self, on_counts: Callable[[int, int], None] | None = None) -> TableCompare:
        res = self.result
        res.source_rows = self.count(self.src, self.table)
        res.target_rows = self.count(self.tgt, self.target_table)
        if on_counts:
            on_counts(res.source_rows, res.target_rows)
        lo: Key | None = None
        # the two servers hash their ranges at the same time (the target's in a thread: psycopg
        # waits without the GIL); the narrowing below stays sequential, it reads little
        with ThreadPoolExecutor(1, thread_name_prefix="verify-target") as pool:
            while True:
                hi = self.boundary("source", lo, None, self.chunk_rows)
                pending = pool.submit(self.agg, "target", lo, hi)
                s = self.agg("source", lo, hi)
                t = pending.result()
                res.chunks += 1
                if s != t:
                    res.chunks_differing += 1
                    self._narrow(lo, hi, s, t)
                if self.on_rows:
                    self.on_rows(s.rows)
                if hi is None:
                    return res
                lo = hi

    def _narrow(
        self, lo: Key | None, hi: Key | None, s: Agg | None = None, t: Agg | None = None
    ) -> None:
        s = s or self.agg("source", lo, hi)
        t = t or self.agg("target", lo, hi)
        if s == t:
            return
        if max(s.rows, t.rows) <= self.leaf_rows:
            self._leaf(lo, hi)
            return
        side = "source" if s.rows >= t.rows else "target"
        cur = lo
        while True:
            b = self.boundary(side, cur, hi, self.leaf_rows)
            if b is None or b == hi:
                self._narrow(cur, hi)
                return
            self._narrow(cur, b)
            cur = b

    def _leaf(self, lo: Key | None, hi: Key | None) -> None:
        src = self.hashes("source", lo, hi)
        tgt = self.hashes("target", lo, hi)
        for k, h in src.items():
            other = tgt.pop(k, None)
            if other is None:
                self._note(k, "missing")
            elif other != h:
                self._note(k, "different")
        for k in tgt:
            self._note(k, "extra")

    def _note(self, key: Key, kind: str) -> None:
        if len(self.result.keys) < self.max_keys:
            self.result.keys[key] = kind
        else:
            self.result.overflow[kind] += 1

    # -- presentation -------------------------------------------------------------------------
    def key_dict(self, key: Key) -> dict[str, str | None]:
        return dict(zip(self.pk, key, strict=True))

    def key_label(self, key: Key) -> str:
        if len(key) == 1:
            return str(key[0])
        return json.dumps(self.key_dict(key))


def _batches(items: Iterable[Key], n: int) -> Iterator[list[Key]]:
    buf: list[Key] = []
    for x in items:
        buf.append(x)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf
