"""The evidence the gates of :mod:`crossfade.cutover.gate_model` are evaluated from: every query,
run at most once per evaluation, on connections the caller gives (the console keeps its own open,
the cutover and status open them for one evaluation). Reads only; creates nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from crossfade.config import Settings
from crossfade.target.store import (
    AuditRow,
    Control,
    FenceRun,
    Heartbeat,
    LedgerCounts,
    has_table,
    last_rewind_at,
    latest_audit,
    latest_fences,
    ledger_counts,
    merged_members,
    meta,
    paused_components,
    read_heartbeats,
    recent_verify_runs,
    stored_offsets,
    unfinished_replays,
)


class Context:
    """The evidence of one evaluation, each query run at most once (lazily)."""

    def __init__(
        self,
        settings: Settings,
        src: psycopg.Connection | None,
        tgt: psycopg.Connection,
        *,
        estimate_above: int | None = None,
    ) -> None:
        self.settings = settings
        self.src = src
        self.tgt = tgt
        self.bk = settings.sync.bookkeeping_schema
        self.cfg = settings.cutover
        self.estimate_above = estimate_above
        """Row counts above this many rows (PostgreSQL's estimate) are not counted exactly: the
        console's refresh must stay cheap. None: always exact (cutover, status)."""
        self.now = datetime.now(UTC)
        self._cache: dict[str, Any] = {}

    def _once(self, key: str, fn: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = fn()
        return self._cache[key]

    @property
    def heartbeats(self) -> list[Heartbeat]:
        return self._once("hb", lambda: read_heartbeats(self.tgt, self.bk))

    @property
    def ledger(self) -> LedgerCounts:
        return self._once("ledger", lambda: ledger_counts(self.tgt, self.bk))

    @property
    def paused(self) -> list[Control]:
        """Components an operator paused (``crossfade pause``): never GO while one is."""
        return self._once("control", lambda: paused_components(self.tgt, self.bk))

    @property
    def fences(self) -> list[FenceRun]:
        return self._once("fences", lambda: latest_fences(self.tgt, self.bk, 10))

    def audit(self, gate: str) -> AuditRow | None:
        """The newest ``cutover_audit`` row of ``gate`` (a check the cutover runs and records)."""
        return self._once(f"audit:{gate}", lambda: latest_audit(self.tgt, self.bk, gate))

    @property
    def meta(self) -> dict[str, str]:
        return self._once("meta", lambda: meta(self.tgt, self.bk))

    @property
    def mapped_sources(self) -> list[str]:
        m = self.settings.mapping
        return [t for t in self.settings.tables if m is not None and t in m.tables]

    @property
    def identity_tables(self) -> list[str]:
        return [t for t in self.settings.tables if t not in self.mapped_sources]

    def targets_of(self, source: str) -> list[str]:
        m = self.settings.mapping
        assert m is not None
        return list(dict.fromkeys(t.table for t in m.tables[source].targets))

    @property
    def target_tables(self) -> list[str]:
        return list(dict.fromkeys(t for s in self.mapped_sources for t in self.targets_of(s)))

    def scalar(self, conn: psycopg.Connection, q: sql.Composed, params: Any = None) -> Any:
        row = conn.execute(q, params).fetchone()
        return row[0] if row else None

    @property
    def slot(self) -> dict[str, Any] | None:
        def read() -> dict[str, Any] | None:
            if self.src is None:
                return None
            row = self.src.execute(
                "SELECT active, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, "
                "confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                (self.settings.capture.slot_name,),
            ).fetchone()
            name = self.settings.capture.slot_name
            if row is None:
                return {"name": name, "exists": False, "active": False, "retained_wal_bytes": None}
            return {
                "name": name,
                "exists": True,
                "active": bool(row[0]),
                "retained_wal_bytes": int(row[1]) if row[1] is not None else None,
                "confirmed_flush_lsn": row[2],
            }

        return self._once("slot", read)

    def counts(self) -> list[dict[str, Any]]:
        """Row counts as the ``row_counts`` gate compares them (status and the console show these).

        One entry per identity table (``legacy_rows``, ``new_rows``), per mapped source table
        (``legacy_rows`` against ``accounted`` = mapped + dead-lettered + filtered + deferred +
        parent_left) and
        per target table of the mapping (``new_rows`` against ``expected`` = mapped rows of its
        sources - merged duplicates). ``match`` is None when a side is unknown or estimated."""
        return self._once("counts", self._counts)

    def _counts(self) -> list[dict[str, Any]]:
        # both servers count at once (psycopg waits without the GIL): inside the write freeze
        # this is one of the two scans of every table that grow with its size
        with ThreadPoolExecutor(1, thread_name_prefix="count-target") as pool:
            theirs = pool.submit(self._rows, self.tgt, [*self.identity_tables, *self.target_tables])
            src = self._rows(self.src, [*self.identity_tables, *self.mapped_sources])
            tgt = theirs.result()
        acc = self.ledger.accounted
        merged = merged_members(self.tgt, self.bk)
        out: list[dict[str, Any]] = []

        def match(a: tuple[int | None, bool], b: int | None) -> bool | None:
            return None if a[0] is None or b is None or not a[1] else a[0] == b

        for t in self.identity_tables:
            s, n = src.get(t, (None, True)), tgt.get(t, (None, True))
            both = (s[0], s[1] and n[1])
            out.append(
                {
                    "table": t,
                    "kind": "identity",
                    "legacy_rows": s[0],
                    "new_rows": n[0],
                    "exact": s[1] and n[1],
                    "match": match(both, n[0]),
                }
            )
        for s_name in self.mapped_sources:
            a = acc.get(s_name, {})
            mapped = a.get("mapped", 0) + a.get("replayed", 0)
            parts = {
                "mapped": mapped,
                "dead_lettered": a.get("dead_letter", 0),
                "filtered": a.get("filtered", 0),
                "deferred": a.get("deferred", 0),
                # out of the target with its parent (on_parent_left: delete), not a dead letter
                "parent_left": a.get("parent_left", 0),
            }
            s = src.get(s_name, (None, True))
            accounted = sum(parts.values())
            out.append(
                {
                    "table": s_name,
                    "kind": "source",
                    "legacy_rows": s[0],
                    "accounted": accounted,
                    **parts,
                    "targets": self.targets_of(s_name),
                    "exact": s[1],
                    "match": match(s, accounted),
                }
            )
        for t in self.target_tables:
            srcs = [s for s in self.mapped_sources if t in self.targets_of(s)]
            mapped = sum(
                acc.get(s, {}).get("mapped", 0) + acc.get(s, {}).get("replayed", 0) for s in srcs
            )
            expected = mapped - merged.get(t, 0)
            n = tgt.get(t, (None, True))
            out.append(
                {
                    "table": t,
                    "kind": "target",
                    "sources": srcs,
                    "new_rows": n[0],
                    "expected": expected,
                    "merged": merged.get(t, 0),
                    "exact": n[1],
                    "match": match(n, expected),
                }
            )
        return out

    def _rows(
        self, conn: psycopg.Connection | None, tables: list[str]
    ) -> dict[str, tuple[int | None, bool]]:
        """table -> (rows, exact); (None, True) when the table does not exist (or no connection)."""
        if conn is None or not tables:
            return {}
        est: dict[str, int] = {}
        if self.estimate_above is not None:
            est = dict(
                conn.execute(
                    "SELECT schemaname || '.' || relname, n_live_tup FROM pg_stat_user_tables "
                    "WHERE schemaname || '.' || relname = ANY(%s)",
                    (tables,),
                ).fetchall()
            )
        out: dict[str, tuple[int | None, bool]] = {}
        for t in tables:
            schema, name = t.split(".", 1)
            if not has_table(conn, schema, name):
                out[t] = (None, True)
            elif self.estimate_above is not None and int(est.get(t) or 0) >= self.estimate_above:
                out[t] = (int(est[t]), False)
            else:
                q = sql.SQL("SELECT count(*) FROM {}.{}").format(
                    sql.Identifier(schema), sql.Identifier(name)
                )
                out[t] = (int(self.scalar(conn, q)), True)
        return out

    def latest_verify(self) -> dict[str, Any] | None:
        """The newest verify run that covered every table (identity tables and mapped targets)."""
        return self._once("verify", self._latest_verify)

    def _latest_verify(self) -> dict[str, Any] | None:
        want = {*self.identity_tables, *self.target_tables}
        for r in recent_verify_runs(self.tgt, self.bk, 20):
            if want <= set(r["tables"] or []):
                return r
        return None

    def last_rewind(self) -> datetime | None:
        return self._once(
            "rewind", lambda: last_rewind_at(self.tgt, self.bk, self.settings.sync.group_id)
        )

    def unfinished_replays(self) -> int:
        return self._once(
            "replays", lambda: unfinished_replays(self.tgt, self.bk, self.settings.sync.group_id)
        )

    def claimed(self) -> list[str]:
        """``topic[partition]`` of every partition the sync group has claimed (stored offsets)."""

        def read() -> list[str]:
            return [
                f"{o.topic}[{o.partition}]"
                for o in stored_offsets(self.tgt, self.bk, self.settings.sync.group_id)
                if o.topic in self.topics
            ]

        return self._once("claimed", read)

    @property
    def topics(self) -> dict[str, str]:
        return {self.settings.kafka.table_topic(t): t for t in self.settings.tables}
