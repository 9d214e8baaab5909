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
from typing import TYPE_CHECKING, Any

import click

from crossfade.config import Settings, public_view
from crossfade.errors import CrossfadeError
from crossfade.ops import (
    cli_connector,
    cli_control,
    cli_cutover,
    cli_data,
    cli_schema,
    cli_source,
)
from crossfade.ops.cli_common import add_capture, config_option
from crossfade.ops.cli_common import load_config as _settings
from crossfade.ops.logs import setup_logging
from crossfade.redact import redact

if TYPE_CHECKING:
    from crossfade.ops.children import SyncChildren
    from crossfade.ops.runner import Runner
    from crossfade.sync.worker import SyncWorker

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


def _add_sync_workers(runner: Runner, settings: Settings) -> list[SyncWorker]:
    """``sync.workers`` sync workers as services of ``runner``: threads ``sync`` (one) or
    ``sync-1``, ``sync-2``... (their log lines carry that name), each with its own consumer,
    target session and stall watch; one readiness for them all (:func:`probes.watch_sync`)."""
    from crossfade import metrics
    from crossfade.ops import probes
    from crossfade.ops.children import warn_beyond_partitions
    from crossfade.sync.worker import SyncWorker

    n = settings.sync.workers
    warn_beyond_partitions("sync.workers", "worker(s)", n, settings.kafka.partitions)
    workers = [SyncWorker(settings) for _ in range(n)]
    for i, w in enumerate(workers, 1):
        name = "sync" if n == 1 else f"sync-{i}"
        runner.add(name, metrics.counting_errors("sync", w.run), w.stop.set)
    probes.watch_sync(workers, settings)
    return workers


GEN0_THRESHOLD = 200_000
"""Net allocations of container objects between two young collections of a long-running command
(:func:`tune_gc`). A sync batch of 5,000 mapped rows holds more than 50,000 of them at its peak
(events, rows, mapped outputs, ledger and dedup rows; bench.mapped_batch_cpu on the demo CRM),
all freed by reference counting at its end: at 50,000 every batch ran one collection over what
it held (~22 ms, 3% of sync's CPU in that bench), at 100,000 one batch in seven, at 200,000
none."""


def tune_gc() -> None:
    """The garbage collector of a long-running command (sync, capture, run).

    Sync allocates several objects per event (decoded Avro, events, rows) and none of them form
    cycles: with the default gen0 threshold (700) the collector ran every few dozen events and
    walked all that start-up left behind. Start-up's objects are frozen out of collections, and
    gen0 waits for :data:`GEN0_THRESHOLD` allocations (~10% of sync's CPU at 50,000, measured;
    3% more at 200,000). Capture likewise (each record's parsed payload is a few dicts): its
    collections walked JPype's and Debezium's start-up too, which capture freezes at its first
    batch (docs/benchmarks.md, "capture's CPU per event by thread"). ``crossfade run`` (both in
    one process) alike. The benches call it too, to measure what the services run."""
    gc.freeze()
    gc.set_threshold(max(gc.get_threshold()[0], GEN0_THRESHOLD), *gc.get_threshold()[1:])


def _sync_processes(
    services: list[str], settings: Settings, config: str | None
) -> tuple[Settings, SyncChildren | None]:
    """Sync in child processes (``sync.processes``, :mod:`crossfade.ops.children`): the
    children of this process, or None (sync, if any, runs in it). In a child: its settings."""
    from crossfade.ops import children as kids
    from crossfade.ops.logs import set_process_name

    name = kids.child_name()
    if name is not None:
        set_process_name(name)
        return kids.become_child(settings), None
    n = kids.children_to_start(settings, "capture" in services) if "sync" in services else 0
    if not n:
        return settings, None
    kids.warn_processes(settings, n)
    return settings, kids.SyncChildren(
        n, kids.child_argv(config, _State.verbose, _State.log_format)
    )


def _serve(services: list[str], settings: Settings, config: str | None = None) -> None:
    from crossfade.ops import probes
    from crossfade.ops.children import report_port
    from crossfade.ops.runner import Runner, exit_within

    # a stop is bounded where capture runs (add_capture); crossfade sync keeps its own: a child
    # is killed a minute after its SIGTERM (crossfade.ops.children)
    runner = Runner()
    settings, children = _sync_processes(services, settings, config)
    own = [s for s in services if s != "sync" or children is None]
    # /metrics (this process's components, and its sync children's), /healthz, /readyz when
    # ops.metrics_port is set
    server = probes.serve_ops(settings, own, children)
    if server is not None:
        report_port(server.port)  # a sync child tells its parent
    if "capture" in services:
        from crossfade.capture.service import CaptureService

        add_capture(runner, CaptureService(settings), settings)
    if children is not None:
        probes.watch_children(children, settings)
    workers = _add_sync_workers(runner, settings) if "sync" in own else []
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
    tune_gc()
    runner.install_signals()
    if children is not None:
        children.start(runner)  # from the main thread: PDEATHSIG follows the forking thread
    runner.start()
    try:
        runner.wait()
        if children is not None:
            children.check_stopped()
    finally:
        exit_within(f"crossfade {' '.join(services)}")
        if children is not None:
            children.close()
        if console is not None:
            console.stop()
        if any(w.left_in_group for w in workers):
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
    """Kafka -> new database (sync.processes above 1: that many child processes); run several
    to scale out (one consumer group)."""
    _serve(["sync"], _settings(config), config)


@cli.command()
@config_option
def run(config: str | None) -> None:
    """Capture, and sync in sync.processes child processes (one-node setups)."""
    _serve(["capture", "sync"], _settings(config), config)


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


@cli.group()
def config() -> None:
    """Inspect the configuration."""


@config.command("show")
@config_option
def config_show(config: str | None) -> None:
    """Print the validated configuration as JSON, secrets redacted."""
    click.echo(json.dumps(public_view(_settings(config)), indent=2))


# verify, checkpoint, rewind, cutover, dlq ack: a group of the same name defined here gets the
# subcommands added instead of being replaced
for _command in [
    *cli_data.COMMANDS,  # first: its dlq group takes `dlq ack` from cli_cutover
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


def _handed(line: str) -> bool:
    """Whether ``line``, the error this process ends with, went to the parent this sync child
    belongs to (crossfade.ops.children): the command's one line is then the parent's."""
    from crossfade.ops.children import report_error

    return report_error(line)


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
        if not _handed(msg := redact(str(exc))):
            click.echo(f"crossfade: error: {msg}", err=True)
        sys.exit(exc.exit_code)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, trace on --verbose
        if _State.verbose:
            click.echo(redact(traceback.format_exc()), err=True, nl=False)
        msg = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        line = f"{type(exc).__name__}: {msg} (run with --verbose for the trace)"
        if not _handed(f"unexpected error: {line}"):
            click.echo(f"crossfade: unexpected error: {line}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
