"""Output of ``crossfade audit`` and ``crossfade dry-run`` for people: tables that keep names
whole on a terminal and are plain aligned text when piped (:mod:`crossfade.textout`)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from crossfade.mapping.audit import AuditReport, describe_finding
from crossfade.mapping.dryrun import DryRunReport
from crossfade.textout import Grid, console


def _short(v: Any, n: int = 40) -> str:
    """A sampled value, shortened for the eye (keys and names are never shortened)."""
    s = "∅" if v is None else str(v)
    return s if len(s) <= n else s[: n - 1] + "…"


def print_audit(report: AuditReport, con: Console | None = None) -> None:
    con = con or console()
    s = report.summary()
    con.print(
        f"[bold]Legacy data audit[/bold] of {report.source} ({report.generated_at}); nothing was written."
    )
    t = Grid(
        ["table", *((c, "right") for c in ("rows", "mapped", "rejected", "filtered", "closes"))],
        title="accounting per source table (rows = mapped + rejected + filtered)",
    )
    for a in report.tables:
        closes = a.rows == a.mapped + a.rejected + a.filtered
        t.add_row(
            a.source,
            str(a.rows),
            str(a.mapped),
            str(a.rejected),
            str(a.filtered),
            "yes" if closes else "[red]NO[/red]",
        )
    t.print(con)
    for a in report.tables:
        if not a.rules and not a.filters:
            continue
        r = Grid(
            ["problem", "rule", ("rows", "right"), "example"],
            title=f"{a.source}: rules that failed, filters",
        )
        for f in sorted(a.rules.values(), key=lambda f: -f.count):
            ex = f.examples[0] if f.examples else {}
            r.add_row(
                describe_finding(f),
                f.rule,
                str(f.count),
                f"{ex.get('key')}: {_short(ex.get('value'))}",
            )
        for f in a.filters.values():
            ex = f.examples[0] if f.examples else {}
            r.add_row(
                "filtered (not migrated)",
                f.rule,
                str(f.count),
                f"{ex.get('key')}: {_short(ex.get('message'), 60)}",
            )
        r.print(con)
        fmt = [p for p in a.columns.values() if p.formats]
        if fmt:
            ft = Grid(
                ["column", "formats (most common first)"],
                title=f"{a.source}: value formats of columns that are parsed",
            )
            for p in fmt:
                assert p.formats is not None
                ft.add_row(p.name, ", ".join(f"{f} ×{n}" for f, n in p.formats.most_common(6)))
            ft.print(con)
    for target, groups in report.duplicates.items():
        con.print(
            f"[bold]{target}[/bold]: {len(groups)} duplicate groups, {sum(len(g.members) for g in groups)} records"
        )
        for g in groups[:10]:
            keys = ", ".join(str(m.key[0] if len(m.key) == 1 else m.key) for m in g.members)
            why = "; ".join(sorted({e.explain() for e in g.evidence}))
            con.print(
                f"  {keys} -> survivor {g.survivor.key[0] if len(g.survivor.key) == 1 else g.survivor.key}: {why}"
            )
        if len(groups) > 10:
            con.print(f"  ... {len(groups) - 10} more (--json or --html for all)")
    con.print(
        f"{s['rows']} rows: {s['mapped']} would migrate, {s['rejected']} rejected, {s['filtered']} filtered; "
        f"{s['duplicate_groups']} duplicate groups; {s['orphans']} orphans."
    )
    for w in report.warnings:
        con.print(f"[yellow]warning[/yellow]: {w}")


def print_dry_run(report: DryRunReport, con: Console | None = None) -> None:
    con = con or console()
    for ts in report.tables:
        d = ts.as_dict()
        con.print(
            f"[bold]{ts.source}[/bold]: {d['sampled']} sampled rows -> {len(d['mapped'])} mapped, "
            f"{len(d['rejected'])} rejected, {len(d['filtered'])} filtered"
        )
        by_target: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
        for m in d["mapped"]:
            for t in m["targets"]:
                by_target.setdefault(t["table"], []).append((m["key"], t["values"]))
        for target, rows in by_target.items():
            cols = list(dict.fromkeys(c for _, v in rows for c in v))
            t = Grid(["source key", *cols], title=f"{ts.source} -> {target} (mapped)")
            for key, v in rows:
                t.add_row(str(key), *(_short(v.get(c)) for c in cols))
            t.print(con)
        if d["rejected"]:
            t = Grid(
                ["source key", "rule", "value", "why"],
                title=f"{ts.source}: rejected (would go to the dead-letter topic)",
            )
            for r in d["rejected"]:
                for f in r["failures"]:
                    t.add_row(str(r["key"]), f["rule"], _short(f["value"]), f["message"])
            t.print(con)
        if d["filtered"]:
            t = Grid(
                ["source key", "filter", "why"],
                title=f"{ts.source}: filtered (counted and listed, not migrated)",
            )
            for r in d["filtered"]:
                t.add_row(str(r["key"]), r["filter"], r["reason"])
            t.print(con)
    for target, groups in report.merges.items():
        con.print(f"[bold]{target}[/bold]: {len(groups)} merge groups involve sampled rows")
        for g in groups:
            cols = list(dict.fromkeys(c for m in g.members for c in m.values))
            t = Grid(["record", *cols], title="; ".join(sorted({e.explain() for e in g.evidence})))
            for m in g.members:
                label = f"{m.source_table} {m.key[0] if len(m.key) == 1 else m.key}" + (
                    " (survivor)" if m is g.survivor else ""
                )
                t.add_row(label, *(_short(m.values.get(c)) for c in cols))
            t.add_row("[bold]golden[/bold]", *(_short(g.golden.get(c)) for c in cols))
            t.print(con)
