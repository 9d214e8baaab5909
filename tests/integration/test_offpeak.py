"""Off-peak control on the embedded stack (issue 22): ``crossfade pause``/``resume`` of sync and
of capture (nothing applied while paused, everything applied once after, status and the gate say
PAUSED), and the initial COPY load held outside ``capture.load_windows`` and under
``capture.load_rate``."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Stack, wait_for
from tests.integration.fault_harness import HOOKS_DIR

pytestmark = pytest.mark.integration


def _count(stack: Stack, table: str = "public.items") -> int:
    with stack.tgt() as c:
        row = c.execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0


def _applied(stack: Stack) -> tuple[int, int]:
    """Events sync applied and skipped (position guard: a duplicate) on public.items."""
    bk = stack.settings.sync.bookkeeping_schema
    with stack.tgt() as c:
        row = c.execute(
            f"SELECT coalesce(sum(applied), 0), coalesce(sum(skipped), 0) FROM {bk}.table_stats "
            "WHERE tbl = 'public.items'"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _status(stack: Stack) -> dict[str, Any]:
    r = stack.cli("status", "--json")
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def _hold_and_release(stack: Stack, component: str, rows: range) -> None:
    """Pause ``component``, write while it is paused, see nothing applied and PAUSED shown,
    resume, and see every change applied exactly once."""
    applied0, skipped0 = _applied(stack)
    before = _count(stack)
    r = stack.cli("pause", component, "--reason", "index rebuild")
    assert r.returncode == 0, r.stderr
    assert f"{component} PAUSED by" in r.stdout and "(index rebuild)" in r.stdout, r.stdout
    n = 1 if component == "capture" else stack.sync_processes()
    assert f"{n} of {n} running process(es) hold" in r.stdout, r.stdout
    if component == "capture":
        assert "the slot retains" in r.stdout, r.stdout
    stack.sql(
        "INSERT INTO items SELECT g, 'paused ' || g FROM generate_series(%s::int, %s::int) g",
        (rows.start, rows.stop - 1),
    )
    stack.sql("UPDATE items SET v = v || ' (updated while paused)' WHERE id <= 20")
    time.sleep(2.5)  # sync's batch timeout and heartbeats several times over
    assert _count(stack) == before, f"applied while {component} was paused"
    assert _applied(stack) == (applied0, skipped0)
    text = stack.cli("status").stdout
    assert f"{component.upper()} PAUSED by" in text, text
    # the gate refuses GO while paused (status prints the gates as the cutover evaluates them)
    assert f"{component} PAUSED by" in text and f"`crossfade resume {component}` first" in text
    r = stack.cli("resume", component)
    assert r.returncode == 0 and f"{component} resumed by" in r.stdout, r.stdout + r.stderr
    stack.fence()
    stack.assert_equal()
    applied1, skipped1 = _applied(stack)
    # every change written while paused applied once: len(rows) inserts and 20 updates
    assert (applied1 - applied0, skipped1 - skipped0) == (len(rows) + 20, 0)


def test_load_window_rate_cap_then_pause_and_resume(
    stack_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One stack, to spend its start-up once. The load window opens ~20 s after the test begins
    (capture's pacer reads a clock shifted so the next minute boundary comes then): until then
    the load has not begun (no slot) and status says it waits; then 6000 rows at 2000 rows/s
    take at least ~2 s of copying (the load's own record), and every row arrives. Then sync is
    paused and resumed, then capture (:func:`_hold_and_release`)."""
    stack: Stack = stack_factory(initial_load="copy")
    stack.sql("CREATE TABLE public.items (id bigint PRIMARY KEY, v text)")
    stack.sql("INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 6000) g")
    stack.write_config(["public.items"])
    now = datetime.now(UTC)
    opens = (now + timedelta(minutes=2)).replace(second=0, microsecond=0)
    offset = (opens - now).total_seconds() - 20  # start-up takes seconds on a busy machine
    cfg = yaml.safe_load(stack.config_path.read_text())
    window = f"{opens:%H:%M}-{opens + timedelta(hours=1):%H:%M}"
    cfg["capture"].update({"load_windows": [window], "load_rate": 2000})
    stack.config_path.write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("PYTHONPATH", str(HOOKS_DIR))
    monkeypatch.setenv("CF_PACER_OFFSET_S", str(offset))
    stack.start("capture")
    stack.start("sync")

    def waiting() -> dict[str, Any] | None:
        load = _status(stack)["control"]["load"]
        return load if load and load["paused"] else None

    load = wait_for(waiting, 30, "status to show the load waiting for its window")
    assert load["summary"].startswith(f"waiting for window {window} UTC, opens in "), load
    assert load["total_rows"] == 0 and load["rate_cap"] == 2000
    with stack.src() as c:  # nothing held on the legacy side yet: no slot, no snapshot
        slot = c.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s",
            (stack.settings.capture.slot_name,),
        ).fetchone()
    assert slot is None
    stack.fence()
    assert _count(stack) == 6000
    stack.assert_equal()
    state = json.loads(next(Path(stack.settings.capture.state_dir).glob("load-*.json")).read_text())
    assert state["done"] and state["rows"] == {"public.items": 6000}
    # 2000 rows/s: 6000 rows cannot be copied in less than ~3 s; loosely, at least 2.5 (uncapped
    # they take a fraction of a second)
    assert state["copy_seconds"] >= 2.5, state
    # status reads capture's heartbeat, written every sync.heartbeat_interval_s: the beat from the
    # load's last seconds may still be the latest one
    wait_for(lambda: _status(stack)["control"]["load"] is None, 15, "status to say the load ended")
    _hold_and_release(stack, "sync", range(10001, 10201))
    _hold_and_release(stack, "capture", range(20001, 20151))
