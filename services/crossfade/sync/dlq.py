"""Dead letters and the accounting of mapped tables: ``crossfade dlq list`` and ``dlq replay``.

Everything sync could not apply is in ``<bookkeeping>.ledger`` (see
:mod:`crossfade.target.store`) with its original bytes, as well as on the dead-letter topic.
The list groups open dead letters by the rule that failed. A replay re-runs them through the
*current* mapping (after the rule or the legacy data was fixed) in one target transaction, with
the same guards as the live sync: a record whose key changed since (a newer position) is not
applied over the newer row — the newer change already decided that key's outcome.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from crossfade.catalog import read_shape
from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import DecodeError
from crossfade.events.decode import POSITION_HEADER, EventDecoder
from crossfade.events.model import ChangeEvent
from crossfade.mapping.audit import parents_first
from crossfade.sync.children import ParentChanges, children_to_rerun
from crossfade.sync.mapped import Origin, build_mapped, make_parents
from crossfade.target.apply import TableApplier, event_key_id
from crossfade.target.store import LedgerCounts, dead_letter_groups, has_table, ledger_counts


@dataclass
class RuleGroup:
    rule: str
    table: str
    records: int
    first_at: str
    last_at: str
    examples: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "table": self.table,
            "records": self.records,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "examples": self.examples,
        }


@dataclass
class Accounting:
    """Per source table: every source row is mapped into the target, dead-lettered, filtered,
    deferred, or out with its parent (``parent_left``, under ``on_parent_left: delete``).
    ``closes`` when they add up to the source's row count."""

    table: str
    source_rows: int
    mapped: int
    dead_lettered: int
    filtered: int
    deferred: int
    parent_left: int = 0

    @property
    def closes(self) -> bool:
        return self.source_rows == (
            self.mapped + self.dead_lettered + self.filtered + self.deferred + self.parent_left
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "source_rows": self.source_rows,
            "mapped": self.mapped,
            "dead_lettered": self.dead_lettered,
            "filtered": self.filtered,
            "deferred": self.deferred,
            "parent_left": self.parent_left,
            "closes": self.closes,
        }


@dataclass
class DlqReport:
    groups: list[RuleGroup] = field(default_factory=list)
    accounting: list[Accounting] = field(default_factory=list)
    counts: LedgerCounts = field(default_factory=LedgerCounts)
    """The ledger's one count (:func:`crossfade.target.store.ledger_counts`): what status,
    the console, the gauges and the dead-letter gate show."""

    @property
    def total(self) -> int:
        return self.counts.dead_letters

    @property
    def held(self) -> int:
        """Changes waiting behind a dead letter of their key (an undecodable earlier change)."""
        return self.counts.held

    @property
    def deferred(self) -> int:
        return self.counts.deferred

    @property
    def filtered(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (rule, _table), n in sorted(self.counts.filtered_by_rule.items()):
            out[rule] = out.get(rule, 0) + n
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "dead_letters": self.total,
            "unacknowledged": self.counts.unacknowledged,
            "by_rule": [g.as_dict() for g in self.groups],
            "filtered_by_filter": self.filtered,
            "deferred": self.deferred,
            "held": self.held,
            "by_table": self.counts.as_dict()["by_table"],
            "accounting": [a.as_dict() for a in self.accounting],
            "accounting_closes": all(a.closes for a in self.accounting),
        }


def list_dead_letters(settings: Settings, examples: int = 5) -> DlqReport:
    rep = DlqReport()
    with connect(settings.target, "target", autocommit=True) as conn:
        if not has_table(conn, settings.sync.bookkeeping_schema, "ledger"):
            return rep
        rep.groups = [
            RuleGroup(*g)
            for g in dead_letter_groups(conn, settings.sync.bookkeeping_schema, examples)
        ]
        rep.counts = ledger_counts(conn, settings.sync.bookkeeping_schema)
        mapping = settings.mapping
        if mapping is not None and mapping.tables:
            counts = rep.counts.accounted
            with connect(settings.source, "source", autocommit=True) as src:
                for t in mapping.tables:
                    schema, name = t.split(".", 1)
                    n = src.execute(
                        sql.SQL("SELECT count(*) FROM {}.{}").format(
                            sql.Identifier(schema), sql.Identifier(name)
                        )
                    ).fetchone()
                    c = counts.get(t, {})
                    rep.accounting.append(
                        Accounting(
                            t,
                            int(n[0]) if n else 0,
                            c.get("mapped", 0) + c.get("replayed", 0),
                            c.get("dead_letter", 0),
                            c.get("filtered", 0),
                            c.get("deferred", 0),
                            c.get("parent_left", 0),
                        )
                    )
    return rep


@dataclass
class ReplayReport:
    selected: int = 0
    applied: int = 0
    still_failing: int = 0
    superseded: int = 0
    dropped: int = 0
    """Undecodable records given up (``--drop-undecodable``)."""
    released: int = 0
    """Changes held back behind a dead letter of their key, applied now."""
    by_rule: dict[str, int] = field(default_factory=dict)
    """Rules the records that still fail fail now."""
    records: list[dict[str, Any]] = field(default_factory=list)
    """Per dead letter re-run: table, key, the rule ``dlq list`` shows (``was``), and what it
    is now (``outcome``, ``rule``): with nothing changed, the same rule for every record."""
    children: int = 0
    """Children of replayed parents mapped again (a child waiting for a parent that maps now)."""
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "applied": self.applied,
            "still_failing": self.still_failing,
            "superseded": self.superseded,
            "dropped": self.dropped,
            "released": self.released,
            "still_failing_by_rule": self.by_rule,
            "children": self.children,
            "records": self.records,
            "dry_run": self.dry_run,
        }


class _DryRun(Exception):
    pass


def replay(
    settings: Settings,
    *,
    rule: str | None = None,
    table: str | None = None,
    dry_run: bool = False,
    drop_undecodable: bool = False,
) -> ReplayReport:
    """Re-run open dead letters through the current mapping; apply those that pass now.

    A record that could not be decoded holds back the later changes of its key (``held`` in the
    ledger): once it decodes and applies — or, with ``drop_undecodable``, is given up (its change
    is lost, on the operator's word) — the held changes apply in their order."""
    from crossfade.mapping.schema_check import load_mapper

    rep = ReplayReport(dry_run=dry_run)
    bk_name = settings.sync.bookkeeping_schema
    bk = sql.Identifier(bk_name)
    decoder = EventDecoder(settings.kafka)
    with connect(settings.target, "target", autocommit=True) as conn:
        with connect(settings.source, "source") as src:
            mapper, schema_report = load_mapper(
                settings.mapping,
                list(settings.tables),
                src,
                conn,
                settings.sync.append_only_tables,
            )
        schema_report.raise_for_errors()
        mapped, writers, shapes = build_mapped(mapper, schema_report, conn, bk_name)
        try:
            with conn.transaction():
                cond = [sql.SQL("outcome = 'dead_letter'")]
                params: list[Any] = []
                if rule:
                    cond.append(sql.SQL("rule = %s"))
                    params.append(rule)
                if table:
                    cond.append(sql.SQL("source_table = %s"))
                    params.append(table)
                rows = conn.execute(
                    sql.SQL(
                        'SELECT source_table, entry, topic, partition, "offset", key, value, headers, source_key, rule '
                        "FROM {}.ledger WHERE {} ORDER BY source_table, position FOR UPDATE"
                    ).format(bk, sql.SQL(" AND ").join(cond)),
                    params,
                ).fetchall()
                rep.selected = len(rows)
                by_table: dict[str, list[tuple[str, ChangeEvent]]] = defaultdict(list)
                origins: dict[tuple[str, str, int], Origin] = {}
                undecodable: list[tuple[str, str]] = []
                release: list[tuple[str, Any]] = []  # (table, key) whose held changes may go now
                dropped: list[tuple[str, str]] = []
                for (
                    src_table,
                    entry,
                    topic,
                    partition,
                    offset,
                    key,
                    value,
                    headers,
                    source_key,
                    why,
                ) in rows:
                    headers = headers or {}
                    try:
                        e = decoder.decode(key, value, src_table, headers.get(POSITION_HEADER))
                    except DecodeError:
                        if drop_undecodable and why == "decode":
                            dropped.append((src_table, entry))
                            rep.dropped += 1
                            if source_key is not None:
                                release.append((src_table, source_key))
                            continue
                        rep.still_failing += 1
                        rep.by_rule["decode"] = rep.by_rule.get("decode", 0) + 1
                        undecodable.append((src_table, entry))
                        continue
                    if why == "decode" and source_key is not None:
                        release.append((src_table, source_key))
                    by_table[src_table].append((entry, e))
                    origins[(e.table, event_key_id(e), e.position)] = Origin(
                        topic, partition, offset, key, value, headers
                    )
                for src_table, entry in dropped:
                    conn.execute(
                        sql.SQL(
                            "UPDATE {}.ledger SET outcome = 'dropped', at = now() WHERE source_table = %s "
                            "AND entry = %s"
                        ).format(bk),
                        (src_table, entry),
                    )
                # the held changes of released keys follow their dead letter, in their order
                for src_table, source_key in release:
                    for entry, topic, partition, offset, key, value, headers in conn.execute(
                        sql.SQL(
                            'SELECT entry, topic, partition, "offset", key, value, headers FROM {}.ledger '
                            "WHERE outcome = 'held' AND source_table = %s AND source_key = %s "
                            'ORDER BY topic, partition, "offset" FOR UPDATE'
                        ).format(bk),
                        (src_table, Jsonb(source_key)),
                    ).fetchall():
                        e = decoder.decode(
                            key, value, src_table, (headers or {}).get(POSITION_HEADER)
                        )
                        by_table[src_table].append((entry, e))
                        origins[(e.table, event_key_id(e), e.position)] = Origin(
                            topic, partition, offset, key, value, headers or {}
                        )
                        rep.released += 1
                parents = make_parents(conn, shapes, writers, bk_name)
                was = {(t, entry): why for t, entry, *_x, why in rows}
                followed = ParentChanges()
                order = [t for t in parents_first(mapper) if t in by_table]
                for src_table in [*order, *(t for t in by_table if t not in order)]:
                    pairs = by_table[src_table]
                    events = [e for _, e in pairs]
                    decoded_entries = [entry for entry, _ in pairs if entry.startswith("@")]
                    if (
                        src_table not in mapped
                    ):  # a key's changes in position order (identity apply collapses them)
                        events.sort(key=lambda e: e.position)
                    if src_table in mapped:
                        ms = mapped[src_table]
                        entries = frozenset(ms.entry_of(e)[0] for e in events)
                        res = ms.process(
                            conn, events, origins, parents, rerun=True, expired=entries
                        )
                        followed.update(res.parent_changes)
                        rep.applied += (
                            res.by_outcome["mapped"]
                            + res.by_outcome["deleted"]
                            + res.by_outcome["filtered"]
                        )
                        rep.superseded += res.skipped
                        for entry, (outcome, now_rule) in sorted(res.outcomes.items()):
                            if outcome == "dead_letter":  # new or as it was
                                rep.still_failing += 1
                                rep.by_rule[now_rule or "?"] = (
                                    rep.by_rule.get(now_rule or "?", 0) + 1
                                )
                            rep.records.append(
                                {
                                    "table": src_table,
                                    "key": entry,
                                    "was": was.get((src_table, entry)),
                                    "outcome": outcome,
                                    "rule": now_rule if outcome == "dead_letter" else None,
                                }
                            )
                    else:
                        shape = read_shape(conn, src_table)
                        if shape is None:
                            continue
                        applier = TableApplier(shape, bk_name)
                        r = applier.apply(conn, events, applier.prepare(conn))
                        rep.applied += r.applied + r.deleted
                        rep.superseded += r.skipped
                    if decoded_entries:
                        conn.execute(
                            sql.SQL(
                                "UPDATE {}.ledger SET outcome = 'replayed', at = now() WHERE source_table = %s "
                                "AND entry = ANY(%s)"
                            ).format(bk),
                            (src_table, decoded_entries),
                        )
                rep.children = _follow(conn, bk, decoder, mapped, mapper, parents, followed)
                for src_table, entry in undecodable:
                    rep.records.append(
                        {
                            "table": src_table,
                            "key": entry,
                            "was": was.get((src_table, entry)),
                            "outcome": "dead_letter",
                            "rule": "decode",
                        }
                    )
                if dry_run:
                    raise _DryRun
        except _DryRun:
            pass
    return rep


def _follow(
    conn: psycopg.Connection,
    bk: sql.Identifier,
    decoder: EventDecoder,
    mapped: dict[str, Any],
    mapper: Any,
    parents: Any,
    changes: ParentChanges,
) -> int:
    """Map again the children of parents a replay changed (as sync does, sync.children);
    returns how many children were mapped again."""
    done = 0
    order = parents_first(mapper)
    for _ in range(len(order) + 2):
        if not changes:
            break
        rows = children_to_rerun(conn, bk, changes)
        changes = ParentChanges()
        by_table: dict[str, list[ChangeEvent]] = defaultdict(list)
        origins: dict[tuple[str, str, int], Origin] = {}
        expired: dict[str, set[str]] = defaultdict(set)
        for table, entry, topic, partition, offset, key, value, headers, is_expired in rows:
            e = decoder.decode(key, value, table, (headers or {}).get(POSITION_HEADER))
            by_table[table].append(e)
            origins[(e.table, event_key_id(e), e.position)] = Origin(
                topic, partition, offset, key, value, headers or {}
            )
            if is_expired:
                expired[table].add(entry)
        for table in [t for t in order if t in by_table and t in mapped]:
            res = mapped[table].process(
                conn,
                by_table[table],
                origins,
                parents,
                rerun=True,
                expired=frozenset(expired[table]),
            )
            done += len(res.outcomes)
            changes.update(res.parent_changes)
    return done
