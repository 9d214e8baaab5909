"""Run long-lived services (capture, sync) in threads; stop them cleanly on SIGINT/SIGTERM.

The first service that fails stops the others and its error is re-raised, so the process exits
non-zero with that error's one-line message.

A stop is bounded (``stop_timeout``; :func:`crossfade.ops.cli_common.add_capture` sets
``capture.stop_timeout_s`` for every command that runs capture: ``crossfade capture``, ``run``
and ``fallback start``): the services' stops run beside the main thread, which keeps watching,
and a service still running that long after the stop began is left behind: one ERROR line names
it and what it waits on, and the process exits non-zero (with the error that began the stop, else
with one saying what did not stop). Seen: Debezium's engine started after a close that came while
it was being built, and ran on; ``crossfade run`` waited for it for ever.

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
STOP_JOIN_S = 1.0
"""How long :meth:`Runner.stop` waits for the services' stops before it returns (quick ones end
within it; a slow one goes on beside the main thread, which enforces the bound)."""


@dataclass
class Service:
    name: str
    run: Callable[[], None]
    stop: Callable[[], None]
    error: BaseException | None = None
    thread: threading.Thread | None = field(default=None, repr=False)
    waits_on: Callable[[], str] | None = field(default=None, repr=False)
    """What the service's stop waits on, for the line when it outlasts the bound."""


class Runner:
    def __init__(self, stop_timeout: float | None = None) -> None:
        self.services: list[Service] = []
        self.stopping = threading.Event()
        self._changed = threading.Event()
        self.first_error: BaseException | None = None
        self._pid = os.getpid()
        self.stop_timeout = stop_timeout
        self._stop_began: float | None = None

    def add(
        self,
        name: str,
        run: Callable[[], None],
        stop: Callable[[], None],
        waits_on: Callable[[], str] | None = None,
    ) -> Service:
        s = Service(name, run, stop, waits_on=waits_on)
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
        """Stop every service, the last added first, on a thread of its own: a stop that blocks
        (Debezium's close waits for its task) holds neither the main thread's watch nor a
        signal handler."""
        if self.stopping.is_set():
            return
        self._stop_began = time.monotonic()
        self.stopping.set()
        t = threading.Thread(target=self._stop_all, name="runner-stop", daemon=True)
        t.start()
        t.join(STOP_JOIN_S)
        self._changed.set()

    def _stop_all(self) -> None:
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

    def _running(self) -> list[Service]:
        return [s for s in self.services if s.thread and s.thread.is_alive()]

    def wait(self, poll: Callable[[], None] | None = None, interval: float = 0.5) -> None:
        """Block until every service ended, or the stop's bound passed (then raise
        :class:`StopTimedOut` unless a failure began the stop); re-raise the first failure."""
        left: list[Service] = []
        while running := self._running():
            if self._past_bound():
                left = running
                break
            self._changed.wait(interval)
            self._changed.clear()
            failed = [s for s in self.services if s.error is not None]
            if failed and not self.stopping.is_set():
                # the error's own line ends the command; this one says what happens meanwhile
                log.info("%s stopped with an error: stopping the other services", failed[0].name)
                self.stop()
            if poll is not None and not self.stopping.is_set():
                poll()
        for s in self.services:
            if s.thread and s not in left:
                s.thread.join(30)
        left_error = self._left(left) if left else None
        if self.first_error is not None and not isinstance(self.first_error, KeyboardInterrupt):
            if left_error is not None:  # the cause ends the command; this comes before it
                log.error("%s", left_error)
            raise self.first_error
        if left_error is not None:
            raise left_error

    def _past_bound(self) -> bool:
        began, bound = self._stop_began, self.stop_timeout
        return began is not None and bound is not None and time.monotonic() - began >= bound

    def _left(self, left: list[Service]) -> StopTimedOut:
        """The bound passed with ``left`` still running: the error saying so, in one line (every
        thread's stack on stderr with --verbose); the caller exits without them."""
        if log.isEnabledFor(logging.DEBUG):
            faulthandler.dump_traceback(all_threads=True)
        waits = "; ".join(f"{s.name}: {s.waits_on()}" for s in left if s.waits_on is not None)
        return StopTimedOut(
            f"{_names(left)} did not stop within {self.stop_timeout:.0f} s of the stop "
            f"(capture.stop_timeout_s){f' ({waits})' if waits else ''}: exited without it",
            "what it did not finish is sent again at the next start; if it repeats, run with "
            "--verbose for the threads' stacks",
        )


class StopTimedOut(CrossfadeError):
    """A stop outlasted its bound (nothing else failed): the command exits 1 without the services
    that still ran."""


def _names(services: list[Service]) -> str:
    return ", ".join(s.name for s in services)


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
