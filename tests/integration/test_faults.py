"""Process faults on the real embedded stack (FAULTS.md 3, 4, 6, 9) and refusals (17, 29, 30).

The full map of FAULTS.md cases to tests is in ``test_fault_cases.py``.

Each test keeps a writer busy on the legacy CRM, injects the fault, then stops the writer, waits
for a fence and compares every row of every table.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import psycopg
import pytest

from crossfade.embedded import EmbeddedBroker, EmbeddedPostgres
from crossfade.embedded.crm import TABLES, CrmWriter
from tests.conftest import Stack, wait_for

pytestmark = pytest.mark.integration


def _crm_stack(stack: Stack, accounts: int = 150) -> CrmWriter:
    writer = CrmWriter(stack.source_dsn, seed=stack.n, rate=60)
    writer.seed(accounts)
    stack.write_config(TABLES)
    return writer


def _target_rows(stack: Stack) -> int:
    try:
        with stack.tgt() as t:
            return sum(t.execute(f"SELECT count(*) FROM {x}").fetchone()[0] for x in TABLES)  # type: ignore[index]
    except psycopg.Error:
        return 0


def _sync_applied(stack: Stack) -> bool:
    """A sync worker has committed a batch (it holds partitions). With the COPY initial load the
    target has rows before any worker joined its group: rows there say nothing about sync."""
    try:
        with stack.tgt() as t:
            row = t.execute(
                "SELECT coalesce(sum(next_offset), 0) FROM crossfade.offsets"
            ).fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0] > 0)


def test_fault_09_rebalance_and_sigkill_sync_mid_stream(stack: Stack) -> None:
    writer = _crm_stack(stack)
    stack.start("capture")
    sync = stack.start("sync")
    writer.start()
    rng = random.Random(1)
    try:
        wait_for(lambda: _sync_applied(stack), 120, "sync to apply a first batch")
        for _ in range(3):
            time.sleep(rng.uniform(1.0, 3.0))
            sync.kill()  # SIGKILL: mid-batch or between commit and Kafka commit, wherever it is
            sync = stack.start("sync")
        # scale out: a second worker joins (rebalance mid-stream), then is killed
        second = stack.start("sync")
        time.sleep(8)
        second.kill()
        time.sleep(2)
    finally:
        writer.stop()
    stack.fence()
    stack.assert_equal()


def test_worker_stopped_while_joining_leaves_the_group_usable(
    stack_factory: Callable[..., Stack],
) -> None:
    """A worker killed, its replacement stopped (SIGTERM) while its join waits for the killed
    member's session to expire, then a third worker: the third must be assigned and catch up.

    On Tansu a LeaveGroup sent during that wait made the departed member leader of the next
    generation and no worker was ever assigned again (random fault seed 1049786793); the worker
    now completes a pending join before it leaves. A 6 s session keeps the join pending for 3 s
    (the embedded broker's default, 2 s, answers within 1 s: SIGTERM 1 s after the subscription
    found it joined)."""
    stack = stack_factory(session_timeout_ms=6000)
    writer = _crm_stack(stack)
    stack.start("capture")
    sync = stack.start("sync")
    writer.start()
    try:
        wait_for(lambda: _sync_applied(stack), 120, "sync to apply a first batch")
        sync.kill()
        joined = sync.tail(10_000).count("subscribed to")  # the workers share one log file
        sync = stack.start("sync")
        # subscribed: its JoinGroup is held until the killed member's session expires (a fixed
        # sleep here lost the race against the interpreter's start on a loaded machine: SIGTERM
        # came before the handlers were installed)
        wait_for(
            lambda: sync.tail(10_000).count("subscribed to") > joined,
            60,
            "the new worker to subscribe",
        )
        time.sleep(1)
        assert sync.stop(30) == 0, sync.tail(20)
        assert "completing it before leaving" in sync.tail(50), sync.tail(50)
        sync = stack.start("sync")
        time.sleep(3)
    finally:
        writer.stop()
    stack.fence(timeout=90)
    stack.assert_equal()


def test_fault_03_sigkill_capture_while_streaming(stack: Stack) -> None:
    writer = _crm_stack(stack)
    capture = stack.start("capture")
    stack.start("sync")
    writer.start()
    try:
        wait_for(lambda: _target_rows(stack) > 0, 120, "the snapshot to arrive")
        for _ in range(2):
            time.sleep(4)
            capture.kill()  # duplicates may reach Kafka after the restart; the guard drops them
            time.sleep(1)
            capture = stack.start("capture")
    finally:
        writer.stop()
    stack.fence()
    stack.assert_equal()


def test_fault_04_sigkill_capture_during_initial_snapshot(load_stack: Stack) -> None:
    stack = load_stack
    stack.sql("CREATE TABLE public.big (id int PRIMARY KEY, payload text, n numeric)")
    stack.sql("INSERT INTO big SELECT g, md5(g::text), g * 1.5 FROM generate_series(1, 60000) g")
    stack.write_config(["public.big"])
    capture = stack.start("capture")
    stack.start("sync")

    def some_applied() -> bool:
        try:
            with stack.tgt() as t:
                return bool(t.execute("SELECT count(*) > 0 FROM public.big").fetchone()[0])  # type: ignore[index]
        except psycopg.Error:
            return False

    wait_for(some_applied, 120, "the snapshot to start arriving")
    capture.kill()
    stack.sql("DELETE FROM big WHERE id % 7 = 0")
    stack.sql("UPDATE big SET payload = 'changed' WHERE id % 11 = 0")
    stack.start("capture")
    stack.fence()
    stack.assert_equal()


@pytest.mark.parametrize("initial_load", ["copy", "debezium"])
def test_fault_06_broker_loses_its_data(
    pg_server: EmbeddedPostgres, work_root, request, initial_load: str
) -> None:
    broker = EmbeddedBroker(log_to=work_root / f"tansu-loss-{initial_load}.log").start()
    request.addfinalizer(broker.stop)
    stack = Stack(pg_server, broker.bootstrap_servers, work_root, initial_load=initial_load)
    request.addfinalizer(stack.close)
    stack.sql("CREATE TABLE public.m (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO m SELECT g, 'v' || g FROM generate_series(1, 2000) g")
    stack.write_config(["public.m"])
    capture = stack.start("capture")
    stack.start("sync")
    stack.fence()
    stack.assert_equal()
    # the in-memory broker loses everything; capture goes down with it
    capture.kill()
    broker.restart()
    # changes while the broker had nothing: deletes must not survive in the target
    stack.sql("DELETE FROM m WHERE id <= 300")
    stack.sql("UPDATE m SET v = 'after loss' WHERE id > 1900")
    stack.sql("INSERT INTO m SELECT g, 'new' FROM generate_series(5001, 5100) g")
    stack.start("capture")  # new epoch: re-snapshot; sync must notice and sweep
    stack.fence()
    stack.assert_equal()
    cap_log = stack.procs[-1].tail(200)
    assert "re-snapshot" in cap_log or "is new" in cap_log


def test_sigkill_capture_in_the_middle_of_the_copy_load(stack_factory) -> None:  # type: ignore[no-untyped-def]
    """FAULTS 4 for ``initial_load: copy``: killed between two committed COPY chunks, capture
    drops the slot nobody streams from yet and loads again at a new snapshot; rows deleted and
    changed in between are right in the target (the reload empties what the first attempt
    copied), and what is written during the second load streams after it."""
    import json

    import yaml

    from crossfade.capture import initial_load

    stack = stack_factory(initial_load="copy", partitions=2)
    stack.sql("CREATE TABLE public.big (id int PRIMARY KEY, payload text, n numeric)")
    stack.sql(
        "INSERT INTO big SELECT g, repeat(md5(g::text), 6), g * 1.5 FROM generate_series(1, 300000) g"
    )
    stack.sql("VACUUM ANALYZE big")
    with stack.src() as c:
        pages = c.execute("SELECT pg_relation_size('big') / 8192").fetchone()[0]  # type: ignore[index]
    assert pages > 3 * initial_load.CHUNK_PAGES, (
        f"the table must span several COPY chunks ({pages} pages)"
    )
    stack.write_config(["public.big"])
    cfg = yaml.safe_load(stack.config_path.read_text())
    cfg["capture"]["initial_load_workers"] = 1  # chunks one after the other: a kill between two
    stack.config_path.write_text(yaml.safe_dump(cfg))
    state_dir = stack.settings.capture.state_dir
    capture = stack.start("capture")

    def some_copied() -> bool:
        try:
            with stack.tgt() as t:
                return bool(t.execute("SELECT count(*) > 0 FROM public.big").fetchone()[0])  # type: ignore[index]
        except psycopg.Error:
            return False

    wait_for(some_copied, 180, lambda: "the first COPY chunk to commit" + stack._diag())
    capture.kill()
    loads = [json.loads(p.read_text()) for p in state_dir.glob("load-*.json")]
    assert loads and not any(d["done"] for d in loads), (
        f"the kill must land inside the load: {loads}"
    )
    with stack.tgt() as t:
        copied = t.execute("SELECT count(*) FROM public.big").fetchone()[0]  # type: ignore[index]
    assert 0 < copied < 300000, copied
    stack.sql("DELETE FROM big WHERE id % 7 = 0")
    stack.sql("UPDATE big SET payload = 'changed' WHERE id % 11 = 0")
    capture = stack.start("capture")
    stack.start("sync")
    wait_for(
        lambda: "initial load by COPY" in capture.tail(200),
        120,
        lambda: "the second load to start" + stack._diag(),
    )
    for i in range(20):  # during (or just after) the second load: must stream after it
        stack.sql("UPDATE big SET n = -1 WHERE id = %s", (i * 1000 + 1,))
        stack.sql("INSERT INTO big VALUES (%s, 'new', 0)", (400000 + i,))
    stack.fence(timeout=300)
    stack.assert_equal()
    log = capture.tail(200)
    assert "starts over" in log, log
    assert all(json.loads(p.read_text())["done"] for p in state_dir.glob("load-*.json"))


def test_a_copy_load_the_target_refuses_stops_with_one_line(stack_factory) -> None:  # type: ignore[no-untyped-def]
    """A COPY stream failing in its worker process (here the target's CHECK refuses rows) stops the
    load with one line naming the cause; the load is not marked done and no worker outlives it."""
    import psutil

    from crossfade.capture.initial_load import CopyLoad, LoadState
    from crossfade.capture.preflight import check_source
    from crossfade.errors import CrossfadeError

    stack = stack_factory(initial_load="copy")
    stack.sql("CREATE TABLE public.ld (id int PRIMARY KEY, v int)")
    stack.sql("INSERT INTO ld SELECT g, g FROM generate_series(1, 1000) g")
    with stack.tgt() as t:
        t.execute("CREATE TABLE public.ld (id int PRIMARY KEY, v int CHECK (v < 500))")
    settings = stack.write_config(["public.ld"])
    state_dir = settings.capture.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)
    state = LoadState(state_dir, "e1")
    check_source(
        settings
    )  # what capture does first: the fence and signal tables the publication lists
    try:
        with pytest.raises(CrossfadeError) as err:
            CopyLoad(settings, state).run()
        line = str(err.value)
        assert "\n" not in line and line.startswith("the initial COPY load failed: "), line
        assert "ld_v_check" in line and "copying public.ld" in line, line
        assert state.read() is not None and not state.done

        def cmdline(p: psutil.Process) -> str:
            try:
                return " ".join(p.cmdline())
            except (
                psutil.Error,
                OSError,
            ):  # gone between the listing and the read: not left behind
                return ""

        workers = [
            p for p in psutil.Process().children(recursive=True) if "copy_worker" in cmdline(p)
        ]
        assert not workers, workers
    finally:
        with stack.src() as c:
            c.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s",
                (settings.capture.slot_name,),
            )


def _one_line_error(cp) -> str:  # type: ignore[no-untyped-def]
    assert cp.returncode not in (0, None), cp.stdout + cp.stderr
    assert "Traceback" not in cp.stderr, cp.stderr
    lines = [x for x in cp.stderr.splitlines() if x.startswith("crossfade:")]
    assert len(lines) == 1, cp.stderr
    return lines[0]


def test_fault_17_table_without_primary_key_refused(stack: Stack) -> None:
    stack.sql("CREATE TABLE public.nopk (a int, b text)")
    stack.write_config(["public.nopk"])
    cp = stack.cli("capture", timeout=60)
    line = _one_line_error(cp)
    assert cp.returncode == 3 and "public.nopk has no primary key" in line
    _nothing_written(stack)


def _nothing_written(stack: Stack) -> None:
    """A refused start leaves no replication slot behind in the source."""
    with stack.src() as c:
        slots = c.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE slot_name = %s", (f"cf_it{stack.n}",)
        ).fetchall()
    assert not slots, f"a refused start left {slots} behind"


def test_fault_29_config_errors_name_the_field(stack: Stack) -> None:
    stack.sql("CREATE TABLE public.ok (id int PRIMARY KEY)")
    stack.write_config(["public.ok"])
    good = stack.config_path.read_text()
    cases = {
        "typo": (
            good.replace("bootstrap_servers", "bootstrap_server"),
            "kafka.bootstrap_server is not a known setting",
        ),
        "missing": (
            "\n".join(x for x in good.splitlines() if "bootstrap_servers" not in x),
            "kafka.bootstrap_servers",
        ),
        "wrong type": (good.replace("partitions: 2", "partitions: two"), "kafka.partitions"),
    }
    for what, (text, needle) in cases.items():
        path = stack.dir / f"bad-{what.replace(' ', '-')}.yaml"
        path.write_text(text)
        for cmd in ("status", "capture"):
            cp = stack.cli(cmd, "-c", str(path), env={"CROSSFADE_CONFIG": ""})
            line = _one_line_error(cp)
            assert cp.returncode == 2 and needle in line, (what, cmd, line)
    cp = stack.cli("status", env={"CROSSFADE_SYNC__BATCH_SIZE": "lots"})
    assert cp.returncode == 2 and "sync.batch_size" in _one_line_error(cp)
    _nothing_written(stack)


def test_fault_30_connection_errors_are_one_clear_line(
    stack: Stack, pg_server: EmbeddedPostgres, work_root
) -> None:
    stack.sql("CREATE TABLE public.ok (id int PRIMARY KEY)")
    stack.write_config(["public.missing"])
    line = _one_line_error(stack.cli("capture", timeout=60))
    assert "public.missing does not exist" in line

    stack.write_config(["public.ok"])
    bad_dsn = "postgresql://postgres:s3cret@127.0.0.1:1/nowhere"
    for cmd in ("capture", "sync", "status"):
        cp = stack.cli(
            cmd,
            env={"CROSSFADE_SOURCE__DSN": bad_dsn, "CROSSFADE_TARGET__DSN": bad_dsn},
            timeout=60,
        )
        line = _one_line_error(cp)
        assert "cannot connect to the" in line and "s3cret" not in cp.stderr + cp.stdout, (
            cmd,
            cp.stderr,
        )

    # wrong credentials: a user the server does not know (the embedded server trusts passwords)
    wrong_user = stack.source_dsn.replace("postgres@", "nosuchuser:pw-xyz@")
    cp = stack.cli("capture", env={"CROSSFADE_SOURCE__DSN": wrong_user}, timeout=60)
    line = _one_line_error(cp)
    assert cp.returncode == 3 and "nosuchuser" in line and "pw-xyz" not in cp.stderr + cp.stdout, (
        cp.stderr
    )

    cp = stack.cli("capture", env={"CROSSFADE_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"}, timeout=90)
    assert "cannot reach Kafka" in _one_line_error(cp)

    with stack.src() as c:
        c.execute("DROP ROLE IF EXISTS norepl; CREATE ROLE norepl LOGIN")
    norepl = stack.source_dsn.replace("postgres@", "norepl@")
    line = _one_line_error(stack.cli("capture", env={"CROSSFADE_SOURCE__DSN": norepl}, timeout=60))
    assert "REPLICATION" in line
    _nothing_written(stack)

    # wal_level replica on a second server
    other = EmbeddedPostgres(log_to=work_root / "pg-replica.log").start()
    try:
        with psycopg.connect(other.dsn(), autocommit=True) as c:
            c.execute("ALTER SYSTEM SET wal_level = 'replica'")
        other.restart()
        other.create_database("legacy")
        cp = stack.cli("capture", env={"CROSSFADE_SOURCE__DSN": other.dsn("legacy")}, timeout=60)
        line = _one_line_error(cp)
        assert cp.returncode == 3 and "wal_level=replica" in line
    finally:
        other.stop()
