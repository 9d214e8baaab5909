"""A record from another broker epoch stops the batch (SyncWorker._foreign_epoch): capture's
first header checked without header_in, any other layout through it."""

from __future__ import annotations

from confluent_kafka import Message

from crossfade.config import Settings
from crossfade.events.decode import EPOCH_HEADER, POSITION_HEADER
from crossfade.sync.worker import SyncWorker


def _worker(epoch: str | None) -> SyncWorker:
    settings = Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.t"],
    )
    w = SyncWorker(settings)
    w.group.epoch = epoch
    return w


def _msg(headers: list[tuple[str, bytes | None]] | None) -> Message:
    return Message(topic="cf.public.t", partition=0, offset=1, value=b"x", headers=headers)


def test_records_of_this_epoch_pass_in_any_header_layout() -> None:
    w = _worker("e1")
    msgs = [
        _msg([(EPOCH_HEADER, b"e1"), (POSITION_HEADER, b"5")]),  # capture's layout
        _msg([(POSITION_HEADER, b"5"), (EPOCH_HEADER, b"e1")]),  # epoch not first
        _msg([(EPOCH_HEADER, None)]),  # no value: no epoch to compare
        _msg(None),  # Kafka Connect: no headers at all
    ]
    assert not w._foreign_epoch(msgs)


def test_a_record_of_another_epoch_is_found_wherever_its_header_is() -> None:
    w = _worker("e1")
    assert w._foreign_epoch([_msg([(EPOCH_HEADER, b"e1")]), _msg([(EPOCH_HEADER, b"e2")])])
    assert w._foreign_epoch([_msg([(POSITION_HEADER, b"5"), (EPOCH_HEADER, b"e2")])])
    # the first epoch header counts, as header_in reads it
    assert w._foreign_epoch([_msg([(EPOCH_HEADER, b"e2"), (EPOCH_HEADER, b"e1")])])
    assert not w._foreign_epoch([_msg([(EPOCH_HEADER, b"e1"), (EPOCH_HEADER, b"e2")])])


def test_a_worker_without_an_epoch_yet_refuses_any_epoch() -> None:
    w = _worker(None)
    assert w._foreign_epoch([_msg([(EPOCH_HEADER, b"e1")])])
    assert not w._foreign_epoch([_msg([(POSITION_HEADER, b"5")])])
