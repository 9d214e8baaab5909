"""A record from another broker epoch stops the batch (SyncWorker._foreign_epoch): capture's
first header checked without header_in, any other layout through it."""

from __future__ import annotations

from typing import Any

import pytest
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


def test_a_dead_epochs_record_is_passed_over_at_its_place() -> None:
    from crossfade.sync.dead_epoch import pass_over

    ours = _msg([(EPOCH_HEADER, b"e2"), (POSITION_HEADER, b"5")])
    kc = _msg(None)  # Kafka Connect: no epoch header
    dead = Message(
        topic="cf.public.t", partition=1, offset=7, value=b"x", headers=[(EPOCH_HEADER, b"e1")]
    )
    out = pass_over([ours, dead, kc], "e2")
    assert out[0] is ours and out[2] is kc
    assert (out[1].topic(), out[1].partition(), out[1].offset()) == ("cf.public.t", 1, 7)
    assert out[1].value() is None and out[1].key() is None  # applied as nothing, like a tombstone


def _process_with(monkeypatch: Any, broker_epoch: str | None) -> tuple[list[Any], list[str]]:
    w = _worker("e2")
    applied: list[Any] = []
    calls: list[str] = []
    monkeypatch.setattr(w.group, "current_epoch", lambda: broker_epoch)
    monkeypatch.setattr(w.group, "reclaim_all", lambda: calls.append("reclaim_all"))
    monkeypatch.setattr(w, "_apply_batch", lambda msgs, isolate=False: applied.append(msgs))
    w._commit = object()  # type: ignore[assignment]
    msgs = [
        Message(
            topic="cf.public.t", partition=0, offset=1, value=b"x", headers=[(EPOCH_HEADER, b"e1")]
        ),
        Message(
            topic="cf.public.t", partition=0, offset=2, value=b"y", headers=[(EPOCH_HEADER, b"e2")]
        ),
    ]
    w._process(msgs)
    return applied, calls


def test_the_same_log_passes_a_dead_epochs_record_over(monkeypatch: Any) -> None:
    applied, calls = _process_with(monkeypatch, "e2")  # the broker still holds the worker's epoch
    assert calls == []
    (batch,) = applied
    assert [m.offset() for m in batch] == [1, 2]  # the leftover keeps its place
    assert batch[0].value() is None and batch[1].value() == b"y"


@pytest.mark.parametrize("broker", ["e3", None])
def test_a_replaced_or_unreadable_log_is_still_replayed(
    monkeypatch: Any, broker: str | None
) -> None:
    applied, calls = _process_with(monkeypatch, broker)
    assert calls == ["reclaim_all"] and applied == []
