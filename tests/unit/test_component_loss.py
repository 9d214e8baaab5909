"""What crossfade makes of a component gone under it (issue 21), without the stack: capture
waiting for deliveries to a broker that restarted empty, and a database that cannot take
connections yet. The stack tests are tests/integration/test_fault_components.py."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from crossfade import db as crossfade_db
from crossfade.capture import epoch_watch
from crossfade.capture.epoch_watch import EpochWatch
from crossfade.capture.service import ChangeProducer
from crossfade.config import DatabaseConfig
from crossfade.errors import (
    BrokerDataLost,
    BrokerUnavailable,
    CrossfadeError,
    DatabaseUnavailable,
    PreflightError,
)
from tests.conftest import offline_settings


class _Stuck:
    """A producer whose deliveries never come (the topics went with the broker's log)."""

    def __init__(self) -> None:
        self.flushes: list[float] = []

    def flush(self, timeout: float) -> int:
        self.flushes.append(timeout)
        time.sleep(min(timeout, 0.05))
        return 3


def _producer(monkeypatch: pytest.MonkeyPatch, epoch_now: Any) -> tuple[ChangeProducer, _Stuck]:
    prod = ChangeProducer(offline_settings(), object(), {"cf.public.t": 1})  # type: ignore[arg-type]
    prod.epoch = "e1"
    stuck = _Stuck()
    prod.producer = stuck  # type: ignore[assignment]

    def current_epoch(*_a: Any, **_k: Any) -> str | None:
        if isinstance(epoch_now, Exception):
            raise epoch_now
        return epoch_now

    monkeypatch.setattr(epoch_watch, "current_epoch", current_epoch)
    return prod, stuck


@pytest.mark.parametrize(("now", "why"), [(None, "holds no epoch"), ("e2", "epoch is e2")])
def test_capture_stops_at_once_when_the_broker_lost_its_log(
    monkeypatch: pytest.MonkeyPatch, now: str | None, why: str
) -> None:
    prod, stuck = _producer(monkeypatch, now)
    with pytest.raises(BrokerDataLost) as err:
        prod.flush(timeout=120)
    assert why in str(err.value) and "restart capture" in str(err.value)
    assert sum(stuck.flushes) <= 5.0  # one slice of waiting, not the whole timeout


def test_capture_keeps_waiting_while_the_epoch_is_ours_or_unreadable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for now in ("e1", BrokerUnavailable("no answer")):
        prod, stuck = _producer(monkeypatch, now)
        with pytest.raises(BrokerUnavailable) as err:
            prod.flush(timeout=1)
        assert not isinstance(err.value, BrokerDataLost)
        assert "not acknowledged by Kafka within 1 s" in str(err.value)
        assert len(stuck.flushes) >= 3


def test_a_stop_ends_a_flush_waiting_for_kafka_unacknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Debezium's stop waits for the handler (up to task.management.timeout): a flush waiting
    for a broker that does not answer fails its batch at a stop (not marked processed, so a
    restart sends it again) instead of holding the stop for its 120 s
    (:mod:`crossfade.capture.engine_stop`)."""
    prod, stuck = _producer(monkeypatch, "e1")
    prod.stopping = threading.Event()
    prod.stopping.set()
    with pytest.raises(CrossfadeError) as err:
        prod.flush(timeout=120)
    assert "capture stopped while 3 events awaited Kafka" in str(err.value)
    assert len(stuck.flushes) == 1  # one slice of waiting, not the whole timeout
    assert "waiting for Kafka to acknowledge 3 change events" in prod.phase.what


def _watch(monkeypatch: pytest.MonkeyPatch, looks: list[Any]) -> tuple[EpochWatch, list[int]]:
    """An epoch watch of capture's epoch e1 whose looks answer ``looks`` in turn (the last one
    again after), looking every 10 ms; the list counts the calls of its ``on_lost``."""
    answers = iter(looks)
    last: list[Any] = [None]

    def current_epoch(*_a: Any, **_k: Any) -> str | None:
        last[0] = next(answers, last[0])
        if isinstance(last[0], Exception):
            raise last[0]
        return last[0]

    monkeypatch.setattr(epoch_watch, "current_epoch", current_epoch)
    lost: list[int] = []
    watch = EpochWatch(
        offline_settings().kafka, "e1", threading.Event(), lambda: lost.append(1), 0.01
    )
    return watch, lost


@pytest.mark.parametrize(("now", "why"), [(None, "holds no epoch"), ("e2", "epoch is e2")])
def test_capture_notices_a_lost_epoch_with_nothing_outstanding(
    monkeypatch: pytest.MonkeyPatch, now: str | None, why: str
) -> None:
    """No delivery waits (no change flows, or the broker reset right after capture created its
    epoch): the watch finds the epoch gone on two looks in a row and stops capture."""
    watch, lost = _watch(monkeypatch, ["e1", now, now])
    watch.start()
    wait = time.monotonic() + 5
    while not lost and time.monotonic() < wait:
        time.sleep(0.01)
    assert lost == [1]
    assert isinstance(watch.error, BrokerDataLost)
    assert why in str(watch.error) and "restart capture" in str(watch.error)
    watch.stopping.set()


def test_the_epoch_watch_needs_two_looks_and_ignores_an_unreadable_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One look without the epoch (a slow read of the control topic) then ours again, or a
    broker that does not answer: capture goes on."""
    watch, lost = _watch(monkeypatch, [None, "e1", None, BrokerUnavailable("no"), None, "e1"])
    seen = None
    for _ in range(6):
        seen = watch.look(seen)
    assert watch.error is None and not lost
    stopped, _ = _watch(monkeypatch, [None])
    stopped.stopping.set()  # capture stops anyway: no error of the watch's
    assert stopped.look(stopped.look(None)) is not None and stopped.error is None


@pytest.mark.parametrize(
    "fatal",
    [
        "the database system is starting up",
        "the database system is not yet accepting connections\nDETAIL:  Consistent recovery "
        "state has not been yet reached.",
        "the database system is shutting down",
    ],
)
def test_a_database_not_accepting_connections_yet_is_waited_for(
    monkeypatch: pytest.MonkeyPatch, fatal: str
) -> None:
    def refuse(*_a: Any, **_k: Any) -> None:
        raise psycopg.OperationalError(
            f'connection to server at "127.0.0.1" failed: FATAL:  {fatal}'
        )

    monkeypatch.setattr(psycopg, "connect", refuse)
    db = DatabaseConfig(dsn="postgresql://u:secret@127.0.0.1:5/db")
    with pytest.raises(DatabaseUnavailable) as err:
        crossfade_db.connect(db, "target")
    assert err.value.kind == "transient" and "secret" not in str(err.value)


def test_a_refused_connection_is_still_a_clear_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: Any, **_k: Any) -> None:
        raise psycopg.OperationalError("connection refused\n\tIs the server running on that host?")

    monkeypatch.setattr(psycopg, "connect", refuse)
    with pytest.raises(PreflightError):
        crossfade_db.connect(DatabaseConfig(dsn="postgresql://u@127.0.0.1:5/db"), "target")


def test_a_failed_load_releases_the_held_handler_before_closing_the_engine() -> None:
    """The COPY load fails (its flush found the broker's log lost): Debezium's close waits for
    the handler, which waits in ``wait_loaded``; the handler must fail its batch at once, not
    after Debezium's task.management.timeout (a 36 s stall seen after a broker reset)."""
    from crossfade.capture.initial_load import LoadGate

    class _Failing:
        def run(self) -> None:
            raise BrokerDataLost("the broker lost its log while capture ran", "restart capture")

    closed = threading.Event()
    gate = LoadGate(_Failing(), on_error=lambda: closed.wait(3))  # type: ignore[arg-type]
    t0 = time.monotonic()
    with pytest.raises(BrokerDataLost):
        gate.wait_loaded(threading.Event())
    closed.set()
    assert time.monotonic() - t0 < 2
