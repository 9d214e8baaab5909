"""Fault-injection harness for the integration suite (FAULTS.md).

A run is: a :class:`TypedWriter` thread keeps a mixed load going against the legacy database
(inserts, updates of a small column beside a TOASTed one, updates of the large value, deletes,
primary-key updates, the types of FAULTS.md case 24); a fault is injected at a chosen moment
(the ``inject_*`` functions, or a precise point inside the sync worker through
:data:`FAULT_POINT_ENV`); then :func:`settle` stops the writer, waits for a fence and compares
every key of every table (a hash of each row's text form, plus no Debezium placeholder anywhere
in the target: :meth:`tests.conftest.Stack.assert_equal`).

Precise points inside a sync worker process (``CF_FAULT_POINT=<point>:<n>``, read by
``fault_hooks/sitecustomize.py``, which the subprocess imports at start-up because
:func:`start_with_fault` puts that directory first on ``PYTHONPATH``):

* ``after_commit:N`` - SIGKILL right after the N-th batch's target transaction committed, before
  the offsets are committed to Kafka (case 1);
* ``mid_batch:N`` - SIGKILL inside the N-th batch's transaction, after its rows were written
  (case 2);
* ``commit_ack_lost:N`` - the N-th COMMIT goes through but the worker sees the connection drop
  (case 7): it must retry without applying twice;
* ``stop_before_apply:N`` - SIGSTOP itself just before the N-th batch's transaction (case 10);
* ``stop_mid_batch:N`` - SIGSTOP itself inside the N-th batch's transaction, after its first table
  was written, holding the offset row locks (case 10, frozen mid-batch);
* ``pause_mid_batch:N`` - sleep ``CF_FAULT_PAUSE_S`` seconds inside the N-th batch's transaction,
  after its first table was written (case 33: the new database crashes meanwhile);
* ``pause_in_merge:N`` - the same inside the N-th dedup merge of a batch (case 33).

Stacks whose every component can fail (the databases on servers of their own, a broker of their
own, the link to the new database through a proxy) are in ``fault_stack.py``.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition
from psycopg.types.json import Jsonb

from crossfade.embedded import EmbeddedPostgres
from tests.conftest import Proc, Stack, wait_for

FAULT_POINT_ENV = "CF_FAULT_POINT"  # not CROSSFADE_*: the settings loader would reject it
HOOKS_DIR = Path(__file__).parent / "fault_hooks"

FX_TABLE = "public.fx"
FX_DDL = """
DO $$ BEGIN CREATE TYPE fx_mood AS ENUM ('sad', 'ok', 'happy'); EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE TABLE IF NOT EXISTS public.fx (
    id bigint PRIMARY KEY,
    n numeric(12,3), nv numeric, ts timestamp, tstz timestamptz, d date, iv interval,
    j jsonb, arr int[], tarr text[], u uuid, b bytea, m fx_mood, f8 float8,
    small int NOT NULL DEFAULT 0,
    big text
);
"""

# Values at the edges FAULTS.md case 24 names, as PostgreSQL text (cast by the server).
_NUMERIC = ["123.456", "-0.001", "0", None, "99999999.999"]
_NV = [
    "NaN",
    "Infinity",
    "-Infinity",
    "12345678901234567890.123456789012",
    "0.000000000000000000001",
    "-1",
    None,
]
_TS = [
    "2024-03-31 02:30:00.123456",
    "2024-10-27 02:30:00",
    "infinity",
    "-infinity",
    "1970-01-01 00:00:00",
    "1999-12-31 23:59:59.999999",
    None,
]
_TSTZ = [
    "2024-10-27 01:30:00+01",
    "2024-03-10 02:30:00-05",
    "2024-03-31 01:59:59.999999+00",
    "infinity",
    "-infinity",
    "0001-01-01 00:00:00+00",
    None,
]
_DATE = ["2024-02-29", "0001-01-01", "2038-01-19", "infinity", "-infinity", None]
_IV = ["1 year 2 mons 3 days 04:05:06.789", "-1 days -00:00:01", "00:00:00.000001", "0", None]
_F8 = [1.5e300, float("nan"), float("inf"), -0.0, 3.25, None]


def _big(rng: random.Random, n: int) -> str:
    """Incompressible text: stored out of line (TOAST) once above ~2 kB."""
    return "".join(
        rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
        for _ in range(n)
    )


@dataclass
class WriterStats:
    inserts: int = 0
    updates: int = 0
    toast_updates: int = 0
    deletes: int = 0
    pk_updates: int = 0
    enum_labels: int = 0
    transactions: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.inserts + self.updates + self.toast_updates + self.deletes + self.pk_updates


class TypedWriter:
    """Mixed load on ``public.fx`` with every type of case 24 until :meth:`stop`.

    Each transaction holds 1-4 changes: inserts with edge values, updates of ``small`` beside an
    unchanged TOASTed ``big``, updates of ``big`` itself, deletes, primary-key updates and, rarely,
    a new enum label. Connection errors are counted and the writer reconnects (the source may be
    under a fault too).
    """

    def __init__(
        self, dsn: str, *, seed: int = 1, rate: float = 40.0, big_bytes: int = 8000
    ) -> None:
        self.dsn = dsn
        self.seed = seed
        self.rng = random.Random(seed)
        self.rate = rate
        self.big_bytes = big_bytes
        self.stats = WriterStats()
        self._next_id = 1
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def create(self, rows: int = 200) -> TypedWriter:
        """Create the table and an initial population (what the snapshot carries)."""
        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute(FX_DDL)
            # A primary-key UPDATE of a row whose large value is unchanged reaches Debezium as a
            # create without that value (pgoutput sends "unchanged TOAST") unless the old row is
            # logged whole; with the default identity sync stops on purpose (README, operations)
            c.execute("ALTER TABLE public.fx REPLICA IDENTITY FULL")
            top = c.execute("SELECT coalesce(max(id), 0) FROM public.fx").fetchone()
            self._next_id = int(top[0]) + 1 if top else 1
            with c.transaction():
                for _ in range(rows):
                    self._insert(c)
        return self

    def _values(self) -> tuple[Any, ...]:
        r = self.rng
        return (
            r.choice(_NUMERIC),
            r.choice(_NV),
            r.choice(_TS),
            r.choice(_TSTZ),
            r.choice(_DATE),
            r.choice(_IV),
            Jsonb({"k": r.randint(0, 9), "é": "☃ 𝄞", "nested": [1, None, {"x": r.random()}]})
            if r.random() < 0.8
            else None,
            [r.randint(-(2**31), 2**31 - 1), None, 7] if r.random() < 0.7 else None,
            ["a b", "c,d", None, 'q"uote', "back\\slash", ""] if r.random() < 0.5 else [],
            str(uuid.UUID(int=r.getrandbits(128))),
            bytes(r.getrandbits(8) for _ in range(r.randint(0, 40))),
            r.choice(self._labels()),
            r.choice(_F8),
            r.randint(0, 1000),
            _big(r, self.big_bytes) if r.random() < 0.3 else None,
        )

    def _labels(self) -> list[str]:
        return ["sad", "ok", "happy"] + [f"l{i}" for i in range(self.stats.enum_labels)]

    def _insert(self, c: psycopg.Connection) -> None:
        c.execute(
            "INSERT INTO public.fx (id, n, nv, ts, tstz, d, iv, j, arr, tarr, u, b, m, f8, small, big) "
            "VALUES (%s, %s::numeric, %s::numeric, %s::timestamp, %s::timestamptz, %s::date, %s::interval, "
            "%s, %s, %s, %s::uuid, %s, %s::fx_mood, %s, %s, %s)",
            (self._next_id, *self._values()),
        )
        self._next_id += 1
        self.stats.inserts += 1

    def _some_id(self, c: psycopg.Connection) -> int | None:
        row = c.execute(
            "SELECT id FROM public.fx WHERE id >= %s ORDER BY id LIMIT 1",
            (self.rng.randint(1, self._next_id),),
        ).fetchone()
        return int(row[0]) if row else None

    def step(self, c: psycopg.Connection) -> None:
        r = self.rng
        with c.transaction():
            for _ in range(r.randint(1, 4)):
                x = r.random()
                if x < 0.35:
                    self._insert(c)
                    continue
                key = self._some_id(c)
                if key is None:
                    continue
                if x < 0.6:  # small column beside an unchanged (maybe TOASTed) value
                    c.execute(
                        "UPDATE public.fx SET small = small + 1, nv = %s::numeric WHERE id = %s",
                        (r.choice(_NV), key),
                    )
                    self.stats.updates += 1
                elif x < 0.7:
                    c.execute(
                        "UPDATE public.fx SET big = %s WHERE id = %s",
                        (_big(r, self.big_bytes), key),
                    )
                    self.stats.toast_updates += 1
                elif x < 0.85:
                    c.execute("DELETE FROM public.fx WHERE id = %s", (key,))
                    self.stats.deletes += 1
                elif x < 0.995:
                    c.execute("UPDATE public.fx SET id = %s WHERE id = %s", (self._next_id, key))
                    self._next_id += 1
                    self.stats.pk_updates += 1
                else:
                    label = f"l{self.stats.enum_labels}"
                    c.execute(f"ALTER TYPE fx_mood ADD VALUE IF NOT EXISTS '{label}'")
                    self.stats.enum_labels += 1
                    break  # a new label cannot be used in the transaction that added it
        self.stats.transactions += 1

    def _loop(self) -> None:
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        conn: psycopg.Connection | None = None
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = psycopg.connect(self.dsn, autocommit=True)
                self.step(conn)
            except psycopg.Error as exc:
                self.stats.errors.append(
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                )
                with contextlib.suppress(Exception):
                    if conn is not None:
                        conn.close()
                conn = None
                self._stop.wait(0.5)
            if interval:
                self._stop.wait(interval)
        if conn is not None:
            conn.close()

    def start(self) -> TypedWriter:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="typed-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            assert not self._thread.is_alive(), "the writer did not stop"


# -- stacks ----------------------------------------------------------------------------------


class SplitStack(Stack):
    """A stack whose target database lives on its own PostgreSQL server, so the target can be
    restarted (case 8) while capture keeps reading the legacy one."""

    def __init__(
        self,
        pg: EmbeddedPostgres,
        target_pg: EmbeddedPostgres,
        bootstrap: str,
        root: Path,
        **kw: Any,
    ) -> None:
        super().__init__(pg, bootstrap, root, **kw)
        self.target_pg = target_pg
        target_pg.create_database(self.target_db)

    @property
    def target_dsn(self) -> str:
        return self.target_pg.dsn(self.target_db)


def start_with_fault(stack: Stack, what: str, point: str, pause_s: float | None = None) -> Proc:
    """Start ``crossfade <what>`` with a precise fault point (see the module docstring)."""
    env = stack._env()
    env[FAULT_POINT_ENV] = point
    # the point fires in the N-th batch of *the* worker, and the tests stop, resume and cut that
    # process by its pid: one process (sync.processes would make it a parent of several)
    env["CROSSFADE_SYNC__PROCESSES"] = "1"
    if pause_s is not None:
        env["CF_FAULT_PAUSE_S"] = str(pause_s)
    env["PYTHONPATH"] = os.pathsep.join([str(HOOKS_DIR), *filter(None, [env.get("PYTHONPATH")])])
    p = Proc(what, [what], env, stack.dir / f"{what}.log")
    stack.procs.append(p)
    return p


def target_rows(stack: Stack, table: str) -> int:
    try:
        with stack.tgt() as t:
            return int(t.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
    except psycopg.Error:
        return 0


def settle(stack: Stack, *writers: Any, timeout: float = 300) -> float:
    """Stop the writers, wait for a fence, compare every key of every table; return the fence delay."""
    for w in writers:
        w.stop()
    delay = stack.fence(timeout=timeout)
    stack.assert_equal()
    return delay


def proc_state(proc: Proc) -> str:
    """The kernel's one-letter state of the process (``T`` when stopped)."""
    try:
        stat = Path(f"/proc/{proc.p.pid}/stat").read_text()
    except OSError:
        return "X"
    return stat.rsplit(")", 1)[1].split()[0]


def peak_rss_mb(proc: Proc) -> float:
    """Peak resident memory (VmHWM) of the process and its children, in MiB."""
    total = 0
    pids = [proc.p.pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{proc.p.pid}/task/{proc.p.pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
    return total / 1024


# -- injectors -------------------------------------------------------------------------------


def inject_sigkill(stack: Stack, proc: Proc) -> Proc:
    """SIGKILL ``proc`` wherever it is and start a fresh one of the same kind."""
    proc.kill()
    return stack.start(proc.name)


def inject_pause(proc: Proc, seconds: float) -> None:
    """SIGSTOP ``proc`` (its whole process group) for ``seconds``, then SIGCONT."""
    os.killpg(proc.p.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.killpg(proc.p.pid, signal.SIGCONT)


def inject_cut_target_connections(stack: Stack) -> int:
    """``pg_terminate_backend`` every other session on the target database (sync's)."""
    with psycopg.connect(stack.target_dsn, autocommit=True) as c:
        rows = c.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchall()
    return len(rows)


def inject_cut_broker_connections(proc: Proc, bootstrap: str) -> int:
    """Reset ``proc``'s TCP connections to the broker (``ss -K``), as a network partition would.

    With the process SIGSTOPped this is how its group membership ends on a broker that keeps a
    silent but connected member forever (Tansu does; Kafka evicts after session.timeout.ms)."""
    import subprocess

    ports = {int(hp.rsplit(":", 1)[1]) for hp in bootstrap.split(",")}
    inodes = set()
    for fd in Path(f"/proc/{proc.p.pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    local_ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                f = line.split()
                if f[9] in inodes and int(f[2].rsplit(":", 1)[1], 16) in ports:
                    local_ports.append(int(f[1].rsplit(":", 1)[1], 16))
    for lp in local_ports:
        subprocess.run(["ss", "-K", "sport", "=", f":{lp}"], check=True, capture_output=True)
    return len(local_ports)


def inject_target_restart(stack: SplitStack, down_s: float = 3.0, crash: bool = True) -> None:
    """Restart the target's PostgreSQL server: ``crash`` SIGKILLs it (crash recovery on start)
    and keeps it down ``down_s`` seconds; otherwise a fast stop and start."""
    if crash:
        stack.target_pg.kill()
        time.sleep(down_s)
        stack.target_pg.start(timeout=60)
    else:
        stack.target_pg.restart(timeout=60)


def inject_poison(
    stack: Stack, table: str, payload: bytes | None = None, partition: int = 0
) -> None:
    """Produce bytes that are no Avro change event straight onto ``table``'s change topic."""
    s = stack.settings
    p = Producer(s.kafka.client_config())
    p.produce(
        s.kafka.table_topic(table),
        key=b"poison-" + os.urandom(4),
        value=payload or b"\x00garbage" + os.urandom(32),
        partition=partition,
    )
    assert p.flush(30) == 0, "the poison record was not acknowledged"


def inject_schema_change(stack: Stack, ddl: str) -> None:
    stack.sql(ddl)


# -- reading and re-producing change records (event-level cases) -------------------------------


@dataclass
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    event: Any  # ChangeEvent, or None for tombstones and control records


def read_records(stack: Stack, table: str, timeout: float = 20) -> list[Record]:
    """Every record of ``table``'s change topic, decoded (control records and tombstones: None)."""
    from crossfade.events.decode import POSITION_HEADER, EventDecoder, header
    from crossfade.events.kafka import control_kind

    s = stack.settings
    topic = s.kafka.table_topic(table)
    c = Consumer(
        {
            **s.kafka.client_config(),
            "group.id": f"fx-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    c.assign([TopicPartition(topic, p, 0) for p in range(stack.partitions)])
    dec = EventDecoder(s.kafka)
    out: list[Record] = []
    eof: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(eof) < stack.partitions and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == -191:  # _PARTITION_EOF
                eof.add(m.partition())
            continue
        ev = None
        if m.value() is not None and control_kind(m.headers()) is None:
            ev = dec.decode(m.key(), m.value(), table, header(m, POSITION_HEADER))
        out.append(
            Record(m.partition(), m.offset(), m.key(), m.value(), list(m.headers() or []), ev)
        )
    c.close()
    assert len(eof) == stack.partitions, f"could not read {topic} to its end"
    return out


def reproduce(stack: Stack, table: str, rec: Record, *, value: bytes | None | str = "same") -> None:
    """Produce ``rec`` again (same key, bytes, headers and partition), or a tombstone (value=None)."""
    s = stack.settings
    p = Producer(s.kafka.client_config())
    p.produce(
        s.kafka.table_topic(table),
        key=rec.key,
        value=rec.value if value == "same" else value,
        headers=rec.headers if value == "same" else [],
        partition=rec.partition,
    )
    assert p.flush(30) == 0, "the re-produced record was not acknowledged"


def stat_skipped(stack: Stack, table: str) -> int:
    with stack.tgt() as t:
        row = t.execute(
            "SELECT coalesce(sum(skipped), 0) FROM crossfade.table_stats WHERE tbl = %s", (table,)
        ).fetchone()
    return int(row[0]) if row else 0


__all__ = [
    "FX_TABLE",
    "FAULT_POINT_ENV",
    "SplitStack",
    "TypedWriter",
    "inject_cut_broker_connections",
    "inject_cut_target_connections",
    "inject_pause",
    "inject_poison",
    "inject_schema_change",
    "inject_sigkill",
    "inject_target_restart",
    "peak_rss_mb",
    "proc_state",
    "read_records",
    "reproduce",
    "settle",
    "start_with_fault",
    "stat_skipped",
    "target_rows",
    "wait_for",
]
