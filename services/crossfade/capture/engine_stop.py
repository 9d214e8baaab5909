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

A close may come at any moment of the engine's start (:class:`EngineClose`): capture is "running"
(ready, ``capture running`` logged) before its engine is built, which takes the JVM's start and
Debezium's (seconds; more under load). pydbzengine's close did nothing while the Java engine was
not built yet (the engine then started and ran for ever: ``crossfade run`` never exited after a
sync process died, at load 6-8) and gave up for good on Debezium's ``Cannot stop engine while
tasks are starting``. A close before the build now keeps the engine from running, and one while
its tasks start is tried again until they started.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from crossfade.errors import CrossfadeError

log = logging.getLogger(__name__)

WARN_AFTER_S = 10.0
WARN_EVERY_S = 30.0
RETRY_EVERY_S = 0.2
"""How often a close refused while Debezium starts its tasks is tried again."""

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


class StoppedInBatch(CrossfadeError):
    """The handler gave up its batch because capture stops (the batch is not marked processed:
    the next start sends it again). Not a failure: one line at INFO, no trace."""


class EngineClose:
    """A close of Debezium's engine that holds whenever it comes (see the module's docstring).

    The engine's run calls :meth:`may_run` with the Java engine once built, and runs it only on
    True; :meth:`close` closes it if it was handed over, else makes the next :meth:`may_run`
    answer False. One lock orders the two, so a close is never lost between them."""

    def __init__(self, retry_every: float = RETRY_EVERY_S) -> None:
        self._lock = threading.Lock()
        self._java: Any = None
        self.requested = False
        self.retry_every = retry_every

    def may_run(self, java: Any) -> bool:
        with self._lock:
            if self.requested:
                return False
            self._java = java
            return True

    def close(self) -> None:
        with self._lock:
            self.requested = True
            java = self._java
        if java is None:
            log.debug("capture: Debezium's engine closed before it was built: it will not run")
            return
        while True:
            try:
                java.close()
                return
            except Exception as exc:  # noqa: BLE001 - Java's IllegalStateException via JPype
                said = str(exc)
                if "tasks are starting" in said:  # Debezium refuses until its tasks started
                    time.sleep(self.retry_every)
                    continue
                if "already" in said:  # being shut down / been shut down: its own stop or ours
                    log.debug("capture: Debezium's engine is stopping already (%s)", said)
                    return
                log.warning("capture: closing Debezium's engine failed: %s", said)
                return
