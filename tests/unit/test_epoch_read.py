"""Reading the broker's epoch: a control topic that does not answer is not "no epoch".

Capture's epoch watch (:mod:`crossfade.capture.epoch_watch`) and its flush stop capture and
re-snapshot the whole source when the broker holds no epoch. A control partition without a
leader for a few seconds (a broker's rolling restart) must not read as that: only a topic seen
missing or a partition seen empty does."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError

from crossfade.capture import epoch_watch
from crossfade.config import KafkaConfig
from crossfade.errors import BrokerUnavailable
from crossfade.events import kafka


class _Msg:
    def __init__(self, code: int) -> None:
        self.code = code

    def error(self) -> Any:
        return KafkaError(self.code)


class _Consumer:
    """A consumer whose partition gives nothing (``answer`` None) or ``answer``'s error."""

    answer: _Msg | None = None

    def __init__(self, conf: dict[str, Any]) -> None:
        pass

    def assign(self, tps: Any) -> None:
        pass

    def poll(self, timeout: float) -> _Msg | None:
        return self.answer

    def close(self) -> None:
        pass


@pytest.fixture
def silent_partition(monkeypatch: pytest.MonkeyPatch) -> type[_Consumer]:
    monkeypatch.setattr(kafka.Admin, "partitions", lambda self, topic, timeout=10.0: 1)
    monkeypatch.setattr(kafka, "Consumer", _Consumer)
    _Consumer.answer = None
    return _Consumer


def test_a_partition_that_does_not_answer_is_unavailable_when_strict(
    silent_partition: type[_Consumer],
) -> None:
    conf = {"bootstrap.servers": "127.0.0.1:1"}
    assert kafka.read_first_record(conf, "cf.__control", timeout=0.3) is None  # as before
    with pytest.raises(BrokerUnavailable, match="neither a record nor its end"):
        kafka.read_first_record(conf, "cf.__control", timeout=0.3, strict=True)


def test_an_empty_partition_is_still_no_epoch_when_strict(
    silent_partition: type[_Consumer],
) -> None:
    silent_partition.answer = _Msg(KafkaError._PARTITION_EOF)
    conf = {"bootstrap.servers": "127.0.0.1:1"}
    assert kafka.current_epoch(conf, "cf.__control", timeout=0.3, strict=True) is None


def test_the_watch_does_not_call_a_silent_control_topic_a_lost_log(
    silent_partition: type[_Consumer],
) -> None:
    cfg = KafkaConfig(bootstrap_servers="127.0.0.1:1", topic_prefix="cf")
    assert epoch_watch.log_replaced(cfg, "e1", timeout=0.3) is None
    silent_partition.answer = _Msg(KafkaError._PARTITION_EOF)  # seen empty: lost
    assert epoch_watch.log_replaced(cfg, "e1", timeout=0.3) == "it holds no epoch now"
