"""Stopping Debezium's engine: only in the process that runs it, and never silently slow.

``engine.close()`` returns once Debezium stopped its source task. Debezium runs that stop on the
same thread pool as the record polling (``AsyncEmbeddedEngine.stopSourceTasks``), so while
crossfade's handler holds a batch (waiting for Kafka's acknowledgements, a pause, a load window)
the close waits for the handler, up to Debezium's ``task.management.timeout`` (40 s), then gives up
on the task ("Stopping of the tasks was interrupted") and waits for its executors (60 s more).
:class:`HandlerPhase` says where the handler is; :func:`close_engine` logs a WARNING naming it when
the close takes longer than :data:`WARN_AFTER_S`, and again every :data:`WARN_EVERY_S`.

A process forked from capture's (verify's mapping workers in ``crossfade demo``) holds a copy of
the JVM without any of its threads: a close there waits out every one of those timeouts for
nothing (it stalled the demo's verify for minutes). :func:`close_engine` does not touch the engine
outside the process that started it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

WARN_AFTER_S = 10.0
WARN_EVERY_S = 30.0

OUTSIDE = (
    "outside crossfade's handler: Debezium is stopping its source task itself "
    "(up to task.management.timeout, 40 s by default)"
)


class HandlerPhase:
    """What capture's Debezium handler is doing now (set by the handler's thread, read by the
    stop's watch); plain attribute writes, a few per batch."""

    def __init__(self) -> None:
        self.what = OUTSIDE
        self.since = time.monotonic()

    def enter(self, what: str) -> None:
        self.what, self.since = what, time.monotonic()

    def leave(self) -> None:
        self.enter(OUTSIDE)

    @contextmanager
    def inside(self, what: str) -> Iterator[None]:
        """The handler's call: ``what`` until it enters another phase, outside after it."""
        self.enter(what)
        try:
            yield
        finally:
            self.leave()

    def describe(self) -> str:
        return f"{self.what} (for {time.monotonic() - self.since:.0f} s)"


def close_engine(
    engine: Any,
    phase: HandlerPhase | None,
    owner_pid: int,
    warn_after: float = WARN_AFTER_S,
    warn_every: float = WARN_EVERY_S,
) -> bool:
    """Close Debezium's engine, warning while the close takes long; False (and nothing done)
    in a process other than ``owner_pid``, the one that started the engine."""
    if os.getpid() != owner_pid:
        log.debug(
            "not closing Debezium's engine in pid %d: it runs in pid %d", os.getpid(), owner_pid
        )
        return False
    done = threading.Event()
    t0 = time.monotonic()
    phase = phase or HandlerPhase()

    def watch() -> None:
        wait = warn_after
        while not done.wait(wait):
            log.warning(
                "capture: Debezium's engine has not stopped after %.0f s; its handler is %s",
                time.monotonic() - t0,
                phase.describe(),
            )
            wait = warn_every

    threading.Thread(target=watch, name="capture-stop-watch", daemon=True).start()
    try:
        engine.close()
    finally:
        done.set()
    took = time.monotonic() - t0
    if took >= warn_after:
        log.warning("capture: Debezium's engine stopped after %.0f s", took)
    return True
