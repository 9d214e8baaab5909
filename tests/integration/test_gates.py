"""The gate model on the embedded stack: every surface tells the same truth.

A mapped table whose rule rejects a row (a dead letter that never touched ``table_stats``): the
cutover says NO GO at ``dead_letters`` while it is open and not acknowledged, ``dlq list``,
``status``, the console (its page state and its gauges) count the same one, ``dlq ack`` records
who acknowledged how many with a note in the audit log, and then the gate goes; a dead letter
opened later is not covered. A fence run from the CLI turns the console's fence gate green, and
it goes stale past ``cutover.fence_fresh_s``. A killed sync worker turns the ``sync_alive`` gate
red within ``cutover.alive_fresh_s`` on the console, and ``status`` says sync is not running
instead of showing a lag figure.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import yaml

from crossfade.embedded._proc import free_port
from tests.conftest import Proc, Stack, wait_for

pytestmark = pytest.mark.integration

ALIVE_FRESH_S = 5.0
FENCE_FRESH_S = 12.0


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, OSError):
        return 0, ""


def _console(stack: Stack) -> tuple[Proc, str]:
    port = free_port()
    p = Proc(
        "console",
        ["console", "--port", str(port), "--interval", "0.5"],
        stack._env(),
        stack.dir / "console.log",
    )
    stack.procs.append(p)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(base + "/healthz")[0] == 200 or not p.alive(), 30, "the console")
    assert p.alive(), p.tail()
    return p, base


def _state(base: str, after: float = 0.0) -> dict[str, Any]:
    """The console's state as collected after ``after`` (time.time())."""

    def fresh() -> dict[str, Any] | None:
        code, body = _get(base + "/api/state")
        s = json.loads(body) if code == 200 else {}
        return s if (s.get("collected_at_epoch") or 0) > after else None

    return wait_for(fresh, 30, "a console collection")


def _gate(state: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in state["gates"] if g["gate"] == name)


def _cutover(stack: Stack) -> tuple[int, dict[str, Any]]:
    r = stack.cli("cutover", "--dry-run", "--json", timeout=300)
    assert r.stdout.strip(), r.stderr[-2000:]
    return r.returncode, json.loads(r.stdout)


def test_dead_letters_fence_and_alive_gates_agree_everywhere(stack_factory: Any) -> None:
    stack: Stack = stack_factory(heartbeat_interval_s=1)
    stack.sql("CREATE TABLE public.customers (id int PRIMARY KEY, name text, email text)")
    stack.sql(
        "INSERT INTO customers SELECT g, 'c ' || g, 'c' || g || '@example.com' "
        "FROM generate_series(1, 50) g"
    )
    with stack.tgt() as c:
        c.execute(
            "CREATE SCHEMA crm; CREATE TABLE crm.customers (cid int PRIMARY KEY, name text, email text)"
        )
    stack.write_config(["public.customers"])
    cfg = yaml.safe_load(stack.config_path.read_text())
    cfg["mapping"] = {
        "tables": {
            "public.customers": {
                "targets": [
                    {
                        "table": "crm.customers",
                        "columns": {"cid": "id", "name": "name", "email": "email"},
                        "rules": {"email": {"required": True}},
                    }
                ]
            }
        }
    }
    cfg["cutover"] = {"alive_fresh_s": ALIVE_FRESH_S, "fence_fresh_s": FENCE_FRESH_S}
    stack.config_path.write_text(yaml.safe_dump(cfg))
    stack.start("capture")
    sync = stack.start("sync")
    stack.sql("INSERT INTO customers VALUES (51, 'No Mail', NULL)")  # rejected by the rule
    stack.fence()
    _p, base = _console(stack)

    # one open dead letter: counted the same by dlq list, status, the console and the cutover
    r = stack.cli("dlq", "list", "--json")
    listing = json.loads(r.stdout)
    assert r.returncode == 1 and listing["dead_letters"] == 1 and listing["unacknowledged"] == 1
    st = json.loads(stack.cli("status", "--json").stdout)
    row = next(t for t in st["tables"] if t["table"] == "public.customers")
    assert (row["dead_lettered"], row["dead_letters_unacknowledged"]) == (1, 1), row
    assert row["source_rows"] == row["accounted"] == 51 and row["counts_match"], row
    (target,) = st["targets"]
    assert (target["table"], target["target_rows"], target["expected_rows"]) == (
        "crm.customers",
        50,
        50,
    ), target
    assert _gate(st, "row_counts")["state"] == "ok", st["gates"]
    rc, rep = _cutover(stack)
    assert rc == 1 and [(g["name"], g["state"]) for g in rep["gates"]] == [
        ("sync_alive", "ok"),
        ("dead_letters", "failed"),
    ], rep["gates"]
    assert "1 open dead letter(s), 1 not acknowledged" in rep["gates"][1]["detail"]
    state = _state(base, time.time())
    assert _gate(state, "dead_letters")["state"] == "failed"
    assert state["dlq"]["dead_letters"] == 1
    (by_rule,) = state["dlq"]["by_rule"]
    assert {k: by_rule[k] for k in ("rule", "table", "records")} == {
        "rule": "crm.customers.email:required",
        "table": "public.customers",
        "records": 1,
    }
    assert [e["key"] for e in by_rule["examples"]] == ["[51]"]  # the console shows its key
    mapped = next(t for t in state["tables"] if t["table"] == "public.customers")
    assert (mapped["legacy_rows"], mapped["new_rows"], mapped["dead_lettered"]) == (51, 51, 1)
    metrics = _get(base + "/metrics")[1]
    assert 'crossfade_dead_letters_unacknowledged{table="public.customers"} 1.0' in metrics
    assert 'crossfade_cutover_gate_ok{gate="dead_letters"} 0.0' in metrics

    # acknowledged, with a note, in the audit log: the gate goes, the dry run says GO
    r = stack.cli(
        "dlq",
        "ack",
        "--note",
        "customer 51 has no email; accepted",
        env={"CROSSFADE_OPERATOR": "ops-ann"},
    )
    assert r.returncode == 0 and "acknowledged 1 dead letter(s)" in r.stdout, r.stdout + r.stderr
    with stack.tgt() as t:
        who, detail = t.execute(
            "SELECT who, detail FROM crossfade.cutover_audit WHERE gate = 'dlq_ack'"
        ).fetchone()
    assert (
        who == "ops-ann"
        and detail == "acknowledged 1 dead letter(s) (1 open): customer 51 has no email; accepted"
    )
    rc, rep = _cutover(stack)
    assert rc == 0 and rep["go"], rep["gates"]
    # status announces the dry run's write downtime forecast, as the console does
    st = json.loads(stack.cli("status", "--json").stdout)
    assert st["forecast"]["source"] == "dry_run", st["forecast"]
    assert abs(st["forecast"]["seconds"] - rep["expected_downtime_seconds"]) <= 0.051, st
    shown = f"write downtime forecast: {st['forecast']['seconds']:g} s (cutover --dry-run"
    assert shown in stack.cli("status").stdout
    dead = next(g for g in rep["gates"] if g["name"] == "dead_letters")
    assert dead["state"] == "ok" and "all acknowledged (last by ops-ann" in dead["detail"]
    state = _state(base, time.time())
    assert (
        {g["gate"]: g["state"] for g in state["gates"]}
        == {g["gate"]: g["state"] for g in rep["model"]}
        == dict.fromkeys(
            ("sync_alive", "dead_letters", "fence", "row_counts", "verify", "target_schema"), "ok"
        )
    )
    # a dead letter opened after the acknowledgement is not covered by it
    stack.sql("INSERT INTO customers VALUES (52, 'Nor Mail', NULL)")
    stack.fence()
    state = _state(base, time.time())
    assert _gate(state, "dead_letters")["state"] == "failed"
    assert "2 open dead letter(s), 1 not acknowledged" in _gate(state, "dead_letters")["detail"]

    # the fence goes stale past its freshness limit; a fence from the CLI makes it green again
    wait_for(
        lambda: _gate(_state(base, time.time()), "fence")["state"] == "stale",
        FENCE_FRESH_S + 20,
        "the fence gate to go stale",
    )
    r = stack.cli("fence")
    assert r.returncode == 0, r.stderr
    fence_gate = _gate(_state(base, time.time()), "fence")
    assert fence_gate["state"] == "ok" and "(cli," in fence_gate["detail"], fence_gate
    assert fence_gate["age_s"] is not None and fence_gate["age_s"] < FENCE_FRESH_S

    # a killed sync worker: red within the freshness limit, on the console and in status
    os.kill(sync.p.pid, signal.SIGKILL)
    sync.expected_dead = True
    killed = time.time()
    wait_for(
        lambda: _gate(_state(base, time.time()), "sync_alive")["state"] == "failed",
        ALIVE_FRESH_S + 10,
        "the sync_alive gate to turn red",
    )
    red_after = time.time() - killed
    state = _state(base, time.time())
    alive = _gate(state, "sync_alive")
    assert "sync is not running" in alive["detail"], alive
    assert red_after <= ALIVE_FRESH_S + 3, red_after
    # the fence went through a few seconds ago, but proves nothing while sync is down
    assert _gate(state, "fence")["state"] == "stale", _gate(state, "fence")
    assert 'crossfade_cutover_gate_ok{gate="sync_alive"} 0.0' in _get(base + "/metrics")[1]
    r = stack.cli("status")
    assert (
        "sync is not running" in r.stdout and "no lag figure while sync is not running" in r.stdout
    ), r.stdout
    st = json.loads(stack.cli("status", "--json").stdout)
    assert st["sync"]["running"] is False and st["sync"]["lag_records"] is None
    assert all(t["lag_at_last_apply_s"] is None for t in st["tables"])
    # and back: a new worker makes it green again
    stack.start("sync")
    wait_for(
        lambda: _gate(_state(base, time.time()), "sync_alive")["state"] == "ok",
        90,
        lambda: "the sync_alive gate to turn green again" + stack._diag(),
    )
