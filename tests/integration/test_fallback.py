"""Fallback (reverse sync new -> legacy) on the real embedded stack: PostgreSQL, Tansu, Debezium.

Proofs are fences through the reverse pipeline (the fence row is written in the new database and
applied in legacy's ``crossfade_fallback``) and row-by-row comparisons of both databases by
``crossfade.verify.compare`` (independent of the sync code), never sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import yaml
from confluent_kafka import Consumer, TopicPartition

from crossfade.config import Settings
from crossfade.events.kafka import CONTROL_HEADER, Admin
from crossfade.mapping.inverse import reversed_for
from tests.conftest import Proc, Stack, pgbench_failed_transactions, wait_for

pytestmark = pytest.mark.integration

ITEMS_DDL = """
CREATE TABLE public.items (id bigint PRIMARY KEY, name text NOT NULL, qty int, price numeric(10,2),
                           tags text[], note text);
ALTER TABLE public.items REPLICA IDENTITY DEFAULT;
"""


def _reverse(stack: Stack) -> Settings:
    rev, _ = reversed_for(stack.settings)
    return rev


def _reverse_fence(stack: Stack, procs: list[Proc], timeout: float = 240) -> float:
    """A fence through the reverse pipeline: written in the new database, applied in legacy."""
    from crossfade.verify.fence import fence

    rev = _reverse(stack)
    admin = Admin(rev.kafka.client_config())
    wait_for(
        lambda: all(admin.partitions(rev.kafka.table_topic(t)) for t in rev.tables),
        180,
        "the fallback capture to create its topics" + _diag(procs),
    )
    deadline = time.monotonic() + timeout
    while True:
        dead = [p for p in procs if not p.alive() and not p.expected_dead]
        if dead:
            raise AssertionError(f"{dead[0].name} exited with {dead[0].p.returncode}{_diag(procs)}")
        try:
            return fence(rev, timeout=5).seconds
        except Exception as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"reverse fence: {exc}{_diag(procs)}") from None


def _diag(procs: list[Proc]) -> str:
    out = "".join(f"\n--- {p.name} (alive={p.alive()}) ---\n{p.tail()}" for p in procs)
    if procs:  # the fallback a cutover started logs into its capture state dir
        for log in procs[0].log.parent.glob("*/fallback.log"):
            out += f"\n--- {log} ---\n" + "\n".join(
                log.read_text(errors="replace").splitlines()[-40:]
            )
    return out


def _assert_equal_both_ways(stack: Stack) -> None:
    from crossfade.ops.demo import compare_all

    fwd = [d.as_dict() for d in compare_all(stack.settings) if not d.match]
    assert not fwd, f"legacy -> new differ: {fwd}"
    rev = [d.as_dict() for d in compare_all(_reverse(stack)) if not d.match]
    assert not rev, f"new -> legacy differ: {rev}"


def _count_events(settings: Settings, topic: str, idle: float = 4.0) -> int:
    """Change events (not control records, not tombstones) in every partition of ``topic``."""
    n_parts = Admin(settings.kafka.client_config()).partitions(topic) or 0
    c = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"count-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(n_parts)])
        n, last = 0, time.monotonic()
        while time.monotonic() - last < idle:
            for m in c.consume(1000, 0.5):
                if m.error():
                    continue
                last = time.monotonic()
                if m.value() is not None and not any(
                    k == CONTROL_HEADER for k, _ in m.headers() or []
                ):
                    n += 1
        return n
    finally:
        c.close()


def _fallback_proc(stack: Stack, name: str = "fallback", *extra: str) -> Proc:
    p = Proc(name, ["fallback", "start", *extra], stack._env(), stack.dir / f"{name}.log")
    stack.procs.append(p)
    return p


def forward_done(stack: Stack, items: int) -> None:
    """``public.items`` with ``items`` rows migrated by the forward pipeline, which is then
    stopped: the forward direction is done, legacy's writes stay in legacy."""
    stack.sql(ITEMS_DDL)
    stack.sql(
        "INSERT INTO items (id, name, qty) SELECT g, 'item ' || g, g "
        f"FROM generate_series(1, {items}) g"
    )
    stack.write_config(["public.items"])
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    for p in list(stack.procs):
        p.stop(30)


@pytest.fixture
def drop_reverse_slots() -> Iterator[list[Stack]]:
    """Stacks whose reverse slot (in the new database) must go when the test ends."""
    stacks: list[Stack] = []
    yield stacks
    for s in stacks:
        for p in s.procs:
            p.stop(30)
        with s.tgt() as c:
            c.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s AND NOT active",
                (f"cf_it{s.n}_fallback",),
            )


def test_fallback_after_cutover_converges_both_ways_without_echo(
    load_stack: Stack, drop_reverse_slots: list[Stack]
) -> None:
    stack = load_stack
    drop_reverse_slots.append(stack)
    stack.sql(ITEMS_DDL)
    stack.sql(
        "INSERT INTO items SELECT g, 'item ' || g, g % 7, g * 1.5, ARRAY['t' || (g % 3)], "
        "CASE WHEN g % 50 = 0 THEN repeat(md5(g::text), 400) END FROM generate_series(1, 400) g"
    )
    # keys drawn by a sequence on both sides (issue 20): the application inserts without an id
    stack.sql("CREATE TABLE public.tickets (id bigserial PRIMARY KEY, body text NOT NULL)")
    stack.sql("INSERT INTO tickets (body) SELECT 'legacy ' || g FROM generate_series(1, 3) g")
    stack.write_config(["public.items", "public.tickets"])
    raw = yaml.safe_load(stack.config_path.read_text())
    flag = stack.dir / "frozen"
    raw["cutover"] = {
        "freeze_command": ["touch", str(flag)],
        "unfreeze_command": ["rm", "-f", str(flag)],
        "fallback": True,
        "fence_timeout_s": 240,
    }
    stack.config_path.write_text(yaml.safe_dump(raw))
    stack.start("capture")
    stack.start("sync")
    stack.fence()

    # the cutover's gate 7 starts `crossfade fallback start` and waits until its sync joined
    r = stack.cli("cutover", "--json", timeout=600)
    assert r.stdout.strip(), f"cutover printed nothing (rc {r.returncode}): {r.stderr[-2000:]}"
    rep = json.loads(r.stdout)
    fb_gate = rep["gates"][-1]
    pid = (
        int(re.search(r"pid (\d+)", fb_gate["detail"]).group(1))
        if "pid" in fb_gate["detail"]
        else None
    )
    try:
        assert r.returncode == 0 and rep["go"], [
            (g["name"], g.get("state"), g["detail"]) for g in rep["gates"]
        ]
        assert [g["name"] for g in rep["gates"]] == [
            "fallback_plan",
            "sync_alive",
            "dead_letters",
            "verify_live",
            "checkpoint",
            "freeze",
            "fence",
            "row_counts",
            "verify",
            "target_schema",
            "sequences",
            "flip",
            "fallback",
        ]
        assert flag.exists()  # a GO leaves legacy frozen
        procs = list(stack.procs)
        _reverse_fence(stack, procs)
        _assert_equal_both_ways(stack)  # the reverse snapshot rewrote legacy's rows as they were
        # legacy held exactly the snapshot's rows: its sweep deleted none, not even for a while
        # (a partition's marker applied before another partition's rows deleted them, issue 22)
        fb_log = "".join(p.read_text(errors="replace") for p in stack.dir.glob("*/fallback.log"))
        assert "snapshot complete" in fb_log and "no longer holds" not in fb_log, fb_log[-3000:]

        rev = _reverse(stack)
        fwd_topic = stack.settings.kafka.table_topic("public.items")
        rev_topic = rev.kafka.table_topic("public.items")
        fwd_before, rev_before = (
            _count_events(stack.settings, fwd_topic),
            _count_events(rev, rev_topic),
        )
        # the forward snapshot (none under the COPY load: its rows go straight to the target); the
        # reverse snapshot did not echo
        assert fwd_before == (0 if stack.initial_load == "copy" else 400), fwd_before
        assert rev_before == 400, rev_before

        # the new system takes writes: insert, update, delete, primary-key update, a TOASTed row
        # updated beside its unchanged large value
        with stack.tgt() as t:
            t.execute(
                "INSERT INTO items (id, name, qty, price, tags) SELECT g, 'new ' || g, 1, 2.5, ARRAY['n'] "
                "FROM generate_series(1001, 1050) g"
            )
            t.execute(
                "UPDATE items SET qty = qty + 100, name = name || ' (edited)' WHERE id BETWEEN 10 AND 39"
            )
            t.execute("DELETE FROM items WHERE id BETWEEN 40 AND 49")
            t.execute("UPDATE items SET id = 5005 WHERE id = 5")
            t.execute("UPDATE items SET qty = -1 WHERE id = 100")  # note (TOASTed) unchanged
        _reverse_fence(stack, procs)
        with stack.src() as s:
            assert s.execute("SELECT count(*) FROM items").fetchone() == (400 + 50 - 10,)
            assert s.execute("SELECT id FROM items WHERE id IN (5, 5005)").fetchall() == [(5005,)]
            assert s.execute("SELECT qty, length(note) FROM items WHERE id = 100").fetchone() == (
                -1,
                12800,
            )
            cols = {
                r[0]
                for r in s.execute(
                    "SELECT attname FROM pg_attribute WHERE attrelid = 'public.items'::regclass "
                    "AND attnum > 0 AND NOT attisdropped"
                ).fetchall()
            }
            assert cols == {
                "id",
                "name",
                "qty",
                "price",
                "tags",
                "note",
            }  # legacy got no column of ours
        _assert_equal_both_ways(stack)

        # the new system's own inserts draw keys past every migrated one (the cutover moved its
        # sequence); going back, `fallback sequences` moves legacy's past every key the new
        # system made, so legacy's first insert does not collide with them
        with stack.tgt() as t:
            new_ids = [
                t.execute("INSERT INTO tickets (body) VALUES ('new') RETURNING id").fetchone()[0]
                for _ in range(3)
            ]
        assert min(new_ids) > 3, new_ids
        _reverse_fence(stack, procs)
        r = stack.cli("fallback", "sequences", "--json")
        assert r.returncode == 0, r.stderr
        (move,) = json.loads(r.stdout)["sequences"]
        assert (move["sequence"], move["largest"]) == ("public.tickets_id_seq", max(new_ids))
        with stack.src() as s:
            legacy_id = s.execute(
                "INSERT INTO tickets (body) VALUES ('legacy again') RETURNING id"
            ).fetchone()[0]
        assert legacy_id > max(new_ids), (legacy_id, new_ids)
        with stack.tgt() as t:
            assert t.execute(
                "SELECT count(*) FROM crossfade.cutover_audit WHERE gate = 'fallback_sequence' "
                "AND detail LIKE 'public.tickets_id_seq (public.tickets.id): % -> %'"
            ).fetchone() == (1,)

        # both directions at once, writes on both sides to distinct keys (the freeze here is a flag
        # file: legacy still takes writes), interleaved in several rounds
        for round_ in range(5):
            with stack.src() as s, stack.tgt() as t:
                base = 2000 + round_ * 10
                s.execute(
                    "INSERT INTO items (id, name, qty) SELECT g, 'legacy ' || g, g FROM generate_series(%s::int, %s::int) g",
                    (base, base + 4),
                )
                t.execute(
                    "INSERT INTO items (id, name, qty) SELECT g, 'new ' || g, g FROM generate_series(%s::int, %s::int) g",
                    (base + 5, base + 9),
                )
                s.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", (base,))
                t.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", (base + 5,))
        stack.fence()
        _reverse_fence(stack, procs)
        _assert_equal_both_ways(stack)
        with stack.src() as s:
            assert s.execute(
                "SELECT count(*) FROM items WHERE id BETWEEN 2000 AND 2049"
            ).fetchone() == (50,)
        # no echo: each topic holds exactly the changes made on its own side
        fwd_after, rev_after = (
            _count_events(stack.settings, fwd_topic),
            _count_events(rev, rev_topic),
        )
        assert fwd_after - fwd_before == 5 * (5 + 1), (fwd_before, fwd_after)
        assert rev_after - rev_before == 50 + 30 + 10 + 2 + 1 + 5 * (5 + 1), (rev_before, rev_after)

        # verify in both directions
        for args in ((), ("--reverse",)):
            r = stack.cli("verify", "--json", *args, timeout=300)
            assert r.returncode == 0, f"verify {args}: {r.stdout[-2000:]} {r.stderr[-2000:]}"
            assert json.loads(r.stdout)["match"]
        r = stack.cli("fallback", "fence", "--json", timeout=300)
        assert r.returncode == 0 and json.loads(r.stdout)["partitions"] == 4, r.stderr
        r = stack.cli("fallback", "status", "--json")
        assert r.returncode == 0, r.stderr
        st = json.loads(r.stdout)
        assert st["tables"] == [
            {"legacy": t, "new": t, "inverse": "identity"}
            for t in ("public.items", "public.tickets")
        ]
        assert st["refused"] == {}
    finally:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            wait_for(
                lambda: not _alive(pid), 60, "the fallback process started by the cutover to stop"
            )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of an exited child of an exited parent is reaped by init; treat it as gone
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_fallback_renamed_table_and_restart_mid_stream(
    stack: Stack, drop_reverse_slots: list[Stack]
) -> None:
    """Renames go back renamed; a SIGKILLed reverse sync restarts where its stored offsets say."""
    drop_reverse_slots.append(stack)
    stack.sql(ITEMS_DDL)
    stack.sql(
        "CREATE TABLE public.people (id int PRIMARY KEY, name text NOT NULL, score text, legacy_only text)"
    )
    stack.sql(
        "INSERT INTO items (id, name, qty) SELECT g, 'item ' || g, g FROM generate_series(1, 300) g"
    )
    stack.sql(
        "INSERT INTO people (id, name, score) SELECT g, 'person ' || g, g::text FROM generate_series(1, 100) g"
    )
    stack.write_config(["public.items", "public.people"])
    raw = yaml.safe_load(stack.config_path.read_text())
    raw["mapping"] = {
        "tables": {
            "public.people": {
                "targets": [
                    {
                        "table": "app.persons",
                        "columns": {
                            "person_id": "id",
                            "full_name": "name",
                            "score": {"from": "score", "cast": "integer"},
                        },
                    }
                ]
            }
        }
    }
    stack.config_path.write_text(yaml.safe_dump(raw))
    # the new system's own table (created by its deploy); the forward mapped sync fills it
    with stack.tgt() as t:
        t.execute(
            "CREATE SCHEMA app; CREATE TABLE app.persons (person_id int PRIMARY KEY, full_name text NOT NULL, "
            "score integer, created_in_new timestamptz DEFAULT now())"
        )
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    with stack.tgt() as t:
        assert t.execute("SELECT count(*), sum(score) FROM app.persons").fetchone() == (100, 5050)

    fb = _fallback_proc(stack)
    procs = [*stack.procs]
    _reverse_fence(stack, procs)
    with stack.src() as s:
        assert s.execute(
            "SELECT count(*), sum(id), min(score), max(score) FROM people"
        ).fetchone() == (100, 5050, "1", "99")
        assert s.execute(
            "SELECT count(*) FROM people WHERE legacy_only IS NOT NULL"
        ).fetchone() == (0,)

    # writes in the new database while the reverse sync is SIGKILLed and restarted
    stop = time.monotonic() + 25
    killed = restarted = False
    n = 0
    with stack.tgt() as t:
        while time.monotonic() < stop or not restarted:
            n += 1
            t.execute(
                "INSERT INTO app.persons (person_id, full_name, score) VALUES (%s, %s, %s)",
                (1000 + n, f"p{n}", n),
            )
            t.execute(
                "UPDATE app.persons SET score = score + 1 WHERE person_id = %s", (1 + n % 100,)
            )
            t.execute("UPDATE items SET qty = qty + 1 WHERE id = %s", (1 + n % 300,))
            if n % 7 == 0:
                t.execute("DELETE FROM app.persons WHERE person_id = %s", (1000 + n - 3,))
            if n == 40 and not killed:
                fb.kill()
                killed = True
            if n == 80 and killed and not restarted:
                fb = _fallback_proc(stack, "fallback2")
                procs.append(fb)
                restarted = True
            time.sleep(0.05)
    _reverse_fence(stack, [p for p in procs if p.name != "fallback"])
    with stack.src() as s, stack.tgt() as t:
        new_rows = t.execute(
            "SELECT person_id, full_name, score::text FROM app.persons ORDER BY 1"
        ).fetchall()
        legacy_rows = s.execute("SELECT id, name, score FROM people ORDER BY 1").fetchall()
        assert legacy_rows == new_rows, f"{len(legacy_rows)} legacy vs {len(new_rows)} new rows"
        assert len(new_rows) > 100 + 40
    from crossfade.ops.demo import compare_all

    rev = _reverse(stack)
    items_rev = [
        d for d in compare_all(rev.model_copy(update={"tables": ["public.items"]})) if not d.match
    ]
    assert not items_rev, [d.as_dict() for d in items_rev]
    # verify --reverse compares the identity table and says the renamed one is not verifiable yet
    r = stack.cli("verify", "--reverse", "--json", timeout=300)
    rep = json.loads(r.stdout)
    by = {t["name"]: t for t in rep["tables"]}
    assert by["public.items"]["match"], by
    assert not by["app.persons"]["match"] and "renamed" in by["app.persons"]["error"]


def test_fallback_resnapshot_sweep_keeps_legacy_only_rows(
    stack: Stack, drop_reverse_slots: list[Stack]
) -> None:
    """A re-snapshot of the new database (the reverse capture restarted on a fresh state and
    slot) sweeps from legacy the rows the reverse sync wrote that the new database no longer
    holds, never a row it has no position for: one the business wrote in legacy after going
    back. The first snapshot still makes legacy what the new database holds."""
    drop_reverse_slots.append(stack)
    forward_done(stack, 100)
    with stack.tgt() as t:  # deleted in the new system before fallback starts
        t.execute("DELETE FROM items WHERE id = 100")
    fb = _fallback_proc(stack)
    _reverse_fence(stack, [fb])

    def legacy_ids() -> set[int]:
        with stack.src() as s:
            return {r[0] for r in s.execute("SELECT id FROM items").fetchall()}

    # the first snapshot's sweep deleted the row the new database no longer had
    assert legacy_ids() == set(range(1, 100))

    # the business writes in legacy again (a row the new database never had), the new database
    # loses a row meanwhile, and the reverse capture re-snapshots (fresh state, fresh slot: the
    # delete is not streamed, only the sweep can take the row out of legacy)
    with stack.src() as s:
        s.execute("INSERT INTO items (id, name, qty) VALUES (5000, 'written in legacy', 1)")
    fb.stop(30)
    rev = _reverse(stack)
    with stack.tgt() as t:
        t.execute("DELETE FROM items WHERE id = 50")
        t.execute("SELECT pg_drop_replication_slot(%s)", (rev.capture.slot_name,))
    shutil.rmtree(rev.capture.state_dir)
    fb2 = _fallback_proc(stack, "fallback2", "--resnapshot")  # a second snapshot is refused without
    _reverse_fence(stack, [fb2])
    log = (stack.dir / "fallback2.log").read_text(errors="replace")
    assert "snapshot complete" in log, log[-3000:]
    ids = legacy_ids()
    assert 5000 in ids, f"the re-snapshot's sweep deleted a legacy-only row\n{log[-3000:]}"
    assert ids == (set(range(1, 100)) - {50}) | {5000}, sorted(set(range(1, 100)) ^ ids)
    assert "no longer holds 1 rows of public.items" in log, log[-3000:]


def test_fallback_second_snapshot_refused_without_resnapshot(
    stack: Stack, drop_reverse_slots: list[Stack]
) -> None:
    """The reverse capture restarted without its offsets (state dir removed, slot dropped) would
    snapshot the new database into legacy again, overwriting what the business wrote in legacy
    since: it refuses with one line and touches no legacy row. ``--resnapshot`` re-snapshots as
    before (and is audited); a restart with its offsets needs no snapshot and no override."""
    drop_reverse_slots.append(stack)
    forward_done(stack, 50)
    fb = _fallback_proc(stack)
    _reverse_fence(stack, [fb])
    assert "reverse snapshot at LSN" in (stack.dir / "fallback.log").read_text(errors="replace")

    def legacy_rows() -> list[tuple[Any, ...]]:
        with stack.src() as s:
            return s.execute("SELECT id, name, qty FROM items ORDER BY id").fetchall()

    # a clean restart with its offsets: no snapshot, no refusal
    fb.stop(30)
    fb_again = _fallback_proc(stack, "fallback-again")
    _reverse_fence(stack, [fb_again])
    again = (stack.dir / "fallback-again.log").read_text(errors="replace")
    assert "snapshot complete" not in again, again[-3000:]
    fb_again.stop(30)

    # back on legacy: the business updates a row there, then the reverse capture loses its state
    with stack.src() as s:
        s.execute("UPDATE items SET name = 'newer in legacy', qty = 999 WHERE id = 7")
    before = legacy_rows()
    assert (7, "newer in legacy", 999) in before
    rev = _reverse(stack)
    with stack.tgt() as t:
        t.execute("SELECT pg_drop_replication_slot(%s)", (rev.capture.slot_name,))
    shutil.rmtree(rev.capture.state_dir)

    status = stack.cli("fallback", "status", timeout=120)
    assert "reverse snapshot: completed" in status.stdout, status.stdout + status.stderr
    assert "unless --resnapshot" in status.stdout, status.stdout
    r = stack.cli("fallback", "start", timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-3000:]
    assert "already snapshotted the new database into legacy" in out, out[-3000:]
    assert "--resnapshot" in out and "state dir removed" in out, out[-3000:]
    assert "snapshot complete" not in out, out[-3000:]
    assert legacy_rows() == before, "the refused start changed legacy rows"

    # the override: a re-snapshot as before (the new database's value wins again), audited
    fb2 = _fallback_proc(stack, "fallback2", "--resnapshot")
    _reverse_fence(stack, [fb2])
    log = (stack.dir / "fallback2.log").read_text(errors="replace")
    assert "snapshot complete" in log and "--resnapshot: snapshotting" in log, log[-3000:]
    with stack.src() as s:
        assert s.execute("SELECT name, qty FROM items WHERE id = 7").fetchone() == ("item 7", 7)
    with stack.tgt() as t:
        audited = t.execute(
            "SELECT count(*) FROM crossfade.cutover_audit WHERE gate = 'fallback_resnapshot'"
        ).fetchone()
    assert audited == (1,), audited


def test_fallback_refuses_non_invertible_mapping(stack: Stack) -> None:
    stack.write_config(["public.accounts", "public.contacts", "public.notes"])
    raw: dict[str, Any] = yaml.safe_load(stack.config_path.read_text())
    raw["mapping"] = {
        "tables": {
            "public.accounts": {
                "targets": [
                    {"table": "app.accounts", "columns": {"account_id": "id", "name": "name"}}
                ]
            },
            "public.contacts": {
                "targets": [
                    {
                        "table": "app.people",
                        "columns": {
                            "person_id": "id",
                            "email": {"from": "email", "transforms": ["email"]},
                        },
                    }
                ]
            },
            "public.notes": {
                "filters": [{"name": "old", "when": [{"column": "id", "lt": 10}]}],
                "targets": [{"table": "app.notes", "columns": {"note_id": "id"}}],
            },
        }
    }
    stack.config_path.write_text(yaml.safe_dump(raw))
    r = stack.cli("fallback", "start", timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if "cannot fall back" in ln]
    assert len(lines) == 2, r.stderr
    assert (
        "public.contacts cannot fall back: column app.people.email is transformed (email)"
        in r.stderr
    )
    assert (
        "public.notes cannot fall back: filter old keeps rows out of the new database" in r.stderr
    )
    assert "public.accounts" not in r.stderr.split("remove the table")[0]
    assert "Traceback" not in r.stderr
    r = stack.cli("fallback", "status", "--json", timeout=60)
    st = json.loads(r.stdout)
    assert [t["legacy"] for t in st["tables"]] == ["public.accounts"]
    assert set(st["refused"]) == {"public.contacts", "public.notes"}
    with (
        pytest.raises(psycopg.errors.UndefinedTable),
        stack.src() as s,
    ):  # nothing was written anywhere
        s.execute("SELECT 1 FROM crossfade_fallback.offsets")


PGBENCH_KEYED = ["public.pgbench_accounts", "public.pgbench_branches", "public.pgbench_tellers"]
TPCB_NO_HISTORY = """\\set aid random(1, 20000)
\\set tid random(1, 10)
\\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = 1;
END;
"""


def test_fallback_drill_on_pgbench_tables_under_load(
    stack_factory, drop_reverse_slots: list[Stack]
) -> None:  # type: ignore[no-untyped-def]
    """The issue's drill: cutover on pgbench tables, then pgbench load on the new database with
    fallback running; verify --reverse under load, and both databases compared row by row after."""
    import subprocess

    stack = stack_factory(partitions=2, append_only_tables=["public.pgbench_history"])
    drop_reverse_slots.append(stack)
    pgbench = stack.pg.binaries.tool("pgbench")
    subprocess.run(
        [pgbench, "-i", "-s", "1", "-q", stack.source_dsn], check=True, capture_output=True
    )
    stack.sql("DELETE FROM pgbench_accounts WHERE aid > 20000")
    stack.write_config([*PGBENCH_KEYED, "public.pgbench_history"])
    raw = yaml.safe_load(stack.config_path.read_text())
    role = f"app_{stack.n}_{os.getpid()}"
    with stack.src() as c:
        if not c.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
            c.execute(f"CREATE ROLE {role} LOGIN")
        c.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        c.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
    raw["cutover"] = {
        "freeze_sql": f"REVOKE INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public FROM {role}",
        "unfreeze_sql": f"GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        "fence_timeout_s": 240,
    }
    raw["fallback"] = {"tables": PGBENCH_KEYED}  # pgbench_history has no key: it cannot go back
    stack.config_path.write_text(yaml.safe_dump(raw))
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    r = stack.cli("cutover", "--json", timeout=600)
    rep = json.loads(r.stdout)
    assert r.returncode == 0 and rep["go"], rep

    fb = _fallback_proc(stack)
    procs = list(stack.procs)
    t0 = time.monotonic()
    _reverse_fence(stack, procs)
    print(
        f"fallback: reverse snapshot of {20000 + 10 + 1} rows applied and fenced in {time.monotonic() - t0:.1f} s"
    )

    script = stack.dir / "tpcb-no-history.sql"
    script.write_text(TPCB_NO_HISTORY)
    bench = subprocess.Popen(
        [pgbench, "-n", "-c", "2", "-R", "100", "-T", "20", "-f", str(script), stack.target_dsn],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(3)
    fence_s = _reverse_fence(stack, procs)
    t1 = time.monotonic()
    r = stack.cli("verify", "--reverse", "--json", timeout=300)
    verify_s = time.monotonic() - t1
    out = bench.communicate(timeout=120)[0]
    assert bench.returncode == 0, out
    # verify's share locks must never cost the application a transaction
    assert pgbench_failed_transactions(out) == 0, out
    assert r.returncode == 0, f"verify --reverse under load: {r.stderr[-2000:]} {r.stdout[-2000:]}"
    vrep = json.loads(r.stdout)
    assert vrep["match"] and all(t["unsettled"] == 0 for t in vrep["tables"]), vrep
    tps = re.search(r"tps = ([\d.]+)", out)
    print(
        f"fallback under pgbench load ({tps.group(1) if tps else '?'} tps on the new database): reverse fence "
        f"{fence_s:.2f} s, verify --reverse {verify_s:.1f} s, in flight "
        f"{ {t['name']: t['in_flight'] for t in vrep['tables']} }"
    )

    # a TRUNCATE in the new database goes back too (the side table decides what it voids)
    with stack.tgt() as t:
        t.execute("TRUNCATE pgbench_tellers")
        t.execute("INSERT INTO pgbench_tellers (tid, bid, tbalance) VALUES (1, 1, 42), (2, 1, 43)")
    _reverse_fence(stack, procs)
    from crossfade.ops.demo import compare_all

    rev = _reverse(stack)
    bad = [d.as_dict() for d in compare_all(rev) if not d.match]
    assert not bad, bad
    with stack.src() as s:
        assert s.execute("SELECT tid, tbalance FROM pgbench_tellers ORDER BY tid").fetchall() == [
            (1, 42),
            (2, 43),
        ]
        total = s.execute("SELECT sum(abalance) FROM pgbench_accounts").fetchone()[0]
    with stack.tgt() as t:
        assert t.execute("SELECT sum(abalance) FROM pgbench_accounts").fetchone()[0] == total
    assert fb.alive()
