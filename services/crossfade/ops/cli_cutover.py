"""CLI commands for the day of the move: verify, checkpoint, rewind, cutover, dlq ack.

Registered on the ``crossfade`` group by :mod:`crossfade.ops.cli`. Exit codes as everywhere
(1 also means "verify found differences" / "cutover is NO GO").
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from crossfade.config import Settings
from crossfade.ops.cli_common import add_capture, config_option
from crossfade.ops.cli_common import load_config as _settings


# -- progress ----------------------------------------------------------------------------------
class RichProgress:
    """A progress bar per table on a terminal (stderr)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.task: Any = None

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def table(self, name: str, total: int) -> None:
        self.task = self.bar.add_task(name, total=max(total, 1))

    def advance(self, rows: int) -> None:
        if self.task is not None:
            self.bar.advance(self.task, rows)

    def phase(self, text: str) -> None:
        self.bar.console.log(text)


class LineProgress:
    """Plain progress lines on stderr (``--progress`` when stderr is not a terminal)."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self.name, self.total, self.done, self._last = "", 0, 0, 0.0

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self._line(force=True)

    def table(self, name: str, total: int) -> None:
        self._line(force=True)
        self.name, self.total, self.done = name, total, 0
        self._line(force=True)

    def advance(self, rows: int) -> None:
        self.done += rows
        self._line()

    def _line(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.name or (not force and now - self._last < self.every):
            return
        self._last = now
        pct = 100.0 * self.done / self.total if self.total else 100.0
        click.echo(f"verify: {self.name} {self.done}/{self.total} rows ({pct:.0f}%)", err=True)

    def phase(self, text: str) -> None:
        click.echo(f"verify: {text}", err=True)


class NoProgress:
    def __enter__(self) -> NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def table(self, name: str, total: int) -> None:
        pass

    def advance(self, rows: int) -> None:
        pass

    def phase(self, text: str) -> None:
        pass


def _progress(flag: bool | None) -> Any:
    tty = sys.stderr.isatty()
    if flag is False or (flag is None and not tty):
        return NoProgress()
    return RichProgress() if tty else LineProgress()


# -- verify ------------------------------------------------------------------------------------
def _print_verify(report: Any) -> None:
    from crossfade.textout import Grid, console

    con = console()
    live = report.rechecked_after_fence
    cols: list[Any] = ["table"] + [
        (c, "right") for c in ("source rows", "target rows", "missing", "extra", "different")
    ]
    cols += [("in flight", "right"), ("unsettled", "right")] if live else []
    t = Grid(
        [*cols, "result"],
        title="crossfade verify" + (" (re-checked after a fence)" if live else ""),
    )
    for r in report.tables:
        result = "[green]match[/]" if r.match else f"[red]{r.error or 'MISMATCH'}[/]"
        vals = [r.name, r.source_rows, r.target_rows, r.missing, r.extra, r.different]
        vals += [r.in_flight, r.unsettled] if live else []
        t.add_row(*vals, result)
    t.print(con)
    for r in report.tables:
        for ex in r.examples:
            changed = ex.get("columns")
            detail = (
                ", ".join(f"{c}: {v['source']!r} -> {v['target']!r}" for c, v in changed.items())
                if changed
                else ""
            )
            con.print(
                f"  {r.name} {ex['kind']} {json.dumps(ex['key'])} {detail}",
                highlight=False,
                markup=False,
            )
        if r.unchecked:
            con.print(
                f"  {r.name}: {r.unchecked} further differing keys were counted but not re-checked (--max-keys)"
            )
        if r.repair:
            con.print(
                f"  {r.name} repair: {r.repair['resnapshot']} re-emitted, {r.repair['deleted_extra']} extra deleted, "
                f"{r.repair['remaining']} still different"
            )
    verdict = "[green]MATCH[/]" if report.match else "[red]MISMATCH[/]"
    con.print(
        f"{verdict}: {len(report.tables)} table(s) in {report.seconds:.1f} s"
        + (f", {report.fences} fence(s)" if report.fences else "")
    )


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--table", "tables", multiple=True, help="Only this table (repeatable).")
@click.option(
    "--repair",
    is_flag=True,
    help="Re-emit the differing rows through the pipeline, then re-check them.",
)
@click.option(
    "--fence/--no-fence",
    "use_fence",
    default=True,
    show_default=True,
    help="Re-check differing keys after a fence (needs capture and sync running). "
    "--no-fence: the source is quiet, report differences as found.",
)
@click.option(
    "--progress/--no-progress", default=None, help="Progress on stderr (default: on a terminal)."
)
@click.option(
    "--chunk-rows",
    type=click.IntRange(2),
    default=20_000,
    show_default=True,
    help="Rows per checksum chunk.",
)
@click.option(
    "--leaf-rows",
    type=click.IntRange(2),
    default=1_000,
    show_default=True,
    help="Rows per piece when narrowing a differing chunk down to keys.",
)
@click.option(
    "--max-keys",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="Differing keys kept per table for the re-check (more are only counted).",
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 10),
    default=3,
    show_default=True,
    help="Fence re-check rounds for keys that keep changing.",
)
@click.option("--fence-timeout", type=float, default=120.0, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="Processes mapping the legacy rows of mapped tables (default: one per usable CPU).",
)
@click.option(
    "--reverse",
    is_flag=True,
    help="Fallback direction: the new database (source) against legacy (target); the fence goes "
    "through the reverse pipeline (crossfade fallback start).",
)
@click.option(
    "--pushgateway",
    metavar="URL",
    help="Also push the result (crossfade_verify_passed, _mismatched_rows, _last_run_timestamp_"
    "seconds) to this Prometheus Pushgateway, job crossfade-verify.",
)
def verify(
    config: str | None,
    as_json: bool,
    tables: tuple[str, ...],
    repair: bool,
    use_fence: bool,
    progress: bool | None,
    chunk_rows: int,
    leaf_rows: int,
    max_keys: int,
    rounds: int,
    fence_timeout: float,
    workers: int | None,
    reverse: bool,
    pushgateway: str | None,
) -> None:
    """Compare legacy and new, row for row: counts, chunk checksums, differing keys and rows.

    Exits 0 only when every table matches.
    """
    from crossfade.verify.run import Verifier

    settings = _settings(config)
    skipped: list[Any] = []
    if reverse:
        if repair:
            from crossfade.errors import ConfigError

            raise ConfigError("--repair works forward only", "drop --repair from verify --reverse")
        settings, tables, skipped = _reverse_verify_scope(settings, tables)
    with _progress(progress) as prog:
        v = Verifier(
            settings,
            list(tables) or None,
            fence_recheck=use_fence,
            rounds=rounds,
            chunk_rows=chunk_rows,
            leaf_rows=leaf_rows,
            max_keys=max_keys,
            fence_timeout=fence_timeout,
            progress=prog,
            workers=workers,
        )
        report = v.run(repair=repair)
    report.tables.extend(skipped)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        _print_verify(report)
    if pushgateway:
        _push_verify(pushgateway, settings)
    sys.exit(0 if report.match else 1)


def _push_verify(url: str, settings: Settings) -> None:
    """Push the run's verify series to a Pushgateway; one line (exit 1) when it does not answer."""
    from urllib.error import URLError

    from crossfade.errors import CrossfadeError
    from crossfade.metrics import push_verify_result

    try:
        push_verify_result(url, settings.kafka.topic_prefix)
    except (URLError, OSError, ValueError) as exc:
        raise CrossfadeError(
            f"cannot push the verify result to the Pushgateway at {url} ({getattr(exc, 'reason', exc)})",
            "check --pushgateway; the run itself is recorded in the new database",
        ) from None
    click.echo(f"verify result pushed to {url}", err=True)


def _reverse_verify_scope(
    settings: Settings, tables: tuple[str, ...]
) -> tuple[Settings, tuple[str, ...], list[Any]]:
    """Reversed settings, the new-database tables to compare (``--table`` takes legacy names) and
    a not-verifiable report for each renamed table (verify compares same-shaped tables so far)."""
    from crossfade.mapping.inverse import reversed_for
    from crossfade.verify.run import TableReport

    rev, fb_plan = reversed_for(settings, list(tables) or None)
    same = [i for i in fb_plan.inverses if i.identity]
    skipped = []
    for i in fb_plan.inverses:
        if not i.identity:
            tr = TableReport(i.new)
            tr.error = f"{i.new} goes back to {i.legacy} renamed: verify compares identity-mapped tables only, so far"
            skipped.append(tr)
    return (
        rev.model_copy(update={"tables": [i.new for i in same]}),
        tuple(i.new for i in same),
        skipped,
    )


# -- checkpoints and rewind --------------------------------------------------------------------
@click.group()
def checkpoint() -> None:
    """Record where sync is (to rewind to it later)."""


@checkpoint.command("create")
@config_option
@click.option("--name", help="Checkpoint name (default: cp-<UTC time>).")
@click.option("--note", help="Free text stored with it.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the checkpoint as JSON to this file.",
)
@click.option("--json", "as_json", is_flag=True, help="The checkpoint as JSON on stdout.")
def checkpoint_create(
    config: str | None, name: str | None, note: str | None, out: str | None, as_json: bool
) -> None:
    """Store the sync offsets, the legacy WAL position and the time; print a summary (the
    whole checkpoint with --json or --out)."""
    from crossfade.cutover.checkpoint import create_checkpoint

    cp = create_checkpoint(_settings(config), name=name, note=note)
    text = json.dumps(cp.as_dict(), indent=2)
    if out:
        Path(out).write_text(text + "\n")
    if as_json:
        click.echo(text)
        return
    offs = sum(o["next_offset"] for o in cp.offsets)
    topics = len({o["topic"] for o in cp.offsets})
    click.echo(
        f"checkpoint {cp.name} created at {cp.created_at.isoformat(timespec='seconds')}: "
        f"legacy WAL {cp.source_lsn}, {len(cp.offsets)} partition(s) of {topics} topic(s) "
        f"at {offs} record(s) applied, broker epoch {cp.epoch}"
        + (f" ({cp.note})" if cp.note else "")
    )
    click.echo(
        f"rewind to it with: crossfade rewind --to {cp.name}"
        + (f" (JSON written to {out})" if out else "")
    )


@checkpoint.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True)
def checkpoint_list(config: str | None, as_json: bool) -> None:
    """The checkpoints of this sync group, oldest first."""
    from crossfade.cutover.checkpoint import list_checkpoints

    cps = list_checkpoints(_settings(config))
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in cps], indent=2))
        return
    if not cps:
        click.echo("no checkpoints (crossfade checkpoint create)")
    for c in cps:
        offs = sum(o["next_offset"] for o in c.offsets)
        click.echo(
            f"{c.name}  {c.created_at.isoformat(timespec='seconds')}  legacy WAL {c.source_lsn}  {len(c.offsets)} partitions, "
            f"{offs} records applied  by {c.created_by}" + (f"  ({c.note})" if c.note else "")
        )


@click.command()
@config_option
@click.option(
    "--to",
    "to",
    required=True,
    help="Checkpoint name, or an ISO time (the newest checkpoint at or before it).",
)
@click.option(
    "--dry-run", is_flag=True, help="Check and show what would be replayed; change nothing."
)
@click.option("--json", "as_json", is_flag=True)
def rewind(config: str | None, to: str, dry_run: bool, as_json: bool) -> None:
    """Move the (stopped) sync group back to a checkpoint; sync then replays from there.

    Rows written since the checkpoint are overwritten by the replay, even though they carry the
    same source positions (a replay epoch). Refused while any sync worker runs, and when the
    checkpoint's records are no longer in the topics.
    """
    from crossfade.cutover.checkpoint import rewind as do_rewind

    r = do_rewind(_settings(config), to, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({**r.as_dict(), "dry_run": dry_run}, indent=2))
        return
    verb = "would move" if dry_run else "moved"
    click.echo(
        f"{verb} sync back to checkpoint {r.checkpoint.name} ({r.checkpoint.created_at.isoformat()}): "
        f"{r.records} records to replay on {len(r.partitions)} partitions"
    )
    for p in r.partitions:
        click.echo(f"  {p['topic']}[{p['partition']}] {p['until_offset']} -> {p['from_offset']}")
    if r.skipped:
        click.echo(f"  not in the checkpoint, left as they are: {', '.join(r.skipped)}")
    if not dry_run:
        click.echo(
            "start sync now: it replays those records over what was written since (replay epoch "
            + r.replay_id
            + ")"
        )


# -- cutover -----------------------------------------------------------------------------------
@click.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Walk every gate but freeze and flip.")
@click.option("--json", "as_json", is_flag=True)
def cutover(config: str | None, dry_run: bool, as_json: bool) -> None:
    """Go/no-go: sync healthy, checkpoint, freeze, fence, verify, flip; every step audited.

    Exits 0 only on GO.
    """
    from crossfade.cutover.gates import Cutover, GateResult

    settings = _settings(config)

    def show(g: GateResult) -> None:
        if not as_json:
            mark = {"ok": "ok  ", "skipped": "skip"}.get(g.state, "FAIL")
            age = (
                f" (evidence {g.model.age_s:.0f} s old)"
                if g.model is not None and g.model.age_s is not None
                else ""
            )
            click.echo(f"[{mark}] {g.name:<13} {g.seconds:7.2f} s  {g.detail}{age}")

    if not as_json:
        click.echo(f"crossfade cutover{' --dry-run' if dry_run else ''}")
    report = Cutover(settings, dry_run=dry_run, on_gate=show, config_path=config).run()
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        exp = report.expected_downtime_seconds
        if exp is not None:
            click.echo(
                f"expected write downtime (freeze to flip): about {exp:.1f} s "
                f"({report.downtime_parts()})"
            )
        if report.downtime_seconds is not None:
            click.echo(f"writes were frozen for {report.downtime_seconds:.1f} s")
        if report.go:
            click.echo(
                "GO (dry run): every gate is green"
                if dry_run
                else "GO: traffic flipped; the legacy database stays frozen"
            )
        else:
            failed = next((g for g in report.gates if not g.ok), None)
            if failed is not None and failed.name == "fallback":
                click.echo(
                    "traffic FLIPPED and legacy stays frozen, but fallback did not start: "
                    "fix the cause, then crossfade fallback start"
                )
            click.echo(
                f"NO GO: gate {failed.name if failed else '?'} failed"
                + ("; legacy writes were unfrozen" if report.unfrozen else "")
                + (
                    "; UNFREEZE FAILED: unfreeze legacy writes by hand"
                    if report.unfrozen is False
                    else ""
                )
            )
    sys.exit(0 if report.go else 1)


@click.group()
def dlq() -> None:
    """Dead letters."""


@dlq.command("ack")
@config_option
@click.option("--note", help="Why they may be ignored (stored with the acknowledgement).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dlq_ack(config: str | None, note: str | None, as_json: bool) -> None:
    """Acknowledge the open dead letters (who, how many, the note: in the audit log); the
    dead_letters gate then passes them. A dead letter opened later is not covered."""
    from crossfade.cutover.gates import ack_dead_letters

    open_now, new = ack_dead_letters(_settings(config), note)
    if as_json:
        click.echo(json.dumps({"open": open_now, "acknowledged": new, "note": note}))
        return
    click.echo(
        f"acknowledged {new} dead letter(s) ({open_now} open); recorded in the audit log"
        + ("" if note else " without a note (--note says why they may be left)")
    )


# -- fallback ----------------------------------------------------------------------------------
@click.group()
def fallback() -> None:
    """The reverse sync (new -> legacy) after the flip."""


def _fallback_tables(settings: Settings, tables: str | None) -> tuple[list[str] | None, bool]:
    """``--tables``: a comma list of legacy tables, or ``invertible`` (every invertible one)."""
    if tables is None:
        return None, False
    if tables.strip() == "invertible":
        return list(settings.fallback.tables or settings.tables), True
    return [t.strip() for t in tables.split(",") if t.strip()], False


@fallback.command("start")
@config_option
@click.option(
    "--tables",
    help="Legacy tables to sync back (comma list), or `invertible`: every table whose "
    "mapping can be inverted, leaving out the others (default: all, refused if any is not).",
)
@click.option(
    "--resnapshot",
    is_flag=True,
    help="Allow a second snapshot of the new database into legacy (the reverse capture lost its "
    "offsets): only when legacy took no writes since the first; logged and audited.",
)
def fallback_start(config: str | None, tables: str | None, resnapshot: bool) -> None:
    """Capture the new database and apply its changes to legacy, until stopped (foreground).

    Refuses (exit 2) with one line per table whose mapping cannot run backwards, and (exit 1)
    to snapshot the new database again once a snapshot completed, without --resnapshot.
    """
    import logging

    from crossfade import metrics
    from crossfade.capture.snapshot_guard import GuardedCaptureService, SnapshotGuard
    from crossfade.mapping.inverse import reversed_for
    from crossfade.ops import probes
    from crossfade.ops.runner import Runner, exit_within
    from crossfade.sync.reverse import ReverseSyncWorker

    settings = _settings(config)
    wanted, subset = _fallback_tables(settings, tables)
    rev, fb_plan = reversed_for(settings, wanted, subset=subset)
    log = logging.getLogger("crossfade.fallback")
    for t, why in fb_plan.refused.items():
        log.warning("left out of fallback: %s (%s)", t, why)
    log.info("fallback: %s", ", ".join(f"{i.new} -> {i.legacy}" for i in fb_plan.inverses))
    from crossfade.db import connect
    from crossfade.sync.origin import can_tag

    with connect(rev.source, "new") as new:  # the forward sync's user on the new database
        if not (settings.sync.tag_origin and can_tag(new)):
            log.warning(
                "the forward sync's writes to the new database are not origin-tagged: while it runs, "
                "what it writes comes back to legacy once (sync.tag_origin, or the origin privilege)"
            )
    runner = Runner()
    probes.serve_ops(rev)
    guard = SnapshotGuard(rev, settings, resnapshot=resnapshot)
    add_capture(runner, GuardedCaptureService(rev, guard), rev)  # and the stop's bound
    worker = ReverseSyncWorker(rev, fb_plan)
    runner.add("sync", metrics.counting_errors("sync", worker.run), worker.stop.set)
    probes.watch_sync([worker], rev)
    runner.install_signals()
    runner.start()
    try:
        runner.wait()
    finally:
        exit_within("crossfade fallback start")  # the exit after a stop left capture behind


@fallback.command("fence")
@config_option
@click.option("--timeout", type=float, default=120.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def fallback_fence(config: str | None, timeout: float, as_json: bool) -> None:
    """Lag zero in reverse: a fence row in the new database, waited for until legacy applied it."""
    from crossfade.mapping.inverse import reversed_for
    from crossfade.verify.fence import fence as do_fence

    rev, _ = reversed_for(_settings(config), subset=True)
    r = do_fence(rev, timeout=timeout)
    if as_json:
        click.echo(
            json.dumps(
                {"token": r.token, "partitions": r.partitions, "seconds": round(r.seconds, 3)}
            )
        )
    else:
        click.echo(
            f"fence {r.token[:8]} applied in legacy on all {r.partitions} partitions in {r.seconds:.2f} s: "
            "every change committed in the new database before it is in legacy"
        )


@fallback.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True)
def fallback_status(config: str | None, as_json: bool) -> None:
    """What can fall back and how, and what the reverse sync has applied to legacy so far."""
    from crossfade.mapping.inverse import plan as make_plan
    from crossfade.mapping.inverse import reverse_settings
    from crossfade.ops.status import collect

    settings = _settings(config)
    fb_plan = make_plan(settings)
    out: dict[str, Any] = {
        "tables": [
            {
                "legacy": i.legacy,
                "new": i.new,
                "inverse": "identity" if i.identity else {"columns": i.columns, "casts": i.casts},
            }
            for i in fb_plan.inverses
        ],
        "refused": fb_plan.refused,
        "reverse": None,
    }
    if fb_plan.inverses:
        rev = reverse_settings(settings, fb_plan)
        try:
            out["reverse"] = collect(rev)
        except Exception as exc:  # noqa: BLE001 - status reports, never fails on a part
            out["reverse"] = {"error": str(exc)}
        out["snapshot"] = _reverse_snapshot(rev, settings)
    if as_json:
        click.echo(json.dumps(out, indent=2, default=str))
        return
    for t in out["tables"]:
        how = "identity" if t["inverse"] == "identity" else f"renames {t['inverse']['columns']}"
        click.echo(f"{t['new']} -> legacy {t['legacy']} ({how})")
    for t, why in fb_plan.refused.items():
        click.echo(f"{t}: cannot fall back: {why}")
    snap = out.get("snapshot")
    if snap is not None:
        when = f"completed {snap['completed_at']}; " if snap.get("completed_at") else ""
        click.echo(f"reverse snapshot: {when}{snap.get('next') or snap.get('error')}")
    rv = out["reverse"]
    if isinstance(rv, dict) and "error" not in rv:
        from crossfade.ops.status import print_status
        from crossfade.textout import console

        click.echo("reverse sync (new -> legacy):")
        print_status(rv, console())
    elif rv:
        click.echo(f"reverse sync: {rv['error']}")


def _reverse_snapshot(rev: Settings, forward: Settings) -> dict[str, object]:
    """The reverse snapshot recorded in legacy (see crossfade.capture.snapshot_guard)."""
    from crossfade.capture.snapshot_guard import SnapshotGuard

    try:
        return SnapshotGuard(rev, forward).describe()
    except Exception as exc:  # noqa: BLE001 - status reports, never fails on a part
        return {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}


COMMANDS = [verify, checkpoint, rewind, cutover, dlq, fallback]
