"""A worker stopping mid-rebalance completes its join before leaving, or leaves without
LeaveGroup (GroupMember.finish_join, crossfade.sync.consumer; Tansu elects a member that left mid-join as leader)."""

from __future__ import annotations

from typing import Any

import pytest

from crossfade.config import Settings
from crossfade.sync import consumer as consumer_mod
from crossfade.sync.worker import SyncWorker


def _worker() -> SyncWorker:
    settings = Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.t"],
        sync={"session_timeout_ms": 6000},
    )
    return SyncWorker(settings)


class _Consumer:
    """Polls until the group assigns after ``assign_after`` polls (never when None)."""

    def __init__(self, w: SyncWorker, assign_after: int | None) -> None:
        self.w, self.assign_after, self.polls = w, assign_after, 0

    def poll(self, timeout: float) -> Any:
        self.polls += 1
        if self.polls == self.assign_after:
            self.w.group.on_assign(self, [])  # type: ignore[arg-type]
        return None


def test_in_group_leaves_at_once() -> None:
    w = _worker()
    w.group.on_assign(_Consumer(w, None), [])  # type: ignore[arg-type]
    w.group.consumer = _Consumer(w, None)  # type: ignore[assignment]
    assert w.group.finish_join() is True
    assert w.group.consumer.polls == 0  # type: ignore[attr-defined]


def test_pending_join_is_completed_before_leaving() -> None:
    w = _worker()
    w.group.on_revoke(_Consumer(w, None), [])  # type: ignore[arg-type]  # a rebalance began
    w.stop.set()
    w.group.consumer = _Consumer(w, assign_after=3)  # type: ignore[assignment]
    assert w.group.finish_join() is True
    assert w.group.consumer.polls == 3  # type: ignore[attr-defined]


def test_join_that_never_completes_is_given_up_after_the_session_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]

    def monotonic() -> float:
        clock[0] += 0.2
        return clock[0]

    monkeypatch.setattr(consumer_mod.time, "monotonic", monotonic)
    w = _worker()
    w.stop.set()
    w.group.consumer = _Consumer(w, assign_after=None)  # type: ignore[assignment]
    assert w.group.finish_join() is False
    assert 10 <= clock[0] <= 12  # session timeout (6 s) + 5 s, then given up
