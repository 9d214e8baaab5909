"""Table sinks: where the commit step (:mod:`crossfade.sync.commit`) sends a table's part of a
batch. One contract, :class:`TableSink`, implemented by identity-mapped tables
(:mod:`~crossfade.sync.sinks.identity`: the target follows the source's shape) and mapped ones
(:mod:`~crossfade.sync.sinks.mapped`: map, cleanse, validate, dedup, children). Every call runs
inside the batch transaction (:class:`Tx`); nothing here commits.

To add a kind of table: a class with ``begin``/``apply``/``truncate`` below, and the worker's
setup choosing it for the tables it serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import psycopg

from crossfade.sync.stats import Counts, PartitionStats, SyncStats

if TYPE_CHECKING:
    from crossfade.sync.children import ParentChanges
    from crossfade.sync.parents import TargetParents
    from crossfade.sync.planner import PartitionPlan, Run
    from crossfade.target.store.ledger import Held, Origin


class Applied(Counts, Protocol):
    toast_missing: list[str]


@dataclass(slots=True)
class Tx:
    """One batch transaction as the sinks see it: its connection and what it collects until the
    commit (counts merged only once it committed, so a retried batch counts once)."""

    conn: psycopg.Connection
    pending: SyncStats = field(default_factory=SyncStats)
    dead: list[tuple[Held, str]] = field(default_factory=list)
    """The mapping's dead letters (with their source table), produced before the commit."""
    parent_changes: ParentChanges | None = None
    """Parents that arrived, left or moved in this transaction (sync.children)."""
    parents: TargetParents | None = None
    origins: dict[tuple[str, str, int], Origin] = field(default_factory=dict)
    partitions: dict[tuple[str, int], PartitionStats] = field(default_factory=dict)
    isolate: bool = False
    """Apply mapped runs under savepoints, their rows the target refuses as dead letters
    (:mod:`crossfade.sync.refused`): set when the batch failed that way, and in a replay."""

    def stats(self, tp: tuple[str, int]) -> PartitionStats:
        return self.partitions.setdefault(tp, PartitionStats())


class TableSink(Protocol):
    """One target table family's apply, inside the batch transaction."""

    def begin(self, tx: Tx, parts: list[PartitionPlan]) -> None:
        """Before the table's steps of this batch (schema follow-ups, the watermark)."""

    def apply(self, tx: Tx, run: Run) -> Applied:
        """Apply a run of change events (set-based; ``run.replay``: the replay guard)."""
        ...

    def truncate(self, tx: Tx, pos: int, reason: str) -> int:
        """Void the table below position ``pos``; the number of rows deleted."""
        ...
