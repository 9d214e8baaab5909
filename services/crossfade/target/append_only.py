"""Insert-only apply for source tables without a primary key (``sync.append_only_tables``):
the :class:`~crossfade.target.apply.TableApplier` of such a table."""

from __future__ import annotations

import hashlib

import psycopg
from psycopg import sql

from crossfade.catalog import HASH_COLUMN, POS_COLUMN
from crossfade.errors import SchemaMismatch
from crossfade.events.model import ChangeEvent, format_lsn
from crossfade.target.apply import ApplyResult, Converter, TableApplier, texts_json

_NO_SCHEMA = object()


class AppendOnlyApplier(TableApplier):
    """Insert-only apply for a source table without a primary key (``sync.append_only_tables``).

    A target row is identified by its source position and a hash of its content, unique together,
    so an insert delivered twice (capture restart) is applied once. Snapshot rows share one
    position; their content tells them apart (two identical rows in one snapshot would collapse
    into one: such a table has no way to tell them apart at all). An UPDATE or DELETE cannot be
    applied without a key and stops sync.

    Replay (``replay=True``, after a rewind): a streamed insert has a position of its own (each
    row change has its own LSN), so the row it wrote the first time is the target row at that
    position: one with other content (a faulty transform's) is deleted before the replayed row
    goes in. Snapshot rows all share one position and cannot be told apart that way: replaying
    them adds any row whose content changed next to the old one (take checkpoints after the
    initial snapshot).
    """

    def _build_sql(self) -> None:
        super_cols = self.cols
        I = sql.Identifier  # noqa: E741,N806
        cols = sql.SQL(", ").join(map(I, super_cols))
        self.sql_stage = sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {stage} ON COMMIT DELETE ROWS AS "
            "SELECT {cols}, 0::numeric AS _cf_lsn, ''::text AS _cf_hash FROM {target} WITH NO DATA"
        ).format(stage=self.stage, cols=cols, target=self.target)
        self.sql_copy = sql.SQL("COPY {stage} ({cols}, _cf_lsn, _cf_hash) FROM STDIN").format(
            stage=self.stage, cols=cols
        )
        self.sql_insert = sql.SQL(
            "INSERT INTO {target} ({cols}, {pos}, {h}) OVERRIDING SYSTEM VALUE SELECT {cols}, _cf_lsn, _cf_hash FROM {stage} "
            "WHERE _cf_lsn >= %s ON CONFLICT ({pos}, {h}) DO NOTHING"
        ).format(
            target=self.target, cols=cols, pos=I(POS_COLUMN), h=I(HASH_COLUMN), stage=self.stage
        )
        # streamed positions only: their low 64 bits (the change's own LSN) are not zero
        self.sql_replay_delete = sql.SQL(
            "DELETE FROM {target} t USING (SELECT DISTINCT _cf_lsn FROM {stage} WHERE _cf_lsn >= %s "
            "AND mod(_cf_lsn, 18446744073709551616) <> 0) p WHERE t.{pos} = p._cf_lsn "
            "AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s._cf_lsn = t.{pos} AND s._cf_hash = t.{h})"
        ).format(target=self.target, pos=I(POS_COLUMN), h=I(HASH_COLUMN), stage=self.stage)
        self._build_common_sql()

    def _row_convs(self, e: ChangeEvent) -> list[Converter]:
        rs = e.row_schema
        hit = self._conv_cache.get((rs, None))
        if hit is not None:
            return hit[1]
        if rs is None:
            raise SchemaMismatch(f"change event of {e.table} carries no row schema")
        convs = self._row_converters(e.table, rs)
        self._conv_cache[(rs, None)] = ([], convs)
        return convs

    def apply(
        self,
        conn: psycopg.Connection,
        events: list[ChangeEvent],
        watermark: int,
        *,
        replay: bool = False,
    ) -> ApplyResult:
        res = ApplyResult()
        if not events:
            return res
        bad = next((e for e in events if not e.is_upsert or e.op == "u"), None)
        if bad is not None:
            raise SchemaMismatch(
                f"append-only table {e_table(bad)} received {'an UPDATE' if bad.op == 'u' else 'a DELETE'} "
                f"at LSN {format_lsn(bad.lsn)}, which cannot be applied without a primary key",
                f"give {e_table(bad)} a primary key (then remove it from sync.append_only_tables and re-snapshot)",
            )
        md5 = hashlib.md5
        with conn.cursor() as cur:
            with cur.copy(self.sql_copy) as cp:
                rs: object = _NO_SCHEMA
                pairs: list[tuple[Converter, str]] = []
                for e in events:
                    after = e.after
                    assert after is not None
                    if e.row_schema is not rs:  # a batch holds a handful of row schemas
                        rs = e.row_schema
                        pairs = list(zip(self._row_convs(e), self.cols, strict=True))
                    if self._missing:
                        self._check_carried(e)
                    vals = [conv(after.get(c)) for conv, c in pairs]
                    # the content hash: json.dumps(vals)'s text, as stored by every version
                    digest = md5(texts_json(vals).encode()).hexdigest()
                    vals.append(str(e.position))
                    vals.append(digest)
                    cp.write_row(vals)
            if replay:  # replace what this position wrote the first time (class docstring)
                cur.execute(self.sql_replay_delete, (watermark,))
            cur.execute(self.sql_insert, (watermark,))
            res.applied = cur.rowcount
            res.skipped = len(events) - res.applied
            cur.execute(sql.SQL("TRUNCATE {}").format(self.stage))
        return res


def e_table(e: ChangeEvent) -> str:
    return e.table
