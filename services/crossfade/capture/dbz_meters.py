"""Debezium's per-event metrics, which crossfade never reads, taken off capture's path.

Debezium's streaming metrics (``DefaultStreamingChangeEventSourceMetrics``, which
``PostgresConnectorTask`` always builds: no connector property turns them off) call two meters for
every change event: ``CommonEventMeter`` writes the JMX ``LastEvent`` text
(``EventMetadataProvider.toSummaryString``, a new Jackson ``ObjectMapper`` per struct it prints)
and ``StreamingMeter`` hands the event's lag to a publisher thread through a queue. Both first ask
the connector's ``EventMetadataProvider``. Once a task's coordinator has started, capture gives
both meters a provider that answers ``null`` to everything (a ``java.lang.reflect.Proxy`` over
``java.beans.EventHandler``: Java objects only, no Python call per event), so the meters keep
their event counters and skip the text and the lag. The connector's own provider, which its
events and transaction metadata use, is not touched. docs/benchmarks.md ("What Debezium does per
event that crossfade does not use") has the figures: Debezium's thread 43 -> 22 µs/event and
the publisher thread's 5-6 gone.

The JMX attributes ``LastEvent``, ``MilliSecondsBehindSource`` (and its statistics),
``SourceEventPosition``, ``LastTransactionId`` and ``NumberOfCommittedTransactions`` stop moving;
crossfade reads none of them. Capture checks before each batch whether a task's coordinator is a
new one (Debezium restarts a task's coordinator after a retriable error), a field read. A
Debezium whose classes or fields differ leaves its metrics as they are, with one WARNING: metrics
never stop capture.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

_PROVIDER = "io.debezium.pipeline.source.spi.EventMetadataProvider"
_COMMON = ("io.debezium.pipeline.metrics.PipelineMetrics", "commonEventMeter")
_STREAMING = (
    "io.debezium.pipeline.metrics.DefaultStreamingChangeEventSourceMetrics",
    "streamingMeter",
)
_METERS = (
    "io.debezium.pipeline.meters.CommonEventMeter",
    "io.debezium.pipeline.meters.StreamingMeter",
)


def _field(cls: str, name: str) -> Any:
    """Class ``cls``'s declared field ``name``, made accessible (a ``java.lang.reflect.Field``)."""
    import jpype

    field = jpype.JClass(cls).class_.getDeclaredField(name)
    field.setAccessible(True)
    return field


def null_provider() -> Any:
    """An ``EventMetadataProvider`` whose every method returns ``null``, in Java alone."""
    import jpype

    iface = jpype.JClass(_PROVIDER)
    # listenerMethodName names no method of the interface: EventHandler answers null to all
    handler = jpype.JClass("java.beans.EventHandler")(
        jpype.JClass("java.lang.Object")(), "hashCode", None, "crossfadeNoMethod"
    )
    return jpype.JClass("java.lang.reflect.Proxy").newProxyInstance(
        iface.class_.getClassLoader(), [iface.class_], handler
    )


def quiet_metrics(metrics: Any) -> None:
    """Give the per-event meters of ``metrics`` the null provider: the ``CommonEventMeter`` of
    any Debezium pipeline metrics (the streaming ones, and the snapshot ones of
    ``initial_load: debezium``, which write ``LastEvent`` for every snapshot row) and, on
    ``DefaultStreamingChangeEventSourceMetrics``, its ``StreamingMeter``."""
    import jpype

    noop = null_provider()
    pairs = [(_COMMON, _METERS[0])]
    if jpype.JClass(_STREAMING[0]).class_.isInstance(metrics):
        pairs.append((_STREAMING, _METERS[1]))
    for (cls, meter_name), meter_cls in pairs:
        meter = _field(cls, meter_name).get(metrics)
        _field(meter_cls, "metadataProvider").set(meter, noop)


class DebeziumMeters:
    """One engine's tasks: :meth:`attach` the engine once built, :meth:`check` before each batch
    (quiets the metrics of every coordinator not seen yet)."""

    def __init__(self) -> None:
        self._engine: Any = None
        self._tasks: list[Any] = []
        self._quieted: dict[int, Any] = {}  # task index -> the coordinator quieted last
        self._coordinator: Any = None  # BaseSourceTask.coordinator (java.lang.reflect.Field)
        self._metrics: Any = None  # ChangeEventSourceCoordinator.streamingMetrics
        self._snapshot: Any = None  # ChangeEventSourceCoordinator.snapshotMetrics
        self._off = False

    def attach(self, engine: Any) -> None:
        self._engine = engine

    def check(self) -> None:
        if self._off or self._engine is None:
            return
        try:
            self._check()
        except Exception as exc:  # a Debezium unlike 3.6: leave its metrics, never fail capture
            self._off = True
            log.warning(
                "Debezium's per-event streaming metrics stay on (%s: %s); capture goes on "
                "unchanged, at ~20 µs more CPU per event",
                type(exc).__name__,
                exc,
            )

    def _check(self) -> None:
        if not self._tasks:
            field = _field("io.debezium.embedded.async.AsyncEmbeddedEngine", "tasks")
            self._tasks = [task.connectTask() for task in field.get(self._engine)]
            self._coordinator = _field("io.debezium.connector.common.BaseSourceTask", "coordinator")
            coordinator_cls = "io.debezium.pipeline.ChangeEventSourceCoordinator"
            self._metrics = _field(coordinator_cls, "streamingMetrics")
            self._snapshot = _field(coordinator_cls, "snapshotMetrics")
        for i, task in enumerate(self._tasks):
            coordinator = self._coordinator.get(task)
            if coordinator is None or coordinator.equals(self._quieted.get(i)):
                continue
            metrics = self._metrics.get(coordinator)
            if metrics is None:  # the coordinator is starting: the next batch looks again
                continue
            quiet_metrics(metrics)
            snapshot = self._snapshot.get(coordinator)  # set with the streaming ones
            if snapshot is not None:
                quiet_metrics(snapshot)
            self._quieted[i] = coordinator
            log.info(
                "Debezium's per-event JMX metrics (LastEvent, lag) are off for task %d: crossfade "
                "does not read them",
                i,
            )
