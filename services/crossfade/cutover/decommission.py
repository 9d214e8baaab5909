"""``crossfade decommission``: letting the legacy database go, leaving nothing of crossfade's behind.

What it removes, each only where it exists (so a second run finds nothing and says so):

* legacy: the forward replication slot (it retains WAL until the disk fills) and publication,
  the fence and signal tables (and their ``crossfade`` schema once empty), the reverse sync's
  bookkeeping schema (``fallback.bookkeeping_schema``): legacy ends as it was before crossfade;
* new: the reverse (fallback) slot and publication, the reverse capture's fence table, and
  crossfade's columns ``_cf_pos``/``_cf_hash`` in every table outside the bookkeeping schema, so
  the new system's tables end exactly as the application defined them;
* both clusters: crossfade's replication origins (``crossfade_<n>``) no session holds;
* Kafka: every topic under ``kafka.topic_prefix`` and the fallback prefix, and Debezium's
  heartbeat topics (unless ``--keep-topics``).

It keeps the bookkeeping schema of the new database (audit log, crosswalk, ledger: the
migration's record) unless ``--drop-bookkeeping``, and records what it removed in the audit log
(``cutover_audit``, gate ``decommission``) before that schema would go.

Why the columns are dropped at the end rather than kept in a side table from the start: sync's
guard (DESIGN decision 2) compares the position inside its one set-based upsert; a side table
(what the reverse sync does in legacy, :class:`crossfade.target.apply.SideTable`) costs a join and a second
write per row on the hot path of the forward direction, for a benefit that only matters once.
Dropping a column is a catalog change (no table rewrite); it waits at most
:data:`LOCK_TIMEOUT` for the table's lock, and a table it could not lock is reported and left for
the next run.

Refused (:class:`CrossfadeError`, exit 1) unless ``--force``: while fallback runs (its slot is
active, or its sync sent a heartbeat within ``cutover.alive_fresh_s``), while forward capture or
sync still run, within ``cutover.fallback_window_s`` of the last real flip, or when no flip is
recorded at all (that would abandon the migration). With ``--force`` an active slot's walsender is
terminated before the slot is dropped.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from crossfade.capture.connector import FENCE_TABLE, SIGNAL_TABLE
from crossfade.catalog import HASH_COLUMN, POS_COLUMN
from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import BrokerUnavailable, CrossfadeError
from crossfade.target.store import (
    AuditEntry,
    has_table,
    insert_audit_row,
    last_flip_age_s,
    read_heartbeats,
)

log = logging.getLogger(__name__)

LOCK_TIMEOUT = "10s"
GATE = "decommission"


@dataclass
class Action:
    """One thing to remove: where, what, and how."""

    side: str  # legacy | new | kafka
    what: str
    run: Callable[[], None] = field(repr=False)

    def describe(self) -> str:
        return f"{self.side}: {self.what}"


@dataclass
class Plan:
    actions: list[Action]
    kept: list[str]
    refusals: list[str]
    drop_bookkeeping: Action | None = None


@dataclass
class Report:
    run_id: str
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    audit_note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "removed": self.removed,
            "failed": self.failed,
            "audit": self.audit_note,
        }


def _names(settings: Settings) -> dict[str, str]:
    """The reverse direction's names, as :func:`crossfade.mapping.inverse.reverse_settings`
    derives them."""
    from crossfade.mapping.inverse import FallbackPlan, reverse_settings

    rev = reverse_settings(settings, FallbackPlan([], {}))
    return {
        "slot": rev.capture.slot_name,
        "publication": rev.capture.publication_name,
        "prefix": rev.kafka.topic_prefix,
        "bk": settings.fallback.bookkeeping_schema,
    }


def _sql_action(
    settings: Settings, side: str, what: str, statements: list[sql.Composable | str]
) -> Action:
    db = settings.source if side == "legacy" else settings.target

    def run() -> None:
        with connect(db, side, autocommit=True) as conn, conn.transaction():
            conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
            for stmt in statements:
                conn.execute(stmt)  # type: ignore[arg-type]  # built from identifiers

    return Action(side, what, run)


def _slot_actions(
    settings: Settings, conn: psycopg.Connection, side: str, slot: str, pub: str, force: bool
) -> tuple[list[Action], list[str]]:
    """Drop the slot (and publication) where they exist; an active slot is a refusal, or with
    ``force`` its walsender is terminated first."""
    actions: list[Action] = []
    refusals: list[str] = []
    row = conn.execute(
        "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s "
        "AND database = current_database()",
        (slot,),
    ).fetchone()
    if row is not None:
        pid = row[0]
        if pid is not None and not force:
            who = "capture" if side == "legacy" else "fallback's capture"
            refusals.append(
                f"{who} still streams slot {slot} in the {side} database (pid {pid}): stop it first"
            )
        stmts: list[sql.Composable | str] = []
        if pid is not None:
            stmts.append(sql.SQL("SELECT pg_terminate_backend({}, 5000)").format(sql.Literal(pid)))
        stmts.append(sql.SQL("SELECT pg_drop_replication_slot({})").format(sql.Literal(slot)))
        actions.append(_sql_action(settings, side, f"replication slot {slot}", stmts))
    if conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (pub,)).fetchone():
        actions.append(
            _sql_action(
                settings,
                side,
                f"publication {pub}",
                [sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(pub))],
            )
        )
    return actions, refusals


def _drop_tables(
    settings: Settings, conn: psycopg.Connection, side: str, tables: list[str], schema_too: bool
) -> list[Action]:
    """Drop those of ``tables`` that exist; with ``schema_too`` their schema once nothing else
    is in it."""
    # by the catalog: resolving a name needs USAGE on its schema, which this role may lack
    found = [
        r[0]
        for r in conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname || '.' || c.relname = ANY(%s) ORDER BY 1 DESC",
            (tables,),
        ).fetchall()
    ]
    actions = [
        _sql_action(
            settings,
            side,
            f"table {t}",
            [sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(*t.split(".", 1)))],
        )
        for t in found
    ]
    if schema_too:
        for schema in sorted({t.split(".", 1)[0] for t in tables}):
            others = conn.execute(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'v', 'm', 'f') "
                "AND n.nspname || '.' || c.relname <> ALL(%s)",
                (schema, tables),
            ).fetchone()
            exists = conn.execute(
                "SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)
            ).fetchone()
            if exists and others == (0,):
                actions.append(
                    _sql_action(
                        settings,
                        side,
                        f"schema {schema} (empty)",
                        [sql.SQL("DROP SCHEMA IF EXISTS {}").format(sql.Identifier(schema))],
                    )
                )
    return actions


def _column_actions(
    settings: Settings, conn: psycopg.Connection, keep_schemas: list[str]
) -> list[Action]:
    """crossfade's columns in the new database's tables (outside the bookkeeping schemas)."""
    rows = conn.execute(
        "SELECT n.nspname, c.relname, array_agg(a.attname::text ORDER BY a.attnum) "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE a.attname = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped AND a.attinhcount = 0 "
        "AND c.relkind IN ('r', 'p') AND n.nspname <> ALL(%s) "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%' "
        "GROUP BY 1, 2 ORDER BY 1, 2",
        ([POS_COLUMN, HASH_COLUMN], keep_schemas),
    ).fetchall()
    out = []
    for schema, table, cols in rows:
        drops = sql.SQL(", ").join(
            sql.SQL("DROP COLUMN IF EXISTS {}").format(sql.Identifier(c)) for c in cols
        )
        stmt = (
            sql.SQL("ALTER TABLE {}.{} ").format(sql.Identifier(schema), sql.Identifier(table))
            + drops
        )
        out.append(
            _sql_action(settings, "new", f"column(s) {', '.join(cols)} of {schema}.{table}", [stmt])
        )
    return out


def _origin_actions(
    settings: Settings, conns: dict[str, psycopg.Connection]
) -> tuple[list[Action], list[str]]:
    """crossfade's replication origins, once per cluster (they are cluster-wide)."""
    from crossfade.events.model import ORIGIN_PREFIX

    actions: list[Action] = []
    kept: list[str] = []
    seen: set[int] = set()
    for side, conn in conns.items():
        row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        sysid = int(row[0]) if row else 0
        if sysid in seen:
            continue
        seen.add(sysid)
        names = [
            r[0]
            for r in conn.execute(
                "SELECT roname FROM pg_replication_origin WHERE starts_with(roname, %s) "
                "ORDER BY roname",
                (ORIGIN_PREFIX,),
            ).fetchall()
        ]
        for name in names:
            actions.append(_origin_drop(settings, side, name, kept))
    return actions, kept


def _origin_drop(settings: Settings, side: str, name: str, kept: list[str]) -> Action:
    db = settings.source if side == "legacy" else settings.target

    def run() -> None:
        with connect(db, side, autocommit=True) as conn:
            try:
                conn.execute(
                    "SELECT pg_replication_origin_drop(roname) FROM pg_replication_origin "
                    "WHERE roname = %s",
                    (name,),
                )
            except psycopg.errors.ObjectInUse:
                # origins are shared by every crossfade on the cluster: another one's sync holds it
                kept.append(f"replication origin {name} ({side}): in use by a running session")
                raise _Kept() from None

    return Action(side, f"replication origin {name}", run)


class _Kept(Exception):
    """An action that found its object legitimately in use: kept, not a failure."""


def _topic_actions(settings: Settings, keep: bool) -> tuple[list[Action], list[str]]:
    from crossfade.events.kafka import Admin

    names = _names(settings)
    prefixes = (settings.kafka.topic_prefix + ".", names["prefix"] + ".")
    admin = Admin(settings.kafka.client_config())
    heartbeat = {f"__debezium-heartbeat.{p[:-1]}" for p in prefixes}
    try:
        listed = admin.topics()
    except BrokerUnavailable:
        if keep:  # nothing to do with them: no reason to stop
            return [], [f"Kafka topics under {settings.kafka.topic_prefix} (--keep-topics)"]
        raise
    topics = [t for t in listed if t.startswith(prefixes) or t in heartbeat]
    if not topics:
        return [], []
    if keep:
        return [], [
            f"{len(topics)} Kafka topic(s) under {settings.kafka.topic_prefix} (--keep-topics)"
        ]

    def run_one(topic: str) -> Callable[[], None]:
        def run() -> None:
            err = admin.delete_topics([topic]).get(topic)
            if err:
                raise CrossfadeError(f"the broker refused to delete it ({err})")

        return run

    return [Action("kafka", f"topic {t}", run_one(t)) for t in topics], []


def _refusals(settings: Settings, legacy: psycopg.Connection, new: psycopg.Connection) -> list[str]:
    """Why decommission must not run now (each overridable with --force)."""
    out: list[str] = []
    c = settings.cutover
    names = _names(settings)
    fresh = [
        h
        for h in read_heartbeats(legacy, names["bk"])
        if h.role == "sync" and h.age_s < c.alive_fresh_s
    ]
    if fresh:
        out.append(
            f"fallback runs: its sync wrote a heartbeat {fresh[0].age_s:.0f} s ago "
            f"(stop crossfade fallback start first)"
        )
    bk = settings.sync.bookkeeping_schema
    syncs = [h for h in read_heartbeats(new, bk) if h.role == "sync" and h.age_s < c.alive_fresh_s]
    if syncs:
        out.append(
            f"sync still runs ({len(syncs)} worker(s), last heartbeat {syncs[0].age_s:.0f} s ago): "
            "stop it first"
        )
    if not has_table(new, bk, "cutover_audit"):
        out.append(
            "no cutover is recorded (no audit log): decommission would abandon the migration"
        )
        return out
    age = last_flip_age_s(new, bk)
    if age is None:
        out.append("no flip is recorded in the audit log: decommission would abandon the migration")
    elif age < c.fallback_window_s:
        out.append(
            f"the flip was {age:.0f} s ago, within the fallback window "
            f"(cutover.fallback_window_s = {c.fallback_window_s:g} s; "
            f"{c.fallback_window_s - age:.0f} s to go)"
        )
    return out


def plan(
    settings: Settings,
    *,
    keep_topics: bool = False,
    drop_bookkeeping: bool = False,
    force: bool = False,
) -> Plan:
    """What decommission would remove now (only what exists). Raises :class:`CrossfadeError`
    naming every refusal unless ``force``."""
    names = _names(settings)
    bk = settings.sync.bookkeeping_schema
    with (
        connect(settings.source, "legacy") as legacy,
        connect(settings.target, "new") as new,
    ):
        refusals = _refusals(settings, legacy, new)
        actions, slot_refusals = _slot_actions(
            settings,
            legacy,
            "legacy",
            settings.capture.slot_name,
            settings.capture.publication_name,
            force,
        )
        refusals += slot_refusals
        rev_actions, rev_refusals = _slot_actions(
            settings, new, "new", names["slot"], names["publication"], force
        )
        actions += rev_actions
        refusals += [
            r.replace("fallback's capture still", "fallback runs: its capture")
            for r in rev_refusals
        ]
        actions += _drop_tables(settings, legacy, "legacy", [FENCE_TABLE, SIGNAL_TABLE], True)
        if legacy.execute(
            "SELECT 1 FROM pg_namespace WHERE nspname = %s", (names["bk"],)
        ).fetchone():
            actions.append(
                _sql_action(
                    settings,
                    "legacy",
                    f"schema {names['bk']} (the reverse sync's bookkeeping)",
                    [
                        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                            sql.Identifier(names["bk"])
                        )
                    ],
                )
            )
        actions += _drop_tables(
            settings, new, "new", [FENCE_TABLE], FENCE_TABLE.split(".")[0] != bk
        )
        actions += _column_actions(settings, new, [bk])
        origin_actions, kept = _origin_actions(settings, {"legacy": legacy, "new": new})
        actions += origin_actions
        drop_bk = None
        if new.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (bk,)).fetchone():
            if drop_bookkeeping:
                drop_bk = _sql_action(
                    settings,
                    "new",
                    f"schema {bk} (bookkeeping: audit log, crosswalk, ledger)",
                    [sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(bk))],
                )
            else:
                kept.append(
                    f"bookkeeping schema {bk} in the new database (the migration's record; "
                    "--drop-bookkeeping removes it)"
                )
    topic_actions, topic_kept = _topic_actions(settings, keep_topics)
    actions += topic_actions
    kept += topic_kept
    if refusals and not force and actions:  # nothing left to remove: nothing to refuse
        raise CrossfadeError(
            "decommission refused: " + "; ".join(refusals),
            "wait, stop what runs, or pass --force",
        )
    if drop_bk is not None:
        actions.append(drop_bk)
    return Plan(actions, kept, refusals, drop_bk)


def execute(settings: Settings, p: Plan) -> Report:
    """Run every action of the plan (one failing does not stop the others), record what was
    removed in the audit log, then drop the bookkeeping schema if the plan says so."""
    from crossfade.redact import redact
    from crossfade.who import operator

    report = Report(uuid.uuid4().hex[:12])
    for a in p.actions:
        if a is p.drop_bookkeeping:
            continue
        try:
            a.run()
            report.removed.append(a.describe())
        except _Kept:
            pass
        except (psycopg.Error, CrossfadeError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            report.failed.append(f"{a.describe()}: {reason}")
    bk = settings.sync.bookkeeping_schema
    detail = redact(
        f"removed {len(report.removed)}: "
        + "; ".join(report.removed)
        + (f"; failed {len(report.failed)}: " + "; ".join(report.failed) if report.failed else "")
        + (f"; forced past: {'; '.join(p.refusals)}" if p.refusals else "")
    )
    try:
        with connect(settings.target, "new") as new:
            if has_table(new, bk, "cutover_audit"):
                insert_audit_row(
                    new,
                    bk,
                    AuditEntry(
                        report.run_id, operator(), False, GATE, not report.failed, detail[:4000], 0
                    ),
                )
                report.audit_note = (
                    f"recorded in the audit log ({bk}.cutover_audit, run {report.run_id})"
                )
            else:
                report.audit_note = f"not recorded: the new database has no {bk}.cutover_audit"
    except (psycopg.Error, CrossfadeError) as exc:
        report.audit_note = f"NOT recorded in the audit log: {exc}"
    if p.drop_bookkeeping is not None:
        try:
            p.drop_bookkeeping.run()
            report.removed.append(p.drop_bookkeeping.describe())
            report.audit_note += " (then dropped with the bookkeeping schema: --drop-bookkeeping)"
        except (psycopg.Error, CrossfadeError) as exc:
            report.failed.append(f"{p.drop_bookkeeping.describe()}: {exc}")
    return report
