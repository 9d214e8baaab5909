"""What the console reads from the bookkeeping schema besides the gates' evidence, shaped for the
page: per table what sync applied and how late, the stored offsets, the last fence, the latest
verify as a table (per table: match, missing / extra / different with example keys), the
checkpoints, the dead letters by rule with example keys, and the write-downtime forecast.

Every function reads only, on the connection it is given, and returns plain data (no secrets:
keys and reasons are the ledger's, never a DSN).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from crossfade.cutover.gate_evidence import Context
from crossfade.target import store

EXAMPLE_KEYS = 3
"""Example keys shown per dead-letter rule and per verify table."""


def _iso(v: Any) -> str | None:
    return v.isoformat() if isinstance(v, datetime) else None


def table_stats(conn: psycopg.Connection, bk: str) -> dict[str, dict[str, Any]]:
    """Per source table: events applied and skipped, and the newest source commit applied."""
    return {
        t: {"applied": s.applied, "skipped": s.skipped, "last_source_ts": _iso(s.last_source_ts)}
        for t, s in store.table_stats(conn, bk).items()
    }


def behind(ctx: Context) -> dict[str, int]:
    """Per source table, the records in its topic after the running sync workers' positions, as
    their latest heartbeats report it (the consumer lag: a hint, the fence is the proof). A table
    no running worker reports is left out."""
    fresh = ctx.cfg.alive_fresh_s
    out: dict[str, int] = {}
    for h in ctx.heartbeats:
        if h.role != "sync" or h.age_s > fresh:
            continue
        for topic, n in (h.detail.get("lag_by_topic") or {}).items():
            table = ctx.topics.get(topic)
            if table is not None:
                out[table] = out.get(table, 0) + int(n)
    return out


def offsets(conn: psycopg.Connection, bk: str, group: str) -> list[dict[str, Any]]:
    return [
        {
            "topic": o.topic,
            "partition": o.partition,
            "next_offset": o.next_offset,
            "updated_at": _iso(o.updated_at),
        }
        for o in store.stored_offsets(conn, bk, group)
    ]


def last_fence(conn: psycopg.Connection, bk: str) -> dict[str, Any] | None:
    """The latest fence sync applied: legacy commit -> applied on its last partition."""
    f = store.last_applied_fence(conn, bk)
    if f is None:
        return None
    return {
        "token": f.token[:8],
        "partitions": f.partitions,
        "source_ts": _iso(f.source_ts),
        "applied_at": _iso(f.applied_at),
        "lag_s": float(f.lag_s) if f.lag_s is not None else None,
    }


def latest_verify(conn: psycopg.Connection, bk: str) -> dict[str, Any] | None:
    """The newest verify run as a table: per table match, rows on both sides, missing / extra /
    different (and unsettled, still changing) with a few example keys of each kind."""
    r = store.latest_verify_report(conn, bk)
    if r is None:
        return None
    report = r.report
    tables = []
    for t in report.get("tables", []):
        examples: dict[str, list[str]] = {}
        for ex in t.get("rows") or []:
            keys = examples.setdefault(str(ex.get("kind", "different")), [])
            if len(keys) < EXAMPLE_KEYS:
                key = ex.get("key")
                keys.append(", ".join(map(str, key)) if isinstance(key, list) else str(key))
        tables.append(
            {
                "name": t.get("name"),
                "match": bool(t.get("match")),
                "source_rows": t.get("source_rows"),
                "target_rows": t.get("target_rows"),
                "missing": t.get("missing", 0),
                "extra": t.get("extra", 0),
                "different": t.get("different", 0),
                "unsettled": t.get("unsettled", 0),
                "error": t.get("error"),
                "examples": examples,
            }
        )
    return {
        "id": r.id,
        "started_at": _iso(r.started_at),
        "finished_at": _iso(r.finished_at),
        "finished_epoch": r.finished_at.timestamp()
        if isinstance(r.finished_at, datetime)
        else None,
        "ok": bool(r.ok),
        "seconds": float(r.seconds) if r.seconds is not None else None,
        "by": r.created_by,
        "rechecked_after_fence": bool(r.rechecked_after_fence),
        "tables": tables,
    }


def checkpoints(
    conn: psycopg.Connection, bk: str, group: str, limit: int = 10
) -> list[dict[str, Any]]:
    """The newest checkpoints of the sync group, newest first."""
    return [
        {
            "name": c.name,
            "created_at": _iso(c.created_at),
            "by": c.created_by,
            "source_lsn": c.source_lsn,
            "partitions": len(c.offsets),
            "records": sum(int(o.get("next_offset", 0)) for o in c.offsets),
            "note": c.note,
        }
        for c in store.read_checkpoints(conn, bk, group, newest=limit)
    ]


def dead_letters(conn: psycopg.Connection, bk: str) -> list[dict[str, Any]]:
    """Open dead letters by rule and source table, with example keys and the newest reason."""
    return [
        {
            "rule": rule,
            "table": table,
            "records": n,
            "first_at": first,
            "last_at": last,
            "examples": [{"key": e.get("key"), "reason": e.get("reason")} for e in examples if e],
        }
        for rule, table, n, first, last, examples in store.dead_letter_groups(
            conn, bk, EXAMPLE_KEYS
        )
    ]


def forecast(ctx: Context) -> dict[str, Any]:
    """The write downtime to announce (writes are frozen from the freeze to the flip): the
    latest cutover run's forecast, part by part, as ``cutover --dry-run`` printed it (the
    decision row of the audit log), with its age; before any dry run, the latest measured fence
    plus the latest verify (``source: measured``), a cruder figure that leaves out the freeze,
    the counts and the flip."""
    fence = next((f for f in ctx.fences if f.ok and f.seconds is not None), None)
    v = ctx.latest_verify()
    verify_s = (
        (v["finished_at"] - v["started_at"]).total_seconds()
        if v is not None and v["finished_at"] and v["started_at"]
        else None
    )
    out: dict[str, Any] = {
        "source": "measured",
        "fence_s": round(fence.seconds, 2) if fence and fence.seconds is not None else None,
        "fence_at": _iso(fence.finished_at) if fence else None,
        "verify_s": round(verify_s, 2) if verify_s is not None else None,
        "verify_run": v["id"] if v is not None else None,
        "seconds": None,
        "steps": None,
    }
    run = store.latest_forecast(ctx.tgt, ctx.bk)
    if run is not None and run.evidence:
        ev = run.evidence
        return {
            **out,
            "source": "dry_run" if run.dry_run else "cutover",
            "seconds": round(float(ev["expected_downtime_seconds"]), 1),
            "steps": [[k, round(float(s), 2)] for k, s in ev["expected_downtime_parts"]],
            "excludes": list(ev.get("forecast_excludes") or []),
            "run_id": run.run_id,
            "at": _iso(run.at),
            "age_s": round(run.age_s, 1),
        }
    if out["fence_s"] is not None and out["verify_s"] is not None:
        out["seconds"] = round(out["fence_s"] + out["verify_s"], 1)
    return out


def control(ctx: Context) -> dict[str, Any]:
    """Pause and load state for people (``status``, the console): what an operator paused
    (``crossfade pause``) and whether each running process has taken it up (its heartbeat says
    it holds), and the initial load as capture reports it: rows so far, waiting for a window,
    the next window."""
    fresh = ctx.cfg.alive_fresh_s
    live = [h for h in ctx.heartbeats if h.age_s <= fresh]
    paused = []
    for c in ctx.paused:
        role = [h for h in live if h.role == c.component]
        took = [h.worker_id for h in role if h.detail.get("paused")]
        paused.append({**c.as_dict(), "workers": len(role), "holding": len(took)})
    load = next((h.detail.get("load") for h in live if h.role == "capture"), None)
    return {"paused": paused, "load": load}
