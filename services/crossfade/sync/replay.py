"""``crossfade dlq replay``: re-run open dead letters through the *current* mapping (after the rule
or the legacy data was fixed) in one target transaction, composed from the live sync's steps: the
mapped tables' sink (:class:`crossfade.sync.sinks.mapped.MappedTables`: map, apply, children
follow their parents) and the identity tables' applier, with the same guards: a record whose key
changed since (a newer position) is not applied over the newer row — the newer change already
decided that key's outcome.

A record that could not be decoded holds back the later changes of its key (``held`` in the
ledger): once it decodes and applies — or, with ``drop_undecodable``, is given up (its change is
lost, on the operator's word) — the held changes apply in their order.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from crossfade.catalog import read_shape
from crossfade.config import Settings
from crossfade.db import connect
from crossfade.errors import DecodeError
from crossfade.events.decode import POSITION_HEADER, EventDecoder
from crossfade.events.model import ChangeEvent
from crossfade.mapping.audit import parents_first
from crossfade.sync.sinks import Tx
from crossfade.sync.sinks.identity import IdentityTables
from crossfade.sync.sinks.mapped import MappedTables
from crossfade.sync.sinks.mapped_source import MappedResult, build_mapped
from crossfade.target.apply import event_key_id
from crossfade.target.store import dead_letters_for_replay, held_changes, set_outcome
from crossfade.target.store.ledger import Origin


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


@dataclass
class _Selected:
    """The records a replay re-runs, per source table: (ledger entry, event)."""

    by_table: dict[str, list[tuple[str, ChangeEvent]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    undecodable: list[tuple[str, str]] = field(default_factory=list)
    was: dict[tuple[str, str], str] = field(default_factory=dict)
    """(table, entry) -> the rule ``dlq list`` showed."""


def replay(
    settings: Settings,
    *,
    rule: str | None = None,
    table: str | None = None,
    dry_run: bool = False,
    drop_undecodable: bool = False,
) -> ReplayReport:
    """Re-run open dead letters through the current mapping; apply those that pass now (see
    the module docstring). ``dry_run``: report, then roll back."""
    from crossfade.mapping.schema_check import load_mapper

    rep = ReplayReport(dry_run=dry_run)
    bk = settings.sync.bookkeeping_schema
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
        mapped = MappedTables(
            *build_mapped(mapper, schema_report, conn, bk), parents_first(mapper), bk
        )
        mapped.decoder = decoder
        try:
            with conn.transaction():
                # a row the target still refuses stays a dead letter (sync.refused)
                tx = Tx(conn, isolate=True)
                chosen = _select(tx, bk, decoder, rep, rule, table, drop_undecodable)
                mapped.begin(tx)
                order = [t for t in mapped.order if t in chosen.by_table]
                for src_table in [*order, *(t for t in chosen.by_table if t not in order)]:
                    _rerun_table(tx, settings, mapped, src_table, chosen, rep)
                rep.children = mapped.follow_parents(tx)
                for src_table, entry in chosen.undecodable:
                    rep.records.append(
                        {
                            "table": src_table,
                            "key": entry,
                            "was": chosen.was.get((src_table, entry)),
                            "outcome": "dead_letter",
                            "rule": "decode",
                        }
                    )
                if dry_run:
                    raise _DryRun
        except _DryRun:
            pass
    return rep


def _select(
    tx: Tx,
    bk: str,
    decoder: EventDecoder,
    rep: ReplayReport,
    rule: str | None,
    table: str | None,
    drop_undecodable: bool,
) -> _Selected:
    """Lock and decode the dead letters to re-run, and the held changes they release."""
    rows = dead_letters_for_replay(tx.conn, bk, rule, table)
    rep.selected = len(rows)
    out = _Selected(was={(t, entry): why for t, entry, *_x, why in rows})
    release: list[tuple[str, Any]] = []  # (table, key) whose held changes may go now
    dropped: dict[str, list[str]] = defaultdict(list)
    for src_table, entry, topic, partition, offset, key, value, headers, source_key, why in rows:
        headers = headers or {}
        try:
            e = decoder.decode(key, value, src_table, headers.get(POSITION_HEADER))
        except DecodeError:
            if drop_undecodable and why == "decode":
                dropped[src_table].append(entry)
                rep.dropped += 1
                if source_key is not None:
                    release.append((src_table, source_key))
                continue
            rep.still_failing += 1
            rep.by_rule["decode"] = rep.by_rule.get("decode", 0) + 1
            out.undecodable.append((src_table, entry))
            continue
        if why == "decode" and source_key is not None:
            release.append((src_table, source_key))
        out.by_table[src_table].append((entry, e))
        tx.origins[(e.table, event_key_id(e), e.position)] = Origin(
            topic, partition, offset, key, value, headers
        )
    for src_table, entries in dropped.items():
        set_outcome(tx.conn, bk, src_table, entries, "dropped")
    # the held changes of released keys follow their dead letter, in their order
    for src_table, source_key in release:
        for entry, topic, partition, offset, key, value, headers in held_changes(
            tx.conn, bk, src_table, source_key
        ):
            e = decoder.decode(key, value, src_table, (headers or {}).get(POSITION_HEADER))
            out.by_table[src_table].append((entry, e))
            tx.origins[(e.table, event_key_id(e), e.position)] = Origin(
                topic, partition, offset, key, value, headers or {}
            )
            rep.released += 1
    return out


def _rerun_table(
    tx: Tx,
    settings: Settings,
    mapped: MappedTables,
    src_table: str,
    chosen: _Selected,
    rep: ReplayReport,
) -> None:
    """Re-run one table's records: mapped through its sink (a deferral expires at once),
    identity through the table's applier; mark the decoded dead letters ``replayed``."""
    pairs = chosen.by_table[src_table]
    events = [e for _, e in pairs]
    decoded_entries = [entry for entry, _ in pairs if entry.startswith("@")]
    if src_table in mapped:
        ms = mapped.mapped[src_table]
        entries = frozenset(ms.entry_of(e)[0] for e in events)
        res = mapped.process(tx, ms, events, rerun=True, expired=entries)
        _note(rep, src_table, res, chosen.was)
    else:
        # a key's changes in position order (identity apply collapses them)
        events.sort(key=lambda e: e.position)
        shape = read_shape(tx.conn, src_table)
        if shape is None:
            return
        applier = IdentityTables(settings).applier(tx.conn, src_table, shape)
        r = applier.apply(tx.conn, events, applier.prepare(tx.conn))
        rep.applied += r.applied + r.deleted
        rep.superseded += r.skipped
    if decoded_entries:
        set_outcome(
            tx.conn, settings.sync.bookkeeping_schema, src_table, decoded_entries, "replayed"
        )


def _note(
    rep: ReplayReport, src_table: str, res: MappedResult, was: dict[tuple[str, str], str]
) -> None:
    rep.applied += res.by_outcome["mapped"] + res.by_outcome["deleted"] + res.by_outcome["filtered"]
    rep.superseded += res.skipped
    for entry, (outcome, now_rule) in sorted(res.outcomes.items()):
        if outcome == "dead_letter":  # new or as it was
            rep.still_failing += 1
            rep.by_rule[now_rule or "?"] = rep.by_rule.get(now_rule or "?", 0) + 1
        rep.records.append(
            {
                "table": src_table,
                "key": entry,
                "was": was.get((src_table, entry)),
                "outcome": outcome,
                "rule": now_rule if outcome == "dead_letter" else None,
            }
        )
