"""Dead letters and the accounting of mapped tables: ``crossfade dlq list``.

Everything sync could not apply is in ``<bookkeeping>.ledger`` (see
:mod:`crossfade.target.store`) with its original bytes, as well as on the dead-letter topic.
The list groups open dead letters by the rule that failed; ``dlq replay`` is
:mod:`crossfade.sync.replay`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from crossfade.config import Settings
from crossfade.db import connect
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
