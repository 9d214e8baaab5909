"""Where the snapshot benchmark's seconds go: its phases from the processes' own logs.

    .venv/bin/python -m bench.run snapshot --rows 500000 --keep-logs --debug-logs
    .venv/bin/python -m bench.start_phases /tmp/crossfade-bench-XXXX:bench/results/snapshot.json [...]

Each argument pairs a kept log directory (``--keep-logs``; ``--debug-logs`` adds the JVM's and
the handler's lines) with the snapshot result written by that run (its ``t0_unix``: capture and
sync started). Every phase is the first log line carrying its marker (capture's and sync's JSON
lines, ``ts`` in UTC; Debezium's log4j lines, local time), in seconds from t0; the fence call's
start, the fence and verify's end come from the result. With several runs: the median and range
of each phase (alternate trees between runs, the load of a shared machine moves every phase).
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

PHASES = [
    ("capture up (metrics served)", "capture", "metrics on "),
    ("capture preflight done", "capture", "WAL headroom"),
    ("capture topics + epoch ready", "capture", "broker epoch"),
    ("slot created, snapshot exported", "capture", "initial load by COPY at"),
    ("capture running (slot free)", "capture", "capture running"),
    ("JVM start", "capture", "starting the JVM"),
    ("JVM started", "capture", "JVM started with"),
    ("Debezium engine built", "capture", "EmbeddedWorkerConfig values"),
    ("Debezium engine runs", "capture", "'CREATING' to 'INITIALIZING'"),
    ("Debezium tasks started", "capture", "All tasks have started"),
    ("Debezium streaming", "capture", "Processing messages"),
    ("COPY load done", "capture", "initial load done"),
    ("first batch handed over", "capture", "handed over its first batch"),
    ("sync waits for capture's epoch", "sync", "waiting for capture to initialise"),
    ("sync target tables set up", "sync", "target tables set up"),
    ("sync joined its group", "sync", "joined consumer group"),
]
_LOG4J = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d),(\d{3}) ")


def line_time(line: str) -> tuple[float, str] | None:
    """(unix seconds, message) of a capture or sync log line: JSON (``ts`` in UTC) or log4j
    (Debezium's, the machine's local time); None for anything else (a continuation line)."""
    m = _LOG4J.match(line)
    if m:
        local = datetime.fromisoformat(m.group(1)).astimezone()  # naive: local time
        return local.timestamp() + int(m.group(2)) / 1000, line[m.end() :]
    if not line.startswith("{"):
        return None
    try:
        rec = json.loads(line)
        ts = datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")).timestamp()
    except (ValueError, KeyError, TypeError):
        return None
    return ts, str(rec.get("msg", ""))


def phases(log_dir: Path, result: dict[str, Any]) -> dict[str, float]:
    """Seconds from t0 of each phase found in one run's logs and result."""
    t0 = result["t0_unix"]
    out: dict[str, float] = {}
    for name, proc, marker in PHASES:
        for path in sorted(log_dir.glob(f"stack*/{proc}.log")):
            for line in path.read_text(errors="replace").splitlines():
                if marker in line:
                    at = line_time(line)
                    if at is not None and marker in at[1]:
                        out[name] = at[0] - t0
                        break
            if name in out:
                break
    if "fence_own_s" in result:
        out["fence call start"] = result["fenced_unix"] - result["fence_own_s"] - t0
    out["fenced"] = result["fenced_unix"] - t0
    out["verified"] = result["verified_unix"] - t0
    return out


def table(runs: list[dict[str, float]]) -> list[str]:
    """One line per phase, in time order: median and range over ``runs``."""
    names = {n for r in runs for n in r}
    rows = []
    for n in names:
        v = [r[n] for r in runs if n in r]
        rows.append((statistics.median(v), n, min(v), max(v), len(v)))
    return [
        f"{med:7.2f} s  {n:34} [{lo:.2f}-{hi:.2f}, {k} run(s)]"
        for med, n, lo, hi, k in sorted(rows)
    ]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    runs = []
    for arg in argv:
        log_dir, _, res = arg.partition(":")
        data = json.loads(Path(res).read_text())
        runs.append(phases(Path(log_dir), data["results"]["snapshot"]))
    print("\n".join(table(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
