"""Counters of the sync worker: the live ones of this process, and a batch's per partition."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Protocol

from crossfade.events.model import ChangeEvent

_LSN = attrgetter("lsn")
_TS = attrgetter("source_ts_ms")


class Counts(Protocol):
    """What an apply reports (:class:`crossfade.target.apply.ApplyResult`, a mapped result)."""

    applied: int
    deleted: int
    skipped: int


@dataclass(slots=True)
class SyncStats:
    """Live counters (this process) for progress output and metrics."""

    applied: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    deleted: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    dead_lettered: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    filtered: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    deferred: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    batches: int = 0
    retries: int = 0
    last_batch_at: float = 0.0
    last_source_ts_ms: int = 0

    def count(self, table: str, res: Counts) -> None:
        self.applied[table] += res.applied
        self.deleted[table] += res.deleted
        self.skipped[table] += res.skipped

    def add(self, other: SyncStats) -> None:
        """Add ``other``'s per-table counters (a committed batch's) to these."""
        for name in ("applied", "deleted", "skipped", "dead_lettered", "filtered", "deferred"):
            total: Any = getattr(self, name)
            for table, n in getattr(other, name).items():
                total[table] += n


@dataclass(slots=True)
class PartitionStats:
    """What a batch did on one partition (``<bookkeeping>.table_stats``)."""

    applied: int = 0
    skipped: int = 0
    last_lsn: int = -1
    last_source_ts_ms: int = 0

    def account(self, events: Sequence[ChangeEvent], applied: int, skipped: int) -> None:
        self.applied += applied
        self.skipped += skipped
        if events:  # C-level maxima: this runs over every event of the batch
            self.last_lsn = max(self.last_lsn, max(map(_LSN, events)))
            self.last_source_ts_ms = max(self.last_source_ts_ms, max(map(_TS, events)))


def lag_by_topic(lag: dict[tuple[str, int], int], owned: Any) -> dict[str, int]:
    """Records behind per topic, over the partitions in ``owned`` (a worker's heartbeat)."""
    out: dict[str, int] = {}
    for (topic, partition), n in lag.items():
        if (topic, partition) in owned:
            out[topic] = out.get(topic, 0) + n
    return out
