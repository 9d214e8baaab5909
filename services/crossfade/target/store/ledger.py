"""The ledger (``<bookkeeping>.ledger``): per source key the outcome of its newest change, and
the one count of open dead letters, held, deferred and filtered rows every command shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from crossfade.catalog import written_since
from crossfade.db import jsonb
from crossfade.target.store.schema import has_table
from crossfade.target.store.staging import stage_and_merge


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


def dead_letters_of_rule(conn: psycopg.Connection, schema: str, source: str, rule: str) -> set[str]:
    """The entries of ``source`` that are dead letters of ``rule`` (empty before sync ran)."""
    if not has_table(conn, schema, "ledger"):
        return set()
    return {
        str(r[0])
        for r in conn.execute(
            sql.SQL(
                "SELECT entry FROM {}.ledger WHERE source_table = %s "
                "AND outcome = 'dead_letter' AND rule = %s"
            ).format(sql.Identifier(schema)),
            (source, rule),
        )
    }


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


def decode_dead_letters(conn: psycopg.Connection, schema: str) -> list[tuple[str, Any, str]]:
    """Open dead letters of undecodable records whose key decoded: (table, key, entry)."""
    return conn.execute(
        sql.SQL(
            "SELECT source_table, source_key, entry FROM {}.ledger WHERE outcome = 'dead_letter' "
            "AND rule = 'decode' AND source_key IS NOT NULL"
        ).format(sql.Identifier(schema))
    ).fetchall()


def still_dead_letters(
    conn: psycopg.Connection, schema: str, entries: list[tuple[str, str]]
) -> set[str]:
    """Of these (table, entry) ledger rows, the entries still dead letters. The rows are
    share-locked until the transaction ends: a ``dlq replay`` resolving one either commits first
    or waits for the caller's transaction."""
    if not entries:
        return set()
    rows = conn.execute(
        sql.SQL(
            "SELECT l.entry, l.outcome FROM {}.ledger l JOIN unnest(%s::text[], %s::text[]) AS w(t, e) "
            "ON l.source_table = w.t AND l.entry = w.e FOR SHARE OF l"
        ).format(sql.Identifier(schema)),
        ([t for t, _ in entries], [e for _, e in entries]),
    ).fetchall()
    return {entry for entry, outcome in rows if outcome == "dead_letter"}


def deferred_rows(
    conn: psycopg.Connection,
    schema: str,
    tables: list[str],
    tps: list[tuple[str, int]],
    *,
    expired_only: bool = False,
) -> list[tuple[Any, ...]]:
    """Deferred rows of these tables and partitions, oldest first (at most 1000): (source
    table, entry, topic, partition, offset, key, value, headers, window over)."""
    return conn.execute(
        sql.SQL(
            'SELECT source_table, entry, topic, partition, "offset", key, value, headers, now() >= deadline '
            "FROM {}.ledger WHERE outcome = 'deferred' AND source_table = ANY(%s) "
            "AND (topic || '/' || partition) = ANY(%s) {} ORDER BY first_at LIMIT 1000"
        ).format(
            sql.Identifier(schema),
            sql.SQL("AND now() >= deadline" if expired_only else ""),
        ),
        (tables, [f"{t}/{p}" for t, p in tps]),
    ).fetchall()


def dead_letters_for_replay(
    conn: psycopg.Connection, schema: str, rule: str | None = None, table: str | None = None
) -> list[tuple[Any, ...]]:
    """Open dead letters (of one rule, one table), locked for update, in position order per
    table: (source table, entry, topic, partition, offset, key, value, headers, source key,
    rule)."""
    cond = [sql.SQL("outcome = 'dead_letter'")]
    params: list[Any] = []
    if rule:
        cond.append(sql.SQL("rule = %s"))
        params.append(rule)
    if table:
        cond.append(sql.SQL("source_table = %s"))
        params.append(table)
    return conn.execute(
        sql.SQL(
            'SELECT source_table, entry, topic, partition, "offset", key, value, headers, source_key, rule '
            "FROM {}.ledger WHERE {} ORDER BY source_table, position FOR UPDATE"
        ).format(sql.Identifier(schema), sql.SQL(" AND ").join(cond)),
        params,
    ).fetchall()


def held_changes(
    conn: psycopg.Connection, schema: str, table: str, source_key: Any
) -> list[tuple[Any, ...]]:
    """Changes of a key held behind its dead letter, locked, in their order: (entry, topic,
    partition, offset, key, value, headers)."""
    return conn.execute(
        sql.SQL(
            'SELECT entry, topic, partition, "offset", key, value, headers FROM {}.ledger '
            "WHERE outcome = 'held' AND source_table = %s AND source_key = %s "
            'ORDER BY topic, partition, "offset" FOR UPDATE'
        ).format(sql.Identifier(schema)),
        (table, jsonb(source_key)),
    ).fetchall()


def set_outcome(
    conn: psycopg.Connection, schema: str, table: str, entries: list[str], outcome: str
) -> None:
    """Mark ledger entries of ``table`` ``dropped`` or ``replayed`` (by ``dlq replay``)."""
    conn.execute(
        sql.SQL(
            "UPDATE {}.ledger SET outcome = %s, at = now() WHERE source_table = %s AND entry = ANY(%s)"
        ).format(sql.Identifier(schema)),
        (outcome, table, entries),
    )


HELD = ("dead_letter", "filtered", "deferred", "parent_left")
"""Ledger outcomes that keep their rule and reason (and, but filtered, the record's bytes)."""


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a change event was read: what a dead letter or a deferral keeps to re-run it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]


@dataclass(slots=True)
class Held:
    """One ledger row to write (the outcome of a source key's change)."""

    source_table: str
    entry: str
    position: int
    outcome: str  # mapped | deleted | filtered | dead_letter | deferred | replayed
    source_key: list[Any] | None = None
    rule: str | None = None
    reason: str | None = None
    failures: list[dict[str, Any]] | None = None
    origin: Origin | None = None
    window_s: float | None = None
    keep_origin: bool = False
    """Keep the record's bytes with a ``mapped`` outcome too (a child: it is mapped again when
    its parent changes, :mod:`crossfade.sync.children`)."""
    prev_rule: str | None = None
    """The rule of the dead letter this change re-runs (a dead letter unchanged is not new)."""


_LEDGER_COLS = [
    "source_table",
    "entry",
    "position",
    "outcome",
    "source_key",
    "rule",
    "reason",
    "failures",
    "topic",
    "partition",
    "offset",
    "key",
    "value",
    "headers",
]


def write_ledger(conn: psycopg.Connection, schema: str, held: list[Held]) -> None:
    """Upsert ledger rows, each only over an older (or equal) position of its key. Details and
    bytes are kept for held outcomes only; a deferral keeps the deadline of its first deferral.

    Set-based (issue 22): the rows are COPYed into a staging table and merged in one statement,
    which locks their rows in (source table, entry) order. An entry given more than once is
    written as if row by row, in the order given: its n-th row goes in the n-th statement."""
    if not held:
        return
    seen: dict[tuple[str, str], int] = {}
    rows = []
    for h in held:
        n = seen[(h.source_table, h.entry)] = seen.get((h.source_table, h.entry), -1) + 1
        rows.append((*_ledger_row(h), n))
    cols = sql.SQL(", ").join(map(sql.Identifier, _LEDGER_COLS))
    stmt = sql.SQL(
        """INSERT INTO {bk}.ledger AS l ({cols}, deadline)
           SELECT {cols}, now() + make_interval(secs => window_s) FROM {stage} WHERE round = %s
           ORDER BY source_table, entry
           ON CONFLICT (source_table, entry) DO UPDATE SET position = EXCLUDED.position, outcome = EXCLUDED.outcome,
               source_key = EXCLUDED.source_key, rule = EXCLUDED.rule, reason = EXCLUDED.reason,
               failures = EXCLUDED.failures, topic = EXCLUDED.topic, partition = EXCLUDED.partition,
               "offset" = EXCLUDED."offset", key = EXCLUDED.key, value = EXCLUDED.value, headers = EXCLUDED.headers,
               first_at = CASE WHEN l.outcome = EXCLUDED.outcome THEN l.first_at ELSE now() END,
               deadline = CASE WHEN l.outcome = 'deferred' AND EXCLUDED.outcome = 'deferred' THEN l.deadline
                               ELSE EXCLUDED.deadline END,
               at = now()
           WHERE l.position <= EXCLUDED.position"""
    )
    bk = sql.Identifier(schema)
    stage_and_merge(
        conn,
        sql.SQL("{}.ledger").format(bk),
        _LEDGER_COLS,
        rows,
        lambda stage: [
            (stmt.format(bk=bk, cols=cols, stage=stage), (n,))
            for n in range(max(seen.values()) + 1)
        ],
        extra=[("window_s", "double precision"), ("round", "int")],
    )


def _ledger_row(h: Held) -> tuple[Any, ...]:
    """The ledger columns of ``h`` (``_LEDGER_COLS``), then its deferral window in seconds."""
    keep = h.outcome in (*HELD, "held")
    o = (
        h.origin
        if h.outcome in ("dead_letter", "deferred", "held", "parent_left")
        or (h.keep_origin and h.outcome in ("mapped", "replayed"))
        else None
    )
    return (
        h.source_table,
        h.entry,
        h.position,
        h.outcome,
        jsonb(h.source_key) if h.source_key is not None else None,
        h.rule if keep else None,
        h.reason if keep else None,
        jsonb(h.failures) if keep and h.failures else None,
        o.topic if o else None,
        o.partition if o else None,
        o.offset if o else None,
        o.key if o else None,
        o.value if o else None,
        jsonb(o.headers) if o else None,
        h.window_s if h.outcome == "deferred" else None,
    )


def ledger_positions(
    conn: psycopg.Connection, schema: str, table: str, entries: list[str]
) -> dict[str, tuple[int, str, str | None]]:
    """Ledger rows of these entries of ``table``: entry -> (position, outcome, rule).

    One probe of the primary key per entry (a ``LATERAL`` subquery, which PostgreSQL cannot turn
    into a scan), whatever the ledger's statistics say. During a load the ledger grows faster
    than autovacuum analyzes it, and ``entry = ANY($2)`` was planned on stale statistics as a
    scan of all the table's ledger rows, each compared with every entry of the array: 1.3 s for
    1276 keys at 27k rows, the target's top statement (issue 22)."""
    if not entries:
        return {}
    return {
        r[0]: (r[1], r[2], r[3])
        for r in conn.execute(
            sql.SQL(
                "SELECT w.e, l.position, l.outcome, l.rule FROM unnest(%b::text[]) AS w(e) "
                "CROSS JOIN LATERAL (SELECT position, outcome, rule FROM {}.ledger "
                "WHERE source_table = %s AND entry = w.e LIMIT 1) AS l"
            ).format(sql.Identifier(schema)),
            (entries, table),
        ).fetchall()
    }


def forget_below(conn: psycopg.Connection, schema: str, table: str, pos: int) -> None:
    """Drop ``table``'s ledger rows older than position ``pos`` (a truncate voided them)."""
    conn.execute(
        sql.SQL("DELETE FROM {}.ledger WHERE source_table = %s AND position < %s").format(
            sql.Identifier(schema)
        ),
        (table, pos),
    )


def entries_written_since(
    conn: psycopg.Connection, schema: str, sources: list[str], snapshot: str
) -> dict[str, set[str]]:
    """Per source table of ``sources``, the ledger entries written (inserted or updated) by a
    transaction the snapshot ``snapshot`` (``pg_current_snapshot()`` of this database, as text)
    does not see: every source key sync recorded a change of since (a few recorded just before
    may come too: a superset). Undecodable records (``@...``) are left out. One scan of the
    ledger's row headers (:func:`crossfade.catalog.written_since`); empty without a ledger."""
    out: dict[str, set[str]] = {s: set() for s in sources}
    if not sources or not has_table(conn, schema, "ledger"):
        return out
    for source, entry in conn.execute(
        sql.SQL(
            "SELECT source_table, entry FROM {}.ledger l WHERE source_table = ANY(%s) "
            "AND entry NOT LIKE '@%%' AND {}"
        ).format(sql.Identifier(schema), written_since(snapshot, "l")),
        (sources,),
    ):
        out[source].add(entry)
    return out
