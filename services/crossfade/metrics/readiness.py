"""Scrape-time collectors: the readiness registry (``crossfade_ready``, /readyz) and the stalled
tables the sync workers report (``crossfade_sync_table_stalled``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# -- readiness --------------------------------------------------------------------------------


@dataclass
class Check:
    component: str
    name: str
    fn: Callable[[], bool]


class Readiness(Collector):
    """Named readiness checks registered by the services; also exported as
    ``crossfade_ready{component}`` (1 when all of that component's checks pass) so alerts see it."""

    def __init__(self) -> None:
        self._checks: dict[tuple[str, str], Check] = {}
        self._lock = threading.Lock()

    def register(self, component: str, name: str, fn: Callable[[], bool]) -> None:
        with self._lock:
            self._checks[(component, name)] = Check(component, name, fn)

    def clear(self) -> None:
        with self._lock:
            self._checks.clear()

    def evaluate(self) -> dict[str, dict[str, bool]]:
        with self._lock:
            checks = list(self._checks.values())
        out: dict[str, dict[str, bool]] = {}
        for c in checks:
            try:
                ok = bool(c.fn())
            except Exception as exc:  # noqa: BLE001 - a failing check is "not ready"
                log.debug("readiness check %s/%s failed: %s", c.component, c.name, exc)
                ok = False
            out.setdefault(c.component, {})[c.name] = ok
        return out

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "crossfade_ready",
            "1 when every readiness check of the component passes (what /readyz answers), else 0.",
            labels=["component"],
        )
        for component, checks in sorted(self.evaluate().items()):
            g.add_metric([component], 1.0 if all(checks.values()) else 0.0)
        yield g


READINESS = Readiness()
REGISTRY.register(READINESS)


class StalledTables(Collector):
    """``crossfade_sync_table_stalled{table}``, read from the watched workers at scrape time (a
    worker blocked waiting for the broker or the target still reports what its watch sees)."""

    def __init__(self) -> None:
        self._workers: list[tuple[list[str], Callable[[], Mapping[str, str]]]] = []
        self._lock = threading.Lock()

    def watch(self, tables: list[str], stalled: Callable[[], Mapping[str, str]]) -> None:
        with self._lock:
            self._workers.append((list(tables), stalled))

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "crossfade_sync_table_stalled",
            "1 while the sync worker sees the table stalled: no partition of its topic assigned to "
            "any worker, the topic missing, or no progress while its log grows, for "
            "sync.stall_after_s (the WARNING log says which); else 0.",
            labels=["table"],
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = self._family()
        with self._lock:
            workers = list(self._workers)
        seen: dict[str, bool] = {}
        for tables, fn in workers:
            stalled = fn()
            for t in tables:
                seen[t] = seen.get(t, False) or t in stalled
        for t, bad in sorted(seen.items()):
            g.add_metric([t], 1.0 if bad else 0.0)
        yield g


STALLED_TABLES = StalledTables()
REGISTRY.register(STALLED_TABLES)
