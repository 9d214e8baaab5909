"""CLI commands for the legacy database's beginning and end: preflight, prepare-source,
decommission.

Registered on the ``crossfade`` group by :mod:`crossfade.ops.cli`. Exit codes as everywhere (3:
preflight found something missing; 1: decommission refused or failed).
"""

from __future__ import annotations

import json
import sys

import click

from crossfade.ops.cli_common import config_option
from crossfade.ops.cli_common import load_config as _settings


@click.command()
@config_option
@click.option(
    "--wal-sample",
    type=click.FloatRange(0, 60),
    default=2.0,
    show_default=True,
    help="Seconds between two readings of the legacy WAL position (0: pg_stat_wal only).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def preflight(config: str | None, wal_sample: float, as_json: bool) -> None:
    """Check the legacy database as capture will, writing nothing: wal_level, tables and primary
    keys, every privilege and object capture needs (each missing one with the SQL that fixes it),
    and the WAL headroom (how long capture can stop before the slot fills the disk). Exit 3 when
    something is missing."""
    from crossfade.capture.preflight import check_source
    from crossfade.capture.source_prep import wal_headroom
    from crossfade.db import connect

    settings = _settings(config)
    pks = check_source(settings, create=False)  # raises PreflightError (exit 3), each fix listed
    with connect(settings.source, "source") as conn:
        wal = wal_headroom(conn, settings.capture.slot_name, wal_sample)
    if as_json:
        click.echo(json.dumps({"ok": True, "tables": pks, "wal": wal.as_dict()}, indent=2))
        return
    click.echo(f"preflight: ok, {len(pks)} table(s) ready for capture")
    click.echo(f"WAL headroom: {wal.describe()}")


@click.command("prepare-source")
@config_option
@click.option("--print-sql", is_flag=True, help="Print the SQL a DBA runs (the default).")
@click.option(
    "--dsn",
    "privileged_dsn",
    envvar="CROSSFADE_PREPARE_DSN",
    help="Run it on the legacy database as this privileged role (a superuser, or the tables' "
    "owner with CREATEROLE); prefer CROSSFADE_PREPARE_DSN: arguments show in ps.",
)
@click.option("--role", help="The capture role (default: the user of source.dsn).")
def prepare_source(
    config: str | None, print_sql: bool, privileged_dsn: str | None, role: str | None
) -> None:
    """The least-privilege setup of the legacy database for capture: a role with LOGIN
    REPLICATION, USAGE and SELECT on the captured tables, the fence and signal tables it writes,
    REPLICA IDENTITY FULL where a table has no primary key, and the publication. Idempotent; no
    password is printed (a role it creates gets the password of source.dsn)."""
    from pydantic import ValidationError

    from crossfade.capture.preflight import check_source
    from crossfade.capture.source_prep import (
        capture_role,
        dedupe_statements,
        prepare_sql,
        run_prepare,
    )
    from crossfade.config import DatabaseConfig, dsn_secrets, redact_dsn
    from crossfade.db import connect
    from crossfade.errors import ConfigError

    settings = _settings(config)
    role, database = capture_role(settings, role)
    statements = dedupe_statements(prepare_sql(settings, role, database))
    if privileged_dsn is None or print_sql:
        click.echo(f"-- crossfade prepare-source: run as a superuser on database {database}")
        click.echo("-- (or as the tables' owner with CREATEROLE); it is idempotent")
        for stmt in statements:
            click.echo(stmt)
        click.echo(
            f"-- then give {role} its password if it has none (psql: \\password); "
            "crossfade never prints one"
        )
    if privileged_dsn is None:
        return
    try:
        db = DatabaseConfig.model_validate({"dsn": privileged_dsn})  # checked like source.dsn
    except ValidationError:
        raise ConfigError(
            "--dsn is not a libpq connection string or URL (not shown: it may hold a password)",
            "e.g. postgresql://dba@legacy-host:5432/crm",
        ) from None
    password = next(iter(dsn_secrets(settings.source.conninfo)), None)
    with connect(db, "privileged legacy") as conn:
        created = run_prepare(conn, statements, role, password)
    click.echo(
        f"ran {len(statements)} statement(s) on {redact_dsn(db.dsn)}"
        + (f"; created role {role}" if created else "")
    )
    check_source(settings, create=False)  # as the capture role now: raises if still short
    click.echo(f"preflight as {role}: ok")


@click.command()
@config_option
@click.option("--yes", is_flag=True, help="Do it without asking.")
@click.option("--keep-topics", is_flag=True, help="Leave crossfade's Kafka topics in place.")
@click.option(
    "--drop-bookkeeping",
    is_flag=True,
    help="Also drop the bookkeeping schema in the new database (audit log, crosswalk, ledger: "
    "the migration's record).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Go on while fallback runs, within the fallback window, or without a recorded flip.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def decommission(
    config: str | None,
    yes: bool,
    keep_topics: bool,
    drop_bookkeeping: bool,
    force: bool,
    as_json: bool,
) -> None:
    """Let the legacy database go: drop crossfade's replication slots and publications on both
    sides, its fence and signal tables and the reverse sync's schema in legacy, its columns in the
    new database's tables, its replication origins and (unless --keep-topics) its Kafka topics.
    Refused while fallback runs or within cutover.fallback_window_s of the flip (--force).
    Idempotent: a second run finds nothing to remove and says so."""
    from crossfade.cutover.decommission import execute, plan

    settings = _settings(config)
    p = plan(settings, keep_topics=keep_topics, drop_bookkeeping=drop_bookkeeping, force=force)
    if not p.actions:
        out = {"removed": [], "kept": p.kept, "nothing_to_remove": True}
        click.echo(
            json.dumps(out, indent=2)
            if as_json
            else "nothing to remove: crossfade left nothing behind"
            + (f" (kept: {'; '.join(p.kept)})" if p.kept else "")
        )
        return
    if not yes:
        click.echo("decommission would remove:", err=as_json)
        for a in p.actions:
            click.echo(f"  - {a.describe()}", err=as_json)
        for k in p.kept:
            click.echo(f"  kept: {k}", err=as_json)
        if not sys.stdin.isatty():
            click.echo("crossfade: error: not confirmed: pass --yes to decommission", err=True)
            sys.exit(1)
        click.confirm("remove these?", abort=True)
    report = execute(settings, p)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for line in report.removed:
            click.echo(f"removed {line}")
        for line in report.failed:
            click.echo(f"NOT removed {line}")
        for k in p.kept:
            click.echo(f"kept {k}")
        click.echo(report.audit_note)
    sys.exit(1 if report.failed else 0)


COMMANDS = [preflight, prepare_source, decommission]
