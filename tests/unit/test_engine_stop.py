"""Stopping capture's Debezium engine (:mod:`crossfade.capture.engine_stop`) and the runner's
signals: never from a forked process, never silently slow, never held by a flush at a stop.

``crossfade demo`` stalled minutes in its verify because the mapping workers, forked from the
process running capture, inherited the runner's SIGTERM handler and closed their forked copy of
the JVM (see tests/unit/test_mapped_pool.py for the workers themselves)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crossfade.capture.engine_stop import OUTSIDE, HandlerPhase, close_engine
from crossfade.capture.service import CaptureService, ChangeProducer
from crossfade.config import Settings
from crossfade.errors import CrossfadeError
from crossfade.ops.runner import Runner


class _Engine:
    def __init__(self, takes: float = 0.0) -> None:
        self.takes = takes
        self.closed = 0

    def close(self) -> None:
        time.sleep(self.takes)
        self.closed += 1


def _settings() -> Settings:
    return Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.t"],
    )


def test_capture_closes_its_engine_only_in_its_own_process() -> None:
    cap = CaptureService(_settings())
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


class _Stuck:
    def __init__(self) -> None:
        self.flushes: list[float] = []

    def flush(self, timeout: float) -> int:
        self.flushes.append(timeout)
        time.sleep(min(timeout, 0.05))
        return 3


def test_a_stop_ends_a_flush_waiting_for_kafka_unacknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Debezium's stop waits for the handler (up to task.management.timeout): a flush waiting
    for a broker that does not answer fails the batch at a stop (it is not marked processed, so a
    restart sends it again) instead of holding the stop for its 120 s."""
    from crossfade.capture import service as capture_service

    prod = ChangeProducer(_settings(), object(), {"cf.public.t": 1})  # type: ignore[arg-type]
    stuck = prod.producer = _Stuck()  # type: ignore[assignment]
    monkeypatch.setattr(capture_service, "current_epoch", lambda *_a, **_k: None)
    prod.stopping = threading.Event()
    prod.stopping.set()
    with pytest.raises(CrossfadeError) as err:
        prod.flush(timeout=120)
    assert "capture stopped while 3 events awaited Kafka" in str(err.value)
    assert len(stuck.flushes) == 1  # one slice of waiting, not the whole timeout
    assert "waiting for Kafka to acknowledge 3 change events" in prod.phase.what


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
