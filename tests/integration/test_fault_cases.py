"""FAULTS.md as tests: one named test per case, on the real embedded stack.

Every case ends with the FAULTS.md check: the writer stops, a fence goes through, and source and
target are compared key by key (each row's text form) with no Debezium placeholder anywhere in
the target (``Stack.assert_equal``). The harness is ``tests/integration/fault_harness.py``.

| case | test |
|---|---|
| 1 SIGKILL sync after its DB commit, before Kafka | ``test_fault_cases.py::test_fault_01_sigkill_sync_after_commit_before_kafka_commit`` |
| 2 SIGKILL sync mid-batch | ``test_fault_cases.py::test_fault_02_sigkill_sync_mid_batch_rolls_back_whole`` |
| 3 SIGKILL capture while streaming | ``test_faults.py::test_fault_03_sigkill_capture_while_streaming`` |
| 4 SIGKILL capture during the snapshot | ``test_faults.py::test_fault_04_sigkill_capture_during_initial_snapshot`` |
| 5 capture restart with a large open transaction | ``test_fault_cases.py::test_fault_05_capture_restart_with_large_open_transaction`` |
| 6 the broker loses its data | ``test_faults.py::test_fault_06_broker_loses_its_data`` |
| 7 target connection dropped at COMMIT | ``test_fault_cases.py::test_fault_07_target_connection_dropped_at_commit`` |
| 8 target database restarted | ``test_fault_cases.py::test_fault_08_target_database_restarted_mid_stream`` |
| 9 rebalance mid-batch | ``test_faults.py::test_fault_09_rebalance_and_sigkill_sync_mid_stream`` |
| 10 SIGSTOP past the poll interval | ``test_fault_cases.py::test_fault_10_paused_worker_stale_writes_refused``, ``test_fault_cases.py::test_fault_10_worker_frozen_inside_its_batch_transaction_releases_its_locks`` |
| 11 a range of offsets replayed twice | ``test_fault_cases.py::test_fault_11_offsets_replayed_twice_identical_target`` |
| 12 older event after a newer one | ``test_fault_cases.py::test_fault_12_older_event_after_newer_is_skipped`` |
| 13 DELETE then a replayed CREATE | ``test_fault_cases.py::test_fault_13_replayed_create_after_delete_stays_deleted`` |
| 14 tombstones | ``test_fault_cases.py::test_fault_14_tombstones_are_no_ops`` |
| 15 primary-key UPDATE | ``test_fault_cases.py::test_fault_15_primary_key_update`` |
| 16 small column beside an unchanged TOASTed one | ``test_fault_cases.py::test_fault_16_unchanged_toast_value_survives`` |
| 17 table without a primary key | ``test_faults.py::test_fault_17_table_without_primary_key_refused`` |
| 18 TRUNCATE | ``test_fault_cases.py::test_fault_18_truncate_propagates`` |
| 19 ADD COLUMN mid-stream | ``test_fault_cases.py::test_fault_19_add_column_mid_stream`` |
| 20 RENAME / DROP COLUMN mid-stream | ``test_fault_cases.py::test_fault_20_drop_and_rename_column_stop_clearly`` |
| 21 type change mid-stream | ``test_fault_cases.py::test_fault_21_type_change_stops_clearly`` |
| 22 a huge transaction, bounded memory (slow) | ``test_fault_cases.py::test_fault_22_huge_transaction_bounded_memory`` |
| 23 a 20 MB value | ``test_fault_cases.py::test_fault_23_twenty_mb_value_delivered_or_refused`` |
| 24 types round-trip exactly | ``test_pipeline.py::test_fault_24_every_type_round_trips_through_snapshot_and_stream`` |
| 25 corrupt Avro bytes on a topic | ``test_dead_letters.py::test_fault_25_corrupt_avro_is_dead_lettered_and_holds_its_key`` |
| 26 schema store unreachable | ``test_fault_cases.py::test_fault_26_schema_registry_unreachable_sync_waits`` |
| 27 a child before its parent | ``test_mapping_sync.py::test_fault_27_child_before_parent_is_deferred_then_applied`` |
| 28 a record failing the mapping's validation | ``test_mapping_sync.py::test_fault_28_validation_failure_is_a_dead_letter_with_its_rule`` |
| 29 config typo, missing field, wrong type | ``test_faults.py::test_fault_29_config_errors_name_the_field`` |
| 30 wrong DSN, unreachable broker, wrong credentials | ``test_faults.py::test_fault_30_connection_errors_are_one_clear_line`` |
| 31 rewind drill | ``test_verify_cutover.py::test_fault_31_rewind_drill_replays_over_rows_written_since_the_checkpoint`` |
| 32 cutover drill | ``test_verify_cutover.py::test_fault_32_verify_live_and_cutover_dry_run_failing_and_real`` |
| 33 the new database crashes (COPY load, batch, dedup merge) | ``test_fault_components.py::test_fault_33_new_database_crashes_during_copy_and_a_batch``, ``test_fault_components.py::test_fault_33_new_database_crashes_during_a_dedup_merge`` |
| 34 the legacy database restarts | ``test_fault_components.py::test_fault_34_legacy_database_restarts`` |
| 35 the broker dies and comes back empty, a stalled table reported | ``test_fault_components.py::test_fault_35_broker_resets_under_pgbench_load``, ``test_fault_components.py::test_fault_35_stalled_table_is_reported_and_recovered`` (and, on a real Kafka only, ``test_fault_35_broker_restart_keeps_its_data``) |
| 36 network cut between sync and the new database | ``test_fault_components.py::test_fault_36_network_cut_longer_than_the_session_timeout`` |
| 37 a record whose envelope has the wrong shape | ``test_fault_cases.py::test_fault_37_wrong_envelope_shape_is_dead_lettered`` |
| 38 a child committed with its parent, seen first through its own topic | ``test_mapping_children.py::test_fault_38_child_committed_with_its_parent_but_seen_first_waits_for_it`` |
| 39 duplicates during the stream, members changing groups, survivors deleted | ``test_mapping_children.py::test_fault_39_children_follow_merges_handovers_and_departures`` |

(31 also as a mapping deploy gone wrong: ``test_mapping_sync.py::test_fault_31_rewind_drill_with_a_faulty_mapping``.)
``pytest -k test_fault_`` runs every case.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from crossfade.embedded import EmbeddedBroker, EmbeddedPostgres
from tests.conftest import Stack, wait_for
from tests.integration.fault_harness import (
    FX_TABLE,
    SplitStack,
    TypedWriter,
    inject_cut_broker_connections,
    inject_cut_target_connections,
    inject_target_restart,
    peak_rss_mb,
    proc_state,
    read_records,
    reproduce,
    settle,
    start_with_fault,
    stat_skipped,
    target_rows,
)

pytestmark = pytest.mark.integration


def _fx_stack(
    stack_factory: Callable[..., Stack], rows: int = 200, rate: float = 40, **kw: object
) -> tuple[Stack, TypedWriter]:
    stack = stack_factory(**kw)
    writer = TypedWriter(stack.source_dsn, seed=stack.n, rate=rate).create(rows)
    stack.write_config([FX_TABLE])
    return stack, writer


def _fired(proc, point: str, timeout: float = 180, writer: TypedWriter | None = None) -> None:  # type: ignore[no-untyped-def]
    def fired() -> bool:
        if f"FAULT POINT {point} fired" in proc.tail(400):
            return True
        assert proc.alive(), f"{proc.name} died before fault point {point} fired:\n{proc.tail()}"
        return False

    try:
        wait_for(fired, timeout, f"fault point {point} to fire")
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; writer: {writer.stats if writer else '-'}\n{proc.tail()}"
        ) from None


# -- process faults ------------------------------------------------------------------------------


def _fault_data(proc, what: str, timeout: float = 60) -> dict:  # type: ignore[no-untyped-def]
    """The JSON the fault hook printed for ``what`` (see fault_hooks/sitecustomize.py)."""

    def find() -> dict | None:
        for line in reversed(proc.tail(2000).splitlines()):
            if line.startswith(f"FAULT DATA {what} "):
                return json.loads(line.split(" ", 3)[3])
        return None

    return wait_for(find, timeout, f"the fault hook's {what} report\n{proc.tail()}")


def _stored_offsets(stack: Stack, keys) -> dict[str, int]:  # type: ignore[no-untyped-def]
    out = {}
    with stack.tgt() as t:
        for k in keys:
            topic, part = k[:-1].rsplit("[", 1)
            row = t.execute(
                "SELECT next_offset FROM crossfade.offsets WHERE topic = %s AND partition = %s",
                (topic, int(part)),
            ).fetchone()
            out[k] = int(row[0]) if row else -1
    return out


def _kafka_committed(stack: Stack, keys) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from confluent_kafka import Consumer, TopicPartition

    s = stack.settings
    c = Consumer(
        {**s.kafka.client_config(), "group.id": s.sync.group_id, "enable.auto.commit": False}
    )
    tps = [TopicPartition(k[:-1].rsplit("[", 1)[0], int(k[:-1].rsplit("[", 1)[1])) for k in keys]
    got = c.committed(tps, timeout=30)
    c.close()
    return {f"{tp.topic}[{tp.partition}]": tp.offset for tp in got}


def _assigned_after(proc, marker: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Offsets in the "assigned" log lines after ``marker``, the latest per partition (a sync
    of several processes, sync.processes, logs one line per process)."""
    text = proc.tail(3000)
    text = text[text.rfind(marker) :]
    lines = [
        json.loads(x)["msg"] for x in text.splitlines() if x.startswith("{") and '"assigned ' in x
    ]
    return {
        part.rsplit("@", 1)[0]: int(part.rsplit("@", 1)[1])
        for line in lines
        for part in line[len("assigned ") :].split(", ")
    }


def test_fault_01_sigkill_sync_after_commit_before_kafka_commit(
    stack_factory: Callable[..., Stack],
) -> None:
    stack, writer = _fx_stack(stack_factory)
    stack.start("capture")
    sync = start_with_fault(stack, "sync", "after_commit:3")
    writer.start()
    _fired(sync, "after_commit:3", writer=writer)
    data = _fault_data(sync, "after_commit")
    wait_for(lambda: not sync.alive(), 30, "the worker to die")
    sync.expected_dead = True
    ends = {k: hi + 1 for k, (_lo, hi) in data["span"].items()}
    assert data["stored"] == ends, "the batch's offsets were not committed with its rows"
    kafka = _kafka_committed(stack, ends)
    assert all(kafka[k] < ends[k] for k in ends), (
        f"Kafka heard of the batch before the kill: {kafka} vs {ends}"
    )
    sync = stack.start("sync")  # seeks to the offsets stored with the data, not Kafka's
    assigned = wait_for(
        lambda: (a := _assigned_after(sync, "FAULT POINT")).keys() >= ends.keys() and a,
        120,
        "the new workers' assignment of the killed worker's partitions",
    )
    for k, end in ends.items():
        assert assigned[k] >= end, (
            f"{k} restarted at {assigned[k]}, before the committed batch's end {end}"
        )
    settle(stack, writer)


def test_fault_02_sigkill_sync_mid_batch_rolls_back_whole(
    stack_factory: Callable[..., Stack],
) -> None:
    stack, writer = _fx_stack(stack_factory)
    stack.start("capture")
    sync = start_with_fault(stack, "sync", "mid_batch:3")
    writer.start()
    _fired(sync, "mid_batch:3", writer=writer)
    data = _fault_data(sync, "mid_batch")
    assert data["events"] > 0, "the batch wrote nothing before the kill"
    wait_for(lambda: not sync.alive(), 30, "the worker to die")
    sync.expected_dead = True
    # rolled back whole: the offsets are those from before the batch (rows and offsets commit together)
    assert _stored_offsets(stack, data["stored"]) == data["stored"]
    assert all(data["stored"][k] <= lo for k, (lo, _hi) in data["span"].items())
    stack.start("sync")
    settle(stack, writer)


@pytest.mark.slow
def test_fault_05_capture_restart_with_large_open_transaction(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory()
    stack.sql("CREATE TABLE public.big5 (id int PRIMARY KEY, v text, n int)")
    stack.sql("INSERT INTO big5 SELECT g, md5(g::text), 0 FROM generate_series(1, 5000) g")
    stack.write_config(["public.big5"])
    capture = stack.start("capture")
    stack.start("sync")
    stack.fence()
    tx = stack.src()
    tx.execute("BEGIN")
    tx.execute(
        "INSERT INTO big5 SELECT g, repeat('x', 200) || g, 1 FROM generate_series(100001, 120000) g"
    )
    tx.execute("UPDATE big5 SET n = n + 1 WHERE id % 3 = 0")
    # restart capture while the transaction is open (graceful), then once more by SIGKILL
    assert capture.stop(60) is not None
    capture = stack.start("capture")
    time.sleep(5)
    tx.execute("DELETE FROM big5 WHERE id % 5 = 0")
    tx.execute("COMMIT")
    tx.close()
    wait_for(
        lambda: target_rows(stack, "public.big5") > 5000,
        180,
        "the large transaction to start arriving",
    )
    capture.kill()
    stack.start("capture")
    stack.fence(timeout=400)
    stack.assert_equal()
    with stack.src() as c:
        assert c.execute("SELECT count(*) FROM big5").fetchone() == (20000,)


def test_fault_07_target_connection_dropped_at_commit(stack_factory: Callable[..., Stack]) -> None:
    stack, writer = _fx_stack(stack_factory)
    stack.start("capture")
    sync = start_with_fault(stack, "sync", "commit_ack_lost:3")
    writer.start()
    _fired(sync, "commit_ack_lost:3", writer=writer)
    # the COMMIT went through: the retry finds every record of the batch below its stored offsets
    retry = _fault_data(sync, "retry")
    for k, (_lo, hi) in retry["span"].items():
        assert retry["stored"][k] > hi, (
            f"the retry would apply {k} up to {hi} again (stored {retry['stored'][k]})"
        )
    assert "transient error, retry" in sync.tail(400)
    assert sync.alive(), sync.tail()
    # then sessions cut from the server side, wherever the worker is (often mid-COMMIT)
    for _ in range(6):
        inject_cut_target_connections(stack)
        time.sleep(1.5)
    assert sync.alive(), sync.tail()
    settle(stack, writer)


@pytest.fixture
def target_pg(work_root: Path) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(
        log_to=work_root / f"pg-target-{os.getpid()}-{time.monotonic_ns()}.log"
    ).start()
    yield pg
    pg.stop()


def test_fault_08_target_database_restarted_mid_stream(
    pg_server: EmbeddedPostgres,
    target_pg: EmbeddedPostgres,
    bootstrap: str,
    work_root: Path,
    request: pytest.FixtureRequest,
) -> None:
    stack = SplitStack(pg_server, target_pg, bootstrap, work_root)
    request.addfinalizer(stack.close)
    writer = TypedWriter(stack.source_dsn, seed=8, rate=40).create(200)
    stack.write_config([FX_TABLE])
    stack.start("capture")
    sync = stack.start("sync")
    writer.start()
    wait_for(lambda: target_rows(stack, FX_TABLE) > 0, 180, "sync to apply the snapshot")
    # mid-stream: a COPY load (initial_load: copy) writes into the target too, and a target lost during it
    # stops capture (its restart loads again: test_a_copy_load_the_target_refuses_stops_...)
    stack.fence()
    time.sleep(2)
    inject_target_restart(stack, down_s=6, crash=True)  # a crash: sessions gone, recovery on start
    time.sleep(3)
    assert sync.alive(), f"sync died with the target down instead of retrying:\n{sync.tail()}"
    inject_target_restart(stack, crash=False)  # and an orderly restart
    time.sleep(3)
    assert sync.alive(), sync.tail()
    settle(stack, writer)
    assert "transient error, retry" in sync.tail(2000)


@pytest.fixture
def own_bootstrap(work_root: Path) -> Iterator[str]:
    """A broker of the test's own, for cases that leave the embedded broker unable to serve new
    consumers (seen after cutting a silent member's connections, case 10, and after the cases
    that load it most, 22 and 23): the session's broker must stay usable for later tests."""
    real = os.environ.get("CROSSFADE_TEST_BOOTSTRAP")
    if real:
        yield real
        return
    broker = EmbeddedBroker(log_to=work_root / f"tansu-own-{time.monotonic_ns()}.log").start()
    yield broker.bootstrap_servers
    broker.stop()


@pytest.fixture
def own_stack_factory(
    pg_server: EmbeddedPostgres, own_bootstrap: str, work_root: Path
) -> Iterator[Callable[..., Stack]]:
    """``stack_factory`` on a broker of the test's own (see ``own_bootstrap``)."""
    made: list[Stack] = []

    def make(**kw: object) -> Stack:
        s = Stack(pg_server, own_bootstrap, work_root, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_fault_10_paused_worker_stale_writes_refused(
    pg_server: EmbeddedPostgres, own_bootstrap: str, work_root: Path, request: pytest.FixtureRequest
) -> None:
    stack = Stack(pg_server, own_bootstrap, work_root, max_poll_interval_ms=10_000)
    request.addfinalizer(stack.close)
    writer = TypedWriter(stack.source_dsn, seed=10, rate=40).create(200)
    stack.write_config([FX_TABLE])
    stack.start("capture")
    stale = start_with_fault(stack, "sync", "stop_before_apply:3")
    writer.start()
    _fired(stale, "stop_before_apply:3")
    wait_for(lambda: proc_state(stale) == "T", 30, "the worker to be stopped")
    stack.start("sync")  # takes the partitions once the paused member is gone from the group
    time.sleep(14)  # past max.poll.interval.ms (10 s) and session.timeout.ms (6 s)
    # Kafka has evicted the silent member by now; Tansu keeps a connected one until its
    # connection drops: cut it, as a network partition would
    assert inject_cut_broker_connections(stale, stack.bootstrap) > 0
    writer.stop()
    stack.fence()  # every partition is applied by the new owner while the old one is frozen
    os.kill(stale.p.pid, signal.SIGCONT)  #: the paused worker resumes mid-batch
    wait_for(
        lambda: "owned by another sync worker" in stale.tail(400),
        60,
        "the resumed worker's stale batch to be refused\n" + stale.tail(),
    )
    writer.start()
    time.sleep(5)
    settle(stack, writer)


def test_fault_10_worker_frozen_inside_its_batch_transaction_releases_its_locks(
    pg_server: EmbeddedPostgres, own_bootstrap: str, work_root: Path, request: pytest.FixtureRequest
) -> None:
    """Frozen inside its batch transaction, a worker holds the offset row locks its successor's
    claim waits for: the successor names the holder while it waits, the server ends the frozen
    session after ``sync.idle_in_transaction_timeout_s`` (or, when the server's timer was disarmed
    by the applier's last pipeline flush, the successor's claim does, a moment later) and the
    successor applies everything while the old worker is still stopped; resumed, the old worker's
    retried batch is refused."""
    idle_s = 30  # the successor claims ~7-15 s after the freeze (the old member is cut at 14 s)
    stack = Stack(
        pg_server,
        own_bootstrap,
        work_root,
        max_poll_interval_ms=10_000,
        idle_in_transaction_timeout_s=idle_s,
        claim_wait_warn_s=2,
    )
    request.addfinalizer(stack.close)
    writer = TypedWriter(stack.source_dsn, seed=10, rate=40).create(200)
    stack.write_config([FX_TABLE])
    stack.start("capture")
    stale = start_with_fault(stack, "sync", "stop_mid_batch:3")
    writer.start()
    _fired(stale, "stop_mid_batch:3")
    wait_for(lambda: proc_state(stale) == "T", 30, "the worker to be stopped")
    stack.start("sync")
    time.sleep(14)  # past max.poll.interval.ms (10 s) and session.timeout.ms (6 s)
    assert inject_cut_broker_connections(stale, stack.bootstrap) > 0  # Tansu: see fault 10 above
    writer.stop()
    # every partition applied by the new owner while the old one is still frozen mid-batch: its
    # session was ended, and with it its locks
    stack.fence(timeout=idle_s + 120)
    assert proc_state(stale) == "T"
    log = stale.tail(4000)  # the two workers share the log file
    assert "has waited" in log and "for a lock held by pid" in log, log
    assert "(idle in transaction, " in log and "idle_in_transaction_timeout_s (30 s)" in log, log
    assert "went through after" in log, log
    os.kill(stale.p.pid, signal.SIGCONT)  #: it resumes mid-batch, on a session the server ended
    wait_for(
        lambda: "owned by another sync worker" in stale.tail(400),
        60,
        "the resumed worker's stale batch to be refused\n" + stale.tail(),
    )
    assert "transient error, retry 1" in stale.tail(400)  # its session's end, when it woke
    writer.start()
    time.sleep(5)
    settle(stack, writer)


# -- event-level cases: one stack, a table per case ------------------------------------------------

EVENT_TABLES = [
    "public.e11",
    "public.e12",
    "public.e13",
    "public.e14",
    "public.e15",
    "public.e16",
    "public.e18",
    "public.e19",
]


@pytest.fixture(scope="module")
def ev(pg_server: EmbeddedPostgres, bootstrap: str, work_root: Path) -> Iterator[Stack]:
    stack = Stack(pg_server, bootstrap, work_root)
    for t in EVENT_TABLES:
        stack.sql(f"CREATE TABLE {t} (id int PRIMARY KEY, v text, small int DEFAULT 0, big text)")
        stack.sql(f"INSERT INTO {t} SELECT g, 'v' || g, 0, NULL FROM generate_series(1, 300) g")
    stack.write_config(EVENT_TABLES)
    stack.start("capture")
    stack.start("sync")
    stack.fence()
    yield stack
    stack.close()


def _sync_proc(stack: Stack):  # type: ignore[no-untyped-def]
    return next(p for p in reversed(stack.procs) if p.name == "sync" and p.alive())


def _target_hash(stack: Stack, table: str) -> str:
    with stack.tgt() as t:
        return str(
            t.execute(
                f"SELECT md5(string_agg(r::text, '|' ORDER BY r.id)) FROM {table} r"
            ).fetchone()[0]
        )  # type: ignore[index]


def test_fault_11_offsets_replayed_twice_identical_target(ev: Stack) -> None:
    ev.sql(
        "UPDATE e11 SET v = v || '!' WHERE id % 4 = 0; DELETE FROM e11 WHERE id % 9 = 0; UPDATE e11 SET id = id + 1000 WHERE id < 5"
    )
    ev.fence()
    before = _target_hash(ev, "public.e11")
    topic = ev.settings.kafka.table_topic("public.e11")
    for _ in range(2):
        skipped = stat_skipped(ev, "public.e11")
        _sync_proc(ev).stop()
        with ev.tgt() as t:
            n = t.execute(
                "UPDATE crossfade.offsets SET next_offset = 0 WHERE topic = %s", (topic,)
            ).rowcount
        assert n == ev.partitions
        ev.start("sync")
        ev.fence()
        assert _target_hash(ev, "public.e11") == before, "replaying offsets changed the target"
        assert stat_skipped(ev, "public.e11") > skipped, "the range was not replayed"
    ev.assert_equal()


def _find(recs, key: int, pred):  # type: ignore[no-untyped-def]
    return [
        r
        for r in recs
        if r.event is not None and (r.event.key or {}).get("id") == key and pred(r.event)
    ]


def test_fault_12_older_event_after_newer_is_skipped(ev: Stack) -> None:
    ev.sql("UPDATE e12 SET v = 'b' WHERE id = 1")
    ev.sql("UPDATE e12 SET v = 'c' WHERE id = 1")
    ev.fence()
    older = _find(read_records(ev, "public.e12"), 1, lambda e: e.after and e.after.get("v") == "b")
    assert len(older) == 1
    skipped = stat_skipped(ev, "public.e12")
    reproduce(ev, "public.e12", older[0])
    ev.fence()
    with ev.tgt() as t:
        assert t.execute("SELECT v FROM e12 WHERE id = 1").fetchone() == ("c",)
    assert stat_skipped(ev, "public.e12") == skipped + 1, (
        "the older event was not stopped by the guard"
    )
    ev.assert_equal()


def test_fault_13_replayed_create_after_delete_stays_deleted(ev: Stack) -> None:
    ev.sql("INSERT INTO e13 VALUES (5000, 'born', 0, NULL)")
    ev.sql("DELETE FROM e13 WHERE id = 5000")
    ev.fence()
    create = _find(read_records(ev, "public.e13"), 5000, lambda e: e.op == "c")
    assert len(create) == 1
    skipped = stat_skipped(ev, "public.e13")
    reproduce(ev, "public.e13", create[0])
    ev.fence()
    with ev.tgt() as t:
        assert t.execute("SELECT count(*) FROM e13 WHERE id = 5000").fetchone() == (0,)
    assert stat_skipped(ev, "public.e13") == skipped + 1
    ev.assert_equal()


def test_fault_14_tombstones_are_no_ops(ev: Stack) -> None:
    # an event of live key 8 in the topic (a COPY load (initial_load: copy) puts none of the initial rows'
    # there): an update that keeps its value
    ev.sql("UPDATE e14 SET v = 'v8' WHERE id = 8")
    ev.sql("DELETE FROM e14 WHERE id = 7")
    ev.fence()
    recs = read_records(ev, "public.e14")
    deletes = _find(recs, 7, lambda e: e.op == "d")
    assert deletes, "no delete event for id 7"
    after_delete = [
        r for r in recs if r.partition == deletes[0].partition and r.offset > deletes[0].offset
    ]
    assert any(r.value is None and r.key == deletes[0].key for r in after_delete), (
        "Debezium wrote no tombstone"
    )
    # a stray tombstone for a live key changes nothing
    live = _find(recs, 8, lambda e: e.op in ("r", "c", "u"))
    assert live
    reproduce(ev, "public.e14", live[0], value=None)
    ev.sql("UPDATE e14 SET v = 'after tombstone' WHERE id = 9")
    ev.fence()
    with ev.tgt() as t:
        assert t.execute("SELECT v FROM e14 WHERE id = 8").fetchone() == ("v8",)
    ev.assert_equal()


def test_fault_15_primary_key_update(ev: Stack) -> None:
    ev.sql("UPDATE e15 SET id = id + 1000 WHERE id <= 10")
    ev.sql(
        "BEGIN; UPDATE e15 SET id = 20000 WHERE id = 20; UPDATE e15 SET id = 20 WHERE id = 21; COMMIT"
    )
    ev.fence()
    with ev.tgt() as t:
        assert t.execute("SELECT count(*) FROM e15 WHERE id <= 10 OR id = 21").fetchone() == (0,)
        assert t.execute("SELECT v FROM e15 WHERE id IN (20, 20000) ORDER BY id").fetchall() == [
            ("v21",),
            ("v20",),
        ]
    ev.assert_equal()


def test_fault_16_unchanged_toast_value_survives(ev: Stack) -> None:
    big = os.urandom(40_000).hex()  # incompressible: stored out of line
    ev.sql("UPDATE e16 SET big = %s WHERE id <= 3", (big,))
    ev.fence()
    ev.sql("UPDATE e16 SET small = small + 5 WHERE id <= 3")
    ev.fence()
    with ev.tgt() as t:
        assert t.execute("SELECT big, small FROM e16 WHERE id = 2").fetchone() == (big, 5)
    ev.assert_equal()  # includes: no __debezium_unavailable_value anywhere


def test_fault_18_truncate_propagates(ev: Stack) -> None:
    ev.sql("BEGIN; TRUNCATE e18; INSERT INTO e18 VALUES (1, 'after truncate', 0, NULL); COMMIT")
    ev.fence()
    with ev.tgt() as t:
        assert t.execute("SELECT id, v FROM e18").fetchall() == [(1, "after truncate")]
    ev.assert_equal()


def test_fault_19_add_column_mid_stream(ev: Stack) -> None:
    ev.sql("ALTER TABLE e19 ADD COLUMN extra text DEFAULT 'dflt'")
    ev.sql("INSERT INTO e19 (id, v, extra) VALUES (9001, 'new', 'given')")
    ev.sql("UPDATE e19 SET v = 'touched' WHERE id = 1")
    ev.fence()
    with ev.tgt() as t:
        assert t.execute("SELECT extra FROM e19 WHERE id = 9001").fetchone() == ("given",)
    ev.assert_equal()  # the untouched old rows carry the default on both sides
    # Changes from before ADD COLUMN delivered again after it (a capture restart re-sends them;
    # with several partitions they can also arrive late): they predate the column, so they are
    # not a drop. Replay e19's whole topic to sync.
    _sync_proc(ev).stop()
    with ev.tgt() as t:
        t.execute("UPDATE crossfade.offsets SET next_offset = 0 WHERE topic LIKE '%.public.e19'")
        assert (
            t.execute(
                "SELECT count(*) FROM crossfade.offsets WHERE topic LIKE '%.public.e19'"
            ).fetchone()[0]
            > 0
        )  # type: ignore[index]
    ev.start("sync")
    ev.sql("UPDATE e19 SET v = 'after replay' WHERE id = 2")
    ev.fence()
    ev.assert_equal()
    # a column added with no change after it: no event carries it; the fence adds it
    ev.sql("ALTER TABLE e19 ADD COLUMN quiet int DEFAULT 7")
    ev.fence()
    with ev.tgt() as t:
        assert t.execute("SELECT count(*) FROM e19 WHERE quiet = 7").fetchone() == (
            301,
        )  # 300 + row 9001
    ev.assert_equal()
    ev.sql("UPDATE e19 SET quiet = 8 WHERE id = 3")
    ev.fence()
    ev.assert_equal()


# -- schema changes that cannot be followed: a clear stop --------------------------------------------


def _stops_with(proc, needle: str, timeout: float = 120) -> str:  # type: ignore[no-untyped-def]
    wait_for(lambda: not proc.alive(), timeout, f"{proc.name} to stop on purpose\n{proc.tail()}")
    proc.expected_dead = True
    out = proc.tail(400)
    assert proc.p.returncode not in (0, None)
    lines = [x for x in out.splitlines() if x.startswith("crossfade:")]
    assert lines and needle in lines[-1], out
    assert "Traceback" not in out, out
    return lines[-1]


def test_fault_20_drop_and_rename_column_stop_clearly(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory()
    stack.sql("CREATE TABLE public.c20 (id int PRIMARY KEY, a text, b text)")
    stack.sql("INSERT INTO c20 SELECT g, 'a' || g, 'b' || g FROM generate_series(1, 100) g")
    stack.write_config(["public.c20"])
    stack.start("capture")
    sync = stack.start("sync")
    stack.fence()
    stack.sql("ALTER TABLE c20 DROP COLUMN b")
    stack.sql("INSERT INTO c20 VALUES (101, 'a101')")
    line = _stops_with(sync, "no longer carry column(s) b")
    assert "public.c20" in line
    # the README's runbook line: drop it from the target too, restart sync
    with stack.tgt() as t:
        t.execute("ALTER TABLE public.c20 DROP COLUMN b")
    sync = stack.start("sync")
    stack.fence()
    stack.assert_equal()
    # RENAME: events carry the new name and lack the old one
    stack.sql("ALTER TABLE c20 RENAME COLUMN a TO a2")
    stack.sql("UPDATE c20 SET a2 = 'renamed' WHERE id = 1")
    _stops_with(sync, "no longer carry column(s) a")
    with stack.tgt() as t:  # the runbook for a rename: rename the target column the same way
        cols = [
            r[0]
            for r in t.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'c20' AND column_name = 'a2'"
            )
        ]
        if cols:  # sync may have added the new name before it stopped
            t.execute("ALTER TABLE public.c20 DROP COLUMN a2")
        t.execute("ALTER TABLE public.c20 RENAME COLUMN a TO a2")
    sync = stack.start("sync")
    stack.fence()
    stack.assert_equal()
    # a column sync added mid-stream and dropped later stops the same way
    stack.sql("ALTER TABLE c20 ADD COLUMN c text")
    stack.sql("INSERT INTO c20 VALUES (102, 'a102', 'c102')")
    stack.fence()
    stack.sql("ALTER TABLE c20 DROP COLUMN c")
    stack.sql("INSERT INTO c20 VALUES (103, 'a103')")
    _stops_with(sync, "no longer carry column(s) c")


def test_fault_21_type_change_stops_clearly(stack_factory: Callable[..., Stack]) -> None:
    stack = stack_factory()
    stack.sql("CREATE TABLE public.c21 (id int PRIMARY KEY, v int, w text)")
    stack.sql("INSERT INTO c21 SELECT g, g, 'w' FROM generate_series(1, 100) g")
    stack.write_config(["public.c21"])
    stack.start("capture")
    sync = stack.start("sync")
    stack.fence()
    stack.sql("ALTER TABLE c21 ALTER COLUMN v TYPE text USING 'v=' || v")
    stack.sql("INSERT INTO c21 VALUES (101, 'not a number', 'w')")
    line = _stops_with(sync, "c21")
    assert "type" in line and "docs/operations.md" in line, line


@pytest.mark.slow
def test_fault_22_huge_transaction_bounded_memory(own_stack_factory: Callable[..., Stack]) -> None:
    """N rows in one source transaction: every row applied, memory bounded.

    N is 300k by default (about 75 s here; ``CROSSFADE_FAULT_HUGE_TX_ROWS=1000000`` for the
    FAULTS.md figure, about four minutes): sync applies per batch, never per transaction, so its
    growth does not depend on N (measured: +11 MiB at 300k). Capture's JVM heap is capped at
    ``-Xmx1g`` (capture/service.py) and fills towards it before collecting, so its peak is checked
    against that cap plus the Python side, not against a per-row cost."""
    n = int(os.environ.get("CROSSFADE_FAULT_HUGE_TX_ROWS", "300000"))
    stack = own_stack_factory()
    stack.sql("CREATE TABLE public.c22 (id int PRIMARY KEY, payload text)")
    stack.sql("INSERT INTO c22 VALUES (0, 'seed')")
    stack.write_config(["public.c22"])
    capture = stack.start("capture")
    sync = stack.start("sync")
    stack.fence()
    base_sync, base_cap = peak_rss_mb(sync), peak_rss_mb(capture)
    stack.sql(f"INSERT INTO c22 SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, {n}) g")
    t0 = time.monotonic()
    stack.fence(timeout=540)  # inside pytest-timeout (600 s)
    took = time.monotonic() - t0
    peak_sync, peak_cap = peak_rss_mb(sync), peak_rss_mb(capture)
    print(
        f"\ncase 22: {n} rows in one transaction applied in {took:.0f} s; peak RSS sync {base_sync:.0f} -> "
        f"{peak_sync:.0f} MiB, capture {base_cap:.0f} -> {peak_cap:.0f} MiB"
    )
    stack.assert_equal()
    # 130 bytes of payload per row: holding the transaction in Python would take > N * 0.5 kB
    assert peak_sync - base_sync < 300, (
        f"sync grew {peak_sync - base_sync:.0f} MiB on one transaction"
    )
    assert peak_cap < 1024 + 768, f"capture peaked at {peak_cap:.0f} MiB (JVM heap cap 1 GiB)"


def test_fault_23_twenty_mb_value_delivered_or_refused(
    own_stack_factory: Callable[..., Stack],
) -> None:
    stack = own_stack_factory()
    stack.sql("CREATE TABLE public.c23 (id int PRIMARY KEY, big text)")
    stack.sql("INSERT INTO c23 VALUES (1, 'small')")
    stack.write_config(["public.c23"])
    capture = stack.start("capture")
    stack.start("sync")
    stack.fence()
    stack.sql(
        "INSERT INTO c23 VALUES (2, %s)", (os.urandom(10 * 1024 * 1024).hex(),)
    )  # 20 MiB of text
    stack.sql("INSERT INTO c23 VALUES (3, 'after')")
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if not capture.alive():  # a clear refusal
            capture.expected_dead = True
            out = capture.tail(200)
            lines = [x for x in out.splitlines() if x.startswith("crossfade:")]
            assert lines and "Kafka refused a change event of" in lines[-1], out
            assert "Traceback" not in out
            return
        if target_rows(stack, "public.c23") == 3:  # delivered
            stack.fence()
            stack.assert_equal()
            return
        time.sleep(1)
    raise AssertionError(f"the 20 MB value was neither delivered nor refused\n{stack._diag()}")


# -- the schema store unreachable ---------------------------------------------------------------------


class SchemaRegistryStandIn:
    """The two Schema Registry endpoints crossfade's clients use (register a schema, fetch one by
    id), over real HTTP. No Schema Registry server installs on these machines; what this case
    tests is the client side: an unreachable registry (connection refused) must make sync wait."""

    def __init__(self) -> None:
        from crossfade.embedded._proc import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.schemas: list[str] = []
        self.fetches = 0
        self._server = None

    def start(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        reg = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def _send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # /subjects/<subject>/versions
                body = json.loads(
                    self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}"
                )
                text = body["schema"]
                if text not in reg.schemas:
                    reg.schemas.append(text)
                self._send(200, {"id": reg.schemas.index(text) + 1})

            def do_GET(self) -> None:  # /schemas/ids/<id>
                parts = self.path.split("?")[0].strip("/").split("/")
                if (
                    parts[:2] == ["schemas", "ids"]
                    and parts[2].isdigit()
                    and 0 < int(parts[2]) <= len(reg.schemas)
                ):
                    reg.fetches += 1
                    self._send(200, {"schema": reg.schemas[int(parts[2]) - 1]})
                else:
                    self._send(404, {"error_code": 40403, "message": "Schema not found"})

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def _dlq_count(stack: Stack) -> int:
    from confluent_kafka import Consumer, TopicPartition

    s = stack.settings
    c = Consumer(
        {
            **s.kafka.client_config(),
            "group.id": f"dlq-count-{time.monotonic_ns()}",
            "enable.partition.eof": True,
        }
    )
    md = c.list_topics(timeout=10)
    if s.kafka.dlq_topic not in md.topics:
        c.close()
        return 0
    parts = list(md.topics[s.kafka.dlq_topic].partitions)
    c.assign([TopicPartition(s.kafka.dlq_topic, p, 0) for p in parts])
    n, eof, deadline = 0, set(), time.monotonic() + 20
    while len(eof) < len(parts) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            eof.add(m.partition())
        else:
            n += 1
    c.close()
    return n


def test_fault_26_schema_registry_unreachable_sync_waits(
    stack_factory: Callable[..., Stack], request: pytest.FixtureRequest
) -> None:
    import yaml

    registry = SchemaRegistryStandIn()
    registry.start()
    request.addfinalizer(registry.stop)
    stack = stack_factory()
    stack.sql("CREATE TABLE public.r26 (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO r26 SELECT g, 'v' || g FROM generate_series(1, 200) g")
    stack.write_config(["public.r26"])
    raw = yaml.safe_load(stack.config_path.read_text())
    raw["kafka"]["schema_registry_url"] = registry.url
    stack.config_path.write_text(yaml.safe_dump(raw))
    stack.start("capture")
    sync = stack.start("sync")
    # a change event through the registry (a COPY load (initial_load: copy) sends none of the initial rows),
    # once capture streams (an update before the load's slot exists is in the copied rows)
    stack.fence()
    stack.sql("UPDATE r26 SET v = v WHERE id = 1")
    stack.fence()
    stack.assert_equal()
    assert registry.schemas and registry.fetches, "events did not go through the registry"
    sync.stop()
    registry.stop()  # unreachable: connection refused
    stack.sql("UPDATE r26 SET v = 'while the registry was down' WHERE id <= 100")
    stack.sql("INSERT INTO r26 SELECT g, 'new' FROM generate_series(1001, 1100) g")
    sync = stack.start("sync")  # a fresh worker: no schema cached
    wait_for(
        lambda: "Schema Registry unreachable" in sync.tail(400),
        120,
        "sync to notice the registry is down\n" + sync.tail(),
    )
    time.sleep(8)
    assert sync.alive(), f"sync gave up while the registry was down:\n{sync.tail()}"
    assert _dlq_count(stack) == 0, "records were dead-lettered because the registry was down"
    with stack.tgt() as t:
        assert t.execute("SELECT count(*) FROM r26 WHERE id > 1000").fetchone() == (0,)
    registry.start()  # back, same port
    stack.fence()
    stack.assert_equal()
    assert _dlq_count(stack) == 0


def test_fault_37_wrong_envelope_shape_is_dead_lettered(stack: Stack) -> None:
    """FAULTS 37 (issue 18): a ``source.lsn`` that is text, a ``source`` that is not a record and a
    non-numeric ``crossfade.pos`` header each become a dead letter with the reason; sync goes on."""
    from confluent_kafka import Producer

    from crossfade.events.framing import frame_single_object
    from crossfade.events.schema_store import SchemaPublisher

    stack.sql("CREATE TABLE public.f37 (id int PRIMARY KEY, v text)")
    stack.sql("INSERT INTO f37 SELECT g, 'v' || g FROM generate_series(1, 50) g")
    stack.write_config(["public.f37"])
    stack.start("capture")
    sync = stack.start("sync")
    # change events of keys 1-3 to copy (a COPY load (initial_load: copy) puts none of the initial rows'
    # in the topic): updates that keep their values, once capture streams (an update committed
    # before the load's slot exists is in the copied rows, not in the topic)
    stack.fence()
    stack.sql("UPDATE f37 SET v = v WHERE id <= 3")
    stack.fence()
    s = stack.settings
    by_id = {r.event.key["id"]: r for r in read_records(stack, "public.f37") if r.event}

    def envelope(source: object) -> dict:
        value = {"type": "record", "name": "Value", "fields": [{"name": "id", "type": "int"}]}
        fields = [{"name": "after", "type": ["null", value]}, {"name": "source", "type": source}]
        return {
            "type": "record",
            "name": "Envelope",
            "namespace": "f37.bad",
            "fields": fields + [{"name": "op", "type": "string"}],
        }

    text_lsn = {"type": "record", "name": "Source", "fields": [{"name": "lsn", "type": "string"}]}
    publisher = SchemaPublisher(s.kafka.client_config(), s.kafka.schemas_topic)
    bad = [
        (
            by_id[1],
            publisher.publish(envelope(text_lsn)),
            {"after": {"id": 1}, "source": {"lsn": "0/16B3748"}, "op": "u"},
        ),
        (
            by_id[2],
            publisher.publish(envelope("string")),
            {"after": {"id": 2}, "source": "pg", "op": "u"},
        ),
    ]
    p = Producer(s.kafka.client_config())
    topic = s.kafka.table_topic("public.f37")
    for rec, codec, datum in bad:
        value = frame_single_object(codec.fingerprint, codec.encode(datum))
        p.produce(topic, key=rec.key, value=value, partition=rec.partition)
    r3 = by_id[3]  # a real change event with a position header that is no number
    p.produce(
        topic,
        key=r3.key,
        value=r3.value,
        partition=r3.partition,
        headers=[("crossfade.pos", b"12abc")],
    )
    assert p.flush(30) == 0
    stack.sql("UPDATE f37 SET v = 'after the bad records' WHERE id > 10")
    stack.fence()
    assert sync.alive(), f"sync stopped on a malformed record:\n{sync.tail()}"
    with stack.tgt() as t:
        assert t.execute(
            "SELECT count(*) FROM f37 WHERE v = 'after the bad records'"
        ).fetchone() == (40,)
    r = stack.cli("dlq", "list", "--json")
    assert r.returncode == 1, r.stdout + r.stderr  # open dead letters
    (group,) = [g for g in json.loads(r.stdout)["by_rule"] if g["rule"] == "decode"]
    assert group["records"] == 3, group
    reasons = " | ".join(ex["reason"] for ex in group["examples"])
    for why in ("source.lsn is not a number", "is not a record", "header crossfade.pos"):
        assert why in reasons, reasons
    stack.assert_equal()
