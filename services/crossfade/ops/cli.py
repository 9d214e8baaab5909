"""The ``crossfade`` command line.

Every command fails with one line on stderr naming the problem and the fix, and a non-zero exit
code (2: configuration, 3: preflight, 1: anything else, 130: interrupted); ``--verbose`` adds the
stack trace.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import traceback
from typing import Any

import click

from crossfade.config import Settings, public_view
from crossfade.errors import CrossfadeError
from crossfade.ops import cli_connector, cli_control, cli_cutover, cli_schema, cli_source
from crossfade.ops.cli_common import config_option
from crossfade.ops.cli_common import load_config as _settings
from crossfade.ops.logs import setup_logging
from crossfade.redact import redact

log = logging.getLogger("crossfade")


class _State:
    verbose = False
    log_format = "auto"


def _config_defaults(group: click.Group, path: str) -> dict[str, Any]:
    """``ctx.default_map`` giving every subcommand that takes ``-c`` the file given before it."""
    out: dict[str, Any] = {}
    for name, cmd in group.commands.items():
        sub: dict[str, Any] = {}
        if isinstance(cmd, click.Group):
            sub = _config_defaults(cmd, path)
        if any(p.name == "config" for p in cmd.params):
            sub["config"] = path
        if sub:
            out[name] = sub
    return out


def _group_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None and isinstance(ctx.command, click.Group):
        ctx.default_map = {**(ctx.default_map or {}), **_config_defaults(ctx.command, value)}


def _late_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not _State.verbose:
        _State.verbose = True
        setup_logging(True, _State.log_format)


def _late_log_format(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None and value != _State.log_format:
        _State.log_format = value
        setup_logging(_State.verbose, value)


def _accept_global_options(group: click.Group) -> None:
    """``-v`` and ``--log-format`` work after the subcommand too (``crossfade status -v``), as
    ``-c`` works before it (``crossfade -c FILE status``)."""
    for cmd in group.commands.values():
        if isinstance(cmd, click.Group):
            _accept_global_options(cmd)
            continue
        names = {o for p in cmd.params for o in getattr(p, "opts", [])}
        if "--verbose" not in names:
            cmd.params.append(
                click.Option(
                    ["-v", "--verbose"],
                    is_flag=True,
                    expose_value=False,
                    callback=_late_verbose,
                    help="Debug logs, and stack traces on errors (also before the command).",
                )
            )
        if "--log-format" not in names:
            cmd.params.append(
                click.Option(
                    ["--log-format"],
                    type=click.Choice(["auto", "json", "text"]),
                    default=None,
                    expose_value=False,
                    callback=_late_log_format,
                    help="Log format (also before the command).",
                )
            )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Debug logs, and stack traces on errors.")
@click.option(
    "--log-format", type=click.Choice(["auto", "json", "text"]), default="auto", show_default=True
)
@click.option(
    "-c",
    "--config",
    type=click.Path(dir_okay=False),
    expose_value=False,
    callback=_group_config,
    help="YAML config file, for the command that follows (or -c after it, or CROSSFADE_CONFIG).",
)
@click.version_option(package_name="crossfade")
def cli(verbose: bool, log_format: str) -> None:
    """crossfade: zero-downtime data migration with change data capture.

    Debezium reads the legacy database's log, Kafka carries the changes as Avro, sync workers
    apply them to the new database; status, fence and verify prove the two agree. Global
    options (-v, --log-format, -c) go before or after the command.
    """
    _State.verbose = verbose
    _State.log_format = log_format
    setup_logging(verbose, log_format)


@cli.command()
@click.option(
    "--duration", type=float, default=30.0, show_default=True, help="Seconds of live writes."
)
@click.option(
    "--rate", type=float, default=40.0, show_default=True, help="Legacy transactions per second."
)
@click.option(
    "--accounts",
    type=int,
    default=300,
    show_default=True,
    help="Accounts seeded before capture starts.",
)
@click.option("--partitions", type=int, default=2, show_default=True)
@click.option(
    "--identity",
    is_flag=True,
    help="Copy the legacy tables as they are instead of through the demo mapping.",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed of the legacy writer (default: a random one, printed): the same seed makes the "
    "same legacy writes.",
)
@click.option(
    "--transactions",
    type=int,
    default=None,
    help="Stop the legacy writes after this many transactions instead of after --duration "
    "(with --seed: exactly the writes of an earlier run, as a failing run prints them).",
)
@click.option(
    "--console",
    "with_console",
    is_flag=True,
    help="Serve the console (read-only, 127.0.0.1) while the demo runs and print its URL; on a "
    "terminal it stays up after the report until Ctrl-C.",
)
@click.option(
    "--console-port",
    type=click.IntRange(0, 65535),
    default=8421,
    show_default=True,
    help="Port of --console (0: any free port).",
)
def demo(
    duration: float,
    rate: float,
    accounts: int,
    partitions: int,
    identity: bool,
    seed: int | None,
    transactions: int | None,
    with_console: bool,
    console_port: int,
) -> None:
    """Run the whole pipeline on embedded parts and prove the copy equal.

    Starts Tansu and PostgreSQL (a legacy and a new database), Debezium and a sync worker; seeds a
    small CRM and keeps writing to it; then stops the writes, fences, and compares every row.
    Exits 0 only if both databases match.
    """
    from crossfade.ops.demo import run_demo

    sys.exit(
        run_demo(
            duration=duration,
            rate=rate,
            accounts=accounts,
            partitions=partitions,
            verbose=_State.verbose,
            mapped=not identity,
            seed=seed,
            transactions=transactions,
            console_port=console_port if with_console else None,
        )
    )


@cli.command()
@click.option("--port", type=click.IntRange(1, 65535), default=9092, show_default=True)
def broker(port: int) -> None:
    """Run the embedded Tansu broker in the foreground (in memory: data is lost on stop)."""
    import signal
    import threading

    from crossfade.embedded import EmbeddedBroker

    b = EmbeddedBroker(port).start()
    click.echo(f"Tansu broker on {b.bootstrap_servers} (in memory; Ctrl-C to stop)")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        while not done.wait(1):
            if not b.running:
                raise CrossfadeError("the broker process exited", f"see its log {b.log_path}")
    except KeyboardInterrupt:
        pass
    finally:
        b.stop()


def _serve(services: list[str], settings: Settings) -> None:
    from crossfade import metrics
    from crossfade.ops import probes
    from crossfade.ops.runner import Runner

    runner = Runner()
    # /metrics (this process's components only), /healthz, /readyz when ops.metrics_port is set
    probes.serve_ops(settings, services)
    if "capture" in services:
        from crossfade.capture.service import CaptureService

        cap = CaptureService(settings)
        runner.add("capture", metrics.counting_errors("capture", cap.run), cap.stop)
        probes.watch_capture(cap, settings)
    worker = None
    if "sync" in services:
        from crossfade.sync.worker import SyncWorker

        worker = SyncWorker(settings)
        runner.add("sync", metrics.counting_errors("sync", worker.run), worker.stop.set)
        probes.watch_sync(worker, settings)
    console = None
    if settings.ops.console_port is not None:
        import os

        from crossfade.ops.console import Console

        # mounted in a long-running command the console is read-only; actions need `crossfade console`
        console = Console(
            settings,
            host=settings.ops.console_host,
            port=settings.ops.console_port,
            token=os.environ.get("CROSSFADE_CONSOLE_TOKEN"),
        ).start()
        log.info("console on http://%s:%d/ (read-only)", settings.ops.console_host, console.port)
    if services == ["sync"]:
        # Sync allocates several objects per event (decoded Avro, events, rows) and none of them
        # form cycles: with the default gen0 threshold (700) the collector ran every few dozen
        # events and walked all that start-up left behind. Start-up's objects are frozen out of
        # collections, and gen0 waits for more allocations (~10% of sync's CPU, measured).
        # Not measured for capture (its CPU is mostly the JVM's): left as it was there.
        gc.freeze()
        gc.set_threshold(max(gc.get_threshold()[0], 50_000), *gc.get_threshold()[1:])
    runner.install_signals()
    runner.start()
    try:
        runner.wait()
    finally:
        if console is not None:
            console.stop()
        if worker is not None and worker.left_in_group:
            # a consumer finalised at exit would still send LeaveGroup (GroupMember.finish_join, sync/consumer.py)
            import os

            logging.shutdown()
            os._exit(1 if sys.exc_info()[0] is not None else 0)


@cli.command()
@config_option
def capture(config: str | None) -> None:
    """Debezium (embedded) -> Kafka, until stopped."""
    _serve(["capture"], _settings(config))


@cli.command()
@config_option
def sync(config: str | None) -> None:
    """Kafka -> new database; run several to scale out (one consumer group)."""
    _serve(["sync"], _settings(config))


@cli.command()
@config_option
def run(config: str | None) -> None:
    """Capture and sync in one process (one-node setups)."""
    _serve(["capture", "sync"], _settings(config))


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(config: str | None, as_json: bool) -> None:
    """Rows on both sides, events applied, stored vs committed offsets."""
    from crossfade.ops.status import collect

    data = collect(_settings(config))
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
        return
    from crossfade.ops.status import print_status
    from crossfade.textout import console

    print_status(data, console())


@cli.command()
@config_option
@click.option("--timeout", type=float, default=120.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def fence(config: str | None, timeout: float, as_json: bool) -> None:
    """Write a fence row in the legacy database and wait until sync applied it everywhere."""
    from crossfade.verify.fence import fence as do_fence

    r = do_fence(_settings(config), timeout=timeout)
    if as_json:
        click.echo(
            json.dumps(
                {"token": r.token, "partitions": r.partitions, "seconds": round(r.seconds, 3)}
            )
        )
    else:
        click.echo(
            f"fence {r.token[:8]} applied on all {r.partitions} partitions in {r.seconds:.2f} s: "
            "every change committed before it is in the target"
        )


@cli.command()
@config_option
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind (anything but loopback needs a token).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8421, show_default=True)
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Let the page run fence (it writes one row to the legacy database).",
)
@click.option(
    "--token",
    envvar="CROSSFADE_CONSOLE_TOKEN",
    show_envvar=True,
    help="Require this token (prefer the environment variable: arguments show in ps).",
)
@click.option(
    "--interval", type=float, default=2.0, show_default=True, help="Seconds between refreshes."
)
@click.option(
    "--prometheus",
    metavar="URL",
    envvar="CROSSFADE_CONSOLE_PROMETHEUS",
    help="Prometheus that scrapes this migration: the charts show its last 15 minutes of applied "
    "rate and lag (default: the console's own samples since it started).",
)
def console(
    config: str | None,
    host: str,
    port: int,
    allow_actions: bool,
    token: str | None,
    interval: float,
    prometheus: str | None,
) -> None:
    """Serve the cutover console: gates with their evidence, the downtime forecast, tables with
    their rows, rate and lag over 15 minutes, dead letters, verify, checkpoints."""
    from crossfade.ops.console import run_console

    run_console(
        _settings(config),
        host=host,
        port=port,
        allow_actions=allow_actions,
        token=token,
        interval=interval,
        echo=click.echo,
        prometheus=prometheus,
    )


@cli.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="The whole report as JSON on stdout.")
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    help="Also write the report as one HTML page.",
)
@click.option(
    "--examples", type=int, default=5, show_default=True, help="Examples kept per finding."
)
@click.option(
    "--skip-target-check",
    is_flag=True,
    help="Do not check the mapping against the target database's schema.",
)
def audit(
    config: str | None, as_json: bool, html_path: str | None, examples: int, skip_target_check: bool
) -> None:
    """Profile the legacy tables under the mapping, writing nothing: row counts, completeness,
    rule failures with examples, duplicate groups, orphans, value formats."""
    from crossfade.mapping.audit import run_audit

    report = run_audit(_settings(config), examples=examples, check_target=not skip_target_check)
    if html_path:
        from pathlib import Path

        from crossfade.mapping.report_html import render

        Path(html_path).write_text(render(report), encoding="utf-8")
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        from crossfade.mapping.views import print_audit

        print_audit(report)
        if html_path:
            click.echo(f"HTML report written to {html_path}")


@cli.command("dry-run")
@config_option
@click.option(
    "--sample",
    type=click.IntRange(1),
    default=20,
    show_default=True,
    help="Rows sampled per source table.",
)
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same sample.")
@click.option(
    "--no-merges",
    is_flag=True,
    help="Skip matching the whole source for duplicates of the sampled rows.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--skip-target-check",
    is_flag=True,
    help="Do not check the mapping against the target database's schema.",
)
def dry_run(
    config: str | None,
    sample: int,
    seed: int,
    no_merges: bool,
    as_json: bool,
    skip_target_check: bool,
) -> None:
    """Apply the mapping to a sample of legacy rows: mapped rows, rejects, merges. Writes nothing."""
    from crossfade.mapping.dryrun import run_dry_run

    report = run_dry_run(
        _settings(config),
        sample=sample,
        seed=seed,
        merges=not no_merges,
        check_target=not skip_target_check,
    )
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        from crossfade.mapping.views import print_dry_run

        print_dry_run(report)


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@config_option
def config_show(config: str | None) -> None:
    """Print the validated configuration as JSON, secrets redacted."""
    click.echo(json.dumps(public_view(_settings(config)), indent=2))


@cli.group()
def dlq() -> None:
    """Dead letters: records sync could not apply, with the rule that failed."""


@dlq.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--examples", type=int, default=5, show_default=True, help="Example keys shown per rule."
)
def dlq_list(config: str | None, as_json: bool, examples: int) -> None:
    """Open dead letters grouped by rule, filtered and deferred rows, and the accounting of every
    mapped table (source rows = mapped + dead-lettered + filtered + deferred). Exit 1 when there
    are open dead letters or an account does not close."""
    from crossfade.sync.dlq import list_dead_letters

    rep = list_dead_letters(_settings(config), examples=examples)
    if as_json:
        click.echo(json.dumps(rep.as_dict(), indent=2, default=str))
    else:
        if not rep.groups:
            click.echo("no open dead letters")
        else:
            click.echo(
                f"{rep.total} open dead letter(s), {rep.counts.unacknowledged} not acknowledged "
                "(crossfade dlq ack)"
            )
        for g in rep.groups:
            click.echo(f"{g.records:>8}  {g.rule}  ({g.table}; last {g.last_at})")
            for ex in g.examples:
                where = (
                    f" [{ex.get('topic')}[{ex.get('partition')}]@{ex.get('offset')}]"
                    if ex.get("topic")
                    else ""
                )
                click.echo(f"            key {ex.get('key')}{where}: {ex.get('reason')}")
        for name, n in rep.filtered.items():
            click.echo(f"{n:>8}  filtered by {name}")
        if rep.deferred:
            click.echo(f"{rep.deferred:>8}  deferred (waiting for a parent row)")
        if rep.held:
            click.echo(
                f"{rep.held:>8}  held back behind an undecodable change of their key "
                "(crossfade dlq replay, --drop-undecodable to give it up)"
            )
        for a in rep.accounting:
            sign = "=" if a.closes else "!="
            click.echo(
                f"{a.table}: {a.source_rows} source rows {sign} {a.mapped} mapped + {a.dead_lettered} dead-lettered "
                f"+ {a.filtered} filtered + {a.deferred} deferred"
                + (f" + {a.parent_left} out with their parent" if a.parent_left else "")
            )
    sys.exit(0 if rep.total == 0 and rep.held == 0 and all(a.closes for a in rep.accounting) else 1)


@dlq.command("replay")
@config_option
@click.option("--rule", help="Only dead letters of this rule.")
@click.option("--table", help="Only dead letters of this source table.")
@click.option("--dry-run", is_flag=True, help="Show what would apply; write nothing.")
@click.option(
    "--drop-undecodable",
    is_flag=True,
    help="Give up records that still cannot be decoded (their change is lost) so the later changes "
    "of their keys, held back behind them, apply.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dlq_replay(
    config: str | None,
    rule: str | None,
    table: str | None,
    dry_run: bool,
    drop_undecodable: bool,
    as_json: bool,
) -> None:
    """Re-run open dead letters through the current mapping (after fixing the rule or the data)
    and apply those that pass, with the same source-position guards as sync. Exit 1 when some
    still fail."""
    from crossfade.sync.replay import replay

    rep = replay(
        _settings(config),
        rule=rule,
        table=table,
        dry_run=dry_run,
        drop_undecodable=drop_undecodable,
    )
    if as_json:
        click.echo(json.dumps(rep.as_dict(), indent=2))
    else:
        verb = "would apply" if dry_run else "applied"
        click.echo(
            f"{rep.selected} dead letter(s) re-run: {verb} {rep.applied}, {rep.still_failing} still failing"
            + (
                f", {rep.superseded} superseded by a newer change of their key"
                if rep.superseded
                else ""
            )
            + (f", {rep.dropped} undecodable dropped" if rep.dropped else "")
            + (f", {rep.released} held change(s) released" if rep.released else "")
        )
        for r, n in sorted(rep.by_rule.items()):
            click.echo(f"{n:>8}  {r}")
        if dry_run:  # per record: the rule `dlq list` shows, and what a replay would make of it
            for rec in rep.records[:50]:
                now = rec["rule"] if rec["outcome"] == "dead_letter" else rec["outcome"]
                same = " (unchanged)" if now == rec["was"] else ""
                click.echo(f"  {rec['table']} {rec['key']}: {rec['was']} -> {now}{same}")
            if len(rep.records) > 50:
                click.echo(f"  ... {len(rep.records) - 50} more (--json lists them all)")
    sys.exit(0 if rep.still_failing == 0 else 1)


@cli.group()
def dedup() -> None:
    """Deduplication: why legacy records were merged into one golden record."""


@dedup.command("explain")
@config_option
@click.argument("key")
@click.option(
    "--table", help="The deduplicated target table (schema.table), if the key is ambiguous."
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dedup_explain(config: str | None, key: str, table: str | None, as_json: bool) -> None:
    """Show the golden record KEY (a legacy key: its mapped key value, or a JSON array) belongs
    to, the members of its group, and the rule and evidence of each merge. Exit 1 when the key
    is not known."""
    from crossfade.db import connect
    from crossfade.sync.sinks.dedup import explain

    s = _settings(config)
    with connect(s.target, "target", autocommit=True) as conn:
        found = explain(conn, s.sync.bookkeeping_schema, table, key)
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
    for f in [] if as_json else found:
        if not f["merged"]:
            click.echo(f"{f['table']} {f['key']}: not merged (its own golden record)")
            continue
        click.echo(
            f"{f['table']} {f['key']}: merged into the golden record {f['survivor']} with "
            f"{len(f['members']) - 1} other record(s)"
        )
        for m in f["members"]:
            tag = "survivor" if m["key"] == f["survivor"] else f"merged by rule {m['rule']}"
            click.echo(f"  {m['key']}  ({tag})  {json.dumps(m['row'], default=str)}")
        for e in f["evidence"]:
            click.echo(f"  {e['a']} ~ {e['b']}: {e['explanation']}")
    if not found:
        click.echo(
            f"key {key} is not in the crosswalk (not a deduplicated record, or not synced yet)",
            err=True,
        )
    sys.exit(0 if found else 1)


# verify, checkpoint, rewind, cutover, dlq ack: a group of the same name defined here gets the
# subcommands added instead of being replaced
for _command in [
    *cli_connector.COMMANDS,
    *cli_control.COMMANDS,
    *cli_cutover.COMMANDS,
    *cli_schema.COMMANDS,
    *cli_source.COMMANDS,
]:
    _have = cli.commands.get(_command.name or "")
    if isinstance(_have, click.Group) and isinstance(_command, click.Group):
        for _sub in _command.commands.values():
            _have.add_command(_sub)
    else:
        cli.add_command(_command)
_accept_global_options(cli)


def main(argv: list[str] | None = None) -> Any:
    try:
        return cli.main(args=argv, prog_name="crossfade", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("crossfade: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("crossfade: interrupted", err=True)
        sys.exit(130)
    except CrossfadeError as exc:
        if _State.verbose:
            click.echo(redact(traceback.format_exc()), err=True, nl=False)
        click.echo(f"crossfade: error: {redact(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, trace on --verbose
        if _State.verbose:
            click.echo(redact(traceback.format_exc()), err=True, nl=False)
        msg = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        click.echo(
            f"crossfade: unexpected error: {type(exc).__name__}: {msg} (run with --verbose for the trace)",
            err=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
