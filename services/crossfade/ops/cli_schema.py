"""CLI commands for issue 20's tables and sequences: ``target-schema`` and ``fallback sequences``
(attached to the ``fallback`` group of :mod:`crossfade.ops.cli_cutover`)."""

from __future__ import annotations

import json
import sys

import click

from crossfade.ops.cli_common import config_option, load_config
from crossfade.ops.cli_cutover import fallback


@click.command("target-schema")
@config_option
@click.option(
    "--apply",
    "do_apply",
    is_flag=True,
    help="Create the indexes and UNIQUE/EXCLUDE constraints the tables crossfade created lack "
    "(they lock each table while built; sync waits). Foreign keys are left to the cutover.",
)
@click.option("--json", "as_json", is_flag=True)
def target_schema(config: str | None, do_apply: bool, as_json: bool) -> None:
    """Compare every identity-mapped target table with legacy's definition (defaults, sequences,
    identity, constraints, indexes, foreign keys). Exits 0 only when they agree."""
    from crossfade.cutover import schema
    from crossfade.db import connect

    settings = load_config(config)
    made: list[str] = []
    with connect(settings.source, "source") as src, connect(settings.target, "target") as tgt:
        if do_apply:
            made = schema.create_missing(settings, src, tgt, foreign_keys=False)
        report = schema.compare(settings, src, tgt)
    ok, detail = schema.summary(report)
    if as_json:
        out = {"ok": ok, "created": made, "tables": [t.as_dict() for t in report]}
        click.echo(json.dumps(out, indent=2))
    else:
        for line in made:
            click.echo(f"created {line}")
        click.echo(("ok: " if ok else "DIFFERS: ") + detail)
    sys.exit(0 if ok else 1)


@fallback.command("sequences")
@config_option
@click.option("--dry-run", is_flag=True, help="Show what would be set; change nothing.")
@click.option("--json", "as_json", is_flag=True)
def fallback_sequences(config: str | None, dry_run: bool, as_json: bool) -> None:
    """Before legacy takes writes again: move legacy's sequences past every key the new system
    created (largest value + cutover.sequence_gap), each move audited. Run it after
    `crossfade fallback fence`, before the application writes to legacy."""
    from crossfade.cutover.sequences import describe
    from crossfade.cutover.sequences import fallback as move_back

    moves = move_back(load_config(config), dry_run=dry_run)
    if as_json:
        click.echo(json.dumps({"dry_run": dry_run, "sequences": [m.as_dict() for m in moves]}))
        return
    click.echo(describe(moves, dry_run).split(": ", 1)[0])
    for m in moves:
        click.echo(f"  {m.line()}")


COMMANDS = [target_schema]
