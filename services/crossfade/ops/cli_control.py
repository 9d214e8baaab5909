"""``crossfade pause`` / ``crossfade resume``: hold capture, sync or both for a maintenance window.

The state goes to ``<bookkeeping>.control`` in the new database (:mod:`crossfade.target.store`);
every process reads it at its next heartbeat (``sync.heartbeat_interval_s``) and holds gracefully:
capture before Debezium's next batch (the slot then retains the legacy's WAL), a sync worker by
pausing its partitions while it keeps polling (it stays in its group). A batch in flight
completes. ``status``, the console and the cutover gate show it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from crossfade.ops.cli_common import config_option, load_config

_WHICH = click.Choice(["capture", "sync", "all"])


def _components(which: str) -> list[str]:
    return ["capture", "sync"] if which == "all" else [which]


def _acknowledged(settings: Any, components: list[str], paused: bool, wait_s: float) -> list[str]:
    """Lines saying, per component, how many running processes took the change up within
    ``wait_s`` (their heartbeats report it)."""
    from crossfade.db import connect
    from crossfade.target.store import read_heartbeats

    fresh = settings.cutover.alive_fresh_s
    deadline = time.monotonic() + wait_s
    with connect(settings.target, "target", autocommit=True) as conn:
        while True:
            hbs = [h for h in read_heartbeats(conn, settings.sync.bookkeeping_schema)]
            live = {c: [h for h in hbs if h.role == c and h.age_s <= fresh] for c in components}
            took = {c: [h for h in live[c] if bool(h.detail.get("paused")) == paused] for c in live}
            if all(len(took[c]) == len(live[c]) for c in components) or (
                time.monotonic() >= deadline
            ):
                break
            time.sleep(0.5)
    verb = "hold" if paused else "run again"
    return [
        f"{c}: {len(took[c])} of {len(live[c])} running process(es) {verb}"
        if live[c]
        else f"{c}: no process running (it starts {'paused' if paused else 'normally'})"
        for c in components
    ]


def _set(config: str | None, which: str, paused: bool, reason: str | None, as_json: bool) -> None:
    from crossfade.db import connect
    from crossfade.target.store import set_paused
    from crossfade.who import operator

    settings = load_config(config)
    comps = _components(which)
    with connect(settings.target, "target", autocommit=True) as conn:
        states = set_paused(
            conn, settings.sync.bookkeeping_schema, comps, paused, operator(), reason
        )
    wait_s = settings.sync.heartbeat_interval_s * 2 + 1
    acks = _acknowledged(settings, comps, paused, wait_s)
    wal = _wal_line(settings) if paused and "capture" in comps else None
    if as_json:
        out = {"states": [s.as_dict() for s in states], "processes": acks, "wal": wal}
        click.echo(json.dumps(out, indent=2))
        return
    for s in states:
        click.echo(s.line() if paused else f"{s.component} resumed by {s.by}")
    for line in acks:
        click.echo(f"  {line}")
    if wal:
        click.echo(f"  while capture is paused {wal}")


def _wal_line(settings: Any) -> str:
    """The WAL the slot retains and how long a capture pause can last (legacy's WAL rate)."""
    from crossfade.capture.source_prep import wal_headroom
    from crossfade.db import connect

    try:
        with connect(settings.source, "source") as src:
            return wal_headroom(src, settings.capture.slot_name).pause_cost()
    except Exception as exc:  # noqa: BLE001 - the pause is recorded; this is advice
        return f"the WAL it costs is unknown (the legacy database: {str(exc).splitlines()[0]})"


@click.command("pause")
@click.argument("which", type=_WHICH, default="all")
@click.option("--reason", help="Why (shown by status, the console and the cutover gate).")
@config_option
@click.option("--json", "as_json", is_flag=True)
def pause(which: str, reason: str | None, config: str | None, as_json: bool) -> None:
    """Hold capture, sync or both (default all) until `crossfade resume`. Graceful: a batch in
    flight completes. A paused capture makes the legacy retain WAL: this says how long it can."""
    _set(config, which, True, reason, as_json)


@click.command("resume")
@click.argument("which", type=_WHICH, default="all")
@config_option
@click.option("--json", "as_json", is_flag=True)
def resume(which: str, config: str | None, as_json: bool) -> None:
    """Let capture, sync or both (default all) run again after `crossfade pause`."""
    _set(config, which, False, None, as_json)


COMMANDS = [pause, resume]
