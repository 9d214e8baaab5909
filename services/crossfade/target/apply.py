"""Set-based apply of change events to one target table, guarded by source position.

For each segment of a batch (segments are cut at truncate/sweep markers, which apply in order
between them), inside the caller's transaction:

1. collapse events per key, keeping the change with the highest source position (a duplicate
   re-sent after a capture restart arrives *later* with a *lower* position); an unchanged TOASTed
   column takes the value of the key's earlier change in the same batch when there is one;
2. COPY the survivors into a temporary staging table;
3. drop from staging what the guard refuses (DESIGN decision 2): a target row already at the same
   or a newer position, a tombstone (delete) at the same or a newer position, or a position below
   the table's watermark (a truncate or re-snapshot sweep voided it);
4. one ``DELETE ... USING`` for deletes (leaving tombstones), one ``INSERT ... ON CONFLICT`` for
   upserts, one ``UPDATE ... FROM`` for rows whose unchanged TOAST values must be kept.

A segment with neither deletes nor unchanged TOAST values skips step 3's join against the target:
the upsert's ``ON CONFLICT ... DO UPDATE ... WHERE`` compares the same positions (refusing the same
rows) and its row count is what was applied.

Nothing here commits; the worker commits the batch with its offsets.

Replay (DESIGN decision 5). ``crossfade rewind`` moves a partition's stored offset back to a
checkpoint and records a *replay epoch*: a ``<bookkeeping>.replay`` row with the partition's
``from_offset`` (the checkpoint's) and ``until_offset`` (where sync had got to). Records below
``until_offset`` were applied once already, so the target rows (and tombstones) they wrote carry
exactly their positions; the worker applies them with ``replay=True``, where the guard refuses
only *strictly newer* positions instead of equal-or-newer ones:

* a replayed event re-applies over the row it wrote itself the first time (same position), so
  what a faulty transform wrote is overwritten by what the fixed one makes of the same event;
* for a key changed several times in the range, older events are still refused by the row of
  the newest one (strictly newer), until the newest is replayed and rewrites it: the end state
  is the newest change, as in the first pass;
* a duplicate with a lower position (a capture restart re-sent it) stays refused, as it was;
* tombstones compare the same way (a replayed delete passes its own tombstone; an older upsert
  does not), and watermarks need nothing: ``_cf_lsn < watermark`` already lets an equal position
  through, so a truncate or re-snapshot sweep in the range voids what it voided the first time
  and no more.

Equal positions mean the same source change (each change of a row has its own LSN; all rows of
one snapshot share one position but a key appears once in it), so the relaxation cannot let a
different, older change win. Records from ``until_offset`` on are new and get the strict guard.
A replay cannot restore an unchanged TOASTed value a faulty transform damaged (the event does not
carry it): ``REPLICA IDENTITY FULL`` on such tables avoids that.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from crossfade.catalog import POS_COLUMN, TableShape
from crossfade.errors import SchemaMismatch
from crossfade.events.model import ChangeEvent, RowSchema
from crossfade.events.pgtext import converter_for

Converter = Callable[[Any], str | None]
ConvPair = tuple[Converter, str]
"""A target column's converter and the column's name."""

# decimal.handling.mode=string spells numeric's special values its own way, and its Connect type is
# a plain string: only the target column's type tells them apart from text.
_NUMERIC_SPECIALS = {
    "NAN": "NaN",
    "POSITIVE_INFINITY": "Infinity",
    "NEGATIVE_INFINITY": "-Infinity",
}


def _constant(fill: str | None) -> Converter:
    """A converter that ignores its value and gives ``fill`` (a column the events lack)."""
    return lambda _v: fill


def _numeric(conv: Converter) -> Converter:
    def wrapped(v: Any) -> str | None:
        out = conv(v)
        return _NUMERIC_SPECIALS.get(out, out) if out is not None else None

    return wrapped


@dataclass(slots=True)
class ApplyResult:
    applied: int = 0
    deleted: int = 0
    skipped: int = 0
    toast_missing: list[str] = field(default_factory=list)
    """Keys whose update kept unchanged TOAST values but whose row is not in the target."""


def collapse(events: Iterable[ChangeEvent]) -> list[ChangeEvent]:
    """One event per key: the highest source position wins; TOAST gaps filled from older ones.

    Events are assumed to be of one table. Order of the result follows first appearance.
    """
    by_key: dict[Any, list[ChangeEvent]] = {}
    for e in events:
        # grouped by the key's (column, value) pairs: a JSON encoding per event (event_key_id) cost
        # ~5% of sync's CPU; a key whose value cannot be hashed (an array) is grouped by event_key_id
        key = e.key
        gk: Any = (
            None
            if key is None
            else tuple(key.items())
            if len(key) == 1
            else tuple(sorted(key.items()))
        )
        try:
            group = by_key.get(gk)
        except TypeError:
            gk = event_key_id(e)
            group = by_key.get(gk)
        if group is None:
            by_key[gk] = [e]
        else:
            group.append(e)
    out: list[ChangeEvent] = []
    for group in by_key.values():
        if len(group) == 1:
            out.append(group[0])
            continue
        group.sort(key=lambda e: e.position)  # stable: equal positions keep arrival order
        state = group[0]
        for e in group[1:]:
            if e.is_upsert and state.is_upsert and e.unavailable and state.after is not None:
                assert e.after is not None
                fill = {
                    c: state.after[c]
                    for c in e.unavailable
                    if c not in state.unavailable and c in state.after
                }
                if fill:
                    e = ChangeEvent(
                        table=e.table,
                        op=e.op,
                        key=e.key,
                        after={**e.after, **fill},
                        lsn=e.lsn,
                        position=e.position,
                        source_ts_ms=e.source_ts_ms,
                        snapshot=e.snapshot,
                        tx_id=e.tx_id,
                        row_schema=e.row_schema,
                        key_schema=e.key_schema,
                        unavailable=frozenset(e.unavailable - fill.keys()),
                    )
            state = e
        out.append(state)
    return out


def event_key_id(e: ChangeEvent) -> str:
    """The event's key as ``json.dumps(e.key, sort_keys=True, default=str)`` spells it (the
    origins of a batch, poisoned keys). A one-column key of a string or an int (nearly all) is
    spelled here directly, the same text: sync made this text twice per mapped event."""
    key = e.key
    if key is not None and len(key) == 1:
        ((name, v),) = key.items()
        t = type(v)
        if type(name) is str and (t is str or t is int):
            return (
                "{" + _json_str(name) + ": " + (_json_str(v) if t is str else int.__repr__(v)) + "}"
            )
    return json.dumps(key, sort_keys=True, default=str)


_json_str: Callable[[Any], str] = json.encoder.encode_basestring_ascii


def _key_text(vals: list[str | None]) -> str:
    """``json.dumps(vals)`` for a list of key texts, without the encoder's per-call set-up
    (the staging table's ``_cf_key``, compared with stored tombstones: the text must not change)."""
    if len(vals) == 1:  # most keys: no generator for all()
        if type(vals[0]) is str:
            return "[" + _json_str(vals[0]) + "]"
    elif all(type(v) is str for v in vals):
        return "[" + ", ".join(map(_json_str, vals)) + "]"
    return json.dumps(vals)


def texts_json(vals: list[str | None]) -> str:
    """``json.dumps(list(vals))`` for column texts (str or None), without the encoder's per-call
    set-up: the same text, byte for byte (an append-only row's hash is made of it and stored)."""
    out = []
    for v in vals:
        if type(v) is str:
            out.append(_json_str(v))
        elif v is None:
            out.append("null")
        else:
            return json.dumps(vals)
    return "[" + ", ".join(out) + "]"


class PositionColumn:
    """Guard strategy: the position of the change that last wrote a row is in the row itself,
    the ``_cf_pos`` column (DESIGN decision 2). The upsert's ``ON CONFLICT ... WHERE`` compares
    it, so a batch without deletes or unchanged TOASTed values needs no guard join."""

    upsert_guards = True

    def stale_rows(self, a: TableApplier, op: str) -> sql.Composed:
        """Drop from staging what a target row at a position ``op`` the event's refuses."""
        return sql.SQL(
            "DELETE FROM {stage} s USING {target} t WHERE {pk} AND t.{lsn} {op} s._cf_lsn"
        ).format(
            stage=a.stage,
            target=a.target,
            pk=a.pk_join,
            lsn=sql.Identifier(POS_COLUMN),
            op=sql.SQL(op),
        )

    def upsert(self, a: TableApplier, replay: bool) -> sql.Composed:
        I = sql.Identifier  # noqa: E741,N806
        set_list = [sql.SQL("{0} = EXCLUDED.{0}").format(I(c)) for c in [*a.non_pk, POS_COLUMN]]
        return sql.SQL(
            "INSERT INTO {target} AS t ({cols}, {lsn}) OVERRIDING SYSTEM VALUE SELECT {cols}, _cf_lsn FROM {stage} "
            "WHERE NOT _cf_del AND _cf_unavail IS NULL "
            "ON CONFLICT ({pk}) DO UPDATE SET {sets} WHERE t.{lsn} IS NULL OR t.{lsn} {op} EXCLUDED.{lsn}"
        ).format(
            op=sql.SQL("<=" if replay else "<"),
            target=a.target,
            cols=sql.SQL(", ").join(map(I, a.cols)),
            lsn=I(POS_COLUMN),
            stage=a.stage,
            pk=sql.SQL(", ").join(map(I, a.pk)),
            sets=sql.SQL(", ").join(set_list),
        )

    def toast_sets(self, a: TableApplier, sets: list[sql.Composed]) -> list[sql.Composed]:
        return [*sets, sql.SQL("{0} = s._cf_lsn").format(sql.Identifier(POS_COLUMN))]

    def truncate_rows(self, a: TableApplier) -> sql.Composed:
        return sql.SQL("DELETE FROM {target} WHERE {lsn} IS NULL OR {lsn} < %s").format(
            target=a.target, lsn=sql.Identifier(POS_COLUMN)
        )

    def truncate_positions(self, a: TableApplier) -> sql.Composed | None:
        return None

    def truncate_known_rows(self, a: TableApplier) -> sql.Composed | None:
        return None


class SideTable:
    """Guard strategy for tables that must not get a column of ours (the legacy tables the
    reverse sync writes back to, :mod:`crossfade.mapping.inverse`): positions live beside them in
    ``<bookkeeping>.positions`` (table, key text -> position), keyed by the staging key text
    (the tombstones' key). The upsert overwrites and records the positions in the same statement,
    so the guard join must always run.

    A truncate or sweep at P deletes the rows the reverse sync wrote below P (a position row
    under P). Only the table's first one (its watermark still unset: the first snapshot's sweep)
    also deletes the rows with no position at all: legacy is frozen then, so a row the snapshot
    did not deliver was deleted in the new database. After it, a row with no position is one
    legacy got from elsewhere (the business writing there again after going back) and no later
    truncate or re-snapshot sweep of the new database touches it."""

    upsert_guards = False

    def stale_rows(self, a: TableApplier, op: str) -> sql.Composed:
        return sql.SQL(
            "DELETE FROM {stage} s USING {bk}.positions p WHERE p.tbl = {tbl} AND p.key = s._cf_key "
            "AND p.pos {op} s._cf_lsn"
        ).format(stage=a.stage, bk=a.bk, tbl=sql.Literal(a.tbl_name), op=sql.SQL(op))

    def upsert(self, a: TableApplier, replay: bool) -> sql.Composed:
        # the guard already dropped every stale event (replay or not): the upsert overwrites,
        # and records the positions of everything that is not a delete (TOAST-keeping updates
        # included) at once
        I = sql.Identifier  # noqa: E741,N806
        sets = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(I(c)) for c in a.non_pk)
        conflict = sql.SQL("DO UPDATE SET {}").format(sets) if a.non_pk else sql.SQL("DO NOTHING")
        return sql.SQL(
            "WITH up AS (INSERT INTO {target} AS t ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {stage} "
            "WHERE NOT _cf_del AND _cf_unavail IS NULL ON CONFLICT ({pk}) {conflict}) "
            "INSERT INTO {bk}.positions AS p (tbl, key, pos) SELECT {tbl}, _cf_key, _cf_lsn FROM {stage} "
            "WHERE NOT _cf_del ON CONFLICT (tbl, key) DO UPDATE SET pos = GREATEST(p.pos, EXCLUDED.pos)"
        ).format(
            target=a.target,
            cols=sql.SQL(", ").join(map(I, a.cols)),
            stage=a.stage,
            pk=sql.SQL(", ").join(map(I, a.pk)),
            conflict=conflict,
            bk=a.bk,
            tbl=sql.Literal(a.tbl_name),
        )

    def toast_sets(self, a: TableApplier, sets: list[sql.Composed]) -> list[sql.Composed]:
        return sets or [sql.SQL("{0} = t.{0}").format(sql.Identifier(a.pk[0]))]

    def truncate_rows(self, a: TableApplier) -> sql.Composed:
        # the table's first void: every row without a position at or above it
        return sql.SQL(
            "DELETE FROM {target} t WHERE NOT EXISTS (SELECT 1 FROM {bk}.positions p WHERE p.tbl = {tbl} "
            "AND p.key = {key} AND p.pos >= %s)"
        ).format(target=a.target, bk=a.bk, tbl=sql.Literal(a.tbl_name), key=_target_key_text(a))

    def truncate_known_rows(self, a: TableApplier) -> sql.Composed | None:
        # after the first void: only the rows the reverse sync wrote below the position
        return sql.SQL(
            "DELETE FROM {target} t USING {bk}.positions p WHERE p.tbl = {tbl} AND p.key = {key} "
            "AND p.pos < %s"
        ).format(target=a.target, bk=a.bk, tbl=sql.Literal(a.tbl_name), key=_target_key_text(a))

    def truncate_positions(self, a: TableApplier) -> sql.Composed | None:
        return sql.SQL("DELETE FROM {bk}.positions WHERE tbl = {tbl} AND pos < %s").format(
            bk=a.bk, tbl=sql.Literal(a.tbl_name)
        )


def _target_key_text(a: TableApplier) -> sql.Composed:
    """A target row's key text as ``_row`` builds it (the positions' and tombstones' key):
    jsonb's text form of the list of the key's text values."""
    return sql.SQL("jsonb_build_array({})::text").format(
        sql.SQL(", ").join(sql.SQL("t.{}::text").format(sql.Identifier(c)) for c in a.pk)
    )


Guard = PositionColumn | SideTable


def side_ddl(schema: str) -> sql.Composed:
    """The positions table of :class:`SideTable` (the rest of the bookkeeping schema is
    :func:`crossfade.target.store.ensure_schema`'s)."""
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {}.positions (tbl text NOT NULL, key text NOT NULL, pos numeric NOT NULL, "
        "PRIMARY KEY (tbl, key))"
    ).format(sql.Identifier(schema))


def ensure_side_schema(conn: psycopg.Connection, schema: str) -> None:
    conn.execute(side_ddl(schema))


class TableApplier:
    """Applies change events of one source table to its target table. One per table and worker.

    ``guard``: where the positions that guard the rows live (:class:`PositionColumn`, the
    default, or :class:`SideTable`)."""

    def __init__(
        self,
        shape: TableShape,
        bookkeeping_schema: str,
        stage_tag: str = "",
        added: dict[str, tuple[int, str | None]] | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.guard: Guard = guard or PositionColumn()
        self.upsert_guards = self.guard.upsert_guards
        """The upsert's ``ON CONFLICT ... WHERE`` refuses an older position by itself, so a batch
        with no delete and no unchanged TOASTed value needs no guard join against the target."""
        self.shape = shape
        self.added = added or {}
        """Columns sync added mid-stream: name -> (position of the first change carrying it,
        the value rows held before it, as text)."""
        self._missing: dict[RowSchema, tuple[int, list[str]]] = {}
        self.cols = [c.name for c in shape.columns]
        self._numeric_cols = {c.name for c in shape.columns if c.type_sql.startswith("numeric")}
        self.pk = list(shape.pk)
        self.bk = sql.Identifier(bookkeeping_schema)
        self.tbl_name = shape.qualified
        self.target = sql.SQL("{}.{}").format(
            sql.Identifier(shape.schema), sql.Identifier(shape.name)
        )
        # the column list is in the name: after ADD COLUMN the session's old staging table
        # (CREATE TEMP TABLE IF NOT EXISTS) must not be reused
        digest = hashlib.md5(
            ("|".join([shape.qualified, *self.cols]) + stage_tag).encode()
        ).hexdigest()[:12]
        self.stage = sql.Identifier(f"cf_stage_{digest}")
        self.sql_truncate_stage = sql.SQL("TRUNCATE {}").format(
            self.stage
        )  # here: subclasses build their own SQL
        self._conv_cache: dict[
            tuple[RowSchema | None, RowSchema | None], tuple[list[Converter], list[Converter]]
        ] = {}
        self._conv_by_id: dict[
            tuple[int, int], tuple[Any, Any, list[ConvPair], list[ConvPair]]
        ] = {}
        """(id of row schema, id of key schema) -> the schemas, then (converter, column) pairs of
        the key and of the row (zipped once, not for every row)."""
        self._build_sql()

    # -- SQL ----------------------------------------------------------------------------------
    def _build_sql(self) -> None:
        I = sql.Identifier  # noqa: E741,N806
        g = self.guard
        cols = sql.SQL(", ").join(map(I, self.cols))
        self.pk_join = sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(I(c)) for c in self.pk)
        self.non_pk = [c for c in self.cols if c not in self.pk]
        # the staging columns take the target's types, a domain's base type for a domain (the
        # shape's type_sql): a delete stages NULL in the non-key columns, which a NOT NULL domain
        # refused; the target still checks the domain on every row written from the stage
        based = sql.SQL(", ").join(
            sql.SQL("CAST({0} AS {1}) AS {0}").format(I(c), sql.SQL(self.shape.column(c).type_sql))
            for c in self.cols
        )
        self.sql_stage = sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
            "SELECT {based}, 0::numeric AS _cf_lsn, false AS _cf_del, ''::text AS _cf_key, "
            "NULL::text[] AS _cf_unavail FROM {target} WITH NO DATA"
        ).format(stage=self.stage, based=based, target=self.target)
        self.sql_copy = sql.SQL(
            "COPY {stage} ({cols}, _cf_lsn, _cf_del, _cf_key, _cf_unavail) FROM STDIN"
        ).format(stage=self.stage, cols=cols)
        # the guard; a replay (see the module docstring) refuses only strictly newer positions
        self.sql_guard_target, self.sql_guard_target_replay = (
            g.stale_rows(self, op) for op in (">=", ">")
        )
        guard_tomb = "DELETE FROM {stage} s USING {bk}.tombstones tb WHERE tb.tbl = %%s AND tb.key = s._cf_key AND tb.lsn %s s._cf_lsn"
        self.sql_guard_tomb, self.sql_guard_tomb_replay = (
            sql.SQL(guard_tomb % op).format(stage=self.stage, bk=self.bk) for op in (">=", ">")
        )
        self.sql_guard_wm = sql.SQL("DELETE FROM {stage} WHERE _cf_lsn < %s").format(
            stage=self.stage
        )
        self.sql_count = sql.SQL(
            "SELECT count(*) FILTER (WHERE _cf_del), count(*) FILTER (WHERE NOT _cf_del) FROM {stage}"
        ).format(stage=self.stage)
        self.sql_delete = sql.SQL(
            "DELETE FROM {target} t USING {stage} s WHERE s._cf_del AND {pk}"
        ).format(target=self.target, stage=self.stage, pk=self.pk_join)
        self.sql_tomb = sql.SQL(
            "INSERT INTO {bk}.tombstones (tbl, key, lsn) SELECT %s, _cf_key, _cf_lsn FROM {stage} WHERE _cf_del "
            "ON CONFLICT (tbl, key) DO UPDATE SET lsn = GREATEST({bk}.tombstones.lsn, EXCLUDED.lsn)"
        ).format(bk=self.bk, stage=self.stage)
        self.sql_upsert, self.sql_upsert_replay = (g.upsert(self, r) for r in (False, True))
        toast_sets = [
            sql.SQL("{0} = CASE WHEN {1} = ANY(s._cf_unavail) THEN t.{0} ELSE s.{0} END").format(
                I(c), sql.Literal(c)
            )
            for c in self.non_pk
        ]
        self.sql_toast = sql.SQL(
            "UPDATE {target} t SET {sets} FROM {stage} s WHERE NOT s._cf_del AND s._cf_unavail IS NOT NULL AND {pk}"
        ).format(
            target=self.target,
            sets=sql.SQL(", ").join(g.toast_sets(self, toast_sets)),
            stage=self.stage,
            pk=self.pk_join,
        )
        self.sql_toast_missing = sql.SQL(
            "SELECT s._cf_key FROM {stage} s WHERE NOT s._cf_del AND s._cf_unavail IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM {target} t WHERE {pk})"
        ).format(stage=self.stage, target=self.target, pk=self.pk_join)
        self._build_common_sql()

    def _build_common_sql(self) -> None:
        """Watermark and truncate statements, the same for every kind of table."""
        self.sql_watermark = sql.SQL(
            "SELECT lsn FROM {bk}.watermarks WHERE tbl = %s FOR SHARE"
        ).format(bk=self.bk)
        self.sql_wm_init = sql.SQL(
            "INSERT INTO {bk}.watermarks (tbl, lsn) VALUES (%s, -1) ON CONFLICT (tbl) DO NOTHING"
        ).format(bk=self.bk)
        self.sql_truncate_wm = sql.SQL(
            "UPDATE {bk}.watermarks SET lsn = GREATEST(lsn, %s), reason = %s, updated_at = now() WHERE tbl = %s"
        ).format(bk=self.bk)
        self.sql_truncate_rows = self.guard.truncate_rows(self)
        self.sql_truncate_known = self.guard.truncate_known_rows(self)
        self.sql_truncate_guard = self.guard.truncate_positions(self)
        self.sql_truncate_tomb = sql.SQL(
            "DELETE FROM {bk}.tombstones WHERE tbl = %s AND lsn < %s"
        ).format(bk=self.bk)

    # -- per connection -----------------------------------------------------------------------
    def prepare(self, conn: psycopg.Connection, *, watermark: bool = True) -> int:
        """Create the watermark row (once) and the session's staging table; return the table's
        watermark, share-locked until commit so a concurrent truncate orders with us (-1 and no
        lock with ``watermark=False``).

        Runs in every batch transaction, not once per session: a rolled-back batch (an enum label
        to add, a stale owner, a lost connection) takes a just-created staging table and watermark
        row with it. Both statements are no-ops when the objects exist. The statements go in one
        pipeline: one round trip to the server per table and batch instead of three."""
        with conn.pipeline():
            conn.execute(self.sql_wm_init, (self.tbl_name,))
            conn.execute(self.sql_stage)
            cur = conn.execute(self.sql_watermark, (self.tbl_name,)) if watermark else None
        row = cur.fetchone() if cur is not None else None
        return int(row[0]) if row else -1

    # -- rows ---------------------------------------------------------------------------------
    def _converters(self, e: ChangeEvent) -> tuple[list[ConvPair], list[ConvPair]]:
        """The (converter, column) pairs of ``e``'s key and row, as the target's columns go."""
        # by identity first: a codec hands out one RowSchema object per schema, and hashing a
        # RowSchema's nested field tuples for every event cost ~4% of sync's CPU
        rs, ks = e.row_schema, e.key_schema
        hit = self._conv_by_id.get((id(rs), id(ks)))
        if hit is not None and hit[0] is rs and hit[1] is ks:
            return hit[2], hit[3]
        key_convs, row_convs = self._converter_lists(e)
        pairs = (
            list(zip(key_convs, self.pk, strict=True)),
            list(zip(row_convs, self.cols, strict=True)),
        )
        self._conv_by_id[(id(rs), id(ks))] = (rs, ks, *pairs)
        return pairs

    def _converter_lists(self, e: ChangeEvent) -> tuple[list[Converter], list[Converter]]:
        rs, ks = e.row_schema, e.key_schema
        ck = (rs, ks)
        found = self._conv_cache.get(ck)
        if found is not None:
            return found
        if ks is None:
            raise SchemaMismatch(f"change event of {e.table} carries no key schema")
        key_convs = [
            _numeric(converter_for(ks.type_of(c)))
            if c in self._numeric_cols
            else converter_for(ks.type_of(c))
            for c in self.pk
        ]
        row_convs = self._row_converters(e.table, rs) if rs is not None else []
        self._conv_cache[ck] = (key_convs, row_convs)
        return key_convs, row_convs

    def _row_converters(self, table: str, rs: RowSchema) -> list[Converter]:
        """Per target column, the converter of its value in rows of schema ``rs``; raises
        :class:`SchemaMismatch` when the events lack a column the target has."""
        have = set(rs.columns)
        missing = [c for c in self.cols if c not in have]
        if missing and any(c not in self.added for c in missing):
            raise self._dropped(table, missing)
        if missing:
            # columns added after these changes were made: an older change (re-sent after a
            # capture restart, or late from another partition) gets the value rows held before
            # ADD COLUMN; a change at or after the column's first appearance means it was dropped
            self._missing[rs] = (max(self.added[c][0] for c in missing), missing)
        return [
            _constant(self.added[c][1])
            if c not in have
            else _numeric(converter_for(rs.type_of(c)))
            if c in self._numeric_cols
            else converter_for(rs.type_of(c))
            for c in self.cols
        ]

    def _dropped(self, table: str, missing: list[str]) -> SchemaMismatch:
        return SchemaMismatch(
            f"change events of {table} no longer carry column(s) {', '.join(missing)} "
            f"that target {self.tbl_name} has (dropped or renamed at the source?)",
            "map the change explicitly in the config, or drop the column from the target and restart sync",
        )

    def _check_carried(self, e: ChangeEvent) -> None:
        """Raise when ``e`` lacks a column added mid-stream yet is not older than the column."""
        hit = self._missing.get(e.row_schema) if e.row_schema is not None else None
        if hit is not None and e.position >= hit[0]:
            raise self._dropped(e.table, hit[1])

    def staging_row(self, e: ChangeEvent) -> tuple[str | None, ...]:
        key_pairs, row_pairs = self._converters(e)
        key = e.key
        assert key is not None
        key_vals = [conv(key[c]) for conv, c in key_pairs]
        key_text = _key_text(key_vals)
        after = e.after
        if e.op == "d" or after is None:  # e.is_delete, without the property's call
            pk_pos = {c: v for c, v in zip(self.pk, key_vals, strict=True)}
            return (*[pk_pos.get(c) for c in self.cols], str(e.position), "t", key_text, None)
        if self._missing:
            self._check_carried(e)
        unavail = e.unavailable
        if unavail:
            vals = [None if c in unavail else conv(after.get(c)) for conv, c in row_pairs]
            ua = (
                "{"
                + ",".join(
                    '"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in sorted(unavail)
                )
                + "}"
            )
        else:
            vals = [conv(after.get(c)) for conv, c in row_pairs]
            ua = None
        return (*vals, str(e.position), "f", key_text, ua)

    # -- apply --------------------------------------------------------------------------------
    def apply(
        self,
        conn: psycopg.Connection,
        events: list[ChangeEvent],
        watermark: int,
        *,
        replay: bool = False,
    ) -> ApplyResult:
        """Apply c/u/r/d events (no truncates) inside the caller's transaction.

        ``replay``: the events are re-applied by a rewind's replay (module docstring): an equal
        position overwrites."""
        if not events:
            return ApplyResult()
        survivors = collapse(events)
        if watermark >= 0:
            survivors = [e for e in survivors if e.position >= watermark]
        return self.apply_rows(
            conn, map(self.staging_row, survivors), len(events), watermark, replay=replay
        )

    def apply_rows(
        self,
        conn: psycopg.Connection,
        rows: Iterable[tuple[Any, ...]],
        n_in: int,
        watermark: int,
        *,
        replay: bool = False,
    ) -> ApplyResult:
        """Stage ``rows`` (one per key: the target columns, then position, is-delete, key text,
        unavailable columns) and apply what the guard lets through; ``n_in`` events made them."""
        res = ApplyResult()
        plain = (
            True  # no delete, no unchanged TOASTed value (is-delete "f"/False, unavailable None)
        )
        with conn.cursor() as cur, conn.cursor() as up:
            with cur.copy(self.sql_copy) as cp:
                for r in rows:
                    cp.write_row(r)
                    if plain and (r[-1] is not None or r[-3] not in ("f", False)):
                        plain = False
            if plain and self.upsert_guards:
                # the upsert alone: its ON CONFLICT ... WHERE is the guard against the target
                # (the join it saves: ~40-50 ms of a 10k-row batch into a 1M-row table), and its
                # row count is what was applied. A refused row is locked until the batch commits
                # (ON CONFLICT DO UPDATE locks the row it meets); only a worker that lost its
                # partitions (fault 10) writes the same keys, and a deadlock is retried as transient
                with conn.pipeline():
                    cur.execute(
                        self.sql_guard_tomb_replay if replay else self.sql_guard_tomb,
                        (self.tbl_name,),
                    )
                    if watermark >= 0:
                        cur.execute(self.sql_guard_wm, (watermark,))
                    up.execute(self.sql_upsert_replay if replay else self.sql_upsert)
                    cur.execute(self.sql_truncate_stage)
                res.applied = max(up.rowcount, 0)
                res.skipped = n_in - res.applied
                return res
            # pipeline mode: the statements go out together and only the two whose results we
            # read wait for the server (three round trips instead of up to eleven)
            with conn.pipeline():
                cur.execute(self.sql_guard_target_replay if replay else self.sql_guard_target)
                cur.execute(
                    self.sql_guard_tomb_replay if replay else self.sql_guard_tomb, (self.tbl_name,)
                )
                if watermark >= 0:
                    cur.execute(self.sql_guard_wm, (watermark,))
                row = cur.execute(self.sql_count).fetchone()
                assert row is not None
                n_del, n_up = int(row[0]), int(row[1])
                res.skipped = n_in - n_del - n_up
                if n_del:
                    cur.execute(self.sql_delete)
                    cur.execute(self.sql_tomb, (self.tbl_name,))
                    res.deleted = n_del
                if n_up:
                    cur.execute(self.sql_upsert_replay if replay else self.sql_upsert)
                    cur.execute(self.sql_toast)
                    res.toast_missing = [
                        r[0] for r in cur.execute(self.sql_toast_missing).fetchall()
                    ]
                    res.applied = n_up - len(res.toast_missing)
                cur.execute(self.sql_truncate_stage)
        return res

    def truncate(self, conn: psycopg.Connection, pos: int, reason: str) -> int:
        """Void everything below position ``pos`` (a TRUNCATE, or the sweep after a snapshot).

        Rows written by older changes are deleted; later events below ``pos`` (from a lagging
        partition) are skipped by the watermark. Returns the number of rows deleted. Under the
        :class:`SideTable` guard only the table's first void deletes rows it has no position for.
        """
        rows = self.sql_truncate_rows
        if self.sql_truncate_known is not None:
            wm = conn.execute(self.sql_watermark, (self.tbl_name,)).fetchone()
            if wm is not None and int(wm[0]) >= 0:
                rows = self.sql_truncate_known
        conn.execute(self.sql_truncate_wm, (pos, reason, self.tbl_name))
        cur = conn.execute(rows, (pos,))
        deleted = cur.rowcount
        conn.execute(self.sql_truncate_tomb, (self.tbl_name, pos))
        if self.sql_truncate_guard is not None:
            conn.execute(self.sql_truncate_guard, (pos,))
        return deleted
