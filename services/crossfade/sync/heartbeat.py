"""What a sync worker reports in ``<bookkeeping>.heartbeats``: the ``sync_alive`` gate's evidence.

Partitions held, consumer lag and how long it has stayed above its low (a worker whose lag never
comes back down is alive but not keeping up), batches, the epoch, the pause, held children and
the lag per topic the console charts. Built here from what the worker knows; written by
:func:`crossfade.target.store.write_heartbeat`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from crossfade.sync.stats import SyncStats, lag_by_topic
from crossfade.target.store import Heartbeat


class LagLow:
    """The lowest consumer lag seen, and since when (monotonic for the age, wall for the gate)."""

    def __init__(self) -> None:
        self.value: int | None = None
        self.at = time.monotonic()
        self.wall: float | None = None

    def see(self, lag: int | None, now: float) -> None:
        if lag is not None and (self.value is None or lag <= self.value):
            self.value, self.at, self.wall = lag, now, time.time()


def sync_heartbeat(
    worker_id: str,
    owner: Iterable[tuple[str, int]],
    lag: dict[tuple[str, int], int],
    low: LagLow,
    stats: SyncStats,
    *,
    unassigned_tables: list[str] | None,
    epoch: str | None,
    paused: bool,
    held: Mapping[str, Iterable[str]],
) -> Heartbeat:
    """The heartbeat of one worker holding ``owner`` with consumer ``lag`` per partition; updates
    ``low`` first (its age is reported)."""
    now = time.monotonic()
    owned = list(owner)
    lags = [lag[tp] for tp in owned if tp in lag]
    total = sum(lags) if lags else (0 if not owned else None)
    low.see(total, now)
    return Heartbeat(
        worker_id,
        "sync",
        partitions=sorted(f"{t}[{p}]" for t, p in owned),
        lag=total,
        lag_low=low.value,
        lag_low_at=datetime.fromtimestamp(low.wall, UTC) if low.wall else None,
        unassigned_tables=unassigned_tables,
        detail={
            "lag_low_age_s": round(now - low.at, 1),
            "batches": stats.batches,
            "last_batch_age_s": round(time.time() - stats.last_batch_at, 1)
            if stats.last_batch_at
            else None,
            "epoch": epoch,
            "paused": paused,
            # tables held back until their parents' snapshot finished -> those parents
            "held": {t: sorted(ps) for t, ps in held.items()},
            # records behind per topic (the console charts it per table)
            "lag_by_topic": lag_by_topic(lag, set(owned)),
        },
    )
