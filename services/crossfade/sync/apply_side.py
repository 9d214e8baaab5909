"""The guarded apply of :mod:`crossfade.sync.apply` for tables that must not get a column of ours.

Fallback (:mod:`crossfade.mapping.inverse`) writes back into the *legacy* tables, which the legacy
application still reads: they keep their shape. The source position of the change that last
wrote a row lives beside them, in ``<bookkeeping>.positions`` (table, key -> position), and the
guard of DESIGN decision 2 reads it there. Everything else is :class:`TableApplier`'s: collapse
per key, COPY into staging, the guard drops stale events (here: a position row or a tombstone at
the same or a newer position, or a position below the table's watermark), then one DELETE (plus
tombstones), one upsert that records the positions in the same statement, and the UPDATE that
keeps unchanged TOASTed values.

The key of a position row is the applier's key text (the JSON list of the key's PostgreSQL text
values), the same as the tombstones'. A truncate or a re-snapshot sweep at position P deletes the
rows without a position row at or above P (rows the reverse sync never wrote included: after the
initial snapshot of the new database, legacy holds exactly what it holds).
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from crossfade.sync.apply import TableApplier


def side_ddl(schema: str) -> sql.Composed:
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {}.positions (tbl text NOT NULL, key text NOT NULL, pos numeric NOT NULL, "
        "PRIMARY KEY (tbl, key))"
    ).format(sql.Identifier(schema))


def ensure_side_schema(conn: psycopg.Connection, schema: str) -> None:
    """The positions table (the rest of the bookkeeping schema is :func:`ensure_schema`'s)."""
    conn.execute(side_ddl(schema))


class SideTableApplier(TableApplier):
    """Applies change events to a table without ``_cf_pos``; positions in ``<bk>.positions``."""

    upsert_guards = False  # its upsert overwrites: the guard against the positions table must run

    def _build_sql(self) -> None:
        I = sql.Identifier  # noqa: E741,N806
        tbl = sql.Literal(self.tbl_name)
        cols = sql.SQL(", ").join(map(I, self.cols))
        pk_join = sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(I(c)) for c in self.pk)
        non_pk = [c for c in self.cols if c not in self.pk]
        self.sql_stage = sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
            "SELECT {cols}, 0::numeric AS _cf_lsn, false AS _cf_del, ''::text AS _cf_key, "
            "NULL::text[] AS _cf_unavail FROM {target} WITH NO DATA"
        ).format(stage=self.stage, cols=cols, target=self.target)
        self.sql_copy = sql.SQL(
            "COPY {stage} ({cols}, _cf_lsn, _cf_del, _cf_key, _cf_unavail) FROM STDIN"
        ).format(stage=self.stage, cols=cols)
        guard_pos = "DELETE FROM {stage} s USING {bk}.positions p WHERE p.tbl = {tbl} AND p.key = s._cf_key AND p.pos %s s._cf_lsn"
        self.sql_guard_target, self.sql_guard_target_replay = (
            sql.SQL(guard_pos % op).format(stage=self.stage, bk=self.bk, tbl=tbl)
            for op in (">=", ">")
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
        ).format(target=self.target, stage=self.stage, pk=pk_join)
        self.sql_tomb = sql.SQL(
            "INSERT INTO {bk}.tombstones (tbl, key, lsn) SELECT %s, _cf_key, _cf_lsn FROM {stage} WHERE _cf_del "
            "ON CONFLICT (tbl, key) DO UPDATE SET lsn = GREATEST({bk}.tombstones.lsn, EXCLUDED.lsn)"
        ).format(bk=self.bk, stage=self.stage)
        # the guard already dropped every stale event: the upsert overwrites, and records the
        # positions of everything that is not a delete (TOAST-keeping updates included) at once
        sets = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(I(c)) for c in non_pk)
        conflict = sql.SQL("DO UPDATE SET {}").format(sets) if non_pk else sql.SQL("DO NOTHING")
        self.sql_upsert = self.sql_upsert_replay = sql.SQL(
            "WITH up AS (INSERT INTO {target} AS t ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {stage} "
            "WHERE NOT _cf_del AND _cf_unavail IS NULL ON CONFLICT ({pk}) {conflict}) "
            "INSERT INTO {bk}.positions AS p (tbl, key, pos) SELECT {tbl}, _cf_key, _cf_lsn FROM {stage} "
            "WHERE NOT _cf_del ON CONFLICT (tbl, key) DO UPDATE SET pos = GREATEST(p.pos, EXCLUDED.pos)"
        ).format(
            target=self.target,
            cols=cols,
            stage=self.stage,
            pk=sql.SQL(", ").join(map(I, self.pk)),
            conflict=conflict,
            bk=self.bk,
            tbl=tbl,
        )
        toast_sets = [
            sql.SQL("{0} = CASE WHEN {1} = ANY(s._cf_unavail) THEN t.{0} ELSE s.{0} END").format(
                I(c), sql.Literal(c)
            )
            for c in non_pk
        ] or [sql.SQL("{0} = t.{0}").format(I(self.pk[0]))]
        self.sql_toast = sql.SQL(
            "UPDATE {target} t SET {sets} FROM {stage} s WHERE NOT s._cf_del AND s._cf_unavail IS NOT NULL AND {pk}"
        ).format(
            target=self.target, sets=sql.SQL(", ").join(toast_sets), stage=self.stage, pk=pk_join
        )
        self.sql_toast_missing = sql.SQL(
            "SELECT s._cf_key FROM {stage} s WHERE NOT s._cf_del AND s._cf_unavail IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM {target} t WHERE {pk})"
        ).format(stage=self.stage, target=self.target, pk=pk_join)
        self._build_common_sql()
        # a truncate/sweep: rows without a position at or above it go (the key text as _row builds
        # it: jsonb's text form of the list of the key's text values)
        key_text = sql.SQL("jsonb_build_array({})::text").format(
            sql.SQL(", ").join(sql.SQL("t.{}::text").format(I(c)) for c in self.pk)
        )
        self.sql_truncate_rows = sql.SQL(
            "DELETE FROM {target} t WHERE NOT EXISTS (SELECT 1 FROM {bk}.positions p WHERE p.tbl = {tbl} "
            "AND p.key = {key} AND p.pos >= %s)"
        ).format(target=self.target, bk=self.bk, tbl=tbl, key=key_text)
        self.sql_truncate_positions = sql.SQL(
            "DELETE FROM {bk}.positions WHERE tbl = {tbl} AND pos < %s"
        ).format(bk=self.bk, tbl=tbl)

    def truncate(self, conn: psycopg.Connection, pos: int, reason: str) -> int:
        deleted = super().truncate(conn, pos, reason)
        conn.execute(self.sql_truncate_positions, (pos,))
        return deleted
