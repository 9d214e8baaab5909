"""A sync worker's start (issue 22, the initial load's start -> fence): its consumer group join,
seconds of the broker's own, begins as soon as the target answers and capture's epoch is there,
not after the target tables are set up; the epoch is looked for often while capture starts; a
setup that fails leaves the group as a stopping worker does (GroupMember.leave: no claim, a
pending join completed first); a target out of reach stops sync before any of it. The decoder's
library (cavro, numpy: 0.1-0.2 s of imports) is loaded while the join waits, not in the first batch."""

from __future__ import annotations

import time
from typing import Any

import pytest

from crossfade.errors import CrossfadeError
from crossfade.sync import consumer as consumer_mod
from crossfade.sync import worker as worker_mod
from crossfade.sync.worker import SyncWorker
from tests.unit.test_sync_leave import _worker


def test_the_epoch_is_looked_for_every_tenth_of_a_second_while_capture_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = _worker()
    looks: list[float] = []

    def current_epoch() -> str | None:
        looks.append(time.monotonic())
        return "e1" if len(looks) == 4 else None

    monkeypatch.setattr(w.group, "current_epoch", current_epoch)
    t0 = time.monotonic()
    assert w.group.wait_for_epoch() == "e1"
    # three waits between four looks: 0.6 s (a look once a second took 3 s)
    assert time.monotonic() - t0 < 1.5
    assert all(b - a >= 0.19 for a, b in zip(looks, looks[1:], strict=False))


def test_the_epoch_is_looked_for_once_a_second_after_the_first_five(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [0.0]
    waits: list[float] = []
    w = _worker()
    monkeypatch.setattr(consumer_mod.time, "monotonic", lambda: clock[0])

    def wait(timeout: float) -> bool:
        waits.append(timeout)
        clock[0] += timeout
        return False

    monkeypatch.setattr(w.stop, "wait", wait)
    monkeypatch.setattr(w.group, "current_epoch", lambda: "e1" if clock[0] > 12 else None)
    assert w.group.wait_for_epoch() == "e1"
    assert set(waits) == {0.2, 1.0}
    assert waits.index(1.0) >= 24  # five seconds of looks every 0.2 s first


class _Steps:
    """Records the order of a worker's start: epoch, subscribe, target setup, consume, leave."""

    def __init__(
        self,
        w: SyncWorker,
        monkeypatch: pytest.MonkeyPatch,
        setup_fails: bool = False,
        connect_fails: bool = False,
    ) -> None:
        self.steps: list[str] = []
        self.stopped_at_leave: bool | None = None
        group = w.group
        monkeypatch.setattr(group, "wait_for_epoch", lambda: self.step("epoch", "e1"))
        monkeypatch.setattr(group, "subscribe", lambda: self.step("subscribe"))
        monkeypatch.setattr(group, "leave", self.leave)

        def connect() -> object:
            self.step("connect")
            if connect_fails:
                raise CrossfadeError("cannot connect to the target database")
            return object()

        monkeypatch.setattr(w, "_connect_target", connect)

        def setup() -> None:
            self.step("setup")
            if setup_fails:
                raise CrossfadeError("the target refused the setup")

        monkeypatch.setattr(w, "_db", lambda: None)
        monkeypatch.setattr(w, "_setup_tables", setup)
        monkeypatch.setattr(worker_mod, "preload_reader", lambda: self.step("preload"))
        monkeypatch.setattr(w, "_start_watch", lambda: self.step("watch"))
        monkeypatch.setattr(w, "_consume_loop", lambda: self.step("consume"))
        # no retries: the first failure is the worker's
        monkeypatch.setattr(w, "_with_db_retry", lambda fn: fn())
        self.w = w

    def step(self, name: str, result: Any = None) -> Any:
        self.steps.append(name)
        return result

    def leave(self) -> None:
        self.steps.append("leave")
        self.stopped_at_leave = self.w.stop.is_set()


def test_the_join_begins_before_the_target_is_set_up(monkeypatch: pytest.MonkeyPatch) -> None:
    w = _worker()
    s = _Steps(w, monkeypatch)
    w.run()
    assert s.steps == ["connect", "epoch", "subscribe", "setup", "preload", "watch", "consume"]
    assert w.group.epoch == "e1"


def test_a_failed_setup_leaves_the_group_as_a_stopping_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    w = _worker()
    s = _Steps(w, monkeypatch, setup_fails=True)
    with pytest.raises(CrossfadeError, match="refused the setup"):
        w.run()
    assert s.steps == ["connect", "epoch", "subscribe", "setup", "leave"]
    # stopping: an assignment that completes a pending join claims nothing (on_assign)
    assert s.stopped_at_leave is True


def test_a_target_out_of_reach_stops_sync_before_it_waits_for_capture(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wrong target DSN is one clear line at once (FAULTS 30), not a wait for an epoch that
    may never come."""
    w = _worker()
    s = _Steps(w, monkeypatch, connect_fails=True)
    with pytest.raises(CrossfadeError, match="cannot connect"):
        w.run()
    assert s.steps == ["connect"]


def test_the_decoders_library_is_loaded_by_the_preload() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from crossfade.events.avro_codec import preload_reader; "
        "assert 'cavro' not in sys.modules; preload_reader(); assert 'cavro' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
