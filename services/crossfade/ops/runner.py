"""Run long-lived services (capture, sync) in threads; stop them cleanly on SIGINT/SIGTERM.

The first service that fails stops the others and its error is re-raised, so the process exits
non-zero with that error's one-line message.

The signal handlers stop the services of the process that installed them only. A process forked
from it (verify's mapping workers, when ``crossfade demo`` verifies with capture running) inherits
the handlers but none of the services' threads: a SIGTERM there stopping "capture" closed a forked
copy of Debezium's JVM, which waited out Debezium's timeouts for minutes. There the signal takes
its default action instead.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Service:
    name: str
    run: Callable[[], None]
    stop: Callable[[], None]
    error: BaseException | None = None
    thread: threading.Thread | None = field(default=None, repr=False)


class Runner:
    def __init__(self) -> None:
        self.services: list[Service] = []
        self.stopping = threading.Event()
        self._changed = threading.Event()
        self.first_error: BaseException | None = None
        self._pid = os.getpid()

    def add(self, name: str, run: Callable[[], None], stop: Callable[[], None]) -> Service:
        s = Service(name, run, stop)
        self.services.append(s)
        return s

    def _target(self, s: Service) -> None:
        try:
            s.run()
        except BaseException as exc:  # noqa: BLE001 - reported to the main thread
            s.error = exc
            # an error raised while we were already stopping is shutdown noise, not the cause
            if self.first_error is None and not self.stopping.is_set():
                self.first_error = exc
        finally:
            self._changed.set()

    def start(self) -> None:
        for s in self.services:
            s.thread = threading.Thread(target=self._target, args=(s,), name=s.name, daemon=True)
            s.thread.start()

    def stop(self, *_: Any) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        for s in reversed(self.services):
            try:
                s.stop()
            except Exception as exc:  # noqa: BLE001
                log.warning("stopping %s: %s", s.name, exc)
        self._changed.set()

    def install_signals(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._pid = os.getpid()
            signal.signal(signal.SIGTERM, self._signalled)
            signal.signal(signal.SIGINT, self._signalled)

    def _signalled(self, signum: int, _frame: Any) -> None:
        if os.getpid() == self._pid:
            self.stop()
            return
        # a forked child: not its services; the signal's default action (ends the process)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def wait(self, poll: Callable[[], None] | None = None, interval: float = 0.5) -> None:
        """Block until every service ended; re-raise the first failure."""
        while any(s.thread and s.thread.is_alive() for s in self.services):
            self._changed.wait(interval)
            self._changed.clear()
            failed = [s for s in self.services if s.error is not None]
            if failed and not self.stopping.is_set():
                log.error("%s failed: %s", failed[0].name, failed[0].error)
                self.stop()
            if poll is not None and not self.stopping.is_set():
                poll()
        for s in self.services:
            if s.thread:
                s.thread.join(30)
        if self.first_error is not None and not isinstance(self.first_error, KeyboardInterrupt):
            raise self.first_error
