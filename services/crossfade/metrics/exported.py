"""Which process exports which metric families (``EXPORTED_BY``), and the view of the registry a
process's ``/metrics`` serves (:class:`ComponentView`)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import REGISTRY

from crossfade.metrics.declarations import (
    CAPTURE_BATCH_DURATION,
    CAPTURE_BATCH_SIZE,
    CAPTURE_EVENTS,
    CAPTURE_FENCES,
    CAPTURE_FLUSH_DURATION,
    CAPTURE_HANDLER_CPU,
    CAPTURE_HEARTBEATS,
    CAPTURE_LAST_EVENT_SOURCE_TS,
    CAPTURE_LAST_HEARTBEAT,
    CUTOVER_GATE_EVIDENCE_AGE,
    CUTOVER_GATE_OK,
    DEAD_LETTERED,
    DEAD_LETTERS_OPEN,
    DEAD_LETTERS_UNACKNOWLEDGED,
    DEFERRED,
    DEFERRED_ROWS,
    FILTERED,
    FILTERED_ROWS,
    LOAD_NEXT_WINDOW,
    LOAD_PAUSED,
    PAUSED,
    SLOT_ACTIVE,
    SLOT_RETAINED_WAL,
    SNAPSHOT_ROWS,
    SNAPSHOT_RUNNING,
    SOURCE_ROWS,
    SYNC_ASSIGNED,
    SYNC_BATCH_DURATION,
    SYNC_BATCH_SIZE,
    SYNC_CONSUMER_LAG,
    SYNC_E2E_LAG,
    SYNC_EVENTS_APPLIED,
    SYNC_EVENTS_SKIPPED,
    SYNC_FENCE_LAG,
    SYNC_FENCES,
    SYNC_LAST_APPLIED_SOURCE_TS,
    SYNC_LAST_BATCH_TS,
    SYNC_RESUBSCRIBES,
    SYNC_TABLE_HELD,
    VERIFY_LAST_RUN,
    VERIFY_MISMATCHED,
    VERIFY_PASSED,
)
from crossfade.metrics.readiness import STALLED_TABLES

# -- which process exports what ----------------------------------------------------------------
# Every metric lives in one registry, but a process publishes only the series of the components it
# runs: a sync worker exporting capture's gauges at zero reads, to an alert, as a capture that
# stopped. ``console`` is the console (gates, the ledger's counts, the latest verify, the slot,
# read from the databases); ``verify`` what `crossfade verify --pushgateway` pushes. Families
# not listed (crossfade_ready, errors and retries by component, build info, the process's own)
# are every process's.
EXPORTED_BY: dict[str, tuple[Any, ...]] = {
    "capture": (
        CAPTURE_EVENTS,
        CAPTURE_HEARTBEATS,
        CAPTURE_LAST_HEARTBEAT,
        CAPTURE_LAST_EVENT_SOURCE_TS,
        CAPTURE_FENCES,
        CAPTURE_BATCH_SIZE,
        CAPTURE_BATCH_DURATION,
        CAPTURE_FLUSH_DURATION,
        CAPTURE_HANDLER_CPU,
        SNAPSHOT_ROWS,
        SNAPSHOT_RUNNING,
        SLOT_RETAINED_WAL,
        SLOT_ACTIVE,
        SOURCE_ROWS,
        LOAD_PAUSED,
        LOAD_NEXT_WINDOW,
        PAUSED,
    ),
    "sync": (
        SYNC_EVENTS_APPLIED,
        SYNC_EVENTS_SKIPPED,
        SYNC_BATCH_SIZE,
        SYNC_BATCH_DURATION,
        SYNC_E2E_LAG,
        SYNC_LAST_APPLIED_SOURCE_TS,
        SYNC_LAST_BATCH_TS,
        SYNC_FENCE_LAG,
        SYNC_FENCES,
        SYNC_CONSUMER_LAG,
        SYNC_ASSIGNED,
        SYNC_TABLE_HELD,
        SYNC_RESUBSCRIBES,
        DEAD_LETTERED,
        FILTERED,
        DEFERRED,
        PAUSED,
        STALLED_TABLES,
    ),
    "console": (
        CUTOVER_GATE_OK,
        CUTOVER_GATE_EVIDENCE_AGE,
        DEAD_LETTERS_OPEN,
        DEAD_LETTERS_UNACKNOWLEDGED,
        DEFERRED_ROWS,
        FILTERED_ROWS,
        VERIFY_MISMATCHED,
        VERIFY_LAST_RUN,
        VERIFY_PASSED,
        SLOT_RETAINED_WAL,
        SLOT_ACTIVE,
    ),
    "verify": (VERIFY_MISMATCHED, VERIFY_LAST_RUN, VERIFY_PASSED),
}
OWNERS: dict[str, set[str]] = {}
for _component, _metrics in EXPORTED_BY.items():
    for _m in _metrics:
        for _family in _m.describe():
            OWNERS.setdefault(_family.name, set()).add(_component)


class ComponentView:
    """A read-only view of ``registry`` holding only the families ``components`` export (and
    those every process exports): what a process's ``/metrics`` serves."""

    def __init__(self, components: Iterable[str], registry: Any = REGISTRY) -> None:
        self.components = frozenset(components)
        unknown = self.components - set(EXPORTED_BY)
        if unknown:
            raise ValueError(f"unknown component(s) {sorted(unknown)}")
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        for family in self.registry.collect():
            owners = OWNERS.get(family.name)
            if owners is None or owners & self.components:
                yield family
