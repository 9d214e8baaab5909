"""``crossfade status``: what each side holds and how far sync has come.

The gates, evaluated by :mod:`crossfade.cutover.gate_model` (what the console and the cutover
show for the same state). Whether sync runs (its heartbeats): when it does not, status says so
and shows no lag figure, since an old one would read as current. Per table: rows in source and
target as the ``row_counts`` gate compares them (a mapped source table by its accounting, each
target table of the mapping against the rows expected), open dead letters, deferred and filtered
rows (the ledger's one count), events applied, last applied source position and time. End to
end: the latest fence: the delay from its commit in the legacy database to the last partition
applying it, and how long ago that was. Per partition: the offset stored in the target
(authoritative), the group's offset committed to Kafka (display only) and the log end the broker
reports (on Tansu this under-reports, see STACK.md, so lag from it is a hint, never proof:
``crossfade fence`` is the proof).
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from crossfade.config import Settings
from crossfade.cutover import gate_model
from crossfade.events.kafka import current_epoch
from crossfade.events.model import format_lsn
from crossfade.ops import console_data
from crossfade.target.store import (
    LedgerCounts,
    StoredOffset,
    TableStats,
    last_applied_fence,
    stored_offsets,
    table_stats,
)
from crossfade.textout import Grid

if TYPE_CHECKING:
    from rich.console import Console


def collect(settings: Settings) -> dict[str, Any]:
    """Gather status as plain data (no secrets)."""
    bk = settings.sync.bookkeeping_schema
    out: dict[str, Any] = {"tables": [], "targets": [], "partitions": [], "epoch": None}
    with gate_model.context(settings) as ctx:
        out["gates"] = [g.as_dict() for g in gate_model.evaluate_in(ctx)]
        alive = gate_model.alive(ctx)
        out["sync"] = {
            "running": alive.sync_running,
            "workers": alive.workers,
            "partitions_held": alive.partitions,
            "lag_records": alive.lag if alive.sync_running else None,
            "last_heartbeat_age_s": round(alive.last_sync_heartbeat_s, 1)
            if alive.last_sync_heartbeat_s is not None
            else None,
            "problems": alive.problems,
        }
        counts = {c["table"]: c for c in ctx.counts()}
        stats = table_stats(ctx.tgt, bk)
        for t in settings.tables:
            out["tables"].append(
                _table_row(t, stats.get(t), counts.get(t, {}), ctx.ledger, alive.sync_running)
            )
        out["targets"] = [
            {
                "table": c["table"],
                "sources": c["sources"],
                "target_rows": c["new_rows"],
                "expected_rows": c["expected"],
                "merged_duplicates": c["merged"],
                "counts_match": c["match"],
            }
            for c in counts.values()
            if c["kind"] == "target"
        ]
        stored = stored_offsets(ctx.tgt, bk, settings.sync.group_id)
        out["end_to_end"] = _last_fence(ctx.tgt, bk)
        if out["end_to_end"] is not None:
            out["end_to_end"]["sync_running"] = alive.sync_running
        out["wal"] = _wal(ctx.src, settings)
        out["control"] = console_data.control(ctx)  # crossfade pause, the off-peak load
        out["forecast"] = console_data.forecast(ctx)  # the write downtime to announce
    try:
        out["epoch"] = current_epoch(
            settings.kafka.client_config(), settings.kafka.control_topic, timeout=3
        )
    except KafkaException:
        out["epoch"] = None
    _partitions(settings, stored, out)
    return out


def _table_row(
    t: str, st: TableStats | None, cnt: dict[str, Any], ledger: LedgerCounts, sync_running: bool
) -> dict[str, Any]:
    """One table's line: rows as the ``row_counts`` gate compares them, what is open, what sync
    applied."""
    open_ = ledger.table(t)
    row: dict[str, Any] = {
        "table": t,
        "mapped": cnt.get("kind") == "source",
        "source_rows": cnt.get("legacy_rows"),
        "target_rows": cnt.get("new_rows") if cnt.get("kind") == "identity" else None,
        "counts_match": cnt.get("match"),
        "events_applied": st.applied if st else 0,
        "events_skipped": st.skipped if st else 0,
        "dead_lettered": open_.dead_letters,
        "dead_letters_unacknowledged": open_.unacknowledged,
        "deferred": open_.deferred,
        "filtered": open_.filtered,
        "last_lsn": st.last_lsn if st else None,
        "last_source_ts": st.last_source_ts.isoformat() if st and st.last_source_ts else None,
        "last_applied_at": st.last_applied_at.isoformat() if st and st.last_applied_at else None,
        # when the last change was applied, how long after its commit in the legacy
        # database (no figure while sync is not running: it would read as current)
        "lag_at_last_apply_s": round(st.lag_at_last_apply_s, 3)
        if st and st.lag_at_last_apply_s is not None and sync_running
        else None,
    }
    if cnt.get("kind") == "source":
        row["accounted"] = cnt.get("accounted")
        row["target_tables"] = cnt.get("targets")
    return row


def _partitions(settings: Settings, stored: list[StoredOffset], out: dict[str, Any]) -> None:
    """Per partition: the stored offset, the group's offset committed to Kafka and the log end
    the broker reports (``out["partitions"]``; ``out["kafka_error"]`` when Kafka fails)."""
    c = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": settings.sync.group_id,
            "enable.auto.commit": False,
        }
    )
    try:
        tps = [TopicPartition(s.topic, s.partition) for s in stored]
        committed = (
            {(p.topic, p.partition): p.offset for p in c.committed(tps, timeout=5)} if tps else {}
        )
        for s in stored:
            try:
                _low, high = c.get_watermark_offsets(
                    TopicPartition(s.topic, s.partition), timeout=3
                )
            except KafkaException:
                high = None
            k = committed.get((s.topic, s.partition))
            out["partitions"].append(
                {
                    "topic": s.topic,
                    "partition": s.partition,
                    "stored_offset": s.next_offset,
                    "kafka_committed_offset": k if k is not None and k >= 0 else None,
                    "log_end_offset_reported": high,
                    "lag_hint": max(0, high - s.next_offset) if high is not None else None,
                    "epoch_current": s.epoch == out["epoch"],
                }
            )
    except KafkaException as exc:
        out["kafka_error"] = str(exc)
    finally:
        c.close()


def _last_fence(conn: Any, bk: str) -> dict[str, Any] | None:
    """The latest fence sync applied: end-to-end lag (legacy commit -> applied on the last
    partition) and its age. Lag zero is proven only as of then."""
    f = last_applied_fence(conn, bk)
    if f is None:
        return None
    return {
        "fence": f.token[:8],
        "partitions": f.partitions,
        "lag_s": round(f.lag_s, 3) if f.lag_s is not None else None,
        "age_s": round(f.age_s, 1) if f.age_s is not None else None,
        "applied_at": f.applied_at.isoformat() if f.applied_at else None,
    }


def _dash(v: Any) -> str:
    return "-" if v is None else str(v)


def print_status(data: dict[str, Any], con: Console) -> None:
    """``crossfade status`` for people: whether sync runs, per table the rows and what is open,
    the end-to-end lag, the gates, the partitions (:mod:`crossfade.textout`: whole names on a
    terminal, plain aligned text when piped). LSNs as PostgreSQL writes them (``X/Y``)."""
    sync_ = data["sync"]
    for line in control_lines(data):
        con.print(line, highlight=False)
    con.print(_sync_line(sync_), highlight=False)
    _tables_grid(data).print(con)
    e2e = data.get("end_to_end")
    if not sync_["running"]:
        con.print("end to end: no lag figure while sync is not running")
    elif e2e:
        con.print(
            f"end to end: fence {e2e['fence']} applied on {e2e['partitions']} partitions, "
            f"lag {e2e['lag_s']} s, {e2e['age_s']} s ago",
            highlight=False,
        )
    else:
        con.print("end to end: no fence applied yet (crossfade fence proves lag zero)")
    wal = data.get("wal") or {}
    con.print(
        f"WAL headroom: {wal.get('summary') or wal.get('error') or 'unknown'}", highlight=False
    )
    con.print(forecast_line(data.get("forecast")), highlight=False)
    _gates_grid(data).print(con)
    _partitions_grid(data).print(con)
    if data.get("kafka_error"):
        con.print(f"[yellow]Kafka:[/] {data['kafka_error']}", highlight=False)


def forecast_line(f: dict[str, Any] | None) -> str:
    """The write downtime to announce, as the console shows it: the latest ``cutover --dry-run``'s
    forecast part by part with its age, else the measured fence + verify (cruder), else how to
    get one."""
    if not f or f.get("seconds") is None:
        return (
            "write downtime forecast: none yet (run crossfade cutover --dry-run; it times every "
            "step from the freeze to the flip)"
        )
    if f.get("source") in ("dry_run", "cutover"):
        what = "cutover --dry-run" if f["source"] == "dry_run" else "cutover"
        parts = ", ".join(f"{k} {v:g} s" for k, v in f.get("steps") or [])
        left = f"; not in it: {', '.join(f['excludes'])}" if f.get("excludes") else ""
        return (
            f"write downtime forecast: {f['seconds']:g} s ({what} {f['age_s']:.0f} s ago: "
            f"{parts}{left})"
        )
    return (
        f"write downtime forecast: about {f['seconds']:g} s (the latest fence {f['fence_s']:g} s "
        f"+ the latest verify {f['verify_s']:g} s; crossfade cutover --dry-run times every step)"
    )


def control_lines(data: dict[str, Any]) -> list[str]:
    """``crossfade pause`` and the off-peak load, first and in red where something is held:
    who paused what and why, whether the running processes hold, for capture the WAL the slot
    retains and how long the pause can last; the initial load's rows, window and cap."""
    ctl = data.get("control") or {}
    out = []
    for p in ctl.get("paused") or []:
        since = f" since {p['changed_at'][:16].replace('T', ' ')}" if p.get("changed_at") else ""
        why = f" ({p['reason']})" if p.get("reason") else ""
        line = (
            f"[bold red]{p['component'].upper()} PAUSED[/] by {p['by']}{since}{why}: "
            f"{p['holding']} of {p['workers']} running process(es) hold"
        )
        if p["component"] == "capture":
            line += "; " + _pause_cost(data.get("wal") or {})
        out.append(line + f" (`crossfade resume {p['component']}` continues)")
    load = ctl.get("load")
    if load:
        colour = "yellow" if load.get("paused") else "white"
        out.append(
            f"[{colour}]initial load ({load['by']}): {load['total_rows']} rows so far; "
            f"{load['summary']}[/]"
        )
    return out


def _pause_cost(wal: dict[str, Any]) -> str:
    """What a capture pause costs (:meth:`crossfade.capture.source_prep.WalHeadroom.pause_cost`)."""
    if wal.get("error"):
        return f"WAL retained unknown ({wal['error']})"
    return str(wal.get("pause_cost") or "WAL retained unknown")


def _sync_line(sync_: dict[str, Any]) -> str:
    if not sync_["running"]:
        age = sync_["last_heartbeat_age_s"]
        return (
            "[bold red]sync is not running[/]"
            + (
                f": the last sync heartbeat is {age:.0f} s old"
                if age is not None
                else ": no sync worker has reported"
            )
            + " (start `crossfade sync`); the figures below are not advancing"
        )
    if sync_["problems"]:
        return "[bold red]" + "; ".join(sync_["problems"]) + "[/]"
    return (
        f"sync runs: {sync_['workers']} worker(s) hold {sync_['partitions_held']} partition(s), "
        f"consumer lag {sync_['lag_records']} record(s)"
    )


def _tables_grid(data: dict[str, Any]) -> Grid:
    t = Grid(
        [
            "table",
            ("source rows", "right"),
            ("target rows", "right"),
            ("applied", "right"),
            ("skipped", "right"),
            ("dead letters", "right"),
            ("deferred", "right"),
            ("filtered", "right"),
            ("last LSN", "right"),
            "last source commit",
        ],
        title=f"crossfade status (broker epoch {data['epoch'] or 'none'})",
    )
    for r in data["tables"]:
        # a mapped table's rows land in its target tables (listed below)
        target = f"{r['accounted']} accounted" if r["mapped"] else _dash(r["target_rows"])
        t.add_row(
            r["table"],
            _dash(r["source_rows"]),
            target,
            r["events_applied"],
            r["events_skipped"],
            f"[red]{r['dead_lettered']}[/]" if r["dead_lettered"] else "0",
            r["deferred"],
            r["filtered"],
            format_lsn(r["last_lsn"]),
            _dash(r["last_source_ts"]),
        )
    for r in data["targets"]:
        t.add_row(f"-> {r['table']}", f"{r['expected_rows']} expected", _dash(r["target_rows"]))
    return t


def _gates_grid(data: dict[str, Any]) -> Grid:
    colour = {"ok": "green", "failed": "red", "stale": "yellow", "unknown": "yellow"}
    g = Grid(
        ["gate", "state", ("evidence age", "right"), "detail"],
        title="gates (as the console and crossfade cutover evaluate them)",
    )
    for gate in data["gates"]:
        g.add_row(
            gate["gate"],
            f"[{colour.get(gate['state'], 'white')}]{gate['state']}[/]",
            f"{gate['age_s']:.0f} s" if gate["age_s"] is not None else "-",
            gate["detail"],
        )
    return g


def _partitions_grid(data: dict[str, Any]) -> Grid:
    p = Grid(
        [
            "topic",
            ("partition", "right"),
            ("stored", "right"),
            ("kafka committed", "right"),
            ("log end (reported)", "right"),
            ("lag hint", "right"),
        ],
        title="partitions (stored offset is authoritative; log end is a hint on Tansu)",
    )
    for r in data["partitions"]:
        p.add_row(
            r["topic"],
            r["partition"],
            r["stored_offset"],
            _dash(r["kafka_committed_offset"]),
            _dash(r["log_end_offset_reported"]),
            _dash(r["lag_hint"]),
        )
    return p


def _wal(src: Any, settings: Settings) -> dict[str, Any]:
    """The legacy WAL headroom (pg_stat_wal's rate: no sampling pause in status)."""
    from crossfade.capture.source_prep import wal_headroom

    try:
        w = wal_headroom(src, settings.capture.slot_name)
    except Exception as exc:  # noqa: BLE001 - status reports, never fails on a part
        return {"error": str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)}
    return {**w.as_dict(), "summary": w.describe()}


def probe_id() -> str:
    return uuid.uuid4().hex[:8]
