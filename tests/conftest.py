"""Shared fixtures.

Integration tests run the real embedded stack: one PostgreSQL server and one Tansu broker per
session, and per test a fresh pair of databases (legacy, target), topic prefix, replication slot
and state directory, so tests never see each other's data. ``crossfade capture`` and
``crossfade sync`` run as real subprocesses through the CLI, so a test can SIGKILL them.

Set ``CROSSFADE_TEST_BOOTSTRAP`` to run the same tests against a real Kafka instead of Tansu.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from hypothesis import settings as hypothesis_settings

import crossfade.mapping  # noqa: F401 - installs the engine's check the config's mapping runs at load
from crossfade.config import Settings, load_settings
from crossfade.embedded import EmbeddedBroker, EmbeddedPostgres

_counter = itertools.count(1)

# Property tests check results, not speed: hypothesis' default 200 ms deadline per example failed
# test_pgtext's decimal property on a machine at load 17 (speed is measured in bench/, not here).
hypothesis_settings.register_profile("crossfade", deadline=None)
hypothesis_settings.load_profile("crossfade")


def wait_for(
    pred: Callable[[], Any],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.2,
) -> Any:
    """Poll ``pred`` until truthy; fail the test naming ``what`` on timeout. A diagnosis (process
    logs, stacks: ``Stack._diag``) goes in a callable: called at the timeout, it shows where the
    processes stand then. Built before the wait, it showed the start of the wait: test_fault_35's
    failure looked like capture silent for 120 s (its log's tail and a py-spy dump taken as the
    wait began) while it had logged its error and then hung in its exit."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {said}")
        time.sleep(interval)


def offline_settings() -> Settings:
    """Settings of one table whose servers nobody listens on (unit tests of a component)."""
    return Settings(
        source={"dsn": "postgresql://u@127.0.0.1:1/legacy"},
        target={"dsn": "postgresql://u@127.0.0.1:1/target"},
        kafka={"bootstrap_servers": "127.0.0.1:1"},
        tables=["public.t"],
    )


def pgbench_failed_transactions(output: str) -> int:
    """Failed transactions in pgbench's summary (0 when it prints none: before PostgreSQL 15).
    pgbench 15 exits 0 on failed transactions, so its exit status alone does not tell."""
    m = re.search(r"number of failed transactions: (\d+)", output)
    return int(m.group(1)) if m else 0


@pytest.fixture(scope="session")
def work_root() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="crossfade-it-"))
    d.chmod(0o755)  # the PostgreSQL server user must traverse it when tests run as root
    yield d


@pytest.fixture(scope="session")
def pg_server(work_root: Path) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(log_to=work_root / "postgres.log")
    pg.start()
    os.environ.setdefault("CROSSFADE_TEST_PG_DSN", pg.dsn())
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def bootstrap(work_root: Path) -> Iterator[str]:
    real = os.environ.get("CROSSFADE_TEST_BOOTSTRAP")
    if real:
        yield real
        return
    b = EmbeddedBroker(log_to=work_root / "tansu.log")
    b.start()
    yield b.bootstrap_servers
    b.stop()


class Proc:
    """A crossfade subprocess with its log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self.expected_dead = False
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "crossfade.ops.cli", *args],
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.p.poll() is None

    def kill(self) -> None:
        self.expected_dead = True
        if self.alive():
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(30)

    def stop(self, timeout: float = 60) -> int:
        self.expected_dead = True
        if self.alive():
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(10)
        self._fh.close()
        return self.p.returncode

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def _stacks(p: Proc) -> str:
    """Where a live process stands (py-spy dump of its Python threads): a test that times out
    waiting for a process says what the process was waiting for."""
    spy = Path(sys.executable).with_name("py-spy")
    if not p.alive() or not spy.exists():
        return ""
    try:
        out = subprocess.run(
            [str(spy), "dump", "--pid", str(p.p.pid)], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"\n(py-spy dump failed: {exc})"
    return f"\n[py-spy dump of pid {p.p.pid}]\n{out.stdout or out.stderr}"


def _lock_waits(dsn: str) -> str:
    """The target's sessions that wait for a lock, each with the sessions blocking it (their
    state, transaction age and last statement): a stuck worker's diagnosis names the holder
    (test_fault_10 once waited minutes in claim_partitions behind a lock nobody identified)."""
    q = (
        "SELECT w.pid, left(w.query, 160), b.pid, b.state, "
        "round(extract(epoch FROM now() - b.xact_start)::numeric, 1), left(b.query, 160), "
        "b.application_name FROM pg_stat_activity w "
        "JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid) ON true "
        "JOIN pg_stat_activity b ON b.pid = bp.pid WHERE w.datname = current_database()"
    )
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as c:
            rows = c.execute(q).fetchall()
    except psycopg.Error as exc:
        return f"\n--- target lock waits: not read ({exc}) ---"
    if not rows:
        return "\n--- target lock waits: none ---"
    return "\n--- target lock waits ---\n" + "\n".join(
        f"pid {w} waits in [{wq}] for pid {b} ({st}, transaction {age} s old, "
        f"{app or 'no application name'}): [{bq}]"
        for w, wq, b, st, age, bq, app in rows
    )


class Stack:
    """One isolated migration: legacy and target databases, topics, slot, processes."""

    def __init__(
        self,
        pg: EmbeddedPostgres,
        bootstrap: str,
        root: Path,
        partitions: int = 2,
        initial_load: str | None = None,
        converter: str | None = None,
        **sync: Any,
    ) -> None:
        """``initial_load``: ``capture.initial_load`` (copy|debezium), else
        ``$CROSSFADE_TEST_INITIAL_LOAD`` (to run the suite under the other load: the processes'
        environment drops every ``CROSSFADE_*`` variable, so ``CROSSFADE_CAPTURE__INITIAL_LOAD``
        never reaches them), else the default; ``converter``: ``capture.converter`` (python|jvm), else ``$CROSSFADE_TEST_CONVERTER`` (to
        run the suite under the other converter), else the default."""
        n = next(_counter)
        self.initial_load = initial_load or os.environ.get("CROSSFADE_TEST_INITIAL_LOAD")
        self.converter = converter or os.environ.get("CROSSFADE_TEST_CONVERTER")
        self.n = n
        self.pg = pg
        self.dir = root / f"stack{n}"
        self.dir.mkdir(parents=True)
        self.legacy_db, self.target_db = f"legacy_{n}", f"target_{n}"
        pg.create_database(self.legacy_db)
        pg.create_database(self.target_db)
        self.tables: list[str] = []
        self.partitions = partitions
        self.bootstrap = bootstrap
        self.sync_overrides = sync
        self.procs: list[Proc] = []
        self.config_path = self.dir / "crossfade.yaml"

    @property
    def source_dsn(self) -> str:
        return self.pg.dsn(self.legacy_db)

    @property
    def target_dsn(self) -> str:
        return self.pg.dsn(self.target_db)

    def src(self) -> psycopg.Connection:
        return psycopg.connect(self.source_dsn, autocommit=True)

    def tgt(self) -> psycopg.Connection:
        return psycopg.connect(self.target_dsn, autocommit=True)

    def sql(self, statement: str, params: Any = None) -> None:
        with self.src() as c:
            c.execute(statement, params)

    def write_config(
        self,
        tables: list[str],
        ops: dict[str, Any] | None = None,
        mapping: dict[str, Any] | None = None,
    ) -> Settings:
        """``ops``: the config's ``ops`` section (e.g. ``{"metrics_port": 9464}``); ``mapping``:
        the config's ``mapping`` section (without it the tables are copied as they are)."""
        self.tables = tables
        cfg = {
            "source": {"dsn": self.source_dsn},
            "target": {"dsn": self.target_dsn},
            "kafka": {
                "bootstrap_servers": self.bootstrap,
                "topic_prefix": f"it{self.n}_{os.getpid()}",
                "partitions": self.partitions,
            },
            "tables": tables,
            "capture": {
                "slot_name": f"cf_it{self.n}",
                "publication_name": f"cf_it{self.n}",
                "state_dir": str(self.dir / "capture"),
                "heartbeat_interval_ms": 1000,
                **({"initial_load": self.initial_load} if self.initial_load else {}),
                **({"converter": self.converter} if self.converter else {}),
            },
            # a consumer group per stack: a member of an earlier test's group that died uncleanly
            # must not hold this test's JoinGroup up (Tansu waits for it)
            "sync": {
                "batch_size": 2000,
                "group_id": f"cf-sync-{self.n}-{os.getpid()}",
                **self.sync_overrides,
            },
        }
        if ops:
            cfg["ops"] = ops
        if mapping is not None:
            cfg["mapping"] = mapping
        self.config_path.write_text(yaml.safe_dump(cfg))
        return self.settings

    @property
    def settings(self) -> Settings:
        return load_settings(self.config_path)

    def sync_processes(self) -> int:
        """How many sync processes ``start("sync")`` runs with this config (``sync.processes``;
        ``auto``: the usable CPUs, at most the partitions): each holds a pause and beats."""
        from crossfade.ops.children import resolve_processes

        s = self.settings
        return resolve_processes(s.sync.processes, s.kafka.partitions)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSFADE_")}
        # but sync.processes: the suite under several sync processes (CROSSFADE_SYNC__PROCESSES=2),
        # as the test process's own load_settings reads it (sync_processes() must agree)
        if "CROSSFADE_SYNC__PROCESSES" in os.environ:
            env["CROSSFADE_SYNC__PROCESSES"] = os.environ["CROSSFADE_SYNC__PROCESSES"]
        env["CROSSFADE_CONFIG"] = str(self.config_path)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, what: str) -> Proc:
        p = Proc(what, [what], self._env(), self.dir / f"{what}.log")
        self.procs.append(p)
        return p

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "crossfade.ops.cli", *args],
            env={**self._env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def fence(self, timeout: float = 180) -> float:
        from crossfade.events.kafka import Admin
        from crossfade.verify.fence import fence

        s = self.settings
        admin = Admin(s.kafka.client_config())
        wait_for(
            lambda: all(admin.partitions(s.kafka.table_topic(t)) for t in s.tables),
            120,
            lambda: "capture to create the change topics" + self._diag(),
        )
        deadline = time.monotonic() + timeout
        while True:
            dead = self.dead_procs()
            if dead:
                raise AssertionError(
                    f"{dead[0].name} exited with {dead[0].p.returncode}{self._diag()}"
                )
            try:
                return fence(s, timeout=5).seconds
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{exc}{self._diag()}") from None

    def dead_procs(self) -> list[Proc]:
        """Processes that died and were not expected to (a fence fails on them)."""
        return [p for p in self.procs if not p.alive() and not p.expected_dead]

    def _diag(self) -> str:
        return "".join(
            f"\n--- {p.name} (alive={p.alive()}) ---\n{p.tail()}{_stacks(p)}" for p in self.procs
        ) + _lock_waits(self.target_dsn)

    def compare(self) -> list[Any]:
        from crossfade.ops.demo import compare_all

        return compare_all(self.settings)

    def assert_equal(self) -> None:
        diffs = self.compare()
        bad = [d.as_dict() for d in diffs if not d.match]
        assert not bad, f"source and target differ: {bad}{self._diag()}"

    def close(self) -> None:
        for p in self.procs:
            p.stop(30)
        with self.src() as c:
            c.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = %s AND NOT active",
                (f"cf_it{self.n}",),
            )


@pytest.fixture
def stack_factory(
    pg_server: EmbeddedPostgres, bootstrap: str, work_root: Path
) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(**kw: Any) -> Stack:
        s = Stack(pg_server, bootstrap, work_root, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def stack(stack_factory: Callable[..., Stack]) -> Stack:
    return stack_factory()


@pytest.fixture(params=["copy", "debezium"])
def load_stack(request: pytest.FixtureRequest, stack_factory: Callable[..., Stack]) -> Stack:
    """A stack per way of loading the existing rows (``capture.initial_load``)."""
    return stack_factory(initial_load=request.param)
