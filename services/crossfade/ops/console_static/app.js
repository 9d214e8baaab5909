// crossfade console: polls /api/state and redraws. Every value goes in through textContent.
"use strict";

const POLL_MS = 2000;
const $ = (sel) => document.querySelector(sel);
let last = null;
let lastOk = 0;
const previousRows = new Map();

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c ?? ""));
  return e;
}

const fmtInt = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
function fmtRows(n, exact) { return n === null || n === undefined ? "–" : (exact ? "" : "≈ ") + fmtInt(n); }
function fmtSecs(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return `${Math.round(s * 1000)} ms`;
  if (s < 120) return `${s.toFixed(1)} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
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

function facts(node, pairs) {
  node.replaceChildren(...pairs.flatMap(([k, v, cls]) => [el("dt", {}, k), el("dd", cls ? { class: cls } : {}, v)]));
}

const STATE_TEXT = { ok: "GREEN", failed: "RED", stale: "STALE", running: "RUNNING", unknown: "NO EVIDENCE" };

function renderGates(s) {
  const box = $("#gates");
  box.replaceChildren(...s.gates.map((g) => {
    const card = el("div", { class: "gate", "data-gate": g.gate, "data-state": g.state },
      el("div", { class: "head" }, el("span", { class: "dot" }), el("span", {}, g.title),
        el("span", { class: "state" }, STATE_TEXT[g.state] || g.state)),
      el("div", { class: "detail" }, g.detail),
      el("div", { class: "evidence" }, g.evidence_at
        ? `evidence from ${fmtTime(g.evidence_at)}${g.fresh_s ? ` (fresh for ${fmtSecs(g.fresh_s)})` : ""}`
        : `evaluated ${fmtClock(g.evaluated_at)}`));
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
  const names = red.map((g) => `${g.title}: ${STATE_TEXT[g.state].toLowerCase()}`).join(" · ");
  const v = $("#verdict");
  const running = s.gates.some((g) => g.state === "running");
  const state = red.length === 0 ? "ok" : running ? "running" : "failed";
  v.className = `verdict ${state}`;
  v.dataset.state = state;
  v.textContent = red.length === 0 ? "GO: every gate is green"
    : red.length === 1 ? `NOT READY: ${red[0].title} — ${STATE_TEXT[red[0].state].toLowerCase()}`
    : `NOT READY: ${red.length} of ${s.gates.length} gates not green`;
  v.title = names;
}

function renderTables(s) {
  // the counts the row_counts gate compares: a mapped source table's "new" side is its
  // accounting (mapped + dead-lettered + filtered + deferred), a target table's "legacy" side
  // the rows its sources should give (mapped - merged duplicates)
  const body = $("#tables tbody");
  body.replaceChildren(...s.tables.map((t) => {
    const target = t.kind === "target";
    const legacy = target ? t.expected : t.legacy_rows;
    const diff = legacy !== null && legacy !== undefined && t.new_rows !== null && t.new_rows !== undefined
      ? t.new_rows - legacy : null;
    const key = `${t.table}:${legacy}:${t.new_rows}:${t.applied}`;
    const changed = previousRows.has(t.table) && previousRows.get(t.table) !== key;
    previousRows.set(t.table, key);
    const name = target ? `→ ${t.table}` : t.kind === "source" ? `${t.table} (mapped)` : t.table;
    const legacyTitle = target ? `rows expected from ${(t.sources || []).join(", ")}: mapped - ${t.merged} merged duplicates` : "";
    const newTitle = t.kind === "source" && t.accounting
      ? `accounted: ${t.accounting.mapped} mapped + ${t.accounting.dead_lettered} dead-lettered + ${t.accounting.filtered} filtered + ${t.accounting.deferred} deferred`
      : "";
    return el("tr", { class: `${changed ? "changed" : ""} kind-${t.kind || "identity"}`, "data-table": t.table, "data-kind": t.kind || "identity" },
      el("td", {}, name),
      el("td", { class: "num", "data-col": "legacy", title: legacyTitle }, target ? `expected ${fmtInt(legacy)}` : fmtRows(legacy, t.legacy_exact)),
      el("td", { class: "num", "data-col": "new", title: newTitle }, fmtRows(t.new_rows, t.new_exact)),
      el("td", { class: `num ${diff === null ? "" : diff === 0 ? "diff-ok" : "diff-bad"}` },
        diff === null ? "–" : diff === 0 ? "equal" : (diff > 0 ? "+" : "") + fmtInt(diff)),
      el("td", { class: "num" }, target ? "" : fmtInt(t.applied)),
      el("td", { class: "num" }, target || t.applied_per_s === null || t.applied_per_s === undefined ? "–" : t.applied_per_s.toFixed(1)),
      el("td", {}, target ? "" : fmtTime(t.last_source_ts)),
      el("td", { class: `num ${t.dead_lettered ? "bad" : ""}`, "data-col": "dead" }, target ? "" : fmtInt(t.dead_lettered)));
  }));
}

function renderJsonRows(node, rows, emptyText) {
  if (!rows || rows.length === 0) { node.replaceChildren(el("p", { class: "empty" }, emptyText)); return; }
  node.replaceChildren(...rows.map((r) => el("pre", { class: "json" }, JSON.stringify(r, null, 2))));
}

function render(s) {
  renderGates(s);
  renderTables(s);
  const newest = s.tables.map((t) => t.last_source_ts).filter(Boolean).sort().pop();
  const f = s.last_fence;
  facts($("#lag"), [
    ["last fence", f ? `${f.token}, applied on ${f.partitions} partitions` : "none yet: run fence"],
    ["fence lag", f ? `${fmtSecs(f.lag_s)} (legacy commit → applied)` : "–"],
    ["fence applied", f ? fmtTime(f.applied_at) : "–"],
    ["newest change applied", newest ? `committed ${fmtTime(newest)}` : "–"],
  ]);
  const dlq = s.dlq.by_rule;
  const extra = [["deferred", s.dlq.deferred], ["filtered", s.dlq.filtered], ["held", s.dlq.held]]
    .filter(([, n]) => n).map(([k, n]) => `${fmtInt(n)} ${k}`).join(", ");
  if (dlq.length === 0) {
    $("#dlq").replaceChildren(el("p", { class: "empty", "data-open": "0" }, `no open dead letters${extra ? ` (${extra})` : ""}`));
  } else {
    const t = el("table", { class: "grid small" },
      el("thead", {}, el("tr", {}, el("th", {}, "rule"), el("th", {}, "table"), el("th", { class: "num" }, "records"))),
      el("tbody", {}, ...dlq.map((d) => el("tr", {}, el("td", {}, d.rule), el("td", {}, d.table), el("td", { class: "num bad" }, fmtInt(d.records))))));
    const sum = el("p", { class: "note", "data-open": String(s.dlq.dead_letters) },
      `${fmtInt(s.dlq.dead_letters)} open, ${fmtInt(s.dlq.unacknowledged)} not acknowledged${extra ? `; ${extra}` : ""}`);
    $("#dlq").replaceChildren(sum, t);
  }
  renderJsonRows($("#verify"), s.verify, "no verify run recorded yet: run crossfade verify");
  renderJsonRows($("#checkpoints"), s.checkpoints, "no checkpoint recorded yet");
  const slot = s.slot;
  facts($("#slot"), slot ? [
    ["replication slot", slot.name],
    ["state", slot.exists ? (slot.active ? "streaming" : "idle (capture not connected)") : "absent", slot.exists && slot.active ? "good" : "bad"],
    ["retained WAL", fmtBytes(slot.retained_wal_bytes)],
  ] : [["replication slot", "unreadable"]]);
  $("#partitions tbody").replaceChildren(...(s.partitions || []).map((p) =>
    el("tr", {}, el("td", {}, p.topic), el("td", { class: "num" }, String(p.partition)),
      el("td", { class: "num" }, fmtInt(p.next_offset)), el("td", {}, fmtClock(p.updated_at)))));
  const c = s.config;
  facts($("#config"), [["legacy database", c.source], ["new database", c.target], ["Kafka", c.kafka],
    ["topic prefix", c.topic_prefix], ["sync group", c.group]]);
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
