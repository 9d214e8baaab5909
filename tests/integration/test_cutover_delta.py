"""The write freeze's verify checks only what changed since the full verify before it.

A real cutover under application writes: ``verify_live`` verifies every row while the writes go
on; inside the freeze, ``verify`` compares only the rows written since (on either side) and still
catches a difference planted in the new database after the full verify (by the freeze command,
so it lands exactly between the two): NO GO, legacy unfrozen. Without the planted row the same
cutover goes, its in-freeze verify having compared a small part of the table.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from typing import Any

import psycopg
import pytest
import yaml

from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration

ROWS = 20_000
PLANTED = 15_000
"""A key the application never writes: only the planted change makes it differ."""


class _App(threading.Thread):
    """Updates random rows (ids 1..10000) until stopped; refused writes (frozen) are counted."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn, self.stop, self.writes, self.refused = dsn, threading.Event(), 0, 0

    def run(self) -> None:
        rnd = random.Random(7)
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while not self.stop.is_set():
                try:
                    with c.transaction():
                        c.execute(
                            "UPDATE items SET qty = qty + 1, note = md5(random()::text) "
                            "WHERE id = %s",
                            (rnd.randint(1, 10_000),),
                        )
                        c.execute("INSERT INTO events VALUES (clock_timestamp(), 'qty + 1')")
                    self.writes += 1
                except psycopg.errors.InsufficientPrivilege:
                    self.refused += 1
                time.sleep(0.01)


def _cutover(stack: Stack) -> dict[str, Any]:
    r = stack.cli("cutover", "--json", timeout=300)
    assert r.stdout.strip(), f"cutover printed nothing (rc {r.returncode}): {r.stderr[-2000:]}"
    return json.loads(r.stdout)


def _runs(stack: Stack, n: int = 2) -> list[dict[str, Any]]:
    with stack.tgt() as t:
        rows = t.execute(
            "SELECT id, report FROM crossfade.verify_runs ORDER BY id DESC LIMIT %s", (n,)
        ).fetchall()
    return [{"id": i, **rep} for i, rep in reversed(rows)]


def test_the_freeze_verifies_only_the_changes_and_catches_a_planted_difference(
    stack_factory: Any,
) -> None:
    stack: Stack = stack_factory(append_only_tables=["public.events"])
    stack.sql(
        "CREATE TABLE public.items (id int PRIMARY KEY, qty int NOT NULL, note text);"
        f"INSERT INTO items SELECT g, g % 100, md5(g::text) FROM generate_series(1, {ROWS}) g;"
        "CREATE TABLE public.events (at timestamptz, what text);"  # no key: append-only
        "INSERT INTO events SELECT now(), 'loaded ' || g FROM generate_series(1, 5000) g"
    )
    role = f"app_{stack.n}_{os.getpid()}"
    stack.sql(f"CREATE ROLE {role} LOGIN")
    stack.sql(f"GRANT USAGE ON SCHEMA public TO {role}; GRANT ALL ON items, events TO {role}")
    flag = stack.dir / "plant"
    plant = (
        "import os, psycopg\n"
        f"if os.path.exists({str(flag)!r}):\n"
        f"    with psycopg.connect({stack.target_dsn!r}, autocommit=True) as c:\n"
        f"        c.execute('UPDATE public.items SET qty = qty + 1000 WHERE id = {PLANTED}')\n"
        "        c.execute(\"UPDATE public.events SET what = 'planted' WHERE what = 'loaded 7'\")\n"
    )
    stack.write_config(["public.items", "public.events"])
    raw = yaml.safe_load(stack.config_path.read_text())
    raw["cutover"] = {
        "freeze_sql": f"REVOKE INSERT, UPDATE, DELETE ON items, events FROM {role}",
        "unfreeze_sql": f"GRANT INSERT, UPDATE, DELETE ON items, events TO {role}",
        # runs right after the freeze, between the full verify and the one inside the freeze
        "freeze_command": [sys.executable, "-c", plant],
        "fence_timeout_s": 60,
    }
    stack.config_path.write_text(yaml.safe_dump(raw))
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    app = _App(stack.source_dsn.replace("postgres@", f"{role}@"))
    app.start()
    try:
        wait_for(lambda: app.writes > 50, 30, "the application to write")

        flag.write_text("x")
        rep = _cutover(stack)
        assert not rep["go"] and rep["unfrozen"] is True, rep
        steps = [(g["name"], g["ok"]) for g in rep["gates"]]
        assert steps[-1] == ("verify", False) and ("verify_live", True) in steps, steps
        assert "public.items: 0 missing, 0 extra, 1 different" in rep["gates"][-1]["detail"]
        # the table without a key: its totals (the planted row counted in its old and new form)
        assert (
            "public.events: 0 missing, 0 extra, 0 different (rows differ:"
            in (rep["gates"][-1]["detail"])
        )
        live, delta = _runs(stack)
        assert live["delta_of"] is None and delta["delta_of"] == live["id"], (live, delta)
        t, ev = delta["tables"]
        assert ev["name"] == "public.events" and ev["delta_keys"] == 0, ev
        # only the rows written since the full verify (and the planted one), not all 20,000
        assert 1 <= t["delta_keys"] < ROWS // 4, t
        assert t["rows"][0]["key"] == {"id": str(PLANTED)}, t
        writes = app.writes
        wait_for(lambda: app.writes > writes + 20, 30, "writes to go on after the unfreeze")

        flag.unlink()
        with stack.tgt() as c:
            c.execute(f"UPDATE public.items SET qty = qty - 1000 WHERE id = {PLANTED}")
            c.execute("UPDATE public.events SET what = 'loaded 7' WHERE what = 'planted'")
        rep = _cutover(stack)
        assert rep["go"], [(g["name"], g["ok"], g["detail"]) for g in rep["gates"]]
        # the write downtime in parts, freeze to the end of the flip: they add up to it
        parts = rep["expected_downtime_steps"]
        assert list(parts) == [
            "freeze",
            "fence",
            "row_counts",
            "verify",
            "target_schema",
            "sequences",
            "flip",
        ], parts
        assert abs(sum(parts.values()) - rep["downtime_seconds"]) < 0.25, rep
        live, delta = _runs(stack)
        assert delta["match"] and delta["delta_of"] == live["id"]
        assert delta["tables"][0]["delta_keys"] < ROWS // 4, delta["tables"]
        refused = app.refused
        wait_for(lambda: app.refused > refused + 5, 30, "legacy writes to be refused after GO")
    finally:
        app.stop.set()
        app.join(10)
    stack.fence()
    stack.assert_equal()
