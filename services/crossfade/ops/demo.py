"""``crossfade demo``: the whole pipeline on embedded parts, proven equal at the end."""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from rich.console import Console
from rich.live import Live
from rich.table import Table

from crossfade.capture.service import CaptureService
from crossfade.config import Settings
from crossfade.cutover.fence import fence
from crossfade.embedded import EmbeddedBroker, EmbeddedPostgres
from crossfade.embedded.crm import TABLES, CrmWriter
from crossfade.ops import metrics
from crossfade.ops.runner import Runner
from crossfade.sync.target_ddl import read_shape
from crossfade.sync.worker import SyncWorker
from crossfade.verify.compare import TableDiff, compare_table

log = logging.getLogger(__name__)


def demo_settings(pg: EmbeddedPostgres, broker: EmbeddedBroker, state_dir: Path, partitions: int) -> Settings:
    return Settings(
        source={"dsn": pg.dsn("legacy")},
        target={"dsn": pg.dsn("target")},
        kafka={"bootstrap_servers": broker.bootstrap_servers, "partitions": partitions},
        tables=TABLES,
        capture={"state_dir": str(state_dir / "capture"), "heartbeat_interval_ms": 2000},
        # Tansu answers JoinGroup after about half the session timeout: keep it short locally
        sync={"batch_size": 5000, "batch_timeout_ms": 100, "session_timeout_ms": 6000},
    )


def compare_all(settings: Settings) -> list[TableDiff]:
    out = []
    with psycopg.connect(settings.source.conninfo) as src, psycopg.connect(settings.target.conninfo) as tgt:
        for t in settings.tables:
            shape = read_shape(src, t)
            assert shape is not None
            out.append(compare_table(src, tgt, t, [c.name for c in shape.columns], list(shape.pk)))
    return out


def _progress(settings: Settings, writer: CrmWriter, worker: SyncWorker, started: float, phase: str) -> Table:
    t = Table(title=f"crossfade demo: {phase} ({time.monotonic() - started:.0f} s)")
    for c in ("table", "legacy rows", "new rows", "applied", "deleted", "skipped (guard)"):
        t.add_column(c, justify="right" if c != "table" else "left")
    try:
        with psycopg.connect(settings.source.conninfo, autocommit=True) as s, psycopg.connect(settings.target.conninfo, autocommit=True) as g:
            for tb in settings.tables:
                a = s.execute(f"SELECT count(*) FROM {tb}").fetchone()
                try:
                    b = g.execute(f"SELECT count(*) FROM {tb}").fetchone()
                except psycopg.Error:
                    b = None
                t.add_row(tb, str(a[0] if a else "?"), str(b[0] if b else "-"), str(worker.stats.applied[tb]),
                          str(worker.stats.deleted[tb]), str(worker.stats.skipped[tb]))
    except psycopg.Error:
        pass
    t.caption = (f"legacy writes: {writer.stats.inserts} inserts, {writer.stats.updates} updates, "
                 f"{writer.stats.deletes} deletes in {writer.stats.transactions} transactions")
    return t


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


def run_demo(duration: float, rate: float, accounts: int, partitions: int, verbose: bool = False) -> int:
    con = Console(stderr=False)
    if con.is_terminal:
        _quiet_logs(con, verbose)
    work = Path(tempfile.mkdtemp(prefix="crossfade-demo-"))
    con.print(f"[bold]crossfade demo[/]: embedded PostgreSQL + Tansu + Debezium, work dir {work}")
    pg = EmbeddedPostgres(log_to=work / "postgres.log")
    broker = EmbeddedBroker(log_to=work / "tansu.log")
    runner = Runner()
    writer: CrmWriter | None = None
    interrupted = threading.Event()
    try:
        pg.start()
        broker.start()
        pg.create_database("legacy")
        pg.create_database("target")
        con.print(f"  PostgreSQL on port {pg.port} (databases legacy, target), Tansu on {broker.bootstrap_servers}")
        settings = demo_settings(pg, broker, work, partitions)
        writer = CrmWriter(settings.source.conninfo, rate=rate)
        writer.seed(accounts)
        con.print(f"  seeded the legacy CRM with {accounts} accounts and their contacts and addresses")
        cap = CaptureService(settings)
        worker = SyncWorker(settings)
        runner.add("capture", cap.run, cap.stop)
        runner.add("sync", worker.run, worker.stop.set)
        # metrics and probes when CROSSFADE_OPS__METRICS_PORT is set (demo has no config file)
        metrics.serve_ops(settings)
        metrics.watch_capture(cap, settings)
        metrics.watch_sync(worker, settings)
        runner.install_signals()
        runner.start()
        writer.start()
        started = time.monotonic()
        with Live(_progress(settings, writer, worker, started, "live writes"), console=con, refresh_per_second=2) as live:
            while time.monotonic() - started < duration and not runner.stopping.is_set():
                time.sleep(1)
                if any(s.error for s in runner.services):
                    break
                live.update(_progress(settings, writer, worker, started, "live writes"))
            writer.stop()
            if runner.stopping.is_set():
                interrupted.set()
            if not interrupted.is_set() and not any(s.error for s in runner.services):
                live.update(_progress(settings, writer, worker, started, "writes stopped, fencing"))
                res = fence(settings, timeout=180)
                live.update(_progress(settings, writer, worker, started, f"fence applied in {res.seconds:.2f} s"))
        failed = [s for s in runner.services if s.error]
        if failed:
            con.print(f"[red]{failed[0].name} failed:[/] {failed[0].error}")
            return 1
        if interrupted.is_set():
            con.print("interrupted: stopped cleanly")
            return 130
        con.print(f"  fence {res.token[:8]}: every legacy change before it is applied ({res.seconds:.2f} s end to end)")
        diffs = compare_all(settings)
        ok = all(d.match for d in diffs)
        for d in diffs:
            mark = "[green]equal[/]" if d.match else "[red]DIFFERENT[/]"
            con.print(f"  {d.table}: {d.source_rows} legacy rows, {d.target_rows} new rows: {mark}"
                      + ("" if d.match else f" (missing {d.n_missing}, extra {d.n_extra}, different {d.n_different})"))
        total = sum(worker.stats.applied.values()) + sum(worker.stats.deleted.values())
        con.print(f"  {total} changes applied; legacy wrote {writer.stats.total} changes in "
                  f"{writer.stats.transactions} transactions during {duration:.0f} s")
        con.print("[bold green]PASS[/]: legacy and new databases match row by row" if ok
                  else "[bold red]FAIL[/]: the databases differ")
        return 0 if ok else 1
    finally:
        if writer is not None:
            writer.stop()
        runner.stop()
        try:
            runner.wait()
        except BaseException as exc:  # noqa: BLE001 - already reported above
            log.debug("shutdown: %s", exc)
        broker.stop()
        pg.stop()
