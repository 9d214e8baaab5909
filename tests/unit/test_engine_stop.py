"""Stopping capture's Debezium engine (:mod:`crossfade.capture.engine_stop`) and the runner's
signals: never from a forked process, never silently slow (a flush at a stop:
tests/unit/test_component_loss.py).

``crossfade demo`` stalled minutes in its verify because the mapping workers, forked from the
process running capture, inherited the runner's SIGTERM handler and closed their forked copy of
the JVM (see tests/unit/test_mapped_pool.py for the workers themselves)."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossfade.capture.engine_stop import OUTSIDE, HandlerPhase, close_engine
from crossfade.capture.service import CaptureService
from crossfade.ops.runner import Runner
from tests.conftest import offline_settings


class _Engine:
    def __init__(self, takes: float = 0.0) -> None:
        self.takes = takes
        self.closed = 0

    def close(self) -> None:
        time.sleep(self.takes)
        self.closed += 1


def test_capture_closes_its_engine_only_in_its_own_process() -> None:
    cap = CaptureService(offline_settings())
    engine = cap.engine = _Engine()
    cap._engine_pid = os.getpid() + 1  # as seen from a process forked after the engine started
    cap.stop()
    assert engine.closed == 0 and cap.stopping.is_set()
    cap._engine_pid = os.getpid()
    cap.stop()
    assert engine.closed == 1


def test_a_slow_stop_warns_naming_what_the_handler_waits_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    phase = HandlerPhase()
    phase.enter("waiting for Kafka to acknowledge 12 change events")
    with caplog.at_level(logging.WARNING, logger="crossfade.capture.engine_stop"):
        assert close_engine(_Engine(takes=0.5), phase, os.getpid(), warn_after=0.1, warn_every=10)
    msgs = [r.getMessage() for r in caplog.records]
    assert any(
        "has not stopped after" in m and "waiting for Kafka to acknowledge 12 change events" in m
        for m in msgs
    ), msgs
    assert any("stopped after" in m and "not" not in m for m in msgs), msgs


def test_a_quick_stop_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="crossfade.capture.engine_stop"):
        assert close_engine(_Engine(), None, os.getpid(), warn_after=1.0)
    assert not caplog.records


def test_the_handler_phase_is_outside_after_a_batch_even_a_failed_one() -> None:
    phase = HandlerPhase()
    with pytest.raises(RuntimeError), phase.inside("held by crossfade pause capture"):
        assert phase.what == "held by crossfade pause capture"
        raise RuntimeError
    assert phase.what == OUTSIDE and "for 0 s" in phase.describe()


@pytest.fixture
def signals_restored() -> Iterator[None]:
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_a_forked_child_does_not_stop_the_parents_services(
    tmp_path: Path, signals_restored: None
) -> None:
    stopped = tmp_path / "stopped-in"
    runner = Runner()

    def stop() -> None:
        with stopped.open("a") as f:
            f.write(f"{os.getpid()}\n")

    runner.add("capture", lambda: None, stop)
    runner.install_signals()
    pid = os.fork()
    if pid == 0:  # the child: as a verify worker, it only waits (and never returns to pytest)
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            os._exit(3)
    time.sleep(0.2)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM, status
    assert not stopped.exists(), f"the runner's stop ran in {stopped.read_text()}"
    # in its own process the handler stops the services
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 5
    while not runner.stopping.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stopped.read_text() == f"{os.getpid()}\n"
