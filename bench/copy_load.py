"""The identity COPY load alone against native logical replication's initial sync (issue 22).

``bench.run snapshot`` times the COPY load inside capture, beside Debezium's start-up (a JVM that
takes a core for seconds) and after the broker join; this script runs only
:class:`crossfade.capture.initial_load.CopyLoad` (no JVM, no broker) on ``pgbench -i`` tables and
splits the CPU seconds by process type, against native's tablesync of an identical legacy
database in the same clusters, in the same run:

- crossfade: the legacy cluster's CPU (the COPY TO backends), the relay processes
  (``crossfade.capture.copy_worker``, reaped children of this process), this process (the plan
  and the threads driving the relays), the target cluster (COPY FROM: input functions, index,
  WAL); wall time of ``CopyLoad.run`` (slot, target preparation, copy, done);
- native: the legacy cluster (walsender, tablesync's COPY TO backend) and the target cluster
  (tablesync workers) from ``CREATE SUBSCRIPTION`` until every table is ``ready``.

Alternating runs (``--repeat``) and crossfade first or second by turn, so neither always runs on
a warmer machine. ``PYTHONPATH=<other tree>/services`` measures another tree's code with the same
script. Prints one line per run and the medians; ``--json`` writes them to a file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import psycopg
import yaml

from crossfade.capture.initial_load import CopyLoad, LoadState
from crossfade.capture.preflight import check_source
from crossfade.config import load_settings
from crossfade.embedded import EmbeddedPostgres

TABLES = [
    "public.pgbench_accounts",
    "public.pgbench_branches",
    "public.pgbench_tellers",
    "public.pgbench_history",
]


def cluster_cpu(postmaster: int) -> float:
    """CPU seconds of a cluster: postmaster, live processes, reaped backends."""
    pm = psutil.Process(postmaster)
    t = pm.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in pm.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
    return total


def _kind(title: str) -> str:
    """A PostgreSQL process's kind from its title (``postgres: <what> ...``)."""
    t = title.removeprefix("postgres: ")
    if "copy_worker" in t:
        return "relay"
    if "logical replication" in t:
        return "tablesync" if " sync " in t else "launcher" if "launcher" in t else "apply"
    for kind in ("walsender", "autovacuum", "checkpointer", "background writer", "walwriter"):
        if kind in t:
            return kind
    return "backend" if "(" in t else "other"


class Sampler:
    """Per-process CPU of the given parents' process trees, sampled every 50 ms (backends exit:
    the last sample of each is kept), by kind."""

    def __init__(self, **roots: int) -> None:
        self.roots = roots
        self.seen: dict[tuple[str, int], tuple[str, float]] = {}
        self.stop = threading.Event()
        self.base: dict[tuple[str, int], float] = {}
        self._sample(self.base_store)
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def base_store(self, key: tuple[str, int], kind: str, cpu: float) -> None:
        self.base[key] = cpu

    def keep(self, key: tuple[str, int], kind: str, cpu: float) -> None:
        self.seen[key] = (kind, cpu)

    def _sample(self, store: Any) -> None:
        for name, root in self.roots.items():
            with contextlib.suppress(psutil.Error):
                for p in psutil.Process(root).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        title = " ".join(p.cmdline())
                        kind = _kind(title)
                        if (name == "relay") != (kind == "relay"):
                            continue
                        c = p.cpu_times()
                        store((name, p.pid), kind, c.user + c.system)

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            self._sample(self.keep)

    def result(self) -> dict[str, float]:
        self.stop.set()
        self.t.join()
        self._sample(self.keep)
        out: dict[str, float] = {}
        for key, (kind, cpu) in self.seen.items():
            k = f"{key[0]}.{kind}"
            out[k] = out.get(k, 0.0) + cpu - self.base.get(key, 0.0)
        return {k: round(v, 3) for k, v in sorted(out.items()) if v >= 0.005}


PHASES: dict[str, float] = {}


def _timed(name: str, f: Any) -> Any:
    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.monotonic()
        try:
            return f(*a, **k)
        finally:
            PHASES[name] = PHASES.get(name, 0.0) + time.monotonic() - t

    return wrapper


for _name in (
    "_ensure_publication",
    "_drop_slot",
    "_create_slot",
    "_prepare_target",  # before the tables were prepared beside the copy
    "_chunks",
    "_feed",  # since: preparation and planning, beside the copy
    "mark_done",
):
    if hasattr(CopyLoad, _name):
        setattr(CopyLoad, _name, _timed(_name, getattr(CopyLoad, _name)))


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def execute(dsn: str, stmt: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute(stmt)  # type: ignore[arg-type]


def one(dsn: str, stmt: str) -> Any:
    with psycopg.connect(dsn, autocommit=True) as c:
        row = c.execute(stmt).fetchone()  # type: ignore[arg-type]
        return row[0] if row else None


class Pair:
    def __init__(self, rows: int, workers: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="crossfade-copyload-"))
        self.root.chmod(0o755)
        self.src = EmbeddedPostgres(log_to=self.root / "pg-legacy.log").start()
        self.tgt = EmbeddedPostgres(log_to=self.root / "pg-target.log").start()
        self.rows = rows
        self.workers = workers
        self.n = 0
        self.natives = 0

    def tool(self, name: str) -> str:
        b = self.src.binaries
        assert b is not None
        return b.tool(name)

    def legacy(self, name: str) -> str:
        self.src.create_database(name)
        dsn = self.src.dsn(name)
        scale = max(1, round(self.rows / 100_000))
        subprocess.run(
            [self.tool("pgbench"), "-i", "-s", str(scale), "-q", dsn],
            check=True,
            capture_output=True,
        )
        return dsn

    def native(self) -> dict[str, float]:
        if self.natives:  # the launcher starts a subscription's workers at most every
            time.sleep(5.5)  # wal_retrieve_retry_interval (5 s): a second one waited for it
        self.natives += 1
        self.n += 1
        src = self.legacy(f"nat_src{self.n}")
        self.tgt.create_database(f"nat_tgt{self.n}")
        tgt = self.tgt.dsn(f"nat_tgt{self.n}")
        dump = subprocess.run(
            [self.tool("pg_dump"), "-s", "-d", src, *(f"-t{t}" for t in TABLES)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        subprocess.run(
            [self.tool("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-d", tgt],
            input=dump,
            check=True,
            capture_output=True,
            text=True,
        )
        execute(src, "CREATE PUBLICATION p FOR TABLE " + ", ".join(TABLES))
        assert self.src.pid and self.tgt.pid
        s0, t0, w0 = cluster_cpu(self.src.pid), cluster_cpu(self.tgt.pid), time.monotonic()
        sampler = Sampler(legacy=self.src.pid, target=self.tgt.pid)
        with psycopg.connect(tgt, autocommit=True) as c:  # one session polls (a connection per
            # poll costs the target a backend start each time)
            c.execute(f"CREATE SUBSCRIPTION s{self.n} CONNECTION '{src}' PUBLICATION p")  # type: ignore[arg-type]
            q = "SELECT count(*) FILTER (WHERE srsubstate = 'r') FROM pg_subscription_rel"
            while (row := c.execute(q).fetchone()) is None or row[0] != len(TABLES):
                time.sleep(0.02)
        wall = time.monotonic() - w0
        s1, t1 = cluster_cpu(self.src.pid), cluster_cpu(self.tgt.pid)
        self.split = sampler.result()
        rows = one(tgt, "SELECT count(*) FROM pgbench_accounts")
        execute(tgt, f"DROP SUBSCRIPTION s{self.n}")
        return {"wall_s": wall, "legacy_cpu_s": s1 - s0, "target_cpu_s": t1 - t0, "rows": rows}

    def crossfade(self) -> dict[str, float]:
        self.n += 1
        src = self.legacy(f"xf_src{self.n}")
        self.tgt.create_database(f"xf_tgt{self.n}")
        tgt = self.tgt.dsn(f"xf_tgt{self.n}")
        d = self.root / f"xf{self.n}"
        d.mkdir()
        cfg = {
            "source": {"dsn": src},
            "target": {"dsn": tgt},
            "kafka": {"bootstrap_servers": "127.0.0.1:9", "topic_prefix": f"b{self.n}"},
            "tables": TABLES,
            "capture": {
                "slot_name": f"cf_b{self.n}",
                "publication_name": f"cf_b{self.n}",
                "state_dir": str(d),
                "initial_load": "copy",
                "initial_load_workers": self.workers,
            },
            "sync": {"append_only_tables": ["public.pgbench_history"]},
        }
        (d / "c.yaml").write_text(yaml.safe_dump(cfg))
        settings = load_settings(d / "c.yaml")
        check_source(settings)
        assert self.src.pid and self.tgt.pid
        s0, t0, c0, m0 = (
            cluster_cpu(self.src.pid),
            cluster_cpu(self.tgt.pid),
            children_cpu(),
            self_cpu(),
        )
        w0 = time.monotonic()
        sampler = Sampler(legacy=self.src.pid, target=self.tgt.pid, relay=os.getpid())
        PHASES.clear()
        CopyLoad(settings, LoadState(d, "e1")).run()
        wall = time.monotonic() - w0
        self.split = sampler.result()
        self.split["phases_s"] = {k: round(v, 3) for k, v in PHASES.items()}  # type: ignore[assignment]
        s1, t1, c1, m1 = (
            cluster_cpu(self.src.pid),
            cluster_cpu(self.tgt.pid),
            children_cpu(),
            self_cpu(),
        )
        load = json.loads((d / "load-e1.json").read_text())
        rows = one(tgt, "SELECT count(*) FROM pgbench_accounts")
        execute(src, f"SELECT pg_drop_replication_slot('cf_b{self.n}')")
        return {
            "wall_s": wall,
            "copy_s": load["copy_seconds"],
            "legacy_cpu_s": s1 - s0,
            "relay_cpu_s": c1 - c0,
            "capture_cpu_s": m1 - m0,
            "target_cpu_s": t1 - t0,
            "rows": rows,
        }

    def close(self) -> None:
        self.src.stop()
        self.tgt.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def fmt(r: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items())


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="capture.initial_load_workers")
    ap.add_argument("--only", choices=["crossfade", "native"], default=None)
    ap.add_argument(
        "--split", action="store_true", help="CPU per process kind (sampled every 50 ms)"
    )
    ap.add_argument("--json", default=None, help="write every run's figures here")
    args = ap.parse_args()
    p = Pair(args.rows, args.workers)
    runs: dict[str, list[dict[str, float]]] = {"crossfade": [], "native": []}
    try:
        for i in range(args.repeat):
            order = ["crossfade", "native"] if i % 2 == 0 else ["native", "crossfade"]
            for what in order:
                if args.only and what != args.only:
                    continue
                la = os.getloadavg()[0]
                r = p.crossfade() if what == "crossfade" else p.native()
                r["load1"] = la
                runs[what].append(r)
                print(f"{what:9s} {fmt(r)}", flush=True)
                if args.split:
                    print(f"          {p.split}", flush=True)
                    r["split"] = p.split  # type: ignore[assignment]
    finally:
        p.close()
    for what, rs in runs.items():
        if rs:
            keys = [k for k in rs[0] if k not in ("rows", "split")]
            print(
                f"median {what:9s} "
                + " ".join(f"{k}={statistics.median(r[k] for r in rs):.2f}" for k in keys)
            )
    if runs["crossfade"] and runs["native"]:
        x = statistics.median(r["wall_s"] for r in runs["crossfade"])
        n = statistics.median(r["wall_s"] for r in runs["native"])
        print(f"rate ratio crossfade/native (median wall): {n / x:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    sys.exit(0)


if __name__ == "__main__":
    main()
