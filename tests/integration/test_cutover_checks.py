"""The seeds' optional gates on the embedded stack: ``backup``, ``reconcile`` and ``smoke``.

Each passes and fails in a real cutover: a failing backup stops it before the freeze; a control
total that differs (a payment's amount changed in the new database) and a failing smoke check
(the new system's health URL answers 500) stop it inside the freeze, and legacy is unfrozen. Each
run's evidence (the snapshot id, the totals and the differing rows, each check's answer) is in the
audit log, and ``status`` shows the gates as the model reads them from there.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import psycopg
import pytest
import yaml

from tests.conftest import Stack

pytestmark = pytest.mark.integration

PAYMENTS = """
CREATE TABLE public.payments (id int PRIMARY KEY, paid_at date NOT NULL, amount numeric(10,2));
INSERT INTO public.payments
    SELECT g, date '2023-01-01' + g * 3, (g % 50) * 1.25 FROM generate_series(1, 600) g;
"""
TOTALS = (
    "SELECT extract(year FROM paid_at)::int AS year, count(*), sum(amount) "
    "FROM public.payments GROUP BY 1 ORDER BY 1"
)


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


def _cutover(stack: Stack, *args: str) -> tuple[int, dict[str, Any]]:
    r = stack.cli("cutover", "--json", *args, timeout=300)
    assert r.stdout.strip(), f"cutover printed nothing (rc {r.returncode}): {r.stderr[-2000:]}"
    assert "s3cr3t-token" not in r.stdout + r.stderr and "bkpass99" not in r.stdout + r.stderr
    return r.returncode, json.loads(r.stdout)


def _audit(stack: Stack, run_id: str) -> list[tuple[str, bool, Any]]:
    with stack.tgt() as t:
        return t.execute(
            "SELECT gate, ok, evidence FROM crossfade.cutover_audit WHERE run_id = %s ORDER BY id",
            (run_id,),
        ).fetchall()


def _app_can_write(stack: Stack, role: str) -> bool:
    try:
        with psycopg.connect(
            stack.source_dsn.replace("postgres@", f"{role}@"), autocommit=True
        ) as c:
            c.execute("UPDATE payments SET amount = amount WHERE id = 1")
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def test_backup_reconcile_and_smoke_gates_pass_fail_unfreeze_and_record(stack: Stack) -> None:
    stack.sql(PAYMENTS)
    role = f"app_{stack.n}_{os.getpid()}"
    stack.sql(f"CREATE ROLE {role} LOGIN")
    stack.sql(f"GRANT USAGE ON SCHEMA public TO {role}; GRANT ALL ON public.payments TO {role}")
    server = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fail_backup = stack.dir / "backup-fails"
    backup = (
        "import os, sys\n"
        f"if os.path.exists({str(fail_backup)!r}): sys.exit('backup repository unreachable')\n"
        "print('backup done'); print('snapshot-20261204-01')"
    )
    plant_flag = stack.dir / "plant"
    plant = (
        "import os, psycopg\n"
        f"if os.path.exists({str(plant_flag)!r}):\n"
        f"    with psycopg.connect({stack.target_dsn!r}, autocommit=True) as c:\n"
        "        c.execute('UPDATE public.payments SET amount = amount + 100 WHERE id = 200')\n"
    )
    stack.write_config(["public.payments"])
    raw = yaml.safe_load(stack.config_path.read_text())
    raw["cutover"] = {
        "freeze_sql": f"REVOKE INSERT, UPDATE, DELETE ON public.payments FROM {role}",
        "unfreeze_sql": f"GRANT INSERT, UPDATE, DELETE ON public.payments TO {role}",
        # plants a payment's difference in the new database at the freeze, after the full verify
        "freeze_command": [sys.executable, "-c", plant],
        "backup": {
            # the DSN-like argument carries a password: it must never show
            "command": [sys.executable, "-c", backup, "postgresql://bk:bkpass99@db/crm"],
        },
        "reconcile": [{"name": "payments per year", "legacy_sql": TOTALS, "new_sql": TOTALS}],
        "smoke": [
            {"name": "new system answers", "sql": "SELECT count(*) > 0 FROM public.payments"},
            {
                "name": "health",
                "http": f"http://127.0.0.1:{server.server_port}/health?token=s3cr3t-token",
            },
        ],
    }
    stack.config_path.write_text(yaml.safe_dump(raw))
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    try:
        # dry run: every gate, the new ones too, green; their evidence recorded
        rc, rep = _cutover(stack, "--dry-run")
        assert rc == 0 and rep["go"], rep
        names = [g["name"] for g in rep["gates"]]
        assert names.index("backup") < names.index("freeze") < names.index("reconcile")
        assert names.index("verify") < names.index("smoke") == names.index("flip") - 1
        ev = {g: e for g, ok, e in _audit(stack, rep["run_id"]) if e is not None}
        assert ev["backup"]["output"] == "snapshot-20261204-01", ev
        assert (
            ev["reconcile"]["totals"][0]["ok"] and ev["reconcile"]["totals"][0]["legacy_rows"] == 5
        )
        assert [c["ok"] for c in ev["smoke"]["checks"]] == [True, True]
        assert "s3cr3t-token" not in json.dumps(ev) and "bkpass99" not in json.dumps(ev)
        # the forecast has every step between the freeze and the flip
        assert list(rep["expected_downtime_steps"]) == [
            "freeze",
            "fence",
            "row_counts",
            "reconcile",
            "verify",
            "target_schema",
            "sequences",
            "smoke",
            "flip",
        ], rep["expected_downtime_steps"]
        # the model's forecast of each part, from the part the dry run measured
        measured = rep["measured_downtime_steps"]
        assert set(measured) == set(rep["expected_downtime_steps"]), measured
        assert rep["expected_downtime_steps"]["verify"] <= measured["verify"]
        # its freeze_command is not run in a dry run: named, not timed
        assert rep["forecast_excludes"] == ["freeze_command"], rep["forecast_excludes"]
        st = json.loads(stack.cli("status", "--json").stdout)
        states = {g["gate"]: g["state"] for g in st["gates"]}
        assert states["backup"] == states["reconcile"] == states["smoke"] == "ok", st["gates"]

        # a failing backup stops the cutover before the freeze: nothing to unfreeze
        fail_backup.write_text("x")
        rc, rep = _cutover(stack)
        assert rc == 1 and not rep["go"] and rep["unfrozen"] is None, rep
        assert rep["gates"][-1]["name"] == "backup" and not rep["gates"][-1]["ok"]
        assert "backup repository unreachable" in rep["gates"][-1]["detail"]
        gate, ok, e = _audit(stack, rep["run_id"])[-2]
        assert (gate, ok, e["exit"]) == ("backup", False, 1)
        st = json.loads(stack.cli("status", "--json").stdout)
        assert {g["gate"]: g["state"] for g in st["gates"]}["backup"] == "failed"
        fail_backup.unlink()

        # a control total that differs: NO GO inside the freeze, the year named, legacy unfrozen
        plant_flag.write_text("x")
        rc, rep = _cutover(stack)
        plant_flag.unlink()
        assert rc == 1 and rep["unfrozen"] is True, rep
        last = rep["gates"][-1]
        assert last["name"] == "reconcile" and not last["ok"], rep["gates"]
        assert "payments per year: 1 row(s) differ" in last["detail"], last
        assert "[2024, 122, " in last["detail"], last  # the year of payment 200, both sides
        (row,) = last["evidence"]["totals"][0]["differ"]
        assert row["row"] == 2 and row["legacy"] != row["new"]
        assert [g for g, ok, _e in _audit(stack, rep["run_id"])][-2:] == ["unfreeze", "decision"]
        assert _app_can_write(stack, role)
        with stack.tgt() as t:
            t.execute("UPDATE public.payments SET amount = amount - 100 WHERE id = 200")

        # a smoke check failing against the new system: NO GO before traffic moves, unfrozen
        _Health.status = 500
        rc, rep = _cutover(stack)
        assert rc == 1 and rep["unfrozen"] is True, rep
        last = rep["gates"][-1]
        assert last["name"] == "smoke" and not last["ok"], rep["gates"]
        assert "health: GET answered HTTP 500, expected 200" in last["detail"], last
        assert [c["ok"] for c in last["evidence"]["checks"]] == [True, False]
        assert _app_can_write(stack, role)

        # all green: GO, legacy stays frozen
        _Health.status = 200
        rc, rep = _cutover(stack)
        assert rc == 0 and rep["go"], rep
        assert [g for g, ok, _e in _audit(stack, rep["run_id"]) if not ok] == []
        assert not _app_can_write(stack, role)
    finally:
        server.shutdown()
