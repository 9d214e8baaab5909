"""bench/timeline.py: a CDC run's backlog split by stage at the load's end, and threads' run-queue
waits (the evidence that capture's threads wait for a core rather than for work)."""

from __future__ import annotations

import os
import threading
import time

from bench.timeline import Timeline, _cores, sched_by_role


def _timeline(rows: list[dict]) -> Timeline:
    tl = Timeline(settings=None, source_dsn="", target_dsn="", cpu=dict)
    tl.rows = rows
    return tl


def test_backlog_at_the_load_end_is_split_between_capture_and_sync() -> None:
    # 100 events made during the load; at its end Kafka holds 60 of them (from 1000 to 1060),
    # of which sync applied 50 (from 1000 to 1050)
    rows = [
        {"t": 10.0, "produced": 1000, "applied": 1000, "wal_unsent": 0, "cpu": {"x.cpu": 0.0}},
        {"t": 11.0, "produced": 1030, "applied": 1020, "wal_unsent": 4096, "cpu": {"x.cpu": 0.5}},
        {"t": 12.0, "produced": 1060, "applied": 1050, "wal_unsent": 8192, "cpu": {"x.cpu": 1.5}},
        {"t": 13.0, "produced": 1100, "applied": 1100, "wal_unsent": 0, "cpu": {"x.cpu": 2.0}},
    ]
    tl = _timeline(rows)
    tl.marks["load_end"] = 12.0
    s = tl.summary(events=100, t_start=10.0)
    assert s["at_load_end"]["not_in_kafka"] == 40
    assert s["at_load_end"]["in_kafka_not_applied"] == 10
    assert s["at_load_end"]["wal_unsent_bytes"] == 8192
    per = s["per_second"]
    assert [p["t"] for p in per] == [-1.0, 0.0, 1.0]
    assert [p["produced_per_s"] for p in per] == [30, 30, 40]
    assert [p["applied_per_s"] for p in per] == [20, 30, 50]
    assert [p["cores"]["x.cpu"] for p in per] == [0.5, 1.0, 0.5]


def test_no_summary_without_the_load_end() -> None:
    assert _timeline([{"t": 1.0, "produced": 1, "applied": 1, "cpu": {}}]).summary(1, 1.0) == {}


def test_a_busy_thread_is_counted_on_cpu_under_its_role() -> None:
    stop, named = threading.Event(), threading.Event()

    def spin() -> None:
        # the kernel's thread name (Python 3.11 does not set it from Thread's name)
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as f:
            f.write("spinner")
        named.set()
        while not stop.is_set():
            pass

    t = threading.Thread(target=spin, name="spinner")
    t.start()
    named.wait(5)
    try:
        before = sched_by_role(os.getpid(), (("spin", ("spinner",)),))
        time.sleep(0.3)
        after = sched_by_role(os.getpid(), (("spin", ("spinner",)),))
    finally:
        stop.set()
        t.join()
    # the spinning thread ran (on a CPU or waiting for one: 2 shared cores) most of the 0.3 s
    busy = (after["spin.cpu"] + after["spin.runq"]) - (before["spin.cpu"] + before["spin.runq"])
    assert busy > 0.15
    assert "other.cpu" in after  # the main thread, not named by any role


def test_cores_line_pairs_cpu_with_run_queue_and_drops_idle_roles() -> None:
    line = _cores({"run.jit.cpu": 0.07, "run.jit.runq": 0.91, "run.gc.cpu": 0.0, "broker": 0.1})
    assert line == "broker=0.10 run.jit=0.07/0.91"
