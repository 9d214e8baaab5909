"""``crossfade run`` with sync in child processes (``sync.processes``, crossfade.ops.children):
the demo CRM loads through the demo mapping and verifies; the parent's /metrics adds up the
children's partitions and /readyz needs them; SIGTERM stops everything cleanly; a child killed
stops the command with its one-line error; the parent killed takes its children with it."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.error
import urllib.request
from collections.abc import Callable

import psutil
import pytest
import yaml

from crossfade.embedded._proc import free_port
from crossfade.embedded.crm import MAPPING_FILE, TABLES
from tests.conftest import Proc, Stack, wait_for
from tests.integration.fault_harness import HOOKS_DIR
from tests.integration.test_two_sync_mapped_load import seed_crm

pytestmark = pytest.mark.integration


def _get(port: int, path: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None


def _assigned(port: int) -> float | None:
    r = _get(port, "/metrics")
    for line in (r[1] if r else "").splitlines():
        if line.startswith("crossfade_sync_assigned_partitions "):
            return float(line.split()[1])
    return None


def _children(proc: Proc) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.p.pid).children()
    except psutil.NoSuchProcess:
        return []


def _gone(pids: list[int]) -> bool:
    return not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in pids)


def _run(stack: Stack, tables: list[str], mapping: object = None) -> tuple[Proc, int, list[int]]:
    """``crossfade run`` with two sync processes and its ops port; its children's pids, once
    both are up and the parent ready."""
    port = free_port()
    stack.write_config(tables, ops={"metrics_port": port}, mapping=mapping)  # type: ignore[arg-type]
    run = stack.start("run")
    wait_for(lambda: len(_children(run)) == 2, 60, lambda: "two sync processes" + stack._diag())
    pids = [c.pid for c in _children(run)]
    wait_for(
        lambda: (r := _get(port, "/readyz")) is not None and r[0] == 200,
        240,
        lambda: f"run to be ready: {_get(port, '/readyz')}" + stack._diag(),
    )
    return run, port, pids


def test_run_with_two_sync_processes_loads_verifies_and_stops_cleanly(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(initial_load="copy", partitions=2, processes=2)
    seed_crm(stack, accounts=1500)
    run, port, pids = _run(stack, TABLES, yaml.safe_load(MAPPING_FILE.read_text()))
    # every partition of every change topic held by one of the two children, added up
    wait_for(
        lambda: _assigned(port) == 2 * len(TABLES),
        120,
        lambda: f"assigned partitions {_assigned(port)}" + stack._diag(),
    )
    ready = json.loads(_get(port, "/readyz")[1])  # type: ignore[index]
    assert ready["checks"]["sync"]["processes answering"] is True, ready
    assert _get(port, "/healthz") == (200, "ok\n")
    stack.fence(timeout=300)
    r = stack.cli("verify", "--json", timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout)["match"], r.stdout[-3000:] + stack._diag()
    log = run.log.read_text(errors="replace")
    # the children's lines carry their names
    assert '"worker": "sync-1"' in log and '"worker": "sync-2"' in log, log[-3000:]
    os.kill(run.p.pid, signal.SIGTERM)  # the parent only: it forwards SIGTERM to its children
    assert run.p.wait(90) == 0, run.tail()
    run.expected_dead = True
    assert _gone(pids), [psutil.Process(p) for p in pids if psutil.pid_exists(p)]


def test_a_sync_process_killed_stops_run_with_its_error(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(partitions=2, processes=2)
    stack.sql("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g")
    run, _port, pids = _run(stack, ["public.t"])
    os.kill(pids[1], signal.SIGKILL)
    code = run.p.wait(90)
    run.expected_dead = True
    assert code == 128 + signal.SIGKILL, run.tail()
    errors = [line for line in run.tail(200).splitlines() if line.startswith("crossfade: error:")]
    assert len(errors) == 1 and "killed by SIGKILL" in errors[0], run.tail()
    assert _gone(pids)


def _hooked(stack: Stack, **env: str) -> Proc:
    """``crossfade run`` with the fault hooks (tests/integration/fault_hooks) and ``env``."""
    e = {**stack._env(), **env}
    e["PYTHONPATH"] = os.pathsep.join([str(HOOKS_DIR), *filter(None, [e.get("PYTHONPATH")])])
    run = Proc("run", ["run"], e, stack.dir / "run.log")
    stack.procs.append(run)
    return run


def _error_lines(run: Proc) -> list[str]:
    return [line for line in run.tail(200).splitlines() if line.startswith("crossfade: error:")]


def test_a_sync_process_killed_while_capture_starts_stops_run(
    stack_factory: Callable[..., Stack],
) -> None:
    """The hang seen at load 6-8: capture says it runs before Debezium's engine is built (the
    JVM's start, seconds under load); a sync process died meanwhile, and the close of the engine,
    not built yet, did nothing: the engine started after it and ``run`` waited for it for ever.
    The hook delays the JVM's start by 8 s, so the close always comes before the build."""
    stack = stack_factory(partitions=2, processes=2)
    stack.sql("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
    stack.write_config(["public.t"])
    run = _hooked(stack, CF_CAPTURE_SLOW_START="8")
    wait_for(
        lambda: "FAULT POINT capture_slow_start" in run.tail(200) and len(_children(run)) == 2,
        60,
        lambda: "capture's delayed JVM start and two sync processes" + stack._diag(),
    )
    pids = [c.pid for c in _children(run)]
    os.kill(pids[1], signal.SIGKILL)
    code = run.p.wait(60)  # the JVM's start (8 s and its own) and a stop; it was for ever
    run.expected_dead = True
    assert code == 128 + signal.SIGKILL, run.tail()
    errors = _error_lines(run)
    assert len(errors) == 1 and "killed by SIGKILL" in errors[0], run.tail()
    # capture stopped by itself: the stop's bound (capture.stop_timeout_s) did not end it
    assert "did not stop within" not in run.log.read_text(errors="replace"), run.tail()
    assert _gone(pids)


def test_a_stop_that_outlasts_its_bound_exits_with_one_line_and_loses_nothing(
    stack_factory: Callable[..., Stack],
) -> None:
    """Last resort: capture's handler never returns (the hook), so Debezium's engine cannot stop.
    SIGTERM ends ``run`` anyway, ``capture.stop_timeout_s`` (5 s here) after it, exit code 1 and
    one line naming what did not stop and where its handler is. The batch the handler held was
    never acknowledged: the next start sends it again and the target ends up equal."""
    stack = stack_factory(partitions=2, processes=2)
    stack.sql("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO public.t SELECT g, 'before' FROM generate_series(1, 50) g")
    stack.write_config(["public.t"])
    run = _hooked(stack, CF_CAPTURE_STUCK="1", CROSSFADE_CAPTURE__STOP_TIMEOUT_S="5")
    wait_for(lambda: "capture running" in run.tail(200), 120, lambda: "capture" + stack._diag())
    stack.sql("INSERT INTO public.t SELECT g, 'streamed' FROM generate_series(51, 100) g")
    wait_for(
        lambda: "FAULT POINT capture_stuck" in run.tail(200),
        120,
        lambda: "capture's handler to get stuck" + stack._diag(),
    )
    pids = [c.pid for c in _children(run)]
    os.kill(run.p.pid, signal.SIGTERM)
    code = run.p.wait(60)  # Debezium's own timeouts alone are 40 s and more
    run.expected_dead = True
    assert code == 1, run.tail()
    errors = _error_lines(run)
    assert len(errors) == 1, run.tail()
    # capture, and a sync process still leaving its group may be named with it
    assert re.search(
        r"error: capture(, sync-\d)* did not stop within 5 s of the stop", errors[0]
    ), errors
    assert "its handler is" in errors[0], errors
    # and the exit after it did not hang in turn (runner.exit_within's watch)
    assert "has not exited" not in run.log.read_text(errors="replace"), run.tail()
    wait_for(lambda: _gone(pids), 10, lambda: f"the sync processes {pids} to end with run")
    run2 = stack.start("run")
    stack.fence(timeout=180)
    stack.assert_equal()  # the 50 streamed rows the stuck handler held among them
    assert run2.stop() == 0, run2.tail()


def test_the_parent_killed_takes_its_sync_processes_with_it(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(partitions=2, processes=2)
    stack.sql("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
    run, _port, pids = _run(stack, ["public.t"])
    os.kill(run.p.pid, signal.SIGKILL)  # the parent alone, not its process group
    run.p.wait(30)
    run.expected_dead = True
    wait_for(lambda: _gone(pids), 10, lambda: f"the children {pids} to die with their parent")


def test_two_sync_processes_stopped_together_are_assigned_again_at_their_restart(
    stack_factory: Callable[..., Stack],
) -> None:
    """``crossfade sync`` with two processes stopped (one SIGTERM to its process group, as a
    supervisor sends it) and started again. Both processes looked at the group, saw it settled
    and left; when the other's LeaveGroup landed between the leader's look and its LeaveGroup,
    Tansu 0.6 kept the departed leader and the restarted members joined for ever (CI,
    ``sync.processes`` auto: fences never reached). The hook ``CF_LEAVE_RACE`` makes that order
    certain; the leader now completes the rebalance the other's leave began before it leaves
    (no group deleted after two session timeouts either: look_at_join)."""
    stack = stack_factory(partitions=2, processes=2)
    stack.sql("CREATE TABLE public.t (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO public.t SELECT g, 'v' FROM generate_series(1, 100) g")
    stack.write_config(["public.t"])
    stack.start("capture")
    env = stack._env()
    env["CF_LEAVE_RACE"] = str(stack.dir / "leader-looked")
    env["PYTHONPATH"] = os.pathsep.join([str(HOOKS_DIR), *filter(None, [env.get("PYTHONPATH")])])
    sync = Proc("sync", ["sync"], env, stack.dir / "sync.log")
    stack.procs.append(sync)
    stack.fence(timeout=120)
    assert sync.stop() == 0, sync.tail()
    log = sync.log.read_text(errors="replace")
    assert "LEAVE RACE a member leaves after the leader's look" in log, log[-3000:]
    stack.sql("UPDATE public.t SET v = 'after the restart' WHERE id <= 10")
    sync = stack.start("sync")
    stack.fence(timeout=60)  # a join takes seconds; the wedge lasted for ever
    stack.assert_equal()
    assert "deleting the group" not in sync.log.read_text(errors="replace")
