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

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crossfade.errors import CrossfadeError

log = logging.getLogger(__name__)

EXIT_WITHIN_S = 15.0


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


def exit_code(exc: BaseException | None) -> int:
    """The code the CLI exits with after ``exc`` (None: the services stopped cleanly)."""
    if exc is None:
        return 0
    if isinstance(exc, CrossfadeError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 130
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else 1
    return 1


def exit_within(what: str, seconds: float = EXIT_WITHIN_S) -> None:
    """Once the services ended (stopped, or failed: call it while the error propagates): if the
    process still runs ``seconds`` later, something its exit waits for hangs (seen: JPype's exit
    handler waiting for Debezium's Java threads, capture silent after its error and never
    restarted). Then a WARNING, every thread's stack on stderr, and the exit it was going to make.
    A daemon thread; faulthandler's watchdog (no interpreter lock needed) ends it 10 s later if
    even that thread cannot run."""
    code = exit_code(sys.exc_info()[1])
    faulthandler.dump_traceback_later(seconds + 10, exit=True)

    def watch() -> None:
        time.sleep(seconds)
        log.warning(
            "%s has not exited %.0f s after its services ended: something its exit waits for "
            "hangs (the threads' stacks follow on stderr); exiting with code %d now",
            what,
            seconds,
            code,
        )
        faulthandler.dump_traceback(all_threads=True)
        logging.shutdown()
        os._exit(code)

    threading.Thread(target=watch, name="exit-watch", daemon=True).start()
