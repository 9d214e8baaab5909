"""``crossfade pause sync``, as a sync worker obeys it: at heartbeat time it reads
``<bookkeeping>.control`` (:mod:`crossfade.target.store`) and, while sync is paused, pauses
fetching on every partition it is assigned (``Consumer.pause``) and goes on polling.

Why this way: polling keeps the worker in its consumer group (no rebalance, no partition moves,
no session expiry), the heartbeats go on (status and the gate see a live, paused worker), and
the batch in flight when the pause is read completes and commits as usual: nothing is cut
short. librdkafka drops what it had prefetched for a paused partition and, on
``Consumer.resume``, fetches again from the position after the last record it handed over, so
nothing is skipped; and since progress lives in the target (DESIGN decision 1), even a record
fetched twice is applied once.

A rebalance while paused assigns partitions unpaused: :meth:`PauseHook.on_assign`, called from
the assignment callback, pauses them before anything is fetched from them. A target that does
not answer keeps the last state read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg

from crossfade import metrics
from crossfade.target.store import read_control

log = logging.getLogger(__name__)


class PauseHook:
    """Holds one worker's view of ``sync`` pause; :meth:`check` is its one call in the loop."""

    def __init__(self, bookkeeping_schema: str) -> None:
        self.bk = bookkeeping_schema
        self.paused = False
        self.reason: str | None = None
        metrics.PAUSED.labels(component="sync").set(0)

    def check(self, consumer: Any, db: Callable[[], psycopg.Connection]) -> bool:
        """Read the state, apply it to ``consumer``'s assignment; whether sync is paused now."""
        try:
            state = read_control(db(), self.bk)["sync"]
        except psycopg.Error as exc:
            log.debug("pause state not read (keeping %s): %s", self.paused, exc)
            return self.paused
        assigned = consumer.assignment() if consumer is not None else []
        if state.paused:
            if assigned:
                consumer.pause(assigned)  # idempotent: also covers a fresh assignment
            if not self.paused:
                log.warning("sync PAUSED (%s): applying nothing until resumed", state.line())
        elif self.paused:
            if assigned:
                consumer.resume(assigned)
            log.warning("sync resumed by %s", state.by)
        self.paused, self.reason = state.paused, state.reason
        metrics.PAUSED.labels(component="sync").set(1 if state.paused else 0)
        return self.paused

    def on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        """A new assignment while paused: pause it at once (``assign`` resumes partitions)."""
        if self.paused and partitions:
            consumer.pause(partitions)
