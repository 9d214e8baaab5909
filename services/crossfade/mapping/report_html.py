"""The audit as one self-contained HTML page (inline CSS, no scripts, prints well).

Written for the people who decide, not only for engineers: the verdict and the numbers first,
then what is wrong in plain words with real examples, then the detail per table.
"""

from __future__ import annotations

import html
from typing import Any

from crossfade.mapping.audit import AuditReport, Finding, TableAudit, describe_finding

_CSS = """
:root{--ink:#1d2433;--muted:#5b6476;--line:#e3e7ee;--ok:#1f8a4c;--bad:#c0392b;--warn:#b7791f;--flt:#6b7a99;--bg:#f6f8fb}
*{box-sizing:border-box}body{font:15px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);margin:0;background:var(--bg)}
main{max-width:1120px;margin:0 auto;padding:32px 40px 64px;background:#fff;min-height:100vh}
h1{font-size:28px;margin:0 0 4px}h2{font-size:21px;margin:40px 0 12px;padding-bottom:6px;border-bottom:2px solid var(--line)}
h3{font-size:17px;margin:28px 0 8px}h4{font-size:14px;margin:18px 0 6px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.sub{color:var(--muted);margin:0 0 24px}.cards{display:grid;grid-template-columns:repeat(6,1fr);gap:12px;margin:20px 0}
.card{border:1px solid var(--line);border-radius:10px;padding:12px 14px}.card b{display:block;font-size:24px;line-height:1.2}
.card span{color:var(--muted);font-size:13px}.card.ok b{color:var(--ok)}.card.bad b{color:var(--bad)}.card.warn b{color:var(--warn)}.card.flt b{color:var(--flt)}
.verdict{padding:14px 18px;border-radius:10px;font-size:16px;margin:8px 0 4px}.verdict.good{background:#e8f6ee;border:1px solid #b7e2c8}
.verdict.mixed{background:#fdf3e1;border:1px solid #f1d49b}
ul.findings{padding-left:20px;margin:8px 0}ul.findings li{margin:3px 0}
table{border-collapse:collapse;width:100%;margin:6px 0 14px;font-size:13.5px}th,td{text-align:left;padding:6px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#f0f3f8;font-weight:600;color:#394155}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.bar{display:flex;height:18px;border-radius:5px;overflow:hidden;margin:6px 0 4px;background:var(--line)}
.bar i{display:block}.bar .m{background:var(--ok)}.bar .r{background:var(--bad)}.bar .f{background:var(--flt)}
.legend{font-size:13px;color:var(--muted)}.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin:0 4px 0 12px}
.filled{white-space:nowrap}.meter{display:inline-block;width:90px;height:8px;background:var(--line);border-radius:4px;vertical-align:middle;margin-right:6px;overflow:hidden}
.meter i{display:block;height:100%;background:var(--ok)}.meter.low i{background:var(--bad)}.meter.mid i{background:var(--warn)}
.pill{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;background:#eef1f6;color:#394155;white-space:nowrap}
.pill.reject{background:#fbe4e1;color:var(--bad)}.pill.warn{background:#fdf0d5;color:var(--warn)}.pill.filter{background:#e8ecf4;color:var(--flt)}
.group{border:1px solid var(--line);border-radius:10px;padding:10px 14px;margin:10px 0;break-inside:avoid;overflow-x:auto}
.group p{margin:4px 0;color:var(--muted);font-size:13px}tr.golden td{background:#eef8f1;font-weight:600}
.muted{color:var(--muted)}footer{margin-top:40px;color:var(--muted);font-size:12px}
@media print{body{background:#fff}main{padding:0}.group,table{break-inside:avoid}}
"""


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v))


def _n(v: int) -> str:
    return f"{v:,}"


def _pct(a: int, b: int) -> str:
    return f"{100 * a / b:.1f}%" if b else "–"


def _val(v: Any) -> str:
    if v is None:
        return '<span class="muted">(empty)</span>'
    s = str(v)
    if not s.strip():
        return '<span class="muted">(blank)</span>'
    return f'<span class="mono">{_e(s if len(s) <= 60 else s[:57] + "…")}</span>'


def _meter(frac: float | None) -> str:
    if frac is None:
        return "–"
    cls = "low" if frac < 0.8 else "mid" if frac < 0.95 else ""
    return (
        f'<span class="meter {cls}"><i style="width:{frac * 100:.1f}%"></i></span>{frac * 100:.1f}%'
    )


def _cards(s: dict[str, Any]) -> str:
    cards = [
        ("", _n(s["rows"]), f"legacy rows in {s['tables']} tables"),
        ("ok", _n(s["mapped"]), f"would migrate ({_pct(s['mapped'], s['rows'])})"),
        ("bad", _n(s["rejected"]), "would be rejected"),
        ("flt", _n(s["filtered"]), "filtered out (listed)"),
        (
            "warn",
            _n(s["duplicate_groups"]),
            f"duplicate groups ({_n(s['duplicate_records'])} records)",
        ),
        ("bad" if s["orphans"] else "ok", _n(s["orphans"]), "orphaned records"),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card {c}"><b>{v}</b><span>{_e(t)}</span></div>' for c, v, t in cards
        )
        + "</div>"
    )


def _bar(t: TableAudit) -> str:
    if not t.rows:
        return '<p class="muted">The table is empty.</p>'
    parts = [("m", t.mapped), ("r", t.rejected), ("f", t.filtered)]
    bar = "".join(
        f'<i class="{c}" style="width:{100 * n / t.rows:.3f}%"></i>' for c, n in parts if n
    )
    legend = (
        f'<i style="background:var(--ok)"></i>migrate {_n(t.mapped)}'
        f'<i style="background:var(--bad)"></i>rejected {_n(t.rejected)}'
        f'<i style="background:var(--flt)"></i>filtered {_n(t.filtered)}'
    )
    closes = (
        "accounting closes"
        if t.rows == t.mapped + t.rejected + t.filtered
        else "ACCOUNTING DOES NOT CLOSE"
    )
    return f'<div class="bar">{bar}</div><div class="legend">{legend} &nbsp;·&nbsp; {closes}: {_n(t.rows)} = {_n(t.mapped)} + {_n(t.rejected)} + {_n(t.filtered)}</div>'


def _findings_table(findings: list[Finding], rows: int) -> str:
    if not findings:
        return '<p class="muted">No rule failed.</p>'
    out = [
        '<table><tr><th>problem</th><th>rule</th><th class="num">rows</th><th class="num">share</th><th>examples (legacy key: value — why)</th></tr>'
    ]
    for f in findings:
        ex = "<br>".join(
            f'<span class="mono">{_e(x["key"])}</span>: {_val(x["value"])} — <span class="muted">{_e(x["message"])}</span>'
            for x in f.examples[:3]
        )
        pill = "warn" if f.severity == "warn" else "reject"
        out.append(
            f'<tr><td>{_e(describe_finding(f))}</td><td><span class="pill {pill}">{_e(f.rule)}</span></td>'
            f'<td class="num">{_n(f.count)}</td><td class="num">{_pct(f.count, rows)}</td><td>{ex}</td></tr>'
        )
    out.append("</table>")
    return "".join(out)


def _filters(t: TableAudit) -> str:
    if not t.filters:
        return ""
    out = [
        "<h4>Filtered out (not migrated, every row listed in the JSON report)</h4>",
        '<table><tr><th>filter</th><th class="num">rows</th><th>examples</th></tr>',
    ]
    for f in t.filters.values():
        ex = "<br>".join(
            f'<span class="mono">{_e(x["key"])}</span>: <span class="muted">{_e(x["message"])}</span>'
            for x in f.examples[:3]
        )
        out.append(
            f'<tr><td><span class="pill filter">{_e(f.rule.rsplit(":", 1)[-1])}</span></td><td class="num">{_n(f.count)}</td><td>{ex}</td></tr>'
        )
    out.append("</table>")
    return "".join(out)


def _columns(t: TableAudit) -> str:
    d = t.as_dict()
    out = [
        "<h4>Legacy columns: completeness</h4>",
        '<table><tr><th>column</th><th>type</th><th>filled</th><th class="num">empty</th><th class="num">distinct</th><th>most common formats</th></tr>',
    ]
    for c in d["columns"]:
        fmts = ""
        if "formats" in c:
            fmts = " ".join(
                f'<span class="pill"><span class="mono">{_e(f["format"])}</span> × {_n(f["count"])}</span>'
                for f in c["formats"][:5]
            )
            if c["format_count"] > 5:
                fmts += f' <span class="muted">+{c["format_count"] - 5} more</span>'
        distinct = _n(c["distinct"]) if c["distinct"] is not None else "10,000+"
        out.append(
            f'<tr><td class="mono">{_e(c["name"])}</td><td class="muted">{_e(c["type"])}</td><td class="filled">{_meter(c["completeness"])}</td>'
            f'<td class="num">{_n(c["nulls"] + c["blanks"])}</td><td class="num">{distinct}</td><td>{fmts}</td></tr>'
        )
    out.append("</table>")
    for target, cols in d["target_columns"].items():
        out.append(
            f"<h4>After mapping into {_e(target)}: completeness of the rows that migrate</h4><table><tr><th>column</th><th>filled</th></tr>"
        )
        for c in cols:
            out.append(
                f'<tr><td class="mono">{_e(c["name"])}</td><td class="filled">{_meter(c["completeness"])}</td></tr>'
            )
        out.append("</table>")
    return "".join(out)


def _table_section(t: TableAudit) -> str:
    findings = sorted(t.rules.values(), key=lambda f: (-f.count, f.rule))
    targets = ", ".join(t.targets)
    return (
        f'<h3>{_e(t.source)} <span class="muted">→ {_e(targets)}</span></h3>'
        + _bar(t)
        + "<h4>Rules that failed</h4>"
        + _findings_table(findings, t.rows)
        + _filters(t)
        + _columns(t)
    )


def _duplicates(report: AuditReport, limit: int = 12) -> str:
    out = []
    for target, groups in report.duplicates.items():
        n = sum(len(g.members) for g in groups)
        out.append(f"<h3>{_e(target)}: {_n(len(groups))} groups, {_n(n)} records</h3>")
        if not groups:
            out.append('<p class="muted">No duplicates found by the match rules.</p>')
        for g in groups[:limit]:
            cols = list(dict.fromkeys(c for m in g.members for c in m.values))
            head = "".join(f"<th>{_e(c)}</th>" for c in cols)
            rows = []
            for m in g.members:
                mark = " (survivor)" if m is g.survivor else ""
                rows.append(
                    f'<tr><td class="mono">{_e(m.source_table)} {_e(m.source_key if m.source_key is None or len(m.source_key) > 1 else m.source_key[0])}{mark}</td>'
                    + "".join(f"<td>{_val(m.values.get(c))}</td>" for c in cols)
                    + "</tr>"
                )
            rows.append(
                '<tr class="golden"><td>golden record</td>'
                + "".join(f"<td>{_val(g.golden.get(c))}</td>" for c in cols)
                + "</tr>"
            )
            why = "; ".join(sorted({e.explain() for e in g.evidence}))
            out.append(
                f'<div class="group"><p>merged because {_e(why)}</p><table><tr><th>record</th>{head}</tr>{"".join(rows)}</table></div>'
            )
        if len(groups) > limit:
            out.append(
                f'<p class="muted">… and {_n(len(groups) - limit)} more groups (all of them are in the JSON report).</p>'
            )
    for target, blocks in report.oversized_blocks.items():
        for bk, size in blocks.items():
            out.append(
                f'<p class="muted">{_e(target)}: {_n(size)} records share <span class="mono">{_e(bk)}</span>; '
                "too many to compare one by one — probably a placeholder value, check it.</p>"
            )
    return "".join(out) or '<p class="muted">No deduplication is configured.</p>'


def render(report: AuditReport) -> str:
    """The whole page."""
    s = report.summary()
    clean = s["rejected"] == 0 and s["orphans"] == 0
    verdict = (
        ("good", "Every legacy row maps cleanly.")
        if clean
        else (
            "mixed",
            f"{_pct(s['mapped'], s['rows'])} of the legacy rows would migrate as they are; "
            f"{_n(s['rejected'])} need fixing first (listed below with the rule each one breaks).",
        )
    )
    findings = report.findings()
    items = "".join(f"<li>{_e(f)}</li>" for f in findings[:30]) or "<li>Nothing to report.</li>"
    warnings = "".join(f"<li>{_e(w)}</li>" for w in report.warnings)
    body = [
        "<h1>Legacy data audit</h1>",
        f'<p class="sub">Generated {_e(report.generated_at)} from <span class="mono">{_e(report.source)}</span>, '
        "under the migration mapping. Nothing was written to the database.</p>",
        f'<div class="verdict {verdict[0]}">{_e(verdict[1])}</div>',
        _cards(s),
        "<h2>What needs attention</h2>",
        f'<ul class="findings">{items}</ul>',
    ]
    if warnings:
        body.append(f'<h4>Mapping warnings</h4><ul class="findings">{warnings}</ul>')
    body.append("<h2>Tables</h2>")
    body.extend(_table_section(t) for t in report.tables)
    body.append("<h2>Duplicates</h2>")
    body.append(
        '<p class="muted">Records the match rules consider the same person or account. They would be merged '
        "into one golden record (highlighted), which keeps the survivor's key; every legacy key keeps resolving to it.</p>"
    )
    body.append(_duplicates(report))
    body.append(
        "<footer>crossfade audit · rows are read once in one consistent, read-only snapshot of the legacy database.</footer>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f"<title>Legacy data audit</title><style>{_CSS}</style></head><body><main>{''.join(body)}</main></body></html>"
    )
