"""crossfade vs PostgreSQL's native logical replication, on the same generated workload.

    .venv/bin/python -m bench.run [all|snapshot|cdc|catchup|sync ...] [--rows N] [--seconds T] [--profile]

Two embedded PostgreSQL servers (legacy on A, every target on B: native logical replication
needs a subscriber on another cluster anyway, and crossfade gets the same layout) and one
embedded Tansu broker. On A, two identical legacy databases are made with ``pgbench -i`` (one
per pipeline, so neither pipeline's slot holds back the other's WAL); pgbench runs use the same
parameters and ``--random-seed`` for both. Benchmarks (see bench/README.md):

1. ``snapshot``: crossfade snapshot-to-verified (capture + sync started -> fence -> row compare)
   vs CREATE SUBSCRIPTION -> every table ready; peak RSS of capture and sync.
2. ``cdc``: pgbench TPC-B-like for T s; drain after the load stops (a probe row written at the
   end seen in the target); events/s; p50/p99 source -> target latency of probe rows written
   during the load (``clock_timestamp()`` at insert in the source, a trigger's
   ``clock_timestamp()`` in the target), at full rate and at half the rate crossfade sustained.
3. ``catchup``: sync stopped (native: subscription disabled) during the load, then started:
   backlog drain rate; where crossfade's seconds went (sync's process start to subscribing,
   the consumer group join, joined to the first committed batch, from there to the end probe
   and that part's events/s), when capture had produced the whole backlog (it streams during
   the load and may lag it: the drain cannot end before), and the CPU of sync, the target
   cluster and the broker over the drain (``--profile --profile-idle``: py-spy samples waiting
   threads too, so the flame graph shows the wall time).
4. ``sync``: a fresh target and consumer group replay the topics (every event the runs above
   produced) through ``crossfade sync``, and through bench/naive_consumer.py.

Results: a table on stdout, bench/results/<benchmark>.json (the latest run of each) and a row
per benchmark in bench/README.md's history table; ``--profile`` writes py-spy
flame graphs of capture and sync to bench/results/.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.conftest import Stack  # noqa: E402  (the integration tests' harness)

from bench import history  # noqa: E402
from bench.timeline import Timeline, print_summary, sched_by_role  # noqa: E402
from crossfade.config import load_settings  # noqa: E402
from crossfade.embedded import EmbeddedBroker, EmbeddedPostgres  # noqa: E402
from crossfade.embedded._proc import free_port  # noqa: E402
from crossfade.verify.fence import fence  # noqa: E402

RESULTS = REPO / "bench" / "results"
TABLES = [
    "public.pgbench_accounts",
    "public.pgbench_branches",
    "public.pgbench_tellers",
    "public.pgbench_history",
    "public.bench_probe",
]
PROBE_DDL = "CREATE TABLE bench_probe (id bigserial PRIMARY KEY, t_src timestamptz NOT NULL DEFAULT clock_timestamp())"
SEEN_DDL = """
CREATE TABLE IF NOT EXISTS bench_probe_seen (id bigint PRIMARY KEY, t_tgt timestamptz NOT NULL);
CREATE OR REPLACE FUNCTION bench_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.bench_probe_seen VALUES (NEW.id, clock_timestamp()) ON CONFLICT DO NOTHING; RETURN NEW; END $$;
DROP TRIGGER IF EXISTS bench_seen ON bench_probe;
CREATE TRIGGER bench_seen AFTER INSERT ON bench_probe FOR EACH ROW EXECUTE FUNCTION bench_seen();
ALTER TABLE bench_probe ENABLE ALWAYS TRIGGER bench_seen;
"""
EVENTS_PER_TX = 4  # tpcb-like: 3 UPDATEs + 1 INSERT


def probe_times(src: str, tgt: str, lo: int, hi: int) -> tuple[dict[int, float], dict[int, float]]:
    """Probe rows ``lo < id <= hi``: their insert time in the source and their apply time in the
    target (the trigger's), epoch seconds, both from the databases' clocks."""
    with psycopg.connect(src) as c:
        src_t = dict(
            c.execute(
                "SELECT id, extract(epoch FROM t_src)::float8 FROM bench_probe WHERE id > %s AND id <= %s",
                (lo, hi),
            ).fetchall()
        )
    with psycopg.connect(tgt) as c:
        tgt_t = dict(
            c.execute(
                "SELECT id, extract(epoch FROM t_tgt)::float8 FROM bench_probe_seen WHERE id > %s AND id <= %s",
                (lo, hi),
            ).fetchall()
        )
    return src_t, tgt_t


def p50_p99_ms(seconds: list[float]) -> tuple[float, float]:
    vals = sorted(seconds)
    return 1000 * statistics.median(vals), 1000 * vals[min(len(vals) - 1, int(0.99 * len(vals)))]


class XStack(Stack):
    """The tests' Stack with the target database on the second server."""

    def __init__(
        self,
        pg: EmbeddedPostgres,
        pg_target: EmbeddedPostgres,
        bootstrap: str,
        root: Path,
        **sync: Any,
    ) -> None:
        super().__init__(pg, bootstrap, root, partitions=4, **sync)
        self.pgt = pg_target
        pg_target.create_database(self.target_db)

    @property
    def target_dsn(self) -> str:
        return self.pgt.dsn(self.target_db)

    jvm_options: list[str] | None = None
    """capture.jvm_options (``--jvm-options``); None: the default."""
    capture_properties: dict[str, str] | None = None
    """capture.properties, Debezium properties over capture's own (``--capture-properties``)."""
    metrics_url: str | None = None
    """capture's /metrics (its batch histograms show how busy its handler is)."""
    _extra_env: dict[str, str] = {}  # noqa: RUF012 - replaced, never mutated

    def _env(self) -> dict[str, str]:
        return {**super()._env(), **self._extra_env}

    debug_logs = False
    """``--debug-logs``: capture and sync log at DEBUG, Debezium at INFO."""

    def _start_proc(self, what: str) -> Any:
        if not self.debug_logs:
            return super().start(what)
        from tests.conftest import Proc

        env = {**self._env(), "CROSSFADE_DEBEZIUM_LOG": "INFO"}
        p = Proc(what, [what, "-v"], env, self.dir / f"{what}.log")
        self.procs.append(p)
        return p

    def start(self, what: str) -> Any:
        if what not in ("capture", "run"):
            return self._start_proc(what)
        # only capture (or `crossfade run`) serves /metrics: sync and CLI commands share the config
        port = free_port()
        self._extra_env = {"CROSSFADE_OPS__METRICS_PORT": str(port)}
        if self.jvm_options is not None:
            self._extra_env["CROSSFADE_CAPTURE__JVM_OPTIONS"] = json.dumps(self.jvm_options)
        if self.capture_properties is not None:
            self._extra_env["CROSSFADE_CAPTURE__PROPERTIES"] = json.dumps(self.capture_properties)
        try:
            p = self._start_proc(what)
        finally:
            self._extra_env = {}
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"
        return p

    def fence_once_streamed(self, timeout: float = 3600) -> float:
        """One fence, written once the replication slot is consistent: its row is then streamed
        whenever Debezium gets to it, so the first fence completes and the time to it is not
        rounded up to the tests' retries (:meth:`Stack.fence` writes a fence every 5 s, because
        one written before the slot exists belongs to the initial load and never arrives).
        Returns the fence's own seconds."""
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.source_dsn, autocommit=True) as src:
            while not src.execute(
                "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s "
                "AND confirmed_flush_lsn IS NOT NULL",
                (self.settings.capture.slot_name,),
            ).fetchone():
                if time.monotonic() > deadline or self.dead_procs():
                    return self.fence(timeout=max(1.0, deadline - time.monotonic()))
                time.sleep(0.02)
        return fence(
            self.settings, timeout=max(1.0, deadline - time.monotonic()), poll=0.02
        ).seconds


PIPELINE = ("capture", "sync", "run")
"""Names of the processes that carry crossfade's changes (``run``: both services in one)."""


def capture_batches(url: str | None) -> dict[str, float]:
    """capture's batch histograms (sums and counts) from its /metrics, {} if not reachable."""
    if url is None:
        return {}
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback URL built above
            text = r.read().decode()
    except OSError:
        return {}
    wanted = {
        "crossfade_capture_batch_duration_seconds_sum",
        "crossfade_capture_batch_duration_seconds_count",
        "crossfade_capture_flush_duration_seconds_sum",
        "crossfade_capture_batch_size_records_sum",
        "crossfade_capture_handler_cpu_seconds_total",
    }
    return {
        s.name.removeprefix("crossfade_capture_"): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name in wanted
    }


class RssPeak:
    """Peak RSS (MiB) of some processes, sampled every 0.2 s in a thread."""

    def __init__(self) -> None:
        self.peak: dict[str, float] = {}
        self._pids: dict[str, int] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def watch(self, name: str, pid: int) -> None:
        self._pids[name] = pid

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            # `run`'s sync children are reported apart ("run/sync-1")
            for name, pid in [*list(self._pids.items()), *sync_children(self._pids).items()]:
                try:
                    rss = psutil.Process(pid).memory_info().rss / 2**20
                except psutil.Error:
                    continue
                self.peak[name] = max(self.peak.get(name, 0.0), rss)


class Profiler:
    def __init__(self, enabled: bool, fmt: str, tag: str) -> None:
        self.enabled, self.fmt, self.tag = enabled, fmt, tag
        self.procs: list[subprocess.Popen[bytes]] = []
        self.files: list[str] = []
        self.idle = False
        """py-spy's --idle: waiting threads sampled too."""

    def start(self, name: str, pid: int) -> None:
        if not self.enabled:
            return
        ext = {"flamegraph": "svg", "speedscope": "json", "raw": "txt"}[
            self.fmt
        ]  # raw: collapsed stacks
        out = RESULTS / f"{self.tag}-{name}.{ext}"
        self.files.append(str(out.relative_to(REPO)))
        self.procs.append(
            subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("py-spy")),
                    "record",
                    "-r",
                    "50",
                    "-f",
                    self.fmt,
                    "-o",
                    str(out),
                    "-p",
                    str(pid),
                    *(["--idle"] if self.idle else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGINT)
        for p in self.procs:
            p.wait(60)
        self.procs = []


def cpu_seconds(pid: int) -> float:
    """The process's CPU and that of its children it waited for (capture's COPY streams)."""
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def sync_children(pids: dict[str, int]) -> dict[str, int]:
    """The sync child processes (``sync.processes``) of the watched processes, as
    ``run/sync-1``...: `crossfade run` runs sync in them, so their CPU and RSS are its too."""
    out: dict[str, int] = {}
    for name, pid in list(pids.items()):
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(pid).children():
                with contextlib.suppress(psutil.Error):
                    label = child.environ().get("CROSSFADE_SYNC_CHILD")
                    if label:
                        out[f"{name}/{label}"] = child.pid
    return out


def service_cpu(pid: int) -> float:
    """:func:`cpu_seconds` of a crossfade command plus its live sync child processes
    (``sync.processes``: `crossfade run` always runs sync in children; their times reach the
    parent's only once they have exited and been waited for)."""
    total = cpu_seconds(pid)
    for kid in sync_children({"p": pid}).values():
        with contextlib.suppress(psutil.Error):
            total += cpu_seconds(kid)
    return total


def cluster_cpu(postmaster: int) -> float:
    """CPU seconds of a PostgreSQL cluster: the postmaster, its live processes, and (through the
    postmaster's reaped-children times) the backends that have exited."""
    pm = psutil.Process(postmaster)
    t = pm.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in pm.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            total += cpu_seconds(child.pid)
    return total


# capture's threads by what they do (Linux thread names, truncated to 15 characters by the kernel)
CAPTURE_THREAD_ROLES = (
    ("jit", ("C1 CompilerThre", "C2 CompilerThre")),
    ("gc", ("GC Thread", "G1 ", "VM Thread")),
    ("debezium", ("debezium-",)),  # pgoutput decoding, the change records, Debezium's metrics
    ("converter", ("pool-3-thread",)),  # the engine's JSON converter
    ("handler", ("pool-2-thread",)),  # the engine's consumer: capture's Python, produce, flush
    ("snapshot", ("pool-4-thread",)),  # Debezium's snapshot reader (snapshot.max.threads of them)
    ("kafka", ("rdk:",)),  # librdkafka
)


def set_autogroup_nice(pids: Any, nice: int) -> None:
    """``--autogroup-nice``: the CPU weight of the scheduling groups of crossfade's processes.
    With ``kernel.sched_autogroup_enabled`` every session is one group that the scheduler gives
    an equal share of the CPUs whatever its thread count (each crossfade process starts its own
    session): one `crossfade run` is one share where capture + sync are two. Nice -3 weighs about
    twice nice 0, +3 about half (a lower nice needs CAP_SYS_NICE)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))


def thread_times(pid: int) -> dict[str, tuple[str, float]]:
    """Thread id -> (role, CPU seconds) of a process's threads (``CAPTURE_THREAD_ROLES``;
    ``other`` for the rest), from ``/proc/<pid>/task/*/stat``."""
    out: dict[str, tuple[str, float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (task / "stat").read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            role = next(
                (r for r, prefixes in CAPTURE_THREAD_ROLES if name.startswith(prefixes)), "other"
            )
            out[task.name] = (role, (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a process's threads by role (:func:`thread_times`): where a JVM-hosting
    process spends its CPU, which py-spy (Python frames only) cannot show."""
    out: dict[str, float] = {}
    for role, cpu in thread_times(pid).values():
        out[role] = out.get(role, 0.0) + cpu
    return out


class OffsetProgress:
    """Sync's committed progress, sampled every 20 ms in a thread: (time.time(), the sum of the
    group's stored next offsets in the target). Batches commit their offsets in the target, so the
    first change of the sum is the first committed batch. A second thread samples the topics' log
    end offsets every 50 ms (``ends``): when capture had produced the whole backlog."""

    def __init__(self, dsn: str, group_id: str, settings: Any = None) -> None:
        self.dsn, self.group_id, self.settings = dsn, group_id, settings
        self.samples: list[tuple[float, int]] = []
        self.ends: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True)]
        if settings is not None:
            self._threads.append(threading.Thread(target=self._run_ends, daemon=True))

    def start(self) -> OffsetProgress:
        for t in self._threads:
            t.start()
        return self

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            while not self._stop.wait(0.02):
                row = c.execute(
                    "SELECT coalesce(sum(next_offset), 0) FROM crossfade.offsets WHERE group_id = %s",
                    (self.group_id,),
                ).fetchone()
                self.samples.append((time.time(), int(row[0]) if row else 0))

    def _run_ends(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        k = self.settings.kafka
        c = Consumer({**k.client_config(), "group.id": "bench-watermarks"})
        try:
            tps = [
                TopicPartition(k.table_topic(t), p)
                for t in self.settings.tables
                for p in range(k.partitions)
            ]
            while not self._stop.wait(0.05):
                with contextlib.suppress(Exception):
                    ends = sum(c.get_watermark_offsets(tp, timeout=2)[1] for tp in tps)
                    self.ends.append((time.time(), ends))
        finally:
            c.close()

    def stop(self) -> list[tuple[float, int]]:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        return self.samples

    def applied_all(self, timeout: float) -> float:
        """When sync's stored offsets first reached the topics' log ends, sampled after now
        (time.time()); waits for it."""
        since = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ends = [n for t, n in self.ends if t >= since]
            done = [t for t, n in self.samples if t >= since and ends and n >= ends[-1]]
            if done:
                return done[0]
            time.sleep(0.05)
        raise RuntimeError(f"sync did not apply the whole backlog within {timeout:.0f}s")

    def produced_at(self) -> float | None:
        """When the log end offsets last grew: capture had produced everything by then."""
        last = None
        for i, (t, n) in enumerate(self.ends):
            if i == 0 or n > self.ends[i - 1][1]:
                last = t
        return last


def log_times(logs: list[Path], needles: dict[str, str]) -> dict[str, float]:
    """The time (epoch s) of the last line of the JSON logs holding each needle (what -> needle):
    the last, since a log holds every start of its process."""
    out: dict[str, float] = {}
    for path in logs:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                for what, needle in needles.items():
                    if needle in line:
                        with contextlib.suppress(ValueError, KeyError):
                            ts = json.loads(line)["ts"].replace("Z", "+00:00")
                            out[what] = datetime.fromisoformat(ts).timestamp()
    return out


def catchup_phases(
    t0: float, t1: float, samples: list[tuple[float, int]], logs: list[Path]
) -> dict[str, Any]:
    """Where a catch-up's seconds went: process start to subscribing (imports, target set-up),
    the consumer group join, joined to the first committed batch, and the first batch to the end
    probe; and the rate of that last part (events committed / seconds)."""
    at = log_times(logs, {"subscribed": "change topic(s) as", "joined": "joined consumer group"})
    first = next((t for t, n in samples if samples and n > samples[0][1]), None)
    if not at or first is None:
        return {}
    sub, joined = at.get("subscribed", t0), at.get("joined", t0)
    applied = samples[-1][1] - samples[0][1]
    return {
        "phases_s": {
            "start": sub - t0,
            "join": joined - sub,
            "first batch": first - joined,
            "applying": t1 - first,
        },
        "applying_events_per_s": applied / (t1 - first) if t1 > first else None,
    }


def wait(pred: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)  # polling granularity (20 ms), never a measurement


def one(dsn: str, q: str, params: Any = None) -> Any:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(q, params).fetchone()
        return row[0] if row else None


def execute(dsn: str, q: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(q)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="crossfade-bench-"))
        self.root.chmod(0o755)
        self.pg = EmbeddedPostgres(log_to=self.root / "pg-legacy.log").start()
        self.pgt = EmbeddedPostgres(log_to=self.root / "pg-target.log").start()
        self.broker = EmbeddedBroker(log_to=self.root / "tansu.log").start()
        self.pgbench = self.pg.binaries.tool("pgbench")
        self.rss = RssPeak()
        self.pipeline = ["run"] if args.one_process else ["capture", "sync"]
        """The crossfade processes a benchmark starts (``--one-process``: `crossfade run`)."""
        self.tag = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.prof = Profiler(args.profile, args.profile_format, self.tag)
        self.prof.idle = getattr(args, "profile_idle", False)
        self.rows: list[
            tuple[str, str, Any, Any]
        ] = []  # (benchmark, metric, crossfade, native/baseline)
        self.results: dict[str, Any] = {}
        scale = max(1, round(args.rows / 100_000))
        self.scale = scale
        # crossfade's pipeline
        self.x = XStack(
            self.pg,
            self.pgt,
            self.broker.bootstrap_servers,
            self.root,
            initial_load=args.initial_load,
            converter=args.converter,
            batch_size=args.batch_size,
            append_only_tables=["public.pgbench_history"],
            **({} if args.sync_workers is None else {"workers": args.sync_workers}),
        )
        if args.jvm_options is not None:
            self.x.jvm_options = args.jvm_options.split()
        if args.capture_properties is not None:
            self.x.capture_properties = json.loads(args.capture_properties)
        self.x.debug_logs = args.debug_logs
        # native logical replication's pipeline
        self.n_src = "native_legacy"
        self.n_tgt = "native_target"
        self.pg.create_database(self.n_src)
        self.pgt.create_database(self.n_tgt)
        for dsn in (self.x.source_dsn, self.pg.dsn(self.n_src)):
            subprocess.run(
                [self.pgbench, "-i", "-s", str(scale), "-q", dsn], check=True, capture_output=True
            )
            execute(dsn, PROBE_DDL)
        self.x.write_config(TABLES)
        self.n_rows = sum(one(self.x.source_dsn, f"SELECT count(*) FROM {t}") for t in TABLES)

    # -- helpers ------------------------------------------------------------------------------
    @property
    def n_src_dsn(self) -> str:
        return self.pg.dsn(self.n_src)

    @property
    def n_tgt_dsn(self) -> str:
        return self.pgt.dsn(self.n_tgt)

    def copy_schema(self, src: str, tgt: str) -> None:
        dump = subprocess.run(
            [self.pg.binaries.tool("pg_dump"), "-s", "-d", src, *(f"-t{t}" for t in TABLES)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        subprocess.run(
            [self.pg.binaries.tool("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", tgt],
            input=dump,
            check=True,
            capture_output=True,
            text=True,
        )

    def record(self, bench: str, metric: str, xf: Any, base: Any) -> None:
        self.rows.append((bench, metric, xf, base))

    def load(
        self, dsn: str, seconds: float, rate: float | None = None, probes: bool = True
    ) -> dict[str, Any]:
        """pgbench tpcb-like for ``seconds``, a probe row every 20 ms alongside; returns tps, txns."""
        stop = threading.Event()

        def probe() -> None:
            with psycopg.connect(dsn, autocommit=True) as c:
                while not stop.wait(0.02):
                    c.execute("INSERT INTO bench_probe DEFAULT VALUES")

        t = threading.Thread(target=probe, daemon=True)
        first_probe = one(dsn, "SELECT coalesce(max(id), 0) FROM bench_probe")
        if probes:
            t.start()
        cmd = [
            self.pgbench,
            "-n",
            "-b",
            "tpcb-like",
            "-c",
            str(self.args.clients),
            "-j",
            "2",
            "-T",
            str(int(seconds)),
            "--random-seed",
            "42",
            dsn,
        ]
        if rate:
            cmd[1:1] = ["-R", str(int(rate))]
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        t_end = time.time()
        stop.set()
        if probes:
            t.join()
        txns = int(
            next(
                line.split()[-1].split("/")[0]
                for line in r.stdout.splitlines()
                if "processed:" in line
            )
        )
        tps = float(
            next(
                line.split("=")[1].split()[0]
                for line in r.stdout.splitlines()
                if line.startswith("tps")
            )
        )
        last_probe = one(dsn, "SELECT coalesce(max(id), 0) FROM bench_probe")
        return {
            "tps": tps,
            "txns": txns,
            "events": txns * EVENTS_PER_TX + (last_probe - first_probe),
            "t_end": t_end,
            "first_probe": first_probe,
            "last_probe": last_probe,
        }

    def marker(self, src: str, tgt: str, timeout: float = 600) -> float:
        """Insert a probe row now; seconds until the target has it (its apply time)."""
        mid = one(src, "INSERT INTO bench_probe DEFAULT VALUES RETURNING id")
        wait(
            lambda: one(tgt, "SELECT 1 FROM bench_probe WHERE id = %s", (mid,)),
            timeout,
            f"probe {mid} in the target",
        )
        return time.time()

    @staticmethod
    def latency(src: str, tgt: str, lo: int, hi: int) -> dict[str, float]:
        src_t, tgt_t = probe_times(src, tgt, lo, hi)
        lat = [tgt_t[i] - src_t[i] for i in src_t if i in tgt_t]
        if not lat:
            return {"p50_ms": float("nan"), "p99_ms": float("nan"), "n": 0}
        p50, p99 = p50_p99_ms(lat)
        return {"p50_ms": p50, "p99_ms": p99, "n": len(lat)}

    def latency_stages(self, src: str, tgt: str, lo: int, hi: int) -> dict[str, float]:
        """Where crossfade's latency goes, per probe row: source commit -> capture's produce() (the
        record's CreateTime: Debezium reading the WAL, its queue, capture's handler) and produce()
        -> applied in the target (broker, consumer fetch, sync's batch and transaction)."""
        from confluent_kafka import Consumer, TopicPartition

        from crossfade.errors import DecodeError
        from crossfade.events.decode import EventDecoder

        settings = self.x.settings
        topic = settings.kafka.table_topic("public.bench_probe")
        dec = EventDecoder(settings.kafka)
        c = Consumer(
            {
                **settings.kafka.client_config(),
                "group.id": f"bench-stages-{time.time_ns()}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        produced: dict[int, float] = {}
        try:
            meta = c.list_topics(topic, timeout=10).topics[topic]
            c.assign([TopicPartition(topic, p, 0) for p in meta.partitions])
            quiet = 0
            while quiet < 5:
                msgs = c.consume(1000, 1.0)
                quiet = 0 if msgs else quiet + 1
                for m in msgs:
                    if m.error() or m.value() is None:
                        continue
                    try:
                        ev = dec.decode(m.key(), m.value(), "public.bench_probe")
                    except (
                        DecodeError
                    ):  # capture's control records (snapshot sweep) share the topic
                        continue
                    pid = int(ev.key["id"]) if ev.key else 0
                    if lo < pid <= hi:
                        produced[pid] = m.timestamp()[1] / 1000
        finally:
            c.close()
        src_t, tgt_t = probe_times(src, tgt, lo, hi)
        ids = [i for i in produced if i in src_t and i in tgt_t]
        if not ids:
            return {"n": 0}
        cap = p50_p99_ms([produced[i] - src_t[i] for i in ids])
        rest = p50_p99_ms([tgt_t[i] - produced[i] for i in ids])
        return {
            "n": len(ids),
            "capture_p50_ms": cap[0],
            "capture_p99_ms": cap[1],
            "broker_sync_p50_ms": rest[0],
            "broker_sync_p99_ms": rest[1],
        }

    # -- 1. snapshot --------------------------------------------------------------------------
    def snapshot(self) -> None:
        # native: schema, publication, subscription; ready when every table is 'r'
        self.copy_schema(self.n_src_dsn, self.n_tgt_dsn)
        execute(self.n_src_dsn, "CREATE PUBLICATION bench_pub FOR TABLE " + ", ".join(TABLES))
        t0 = time.time()
        execute(
            self.n_tgt_dsn,
            f"CREATE SUBSCRIPTION bench_sub CONNECTION '{self.n_src_dsn}' PUBLICATION bench_pub",
        )
        wait(
            lambda: (
                one(
                    self.n_tgt_dsn,
                    "SELECT count(*) = 0 FROM pg_subscription_rel WHERE srsubstate <> 'r'",
                )
                and one(self.n_tgt_dsn, "SELECT count(*) FROM pg_subscription_rel") == len(TABLES)
            ),
            1800,
            "native initial sync",
        )
        native = time.time() - t0
        execute(self.n_tgt_dsn, SEEN_DDL)

        # crossfade: capture + sync from nothing -> fence -> compare every row
        t0 = time.time()
        for name in self.pipeline:
            p = self.x.start(name)
            self.rss.watch(name, p.p.pid)
            self.prof.start(f"snapshot-{name}", p.p.pid)
        fence_s = self.x.fence_once_streamed(timeout=3600)
        t_fenced = time.time()
        self.prof.stop()
        # verified = what a user runs: `crossfade verify` (counts and chunked checksums in SQL,
        # every table, recorded); then, untimed, the tests' independent row-by-row comparison
        r = self.x.cli("verify", "--json", timeout=3600)
        t_verified = time.time()
        if r.returncode != 0:
            raise RuntimeError(
                f"crossfade verify failed after the snapshot: {r.stderr[-2000:]} {r.stdout[-2000:]}"
            )
        try:  # where verify's own time went (its JSON report: whole run, fences, per table)
            rep = json.loads(r.stdout)
            verify_split = {
                "seconds": rep.get("seconds"),
                "fence_seconds": rep.get("fence_seconds"),
                "tables": {t["name"]: t.get("seconds") for t in rep.get("tables", [])},
            }
        except (ValueError, AttributeError, KeyError):
            verify_split = {}
        t_c = time.time()
        diffs = self.x.compare()
        compare_s = time.time() - t_c
        equal = all(d.match for d in diffs)
        execute(self.x.target_dsn, SEEN_DDL)
        xf = t_verified - t0
        self.results["snapshot"] = {
            "rows": self.n_rows,
            # wall-clock instants, for a timeline against the processes' logs (--keep-logs)
            "t0_unix": t0,
            "fenced_unix": t_fenced,
            "verified_unix": t_verified,
            "crossfade_to_fence_s": t_fenced - t0,
            "fence_own_s": fence_s,
            "crossfade_verify_s": t_verified - t_fenced,
            "crossfade_to_verified_s": xf,
            "native_s": native,
            "equal": equal,
            "row_by_row_compare_s": compare_s,
            "rate_ratio_to_verified": native / xf,
            "rate_ratio_to_fence": native / (t_fenced - t0),
            "peak_rss_mib": dict(self.rss.peak),
            "verify_report": verify_split,
        }
        self.record(
            "snapshot",
            f"{self.n_rows} rows: s to verified (fence)",
            f"{xf:.1f} ({t_fenced - t0:.1f})",
            f"{native:.1f}",
        )
        self.record(
            "snapshot",
            "rows/s (to verified)",
            f"{self.n_rows / xf:,.0f}",
            f"{self.n_rows / native:,.0f}",
        )
        self.record(
            "snapshot",
            "rows/s (to fence)",
            f"{self.n_rows / (t_fenced - t0):,.0f}",
            f"{self.n_rows / native:,.0f}",
        )
        loads = [
            json.loads(p.read_text())
            for p in Path(self.x.settings.capture.state_dir).glob("load-*.json")
        ]
        done = [d for d in loads if d.get("done") and d.get("seconds")]
        if (
            done
        ):  # capture.initial_load: copy — the COPY itself, without process start-up and hand-off
            secs = done[-1]["seconds"]
            self.results["snapshot"]["copy_load_s"] = secs
            self.record(
                "snapshot",
                "rows/s (COPY load alone)",
                f"{self.n_rows / secs:,.0f}",
                f"{self.n_rows / native:,.0f}",
            )
        # the pipeline's processes, then `run`'s sync children ("run/sync-1")
        names = [*self.pipeline, *sorted(k for k in self.rss.peak if "/" in k)]
        self.record(
            "snapshot",
            f"peak RSS MiB {'/'.join(names)}",
            "/".join(f"{self.rss.peak.get(k, 0):.0f}" for k in names),
            "-",
        )
        if not equal:
            raise RuntimeError(
                f"crossfade target differs after the snapshot: {[d.as_dict() for d in diffs if not d.match]}"
            )

    # -- 2. steady CDC --------------------------------------------------------------------------
    def _pipeline_pids(self, name: str) -> dict[str, int]:
        """The processes that carry the changes: crossfade's capture (JVM included) and sync, or
        the one `crossfade run` (``--one-process``); native's walsender (source) and apply
        worker (target)."""
        if name == "crossfade":
            return {p.name: p.p.pid for p in self.x.procs if p.alive() and p.name in PIPELINE}
        pids = {}
        ws = one(
            self.n_src_dsn,
            "SELECT pid FROM pg_stat_replication WHERE application_name = 'bench_sub' LIMIT 1",
        )
        ap = one(
            self.n_tgt_dsn,
            "SELECT pid FROM pg_stat_subscription WHERE subname = 'bench_sub' AND relid IS NULL LIMIT 1",
        )
        if ws:
            pids["walsender"] = ws
        if ap:
            pids["apply"] = ap
        return pids

    @staticmethod
    def _cpu(pids: dict[str, int]) -> dict[str, float]:
        out = {}
        for k, pid in pids.items():
            with contextlib.suppress(psutil.Error):
                out[k] = service_cpu(pid)
        return out

    def _timeline(self, pids: dict[str, int]) -> Timeline:
        """``--timeline``: the backlog by stage and every process's CPU, sampled (bench/timeline.py)."""

        def cpu() -> dict[str, float]:
            out: dict[str, float] = {}
            for name, pid in pids.items():
                with contextlib.suppress(psutil.Error, OSError):
                    roles = CAPTURE_THREAD_ROLES if name in ("capture", "run") else ()
                    out.update({f"{name}.{k}": v for k, v in sched_by_role(pid, roles).items()})
            with contextlib.suppress(psutil.Error):
                out["broker"] = self._broker_cpu()
                out["pg_legacy"] = cluster_cpu(self.pg.pid)
                out["pg_target"] = cluster_cpu(self.pgt.pid)
            return out

        return Timeline(self.x.settings, self.x.source_dsn, self.x.target_dsn, cpu).start()

    def _cdc_run(self, label: str, rate: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, src, tgt in (
            ("native", self.n_src_dsn, self.n_tgt_dsn),
            ("crossfade", self.x.source_dsn, self.x.target_dsn),
        ):
            if self.args.warmup and label == "cdc":
                # the same load, unmeasured (nor profiled), then drained: what follows is a warm
                # pipeline (capture's JIT compiled), the steady state of a capture running for days
                self.load(src, self.args.warmup, None, probes=False)
                self.marker(src, tgt)
            if name == "crossfade":
                for p in self.x.procs:
                    if p.alive() and p.name in PIPELINE:
                        self.prof.start(f"{label}-{p.name}", p.p.pid)
            pids = self._pipeline_pids(name)
            if name == "crossfade" and self.args.autogroup_nice is not None:
                set_autogroup_nice(pids.values(), self.args.autogroup_nice)
            # the process hosting capture's JVM: its threads by role (in `crossfade run` sync's
            # Python threads, named after the process like its main thread, count as "other")
            cap_pid = pids.get("capture") or pids.get("run")
            cpu0 = self._cpu(pids)
            threads0 = thread_cpu(cap_pid) if cap_pid else {}
            batches0 = capture_batches(self.x.metrics_url) if cap_pid else {}
            tl = self._timeline(pids) if name == "crossfade" and self.args.timeline else None
            timeline: dict[str, Any] = {}
            t0 = time.time()
            ld = self.load(src, self.args.seconds, rate)
            if tl is not None:
                tl.marks["load_end"] = ld["t_end"]
            t_seen = self.marker(src, tgt)
            cpu1 = self._cpu(pids)
            threads1 = thread_cpu(cap_pid) if cap_pid else {}
            batches1 = capture_batches(self.x.metrics_url) if cap_pid else {}
            wall = time.time() - t0
            if tl is not None:
                tl.marks["seen"] = t_seen
                time.sleep(0.5)  # a sample after the probe was seen
                tl.stop()
                summary = tl.summary(ld["events"], t0)
                print_summary(f"{label} ({'+'.join(self.pipeline)})", summary)
                tl_path = RESULTS / f"{self.tag}-{label}-timeline.json"
                tl.write(tl_path, summary)
                timeline = {"file": tl_path.name, **summary.get("at_load_end", {})}
            self.prof.stop()
            drain = t_seen - ld["t_end"]
            lat = self.latency(src, tgt, ld["first_probe"], ld["last_probe"])
            if name == "crossfade":
                lat["stages"] = self.latency_stages(src, tgt, ld["first_probe"], ld["last_probe"])
            cpu_us = {k: 1e6 * (cpu1[k] - cpu0[k]) / ld["events"] for k in cpu1 if k in cpu0}
            out[name] = {
                **{k: v for k, v in ld.items() if k != "t_end"},
                "drain_s": drain,
                "events_per_s": ld["events"] / (self.args.seconds + drain),
                **lat,
                "cpu_us_per_event": cpu_us,
                "load_avg": os.getloadavg(),
            }
            if timeline:
                out[name]["timeline"] = timeline
            if batches0 and batches1:
                d = {k: batches1[k] - batches0.get(k, 0.0) for k in batches1}
                n = d.get("batch_duration_seconds_count") or 0
                out[name]["capture_handler"] = {
                    "busy": d.get("batch_duration_seconds_sum", 0.0) / wall,
                    "waiting_for_broker": d.get("flush_duration_seconds_sum", 0.0) / wall,
                    "batches": n,
                    "mean_batch": d.get("batch_size_records_sum", 0.0) / n if n else 0.0,
                }
                if "handler_cpu_seconds_total" in d:
                    # the handler thread's CPU inside handle() (capture's own code, what
                    # bench.capture_handler_cpu measures) vs the rest of that thread: the engine
                    # between batches (queue polls, batch processing, markProcessed)
                    out[name]["capture_handler"]["handle_us_per_event"] = (
                        1e6 * d["handler_cpu_seconds_total"] / ld["events"]
                    )
            if threads1:
                out[name]["capture_threads_us_per_event"] = {
                    k: 1e6 * (v - threads0.get(k, 0.0)) / ld["events"]
                    for k, v in sorted(threads1.items())
                }
        return out

    def cdc(self) -> None:
        full = self._cdc_run("cdc", None)
        n, x = full["native"], full["crossfade"]
        # half of what crossfade sustained end to end (not pgbench's rate during the run, which a
        # pipeline that falls behind does not sustain)
        half_rate = x["events_per_s"] / EVENTS_PER_TX / 2
        half = self._cdc_run("cdc-half", half_rate)
        self.results["cdc"] = {
            "seconds": self.args.seconds,
            "clients": self.args.clients,
            "warmup_s": self.args.warmup,
            "full": full,
            "half_rate_tps": half_rate,
            "half": half,
        }
        warm = f" after a {self.args.warmup} s warm-up" if self.args.warmup else ""
        self.record(
            "cdc",
            f"pgbench -c{self.args.clients} -T{self.args.seconds}{warm}: tps",
            f"{x['tps']:.0f}",
            f"{n['tps']:.0f}",
        )
        self.record(
            "cdc", "drain after load stops, s", f"{x['drain_s']:.2f}", f"{n['drain_s']:.2f}"
        )
        self.record(
            "cdc", "events/s sustained", f"{x['events_per_s']:,.0f}", f"{n['events_per_s']:,.0f}"
        )
        self.record(
            "cdc",
            "latency p50/p99 ms (full rate)",
            f"{x['p50_ms']:.0f}/{x['p99_ms']:.0f}",
            f"{n['p50_ms']:.0f}/{n['p99_ms']:.0f}",
        )

        def cpu(d: dict[str, Any]) -> str:
            parts = d.get("cpu_us_per_event") or {}
            return (
                "+".join(f"{v:.0f}" for v in parts.values()) + f"={sum(parts.values()):.0f}"
                if parts
                else "-"
            )

        self.record(
            "cdc",
            f"CPU us/event {'+'.join(self.pipeline)} | walsender+apply",
            cpu(x),
            cpu(n),
        )
        if x.get("capture_handler"):
            h = x["capture_handler"]
            self.record(
                "cdc",
                "  capture's handler: busy / waiting for the broker, mean batch",
                f"{100 * h['busy']:.0f}% / {100 * h['waiting_for_broker']:.0f}%, {h['mean_batch']:.0f}",
                "-",
            )
            if "handle_us_per_event" in h:
                self.record(
                    "cdc",
                    "  capture's handler thread: in handle() (capture's code), us/event",
                    f"{h['handle_us_per_event']:.0f}",
                    "-",
                )
        if x.get("capture_threads_us_per_event"):
            self.record(
                "cdc",
                "  capture's by thread: " + "/".join(x["capture_threads_us_per_event"]),
                "/".join(f"{v:.0f}" for v in x["capture_threads_us_per_event"].values()),
                "-",
            )
        hx, hn = half["crossfade"], half["native"]
        self.record(
            "cdc",
            f"latency p50/p99 ms at {half_rate:.0f} tps",
            f"{hx['p50_ms']:.0f}/{hx['p99_ms']:.0f}",
            f"{hn['p50_ms']:.0f}/{hn['p99_ms']:.0f}",
        )
        st = hx.get("stages") or {}
        if st.get("n"):
            self.record(
                "cdc",
                f"  of which commit->produced / produced->applied p50/p99 ms at {half_rate:.0f} tps",
                f"{st['capture_p50_ms']:.0f}/{st['capture_p99_ms']:.0f} | "
                f"{st['broker_sync_p50_ms']:.0f}/{st['broker_sync_p99_ms']:.0f}",
                "-",
            )

    def _broker_cpu(self) -> float:
        """CPU seconds of the embedded broker (Tansu) so far; 0 when it is not running."""
        pid = self.broker.pid
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                return cpu_seconds(pid)
        return 0.0

    # -- 3. catch-up ----------------------------------------------------------------------------
    def catchup(self) -> None:
        out: dict[str, Any] = {}
        # native: subscription disabled during the load
        execute(self.n_tgt_dsn, "ALTER SUBSCRIPTION bench_sub DISABLE")
        ld = self.load(self.n_src_dsn, self.args.seconds, probes=False)
        t0 = time.time()
        db0 = cluster_cpu(self.pgt.pid)
        execute(self.n_tgt_dsn, "ALTER SUBSCRIPTION bench_sub ENABLE")
        t1 = self.marker(self.n_src_dsn, self.n_tgt_dsn)
        out["native"] = {
            "target_cpu_s": cluster_cpu(self.pgt.pid) - db0,
            "events": ld["events"],
            "drain_s": t1 - t0,
            "events_per_s": ld["events"] / (t1 - t0),
        }
        # crossfade: sync stopped during the load (capture keeps producing into Kafka); with
        # --one-process `crossfade run` is stopped, so capture too catches up after the load
        stopped = "run" if self.args.one_process else "sync"
        for p in self.x.procs:
            if p.name == stopped and p.alive():
                p.stop()
        ld = self.load(self.x.source_dsn, self.args.seconds, probes=False)
        t0 = time.time()
        # --sync-procs workers in one consumer group (the topics' partitions split between them)
        syns = [
            self.x.start(stopped)
            for _ in range(1 if self.args.one_process else self.args.sync_procs)
        ]
        for i, syn in enumerate(syns):
            name = stopped if len(syns) == 1 else f"sync-{i}"
            self.rss.watch(name, syn.p.pid)
            self.prof.start(f"catchup-{name}", syn.p.pid)
        cpu0 = {i: service_cpu(syn.p.pid) for i, syn in enumerate(syns)}
        db0 = cluster_cpu(self.pgt.pid)
        broker0 = self._broker_cpu()
        settings = self.x.settings
        progress = OffsetProgress(self.x.target_dsn, settings.sync.group_id, settings).start()
        probe_at = self.marker(self.x.source_dsn, self.x.target_dsn)
        # the probe has its own topic: sync may apply it in its first batch while the other
        # tables' partitions are still behind, so the backlog is applied when sync's stored
        # offsets reach the topics' log ends (capture produces without transactions: no markers)
        t1 = progress.applied_all(timeout=600)
        db1 = cluster_cpu(self.pgt.pid)
        broker1 = self._broker_cpu()
        samples = progress.stop()
        self.prof.stop()
        out["crossfade"] = {
            "sync_procs": len(syns),
            "sync_cpu_s": [service_cpu(syn.p.pid) - cpu0[i] for i, syn in enumerate(syns)],
            "target_cpu_s": db1 - db0,
            "broker_cpu_s": broker1 - broker0,
            "events": ld["events"],
            "drain_s": t1 - t0,
            "probe_applied_s": probe_at - t0,
            "events_per_s": ld["events"] / (t1 - t0),
            **catchup_phases(t0, t1, samples, [self.x.dir / f"{stopped}.log"]),
        }
        produced = progress.produced_at()
        if produced is not None:
            # capture streams during the load too: what it had left to produce at the load's end
            out["crossfade"]["capture_done_s"] = produced - t0
        self.results["catchup"] = out
        x, n = out["crossfade"], out["native"]
        self.record(
            "catchup",
            f"backlog {x['events']:,} / {n['events']:,} events: drain s",
            f"{x['drain_s']:.2f}",
            f"{n['drain_s']:.2f}",
        )
        self.record(
            "catchup",
            "backlog events/s (incl. sync start)",
            f"{x['events_per_s']:,.0f}",
            f"{n['events_per_s']:,.0f}",
        )
        ph = x.get("phases_s") or {}
        if ph:
            self.record(
                "catchup",
                "  of which s: " + "/".join(ph),
                "/".join(f"{v:.2f}" for v in ph.values()),
                "-",
            )
        if x.get("capture_done_s") is not None:
            self.record(
                "catchup",
                "  capture produced the whole backlog at s",
                f"{x['capture_done_s']:.2f}",
                "-",
            )
        if x.get("applying_events_per_s"):
            self.record(
                "catchup",
                "  events/s from the first batch to the backlog applied",
                f"{x['applying_events_per_s']:,.0f}",
                "-",
            )
        self.record(
            "catchup",
            f"  CPU s {'run (capture + sync)' if self.args.one_process else 'sync'}"
            "/target cluster/broker (drain)",
            "/".join(f"{c:.2f}" for c in x["sync_cpu_s"])
            + f"/{x['target_cpu_s']:.2f}/{x['broker_cpu_s']:.2f}",
            f"-/{n['target_cpu_s']:.2f}/-",
        )

    # -- 4. sync alone ---------------------------------------------------------------------------
    def sync_alone(self) -> None:
        """Replay every event in the topics into fresh targets: crossfade sync vs naive consumer."""
        if not any(p.name in ("capture", "run") and p.alive() for p in self.x.procs):
            self.x.start("capture")  # the fence travels through capture
            self.x.fence(timeout=3600)
        base_cfg = yaml.safe_load(self.x.config_path.read_text())
        res: dict[str, Any] = {}
        # crossfade sync, fresh target, fresh group
        self.pgt.create_database("replay_crossfade")
        cfg = {
            **base_cfg,
            "target": {"dsn": self.pgt.dsn("replay_crossfade")},
            "sync": {**base_cfg["sync"], "group_id": "bench-replay"},
        }
        cfg_path = self.root / "replay.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSFADE_")} | {
            "CROSSFADE_CONFIG": str(cfg_path)
        }
        log = open(self.root / "replay-sync.log", "ab")  # noqa: SIM115
        # --sync-procs workers in one consumer group (the topics' partitions split between them)
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "crossfade.ops.cli", "sync"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            for _ in range(self.args.sync_procs)
        ]
        for i, q in enumerate(procs):
            self.rss.watch(f"sync-replay-{i}", q.pid)
            self.prof.start(f"sync-alone-{i}", q.pid)

        def cpu_all() -> float:
            return sum(cpu_seconds(q.pid) for q in procs)

        tgt = self.pgt.dsn("replay_crossfade")
        # the clock starts at the first committed batch (process start-up and group join excluded)
        wait(
            lambda: (
                one(tgt, "SELECT to_regclass('crossfade.offsets') IS NOT NULL")
                and one(
                    tgt,
                    "SELECT coalesce(sum(next_offset), 0) FROM crossfade.offsets WHERE group_id = 'bench-replay'",
                )
            ),
            600,
            "first batch",
        )
        assert self.pgt.pid is not None
        t0, cpu0, db0 = time.time(), cpu_all(), cluster_cpu(self.pgt.pid)
        applied0 = one(
            tgt,
            "SELECT coalesce(sum(next_offset), 0) FROM crossfade.offsets WHERE group_id = 'bench-replay'",
        )
        settings = load_settings(cfg_path)
        while True:
            try:
                fence(settings, timeout=30)
                break
            except Exception:
                if any(q.poll() is not None for q in procs):
                    raise RuntimeError(
                        "replay sync died; see " + str(self.root / "replay-sync.log")
                    ) from None
        t1, cpu1, db1 = time.time(), cpu_all(), cluster_cpu(self.pgt.pid)
        self.prof.stop()
        total = one(
            tgt,
            "SELECT coalesce(sum(next_offset), 0) FROM crossfade.offsets WHERE group_id = 'bench-replay'",
        )
        for q in procs:
            os.killpg(q.pid, signal.SIGTERM)
        for q in procs:
            q.wait(60)
        log.close()
        n = int(total - applied0)
        if n <= 0 or t1 <= t0:
            raise RuntimeError(
                "the topics hold (almost) no change events to replay: with --initial-load copy the snapshot does not go "
                "through Kafka; run `sync` with cdc/catchup, or with --initial-load debezium"
            )
        res["crossfade"] = {
            "sync_procs": len(procs),
            "records": n,
            "seconds": t1 - t0,
            "cpu_seconds": cpu1 - cpu0,
            "events_per_s": n / (t1 - t0),
            "events_per_cpu_s": n / (cpu1 - cpu0),
            "cpu_us_per_event": 1e6 * (cpu1 - cpu0) / n,
            "records_total": int(total),
            "target_db_cpu_seconds": db1 - db0,
            "target_db_cpu_us_per_event": 1e6 * (db1 - db0) / n,
        }
        # the straightforward consumer: same topics, its own target (the legacy schema)
        self.pgt.create_database("replay_naive")
        self.copy_schema(self.x.source_dsn, self.pgt.dsn("replay_naive"))
        # the target cluster's CPU over the whole naive run (it reports its own times, not a
        # start signal; its start-up and 3 s idle end cost the database next to nothing)
        db0 = cluster_cpu(self.pgt.pid)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.naive_consumer",
                str(cfg_path),
                self.pgt.dsn("replay_naive"),
                "bench-naive",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        db1 = cluster_cpu(self.pgt.pid)
        nv = json.loads(out.stdout.strip().splitlines()[-1])
        res["naive"] = {
            **nv,
            "events_per_s": nv["events"] / nv["seconds"],
            "events_per_cpu_s": nv["events"] / nv["cpu_seconds"],
            "cpu_us_per_event": 1e6 * nv["cpu_seconds"] / nv["events"],
            "target_db_cpu_seconds": db1 - db0,
            "target_db_cpu_us_per_event": 1e6 * (db1 - db0) / nv["events"],
        }
        for r in (
            res.values()
        ):  # what an event costs the machine: the consumer and the database it writes
            r["total_cpu_us_per_event"] = r["cpu_us_per_event"] + r["target_db_cpu_us_per_event"]
            r["events_per_cpu_s_with_db"] = 1e6 / r["total_cpu_us_per_event"]
        self.results["sync_alone"] = res
        x, b = res["crossfade"], res["naive"]
        self.record(
            "sync alone",
            f"{x['records']:,} records replayed by {len(procs)} sync: events/s (wall)",
            f"{x['events_per_s']:,.0f}",
            f"{b['events_per_s']:,.0f}",
        )
        self.record(
            "sync alone",
            "events/s per core (worker CPU)",
            f"{x['events_per_cpu_s']:,.0f}",
            f"{b['events_per_cpu_s']:,.0f}",
        )
        self.record(
            "sync alone",
            "CPU us/event (worker)",
            f"{x['cpu_us_per_event']:.1f}",
            f"{b['cpu_us_per_event']:.1f}",
        )
        self.record(
            "sync alone",
            "CPU us/event (target PostgreSQL)",
            f"{x['target_db_cpu_us_per_event']:.1f}",
            f"{b['target_db_cpu_us_per_event']:.1f}",
        )
        self.record(
            "sync alone",
            "events/s per core (worker + target PostgreSQL)",
            f"{x['events_per_cpu_s_with_db']:,.0f}",
            f"{b['events_per_cpu_s_with_db']:,.0f}",
        )

    # -- output -----------------------------------------------------------------------------------
    def report(self) -> Path:
        def num(v: Any) -> float | None:
            try:
                return float(str(v).split("/")[0].split(" ")[0].replace(",", ""))
            except ValueError:
                return None

        w = max((len(r[1]) for r in self.rows), default=10) + 2
        cw = max((len(str(v)) for r in self.rows for v in r[2:]), default=14) + 2
        print(
            f"\n{'benchmark':<11}{'metric':<{w}}{'crossfade':>{cw}}{'baseline':>{cw}}{'ratio':>9}"
        )
        for bench, metric, xf, base in self.rows:
            a, b = num(xf), num(base)
            ratio = (
                f"{a / b:.2f}" if a and b and "/" not in str(xf) else "-"
            )  # no ratio of a "p50/p99" pair
            print(f"{bench:<11}{metric:<{w}}{xf!s:>{cw}}{base!s:>{cw}}{ratio:>9}")
        print(
            "baseline: native logical replication (sync alone: bench/naive_consumer.py); ratio = crossfade / baseline"
        )
        doc = {
            **history.provenance(),
            "args": vars(self.args),
            "table": [list(r) for r in self.rows],
            "results": self.results,
            "profiles": self.prof.files,
        }
        paths = history.save(doc)  # the latest per benchmark, a row each in bench/README.md
        print("results: " + ", ".join(str(p.relative_to(REPO)) for p in paths))
        return paths[0] if paths else RESULTS

    def close(self, keep: bool = False) -> None:
        """Stop everything; remove the run's directory (server and process logs) unless ``keep``."""
        try:
            self.prof.stop()
            self.x.close()
            for db in (self.n_tgt_dsn,):
                try:
                    execute(db, "ALTER SUBSCRIPTION bench_sub DISABLE")
                    execute(db, "ALTER SUBSCRIPTION bench_sub SET (slot_name = NONE)")
                except psycopg.Error:
                    pass
        finally:
            self.broker.stop()
            self.pgt.stop()
            self.pg.stop()
            if keep:
                print(f"logs kept: {self.root}", file=sys.stderr)
            else:
                shutil.rmtree(self.root, ignore_errors=True)


def add_run_args(ap: argparse.ArgumentParser) -> None:
    """The options every end-to-end benchmark takes: profiles and the run's logs."""
    ap.add_argument(
        "--profile",
        action="store_true",
        help="py-spy flame graphs of capture/sync to bench/results/",
    )
    ap.add_argument(
        "--profile-format", default="flamegraph", choices=["flamegraph", "speedscope", "raw"]
    )
    ap.add_argument(
        "--profile-idle",
        action="store_true",
        help="with --profile: sample waiting threads too (py-spy --idle): where the wall time goes",
    )
    ap.add_argument(
        "--keep-logs",
        action="store_true",
        help="keep the run's directory (process and server logs) even when it succeeds",
    )
    ap.add_argument(
        "--one-process",
        action="store_true",
        help="start one `crossfade run` (capture and sync together, what a user gets from the "
        "one-node command) instead of `crossfade capture` + `crossfade sync`: CPU and RSS are "
        "then per process (`run`), not per service",
    )
    ap.add_argument(
        "--sync-workers",
        type=int,
        default=None,
        help="sync.workers: sync worker threads in each `crossfade sync` (or `crossfade run`) "
        "process, one consumer group (default: the product's, SyncConfig().workers)",
    )


def run_reported(b: Any, body: Callable[[], None], keep_logs: bool) -> None:
    """Run ``body``, then ``b.report()`` and ``b.close()`` whatever happened; a failed run keeps
    its logs for diagnosis. A SIGTERM (timeout, kill) unwinds like Ctrl-C, so close() stops
    capture, sync and the servers: otherwise they outlive the run and load the machine under the
    next one."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    failed = True
    try:
        body()
        failed = False
    finally:
        try:
            b.report()
        finally:
            b.close(keep=failed or keep_logs)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "benchmarks", nargs="*", metavar="{all,snapshot,cdc,catchup,sync}", help="default: all"
    )
    ap.add_argument(
        "--rows", type=int, default=1_000_000, help="pgbench_accounts rows (scale = rows/100k)"
    )
    ap.add_argument(
        "--seconds", type=int, default=30, help="pgbench load duration of cdc and catchup"
    )
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument(
        "--warmup",
        type=int,
        default=0,
        metavar="SECONDS",
        help="cdc: run the same load this long, unmeasured, and drain it first (a warm JVM: steady state)",
    )
    ap.add_argument(
        "--timeline",
        action="store_true",
        help="cdc: sample the backlog by stage (WAL unsent, produced, applied) and every process's "
        "CPU every 0.25 s; print the drain second by second (bench/timeline.py)",
    )
    ap.add_argument(
        "--autogroup-nice",
        type=int,
        default=None,
        metavar="N",
        help="cdc: set the scheduling groups (sessions) of crossfade's processes to nice N "
        "before the load (an experiment: -3 weighs twice a default group, +3 half)",
    )
    ap.add_argument("--batch-size", type=int, default=10000, help="sync.batch_size")
    ap.add_argument(
        "--initial-load",
        choices=["copy", "debezium"],
        default="copy",
        help="capture.initial_load of the snapshot benchmark (copy: the default; debezium: the snapshot through Kafka)",
    )
    ap.add_argument(
        "--converter",
        choices=["python", "jvm"],
        default="jvm",
        help="capture.converter: who encodes Avro (jvm, the default: Confluent's AvroConverter in "
        "Debezium's JVM; python: the JSON converter + capture's writer)",
    )
    ap.add_argument(
        "--jvm-options",
        default=None,
        metavar="OPTS",
        help='capture.jvm_options, space-separated (e.g. "-Xmx1g -XX:+UseG1GC"); default: the product\'s',
    )
    ap.add_argument(
        "--capture-properties",
        default=None,
        metavar="JSON",
        help='capture.properties, Debezium properties over capture\'s own (e.g. \'{"poll.interval.ms": "25"}\')',
    )
    ap.add_argument(
        "--debug-logs",
        action="store_true",
        help="capture and sync log at DEBUG and Debezium at INFO (with --keep-logs: the start's "
        "timeline against the snapshot result's t0_unix)",
    )
    ap.add_argument(
        "--sync-procs",
        type=int,
        default=1,
        help="sync processes (one consumer group) draining catchup's backlog and replaying in the sync-alone benchmark",
    )
    add_run_args(ap)
    args = ap.parse_args()
    which = (
        {"snapshot", "cdc", "catchup", "sync"}
        if not args.benchmarks or "all" in args.benchmarks
        else set(args.benchmarks)
    )
    if which - {"snapshot", "cdc", "catchup", "sync"}:
        ap.error(f"unknown benchmark(s): {sorted(which - {'snapshot', 'cdc', 'catchup', 'sync'})}")
    b = Bench(args)

    def body() -> None:
        b.snapshot()  # every other benchmark starts from a synced pair
        if "cdc" in which:
            b.cdc()
        if "catchup" in which:
            b.catchup()
        if "sync" in which:
            b.sync_alone()

    run_reported(b, body, args.keep_logs)


if __name__ == "__main__":
    main()
