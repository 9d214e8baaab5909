// crossfade console: polls /api/state and redraws. Every value goes in through textContent (or
// SVG attributes); no HTML is ever built from data. Every figure shown in red carries its reason:
// `bad(node, why)` sets it as the tooltip and as a line under the figure.
"use strict";

const POLL_MS = 2000;
const SVG = "http://www.w3.org/2000/svg";
const $ = (sel) => document.querySelector(sel);
let last = null;
let lastOk = 0;
const previousRows = new Map();

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}
function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const c of children) e.append(c);
  return e;
}

// a figure in red (or amber, level "warn") with the reason on hover and, unless inline is false,
// under it (inline: true for the whole reason, or a short text whose detail is on hover)
function flag(node, level, why, inline = true) {
  node.classList.add(level);
  node.dataset.why = why;
  node.title = why;
  if (inline) node.append(el("span", { class: "why" }, inline === true ? why : inline));
  return node;
}
const bad = (node, why, inline) => flag(node, "bad", why, inline);
const warn = (node, why, inline) => flag(node, "warn", why, inline);

const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
function fmtRows(n, exact) { return n === null || n === undefined ? "–" : (exact ? "" : "≈ ") + fmtInt(n); }
function fmtSecs(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}
function fmtRate(r) {
  if (r === null || r === undefined) return "–";
  return r >= 100 ? Math.round(r).toLocaleString("en-US") : r.toFixed(1);
}
function fmtBytes(b) {
  if (b === null || b === undefined) return "–";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
}
function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const ago = (Date.now() - d.getTime()) / 1000;
  const when = d.toLocaleTimeString("en-GB");
  return ago > 0 && ago < 86400 ? `${when} (${fmtSecs(ago)} ago)` : d.toLocaleString("en-GB");
}
const fmtClock = (iso) => (iso ? new Date(iso).toLocaleTimeString("en-GB") : "–");
const fmtKey = (k) => (typeof k === "string" ? k : JSON.stringify(k));

function facts(node, pairs) {
  node.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), v instanceof Node ? el("dd", {}, v) : el("dd", {}, v)]));
}

// -- charts: hand-drawn SVG, last 15 minutes ----------------------------------------------------
const CHART_W = 130, CHART_H = 30;

function chart(lines, { now, windowS, unit, label, fmt = fmtRate, min0 = true }) {
  const pts = lines.flatMap((l) => l.points.filter((p) => p[1] !== null && p[1] !== undefined));
  const box = el("div", { class: "chart" });
  if (pts.length < 2) {
    box.append(el("span", { class: "empty" }, "collecting…"));
    box.title = `${label}: not enough samples yet (one every few seconds)`;
    return box;
  }
  // the span the samples cover, up to the window (a console started 2 minutes ago has 2)
  const first = Math.min(...pts.map((p) => p[0]));
  const span = Math.max(Math.min(windowS, now - first), 10);
  const t0 = now - span;
  let lo = Math.min(...pts.map((p) => p[1])), hi = Math.max(...pts.map((p) => p[1]));
  if (min0) lo = Math.min(lo, 0);
  if (hi === lo) hi = lo + 1;
  const x = (t) => ((Math.max(t, t0) - t0) / span) * (CHART_W - 2) + 1;
  const y = (v) => CHART_H - 2 - ((v - lo) / (hi - lo)) * (CHART_H - 4);
  const g = svg("svg", { width: CHART_W, height: CHART_H, viewBox: `0 0 ${CHART_W} ${CHART_H}`, role: "img" });
  g.append(svg("rect", { x: 0, y: 0, width: CHART_W, height: CHART_H, fill: "#f7f8fa", rx: 3 }));
  for (const l of lines) {
    let seg = [];
    const flush = () => {
      if (seg.length > 1) g.append(svg("polyline", { points: seg.join(" "), fill: "none", stroke: l.color, "stroke-width": 1.5, "stroke-linejoin": "round" }));
      else if (seg.length === 1) { const [cx, cy] = seg[0].split(","); g.append(svg("circle", { cx, cy, r: 1.5, fill: l.color })); }
      seg = [];
    };
    for (const [t, v] of l.points) {
      if (v === null || v === undefined) { flush(); continue; }
      seg.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    }
    flush();
  }
  const summary = lines.map((l) => {
    const vs = l.points.map((p) => p[1]).filter((v) => v !== null && v !== undefined);
    return `${l.name}: now ${fmt(vs[vs.length - 1])}${unit}, min ${fmt(Math.min(...vs))}${unit}, max ${fmt(Math.max(...vs))}${unit}`;
  }).join("; ");
  const spanText = span >= 90 ? `${Math.round(span / 60)} min` : `${Math.round(span)} s`;
  g.append(svg("title", {}, document.createTextNode(`${label}, last ${spanText} — ${summary}`)));
  box.append(g);
  box.title = `${label}, last ${spanText} — ${summary}`;
  return box;
}

// -- gates ---------------------------------------------------------------------------------------
const STATE_TEXT = { ok: "GREEN", failed: "RED", stale: "STALE", running: "RUNNING", unknown: "NO EVIDENCE" };
const EVIDENCE_LABELS = {
  fence: "fence", via: "run by", who: "who", partitions: "partitions", seconds: "took (s)",
  run: "verify run", ok: "passed", mismatched: "different rows", missing: "missing rows", extra: "extra rows",
  by: "run by", dead_letters: "open dead letters", unacknowledged: "not acknowledged", held: "held back",
  deferred: "deferred rows", filtered: "filtered rows", slot_active: "slot streaming",
};

function evidenceList(g) {
  const ev = g.evidence || {};
  const dl = el("dl", { class: "ev" });
  const add = (k, v) => { dl.append(el("dt", {}, k), el("dd", {}, v)); };
  for (const [k, v] of Object.entries(ev)) {
    if (k === "finished_at" || k === "tables" || k === "by_table") continue;
    if (k === "heartbeats" && Array.isArray(v)) {
      for (const h of v) {
        add(`${h.role} ${String(h.worker).slice(0, 12)}`,
          `${fmtSecs(h.age_s)} ago` + (h.role === "sync" ? `, ${(h.partitions || []).length} partition(s), lag ${fmtInt(h.lag)}` : ""));
      }
      continue;
    }
    if (k === "last_ack" && v) { add("last acknowledged", `${fmtInt(v.acknowledged)} by ${v.who}${v.note ? `: ${v.note}` : ""}`); continue; }
    if (v === null || v === undefined || typeof v === "object") continue;
    add(EVIDENCE_LABELS[k] || k.replaceAll("_", " "), typeof v === "boolean" ? (v ? "yes" : "no") : String(v));
  }
  if (ev.tables && Array.isArray(ev.tables)) add("tables compared", String(ev.tables.length));
  return dl.childElementCount ? dl : null;
}

function ageBar(g) {
  if (g.age_s === null || g.age_s === undefined || !g.fresh_s) return null;
  const frac = Math.min(g.age_s / g.fresh_s, 1);
  const s = svg("svg", { width: "100%", height: 4, viewBox: "0 0 100 4", preserveAspectRatio: "none", role: "img" });
  s.append(svg("rect", { x: 0, y: 0, width: 100, height: 4, fill: "#dde1e8", rx: 2 }));
  s.append(svg("rect", { x: 0, y: 0, width: (frac * 100).toFixed(1), height: 4, fill: frac >= 1 ? "#9a6700" : "#12805c", rx: 2 }));
  s.append(svg("title", {}, document.createTextNode(`evidence ${fmtSecs(g.age_s)} old of the ${fmtSecs(g.fresh_s)} it stays fresh`)));
  return s;
}

function renderGates(s) {
  const box = $("#gates");
  box.replaceChildren(...s.gates.map((g) => {
    const stateEl = el("span", { class: "state" }, STATE_TEXT[g.state] || g.state);
    const detail = el("div", { class: "detail" }, g.detail);
    if (g.state !== "ok") stateEl.title = detail.title = `${g.title}: ${g.detail}`;
    const age = g.evidence_at
      ? `evidence ${fmtTime(g.evidence_at)}${g.fresh_s ? `, fresh for ${fmtSecs(g.fresh_s)}` : ""}`
      : `read now (${fmtClock(g.evaluated_at)})`;
    const card = el("div", { class: "gate", "data-gate": g.gate, "data-state": g.state },
      el("div", { class: "head" }, el("span", { class: "dot" }), el("span", {}, g.title), stateEl),
      detail);
    const ev = evidenceList(g);
    if (ev) card.append(ev);
    const bar = ageBar(g);
    if (bar) card.append(bar);
    card.append(el("div", { class: "evidence" }, age));
    if (g.action) {
      const running = s.actions[g.action] && s.actions[g.action].state === "running";
      const b = el("button", { type: "button", id: `run-${g.action}` }, running ? `Running ${g.action}…` : `Run ${g.action}`);
      b.disabled = !s.allow_actions || running;
      b.title = s.allow_actions ? `Run ${g.action} now` : "read-only console: start it with --allow-actions";
      b.addEventListener("click", () => runAction(g.action, b));
      card.append(b);
    }
    return card;
  }));
  const red = s.gates.filter((g) => g.state !== "ok");
  const v = $("#verdict");
  const running = s.gates.some((g) => g.state === "running");
  const state = red.length === 0 ? "ok" : running ? "running" : "failed";
  v.className = `verdict ${state}`;
  v.dataset.state = state;
  v.textContent = red.length === 0 ? "GO: every gate is green"
    : red.length === 1 ? `NOT READY: ${red[0].title} — ${STATE_TEXT[red[0].state].toLowerCase()}`
    : `NOT READY: ${red.length} of ${s.gates.length} gates not green`;
  v.title = red.map((g) => `${g.title}: ${g.detail}`).join("\n");
  if (red.length) v.dataset.why = v.title; else delete v.dataset.why;
}

function forecastRow(label, secs) {
  return el("div", {}, el("span", {}, label), el("span", {}, secs === null || secs === undefined ? "not measured" : `${secs.toFixed(1)} s`));
}

function renderForecast(s) {
  const f = s.forecast;
  const box = $("#forecast");
  if (!f) { box.replaceChildren(el("p", { class: "empty" }, "not read yet")); return; }
  const big = el("div", { class: "big", id: "forecast-seconds", "data-source": f.source }, f.seconds === null ? "–" : fmtSecs(f.seconds));
  if (f.steps) {
    // the latest cutover run's own model, part by part (what `cutover --dry-run` printed)
    const parts = el("div", { class: "parts", id: "forecast-parts" },
      ...f.steps.map(([k, v]) => forecastRow(k, v)));
    const what = f.source === "dry_run" ? "the latest `cutover --dry-run`" : "the latest cutover run";
    const left = f.excludes && f.excludes.length ? ` Not in it: ${f.excludes.join(", ")}.` : "";
    const note = el("p", { class: "note" }, `Legacy writes are frozen from the freeze to the flip, as ${what} forecast it at ${fmtTime(f.at)}.${left} Run a dry run again after the data or the load changes; announce a margin above it.`);
    box.replaceChildren(big, parts, note);
    return;
  }
  const parts = el("div", { class: "parts" },
    forecastRow("fence (lag to zero)", f.fence_s),
    forecastRow(`verify${f.verify_run ? ` #${f.verify_run}` : ""}`, f.verify_s));
  const note = f.seconds === null
    ? el("p", { class: "note" }, "Needs a fence and a verify that covered every table (or a `cutover --dry-run`, which forecasts part by part): run them, then announce this figure.")
    : el("p", { class: "note" }, `No dry run yet: one fence and one verify, as last measured${f.fence_at ? ` (fence at ${fmtClock(f.fence_at)})` : ""}, without the freeze, the counts and the flip. Run \`cutover --dry-run\` for the figure to announce.`);
  box.replaceChildren(big, parts, note);
}

// -- tables --------------------------------------------------------------------------------------
function fenceGreen(s) { return s.gates.some((g) => g.gate === "fence" && g.state === "ok"); }

function namesCell(t) {
  const target = t.kind === "target";
  const box = el("div", { class: "names" });
  if (target) {
    box.append(el("span", { class: "new" }, t.table),
      el("span", { class: "kindtag" }, `new table, from ${(t.sources || []).join(", ")}`));
    return box;
  }
  box.append(el("span", { class: "legacy" }, t.table));
  const targets = t.new_tables || [t.table];
  box.append(el("span", { class: "new" }, `→ ${targets.join(", ")}`));
  if (t.kind === "source") box.append(el("span", { class: "kindtag" }, "mapped"));
  return box;
}

function diffCell(s, t, legacy) {
  const td = el("td", { class: "num", "data-col": "diff" });
  if (legacy === null || legacy === undefined || t.new_rows === null || t.new_rows === undefined) {
    td.textContent = "–";
    td.title = "a side could not be counted (table missing, or estimated above a million rows)";
    return td;
  }
  const diff = t.new_rows - legacy;
  if (diff === 0) { td.textContent = "equal"; td.classList.add("diff-ok"); return td; }
  td.textContent = (diff > 0 ? "+" : "") + fmtInt(diff);
  const side = t.kind === "source" ? "the accounting (mapped + dead-lettered + filtered + deferred)" : "the new table";
  if (fenceGreen(s)) {
    bad(td, `${fmtInt(Math.abs(diff))} ${diff < 0 ? "fewer" : "more"} in ${side} although the last fence proved nothing in flight: look at the latest verify and the dead letters`, "not in flight: see verify");
  } else {
    warn(td, `in flight: ${fmtInt(Math.abs(diff))} change(s) not applied yet while writes go on; only a fence proves nothing is left`, "in flight");
  }
  return td;
}

function renderTables(s) {
  // the counts the row_counts gate compares: a mapped source table's "new" side is its
  // accounting (mapped + dead-lettered + filtered + deferred), a target table's "legacy" side
  // the rows its sources should give (mapped - merged duplicates)
  const now = s.collected_at_epoch;
  const windowS = (s.history && s.history.window_s) || 900;
  const byTable = (s.dlq && s.dlq.by_table) || {};
  const body = $("#tables tbody");
  body.replaceChildren(...s.tables.map((t) => {
    const target = t.kind === "target";
    const legacy = target ? t.expected : t.legacy_rows;
    const key = `${t.table}:${legacy}:${t.new_rows}:${t.applied}`;
    const changed = previousRows.has(t.table) && previousRows.get(t.table) !== key;
    previousRows.set(t.table, key);
    const series = t.series || { legacy: [], new: [], rate: [], lag: [] };
    const legacyTd = el("td", { class: "num", "data-col": "legacy" }, target ? `expected ${fmtInt(legacy)}` : fmtRows(legacy, t.legacy_exact));
    if (target) legacyTd.title = `rows expected from ${(t.sources || []).join(", ")}: their mapped rows less ${fmtInt(t.merged)} merged duplicate(s)`;
    else if (!t.legacy_exact) legacyTd.title = "PostgreSQL's estimate (above a million rows the console does not count)";
    const newTd = el("td", { class: "num", "data-col": "new" }, fmtRows(t.new_rows, t.new_exact));
    if (t.kind === "source" && t.accounting) {
      const a = t.accounting;
      newTd.title = `accounted: ${fmtInt(a.mapped)} mapped + ${fmtInt(a.dead_lettered)} dead-lettered + ${fmtInt(a.filtered)} filtered + ${fmtInt(a.deferred)} deferred`;
    }
    const rowsChart = chart([
      { name: "legacy", color: "#8a93a6", points: series.legacy || [] },
      { name: "new", color: "#3451b2", points: series.new || [] },
    ], { now, windowS, unit: "", label: "rows (grey legacy, blue new)", fmt: fmtInt, min0: false });
    const open = byTable[t.table] || {};
    const deadTd = el("td", { class: "num", "data-col": "dead" }, target ? "" : fmtInt(t.dead_lettered));
    if (!target && t.dead_lettered) {
      const unacked = open.unacknowledged ?? t.dead_lettered;
      // hover only: the cell holds the count alone
      if (unacked) bad(deadTd, `${fmtInt(t.dead_lettered)} row(s) the new database lacks until fixed and replayed (crossfade dlq replay) or acknowledged (crossfade dlq ack); ${fmtInt(unacked)} not acknowledged: the dead_letters gate is red`, false);
      else warn(deadTd, "all acknowledged (crossfade dlq ack): the gate passes them; they are still missing in the new database", false);
    }
    const rateCell = el("td", { "data-col": "rate" });
    const lagCell = el("td", { "data-col": "lag" });
    if (!target) {
      const rc = chart([{ name: "applied/s", color: "#3451b2", points: series.rate || [] }],
        { now, windowS, unit: "/s", label: "events applied per second" });
      rc.prepend(el("span", { class: "now" }, `${fmtRate(t.applied_per_s)} /s now`));
      rateCell.append(rc);
      const lc = chart([{ name: "behind", color: "#9a6700", points: series.lag || [] }],
        { now, windowS, unit: " records", label: "records behind: in the table's topic after sync's position (consumer lag, a hint: a fence proves zero)", fmt: fmtInt });
      const lagNow = el("span", { class: "now" }, t.behind === null || t.behind === undefined ? "no running worker reports it" : `${fmtInt(t.behind)} behind now`);
      if (t.behind && t.behind > 10000) {
        warn(lagNow, `${fmtInt(t.behind)} change(s) of this table wait in Kafka for sync: it applies them as fast as it can (see applied / s)`, false);
      }
      lc.prepend(lagNow);
      lagCell.append(lc);
    }
    return el("tr", { class: `${changed ? "changed" : ""} kind-${t.kind || "identity"}`, "data-table": t.table, "data-kind": t.kind || "identity" },
      el("td", { "data-col": "name" }, namesCell(t)),
      legacyTd, newTd, diffCell(s, t, legacy),
      el("td", { "data-col": "rows-chart" }, rowsChart),
      el("td", { class: "num", "data-col": "applied" }, target ? "" : fmtInt(t.applied)),
      rateCell, lagCell, deadTd,
      el("td", { class: "num", "data-col": "deferred" }, target ? "" : fmtInt(t.deferred)),
      el("td", { class: "num", "data-col": "filtered" }, target ? "" : fmtInt(t.filtered)));
  }));
  const h = s.history || {};
  const since = h.source === "prometheus" ? `from Prometheus (${s.config.prometheus})` : "from the console's own samples (since it started)";
  $("#tables-note").replaceChildren(
    `Charts: the last ${Math.round((h.window_s || 900) / 60)} minutes ${since}. `,
    h.error ? el("span", { class: "warn" }, h.error + ". ") : "",
    "Row counts are exact (PostgreSQL's estimate, marked ≈, above a million rows). Counts differ while writes are in flight; only a fence proves that nothing is left in flight.");
}

// -- dead letters, verify, checkpoints ----------------------------------------------------------
function renderDlq(s) {
  const d = s.dlq;
  const extra = [["deferred", d.deferred], ["filtered", d.filtered], ["held", d.held]]
    .filter(([, n]) => n).map(([k, n]) => `${fmtInt(n)} ${k}`).join(", ");
  if (!d.readable) {
    $("#dlq").replaceChildren(bad(el("p", { "data-open": "?" }, "the ledger could not be read"), "without the ledger, zero dead letters is not known: the dead_letters gate is unknown"));
    return;
  }
  if (!d.by_rule.length) {
    $("#dlq").replaceChildren(el("p", { class: "empty", "data-open": "0" }, `no open dead letters${extra ? ` (${extra})` : ""}`));
    return;
  }
  const rows = d.by_rule.map((g) => {
    const n = el("td", { class: "num" }, fmtInt(g.records));
    const why = `${fmtInt(g.records)} row(s) of ${g.table} failed rule ${g.rule}: missing in the new database until fixed and replayed`;
    if (((d.by_table || {})[g.table] || {}).unacknowledged) bad(n, `${why} or acknowledged; the dead_letters gate is red`, false);
    else warn(n, `${why}; acknowledged (crossfade dlq ack), so the gate passes them`, false);
    const ex = el("div", { class: "keys" }, ...g.examples.map((e) => el("code", { title: e.reason || "" }, fmtKey(e.key))));
    const reason = g.examples.length && g.examples[0].reason ? el("div", { class: "note" }, g.examples[0].reason) : "";
    return el("tr", { "data-rule": g.rule }, el("td", {}, g.rule), el("td", {}, g.table), n, el("td", {}, ex, reason));
  });
  const t = el("table", { class: "grid small" },
    el("thead", {}, el("tr", {}, el("th", {}, "rule"), el("th", {}, "table"), el("th", { class: "num" }, "open"), el("th", {}, "example keys (newest), reason"))),
    el("tbody", {}, ...rows));
  const sum = el("p", { class: "note", "data-open": String(d.dead_letters) },
    `${fmtInt(d.dead_letters)} open, ${fmtInt(d.unacknowledged)} not acknowledged${extra ? `; ${extra}` : ""}. crossfade dlq list shows all; fix and crossfade dlq replay, or crossfade dlq ack --note WHY.`);
  $("#dlq").replaceChildren(t, sum);
}

function renderVerify(s) {
  const v = s.verify;
  const box = $("#verify");
  if (!v) { box.replaceChildren(el("p", { class: "empty" }, "no verify run recorded yet: run crossfade verify")); return; }
  const result = el("span", { class: `result ${v.ok ? "good" : ""}` }, v.ok ? "every table equal" : "DIFFERENCES");
  if (!v.ok) bad(result, "the latest verify found rows that differ: the verify gate is red until a verify passes", false);
  const head = el("div", { class: "verify-head" }, el("strong", {}, `verify #${v.id}`), result,
    el("span", { class: "note" }, `${fmtTime(v.finished_at)}, ${fmtSecs(v.seconds)}, by ${v.by || "?"}${v.rechecked_after_fence ? ", re-checked after a fence" : ""}`));
  const count = (t, k, why) => {
    const td = el("td", { class: "num", "data-col": k }, fmtInt(t[k]));
    if (t[k]) {
      bad(td, why, false);
      const keys = (t.examples || {})[k === "different" ? "different" : k] || [];
      if (keys.length) td.append(el("div", { class: "keys" }, ...keys.map((x) => el("code", {}, x))));
    }
    return td;
  };
  const rows = v.tables.map((t) => {
    const m = el("td", {}, t.match ? "equal" : t.error || "differs");
    if (t.match) m.classList.add("good"); else bad(m, t.error || `${t.name} does not match: see the counts and example keys`, false);
    return el("tr", { "data-table": t.name }, el("td", {}, t.name), m,
      el("td", { class: "num" }, fmtInt(t.source_rows)), el("td", { class: "num" }, fmtInt(t.target_rows)),
      count(t, "missing", `rows of the legacy database missing in the new one (${t.name})`),
      count(t, "extra", `rows in the new database with no legacy row (${t.name})`),
      count(t, "different", `keys on both sides whose values differ (${t.name})`));
  });
  box.replaceChildren(head, el("table", { class: "grid small" },
    el("thead", {}, el("tr", {}, ...["table", "result", "legacy rows", "new rows", "missing", "extra", "different"].map((h, i) => el("th", { class: i > 1 ? "num" : "" }, h)))),
    el("tbody", {}, ...rows)));
}

function renderCheckpoints(s) {
  const cps = s.checkpoints || [];
  const box = $("#checkpoints");
  if (!cps.length) { box.replaceChildren(el("p", { class: "empty" }, "no checkpoint recorded yet (crossfade checkpoint create)")); return; }
  box.replaceChildren(el("table", { class: "grid small" },
    el("thead", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "taken"), el("th", {}, "legacy WAL"), el("th", { class: "num" }, "partitions"), el("th", { class: "num" }, "records applied"), el("th", {}, "by, note"))),
    el("tbody", {}, ...cps.map((c) => el("tr", { "data-checkpoint": c.name },
      el("td", {}, c.name), el("td", {}, fmtTime(c.created_at)), el("td", { class: "mono" }, c.source_lsn || "–"),
      el("td", { class: "num" }, fmtInt(c.partitions)), el("td", { class: "num" }, fmtInt(c.records)),
      el("td", {}, `${c.by || "?"}${c.note ? `: ${c.note}` : ""}`))))),
    el("p", { class: "note" }, "crossfade rewind --to NAME moves a stopped sync group back to one; sync then replays from there."));
}

// -- crossfade pause / off-peak load --------------------------------------------------------------
function renderControl(s) {
  const box = $("#control");
  const c = s.control || { paused: [], load: null };
  const lines = c.paused.map((p) => el("div", { class: "paused" },
    `${p.component.toUpperCase()} PAUSED by ${p.by}${p.changed_at ? ` since ${fmtTime(p.changed_at)}` : ""}` +
    `${p.reason ? ` (${p.reason})` : ""}: ${p.holding} of ${p.workers} running process(es) hold; ` +
    `crossfade resume ${p.component} to continue`));
  const l = c.load;
  if (l) {
    lines.push(el("div", { class: l.paused ? "paused" : "" },
      `initial load (${l.by}): ${l.total_rows} rows so far; ${l.summary}`));
  }
  box.replaceChildren(...lines);
  box.hidden = lines.length === 0;
}

// -- the rest ------------------------------------------------------------------------------------
function render(s) {
  renderControl(s);
  renderGates(s);
  renderForecast(s);
  renderTables(s);
  renderDlq(s);
  renderVerify(s);
  renderCheckpoints(s);
  const newest = s.tables.map((t) => t.last_source_ts).filter(Boolean).sort().pop();
  const f = s.last_fence;
  facts($("#lag"), [
    ["last fence", f ? `${f.token}, applied on ${f.partitions} partitions` : "none yet: run fence"],
    ["fence lag", f ? `${fmtSecs(f.lag_s)} (legacy commit → applied)` : "–"],
    ["fence applied", f ? fmtTime(f.applied_at) : "–"],
    ["newest change applied", newest ? `committed ${fmtTime(newest)}` : "–"],
  ]);
  const slot = s.slot;
  let state = "unreadable";
  if (slot) {
    state = slot.exists ? (slot.active ? "streaming" : "idle") : "absent";
  }
  const stateEl = el("span", {}, state);
  if (slot && slot.exists && slot.active) stateEl.classList.add("good");
  else if (slot && !slot.exists) bad(stateEl, "capture has not created its replication slot yet: no change of the legacy database is read");
  else if (slot) bad(stateEl, "capture (Debezium) is not connected to the slot: changes are not read, and the legacy database keeps its WAL meanwhile");
  else bad(stateEl, "the legacy database did not answer");
  facts($("#slot"), slot ? [
    ["replication slot", slot.name],
    ["state", stateEl],
    ["confirmed up to", slot.confirmed_flush_lsn || "–"],
    ["retained WAL", fmtBytes(slot.retained_wal_bytes)],
  ] : [["replication slot", stateEl]]);
  $("#partitions tbody").replaceChildren(...(s.partitions || []).map((p) =>
    el("tr", {}, el("td", {}, p.topic), el("td", { class: "num" }, String(p.partition)),
      el("td", { class: "num" }, fmtInt(p.next_offset)), el("td", {}, fmtClock(p.updated_at)))));
  const c = s.config;
  facts($("#config"), [["legacy database", c.source], ["new database", c.target], ["Kafka", c.kafka],
    ["topic prefix", c.topic_prefix], ["sync group", c.group], ["charts", c.prometheus ? `Prometheus ${c.prometheus}` : "own samples"]]);
  const mode = $("#mode");
  mode.textContent = s.allow_actions ? "actions allowed" : "read-only";
  mode.className = `pill ${s.allow_actions ? "actions" : ""}`;
  const banner = $("#banner");
  banner.hidden = s.errors.length === 0;
  banner.textContent = s.errors.join(" · ");
}

function tick() {
  const u = $("#updated");
  if (!last) return;
  const age = (Date.now() - lastOk) / 1000;
  u.textContent = `updated ${fmtTime(last.collected_at)}` + (age > 10 ? ` · console unreachable for ${fmtSecs(age)}` : "");
}

async function poll() {
  try {
    const r = await fetch("/api/state", { cache: "no-store", credentials: "same-origin" });
    if (r.status === 401) throw new Error("token required: open this page as /?token=…");
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const s = await r.json();
    if (s.collected_at) { last = s; lastOk = Date.now(); render(s); }
  } catch (e) {
    const banner = $("#banner");
    banner.hidden = false;
    banner.textContent = `cannot reach the console: ${e.message}`;
  }
  tick();
  setTimeout(poll, POLL_MS);
}

async function runAction(name, button) {
  button.disabled = true;
  button.textContent = `Running ${name}…`;
  try {
    const r = await fetch(`/api/actions/${name}`, { method: "POST", headers: { "X-Crossfade-Console": "1" }, credentials: "same-origin" });
    if (!r.ok && r.status !== 409) {
      const body = await r.json().catch(() => ({}));
      alert(`${name}: ${body.error || r.status}`);
    }
  } finally {
    clearTimeout(window.__soon);
    window.__soon = setTimeout(async () => {
      const r = await fetch("/api/state", { cache: "no-store" });
      if (r.ok) { last = await r.json(); lastOk = Date.now(); render(last); }
    }, 300);
  }
}

poll();
setInterval(tick, 1000);
