"""A dry run measures the freeze's fence-free steps on a quiet pipeline (issue 20).

Under application writes, ``cutover --dry-run`` pauses capture and sync (the control table, as
``crossfade pause`` does) from the step after the fence up to the flip, but for the verify of
the changes' re-check fences (from the first to the verify's end they run), waits until their
heartbeats show each hold, resumes them, and says so (``dry_run_quiet``: report, audit row). Afterwards nothing is paused, the pipeline carries on:
sync catches up with what was written meanwhile and legacy and the new database are equal. The
store's pause never takes over an operator's: only what nobody paused is paused, and only the
dry run's own pause is lifted.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from typing import Any

import psycopg
import pytest
import yaml

from crossfade.target.store import pause_unpaused, read_control, resume_own, set_paused
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration

ROWS = 20_000


class _App(threading.Thread):
    """Updates random rows and appends an event per transaction until stopped."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.stop, self.writes = dsn, threading.Event(), 0

    def run(self) -> None:
        rnd = random.Random(11)
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while not self.stop.is_set():
                with c.transaction():
                    c.execute(
                        "UPDATE items SET qty = qty + 1, note = md5(random()::text) WHERE id = %s",
                        (rnd.randint(1, ROWS),),
                    )
                    c.execute("INSERT INTO events VALUES (clock_timestamp(), 'qty + 1')")
                self.writes += 1
                time.sleep(0.01)


class _Watch(threading.Thread):
    """Polls the control table: every (component, paused, reason) seen while it runs, and how
    often each component went from running to paused."""

    def __init__(self, dsn: str, bk: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.bk, self.stop = dsn, bk, threading.Event()
        self.seen: set[tuple[str, bool, str | None]] = set()
        self.pauses: dict[str, int] = {}

    def run(self) -> None:
        was: dict[str, bool] = {}
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while not self.stop.is_set():
                for s in read_control(c, self.bk).values():
                    self.seen.add((s.component, s.paused, s.reason))
                    if s.paused and not was.get(s.component):
                        self.pauses[s.component] = self.pauses.get(s.component, 0) + 1
                    was[s.component] = s.paused
                time.sleep(0.05)


def _applied(stack: Stack, bk: str) -> int:
    with stack.tgt() as c:
        row = c.execute(
            f"SELECT coalesce(sum(applied), 0) FROM {bk}.table_stats WHERE tbl = 'public.items'"
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_dry_run_pauses_capture_and_sync_while_it_measures_and_they_carry_on(
    stack_factory: Any,
) -> None:
    stack: Stack = stack_factory(append_only_tables=["public.events"])
    stack.sql(
        "CREATE TABLE public.items (id int PRIMARY KEY, qty int NOT NULL, note text);"
        f"INSERT INTO items SELECT g, g % 100, md5(g::text) FROM generate_series(1, {ROWS}) g;"
        "CREATE TABLE public.events (at timestamptz, what text)"
    )
    role = f"app_{stack.n}_{os.getpid()}"
    stack.sql(f"CREATE ROLE {role} LOGIN")
    stack.sql(f"GRANT USAGE ON SCHEMA public TO {role}; GRANT ALL ON items, events TO {role}")
    stack.write_config(["public.items", "public.events"])
    raw = yaml.safe_load(stack.config_path.read_text())
    raw["cutover"] = {
        "freeze_sql": f"REVOKE INSERT, UPDATE, DELETE ON items, events FROM {role}",
        "unfreeze_sql": f"GRANT INSERT, UPDATE, DELETE ON items, events TO {role}",
        "fence_timeout_s": 60,
    }
    raw["sync"]["heartbeat_interval_s"] = 1
    stack.config_path.write_text(yaml.safe_dump(raw))
    bk = stack.settings.sync.bookkeeping_schema
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    app = _App(stack.source_dsn.replace("postgres@", f"{role}@"))
    app.start()
    watch = _Watch(stack.target_dsn, bk)
    try:
        wait_for(lambda: app.writes > 50, 30, "the application to write")
        watch.start()
        r = stack.cli("cutover", "--dry-run", "--json", timeout=300)
        watch.stop.set()
        watch.join(10)
        assert r.stdout.strip(), f"cutover printed nothing (rc {r.returncode}): {r.stderr[-2000:]}"
        rep = json.loads(r.stdout)
        assert rep["go"], [(g["name"], g["ok"], g["detail"]) for g in rep["gates"]]
        q = rep["dry_run_quiet"]
        assert q["paused"] == ["capture", "sync"] and q["resumed"] == ["capture", "sync"], q
        assert q["acknowledged"] is True and q["error"] is None and q["kept"] == [], q
        n = stack.sync_processes()
        assert q["holding"] == {"capture": "1 of 1", "sync": f"{n} of {n}"}, q
        assert 0 < q["held_s"] < 120 and 0 < q["wait_s"] <= q["holds"] * (2 * 1 + 1 + 1), q
        # paused again after the verify when its re-check fences resumed them (the schema step
        # and the sequences run paused, as frozen), once otherwise
        with stack.tgt() as c:
            vr = c.execute(
                f"SELECT report FROM {bk}.verify_runs WHERE report->>'delta_of' IS NOT NULL "
                "ORDER BY id DESC LIMIT 1"
            ).fetchone()
        assert vr is not None, "the dry run's verify of the changes is not recorded"
        assert q["holds"] == (2 if vr[0].get("fences") else 1), (q, vr[0].get("fences"))
        assert watch.pauses == {"capture": q["holds"], "sync": q["holds"]}, watch.pauses
        # the control table held both, with the dry run's own reason, and nothing is paused now
        ours = {(c, why) for c, paused, why in watch.seen if paused}
        assert {c for c, _ in ours} == {"capture", "sync"}, watch.seen
        assert all(why and rep["run_id"] in why for _, why in ours), ours
        with stack.tgt() as c:
            assert not [s for s in read_control(c, bk).values() if s.paused]
            row = c.execute(
                f"SELECT ok, detail, evidence FROM {bk}.cutover_audit "
                "WHERE run_id = %s AND gate = 'dry_run_quiet'",
                (rep["run_id"],),
            ).fetchone()
            decision = c.execute(
                f"SELECT evidence FROM {bk}.cutover_audit WHERE run_id = %s AND gate = 'decision'",
                (rep["run_id"],),
            ).fetchone()
        assert row is not None and row[0] and "capture and sync paused" in row[1], row
        assert row[2]["resumed"] == ["capture", "sync"], row
        assert decision is not None and decision[0]["dry_run_quiet"]["held_s"] == q["held_s"]
        # the forecast is made as before, part by part
        assert {"fence", "row_counts", "verify", "flip"} <= set(rep["expected_downtime_steps"])
        # the dry run fenced twice (both before the pause: a fence needs capture and sync) and
        # forecast the fence from the faster up to its first partition's record (its time less
        # its spread), leaving the other out of the part it measured
        f = rep["dry_run_fences"]
        assert f is not None and f["forecast_from"] in ("first", "second"), f
        assert 0 < f["first_s"] < 60 and 0 < f["second_s"] < 60, f
        assert 0 <= f["first_spread_s"] < f["first_s"], f
        assert 0 <= f["second_spread_s"] < f["second_s"], f
        firsts = (f["first_s"] - f["first_spread_s"], f["second_s"] - f["second_spread_s"])
        assert f["forecast_from"] == ("first" if firsts[0] <= firsts[1] else "second"), f
        measured, forecast = (
            rep["measured_downtime_steps"]["fence"],
            rep["expected_downtime_steps"]["fence"],
        )
        assert measured >= f["first_s"] + f["second_s"] - 0.002, (measured, f)
        expect = measured - f["first_s"] - f["second_s"] + min(firsts)
        assert forecast == pytest.approx(expect, abs=0.005), (forecast, measured, f)
        assert decision[0]["dry_run_fences"] == f
        with stack.tgt() as c:
            spreads = c.execute(
                "SELECT extract(epoch FROM max(f.applied_at) - min(f.applied_at))::float8 "
                f"FROM {bk}.fence_runs r JOIN {bk}.fences f USING (token) "
                "WHERE r.via = 'cutover' AND r.ok GROUP BY r.token, r.started_at "
                "ORDER BY r.started_at"
            ).fetchall()
        # the step's two (the verify's say via=verify); their spreads as the bookkeeping has them
        assert [round(x, 3) for (x,) in spreads] == [
            f["first_spread_s"],
            f["second_spread_s"],
        ], (spreads, f)
        # the pipeline carries on: sync applies what the application writes after the dry run
        applied, writes = _applied(stack, bk), app.writes
        wait_for(lambda: app.writes > writes + 30, 30, "the application to write on")
        wait_for(lambda: _applied(stack, bk) > applied + 30, 60, "sync to apply the writes after")
    finally:
        app.stop.set()
        app.join(10)
        watch.stop.set()
    stack.fence()
    stack.assert_equal()  # nothing written while capture and sync were paused was lost


def test_the_stores_pause_never_takes_over_an_operators(stack: Stack) -> None:
    stack.write_config(["public.t"])
    bk = stack.settings.sync.bookkeeping_schema
    with stack.tgt() as c:
        set_paused(c, bk, ["sync"], True, "alice", "index rebuild")
        assert pause_unpaused(c, bk, ["capture", "sync"], "bob", "dry run r1") == ["capture"]
        # a pause set with another reason (another run's) is not lifted
        assert resume_own(c, bk, ["capture", "sync"], "bob", "dry run r2") == []
        assert resume_own(c, bk, ["capture", "sync"], "bob", "dry run r1") == ["capture"]
        st = read_control(c, bk)
        assert not st["capture"].paused
        assert st["sync"].paused and (st["sync"].by, st["sync"].reason) == (
            "alice",
            "index rebuild",
        )
