"""Where a CDC run's changes wait, sampled over time (``bench.run cdc --timeline``).

Every ``interval`` seconds, in a thread, from outside the processes:

- the legacy WAL: bytes written but not yet sent to capture's slot's walsender (Debezium has not
  read them: its queue is full or its reader is slow) and not yet confirmed (Debezium's offsets);
- the change topics' log end offsets summed (what capture has produced and Kafka acknowledged);
- sync's committed next offsets summed (what the target has applied);
- CPU seconds of every thread role of the process hosting capture's JVM (``thread_cpu``), of
  sync, of the broker, of both PostgreSQL clusters, and of the whole machine (busy, all CPUs).

So at any moment (the end of pgbench's load above all) the backlog is split by stage: changes
not yet in Kafka (capture, or the WAL Debezium has not read) against changes in Kafka not yet
applied (sync), and the CPU rates show who was running (or not) while the backlog drained.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import psycopg

WAL_SQL = """
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(r.sent_lsn, s.confirmed_flush_lsn)),
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)
FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
WHERE s.slot_name = %s
"""


def sched_by_role(pid: int, roles: Any) -> dict[str, float]:
    """Seconds on a CPU and waiting for one (runnable but not running: the scheduler gave the
    core to another thread) of a process's threads, summed by role (``roles``: (role, name
    prefixes) pairs, ``other`` for the rest), from ``/proc/<pid>/task/*/schedstat``: a thread
    neither running nor waiting for a CPU was blocked (a queue, a lock, the network, a sleep)."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            name = (task / "comm").read_text().strip()
            run_ns, wait_ns = (task / "schedstat").read_text().split()[:2]
            role = next((r for r, prefixes in roles if name.startswith(prefixes)), "other")
            out[f"{role}.cpu"] = out.get(f"{role}.cpu", 0.0) + int(run_ns) / 1e9
            out[f"{role}.runq"] = out.get(f"{role}.runq", 0.0) + int(wait_ns) / 1e9
    return out


class Timeline:
    """Samples of a CDC run's stages (module docstring); ``rows`` holds one dict per sample."""

    def __init__(
        self,
        settings: Any,
        source_dsn: str,
        target_dsn: str,
        cpu: Callable[[], dict[str, float]],
        interval: float = 0.25,
    ) -> None:
        self.settings, self.source_dsn, self.target_dsn = settings, source_dsn, target_dsn
        self.cpu, self.interval = cpu, interval
        self.rows: list[dict[str, Any]] = []
        self.marks: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Timeline:
        self._thread.start()
        return self

    def mark(self, what: str) -> None:
        """A named moment (``load_end``, ``seen``) in the same clock as the samples."""
        self.marks[what] = time.time()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        k = self.settings.kafka
        tps = [
            TopicPartition(k.table_topic(t), p)
            for t in self.settings.tables
            for p in range(k.partitions)
        ]
        c = Consumer({**k.client_config(), "group.id": "bench-timeline"})
        slot, group = self.settings.capture.slot_name, self.settings.sync.group_id
        try:
            with (
                psycopg.connect(self.source_dsn, autocommit=True) as src,
                psycopg.connect(self.target_dsn, autocommit=True) as tgt,
            ):
                while not self._stop.wait(self.interval):
                    row: dict[str, Any] = {"t": time.time()}
                    with contextlib.suppress(Exception):
                        unsent, unconfirmed = src.execute(WAL_SQL, (slot,)).fetchone() or (0, 0)
                        row["wal_unsent"], row["wal_unconfirmed"] = int(unsent), int(unconfirmed)
                    with contextlib.suppress(Exception):
                        row["produced"] = sum(
                            c.get_watermark_offsets(tp, timeout=2)[1] for tp in tps
                        )
                    with contextlib.suppress(Exception):
                        r = tgt.execute(
                            "SELECT coalesce(sum(next_offset), 0) FROM crossfade.offsets "
                            "WHERE group_id = %s",
                            (group,),
                        ).fetchone()
                        row["applied"] = int(r[0]) if r else 0
                    row["cpu"] = self.cpu()
                    t = psutil.cpu_times()
                    row["cpu"]["machine_busy"] = sum(t) - t.idle - t.iowait
                    self.rows.append(row)
        finally:
            c.close()

    def summary(self, events: int, t_start: float) -> dict[str, Any]:
        """The backlog by stage at the load's end and how the drain went: changes not yet in
        Kafka (``events`` the load made, minus what was produced since ``t_start``) and in Kafka
        not yet applied; then, from the load's end to the probe seen, per second: produced,
        applied, and the CPU (cores) of each role."""
        rows = [r for r in self.rows if "produced" in r and "applied" in r]
        if not rows or "load_end" not in self.marks:
            return {}
        first = min(rows, key=lambda r: abs(r["t"] - t_start))
        end = min(rows, key=lambda r: abs(r["t"] - self.marks["load_end"]))
        produced = end["produced"] - first["produced"]
        applied = end["applied"] - first["applied"]
        out: dict[str, Any] = {
            "at_load_end": {
                "events": events,
                "not_in_kafka": events - produced,
                "in_kafka_not_applied": produced - applied,
                "wal_unsent_bytes": end.get("wal_unsent"),
                "wal_unconfirmed_bytes": end.get("wal_unconfirmed"),
            },
            "per_second": [],
        }
        prev = first
        for r in rows:
            if r["t"] - prev["t"] < 0.999 and r is not rows[-1]:
                continue
            dt = r["t"] - prev["t"]
            if dt <= 0:
                continue
            out["per_second"].append(
                {
                    "t": round(r["t"] - self.marks["load_end"], 2),
                    "produced_per_s": round((r["produced"] - prev["produced"]) / dt),
                    "applied_per_s": round((r["applied"] - prev["applied"]) / dt),
                    "not_applied": r["produced"] - r["applied"],
                    "wal_unsent_kb": round((r.get("wal_unsent") or 0) / 1024),
                    "cores": {
                        k: round((v - prev["cpu"].get(k, v)) / dt, 2) for k, v in r["cpu"].items()
                    },
                }
            )
            prev = r
        return out

    def write(self, path: Path, summary: dict[str, Any]) -> None:
        path.write_text(
            json.dumps({"marks": self.marks, "summary": summary, "rows": self.rows}, indent=1)
        )


def print_summary(label: str, s: dict[str, Any]) -> None:
    """The per-second drain table on stdout."""
    if not s:
        return
    e = s["at_load_end"]
    print(
        f"\n{label}: at the load's end {e['events']:,} events made; not yet in Kafka "
        f"{e['not_in_kafka']:,}, in Kafka not yet applied {e['in_kafka_not_applied']:,}; WAL "
        f"unsent {(e['wal_unsent_bytes'] or 0) / 1024:,.0f} KiB, unconfirmed "
        f"{(e['wal_unconfirmed_bytes'] or 0) / 1024:,.0f} KiB"
    )
    for r in s["per_second"]:
        cores = _cores(r["cores"])
        print(
            f"  t={r['t']:+7.2f} produced/s {r['produced_per_s']:>7,} applied/s "
            f"{r['applied_per_s']:>7,} kafka-backlog {r['not_applied']:>8,} "
            f"wal-unsent {r['wal_unsent_kb']:>7,} KiB | {cores}"
        )


def _cores(cores: dict[str, float]) -> str:
    """``role=cpu/runq`` (cores on a CPU / waiting for one) or ``name=cpu``, idle ones left out."""
    pairs: dict[str, list[float]] = {}
    for k, v in cores.items():
        base, _, kind = k.rpartition(".")
        if kind in ("cpu", "runq"):
            pairs.setdefault(base, [0.0, 0.0])[kind == "runq"] = v
        else:
            pairs[k] = [v]
    return " ".join(
        f"{k}={'/'.join(f'{x:.2f}' for x in v)}" for k, v in sorted(pairs.items()) if max(v) >= 0.01
    )
