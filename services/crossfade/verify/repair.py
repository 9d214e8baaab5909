"""``crossfade verify --repair``: send the differing rows through the pipeline again.

Nothing is written to the legacy database's application tables. For keys the source still holds
(missing in the target, or different there) a Debezium *incremental snapshot* of exactly those
keys is requested through the signal table (``crossfade.debezium_signal``, Debezium's
``signal.data.collection``): an ``execute-snapshot`` signal whose ``additional-conditions`` filter
names the keys. Debezium reads the rows in a watermark window, and they reach Kafka as read
events (``source.snapshot = "incremental"``) carrying the *current* stream position, so the
sync's guard lets them overwrite the target row (whose position is older) like any new change.

Keys the source no longer holds (extra in the target) cannot be re-emitted: there is no row.
They are deleted from the target directly, only if the target row's position is not newer than
the last fence (so a row an insert just brought back is left alone), and a tombstone at the
deleted row's position keeps an older replayed event from resurrecting it.

Then every repaired key is re-checked after a fence until it matches or ``timeout`` passes.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import psycopg
from psycopg import sql

from crossfade.capture.connector import SIGNAL_TABLE
from crossfade.errors import CrossfadeError
from crossfade.events.model import SHIFT
from crossfade.target.store import delete_leaving_tombstones
from crossfade.verify.chunked import Key, TableComparer

if TYPE_CHECKING:
    from crossfade.config import Settings
    from crossfade.verify.report import Progress, VerifyReport

log = logging.getLogger(__name__)

KEYS_PER_SIGNAL = 200


def snapshot_filter(conn: psycopg.Connection, comparer: TableComparer, keys: list[Key]) -> str:
    """The ``additional-conditions`` filter selecting exactly ``keys`` (SQL text)."""
    cols = sql.SQL(", ").join(map(sql.Identifier, comparer.pk))
    tuples = [
        sql.SQL("({})").format(
            sql.SQL(", ").join(
                sql.SQL("CAST({} AS {})").format(sql.Literal(v), sql.SQL(t))
                for v, t in zip(k, comparer.pk_types, strict=True)
            )
        )
        for k in keys
    ]
    return sql.SQL("({}) IN ({})").format(cols, sql.SQL(", ").join(tuples)).as_string(conn)


def request_snapshot(src: psycopg.Connection, table: str, condition: str) -> str:
    """Insert an ``execute-snapshot`` signal for ``table`` rows matching ``condition``."""
    sid = uuid.uuid4().hex
    data = {
        "data-collections": [table],
        "type": "incremental",
        "additional-conditions": [{"data-collection": table, "filter": condition}],
    }
    src.execute(
        sql.SQL("INSERT INTO {} (id, type, data) VALUES (%s, 'execute-snapshot', %s)").format(
            sql.SQL(".").join(map(sql.Identifier, SIGNAL_TABLE.split(".", 1)))
        ),
        (sid, json.dumps(data)),
    )
    return sid


class VerifiedRun(Protocol):
    """What a repair reads of the verify run it follows (``Verifier`` in
    :mod:`crossfade.verify.run`, which imports this module): its confirmed differences, report,
    comparers and fence."""

    @property
    def settings(self) -> Settings: ...
    @property
    def bk(self) -> str: ...
    @property
    def report(self) -> VerifyReport: ...
    @property
    def comparers(self) -> Mapping[str, TableComparer]: ...
    @property
    def confirmed(self) -> Mapping[str, Mapping[Key, str]]: ...
    @property
    def last_fence_lsn(self) -> int | None: ...
    @property
    def progress(self) -> Progress: ...
    def fence(self, tgt: psycopg.Connection) -> None: ...


class Repairer:
    def __init__(
        self,
        verifier: VerifiedRun,
        src: psycopg.Connection,
        tgt: psycopg.Connection,
        timeout: float = 180.0,
    ) -> None:
        self.v = verifier
        self.src, self.tgt = src, tgt
        self.timeout = timeout

    def run(self) -> None:
        v = self.v
        todo = {t: list(keys) for t, keys in v.confirmed.items() if keys}
        for tr in v.report.tables:
            if tr.name in todo or tr.unchecked:
                tr.repair = {
                    "resnapshot": 0,
                    "deleted_extra": 0,
                    "remaining": len(todo.get(tr.name, [])),
                    "not_repaired": tr.unchecked,
                    "seconds": 0.0,
                }
        if not todo:
            return
        if not v.settings.capture.signal_table:
            raise CrossfadeError(
                "verify --repair needs Debezium's signal table, and capture.signal_table is off",
                "set capture.signal_table: true and restart capture",
            )
        t0 = time.monotonic()
        if v.last_fence_lsn is None:
            v.fence(self.tgt)
        assert v.last_fence_lsn is not None
        for table, keys in todo.items():
            comparer = v.comparers[table]
            tr = next(t for t in v.report.tables if t.name == table)
            assert tr.repair is not None
            present = comparer.hashes_of("source", keys)
            resnap = [k for k in keys if k in present]
            gone = [k for k in keys if k not in present]
            for i in range(0, len(resnap), KEYS_PER_SIGNAL):
                request_snapshot(
                    self.src,
                    table,
                    snapshot_filter(self.src, comparer, resnap[i : i + KEYS_PER_SIGNAL]),
                )
            tr.repair["resnapshot"] = len(resnap)
            tr.repair["deleted_extra"] = self._delete_extra(comparer, gone, v.last_fence_lsn)
            v.progress.phase(
                f"{table}: incremental snapshot requested for {len(resnap)} key(s), "
                f"{tr.repair['deleted_extra']} extra row(s) deleted"
            )
        remaining = self._wait(todo)
        for table, rest in remaining.items():
            tr = next(t for t in v.report.tables if t.name == table)
            assert tr.repair is not None
            tr.repair["remaining"] = len(rest)
            tr.repair["remaining_keys"] = [
                comparer_label(v.comparers[table], k) for k in list(rest)[:20]
            ]
            tr.repair["seconds"] = round(time.monotonic() - t0, 3)

    def _delete_extra(self, comparer: TableComparer, keys: list[Key], fence_lsn: int) -> int:
        if not keys:
            return 0
        v = self.v
        return delete_leaving_tombstones(
            self.tgt,
            v.bk,
            comparer.target_table,
            list(zip(comparer.pk, comparer.pk_types, strict=True)),
            comparer.table,
            keys,
            (fence_lsn + 1) << SHIFT,
        )

    def _wait(self, todo: dict[str, list[Key]]) -> dict[str, set[Key]]:
        v = self.v
        deadline = time.monotonic() + self.timeout
        pending = {t: set(keys) for t, keys in todo.items()}
        while True:
            v.fence(self.tgt)
            for t in list(pending):
                c = v.comparers[t]
                keys = list(pending[t])
                tg, s = c.hashes_of("target", keys), c.hashes_of("source", keys)
                pending[t] = {k for k in keys if tg.get(k) != s.get(k)}
            n = sum(len(x) for x in pending.values())
            if n == 0 or time.monotonic() > deadline:
                return pending
            v.progress.phase(f"waiting for {n} re-emitted row(s) to reach the target")
            time.sleep(1.0)


def comparer_label(c: TableComparer, k: Key) -> str:
    return c.key_label(k)
