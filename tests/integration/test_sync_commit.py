"""The commit step (crossfade.sync.commit) against the embedded PostgreSQL, without a broker: one
batch is one transaction of the target (rows, ledger, offsets, stats together), dead letters are
acknowledged by "Kafka" before it commits, a stale owner or an unacknowledged dead letter rolls it
back whole, and records below the stored offset are not applied again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from crossfade import metrics
from crossfade.catalog import read_shape
from crossfade.config import Settings
from crossfade.embedded.postgres import EmbeddedPostgres
from crossfade.errors import BrokerUnavailable, StaleAssignment
from crossfade.sync.commit import BatchCommit
from crossfade.sync.dead_letters import DeadLetterTopic
from crossfade.sync.progress_log import RejectLog
from crossfade.sync.sinks import Tx
from crossfade.sync.sinks.identity import IdentityTables
from crossfade.sync.sinks.mapped import MappedTables
from crossfade.target.apply import SideTable, TableApplier, ensure_side_schema
from crossfade.target.store import claim_partitions, ensure_schema
from tests.sync_records import TOPIC, Batch, Msg

pytestmark = pytest.mark.integration

BK, GROUP, TP = "crossfade", "g", (TOPIC, 0)


@pytest.fixture
def dsn(pg_server: EmbeddedPostgres) -> Iterator[str]:
    name = f"commit_{time.monotonic_ns()}"
    pg_server.create_database(name)
    with psycopg.connect(pg_server.dsn(name), autocommit=True) as c:
        ensure_schema(c, BK)
        c.execute("CREATE TABLE public.t (id int PRIMARY KEY, _cf_pos numeric)")
    yield pg_server.dsn(name)
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Producer:
    """The dead-letter producer: records what was produced and what the target showed another
    session when the worker waited for Kafka's acknowledgement."""

    def __init__(self, dsn: str, unacked: int = 0) -> None:
        self.dsn, self.unacked = dsn, unacked
        self.produced: list[dict[str, Any]] = []
        self.offset_at_flush: list[int] = []

    def produce(self, topic: str, **kw: Any) -> None:
        self.produced.append({"topic": topic, **kw})

    def purge(self) -> None:
        """What was not acknowledged is dropped (the batch is retried)."""

    def flush(self, timeout: float) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as other:
            row = other.execute(f"SELECT next_offset FROM {BK}.offsets").fetchone()
            self.offset_at_flush.append(int(row[0]) if row else -1)
        return self.unacked


def _commit(
    conn: psycopg.Connection, batch: Batch, producer: Producer, applier: TableApplier | None = None
) -> BatchCommit:
    settings = Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.t"],
    )
    tables = IdentityTables(settings)
    shape = read_shape(conn, "public.t")
    assert shape is not None
    tables.appliers["public.t"] = applier or TableApplier(shape, BK)
    return BatchCommit(
        bookkeeping_schema=BK,
        group_id=GROUP,
        planner=batch.planner(),
        sinks=tables.sink,
        mapped=MappedTables({}, {}, {}, ["public.t"], BK),
        dead_letters=DeadLetterTopic(producer, "dlq", RejectLog()),  # type: ignore[arg-type]
        meter=metrics.SyncMeter(),
    )


def _state(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as c:
        stats = c.execute(
            f"SELECT applied, skipped, dead_lettered FROM {BK}.table_stats"
        ).fetchall()
        return {
            "rows": [r[0] for r in c.execute("SELECT id FROM public.t ORDER BY id").fetchall()],
            "next": c.execute(f"SELECT next_offset FROM {BK}.offsets").fetchone(),
            "ledger": sorted(
                c.execute(f"SELECT entry, outcome FROM {BK}.ledger").fetchall(), key=str
            ),
            "stats": stats,
        }


def _batch() -> tuple[Batch, list[Msg]]:
    b = Batch()
    # key 3: an undecodable change, then a later change of the key (held behind it)
    return b, [b.change(1, 10), b.change(2, 11), b.broken(3), b.change(3, 13)]


def _claim(dsn: str, token: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        claim_partitions(c, BK, GROUP, [TP], "e1", token)


def test_one_transaction_with_dead_letters_acknowledged_before_it_commits(dsn: str) -> None:
    _claim(dsn, "mine")
    b, msgs = _batch()
    producer = Producer(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        commit = _commit(conn, b, producer)
        assert commit.run(Tx(conn), msgs, {TP: "mine"}, ["public.t"]) == []
        st = _state(dsn)
        assert st["rows"] == [1, 2] and st["next"] == (4,)
        assert st["ledger"] == [(f"@{TOPIC}/0/2", "dead_letter"), (f"@{TOPIC}/0/3", "held")]
        assert st["stats"] == [(2, 0, 1)]
        [dead] = producer.produced
        assert dict(dead["headers"])["crossfade.dlq.rule"] == b"decode"
        assert producer.offset_at_flush == [0]  # produced and acknowledged before the COMMIT

        # the same records again (the COMMIT's acknowledgement was lost): nothing applies twice
        again = Producer(dsn)
        commit.dead_letters = DeadLetterTopic(again, "dlq", RejectLog())  # type: ignore[arg-type]
        commit.run(Tx(conn), msgs, {TP: "mine"}, ["public.t"])
        assert _state(dsn) == st and again.produced == []


def test_a_stale_owner_rolls_the_batch_back_whole(dsn: str) -> None:
    _claim(dsn, "mine")
    _claim(dsn, "theirs")  # a rebalance gave the partition to another worker
    b, msgs = _batch()
    before = _state(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(StaleAssignment):
        _commit(conn, b, Producer(dsn)).run(Tx(conn), msgs, {TP: "mine"}, ["public.t"])
    assert _state(dsn) == before


def test_a_dead_letter_kafka_does_not_acknowledge_rolls_the_batch_back(dsn: str) -> None:
    _claim(dsn, "mine")
    b, msgs = _batch()
    before = _state(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn, pytest.raises(BrokerUnavailable):
        _commit(conn, b, Producer(dsn, unacked=1)).run(Tx(conn), msgs, {TP: "mine"}, ["public.t"])
    assert _state(dsn) == before and before["rows"] == [] and before["next"] == (0,)


@pytest.mark.parametrize("guard", ["column", "side"])
def test_a_snapshot_sweep_waits_for_every_partition_of_the_table(dsn: str, guard: str) -> None:
    """The end-of-snapshot sweep deletes the target rows the snapshot did not deliver. Its marker
    goes to every partition after that partition's snapshot rows, and the partitions are applied
    independently: a partition's marker applied while another partition's snapshot rows are
    still to come must delete nothing, or rows the snapshot holds vanish from the target until
    (and unless) those rows arrive (the fallback's reverse snapshot deleted legacy rows so,
    issue 22). With a side table (fallback) the rows of legacy the reverse sync has not written
    yet have no position at all."""
    tp1 = (TOPIC, 1)
    with psycopg.connect(dsn, autocommit=True) as c:
        claim_partitions(c, BK, GROUP, [TP, tp1], "e1", "mine")
        if guard == "side":  # legacy's table: no column of ours
            c.execute("CREATE TABLE public.l (id int PRIMARY KEY)")
            c.execute("INSERT INTO public.l SELECT generate_series(1, 4)")
            ensure_side_schema(c, BK)
        else:  # rows an older snapshot or stream wrote
            c.execute("INSERT INTO public.t SELECT g, 1 FROM generate_series(1, 4) g")
    table = "public.l" if guard == "side" else "public.t"

    def rows() -> list[int]:
        with psycopg.connect(dsn, autocommit=True) as c:
            return [r[0] for r in c.execute(f"SELECT id FROM {table} ORDER BY id").fetchall()]

    b = Batch()
    s_lsn = 1000  # the snapshot holds keys 1 (partition 0) and 2 (partition 1), not 3 and 4
    p0 = [b.change(1, s_lsn, snapshot=True), b.control("sweep", s_lsn, 0, partitions=2)]
    p1 = [b.change(2, s_lsn, partition=1, snapshot=True), b.control("sweep", s_lsn, 1, 2)]
    owner = {TP: "mine", tp1: "mine"}
    with psycopg.connect(dsn, autocommit=True) as conn:
        shape = read_shape(conn, table)
        assert shape is not None
        applier = TableApplier(shape, BK, guard=SideTable()) if guard == "side" else None
        commit = _commit(conn, b, Producer(dsn), applier)
        commit.run(Tx(conn), p0, owner, ["public.t"])
        # partition 1 has not delivered key 2 yet: nothing may go
        assert rows() == [1, 2, 3, 4]
        commit.run(Tx(conn), p1, owner, ["public.t"])
        # every partition passed the marker: what the snapshot did not deliver goes
        assert rows() == [1, 2]


def test_a_later_sweep_of_a_side_table_deletes_only_rows_the_reverse_sync_wrote(dsn: str) -> None:
    """Fallback's legacy tables: the first snapshot's sweep makes legacy what the new database
    holds (a row with no position goes: it was deleted there). A later re-snapshot's sweep
    deletes only the rows the reverse sync wrote below it, never one legacy got from elsewhere
    (no position: the business writing in legacy again after going back)."""
    with psycopg.connect(dsn, autocommit=True) as c:
        claim_partitions(c, BK, GROUP, [TP], "e1", "mine")
        c.execute("CREATE TABLE public.l (id int PRIMARY KEY)")
        c.execute("INSERT INTO public.l SELECT generate_series(1, 3)")
        ensure_side_schema(c, BK)

    def rows() -> list[int]:
        with psycopg.connect(dsn, autocommit=True) as c:
            return [r[0] for r in c.execute("SELECT id FROM public.l ORDER BY id").fetchall()]

    b, owner = Batch(), {TP: "mine"}
    with psycopg.connect(dsn, autocommit=True) as conn:
        shape = read_shape(conn, "public.l")
        assert shape is not None
        commit = _commit(conn, b, Producer(dsn), TableApplier(shape, BK, guard=SideTable()))
        first = [b.change(k, 1000, snapshot=True) for k in (1, 2)]
        commit.run(Tx(conn), [*first, b.control("sweep", 1000, 0, 1)], owner, ["public.t"])
        assert rows() == [1, 2]
        conn.execute("INSERT INTO public.l VALUES (9)")  # legacy's own row
        again = [b.change(1, 2000, snapshot=True), b.control("sweep", 2000, 0, 1)]
        commit.run(Tx(conn), again, owner, ["public.t"])
        assert rows() == [1, 9]  # 2: written by the reverse sync, gone from the new database
