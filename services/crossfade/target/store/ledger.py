"""The ledger (``<bookkeeping>.ledger``): per source key the outcome of its newest change, and
the one count of open dead letters, held, deferred and filtered rows every command shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from crossfade.target.store.schema import has_table


@dataclass
class TableCounts:
    """Open ledger outcomes of one source table."""

    dead_letters: int = 0
    """Open dead letters (a rule failed, or undecodable), acknowledged or not."""
    unacknowledged: int = 0
    """Of the open dead letters and held changes, those no ``crossfade dlq ack`` covered."""
    held: int = 0
    """Changes waiting behind an undecodable change of their key (open until it is resolved)."""
    deferred: int = 0
    filtered: int = 0
    mapped: int = 0
    """Source keys whose newest change is in the target (mapped, or replayed by ``dlq replay``)."""

    def as_dict(self) -> dict[str, int]:
        return {
            "dead_letters": self.dead_letters,
            "unacknowledged": self.unacknowledged,
            "held": self.held,
            "deferred": self.deferred,
            "filtered": self.filtered,
        }


@dataclass
class LedgerCounts:
    """What is open in the ledger now, per source table and per rule: the figure ``dlq list``,
    ``status``, the console, the gauges and the dead-letter gate all show."""

    tables: dict[str, TableCounts] = field(default_factory=dict)
    by_rule: dict[tuple[str, str], int] = field(default_factory=dict)
    """(rule, source table) -> open dead letters."""
    filtered_by_rule: dict[tuple[str, str], int] = field(default_factory=dict)
    accounted: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per source table, its keys by ledger outcome (records that could not be decoded, keyed by
    where they were read, are not source rows and are left out): the accounting's right side."""

    def table(self, name: str) -> TableCounts:
        return self.tables.get(name) or TableCounts()

    def _sum(self, attr: str) -> int:
        return sum(getattr(t, attr) for t in self.tables.values())

    @property
    def dead_letters(self) -> int:
        return self._sum("dead_letters")

    @property
    def unacknowledged(self) -> int:
        return self._sum("unacknowledged")

    @property
    def held(self) -> int:
        return self._sum("held")

    @property
    def deferred(self) -> int:
        return self._sum("deferred")

    @property
    def filtered(self) -> int:
        return self._sum("filtered")

    def as_dict(self) -> dict[str, Any]:
        return {
            "dead_letters": self.dead_letters,
            "unacknowledged": self.unacknowledged,
            "held": self.held,
            "deferred": self.deferred,
            "filtered": self.filtered,
            "by_table": {t: c.as_dict() for t, c in sorted(self.tables.items())},
        }


_OPEN = ("dead_letter", "held")
"""Ledger outcomes that block a key: a dead letter, and the changes held behind one."""


def ledger_counts(conn: psycopg.Connection, schema: str) -> LedgerCounts:
    """Open dead letters (and how many no acknowledgement covers), held changes, deferred and
    filtered rows per source table, and the accounting, from the ledger. Empty when sync never
    ran. One query (one pass over the ledger)."""
    out = LedgerCounts()
    if not has_table(conn, schema, "ledger"):
        return out
    s = sql.Identifier(schema)
    acked = (
        sql.SQL(
            "EXISTS (SELECT 1 FROM {}.dlq_acked a WHERE a.source_table = l.source_table "
            "AND a.entry = l.entry AND a.position = l.position)"
        ).format(s)
        if has_table(conn, schema, "dlq_acked")
        else sql.SQL("false")
    )
    rows = conn.execute(
        sql.SQL(
            "SELECT l.source_table, l.outcome, coalesce(l.rule, ''), l.entry LIKE '@%%', count(*), "
            "count(*) FILTER (WHERE l.outcome IN ('dead_letter', 'held') AND NOT {acked}) "
            "FROM {s}.ledger l GROUP BY 1, 2, 3, 4"
        ).format(s=s, acked=acked)
    ).fetchall()
    for table, outcome, rule, by_place, n, unacked in rows:
        c = out.tables.setdefault(table, TableCounts())
        n, unacked = int(n), int(unacked)
        if not by_place:
            acc = out.accounted.setdefault(table, {})
            acc[outcome] = acc.get(outcome, 0) + n
        if outcome == "dead_letter":
            c.dead_letters += n
            out.by_rule[(rule, table)] = out.by_rule.get((rule, table), 0) + n
        elif outcome == "held":
            c.held += n
        elif outcome == "deferred":
            c.deferred += n
        elif outcome == "filtered":
            c.filtered += n
            out.filtered_by_rule[(rule, table)] = out.filtered_by_rule.get((rule, table), 0) + n
        elif outcome in ("mapped", "replayed"):
            c.mapped += n
        c.unacknowledged += unacked
    return out


def dead_letter_groups(
    conn: psycopg.Connection, schema: str, examples: int = 5
) -> list[tuple[str, str, int, str, str, list[dict[str, Any]]]]:
    """Open dead letters grouped by rule and source table, most first: ``(rule, table, records,
    first seen, last seen, newest examples)``, each example's key, reason and where the record
    was read (``dlq list`` and the console show these)."""
    if not has_table(conn, schema, "ledger"):
        return []
    rows = conn.execute(
        sql.SQL(
            "SELECT rule, source_table, count(*), min(first_at)::text, max(at)::text, "
            "(array_agg(json_build_object('key', coalesce(source_key::text, entry), 'reason', reason, 'topic', topic, "
            "'partition', partition, 'offset', \"offset\") ORDER BY at DESC))[1:%s] "
            "FROM {}.ledger WHERE outcome = 'dead_letter' GROUP BY rule, source_table ORDER BY count(*) DESC, rule"
        ).format(sql.Identifier(schema)),
        (examples,),
    ).fetchall()
    return [(r[0], r[1], int(r[2]), r[3], r[4], list(r[5] or [])) for r in rows]


HELD_OUT = ("dead_letter", "deferred", "parent_left")
"""Outcomes that keep a source key out of the target (mapped verify: the mapping rejects it)."""


def held_entries(conn: psycopg.Connection, schema: str, source: str) -> tuple[set[str], set[str]]:
    """The entries of ``source`` the ledger keeps out of the target: (dead letters, deferred and
    ``parent_left``; filtered). Undecodable records (``@topic/partition/offset``) are not keys of
    the table and are left out. Both empty before sync ran (no ledger)."""
    held: tuple[set[str], set[str]] = (set(), set())
    if not has_table(conn, schema, "ledger"):
        return held
    for entry, outcome in conn.execute(
        sql.SQL(
            "SELECT entry, outcome FROM {}.ledger WHERE source_table = %s "
            "AND outcome = ANY(%s) AND entry NOT LIKE '@%%'"
        ).format(sql.Identifier(schema)),
        (source, [*HELD_OUT, "filtered"]),
    ):
        held[1 if outcome == "filtered" else 0].add(entry)
    return held


def entry_outcome(conn: psycopg.Connection, schema: str, source: str, entry: str) -> str | None:
    """The outcome the ledger holds for one entry of ``source``; None: no entry (or no ledger)."""
    if not has_table(conn, schema, "ledger"):
        return None
    row = conn.execute(
        sql.SQL("SELECT outcome FROM {}.ledger WHERE source_table = %s AND entry = %s").format(
            sql.Identifier(schema)
        ),
        (source, entry),
    ).fetchone()
    return str(row[0]) if row else None


def entry_outcomes(
    conn: psycopg.Connection, schema: str, source: str, entries: list[str]
) -> dict[str, str]:
    """The outcome the ledger holds for each of these entries of ``source`` that it has."""
    if not entries:
        return {}
    return {
        str(e): str(o)
        for e, o in conn.execute(
            sql.SQL(
                "SELECT entry, outcome FROM {}.ledger WHERE source_table = %s AND entry = ANY(%s)"
            ).format(sql.Identifier(schema)),
            (source, entries),
        )
    }
