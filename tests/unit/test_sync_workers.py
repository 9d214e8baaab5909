"""``sync.workers``: several sync workers as threads of one ``crossfade sync`` / ``crossfade run``
process. The CLI starts that many, a SIGTERM stops them all (each finishing what it was doing),
one's fatal error ends the command with its one-line error and exit code; the process has one
readiness for them all, gauges that add up or take the largest instead of overwriting each
other, and log lines naming the worker."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY
from pydantic import ValidationError

from crossfade.config import Settings
from crossfade.metrics import Readiness, StalledTables
from crossfade.metrics.meters import SyncMeter
from crossfade.ops import probes
from crossfade.ops.logs import JsonFormatter, RedactingFormatter
from crossfade.sync.stats import SyncStats
from tests.conftest import offline_settings

REPO = Path(__file__).resolve().parents[2]

# `crossfade sync` with SyncWorker replaced by a stand-in that needs no broker or database: it
# says when it runs (and in which thread), waits to be stopped, then takes a moment (a batch in
# flight) before it says it stopped. FAIL: the worker of that index raises a fatal error once
# every worker runs; else the process sends itself SIGTERM once every worker runs.
_CLI = r"""
import logging, os, signal, sys, threading, time

from crossfade.errors import BrokerDataLost
from crossfade.ops import cli
from crossfade.sync import worker as worker_module

N = int(os.environ["WANT"])
FAIL = int(os.environ.get("FAIL", "-1"))
running = []
lock = threading.Lock()


def say(line):
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class StandIn:
    def __init__(self, settings, **_kw):
        self.stop = threading.Event()
        self.conn = self.consumer = None
        self.owner = {}
        self.stalled_tables = {}
        self.left_in_group = False
        self.meter = None

    def run(self):
        with lock:
            i = len(running)
            running.append(self)
        say(f"running {i} {threading.current_thread().name}")
        logging.getLogger("crossfade.sync.worker").warning("worker %d logs", i)
        while len(running) < N:
            time.sleep(0.01)
        if i == FAIL:
            raise BrokerDataLost("the log of t[0] is gone", "rewind")
        if FAIL < 0 and i == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        if not self.stop.wait(20):
            say(f"never stopped {i}")
            return
        time.sleep(0.3)  # a batch in flight completes
        say(f"stopped {i}")


worker_module.SyncWorker = StandIn
cli.main(["--log-format", "json", "sync"])
"""


def _run_cli(
    tmp_path: Path, workers: int, fail: int | None = None
) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "crossfade.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "source": {"dsn": "postgresql://u@127.0.0.1:1/legacy"},
                "target": {"dsn": "postgresql://u@127.0.0.1:1/target"},
                "kafka": {"bootstrap_servers": "127.0.0.1:1", "partitions": 4},
                "tables": ["public.t"],
                # one process: the stand-in replaces SyncWorker in this process only
                "sync": {"workers": workers, "processes": 1},
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSFADE_")}
    env |= {"CROSSFADE_CONFIG": str(cfg), "WANT": str(workers)}
    if fail is not None:
        env["FAIL"] = str(fail)
    return subprocess.run(
        [sys.executable, "-c", _CLI],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=REPO,
    )


def test_sync_starts_its_workers_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    r = _run_cli(tmp_path, workers=3)
    out = r.stdout.splitlines()
    assert r.returncode == 0, r.stderr
    running = sorted(line.split()[2] for line in out if line.startswith("running"))
    assert running == ["sync-1", "sync-2", "sync-3"], out
    assert sorted(line for line in out if line.startswith("stopped")) == [
        "stopped 0",
        "stopped 1",
        "stopped 2",
    ], (out, r.stderr)
    # each worker's lines name it
    lines = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    workers = sorted(d.get("worker", "-") for d in lines if d["msg"].endswith(" logs"))
    assert workers == ["sync-1", "sync-2", "sync-3"], r.stderr


def test_one_worker_is_thread_sync_as_before(tmp_path: Path) -> None:
    r = _run_cli(tmp_path, workers=1)
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stdout.splitlines() if line.startswith("running")] == [
        "running 0 sync"
    ]
    assert '"worker"' not in r.stderr


def test_one_workers_fatal_error_ends_the_command(tmp_path: Path) -> None:
    r = _run_cli(tmp_path, workers=2, fail=1)
    from crossfade.errors import BrokerDataLost

    assert r.returncode == BrokerDataLost.exit_code, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("crossfade: error: the log of t[0] is gone"), r.stderr
    assert "stopped 0" in r.stdout.splitlines(), (r.stdout, r.stderr)  # the other one stopped


def test_workers_are_bounded() -> None:
    base = offline_settings().model_dump()
    for bad in (0, 17):
        with pytest.raises(ValidationError):
            Settings(**{**base, "sync": {**base["sync"], "workers": bad}})
    assert offline_settings().sync.workers == 1


def test_processes_times_workers_beyond_the_partitions_warn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each sync child runs ``sync.workers`` threads: 2 processes x 2 workers on 2 partitions
    leave two members idle, which neither factor alone shows."""
    from crossfade.ops.children import warn_processes

    base = offline_settings().model_dump()
    kafka = {**base["kafka"], "partitions": 2}
    s = Settings(**{**base, "kafka": kafka, "sync": {**base["sync"], "workers": 2}})
    with caplog.at_level(logging.WARNING):
        warn_processes(s, 2)
    assert any(
        "sync.processes x sync.workers is 4 but each change topic has 2 partitions: 2 worker(s) "
        "will hold none" in r.getMessage()
        for r in caplog.records
    ), caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        warn_processes(s, 1)  # 2 members on 2 partitions: nothing to say
    assert not caplog.records, caplog.text


# -- one readiness for the process's workers ------------------------------------------------


def _stand_in(**kw: Any) -> Any:
    conn = SimpleNamespace(closed=False, broken=False)
    w = SimpleNamespace(
        conn=conn,
        owner={("t", 0): "tok"},
        consumer=object(),
        meter=SimpleNamespace(last_loop=time.monotonic()),
        stalled_tables={},
    )
    for k, v in kw.items():
        setattr(w, k, v)
    return w


def test_ready_when_every_worker_is(monkeypatch: pytest.MonkeyPatch) -> None:
    ready, stalled = Readiness(), StalledTables()
    monkeypatch.setattr(probes, "READINESS", ready)
    monkeypatch.setattr(probes, "STALLED_TABLES", stalled)
    monkeypatch.setattr(probes, "BrokerProbe", lambda _conf: lambda: True)
    a, b = _stand_in(), _stand_in()
    probes.watch_sync([a, b], offline_settings())
    assert all(ready.evaluate()["sync"].values())

    b.conn = None  # one worker's target session is gone
    assert ready.evaluate()["sync"]["target database"] is False
    b.conn = a.conn
    b.meter = SimpleNamespace(last_loop=time.monotonic() - 3600)  # one loop hangs
    assert ready.evaluate()["sync"]["consume loop"] is False
    b.meter = a.meter
    for w in (a, b):  # one worker sees its table stalled
        w.stalled_tables = {"public.t": "no progress"}
        assert ready.evaluate()["sync"]["public.t assigned and progressing"] is False
        sample = next(iter(stalled.collect())).samples[0]
        assert (sample.labels, sample.value) == ({"table": "public.t"}, 1.0)
        w.stalled_tables = {}
    assert ready.evaluate()["sync"]["public.t assigned and progressing"] is True
    # a worker beyond the partitions holds none: the process is still ready
    b.owner = {}
    assert ready.evaluate()["sync"]["partitions assigned"] is True
    a.owner = {}
    assert ready.evaluate()["sync"]["partitions assigned"] is False


# -- gauges of several workers -----------------------------------------------------------------


class _NoPositions:
    def position(self, _tps: Any) -> list[Any]:
        return []


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_assigned_partitions_add_up_over_the_workers() -> None:
    before = _value("crossfade_sync_assigned_partitions")
    a, b = SyncMeter(), SyncMeter()
    a.poll(_NoPositions(), {("t", 0): "x", ("t", 1): "x"}, {}, force=True)
    b.poll(_NoPositions(), {("t", 2): "x"}, {}, force=True)
    assert _value("crossfade_sync_assigned_partitions") - before == 3
    a.poll(_NoPositions(), {("t", 0): "x"}, {}, force=True)  # a rebalance took one from a
    assert _value("crossfade_sync_assigned_partitions") - before == 2
    a.close()
    b.close()
    assert _value("crossfade_sync_assigned_partitions") == before


def test_a_tables_lag_is_the_largest_of_its_workers() -> None:
    table = "public.lag_of_two"
    now = time.time()
    behind, ahead = SyncMeter(), SyncMeter()
    behind.note(table, int((now - 100) * 1000))
    behind.committed(SyncStats(), 1, 0.1)
    ahead.note(table, int((now - 1) * 1000))
    ahead.committed(SyncStats(), 1, 0.1)  # set in turn, the gauge would show ~1 s
    lag = _value("crossfade_sync_end_to_end_lag_seconds", table=table)
    assert 99 < lag < 110
    newest = _value("crossfade_sync_last_applied_source_timestamp_seconds", table=table)
    assert abs(newest - (now - 1)) < 1
    behind.close()  # stopped: only the other one's counts
    ahead.note(table, int((now - 2) * 1000))
    ahead.committed(SyncStats(), 1, 0.1)
    assert _value("crossfade_sync_end_to_end_lag_seconds", table=table) < 10
    ahead.close()


# -- log lines name the worker ----------------------------------------------------------------


def _formatted(thread_name: str) -> tuple[str, dict[str, Any]]:
    out: list[tuple[str, dict[str, Any]]] = []

    def log_one() -> None:
        rec = logging.LogRecord(
            "crossfade.sync.worker", logging.INFO, __file__, 1, "hi %s", ("x",), None
        )
        text = RedactingFormatter("%(levelname)s %(message)s").format(rec)
        out.append((text, json.loads(JsonFormatter().format(rec))))

    t = threading.Thread(target=log_one, name=thread_name)
    t.start()
    t.join()
    return out[0]


@pytest.mark.parametrize(
    ("thread", "worker"),
    [("sync-2", "sync-2"), ("sync-2-watchdog", "sync-2"), ("sync", None), ("sync-watchdog", None)],
)
def test_log_lines_name_the_worker(thread: str, worker: str | None) -> None:
    text, doc = _formatted(thread)
    assert doc.get("worker") == worker
    assert doc["msg"] == "hi x"
    assert text == (f"INFO [{worker}] hi x" if worker else "INFO hi x")
