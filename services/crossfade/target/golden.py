"""Golden records of a deduplicated target table written set-based (issue 22).

:class:`crossfade.sync.sinks.dedup.DedupWriter` regroups the members around a batch's changes
and hands over the target rows that follow: one row per key to write (a golden record, or a
member alone) with the newest position of the members behind it, and the keys whose rows go (a
member merged into another's record, a member deleted). Written row by row (an ``executemany``
of ``INSERT ... ON CONFLICT`` and one of ``DELETE``), they were ~82k of the target's ~98k
statements in a mapped 200k load, all run under the table's dedup lock. Here the batch's rows
are COPYed into a session's staging table (:func:`crossfade.target.store.staging.stage_and_merge`)
and applied by one ``DELETE ... USING`` of the gone keys, then one ``INSERT ... SELECT ... ON
CONFLICT (key) DO UPDATE``, in that order (a key both gone and written ends written).

What the row-by-row statements guaranteed, kept:

* no silent cut: the staging table's columns have the target columns' types *without* their
  length (:func:`crossfade.catalog.uncut`), so a value is read at its full length and the
  assignment to the target column refuses an over-long one (``StringDataRightTruncation``),
  where ``CAST(v AS varchar(5))`` would cut it; a gone key the column cannot hold finds no row
  (it is compared uncut) rather than the row of its cut prefix;
* the upsert overwrites every non-key column and ``_cf_pos`` (no position guard: the group's
  members decide the record, and the dedup lock orders the batches writing it);
* two rows of a batch with keys equal in the column's type (members spelled ``1`` and ``"1"``)
  end as the last one, as the second statement of an ``executemany`` would leave it (a single
  ``ON CONFLICT DO UPDATE`` cannot touch a row twice: ``DISTINCT ON`` keeps the last; a new
  row's key is then spelled as the last one gives it, which differs only for a type keeping
  the spelling, a numeric key's ``1.0`` and ``1``). The upsert meets the rows in key order.

Values are read by the column type's input function from the text psycopg's COPY writes (the
same as the plain path, :class:`crossfade.target.apply.TableApplier`, and verify's expected rows,
:class:`crossfade.verify.expected.Expected`): JSON and JSONB columns get the value's JSON text;
values JSON has no type for (dates, decimals: members are stored as JSON) are their text. Where
that differs from the row-by-row statements' ``CAST(<parameter> AS type)``, verify always expected
what COPY writes: a Python bool into a text column is ``t``/``f`` (the cast of a boolean parameter
wrote ``true``), and a float is its shortest text (``0.30000000000000004`` into a numeric column,
``1.0`` into a text one, where the cast from float8 gave ``0.3`` and ``1``; a float into an
integer column is refused, ``1.0`` is not an integer's text, as on the plain path and in verify).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql

from crossfade.catalog import POS_COLUMN, TableShape, uncut
from crossfade.target.store.staging import stage_and_merge

Key = Sequence[Any]


class GoldenWriter:
    """Writes the rows of one deduplicated target table (module docstring): columns ``cols``
    (the key's among them) and ``_cf_pos``, keyed by ``key``."""

    def __init__(self, shape: TableShape, key: Sequence[str], cols: Sequence[str]) -> None:
        self.shape = shape
        self.key = list(key)
        self.cols = list(cols)
        self.json_cols = {c.name for c in shape.columns if c.type_sql in ("json", "jsonb")}
        self._key_at = [self.cols.index(k) for k in self.key]
        self.target = sql.SQL("{}.{}").format(
            sql.Identifier(shape.schema), sql.Identifier(shape.name)
        )
        self.staged = [
            *((c, uncut(shape.column(c).type_sql)) for c in self.cols),
            (POS_COLUMN, "numeric"),
            ("_cf_gone", "boolean"),
            ("_cf_ord", "integer"),
        ]
        """The staging table's columns: the target's without their length (module docstring),
        the position, whether the row is a gone key's, and its place in the batch."""

    def write(
        self,
        conn: psycopg.Connection,
        rows: Iterable[tuple[dict[str, Any], int]],
        gone: Iterable[Key],
    ) -> None:
        """Delete the rows of the ``gone`` keys, then upsert ``rows`` ((values by column,
        position) pairs), in the caller's transaction."""
        staged: list[list[Any]] = []
        blank = [None] * len(self.cols)
        for k in gone:
            r = list(blank)
            for i, v in zip(self._key_at, k, strict=True):
                r[i] = self._value(self.cols[i], v)
            staged.append([*r, None, True, len(staged)])
        n_gone = len(staged)
        for vals, pos in rows:
            staged.append(
                [*(self._value(c, vals.get(c)) for c in self.cols), pos, False, len(staged)]
            )
        if not staged:
            return

        def merge(stage: sql.Identifier) -> list[tuple[sql.Composed, Sequence[Any]]]:
            out: list[tuple[sql.Composed, Sequence[Any]]] = []
            if n_gone:
                out.append((self._delete(stage), ()))
            if len(staged) > n_gone:
                out.append((self._upsert(stage), ()))
            return out

        stage_and_merge(conn, self.target, [], staged, merge, extra=self.staged)

    def _delete(self, stage: sql.Identifier) -> sql.Composed:
        I = sql.Identifier  # noqa: E741,N806
        on = sql.SQL(" AND ").join(sql.SQL("t.{0} = s.{0}").format(I(k)) for k in self.key)
        return sql.SQL("DELETE FROM {t} t USING {stage} s WHERE s._cf_gone AND {on}").format(
            t=self.target, stage=stage, on=on
        )

    def _upsert(self, stage: sql.Identifier) -> sql.Composed:
        I = sql.Identifier  # noqa: E741,N806
        keys = sql.SQL(", ").join(map(I, self.key))
        cols = sql.SQL(", ").join(map(I, [*self.cols, POS_COLUMN]))
        non_key = [c for c in [*self.cols, POS_COLUMN] if c not in self.key]
        return sql.SQL(
            "INSERT INTO {t} ({cols}) SELECT DISTINCT ON ({keys}) {cols} FROM {stage} "
            "WHERE NOT _cf_gone ORDER BY {keys}, _cf_ord DESC "
            "ON CONFLICT ({keys}) DO UPDATE SET {sets}"
        ).format(
            t=self.target,
            cols=cols,
            keys=keys,
            stage=stage,
            sets=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(I(c)) for c in non_key),
        )

    def _value(self, col: str, v: Any) -> Any:
        """``v`` as COPY is to write it into the staging column of ``col``."""
        if v is None:
            return None
        if col in self.json_cols:
            return json.dumps(v)
        if isinstance(v, str | bool | int | float | list | dict):  # a dict: refused, as before
            return v
        return str(v)  # what JSON has no type for: its text (a date, a decimal, a UUID)
