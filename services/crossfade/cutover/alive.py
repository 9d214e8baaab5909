"""Whether capture and sync are alive, from their heartbeats, the replication slot and the
claimed partitions: what the ``sync_alive`` gate judges (:mod:`crossfade.cutover.gate_model`) and
``crossfade status`` prints."""

from __future__ import annotations

from dataclasses import dataclass, field

from crossfade.cutover.gate_evidence import Context
from crossfade.target.store import Heartbeat


@dataclass
class Alive:
    """What the heartbeats say (status prints it; the gate judges it)."""

    problems: list[str] = field(default_factory=list)
    sync_running: bool = False
    workers: int = 0
    partitions: int = 0
    lag: int | None = None
    oldest_s: float | None = None
    last_sync_heartbeat_s: float | None = None


def alive(ctx: Context) -> Alive:
    return ctx._once("alive", lambda: _alive(ctx))


def _alive(ctx: Context) -> Alive:
    out = Alive()
    ages: list[float] = []
    out.problems += _capture_problems(ctx, ages)
    out.problems += _slot_problems(ctx)
    _sync_problems(ctx, out, ages)
    # crossfade pause: nothing flows, whatever the heartbeats say
    out.problems += [f"{c.line()}: `crossfade resume {c.component}` first" for c in ctx.paused]
    n = ctx.unfinished_replays()
    if n:
        out.problems.append(f"a rewind's replay is still running on {n} partition(s)")
    out.oldest_s = max(ages) if ages else None
    return out


def _capture_problems(ctx: Context, ages: list[float]) -> list[str]:
    """What capture's heartbeats say is wrong (the fresh ones' ages are added to ``ages``)."""
    fresh = ctx.cfg.alive_fresh_s
    problems = []
    capture = [h for h in ctx.heartbeats if h.role == "capture"]
    cap_fresh = [h for h in capture if h.age_s <= fresh]
    if capture and not cap_fresh:
        problems.append(
            f"capture stopped sending heartbeats {min(h.age_s for h in capture):.0f} s ago"
        )
    for h in cap_fresh:
        ages.append(h.age_s)
        if h.detail.get("loading"):
            problems.append(f"capture {h.worker_id} is still loading the existing rows")
            continue
        quiet = h.detail.get("last_batch_age_s")
        if ctx.settings.capture.heartbeat_interval_ms > 0 and quiet is not None:
            quiet = float(quiet) + h.age_s
            if quiet > fresh:
                problems.append(
                    f"capture {h.worker_id} runs but Debezium delivered nothing for {quiet:.0f} s "
                    f"(its heartbeats come every {ctx.settings.capture.heartbeat_interval_ms / 1000:g} s)"
                )
    return problems


def _slot_problems(ctx: Context) -> list[str]:
    """The legacy side: the replication slot must exist and be read."""
    slot = ctx.slot
    if ctx.src is None:
        return ["the legacy database does not answer: its replication slot is unread"]
    if slot is not None and not slot["exists"]:
        return [f"replication slot {slot['name']} does not exist: capture has not started"]
    if slot is not None and not slot["active"]:
        return [f"replication slot {slot['name']} is idle: capture (Debezium) is not streaming"]
    return []


def _sync_problems(ctx: Context, out: Alive, ages: list[float]) -> None:
    """What the sync workers' heartbeats and the claimed partitions say (fills ``out``)."""
    fresh = ctx.cfg.alive_fresh_s
    sync = [h for h in ctx.heartbeats if h.role == "sync"]
    s_fresh = [h for h in sync if h.age_s <= fresh]
    out.workers = len(s_fresh)
    out.sync_running = bool(s_fresh)
    if sync:
        out.last_sync_heartbeat_s = min(h.age_s for h in sync)
    if not s_fresh:
        out.problems.append(
            "sync is not running"
            + (
                f": no sync worker sent a heartbeat for {out.last_sync_heartbeat_s:.0f} s"
                if sync
                else ": no sync worker has reported"
            )
        )
    held = {p for h in s_fresh for p in h.partitions or []}
    out.partitions = len(held)
    for h in s_fresh:
        ages.append(h.age_s)
        out.problems += _worker_problems(ctx, h)
    if not s_fresh:
        return
    out.lag = sum(h.lag or 0 for h in s_fresh)
    for h in sync:
        lost = [p for p in h.partitions or [] if p not in held]
        if h.age_s > fresh and lost:
            out.problems.append(
                f"sync worker {h.worker_id} stopped sending heartbeats {h.age_s:.0f} s ago "
                f"and nobody took over {', '.join(lost)}"
            )
    claimed = ctx.claimed()
    lone = [p for p in claimed if p not in held]
    if lone:
        out.problems.append(
            f"partition(s) held by no running sync worker: {', '.join(sorted(lone))}"
        )
    seen = {p.rsplit("[", 1)[0] for p in claimed}
    never = [t for topic, t in ctx.topics.items() if topic not in seen]
    if never:
        out.problems.append(f"no partition of {', '.join(never)} was ever assigned to sync")


def _worker_problems(ctx: Context, h: Heartbeat) -> list[str]:
    """A running sync worker's own problems: no partition, stalled tables, a growing lag."""
    problems = []
    if not h.partitions:
        problems.append(
            f"sync worker {h.worker_id} holds no partition (more workers than partitions, "
            "or its consumer group join is stuck)"
        )
    if h.unassigned_tables:
        problems.append(
            f"sync worker {h.worker_id} finds table(s) stalled (without an assigned partition, "
            "their topic missing, or no progress while it grows; its log says which): "
            + ", ".join(h.unassigned_tables)
        )
    grown = (h.lag or 0) - (h.lag_low or 0)
    low_for = float(h.detail.get("lag_low_age_s") or 0) + h.age_s
    if grown > ctx.settings.sync.batch_size and low_for >= ctx.cfg.lag_growing_s:
        problems.append(
            f"consumer lag of sync worker {h.worker_id} grew from {h.lag_low} to {h.lag} "
            f"records over {low_for:.0f} s: sync does not keep up"
        )
    return problems
