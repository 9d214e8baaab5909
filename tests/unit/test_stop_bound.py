"""A stop that holds whenever it comes and ends in bounded time.

``crossfade run`` did not exit after a sync process died at load 6-8: capture says it runs
before Debezium's engine is built, the close of an engine not built yet did nothing, and the
engine started after it (tests/integration/test_run_processes.py reproduces it with a delayed JVM
start). :class:`~crossfade.capture.engine_stop.EngineClose` keeps a closed engine from running
and waits out Debezium's refusal while its tasks start; the runner's bound
(``capture.stop_timeout_s``) ends a stop that hangs anyway, in one line."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest

from crossfade.capture.engine_stop import EngineClose, HandlerPhase, StoppedInBatch
from crossfade.capture.handler import batch_handler
from crossfade.errors import CrossfadeError
from crossfade.ops.runner import Runner, StopTimedOut, exit_code


class _Java:
    """A Java engine whose close refuses ``refusals`` times with ``said``, then closes."""

    def __init__(self, refusals: int = 0, said: str = "") -> None:
        self.refusals, self.said, self.closes = refusals, said, 0

    def close(self) -> None:
        self.closes += 1
        if self.closes <= self.refusals:
            raise RuntimeError(self.said)


def test_a_close_before_the_engine_was_built_keeps_it_from_running() -> None:
    closing = EngineClose()
    closing.close()  # the engine is still being built (the JVM starting)
    java = _Java()
    assert not closing.may_run(java)
    assert java.closes == 0


def test_a_close_after_the_build_closes_the_engine() -> None:
    closing, java = EngineClose(), _Java()
    assert closing.may_run(java)
    closing.close()
    assert java.closes == 1


def test_a_close_while_debeziums_tasks_start_is_tried_again_until_it_holds() -> None:
    said = "java.lang.IllegalStateException: Cannot stop engine while tasks are starting, ..."
    closing, java = EngineClose(retry_every=0.001), _Java(refusals=3, said=said)
    assert closing.may_run(java)
    closing.close()
    assert java.closes == 4


def test_an_engine_stopping_already_is_not_closed_again(caplog: pytest.LogCaptureFixture) -> None:
    closing, java = EngineClose(), _Java(refusals=9, said="Engine is already being shutting down.")
    closing.may_run(java)
    with caplog.at_level(logging.WARNING):
        closing.close()
    assert java.closes == 1 and not caplog.records


# -- the handler at a stop ------------------------------------------------------------------


def _handler(stopping: threading.Event, fails: Exception) -> Any:
    def handle(_records: Any) -> None:
        raise fails

    return batch_handler(handle, HandlerPhase(), None, lambda: None, stopping)


def test_a_batch_given_up_at_a_stop_is_a_stop_not_a_failure() -> None:
    stopping = threading.Event()
    stopping.set()
    with pytest.raises(StoppedInBatch) as err:
        _handler(
            stopping, CrossfadeError("capture stopped while 3 events awaited Kafka")
        ).handleJsonBatch([])
    assert "not acknowledged" in str(err.value) and "3 events awaited Kafka" in str(err.value)


def test_a_failure_outside_a_stop_stays_the_failure() -> None:
    with pytest.raises(CrossfadeError) as err:
        _handler(threading.Event(), CrossfadeError("Kafka refused")).handleJsonBatch([])
    assert not isinstance(err.value, StoppedInBatch)


# -- the runner's bound ----------------------------------------------------------------------


def _never_stops(runner: Runner, name: str = "capture") -> threading.Event:
    """A service whose stop blocks and whose run never ends (Debezium's engine that does not
    return); the event releases both at the test's end."""
    release = threading.Event()
    runner.add(name, release.wait, release.wait, lambda: "its handler is stuck (for 9 s)")
    return release


def test_a_stop_that_hangs_ends_at_the_bound_with_one_line_naming_it() -> None:
    runner = Runner(stop_timeout=0.3)
    release = _never_stops(runner)
    runner.start()
    try:
        runner.stop()  # returns although the service's stop blocks
        with pytest.raises(StopTimedOut) as err:
            runner.wait(interval=0.05)
    finally:
        release.set()
    line = str(err.value)
    assert "\n" not in line and exit_code(err.value) == 1
    assert line.startswith("capture did not stop within 0 s of the stop (capture.stop_timeout_s)")
    assert "its handler is stuck" in line and "sent again at the next start" in line


def test_at_the_bound_the_failure_that_began_the_stop_stays_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = Runner(stop_timeout=0.3)
    release = _never_stops(runner)

    def dies() -> None:
        raise CrossfadeError("sync process sync-2 (pid 7) was killed by SIGKILL")

    runner.add("sync-2", dies, lambda: None)
    runner.start()
    try:
        with (
            caplog.at_level(logging.INFO, logger="crossfade.ops.runner"),
            pytest.raises(CrossfadeError) as err,
        ):
            runner.wait(interval=0.05)
    finally:
        release.set()
    assert "killed by SIGKILL" in str(err.value)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("capture did not stop within"), errors
    # the failure itself is the command's last line, not logged again before it
    assert not any("killed by SIGKILL" in r.getMessage() for r in caplog.records)


def test_without_a_bound_the_runner_waits_for_its_services() -> None:
    runner = Runner()  # crossfade sync: its children have their own minute
    release = _never_stops(runner)
    runner.start()
    runner.stop()
    done = threading.Event()

    def wait() -> None:
        runner.wait(interval=0.05)
        done.set()

    threading.Thread(target=wait, daemon=True).start()
    assert not done.wait(0.5)  # still waiting
    release.set()
    assert done.wait(10)
