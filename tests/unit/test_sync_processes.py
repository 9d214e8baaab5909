"""``sync.processes`` (crossfade.ops.children): how many, a child never starts children, the
parent's exit code from a failing child, and the merge of the children's /metrics."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from crossfade import metrics
from crossfade.config.settings import SyncConfig
from crossfade.ops import children as kids
from crossfade.ops.runner import Runner, exit_code
from tests.conftest import offline_settings


def test_auto_is_the_usable_cpus_at_most_the_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    assert SyncConfig().processes == 1  # auto is opt-in: see SyncConfig.processes
    assert kids.resolve_processes("auto", partitions=4, cpus=2) == 2
    assert kids.resolve_processes("auto", partitions=4, cpus=8) == 4
    assert kids.resolve_processes("auto", partitions=1, cpus=8) == 1
    assert kids.resolve_processes(3, partitions=4, cpus=1) == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2})
    assert kids.resolve_processes("auto", partitions=8) == 3


def _settings(processes: int | str) -> object:
    s = offline_settings()
    return s.model_copy(update={"sync": s.sync.model_copy(update={"processes": processes})})


def test_run_always_uses_children_sync_from_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(kids.CHILD_ENV, raising=False)
    assert kids.children_to_start(_settings(1), with_capture=True) == 1  # type: ignore[arg-type]
    assert kids.children_to_start(_settings(1), with_capture=False) == 0  # type: ignore[arg-type]
    assert kids.children_to_start(_settings(3), with_capture=False) == 3  # type: ignore[arg-type]


def test_a_child_never_starts_children(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kids.CHILD_ENV, "sync-2")
    for n in (1, 3, "auto"):
        assert kids.children_to_start(_settings(n), with_capture=True) == 0  # type: ignore[arg-type]
        assert kids.children_to_start(_settings(n), with_capture=False) == 0  # type: ignore[arg-type]


def test_a_child_is_started_marked_and_told_its_parent(tmp_path: Path) -> None:
    out = tmp_path / "env"
    code = (
        "import os, pathlib; pathlib.Path(os.environ['OUT']).write_text("
        f"os.environ['{kids.CHILD_ENV}'] + ' ' + os.environ['{kids.PARENT_ENV}'])"
    )
    os.environ["OUT"] = str(out)
    try:
        c = kids.SyncChild("sync-2", [sys.executable, "-c", code], tmp_path / "port")
        c.start()
        c.run()  # exit 0 while not stopping: a failure too
    except kids.ChildFailed as exc:
        assert exc.exit_code == 1
    finally:
        del os.environ["OUT"]
    assert out.read_text() == f"sync-2 {os.getpid()}"


def _children(tmp_path: Path, *codes: str) -> tuple[Runner, list[kids.SyncChild]]:
    runner = Runner()
    made = []
    for i, code in enumerate(codes, 1):
        c = kids.SyncChild(f"sync-{i}", [sys.executable, "-c", code], tmp_path / f"{i}.port")
        c.start()
        runner.add(c.name, c.run, c.stop)
        made.append(c)
    return runner, made


SLEEPER = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); time.sleep(3600)"


def test_the_first_failing_child_gives_the_exit_code_and_stops_the_others(tmp_path: Path) -> None:
    runner, (sleeper, failing) = _children(
        tmp_path, SLEEPER, "import time, sys; time.sleep(1); sys.exit(3)"
    )
    runner.start()
    with pytest.raises(kids.ChildFailed) as err:
        runner.wait()
    assert exit_code(err.value) == 3
    assert "sync-2" in str(err.value) and "exited with code 3" in str(err.value)
    assert sleeper.popen is not None and sleeper.popen.poll() == 0  # stopped by its SIGTERM


def test_a_child_killed_by_a_signal_gives_128_plus_it(tmp_path: Path) -> None:
    runner, (sleeper, victim) = _children(tmp_path, SLEEPER, SLEEPER)
    runner.start()
    time.sleep(0.5)
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    with pytest.raises(kids.ChildFailed) as err:
        runner.wait()
    assert exit_code(err.value) == 128 + signal.SIGKILL
    assert "killed by SIGKILL" in str(err.value)


def test_stopping_the_parent_stops_every_child_cleanly(tmp_path: Path) -> None:
    runner, made = _children(tmp_path, SLEEPER, SLEEPER)
    runner.start()
    time.sleep(0.5)
    runner.stop()
    runner.wait()  # no error: each child exited 0 after its SIGTERM
    assert [c.popen.poll() for c in made if c.popen] == [0, 0]


def test_a_child_still_starting_ended_by_the_stops_sigterm_stopped_cleanly(tmp_path: Path) -> None:
    """A child that had not installed its handlers yet dies of the SIGTERM the parent forwards:
    that is the stop, not a failure (``crossfade run`` stopped at its start said a sync process
    was "killed by SIGTERM ... out of memory?")."""
    starting = "import time; time.sleep(3600)"  # SIGTERM's default action ends it
    runner, made = _children(tmp_path, starting, starting)
    children = kids.SyncChildren(0, [])
    children.children = made
    runner.start()
    time.sleep(0.5)
    runner.stop()
    runner.wait()
    children.check_stopped()  # no error
    assert [c.popen.poll() for c in made if c.popen] == [-signal.SIGTERM] * 2


def test_a_child_failing_while_stopping_is_the_exit_code(tmp_path: Path) -> None:
    unclean = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(4)); time.sleep(3600)"
    runner, made = _children(tmp_path, SLEEPER, unclean)
    children = kids.SyncChildren(0, [])
    children.children = made
    runner.start()
    time.sleep(0.5)
    runner.stop()
    runner.wait()
    with pytest.raises(kids.ChildFailed) as err:
        children.check_stopped()
    assert exit_code(err.value) == 4


# -- the merge ------------------------------------------------------------------------------

PARENT = """\
# TYPE crossfade_capture_events_total counter
crossfade_capture_events_total{table="public.t",op="insert"} 5.0
# TYPE crossfade_errors_total counter
crossfade_errors_total{component="capture",kind="transient"} 1.0
# TYPE crossfade_ready gauge
crossfade_ready{component="capture"} 1.0
crossfade_ready{component="sync"} 1.0
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes 100.0
"""


def _child(
    applied: float, assigned: float, lag: float, le1: float, ready: float, rss: float
) -> str:
    return f"""\
# TYPE crossfade_sync_events_applied_total counter
crossfade_sync_events_applied_total{{table="public.t",op="upsert"}} {applied}
# TYPE crossfade_errors_total counter
crossfade_errors_total{{component="sync",kind="transient"}} 2.0
# TYPE crossfade_sync_assigned_partitions gauge
crossfade_sync_assigned_partitions {assigned}
# TYPE crossfade_sync_end_to_end_lag_seconds gauge
crossfade_sync_end_to_end_lag_seconds{{table="public.t"}} {lag}
# TYPE crossfade_sync_batch_duration_seconds histogram
crossfade_sync_batch_duration_seconds_bucket{{le="1.0"}} {le1}
crossfade_sync_batch_duration_seconds_bucket{{le="+Inf"}} 4.0
crossfade_sync_batch_duration_seconds_count 4.0
crossfade_sync_batch_duration_seconds_sum 2.5
# TYPE crossfade_ready gauge
crossfade_ready{{component="sync"}} {ready}
# TYPE process_resident_memory_bytes gauge
process_resident_memory_bytes {rss}
"""


def _values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_merge_sums_counters_and_histograms_and_combines_gauges_by_rule() -> None:
    from prometheus_client import generate_latest

    class _View:
        def __init__(self, fams: list[object]) -> None:
            self.fams = fams

        def collect(self) -> list[object]:
            return self.fams

    texts = [PARENT, _child(10, 2, 3.0, 1, 0, 300), _child(7, 1, 9.0, 3, 0, 200)]
    merged = _values(generate_latest(_View(kids.merge(texts))).decode())  # type: ignore[arg-type]

    def v(name: str, **labels: str) -> float:
        return merged[(name, tuple(sorted(labels.items())))]

    assert v("crossfade_sync_events_applied_total", table="public.t", op="upsert") == 17
    assert v("crossfade_capture_events_total", table="public.t", op="insert") == 5
    assert v("crossfade_errors_total", component="sync", kind="transient") == 4
    assert v("crossfade_errors_total", component="capture", kind="transient") == 1
    assert v("crossfade_sync_batch_duration_seconds_bucket", le="1.0") == 4
    assert v("crossfade_sync_batch_duration_seconds_count") == 8
    assert v("crossfade_sync_batch_duration_seconds_sum") == 5
    assert v("crossfade_sync_assigned_partitions") == 3  # summed
    assert v("crossfade_sync_end_to_end_lag_seconds", table="public.t") == 9  # the largest
    assert v("process_resident_memory_bytes") == 600  # the whole service's
    # the parent's readiness (it combines the children's checks) wins over a child's 0
    assert v("crossfade_ready", component="sync") == 1


def test_every_sync_gauge_has_a_rule() -> None:
    gauges = {
        f.name for m in metrics.EXPORTED_BY["sync"] for f in m.describe() if f.type == "gauge"
    }
    assert gauges and gauges <= set(kids.GAUGE_RULES), gauges - set(kids.GAUGE_RULES)


def test_a_childs_log_lines_carry_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from crossfade.ops import logs

    def record(thread: str) -> logging.LogRecord:
        r = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
        r.threadName = thread
        return r

    monkeypatch.setattr(logs, "_PROCESS", [])
    assert logs.worker_of(record("MainThread")) is None
    logs.set_process_name("sync-2")
    assert logs.worker_of(record("MainThread")) == "sync-2"
    assert logs.worker_of(record("sync-1")) == "sync-2/sync-1"  # its second worker thread
    assert '"worker": "sync-2"' in logs.JsonFormatter().format(record("ops-http"))
    assert "[sync-2] hello" in logs.RedactingFormatter("%(message)s").format(record("x"))


def test_sigcont_on_the_parent_resumes_a_stopped_child() -> None:
    children = kids.SyncChildren(1, [sys.executable, "-c", SLEEPER])
    old = signal.getsignal(signal.SIGCONT)
    try:
        children.start(Runner())
        (child,) = children.children
        assert child.pid is not None
        os.kill(child.pid, signal.SIGSTOP)
        time.sleep(0.3)
        assert psutil.Process(child.pid).status() == psutil.STATUS_STOPPED
        os.kill(os.getpid(), signal.SIGCONT)
        time.sleep(0.3)
        assert psutil.Process(child.pid).status() != psutil.STATUS_STOPPED
    finally:
        signal.signal(signal.SIGCONT, old)
        for c in children.children:
            c.stop()
            if c.popen is not None:
                c.popen.wait(10)
        children.close()


def test_the_parents_last_line_is_the_failing_childs_own(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "missing.yaml"
    code = f"from crossfade.ops.cli import main; main(['config', 'show', '-c', '{bad}'])"
    runner, (child,) = _children(tmp_path, code)
    runner.start()
    with pytest.raises(kids.ChildFailed) as err:
        runner.wait()
    assert exit_code(err.value) == 2  # a configuration error's
    assert str(err.value).startswith("sync-1: ") and "missing.yaml" in str(err.value), err.value
    # the child does not print it: the command's one line is the parent's
    assert "crossfade: error" not in capfd.readouterr().err
