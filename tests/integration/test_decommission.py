"""``crossfade decommission`` after a real cutover on the embedded stack (PostgreSQL, Tansu,
Debezium): refused while fallback runs and within the fallback window; then it leaves no slot,
publication, table, schema or column of crossfade's in either database and no topic in Kafka,
keeps the audit log, and a second run finds nothing to remove."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time

import pytest
import yaml

from crossfade.events.kafka import Admin
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration


def _set(stack: Stack, section: str, **values: object) -> None:
    raw = yaml.safe_load(stack.config_path.read_text())
    raw.setdefault(section, {}).update(values)
    stack.config_path.write_text(yaml.safe_dump(raw))


def _columns(conn, table: str) -> set[str]:  # type: ignore[no-untyped-def]
    return {
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped",
            (table,),
        ).fetchall()
    }


def test_decommission_after_cutover_refused_in_fallback_then_leaves_nothing_twice(
    stack_factory,  # type: ignore[no-untyped-def]
) -> None:
    stack: Stack = stack_factory(append_only_tables=["public.log"])
    stack.sql(
        "CREATE TABLE public.items (id bigint PRIMARY KEY, name text NOT NULL, qty int);"
        "CREATE TABLE public.log (at timestamptz NOT NULL DEFAULT now(), what text);"
        "INSERT INTO items SELECT g, 'item ' || g, g % 7 FROM generate_series(1, 200) g;"
        "INSERT INTO log (what) SELECT 'w' || g FROM generate_series(1, 20) g"
    )
    stack.write_config(["public.items", "public.log"])
    flag = stack.dir / "frozen"
    _set(
        stack,
        "cutover",
        freeze_command=["touch", str(flag)],
        unfreeze_command=["rm", "-f", str(flag)],
        fallback=True,
        fence_timeout_s=240,
        fallback_window_s=3600,
        alive_fresh_s=8,  # a fallback killed hard leaves its last heartbeat: stale after this
    )
    _set(stack, "fallback", tables=["public.items"])  # the keyless log cannot go back
    s = stack.settings
    capture, sync = stack.start("capture"), stack.start("sync")
    stack.fence()
    r = stack.cli("cutover", "--json", timeout=600)
    rep = json.loads(r.stdout)
    detail = rep["gates"][-1]["detail"]
    m = re.search(r"pid (\d+)", detail)
    fallback_pid = int(m.group(1)) if m else None
    try:
        assert r.returncode == 0 and rep["go"], [(g["name"], g["detail"]) for g in rep["gates"]]
        assert fallback_pid is not None, detail

        # while fallback runs (its capture streams its slot in the new database): refused
        def reverse_slot() -> bool:
            with stack.tgt() as t:
                return (
                    t.execute(
                        "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s AND active",
                        (f"{s.capture.slot_name}_fallback",),
                    ).fetchone()
                    is not None
                )

        wait_for(reverse_slot, 180, "fallback's capture to stream its slot")
        r = stack.cli("decommission", "--yes")
        assert r.returncode == 1 and "fallback runs" in r.stderr, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        os.killpg(fallback_pid, signal.SIGKILL)  # how it stops is not this test's business
        wait_for(lambda: not _alive(fallback_pid), 20, "fallback to die")
        capture.stop()
        sync.stop()

        # within the fallback window: refused, saying how long is left (once the killed
        # fallback's last heartbeat is older than alive_fresh_s)
        def fallback_heartbeat_stale() -> bool:
            with stack.src() as c:
                row = c.execute(
                    "SELECT max(EXTRACT(EPOCH FROM clock_timestamp() - at)) "
                    "FROM crossfade_fallback.heartbeats WHERE role = 'sync'"
                ).fetchone()
                return row is None or row[0] is None or float(row[0]) > 8

        wait_for(fallback_heartbeat_stale, 30, "the killed fallback's heartbeat to go stale")
        r = stack.cli("decommission", "--yes")
        assert r.returncode == 1 and "fallback window" in r.stderr, r.stdout + r.stderr
        assert "fallback runs" not in r.stderr and "still" not in r.stderr, r.stderr

        # the window over: without --yes and no terminal it shows the plan and refuses
        _set(stack, "cutover", fallback_window_s=0)
        r = stack.cli("decommission")
        assert r.returncode == 1 and "pass --yes" in r.stderr, r.stdout + r.stderr
        assert f"replication slot {s.capture.slot_name}" in r.stdout, r.stdout
        with stack.src() as c:
            assert c.execute(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = %s",
                (s.capture.slot_name,),
            ).fetchone() == (1,)

        t0 = time.monotonic()
        r = stack.cli("decommission", "--yes")
        took = time.monotonic() - t0
        out = r.stdout
        assert r.returncode == 0, out + r.stderr
        for removed in (
            f"legacy: replication slot {s.capture.slot_name}",
            f"legacy: publication {s.capture.publication_name}",
            "legacy: table crossfade.fence",
            "legacy: table crossfade.debezium_signal",
            "legacy: schema crossfade (empty)",
            "legacy: schema crossfade_fallback",
            f"new: replication slot {s.capture.slot_name}_fallback",
            f"new: publication {s.capture.publication_name}_fallback",
            "new: table crossfade.fence",
            "new: column(s) _cf_pos of public.items",
            "new: column(s) _cf_pos, _cf_hash of public.log",
            f"kafka: topic {s.kafka.table_topic('public.items')}",
        ):
            assert f"removed {removed}" in out, (removed, out)
        assert "kept bookkeeping schema crossfade" in out and "recorded in the audit log" in out

        with stack.src() as c:
            assert c.execute(
                "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
            ).fetchone() == (0,)
            assert c.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
            assert c.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname IN ('crossfade', 'crossfade_fallback')"
            ).fetchone() == (0,)
            assert _columns(c, "public.items") == {"id", "name", "qty"}
        with stack.tgt() as t:
            assert t.execute(
                "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
            ).fetchone() == (0,)
            assert t.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)
            assert t.execute(
                "SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.attname LIKE '\\_cf\\_%' "
                "AND NOT a.attisdropped AND n.nspname <> 'crossfade'"
            ).fetchone() == (0,)
            assert t.execute("SELECT to_regclass('crossfade.fence')").fetchone() == (None,)
            # the new system's tables are the application's again: its own insert just works
            assert _columns(t, "public.items") == {"id", "name", "qty"}
            assert _columns(t, "public.log") == {"at", "what"}
            t.execute("INSERT INTO items (id, name) VALUES (100001, 'after decommission')")
            t.execute("INSERT INTO log (at, what) VALUES (now(), 'after')")
            audit = t.execute(
                "SELECT ok, detail FROM crossfade.cutover_audit WHERE gate = 'decommission'"
            ).fetchall()
            assert len(audit) == 1 and audit[0][0] and "replication slot" in audit[0][1], audit
        prefixes = (s.kafka.topic_prefix + ".",)
        assert [t for t in Admin(s.kafka.client_config()).topics() if t.startswith(prefixes)] == []

        # idempotent: the second run removes nothing and says so
        r = stack.cli("decommission", "--yes")
        assert r.returncode == 0 and "nothing to remove" in r.stdout, r.stdout + r.stderr
        print(f"decommission took {took:.1f} s")
    finally:
        if fallback_pid is not None and _alive(fallback_pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(fallback_pid, signal.SIGKILL)
        with stack.tgt() as t:
            t.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s AND NOT active",
                (f"{s.capture.slot_name}_fallback",),
            )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (the cutover process that started it may not reap it) counts as gone
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    return True
