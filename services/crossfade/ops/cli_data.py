"""CLI commands about the data under the mapping: ``audit``, ``dry-run``, ``dlq list``/``replay``
and ``dedup explain``.

Registered on the ``crossfade`` group by :mod:`crossfade.ops.cli` (``dlq ack`` joins this ``dlq``
group from :mod:`crossfade.ops.cli_cutover`). Exit codes as everywhere.
"""

from __future__ import annotations

import json
import sys

import click

from crossfade.ops.cli_common import config_option
from crossfade.ops.cli_common import load_config as _settings


@click.command()
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


@click.command("dry-run")
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


@click.group()
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


@click.group()
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


COMMANDS = [audit, dry_run, dlq, dedup]
