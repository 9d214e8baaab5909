"""Write downtime of a real cutover under a pgbench load, against the forecast of its dry run.

    .venv/bin/python -m bench.cutover_downtime [--scale 10] [--rate 200] [--warmup 20] [--pairs 3]

Two embedded PostgreSQL servers (legacy, new) and an embedded Tansu broker; ``pgbench -i -s
SCALE`` in legacy, capture and sync started and caught up; then pgbench's TPC-B-like load
(``-c 4 -j 2 -R RATE``, as an application role the freeze revokes) runs for the rest of the
benchmark. After ``--warmup`` seconds of load:

1. ``crossfade cutover --dry-run --json``: the forecast (``expected_downtime_seconds``: the
   measured steps between the freeze and the flip);
2. ``crossfade cutover --json``: the real one; ``downtime_seconds`` is the time from the freeze
   to the end of the flip, measured by the cutover itself; pgbench's writes are refused from the
   freeze on.

With ``--pairs N`` the two run N times (the application's writes unfrozen and pgbench started
again between them): the headline is the median forecast / actual. Prints the figures (scale, rows, the full verify while writes flow, the forecast and the actual
freeze -> flip by step, the keys the in-freeze verify compared, forecast / actual) and writes
``bench/results/cutover_downtime-s<scale>.json`` (the latest run per scale) and a row in
``bench/README.md``'s history table (:mod:`bench.history`). Targets (issue 20): freeze -> flip within 5 s at
scale 10 (10 s at scale 100), the forecast within 20% of the actual.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import history  # noqa: E402
from bench.run import XStack  # noqa: E402
from crossfade.embedded import EmbeddedBroker, EmbeddedPostgres  # noqa: E402

TABLES = [
    "public.pgbench_accounts",
    "public.pgbench_branches",
    "public.pgbench_tellers",
    "public.pgbench_history",
]
IN_FREEZE = (
    "freeze",
    "backup",
    "fence",
    "row_counts",
    "reconcile",
    "verify",
    "target_schema",
    "sequences",
    "smoke",
    "flip",
)


def _cutover(stack: XStack, *args: str) -> dict[str, Any]:
    r = stack.cli("cutover", "--json", *args, timeout=3600)
    if not r.stdout.strip():
        raise SystemExit(f"cutover printed nothing (rc {r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout)


def _delta_keys(stack: XStack) -> dict[str, Any]:
    with psycopg.connect(stack.target_dsn, autocommit=True) as c:
        row = c.execute(
            "SELECT id, report FROM crossfade.verify_runs WHERE report->>'delta_of' IS NOT NULL "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
    if row is None:
        return {}
    return {
        t["name"]: {"keys": t.get("delta_keys"), "seconds": t.get("seconds")}
        for t in row[1]["tables"]
    } | {
        k: row[1].get(k)
        for k in ("fences", "seconds", "live_only_seconds", "delta_compare_seconds")
    }


def _fences(stack: XStack, n: int) -> list[dict[str, float]]:
    """The latest ``n`` fences of the cutover's fence step (``via=cutover``), oldest first, in
    parts (from ``fence_runs`` and the partitions' ``fences`` rows, one clock: one machine):
    ``row`` from the run's start to the fence row's commit in legacy, ``first`` / ``last`` from
    that commit to the first / last partition's record in the target (capture and sync),
    ``seen`` from the last record to the run's end (the poll and the run's own record)."""
    with psycopg.connect(stack.target_dsn, autocommit=True) as c:
        rows = c.execute(
            "SELECT extract(epoch FROM min(f.source_ts) - r.started_at),"
            " extract(epoch FROM min(f.applied_at) - min(f.source_ts)),"
            " extract(epoch FROM max(f.applied_at) - min(f.source_ts)),"
            " extract(epoch FROM r.finished_at - max(f.applied_at)), r.seconds "
            "FROM crossfade.fence_runs r JOIN crossfade.fences f USING (token) "
            "WHERE r.via = 'cutover' AND r.ok GROUP BY r.token, r.started_at, r.finished_at, "
            "r.seconds ORDER BY r.started_at DESC LIMIT %s",
            (n,),
        ).fetchall()
    keys = ("row", "first", "last", "seen", "seconds")
    return [{k: round(float(v), 3) for k, v in zip(keys, r, strict=True)} for r in rows][::-1]


def _steps(rep: dict[str, Any]) -> dict[str, float]:
    return {g["name"]: round(g["seconds"], 3) for g in rep["gates"]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="crossfade-bench-cutover-"))
    root.chmod(0o755)
    pg = EmbeddedPostgres(log_to=root / "pg-legacy.log").start()
    pgt = EmbeddedPostgres(log_to=root / "pg-target.log").start()
    broker = EmbeddedBroker(log_to=root / "tansu.log").start()
    load: subprocess.Popen[str] | None = None
    stack = XStack(
        pg,
        pgt,
        broker.bootstrap_servers,
        root,
        initial_load="copy",
        batch_size=10_000,
        append_only_tables=["public.pgbench_history"],
    )
    try:
        pgbench = pg.binaries.tool("pgbench")
        t0 = time.monotonic()
        subprocess.run(
            [pgbench, "-i", "-s", str(args.scale), "-q", stack.source_dsn],
            check=True,
            capture_output=True,
        )
        role = "bench_app"
        with psycopg.connect(stack.source_dsn, autocommit=True) as c:
            c.execute(f"CREATE ROLE {role} LOGIN")
            c.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
            c.execute(
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
            )
            rows = sum(c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES)  # type: ignore[index]
        stack.write_config(TABLES)
        raw = yaml.safe_load(stack.config_path.read_text())
        raw["cutover"] = {
            "freeze_sql": f"REVOKE INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public FROM {role}",
            "unfreeze_sql": f"GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
            "fence_timeout_s": 300,
            "dry_run_quiet": not args.no_quiet,
        }
        stack.config_path.write_text(yaml.safe_dump(raw))
        stack.start("capture")
        stack.start("sync")
        stack.fence(timeout=1800)
        loaded = time.monotonic() - t0
        print(f"scale {args.scale}: {rows} rows loaded and caught up in {loaded:.0f} s", flush=True)

        app_dsn = stack.source_dsn.replace("postgres@", f"{role}@")
        pairs = []
        for i in range(args.pairs):
            if i:  # the application writes again after the previous real cutover froze it
                with psycopg.connect(stack.source_dsn, autocommit=True) as c:
                    c.execute(raw["cutover"]["unfreeze_sql"])
            load = subprocess.Popen(
                [pgbench, "-n", "-c", "4", "-j", "2", "-R", str(args.rate), "-T", "7200", app_dsn],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            pairs.append(_pair(stack, load, args, i + 1))
            load = None
        ratios = sorted(p["forecast_over_actual"] for p in pairs if p["forecast_over_actual"])
        median = ratios[len(ratios) // 2] if ratios else None
        middle = next((p for p in pairs if p["forecast_over_actual"] == median), pairs[0])
        return {
            "benchmark": "cutover_downtime",
            "scale": args.scale,
            "rows": rows,
            "rate_tps": args.rate,
            "warmup_s": args.warmup,
            "load_and_catch_up_s": round(loaded, 1),
            **middle,  # the pair with the median forecast / actual
            "pairs": pairs,
            "forecast_over_actual_per_pair": [p["forecast_over_actual"] for p in pairs],
            "commit": _commit(),
            "date": datetime.now(UTC).isoformat(),
            "machine": f"{platform.node()} {platform.machine()} cpus={_cpus()}",
        }
    finally:
        if load is not None:
            load.kill()
            load.communicate()
        stack.close()
        broker.stop()
        pgt.stop()
        pg.stop()
        if not args.keep_logs:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"logs kept: {root}", file=sys.stderr)


def _pair(
    stack: XStack, load: subprocess.Popen[str], args: argparse.Namespace, n: int
) -> dict[str, Any]:
    """One dry run and, ``--pause`` s later, the real cutover, under ``load`` (ended by the
    freeze: pgbench's clients stop at the first refused write)."""
    try:
        time.sleep(args.warmup)
        print(f"pair {n}: pgbench -R {args.rate} runs; cutover --dry-run ...", flush=True)
        dry = _cutover(stack, "--dry-run")
        if not dry["go"]:
            raise SystemExit(f"dry run NO GO: {[(g['name'], g['detail']) for g in dry['gates']]}")
        dry_delta = _delta_keys(stack)
        dry_fences = _fences(stack, 2)
        time.sleep(args.pause)
        print(f"pair {n}: cutover ...", flush=True)
        real = _cutover(stack)
        if not real["go"]:
            raise SystemExit(f"cutover NO GO: {[(g['name'], g['detail']) for g in real['gates']]}")
        real_delta = _delta_keys(stack)
        real_fences = _fences(stack, 1)
        out = load.communicate(timeout=120)[0]
    finally:
        if load.poll() is None:
            load.kill()
            load.communicate()
    forecast = dry["expected_downtime_seconds"]
    actual = real["downtime_seconds"]
    return {
        "dry_run": {
            "steps_s": _steps(dry),
            "forecast_s": forecast,
            "forecast_steps_s": dry["expected_downtime_steps"],
            "measured_steps_s": dry["measured_downtime_steps"],
            "forecast_excludes": dry["forecast_excludes"],
            "delta_keys": dry_delta,
            "quiet": dry.get("dry_run_quiet"),
            "fences": dry.get("dry_run_fences"),
            "fence_parts": dry_fences,
        },
        "real": {
            "steps_s": _steps(real),
            "freeze_to_flip_s": actual,
            "in_freeze_steps_s": real["expected_downtime_steps"],
            "delta_keys": real_delta,
            "fence_parts": real_fences,
        },
        "forecast_over_actual": round(forecast / actual, 3) if forecast and actual else None,
        "forecast_over_actual_by_step": {
            k: round(v / a, 3) if (a := real["expected_downtime_steps"].get(k)) else None
            for k, v in dry["expected_downtime_steps"].items()
        },
        "load_average": _load(),
        "pgbench_refused_after_freeze": "permission denied" in out,
    }


def _commit() -> str:
    r = subprocess.run(
        ["git", "rev-parse", "--short=8", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return r.stdout.strip() or "unknown"


def _load() -> list[float]:
    import os

    return [round(x, 2) for x in os.getloadavg()]


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def report(res: dict[str, Any]) -> None:
    print()
    print(
        f"cutover under pgbench -R {res['rate_tps']} at scale {res['scale']} ({res['rows']} rows)"
    )
    for n, pair in enumerate(res.get("pairs", [res]), 1):
        print(f"pair {n}:")
        _report_pair(pair)
    print(f"forecast / actual per pair: {res.get('forecast_over_actual_per_pair')}")
    print(f"median: {res['forecast_over_actual']}")


def _report_pair(res: dict[str, Any]) -> None:
    d, r = res["dry_run"], res["real"]
    print(
        f"  full verify while writes flow (verify_live): dry run {d['steps_s'].get('verify_live')} s, "
        f"real {r['steps_s'].get('verify_live')} s"
    )
    print(
        f"  {'step':<14} {'dry run measured':>17} {'forecast':>10} {'actual':>10} {'forecast/actual':>16}"
    )
    fs, ms, rs = d["forecast_steps_s"], d.get("measured_steps_s", {}), r["in_freeze_steps_s"]
    for step in IN_FREEZE:
        if step in fs or step in rs:
            ratio = res.get("forecast_over_actual_by_step", {}).get(step)
            print(
                f"  {step:<14} {ms.get(step, 0):>15.3f} s {fs.get(step, 0):>8.3f} s "
                f"{rs.get(step, 0):>8.3f} s {ratio if ratio is not None else '-':>16}"
            )
    if d.get("forecast_excludes"):
        print(f"  not in the forecast: {', '.join(d['forecast_excludes'])}")
    q = d.get("quiet")
    print(
        "  capture and sync paused for the measurement: "
        + (
            f"{q['held_s']:.2f} s in {q.get('holds', 1)} hold(s) ({', '.join(q['paused'])}; "
            f"the holds shown after {q['wait_s']:.2f} s: {q['acknowledged']})"
            if q
            else "no (cutover.dry_run_quiet: false)"
        )
    )
    f = d.get("fences")
    if f:
        print(
            f"  dry run's fences: first {f['first_s']:.3f} s, second (right after) "
            f"{f['second_s']:.3f} s; first to last partition {f.get('first_spread_s', 0):.3f} s, "
            f"{f.get('second_spread_s', 0):.3f} s; the forecast takes the {f['forecast_from']}"
        )
    for who, parts in (("dry run", d.get("fence_parts")), ("real", r.get("fence_parts"))):
        for p in parts or []:
            print(
                f"  {who} fence: row {p['row']:.3f} s, to the first partition {p['first']:.3f} s, "
                f"to the last {p['last']:.3f} s, seen {p['seen']:.3f} s (run {p['seconds']:.3f} s)"
            )
    print(f"  keys compared inside the freeze: dry run {d['delta_keys']}, real {r['delta_keys']}")
    print(f"  forecast (dry run):  {d['forecast_s']:.2f} s")
    print(f"  freeze -> flip:      {r['freeze_to_flip_s']:.2f} s")
    print(f"  forecast / actual:   {res['forecast_over_actual']}")
    print(f"  pgbench refused after the freeze: {res['pgbench_refused_after_freeze']}")
    print(f"  load average after the pair (1, 5, 15 min): {res.get('load_average')}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scale", type=int, default=10, help="pgbench scale (100k accounts each)")
    ap.add_argument("--rate", type=int, default=200, help="pgbench -R (transactions/s)")
    ap.add_argument("--warmup", type=float, default=20, help="seconds of load before the dry run")
    ap.add_argument(
        "--pause",
        type=float,
        default=5,
        help="seconds of load between the dry run and the real one",
    )
    ap.add_argument(
        "--pairs",
        type=int,
        default=1,
        help="dry run + real cutover pairs (the application unfrozen between them); the median "
        "forecast / actual is the headline: one pair on a shared machine is noisy",
    )
    ap.add_argument(
        "--no-quiet",
        action="store_true",
        help="cutover.dry_run_quiet: false (the dry run measures beside the running capture and "
        "sync, as before issue 20's quiet)",
    )
    ap.add_argument("--keep-logs", action="store_true")
    args = ap.parse_args()
    res = run(args)
    report(res)
    name = f"cutover_downtime-s{res['scale']}"  # the latest run per scale
    d, r = res["dry_run"], res["real"]
    doc = {
        "commit": res["commit"],
        "date": res["date"],
        "machine": res["machine"],
        "arguments": vars(args),
        "results": {name: res},
        # history rows: label, forecast (the dry run's) / actual (the real run's)
        "table": [
            [
                name,
                f"write downtime s at pgbench -R {res['rate_tps']}"
                + (" (dry run not quiet)" if args.no_quiet else "")
                + ", forecast / freeze -> flip",
                f"{d['forecast_s']:.2f}",
                f"{r['freeze_to_flip_s']:.2f} (median of {len(res['pairs'])}: "
                f"{res['forecast_over_actual']}x)",
            ],
            [
                name,
                "s of it verifying, forecast / actual",
                f"{d['forecast_steps_s'].get('verify', 0):.2f}",
                f"{r['in_freeze_steps_s'].get('verify', 0):.2f}",
            ],
        ],
    }
    for path in history.save(doc):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
