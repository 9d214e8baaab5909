"""Sync's consumer heartbeats at least every third of its session timeout (Kafka's rule). The
default session timeout (``auto``) is 2 s on crossfade's embedded broker, known by its cluster id
(Tansu answers a join after half of it: 1 s), and Kafka's minimum, 6 s, on any other broker."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from crossfade.config import Settings, SyncConfig
from crossfade.embedded.broker import CLUSTER_ID
from crossfade.events.kafka import Admin
from crossfade.sync import consumer as consumer_mod
from crossfade.sync.worker import SyncWorker

KAFKA_CLUSTER_ID = "MkU3OEVBNTcwNTJENDM2Qk"  # what Apache Kafka's metadata reports: a base64 UUID


def _settings(**sync: Any) -> Settings:
    return Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.t"],
        sync=sync,
    )


def _config(
    monkeypatch: pytest.MonkeyPatch, cluster_id: str | None = KAFKA_CLUSTER_ID, **sync: Any
) -> dict[str, Any]:
    """The consumer configuration of a worker on a broker that reports ``cluster_id``, and
    ``asked``: how often the broker's cluster id was read."""
    seen: dict[str, Any] = {"asked": 0}

    def cluster(self: Admin, timeout: float = 5.0) -> str | None:
        seen["asked"] += 1
        return cluster_id

    monkeypatch.setattr(Admin, "cluster_id", cluster)
    monkeypatch.setattr(consumer_mod, "Consumer", lambda conf: seen.update(conf) or object())
    group = SyncWorker(_settings(**sync)).group
    group.new_consumer()
    group.new_consumer()  # a re-subscribe's: the broker is asked once per member
    return seen


def test_default_on_kafka_is_kafkas_minimum_with_a_beat_every_third(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf = _config(monkeypatch)
    assert conf["session.timeout.ms"] == 6000
    assert conf["heartbeat.interval.ms"] == 2000
    assert conf["asked"] == 1


def test_default_on_the_embedded_broker_is_two_seconds_a_one_second_join(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf = _config(monkeypatch, cluster_id=CLUSTER_ID)
    assert conf["session.timeout.ms"] == 2000
    assert conf["heartbeat.interval.ms"] == 666
    assert conf["asked"] == 1


def test_a_broker_that_does_not_say_is_taken_for_kafka(monkeypatch: pytest.MonkeyPatch) -> None:
    conf = _config(monkeypatch, cluster_id=None)
    assert conf["session.timeout.ms"] == 6000


@pytest.mark.parametrize(("session", "beat"), [(9000, 3000), (10_000, 3000), (45_000, 3000)])
def test_a_longer_session_keeps_librdkafkas_three_second_beat(
    monkeypatch: pytest.MonkeyPatch, session: int, beat: int
) -> None:
    conf = _config(monkeypatch, session_timeout_ms=session)
    assert conf["session.timeout.ms"] == session
    assert conf["heartbeat.interval.ms"] == beat
    assert conf["asked"] == 0  # a value set is used as it is, on any broker


def test_two_seconds_may_be_set_for_any_broker_but_not_less(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf = _config(monkeypatch, session_timeout_ms=2000)
    assert conf["session.timeout.ms"] == 2000
    assert conf["asked"] == 0
    with pytest.raises(ValidationError):
        SyncConfig(session_timeout_ms=1999)


def test_the_join_watch_keeps_its_twelve_seconds_under_a_short_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The wedge verdicts (deleting the group, a new consumer) were measured at 6 s and up; a
    2 s session must not make them four times as quick."""
    monkeypatch.setattr(Admin, "cluster_id", lambda self, timeout=5.0: CLUSTER_ID)
    for sync in ({}, {"session_timeout_ms": 2000}):
        assert SyncWorker(_settings(**sync)).group.join_watch.limit_s == 12
    assert SyncWorker(_settings(session_timeout_ms=10_000)).group.join_watch.limit_s == 20


def test_the_session_timeout_for_people() -> None:
    assert SyncConfig(session_timeout_ms=10_000).session_timeout_text() == "10000 ms"
    assert SyncConfig().session_timeout_text() == (
        "auto: 2000 ms on the embedded broker, 6000 ms elsewhere"
    )
