"""Sync's consumer heartbeats at least every third of its session timeout (Kafka's rule), and the
default session timeout is Kafka's minimum, 6 s: Tansu answers a join after half of it."""

from __future__ import annotations

from typing import Any

import pytest

from crossfade.config import Settings
from crossfade.sync import consumer as consumer_mod
from crossfade.sync.worker import SyncWorker


def _config(monkeypatch: pytest.MonkeyPatch, **sync: Any) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(consumer_mod, "Consumer", lambda conf: seen.update(conf) or object())
    settings = Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.t"],
        sync=sync,
    )
    SyncWorker(settings).group.new_consumer()
    return seen


def test_default_session_timeout_is_kafkas_minimum_with_a_beat_every_third(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conf = _config(monkeypatch)
    assert conf["session.timeout.ms"] == 6000
    assert conf["heartbeat.interval.ms"] == 2000


@pytest.mark.parametrize(("session", "beat"), [(9000, 3000), (10_000, 3000), (45_000, 3000)])
def test_a_longer_session_keeps_librdkafkas_three_second_beat(
    monkeypatch: pytest.MonkeyPatch, session: int, beat: int
) -> None:
    conf = _config(monkeypatch, session_timeout_ms=session)
    assert conf["session.timeout.ms"] == session
    assert conf["heartbeat.interval.ms"] == beat
