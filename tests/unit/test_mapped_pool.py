"""How many worker processes verify maps legacy rows with, and which tables they may map
(:mod:`crossfade.verify.mapped_pool`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from crossfade.verify.mapped_pool import cpu_quota, parallel_safe, usable_cpus


def test_cpu_quota_reads_a_cgroup_limit_and_none_without_one(tmp_path: Path) -> None:
    f = tmp_path / "cpu.max"
    f.write_text("150000 100000\n")
    assert cpu_quota(f) == 1.5
    f.write_text("max 100000\n")
    assert cpu_quota(f) is None
    assert cpu_quota(tmp_path / "absent") is None


def test_usable_cpus_is_the_affinity_capped_by_the_quota_rounded_up() -> None:
    mine = len(os.sched_getaffinity(0))
    assert usable_cpus(quota=float(mine + 8)) == mine
    assert usable_cpus(quota=0.5) == 1
    if mine >= 2:
        assert usable_cpus(quota=1.2) == 2


def mapper(refs: dict[str, list[str]]) -> Any:
    """A stand-in of a Mapper: source -> the tables its one target's references point at."""

    def table(source: str) -> Any:
        rules = {
            f"c{i}": SimpleNamespace(reference=SimpleNamespace(table=t))
            for i, t in enumerate(refs[source])
        }
        rules["plain"] = SimpleNamespace(reference=None)
        return SimpleNamespace(
            targets=[SimpleNamespace(table=f"new.{source}", spec=SimpleNamespace(rules=rules))]
        )

    return SimpleNamespace(table=table)


def test_a_table_whose_rules_check_its_own_target_is_not_mapped_apart() -> None:
    m = mapper({"parents": [], "children": ["new.parents"], "tree": ["new.tree"]})
    assert parallel_safe(m, "parents")
    assert parallel_safe(m, "children")
    assert not parallel_safe(m, "tree")


_SCENARIO = """
import os, signal, sys, time
from types import SimpleNamespace
from crossfade.verify.mapped_pool import mapped_rows

ran, scenario = sys.argv[1], sys.argv[2]

def handler(signum, frame):
    # as crossfade demo's runner: the handler stops services and returns
    with open(ran, "a") as f:
        f.write(f"{os.getpid()}\\n")

signal.signal(signal.SIGTERM, handler)

def run(per_row_s):
    def map_row(source, row, parents):
        if per_row_s:
            time.sleep(per_row_s)
        return row
    return SimpleNamespace(
        mapper=SimpleNamespace(source_keys={"t": ["id"]}, map_row=map_row),
        keys={},
        ready=lambda source, mapped: mapped,
    )

if scenario == "whole":  # several pools, each read to its end
    for _ in range(12):
        rows = [{"id": i} for i in range(3000)]
        assert [m for _, m in mapped_rows(rows, run(0), "t", 2)] == rows
else:  # a read abandoned (verify failed) while the workers are busy
    gen = mapped_rows([{"id": i} for i in range(20000)], run(0.0005), "t", 2)
    next(gen)
    gen.close()
print("done")
"""


def _scenario(tmp_path: Path, scenario: str) -> Path:
    """Run a scenario of :data:`_SCENARIO` in a fresh interpreter whose SIGTERM handler (as the
    demo's runner's) notes where it ran; fail if it does not end within a minute (a worker that
    ran the handler could keep the pool from ever ending)."""
    ran = tmp_path / "handler-ran-in"
    script = tmp_path / "scenario.py"
    script.write_text(_SCENARIO)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(ran), scenario],
        start_new_session=True,  # its pool workers too are ended below, whatever happens
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        out = "did not end within 60 s"
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert "done" in out, out[-2000:]
    return ran


def test_workers_do_not_run_the_parents_sigterm_handler(tmp_path: Path) -> None:
    """The demo's stall: the pool's end SIGTERMed its workers, which ran the runner's handler
    (capture's stop: ``engine.close()`` on a forked JVM). Before the fix a worker ran it in about
    every other pool, and a worker the signal found waiting for the pool's lock never ended."""
    ran = _scenario(tmp_path, "whole")
    assert not ran.exists(), f"the parent's SIGTERM handler ran in workers {ran.read_text()}"


def test_an_abandoned_read_ends_busy_workers_without_the_parents_handler(tmp_path: Path) -> None:
    ran = _scenario(tmp_path, "abandoned")
    assert not ran.exists(), f"the parent's SIGTERM handler ran in workers {ran.read_text()}"
