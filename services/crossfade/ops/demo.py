"""``crossfade demo``: the whole pipeline on embedded parts, proven equal at the end.

By default the legacy CRM is migrated through the demo mapping (``embedded/crm-mapping.yaml``:
renames, cleansing transforms, a filter, rules with a deferral window, dedup) into the new
system's ``app`` schema, and the end check is ``crossfade verify`` with its accounting;
``--identity`` copies the tables as they are and compares them row by row.
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from rich.console import Console, RenderableType
from rich.live import Live

from crossfade.capture.service import CaptureService
from crossfade.catalog import read_shape
from crossfade.config import Settings
from crossfade.embedded import EmbeddedBroker, EmbeddedPostgres
from crossfade.embedded.crm import MAPPING_FILE, TABLES, CrmWriter, create_target_schema
from crossfade.ops import probes
from crossfade.ops.console import Console as PageConsole
from crossfade.ops.runner import Runner
from crossfade.sync.worker import SyncWorker
from crossfade.textout import Grid
from crossfade.textout import console as text_console
from crossfade.verify.compare import TableDiff, compare_table
from crossfade.verify.fence import FenceResult, fence

log = logging.getLogger(__name__)


def demo_settings(
    pg: EmbeddedPostgres,
    broker: EmbeddedBroker,
    state_dir: Path,
    partitions: int,
    mapped: bool = True,
) -> Settings:
    import yaml

    extra = {"mapping": yaml.safe_load(MAPPING_FILE.read_text())} if mapped else {}
    return Settings.model_validate(
        {
            **extra,
            "source": {"dsn": pg.dsn("legacy")},
            "target": {"dsn": pg.dsn("target")},
            "kafka": {"bootstrap_servers": broker.bootstrap_servers, "partitions": partitions},
            "tables": TABLES,
            "capture": {"state_dir": str(state_dir / "capture"), "heartbeat_interval_ms": 2000},
            # sync.session_timeout_ms: auto, 2 s on the embedded broker (a join in 1 s)
            "sync": {"batch_size": 5000},
        }
    )


def compare_all(settings: Settings) -> list[TableDiff]:
    out = []
    with (
        psycopg.connect(settings.source.conninfo) as src,
        psycopg.connect(settings.target.conninfo) as tgt,
    ):
        for t in settings.tables:
            shape, tshape = read_shape(src, t), read_shape(tgt, t)
            assert shape is not None and tshape is not None, f"{t} is missing on one side"
            have = {c.name for c in tshape.columns}
            d = compare_table(
                src, tgt, t, [c.name for c in shape.columns if c.name in have], list(shape.pk)
            )
            d.lacking_columns = [c.name for c in shape.columns if c.name not in have]
            out.append(d)
    return out


def _targets(settings: Settings) -> dict[str, str]:
    """Source table -> the target table its rows go to (the first target of its mapping)."""
    m = settings.mapping
    out = {}
    for tb in settings.tables:
        tm = m.tables.get(tb) if m is not None else None
        out[tb] = tm.targets[0].table if tm is not None else tb
    return out


def _progress(
    settings: Settings,
    writer: CrmWriter,
    worker: SyncWorker,
    started: float,
    phase: str,
    con: Console,
) -> RenderableType:
    mapped = settings.mapping is not None
    cols = [
        "table",
        "legacy rows",
        "new table",
        "new rows",
        "applied",
        "deleted",
        "skipped (guard)",
    ]
    if mapped:
        cols += ["filtered", "deferred", "dead-lettered"]
    t = Grid(
        [c if c in ("table", "new table") else (c, "right") for c in cols],
        title=f"crossfade demo: {phase} ({time.monotonic() - started:.0f} s)",
        caption=f"legacy writes: {writer.stats.inserts} inserts, {writer.stats.updates} updates, "
        f"{writer.stats.deletes} deletes in {writer.stats.transactions} transactions",
    )
    try:
        with (
            psycopg.connect(settings.source.conninfo, autocommit=True) as s,
            psycopg.connect(settings.target.conninfo, autocommit=True) as g,
        ):
            for tb, target in _targets(settings).items():
                a = s.execute(f"SELECT count(*) FROM {tb}").fetchone()
                try:
                    b = g.execute(f"SELECT count(*) FROM {target}").fetchone()
                except psycopg.Error:
                    b = None
                st = worker.stats
                row = [
                    tb,
                    str(a[0] if a else "?"),
                    target,
                    str(b[0] if b else "-"),
                    str(st.applied[tb]),
                    str(st.deleted[tb]),
                    str(st.skipped[tb]),
                ]
                if mapped:
                    row += [str(st.filtered[tb]), str(st.deferred[tb]), str(st.dead_lettered[tb])]
                t.add_row(*row)
    except psycopg.Error:
        pass
    return t.renderable(con)


def _quiet_logs(con: Console, verbose: bool) -> None:
    """Send logs through the console that draws the live table (so they do not tear it) and,
    unless --verbose, keep only warnings: the table is the demo's progress report."""
    from rich.logging import RichHandler

    from crossfade.ops.logs import RedactingFilter

    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = RichHandler(console=con, show_path=False, rich_tracebacks=False)
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)


def _compare_identity(con: Console, settings: Settings) -> bool:
    diffs = compare_all(settings)
    for d in diffs:
        mark = "[green]equal[/]" if d.match else "[red]DIFFERENT[/]"
        con.print(
            f"  {d.table}: {d.source_rows} legacy rows, {d.target_rows} new rows: {mark}"
            + (
                ""
                if d.match
                else f" (missing {d.n_missing}, extra {d.n_extra}, different {d.n_different})"
            )
        )
    return all(d.match for d in diffs)


def _verify_mapped(con: Console, settings: Settings) -> bool:
    """``crossfade verify`` (legacy quiet, fenced): every legacy row mapped, compared, accounted for."""
    from crossfade.verify.run import Verifier

    rep = Verifier(settings, fence_recheck=False).run(record=False)
    for tr in rep.tables:
        mark = "[green]equal[/]" if tr.match else "[red]DIFFERENT[/]"
        m = tr.mapped or {}
        con.print(
            f"  {tr.name}: {m.get('expected_rows', '?')} expected (mapped) rows, {tr.target_rows} rows: {mark}"
            + (
                f", {m['merged_duplicates']} duplicate(s) merged"
                if m.get("merged_duplicates")
                else ""
            )
            + (
                ""
                if tr.match
                else f" (missing {tr.missing}, extra {tr.extra}, different {tr.different}"
                + (f"; {tr.error}" if tr.error else "")
                + ")"
            )
        )
        for a in m.get("accounting", []):
            con.print(
                f"    {a['table']}: {a['source_rows']} legacy rows = {a['mapped']} mapped + {a['rejected']} "
                f"dead-lettered or deferred + {a['filtered']} filtered"
                + (" [green](closes)[/]" if a["closes"] else " [red](does not close)[/]")
            )
    return rep.match


def replay_command(
    seed: int, transactions: int, rate: float, accounts: int, partitions: int, mapped: bool
) -> str:
    """The command that runs the same legacy writes again (same seed, same transactions)."""
    return (
        f"crossfade demo --seed {seed} --transactions {transactions} --rate {rate:g} "
        f"--accounts {accounts} --partitions {partitions}" + ("" if mapped else " --identity")
    )


def serve_console(con: Console, settings: Settings, port: int | None) -> PageConsole | None:
    """``demo --console``: the read-only console on loopback for the demo's databases."""
    if port is None:
        return None
    page = PageConsole(settings, host="127.0.0.1", port=port, interval=1.0).start()
    con.print(
        f"  console: [bold]http://127.0.0.1:{page.port}/[/] (read-only): open it to watch the "
        "tables, lag and gates move while the demo writes"
    )
    return page


@dataclass
class _Demo:
    """What one demo run starts, so it can stop all of it whatever happened (:meth:`close`)."""

    con: Console
    pg: EmbeddedPostgres
    broker: EmbeddedBroker
    runner: Runner = field(default_factory=Runner)
    writer: CrmWriter | None = None
    page: PageConsole | None = None

    def close(self) -> None:
        if self.page is not None:
            self.page.stop()
        if self.writer is not None:
            self.writer.stop()
        self.runner.stop()
        try:
            self.runner.wait()
        except BaseException as exc:  # noqa: BLE001 - already reported above
            log.debug("shutdown: %s", exc)
        self.broker.stop()
        self.pg.stop()


def _start(
    d: _Demo,
    work: Path,
    partitions: int,
    mapped: bool,
    accounts: int,
    seed: int,
    rate: float,
    transactions: int | None,
    console_port: int | None,
) -> tuple[Settings, CrmWriter, SyncWorker]:
    """Start PostgreSQL and Tansu, seed the legacy CRM, start capture and sync (and the console):
    everything but the writer's live writes."""
    con, pg, broker, runner = d.con, d.pg, d.broker, d.runner
    pg.start()
    broker.start()
    pg.create_database("legacy")
    pg.create_database("target")
    con.print(
        f"  PostgreSQL on port {pg.port} (databases legacy, target), Tansu on {broker.bootstrap_servers}"
    )
    settings = demo_settings(pg, broker, work, partitions, mapped)
    writer = d.writer = CrmWriter(
        settings.source.conninfo, seed=seed, rate=rate, transactions=transactions
    )
    writer.seed(accounts)
    if mapped:
        with psycopg.connect(settings.target.conninfo, autocommit=True) as g:
            create_target_schema(g)
        con.print(
            f"  mapping {MAPPING_FILE.name}: legacy public.* -> new app.* (transforms, a filter, rules, dedup)"
        )
    con.print(
        f"  seeded the legacy CRM with {accounts} accounts and their contacts and addresses "
        f"(writer seed {seed})"
    )
    cap = CaptureService(settings)
    worker = SyncWorker(settings)
    runner.add("capture", cap.run, cap.stop)
    runner.add("sync", worker.run, worker.stop.set)
    # metrics and probes when CROSSFADE_OPS__METRICS_PORT is set (demo has no config file)
    probes.serve_ops(settings)
    probes.watch_capture(cap, settings)
    probes.watch_sync([worker], settings)
    runner.install_signals()
    runner.start()
    d.page = serve_console(con, settings, console_port)
    return settings, writer, worker


def _live_writes(
    d: _Demo,
    settings: Settings,
    writer: CrmWriter,
    worker: SyncWorker,
    started: float,
    duration: float,
    transactions: int | None,
    mapped: bool,
) -> tuple[FenceResult | None, bool]:
    """The writer's live writes with the progress shown, then a fence: (the fence, None when it
    was not reached; whether the run was interrupted)."""
    con, runner = d.con, d.runner
    res: FenceResult | None = None
    interrupted = False
    with Live(
        _progress(settings, writer, worker, started, "live writes", con),
        console=con,
        refresh_per_second=2,
    ) as live:
        while (
            not runner.stopping.is_set()
            and (transactions is not None or time.monotonic() - started < duration)
            and not writer.done.is_set()
        ):
            time.sleep(1)
            if any(s.error for s in runner.services):
                break
            live.update(_progress(settings, writer, worker, started, "live writes", con))
        writer.stop()
        if runner.stopping.is_set():
            interrupted = True
        if not interrupted and not any(s.error for s in runner.services):
            live.update(
                _progress(settings, writer, worker, started, "writes stopped, fencing", con)
            )
            res = fence(settings, timeout=180)
            if (
                mapped
            ):  # a child deferred for its parent is retried every second: let one retry pass
                fenced = time.time()
                wait_until = time.monotonic() + 30
                while worker.deferred_checked_at <= fenced and time.monotonic() < wait_until:
                    time.sleep(0.2)
            live.update(
                _progress(
                    settings,
                    writer,
                    worker,
                    started,
                    f"fence applied in {res.seconds:.2f} s",
                    con,
                )
            )
    if not con.is_terminal:
        con.line()  # rich's Live leaves its last line open when the output is not a terminal
    return res, interrupted


def _report(
    d: _Demo,
    settings: Settings,
    writer: CrmWriter,
    worker: SyncWorker,
    started: float,
    res: FenceResult,
    replay: str,
    mapped: bool,
) -> int:
    """Verify (or compare) after the fence and print the verdict: 0 pass, 1 fail."""
    con, seed = d.con, writer.seed_value
    con.print(
        f"  fence {res.token[:8]}: every legacy change before it is applied ({res.seconds:.2f} s end to end)"
    )
    ok = _verify_mapped(con, settings) if mapped else _compare_identity(con, settings)
    total = sum(worker.stats.applied.values()) + sum(worker.stats.deleted.values())
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(writer.stats.kinds.items()))
    con.print(
        f"  {total} changes applied; legacy wrote {writer.stats.total} changes in "
        f"{writer.stats.transactions} transactions during {time.monotonic() - started:.0f} s"
        + (f" ({kinds})" if kinds else "")
    )
    if not ok:
        con.print(
            f"  writer seed {seed}, {writer.stats.transactions} transactions; the same legacy "
            "writes again: " + replay,
            soft_wrap=True,
        )
    con.print(
        (
            "[bold green]PASS[/]: the new database holds exactly the mapped legacy rows"
            if mapped
            else "[bold green]PASS[/]: legacy and new databases match row by row"
        )
        if ok
        else "[bold red]FAIL[/]: the databases differ"
    )
    if d.page is not None and con.is_terminal:
        con.print(
            f"  the console stays at http://127.0.0.1:{d.page.port}/ with capture and sync "
            "running: Ctrl-C ends the demo"
        )
        d.runner.stopping.wait()
    return 0 if ok else 1


def run_demo(
    duration: float,
    rate: float,
    accounts: int,
    partitions: int,
    verbose: bool = False,
    mapped: bool = True,
    seed: int | None = None,
    transactions: int | None = None,
    console_port: int | None = None,
) -> int:
    """Run the demo; 0 when verify (or the identity comparison) passes, 1 when it does not
    (the seed and the command that replays the same writes are printed), 130 when interrupted.

    ``seed``: the legacy writer's seed (random when None, and printed); ``transactions``: the
    writer stops after this many transactions instead of after ``duration`` seconds;
    ``console_port``: also serve the console on 127.0.0.1 (0: any free port) while it runs
    and, on a terminal, after the report until Ctrl-C (capture and sync keep running, so the
    page stays live)."""
    if seed is None:
        seed = random.SystemRandom().randrange(1, 1_000_000)
    con = text_console()
    if con.is_terminal:
        _quiet_logs(con, verbose)
    work = Path(tempfile.mkdtemp(prefix="crossfade-demo-"))
    con.print(f"[bold]crossfade demo[/]: embedded PostgreSQL + Tansu + Debezium, work dir {work}")
    d = _Demo(
        con,
        EmbeddedPostgres(log_to=work / "postgres.log"),
        EmbeddedBroker(log_to=work / "tansu.log"),
    )
    try:
        settings, writer, worker = _start(
            d, work, partitions, mapped, accounts, seed, rate, transactions, console_port
        )
        writer.start()
        started = time.monotonic()
        res, interrupted = _live_writes(
            d, settings, writer, worker, started, duration, transactions, mapped
        )
        failed = [s for s in d.runner.services if s.error]
        if failed:
            con.print(f"[red]{failed[0].name} failed:[/] {failed[0].error}")
            return 1
        if interrupted or res is None:
            con.print("interrupted: stopped cleanly")
            return 130
        replay = replay_command(seed, writer.stats.transactions, rate, accounts, partitions, mapped)
        return _report(d, settings, writer, worker, started, res, replay, mapped)
    finally:
        d.close()
