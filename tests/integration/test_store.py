"""The store (crossfade.target.store) against the embedded PostgreSQL, no broker: each module's
functions that the cutover, verify, status and the console rely on. Rows that only sync writes
(the ledger, fences, table_stats) are inserted here by hand, as sync's commit step writes them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from crossfade.embedded.postgres import EmbeddedPostgres
from crossfade.target import store

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def db(pg_server: EmbeddedPostgres) -> Iterator[psycopg.Connection]:
    name = f"store_{time.monotonic_ns()}"
    pg_server.create_database(name)
    c = psycopg.connect(pg_server.dsn(name), autocommit=True)
    yield c
    c.close()
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def bk(db: psycopg.Connection, request: pytest.FixtureRequest) -> str:
    """A fresh bookkeeping schema for each test."""
    schema = "bk_" + request.node.name.removeprefix("test_")[:40]
    store.ensure_schema(db, schema)
    return schema


def test_a_current_schema_is_not_altered_while_a_batch_transaction_holds_its_tables(
    db: psycopg.Connection, pg_server: EmbeddedPostgres
) -> None:
    """A worker starting beside one inside a batch (fault 10: the other one frozen there) must
    not wait for it: ALTER TABLE / CREATE INDEX take strong locks even when there is nothing to
    do, and a waiting one makes every later batch queue behind it."""
    store.ensure_schema(db, "bk_busy")
    other = psycopg.connect(db.info.dsn, autocommit=True)
    try:
        other.execute("BEGIN")
        other.execute(
            "INSERT INTO bk_busy.offsets (group_id, topic, partition, next_offset, epoch) VALUES ('g', 't', 0, 1, 'e')"
        )
        with psycopg.connect(db.info.dsn, autocommit=True) as starting:
            starting.execute("SET statement_timeout = '3s'")
            store.ensure_schema(starting, "bk_busy")  # returns at once: nothing to do
            # a schema the DDL must still run on (an upgrade): waits a bounded time, transient
            starting.execute("DELETE FROM bk_busy.meta WHERE key = 'schema_ddl'")
            starting.execute("RESET statement_timeout")
            t0 = time.monotonic()
            with pytest.raises(psycopg.errors.LockNotAvailable):
                store.ensure_schema(starting, "bk_busy")
            assert time.monotonic() - t0 < 30
        other.execute("ROLLBACK")
        store.ensure_schema(db, "bk_busy")  # the lock is gone: the DDL runs and is recorded
        assert store.meta(db, "bk_busy")["schema_ddl"] == store.schema.DDL_FINGERPRINT
    finally:
        other.close()


def test_a_dropped_bookkeeping_table_is_created_again(db: psycopg.Connection) -> None:
    store.ensure_schema(db, "bk_dropped")
    db.execute("DROP TABLE bk_dropped.sweeps")
    store.ensure_schema(db, "bk_dropped")
    assert store.has_table(db, "bk_dropped", "sweeps")


def test_schema_creates_every_table_once_and_twice_changes_nothing(db: psycopg.Connection) -> None:
    assert not store.has_table(db, "bk_fresh", "offsets")
    assert store.stored_offsets(db, "bk_fresh", "g") == []  # read-only callers: no schema, empty
    assert store.read_heartbeats(db, "bk_fresh") == []
    store.ensure_schema(db, "bk_fresh")
    store.ensure_schema(db, "bk_fresh")
    assert {
        "offsets",
        "ledger",
        "fences",
        "fence_runs",
        "heartbeats",
        "checkpoints",
        "dedup_members",
        "crosswalk",
        "child_refs",
    } <= set(store.TABLES)
    assert all(store.has_table(db, "bk_fresh", t) for t in store.TABLES)
    assert store.meta(db, "bk_fresh") == {
        "schema_version": str(store.SCHEMA_VERSION),
        "schema_ddl": store.schema.DDL_FINGERPRINT,
    }


def test_offsets_claim_resume_rewind_and_a_new_epoch(db: psycopg.Connection, bk: str) -> None:
    tps = [("t.a", 1), ("t.a", 0)]
    got = store.claim_partitions(db, bk, "g", tps, "e1", "owner-1")
    assert {tp: (o.next_offset, o.owner) for tp, o in got.items()} == {
        ("t.a", 0): (0, "owner-1"),
        ("t.a", 1): (0, "owner-1"),
    }
    store.rewind_offset(db, bk, "g", "t.a", 1, 7)  # as a commit (or a rewind) moves it
    stored = store.stored_offsets(db, bk, "g")
    assert [(o.partition, o.next_offset, o.owner) for o in stored] == [
        (0, 0, "owner-1"),
        (1, 7, None),
    ]
    assert all(o.updated_at is not None for o in stored)
    assert store.claimed_count(db, bk, "g") == 2 and store.claimed_count(db, bk, "other") == 0
    again = store.claim_partitions(db, bk, "g", tps, "e1", "owner-2")
    assert again[("t.a", 1)].next_offset == 7 and again[("t.a", 1)].owner == "owner-2"
    lost = store.claim_partitions(db, bk, "g", tps, "e2", "owner-3")  # the broker lost its log
    assert lost[("t.a", 1)].next_offset == 0 and lost[("t.a", 1)].epoch == "e2"


def _ledger(db: psycopg.Connection, bk: str, rows: list[tuple[Any, ...]]) -> None:
    with db.cursor() as cur:
        cur.executemany(
            f"INSERT INTO {bk}.ledger (source_table, entry, position, outcome, rule, reason) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (source_table, entry) DO UPDATE SET "
            "position = EXCLUDED.position, outcome = EXCLUDED.outcome",
            rows,
        )


def test_ledger_counts_acknowledgement_and_a_dead_letter_open_anew(
    db: psycopg.Connection, bk: str
) -> None:
    _ledger(
        db,
        bk,
        [
            ("s.a", '["1"]', 10, "dead_letter", "email", "bad email"),
            ("s.a", '["2"]', 11, "held", None, None),
            ("s.a", '["3"]', 12, "filtered", "active", "inactive"),
            ("s.a", '["4"]', 13, "deferred", None, None),
            ("s.a", '["5"]', 14, "mapped", None, None),
            ("s.a", "@t.a/0/9", 15, "dead_letter", "decode", "corrupt"),
        ],
    )
    c = store.ledger_counts(db, bk)
    assert c.table("s.a").as_dict() == {
        "dead_letters": 2,
        "unacknowledged": 3,
        "held": 1,
        "deferred": 1,
        "filtered": 1,
    }
    assert c.table("s.a").mapped == 1
    # a record read at a place (undecodable) is not a source row: left out of the accounting
    assert c.accounted["s.a"] == {
        "dead_letter": 1,
        "held": 1,
        "filtered": 1,
        "deferred": 1,
        "mapped": 1,
    }
    assert c.by_rule == {("email", "s.a"): 1, ("decode", "s.a"): 1}
    groups = store.dead_letter_groups(db, bk)
    assert sorted((g[0], g[2]) for g in groups) == [("decode", 1), ("email", 1)]

    assert store.acknowledge_dead_letters(db, bk, "ann", "known") == (3, 3)
    assert store.ledger_counts(db, bk).unacknowledged == 0
    ack = store.last_dlq_ack(db, bk)
    assert ack is not None and (ack.who, ack.acknowledged, ack.note) == ("ann", 3, "known")
    audit = store.latest_audit(db, bk, "dlq_ack")
    assert audit is not None and audit.detail == "acknowledged 3 dead letter(s) (3 open): known"
    _ledger(db, bk, [("s.a", '["1"]', 20, "dead_letter", "email", "bad again")])
    assert store.ledger_counts(db, bk).unacknowledged == 1  # a newer position: open anew


def test_ledger_entries_the_mapped_verify_reads(db: psycopg.Connection, bk: str) -> None:
    assert store.held_entries(db, "bk_no_such_schema", "s.a") == (set(), set())  # sync never ran
    _ledger(
        db,
        bk,
        [
            ("s.a", '["1"]', 10, "dead_letter", "email", "bad email"),
            ("s.a", '["2"]', 11, "deferred", None, None),
            ("s.a", '["3"]', 12, "parent_left", None, None),
            ("s.a", '["4"]', 13, "filtered", "active", "inactive"),
            ("s.a", '["5"]', 14, "mapped", None, None),
            ("s.a", "@t.a/0/9", 15, "dead_letter", "decode", "corrupt"),  # not a key
            ("s.b", '["1"]', 16, "filtered", "active", "inactive"),  # another table
        ],
    )
    held, filtered = store.held_entries(db, bk, "s.a")
    assert held == {'["1"]', '["2"]', '["3"]'} and filtered == {'["4"]'}
    assert store.entry_outcome(db, bk, "s.a", '["5"]') == "mapped"
    assert store.entry_outcome(db, bk, "s.a", '["9"]') is None
    assert store.entry_outcome(db, "bk_no_such_schema", "s.a", '["5"]') is None
    # what the mapped verify's re-check reads: position, outcome, rule of the entries there are
    from crossfade.target.store.ledger import ledger_positions

    assert ledger_positions(db, bk, "s.a", ['["1"]', '["4"]', '["9"]']) == {
        '["1"]': (10, "dead_letter", "email"),
        '["4"]': (13, "filtered", "active"),
    }
    assert ledger_positions(db, bk, "s.a", []) == {}


def test_fence_runs_and_the_fences_sync_applied(db: psycopg.Connection, bk: str) -> None:
    assert store.last_applied_fence(db, bk) is None
    store.fence_started(db, bk, "tok1", "cli", "ann")
    assert store.latest_fences(db, bk)[0].finished_at is None  # running
    store.fence_finished(db, bk, "tok1", ok=True, partitions=2, seconds=1.5)
    store.fence_started(db, bk, "tok2", "console", "bob")
    store.fence_finished(db, bk, "tok2", ok=False, partitions=0, seconds=9.0, detail="timeout")
    runs = store.latest_fences(db, bk, 5)
    assert [(r.token, r.ok, r.detail) for r in runs] == [
        ("tok2", False, "timeout"),
        ("tok1", True, None),
    ]
    assert runs[0].age_s is not None and runs[0].age_s >= 0
    src = datetime.now(UTC) - timedelta(seconds=3)
    db.execute(
        f"INSERT INTO {bk}.fences (token, topic, partition, lsn, source_ts) VALUES "
        "('tok1', 't.a', 0, 500, %s), ('tok1', 't.a', 1, 400, %s)",
        (src, src),
    )
    assert store.fence_applied_on(db, bk, "tok1") == 2 and store.fence_applied_on(db, bk, "x") == 0
    assert store.fence_position(db, bk, "tok1") == 400 and store.fence_position(db, bk, "x") is None
    f = store.last_applied_fence(db, bk)
    assert f is not None and (f.token, f.partitions) == ("tok1", 2)
    assert f.lag_s is not None and f.lag_s >= 3 and f.age_s is not None and f.age_s >= 0


def test_checkpoints_save_list_and_find_by_name_or_time(db: psycopg.Connection, bk: str) -> None:
    offsets = [{"topic": "t.a", "partition": 0, "next_offset": 5}]
    first = store.save_checkpoint(db, bk, "cp1", "g", "e1", "0/16B3748", offsets, "ann", "before")
    assert first is not None and first.as_dict()["source_lsn"] == 0x16B3748
    assert store.save_checkpoint(db, bk, "cp1", "g", "e1", None, offsets, "ann", None) is None
    second = store.save_checkpoint(db, bk, "cp2", "g", "e1", None, [], None, None)
    assert second is not None
    store.save_checkpoint(db, bk, "other", "h", "e1", None, [], None, None)
    assert [c.name for c in store.read_checkpoints(db, bk, "g")] == ["cp1", "cp2"]
    assert [c.name for c in store.read_checkpoints(db, bk, "g", newest=1)] == ["cp2"]
    named = store.checkpoint_named(db, bk, "g", "cp1")
    assert named is not None and named.offsets == offsets and named.note == "before"
    assert store.checkpoint_named(db, bk, "g", "other") is None  # another group's
    at = store.checkpoint_at(db, bk, "g", first.created_at)
    assert at is not None and at.name == "cp1"
    assert store.checkpoint_at(db, bk, "g", first.created_at - timedelta(seconds=1)) is None


def test_replay_ranges_pending_finished_and_last_rewind(db: psycopg.Connection, bk: str) -> None:
    assert store.last_rewind_at(db, bk, "g") is None
    for until in (9, 12):
        store.start_replay(
            db, bk, store.Replay("g", "t.a", 0, f"r{until}", "e1", "cp", 3, until, "ann")
        )
    assert store.pending_replays(db, bk, "g", "e1") == {("t.a", 0): 12}
    assert store.pending_replays(db, bk, "g", "e2") == {}
    assert store.unfinished_replays(db, bk, "g") == 2
    assert store.last_rewind_at(db, bk, "g") is not None
    store.finish_replays(db, bk, "g")
    assert store.unfinished_replays(db, bk, "g") == 0
    assert store.pending_replays(db, bk, "g", "e1") == {}


def test_heartbeats_write_read_and_drop(db: psycopg.Connection, bk: str) -> None:
    hb = store.Heartbeat("w1", "sync", partitions=["t.a[0]"], lag=4, detail={"k": 1})
    store.write_heartbeat(db, bk, hb)
    store.write_heartbeat(db, bk, store.Heartbeat("c1", "capture"))
    hb.lag = 2
    store.write_heartbeat(db, bk, hb)  # an upsert: one row per worker
    got = store.read_heartbeats(db, bk)
    assert [(h.worker_id, h.role) for h in got] == [("c1", "capture"), ("w1", "sync")]
    w1 = got[1]
    assert (w1.partitions, w1.lag, w1.detail) == (["t.a[0]"], 2, {"k": 1})
    assert 0 <= w1.age_s < 60 and w1.pid is not None
    store.drop_heartbeat(db, bk, "w1")
    assert [h.worker_id for h in store.read_heartbeats(db, bk)] == ["c1"]


def test_table_stats_sum_the_partitions(db: psycopg.Connection, bk: str) -> None:
    assert store.table_stats(db, bk) == {}
    now = datetime.now(UTC)
    db.execute(
        f"INSERT INTO {bk}.table_stats VALUES "
        "('s.a', 't.a', 0, 5, 1, 0, 100, %s, %s), ('s.a', 't.a', 1, 7, 0, 2, 90, %s, %s)",
        (now - timedelta(seconds=2), now, now - timedelta(seconds=10), now),
    )
    s = store.table_stats(db, bk)["s.a"]
    assert (s.applied, s.skipped, s.dead_lettered, s.last_lsn) == (12, 1, 2, 100)
    # the lag of the newest source commit applied (partition 0's), not the largest
    assert s.lag_at_last_apply_s == pytest.approx(2.0, abs=0.01)


def test_watermarks_rise_only_and_deletes_leave_tombstones(db: psycopg.Connection, bk: str) -> None:
    store.raise_watermark(db, bk, "s.a", 50, "initial load")
    store.raise_watermark(db, bk, "s.a", 40, "late")
    assert db.execute(f"SELECT lsn, reason FROM {bk}.watermarks").fetchall() == [(50, "late")]
    db.execute("CREATE TABLE public.store_t (id int PRIMARY KEY, _cf_pos numeric)")
    db.execute("INSERT INTO public.store_t VALUES (1, 10), (2, 99), (3, NULL)")
    n = store.delete_leaving_tombstones(
        db, bk, "public.store_t", [("id", "int")], "s.a", [(1,), (2,), (3,)], below=50
    )
    assert n == 2  # row 2 is newer than the fence: kept
    assert db.execute("SELECT id FROM public.store_t").fetchall() == [(2,)]
    assert db.execute(f"SELECT tbl, key, lsn FROM {bk}.tombstones").fetchall() == [
        ("s.a", "[1]", 10)
    ]
    store.clear_tombstones(db, bk, "s.a")
    assert db.execute(f"SELECT count(*) FROM {bk}.tombstones").fetchone() == (0,)


def test_verify_runs_recorded_and_read_back(db: psycopg.Connection, bk: str) -> None:
    assert store.latest_verify_report(db, bk) is None
    run = store.VerifyRun(
        datetime.now(UTC), True, 1, 3, 3, 0, 0, 0, False, 0.5, "ann",
        {"tables": [{"name": "s.a", "key": datetime(2026, 1, 1, tzinfo=UTC)}], "delta_of": 4},
        "abc",
    )  # fmt: skip
    rid = store.record_verify_run(db, bk, run)
    assert rid is not None
    recent = store.recent_verify_runs(db, bk)
    assert recent[0]["id"] == rid and recent[0]["tables"] == ["s.a"]
    assert recent[0]["delta_of"] == 4 and recent[0]["mapping_hash"] == "abc"
    latest = store.latest_verify_report(db, bk)
    assert latest is not None and latest.id == rid
    assert latest.report["tables"][0]["key"] == "2026-01-01 00:00:00+00:00"  # as text


def test_audit_rows_and_the_last_real_flip(db: psycopg.Connection, bk: str) -> None:
    def row(gate: str, ok: bool, dry: bool, detail: str) -> None:
        store.insert_audit_row(db, bk, store.AuditEntry("r", "ann", dry, gate, ok, detail, 0.1))

    row("flip", True, True, "dry")
    row("flip", True, False, "skipped (no flip command)")
    row("flip", False, False, "failed")
    assert store.last_flip_age_s(db, bk) is None  # none real and successful
    row("flip", True, False, "flipped")
    age = store.last_flip_age_s(db, bk)
    assert age is not None and age >= 0
    latest = store.latest_audit(db, bk, "flip")
    assert latest is not None and latest.detail == "flipped" and latest.evidence is None


def test_meta_notes_a_changed_mapping(db: psycopg.Connection, bk: str) -> None:
    store.note_mapping(db, bk, "h1")
    first = store.meta(db, bk)
    store.note_mapping(db, bk, "h1")  # unchanged: the change time stays
    assert store.meta(db, bk) == first
    store.note_mapping(db, bk, "h2")
    after = store.meta(db, bk)
    assert after["mapping_hash"] == "h2"
    assert after["mapping_changed_at"] >= first["mapping_changed_at"]


def test_copy_load_marks_per_epoch_against_checkpoint_time(db: psycopg.Connection, bk: str) -> None:
    """The COPY load's end is stamped with the target's clock, the one checkpoints carry: a
    checkpoint taken before it is older, one taken after it newer; another epoch has no mark."""
    assert store.copy_load_mark(db, bk, "e1") is None
    store.note_copy_load(db, bk, "e1", done=False)
    assert store.copy_load_mark(db, bk, "e1") == store.CopyLoadMark("e1", None)
    before = store.save_checkpoint(db, bk, "cp-before", "g", "e1", None, [], None, None)
    store.note_copy_load(db, bk, "e1", done=True)
    after = store.save_checkpoint(db, bk, "cp-after", "g", "e1", None, [], None, None)
    mark = store.copy_load_mark(db, bk, "e1")
    assert before is not None and after is not None and mark is not None
    assert mark.done_at is not None and before.created_at < mark.done_at <= after.created_at
    assert store.copy_load_mark(db, bk, "e2") is None


def test_a_copy_load_hides_a_fence_row_its_new_slot_never_streamed(
    db: psycopg.Connection, bk: str
) -> None:
    """The fence's slot path (Kafka Connect's) trusts the slot's confirmed position only for a row
    the slot streamed: not while a COPY load runs (its new slot is already past a row it never
    saw, with the copied rows not all committed), nor for a row older than a load's slot."""
    assert not store.copy_load_hides_fence(db, bk, 1000)
    store.note_copy_load(db, bk, "e9", done=False)
    assert store.copy_load_hides_fence(db, bk, 1000)  # loading: nothing is proven
    store.note_copy_load_slot(db, bk, "e9", 5000)
    store.note_copy_load(db, bk, "e9", done=True)
    assert store.copy_load_hides_fence(db, bk, 1000)  # the row predates the load's slot
    assert not store.copy_load_hides_fence(db, bk, 6000)  # streamed by the slot


def test_dedup_members_crosswalk_and_explain_reads(db: psycopg.Connection, bk: str) -> None:
    t = "public.customers"
    store.write_members(
        db,
        bk,
        t,
        [
            ('["1"]', Jsonb(["1"]), ["e:a@x"], Jsonb({"id": "1"}), 10),
            ('["2"]', Jsonb(["2"]), ["e:a@x"], Jsonb({"id": "2"}), 11),
            ('["3"]', Jsonb(["3"]), ["e:c@x"], Jsonb({"id": "3"}), 12),
        ],
        [],
    )
    assert store.member_positions(db, bk, t, ['["1"]', '["9"]']) == {'["1"]': (10, ["e:a@x"])}
    assert {r[0] for r in store.live_members(db, bk, t, ['["3"]'], ["e:a@x"])} == {
        '["1"]',
        '["2"]',
        '["3"]',
    }
    store.write_members(
        db,
        bk,
        t,
        [
            ('["4"]', Jsonb(["4"]), ["e:d@x", "p:555"], Jsonb({"id": "4"}), 13),
            ('["5"]', Jsonb(["5"]), ["p:555"], Jsonb({"id": "5"}), 14),
        ],
        [],
    )
    store.write_members(db, bk, t, [], [('["5"]', Jsonb(["5"]), 15)])
    # any one of a member's blocks matches (here its second); a deleted member never does; a
    # block matches whole, not as a prefix; no keys and no blocks find nothing
    assert {r[0] for r in store.live_members(db, bk, t, [], ["p:555", "e:a@x"])} == {
        '["1"]',
        '["2"]',
        '["4"]',
    }
    assert store.live_members(db, bk, t, [], ["p:55", "e:a"]) == []
    assert store.live_members(db, bk, t, [], []) == []
    assert [r[0] for r in store.live_members(db, bk, t, ['["5"]', '["4"]'], [])] == ['["4"]']
    ev = Jsonb([{"rule": "email", "a": ["1"], "b": ["2"]}])
    store.write_crosswalk(
        db,
        bk,
        t,
        [
            (t, '["1"]', '["1"]', Jsonb(["1"]), None, None),
            (t, '["2"]', '["1"]', Jsonb(["1"]), "email", ev),
            (t, '["3"]', '["3"]', Jsonb(["3"]), None, None),
        ],
        [],
    )
    assert store.merged_members(db, bk) == {t: 1}
    assert store.group_mates(db, bk, t, ['["2"]']) == {'["1"]', '["2"]'}
    assert store.survivor_keys(db, bk, t, ['["2"]', '["9"]']) == {'["2"]': '["1"]'}
    assert store.share_survivors(db, bk, t, ['["2"]']) == {'["2"]': ["1"]}
    assert store.share_member(db, bk, t, '["3"]') and not store.share_member(db, bk, t, '["9"]')
    assert store.crosswalk_entries(db, bk, ['["2"]'], None) == [(t, '["2"]', '["1"]')]
    assert store.crosswalk_entries(db, bk, ['["2"]'], "public.other") == []
    group = store.crosswalk_group(db, bk, t, '["1"]')
    assert [(g[0], g[1], g[3]) for g in group] == [
        ('["1"]', None, {"id": "1"}),
        ('["2"]', "email", {"id": "2"}),
    ]
    store.write_crosswalk(db, bk, t, [], ['["3"]'])  # a member deleted: its entry goes
    assert not store.share_member(db, bk, t, '["3"]')
    # a TRUNCATE at position 11: members older go, and the crosswalk entries of members gone
    store.forget_members_below(db, bk, t, 11)
    assert set(store.member_positions(db, bk, t, ['["1"]', '["2"]', '["3"]'])) == {'["2"]', '["3"]'}
    assert store.survivor_keys(db, bk, t, ['["1"]', '["2"]']) == {'["2"]': '["1"]'}


def _by_arrays(db: psycopg.Connection, bk: str, t: str, blocks: list[str]) -> set[str]:
    """The live members sharing one of ``blocks`` read from dedup_members' own arrays (the
    lookup before dedup_blocks): what the index must find."""
    q = sql.SQL(
        "SELECT member_key FROM {}.dedup_members WHERE target_table = %s AND NOT deleted "
        "AND block_keys && %s::text[]"
    ).format(sql.Identifier(bk))
    return {r[0] for r in db.execute(q, (t, blocks)).fetchall()}


def _index_matches_members(db: psycopg.Connection, bk: str) -> None:
    """dedup_blocks holds exactly one row per block key of each live member."""
    q = sql.SQL(
        "(SELECT target_table, b, member_key FROM {0}.dedup_members, unnest(block_keys) b "
        "WHERE NOT deleted) EXCEPT ALL (SELECT * FROM {0}.dedup_blocks)"
    )
    s = sql.Identifier(bk)
    assert db.execute(q.format(s)).fetchall() == []
    back = sql.SQL(
        "(SELECT * FROM {0}.dedup_blocks) EXCEPT ALL (SELECT target_table, b, member_key "
        "FROM {0}.dedup_members, unnest(block_keys) b WHERE NOT deleted)"
    )
    assert db.execute(back.format(s)).fetchall() == []


def _same_lookups(db: psycopg.Connection, bk: str, t: str, blocks: list[str]) -> set[str]:
    """live_members and members_by_blocks agree with the arrays for each block and all at once;
    the members found by all."""
    for bs in [[b] for b in blocks] + [blocks]:
        want = _by_arrays(db, bk, t, bs)
        assert {r[0] for r in store.live_members(db, bk, t, [], bs)} == want, bs
        assert set(store.members_by_blocks(db, bk, t, bs)) == want, bs
    _index_matches_members(db, bk)
    return _by_arrays(db, bk, t, blocks)


def _member(n: int, blocks: list[str], pos: int) -> tuple[Any, ...]:
    return (f'["{n}"]', Jsonb([str(n)]), blocks, Jsonb({"id": str(n)}), pos)


def test_dedup_block_lookups_follow_rewrites_deletes_and_truncates(
    db: psycopg.Connection, bk: str
) -> None:
    """Members are found by block key through dedup_blocks, which every writer of dedup_members
    keeps: a member rewritten with other blocks, deleted, back again, another table's members
    with the same blocks, and a TRUNCATE's forget."""
    t, other = "app.people", "app.others"
    blocks = ["e:a", "e:b", "p:1", "p:2", "p:3"]
    store.write_members(
        db,
        bk,
        t,
        [
            _member(1, ["e:a", "p:1"], 10),
            _member(2, ["e:a"], 11),
            _member(3, ["e:b", "p:1"], 12),
            _member(4, ["p:2"], 13),
        ],
        [],
    )
    store.write_members(db, bk, other, [_member(1, ["e:a", "p:3"], 10)], [])
    assert _same_lookups(db, bk, t, blocks) == {'["1"]', '["2"]', '["3"]', '["4"]'}
    assert set(store.members_by_blocks(db, bk, t, ["p:3"])) == set()  # another table's block
    assert store.members_by_blocks(db, bk, t, ["p:1"]) == {
        '["1"]': ["e:a", "p:1"],
        '["3"]': ["e:b", "p:1"],
    }
    # rewritten: found by its new blocks only; deleted: by none; a key asked for: live only
    store.write_members(db, bk, t, [_member(1, ["e:b", "p:3"], 20)], [('["2"]', Jsonb(["2"]), 21)])
    assert _same_lookups(db, bk, t, ["e:a"]) == set()
    assert _same_lookups(db, bk, t, ["p:1", "p:3"]) == {'["1"]', '["3"]'}
    assert [r[0] for r in store.live_members(db, bk, t, ['["2"]', '["4"]'], [])] == ['["4"]']
    got = {r[0]: r[4] for r in store.live_members(db, bk, t, ['["4"]'], ["e:b"])}
    assert got == {'["1"]': ["e:b", "p:3"], '["3"]': ["e:b", "p:1"], '["4"]': ["p:2"]}
    # the deleted member comes back with its old block; the same blocks again change nothing
    store.write_members(db, bk, t, [_member(2, ["e:a"], 22), _member(4, ["p:2"], 23)], [])
    assert _same_lookups(db, bk, t, blocks) == {'["1"]', '["2"]', '["3"]', '["4"]'}
    # a TRUNCATE at 21: members 3 (12) and 4's older self are gone; 4 was rewritten at 23
    store.forget_members_below(db, bk, t, 21)
    assert _same_lookups(db, bk, t, blocks) == {'["2"]', '["4"]'}
    assert set(store.members_by_blocks(db, bk, other, ["e:a"])) == {'["1"]'}  # untouched


def test_member_writes_keep_dedup_blocks_in_their_own_pipeline(
    db: psycopg.Connection, bk: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dedup_blocks follows the members from the staged rows, in the merge's pipeline: no
    statement of its own sending the batch's member keys back (issue 22), and still what the
    member rows say, a key both upserted and deleted in one call included (no blocks)."""
    t = "app.people"
    store.write_members(db, bk, t, [_member(1, ["e:a", "p:1"], 10), _member(2, ["e:a"], 11)], [])
    calls: list[Any] = []
    real = db.execute

    def counted(*a: Any, **k: Any) -> Any:
        calls.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(db, "execute", counted)
    store.write_members(
        db,
        bk,
        t,
        [_member(1, ["e:b", "p:1"], 20), _member(3, ["p:1"], 21)],
        [('["3"]', Jsonb(["3"]), 22), ('["2"]', Jsonb(["2"]), 23)],
    )
    monkeypatch.undo()
    assert calls == []
    assert _same_lookups(db, bk, t, ["e:a", "e:b", "p:1"]) == {'["1"]'}
    assert store.member_positions(db, bk, t, ['["3"]']) == {'["3"]': (22, [])}


def test_an_old_schema_gets_its_dedup_blocks_on_upgrade(db: psycopg.Connection) -> None:
    """A bookkeeping schema from before dedup_blocks (a GIN index on dedup_members' arrays, its
    DDL's fingerprint older): the next ensure_schema builds the index from the members, and
    drops rows of it that no longer match (written while an older worker ran beside)."""
    bk, t = "bk_old_dedup", "app.people"
    store.ensure_schema(db, bk)
    store.write_members(
        db,
        bk,
        t,
        [_member(1, ["e:a", "p:1"], 10), _member(2, ["e:a"], 11)],
        [('["3"]', Jsonb(["3"]), 12)],
    )
    s = sql.Identifier(bk)
    db.execute(sql.SQL("DROP TABLE {}.dedup_blocks").format(s))
    db.execute(
        sql.SQL(
            "CREATE INDEX dedup_members_blocks ON {}.dedup_members USING gin (block_keys)"
        ).format(s)
    )
    db.execute(sql.SQL("UPDATE {}.meta SET value = 'older' WHERE key = 'schema_ddl'").format(s))
    assert store.schema.DDL_FINGERPRINT != "older"
    store.ensure_schema(db, bk)
    assert _same_lookups(db, bk, t, ["e:a", "p:1"]) == {'["1"]', '["2"]'}
    gin = db.execute("SELECT to_regclass(%s)", (f"{bk}.dedup_members_blocks",)).fetchone()
    assert gin == (None,)
    # an older worker beside a newer one: its writes do not keep dedup_blocks
    db.execute(
        sql.SQL("UPDATE {}.dedup_members SET block_keys = %s WHERE member_key = %s").format(s),
        (["p:9"], '["2"]'),
    )
    db.execute(sql.SQL("UPDATE {}.meta SET value = 'older' WHERE key = 'schema_ddl'").format(s))
    store.ensure_schema(db, bk)
    assert _same_lookups(db, bk, t, ["e:a", "p:1", "p:9"]) == {'["1"]', '["2"]'}
    assert set(store.members_by_blocks(db, bk, t, ["e:a"])) == {'["1"]'}


def test_child_refs_the_children_to_map_again_and_orphans(db: psycopg.Connection, bk: str) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS public.store_parents (id int PRIMARY KEY)")
    db.execute("INSERT INTO public.store_parents VALUES (1) ON CONFLICT DO NOTHING")
    ledger = sql.SQL(
        "INSERT INTO {}.ledger (source_table, entry, position, outcome, failures, value) "
        "VALUES (%s, %s, 1, %s, %s, %s)"
    ).format(sql.Identifier(bk))
    db.execute(ledger, ("public.child", '["a"]', "mapped", None, b"v"))
    db.execute(ledger, ("public.child", '["b"]', "dead_letter", Jsonb([{"kind": "check"}]), b"v"))
    db.execute(ledger, ("public.parent", '["1"]', "filtered", None, b"v"))
    p = "public.store_parents"
    refs = [('["a"]', "public.c", "pid", p, "[1]"), ('["b"]', "public.c", "pid", p, "[2]")]
    store.replace_child_refs(db, bk, "public.child", ['["a"]', '["b"]'], refs)
    rows = store.children_ledger_rows(db, bk, [p, p], ["[1]", "[2]"])
    assert [(r[0], r[1]) for r in rows] == [("public.child", '["a"]')]  # not a check failure
    assert store.orphaned_parent_values(db, bk, p, "id", "integer", dedup=False) == ["[2]"]
    assert sorted(store.orphaned_parent_values(db, bk, p, "id", "integer", dedup=True)) == [
        "[1]",
        "[2]",
    ]
    assert store.share_ledger_states(db, bk, ["public.parent"], ['["1"]']) == [
        ("public.parent", '["1"]', "filtered", None)
    ]
    store.replace_child_refs(db, bk, "public.child", ['["a"]', '["b"]'], [])  # rewritten
    assert store.children_ledger_rows(db, bk, [p], ["[1]"]) == []


def test_audit_log_writes_a_run_on_one_connection_and_survives_losing_it(
    pg_server: EmbeddedPostgres, db: psycopg.Connection, bk: str
) -> None:
    """A cutover's steps inside the write freeze each write an audit row: one connection for the
    run (not one per row), opened again when it broke, and a row never lost to that."""
    from crossfade.config import Settings

    settings = Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": pg_server.dsn(db.info.dbname)},
        kafka={"bootstrap_servers": "127.0.0.1:1", "topic_prefix": "cf"},
        tables=["public.a"],
        sync={"bookkeeping_schema": bk},
    )

    def audit_backends() -> set[int]:
        return {
            r[0]
            for r in db.execute(
                "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                "AND datname = current_database() AND query LIKE %s",
                (f'INSERT INTO "{bk}".cutover_audit%',),
            )
        }

    with store.AuditLog(settings, "run1", "tester", True) as audit:
        audit.write("freeze", True, "frozen", 0.1)
        first = audit_backends()
        audit.write("fence", True, "fenced", 0.2, {"fence": "abc"})
        assert audit_backends() == first and len(first) == 1  # the same session wrote both
        db.execute("SELECT pg_terminate_backend(%s)", (next(iter(first)),))
        wait = time.monotonic() + 10
        while audit_backends() == first and time.monotonic() < wait:
            time.sleep(0.05)
        audit.write("flip", True, "flipped", 0.3)  # on a new connection
        assert len(audit_backends()) == 1 and audit_backends() != first
    # closed with the run (a closed session can stay in pg_stat_activity for a moment)
    wait = time.monotonic() + 10
    while audit_backends() and time.monotonic() < wait:
        time.sleep(0.05)
    assert audit_backends() == set()
    rows = db.execute(
        sql.SQL("SELECT run_id, gate, evidence FROM {}.cutover_audit ORDER BY id").format(
            sql.Identifier(bk)
        )
    ).fetchall()
    assert rows == [
        ("run1", "freeze", None),
        ("run1", "fence", {"fence": "abc"}),
        ("run1", "flip", None),
    ]
