"""Integration tests for crossfade.embedded: the embedded PostgreSQL and Tansu broker."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from crossfade.embedded import CONSUMER_TUNING, EmbeddedBroker, EmbeddedPostgres, free_port
from crossfade.errors import BrokerUnavailable, DatabaseUnavailable, PreflightError

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="module")
def pg() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A directory under the system temp dir (pytest's tmp_path is 0700 root-only, which the
    unprivileged PostgreSQL user cannot enter when the tests run as root)."""
    path = Path(tempfile.mkdtemp(prefix="crossfade-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _scalar(dsn: str, query: str) -> object:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
        assert row is not None
        return row[0]


def test_pg_creates_databases_with_logical_wal(pg: EmbeddedPostgres) -> None:
    pg.create_database("legacy")
    pg.create_database("target")
    pg.create_database("legacy")  # idempotent
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        names = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert {"legacy", "target"} <= names
    assert pg.dsn("legacy") == f"postgresql://postgres@127.0.0.1:{pg.port}/legacy"
    assert _scalar(pg.dsn("legacy"), "SHOW wal_level") == "logical"
    assert int(str(_scalar(pg.dsn(), "SHOW max_replication_slots"))) >= 10
    assert int(str(_scalar(pg.dsn(), "SHOW max_wal_senders"))) >= 10
    assert _scalar(pg.dsn(), "SELECT current_user") == "postgres"
    assert _scalar(pg.dsn(), "SHOW server_encoding") == "UTF8"


def test_pg_logical_slot_with_pgoutput(pg: EmbeddedPostgres) -> None:
    pg.create_database("slots")
    with psycopg.connect(pg.dsn("slots"), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, v text)")
        conn.execute("CREATE PUBLICATION crossfade_pub FOR TABLE t")
        conn.execute("SELECT pg_create_logical_replication_slot('crossfade_test', 'pgoutput')")
        conn.execute("INSERT INTO t VALUES (1, 'a')")
        plugin = conn.execute(
            "SELECT plugin FROM pg_replication_slots WHERE slot_name = 'crossfade_test'"
        ).fetchone()
        assert plugin == ("pgoutput",)
        changes = conn.execute(
            "SELECT count(*) FROM pg_logical_slot_peek_binary_changes('crossfade_test', NULL, "
            "NULL, 'proto_version', '1', 'publication_names', 'crossfade_pub')"
        ).fetchone()
        assert changes is not None and changes[0] >= 3  # BEGIN, RELATION, INSERT, COMMIT
        conn.execute("SELECT pg_drop_replication_slot('crossfade_test')")
        left = conn.execute("SELECT count(*) FROM pg_replication_slots").fetchone()
        assert left == (0,)
        conn.execute("DROP PUBLICATION crossfade_pub")


def test_pg_restart_keeps_data_and_port(pg: EmbeddedPostgres) -> None:
    pg.create_database("keep")
    with psycopg.connect(pg.dsn("keep"), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS kept (id int PRIMARY KEY)")
        conn.execute("INSERT INTO kept VALUES (1) ON CONFLICT DO NOTHING")
    port, old_pid = pg.port, pg.pid
    pg.restart()
    assert pg.port == port
    assert pg.pid is not None and pg.pid != old_pid
    assert _scalar(pg.dsn("keep"), "SELECT count(*) FROM kept") == 1


def test_pg_kill_then_start_recovers(pg: EmbeddedPostgres) -> None:
    pg.create_database("crash")
    with psycopg.connect(pg.dsn("crash"), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS c (id int PRIMARY KEY)")
        conn.execute(
            "INSERT INTO c SELECT g FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING"
        )
    pg.kill()
    assert not pg.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.dsn(), connect_timeout=2)
    pg.kill()  # no-op when not running
    pg.start()
    assert _scalar(pg.dsn("crash"), "SELECT count(*) FROM c") == 1000
    assert pg.log_path is not None
    assert "not properly shut down" in pg.log_path.read_text()


def test_pg_runs_in_its_own_session(pg: EmbeddedPostgres) -> None:
    """A terminal Ctrl-C goes to the foreground process group; the server is not in it."""
    assert pg.pid is not None
    assert os.getsid(pg.pid) != os.getsid(0)
    assert os.getpgid(pg.pid) != os.getpgid(0)


def test_pg_given_data_dir_is_reused_and_kept(scratch_dir: Path) -> None:
    data_dir = scratch_dir / "nested" / "pgdata"
    with EmbeddedPostgres(data_dir) as first:
        first.create_database("app")
        with psycopg.connect(first.dsn("app"), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (id int)")
            conn.execute("INSERT INTO t VALUES (42)")
    assert (data_dir / "PG_VERSION").exists()
    assert (data_dir / "postgres.log").exists()
    log = scratch_dir / "logs"
    log.mkdir()
    with EmbeddedPostgres(data_dir, log_to=log) as second:
        assert _scalar(second.dsn("app"), "SELECT id FROM t") == 42
    assert (log / "postgres.log").stat().st_size > 0
    assert data_dir.exists()


def test_pg_stop_is_idempotent_and_removes_temp_dir() -> None:
    server = EmbeddedPostgres().start()
    data_dir = server.data_dir
    assert data_dir is not None and data_dir.exists()
    server.stop()
    server.stop()
    assert not data_dir.exists()
    with pytest.raises(DatabaseUnavailable):
        server.create_database("nope")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs the server as another user")
def test_pg_refuses_data_dir_the_server_user_cannot_reach() -> None:
    private = Path(tempfile.mkdtemp(prefix="crossfade-private-"))  # 0700, owned by root
    try:
        with pytest.raises(PreflightError, match="cannot enter"):
            EmbeddedPostgres(private / "pgdata").start()
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_pg_with_pgserver_binaries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback binaries (pgserver wheel, PostgreSQL 16) work through the same flow."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "pgserver (a dependency in pyproject.toml: PostgreSQL 16 binaries in a wheel, the fallback when the OS has none) is not installed"
        )
    bindir = Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"
    monkeypatch.setenv("CROSSFADE_PG_BINDIR", str(bindir))
    with EmbeddedPostgres() as server:
        assert server.binaries is not None and server.binaries.source == "CROSSFADE_PG_BINDIR"
        assert int(str(_scalar(server.dsn(), "SHOW server_version_num"))) >= 160000
        assert _scalar(server.dsn(), "SHOW wal_level") == "logical"


def test_pg_bad_bindir_override_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSFADE_PG_BINDIR", "/nonexistent")
    with pytest.raises(PreflightError, match="CROSSFADE_PG_BINDIR"):
        EmbeddedPostgres().start()


# --------------------------------------------------------------------------- Tansu broker


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as server:
        yield server


def _create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    futures[name].result(timeout=15)


def _topics(bootstrap: str) -> dict[str, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    meta = admin.list_topics(timeout=10)
    return {name: len(t.partitions) for name, t in meta.topics.items()}


def test_broker_topic_produce_consume_with_group(broker: EmbeddedBroker) -> None:
    bootstrap = broker.bootstrap_servers
    assert bootstrap == f"127.0.0.1:{broker.port}"
    _create_topic(bootstrap, "orders", 4)
    assert _topics(bootstrap).get("orders") == 4

    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for i in range(100):
        producer.produce(
            "orders", key=f"k{i}".encode(), value=f"v{i}".encode(), on_delivery=on_delivery
        )
    assert producer.flush(30) == 0
    assert errors == []

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "crossfade-test",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **CONSUMER_TUNING,
        }
    )
    seen: dict[str, int] = {}
    try:
        consumer.subscribe(["orders"])
        deadline = time.monotonic() + 60
        while len(seen) < 100 and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            value = msg.value()
            assert value is not None
            seen[value.decode()] = msg.partition()
        consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert set(seen) == {f"v{i}" for i in range(100)}
    assert len(set(seen.values())) > 1  # keys spread over the partitions


def test_broker_restart_loses_everything(broker: EmbeddedBroker) -> None:
    """Tansu runs in memory: after a restart the topic is gone (crossfade must detect this)."""
    _create_topic(broker.bootstrap_servers, "ephemeral", 2)
    assert "ephemeral" in _topics(broker.bootstrap_servers)
    port = broker.port
    broker.restart()
    assert broker.port == port
    assert "ephemeral" not in _topics(broker.bootstrap_servers)


def test_broker_kill_then_start(broker: EmbeddedBroker) -> None:
    _create_topic(broker.bootstrap_servers, "gone", 1)
    broker.kill()
    assert not broker.running
    broker.start()
    assert "gone" not in _topics(broker.bootstrap_servers)
    assert os.getsid(broker.pid or 0) != os.getsid(0)


def test_broker_stop_is_idempotent() -> None:
    server = EmbeddedBroker().start()
    server.stop()
    server.stop()
    assert not server.running


def test_broker_port_in_use_is_an_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises((PreflightError, BrokerUnavailable), match="in use"):
            EmbeddedBroker(port=sock.getsockname()[1]).start(timeout=5)


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
