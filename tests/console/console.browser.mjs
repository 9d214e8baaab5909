// Opens the crossfade console in Debian's headless Chromium and uses it as a person would:
// the page loads and lists the tables (legacy and new names), a change made in the legacy
// database shows up on both sides and in the charts; the fence gate, once stale, turns green after
// a fence run from the command line and after clicking "Run fence"; a checkpoint appears in its
// list; after `crossfade cutover --dry-run --json` the page shows the same gates and counts as that
// output, its verify as a table and the write-downtime forecast. At each step: every panel holds
// data, no raw JSON anywhere, every figure in red says why. Screenshots at several moments
// (CONSOLE_SCREENSHOT with -1-loaded, -2-change-applied, -3-after-dry-run before .png).
// Exits non-zero on any failure; prints what it compared.
//
// Environment (set by tests/console/test_console.py):
//   CONSOLE_URL         page address (may carry ?token=...)
//   CONSOLE_TABLE       a table listed in the config, e.g. public.orders
//   CONSOLE_CHANGE_CMD  JSON array: command that inserts CONSOLE_CHANGE_ROWS rows into that table
//   CONSOLE_CHANGE_ROWS how many rows the command adds
//   CONSOLE_FENCE_CMD   JSON array: `crossfade fence` for the same config
//   CONSOLE_DRYRUN_CMD  JSON array: `crossfade cutover --dry-run --json` for the same config
//   CONSOLE_CHECKPOINT_CMD JSON array: `crossfade checkpoint create --name ...` for the same config
//   CONSOLE_SCREENSHOT  where to write the PNGs (the last one; the others beside it)
//   CHROMIUM            browser executable (default /usr/bin/chromium)
import { execFileSync } from "node:child_process";
import { chromium } from "playwright-core";

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const url = env("CONSOLE_URL");
const table = env("CONSOLE_TABLE");
const changeCmd = JSON.parse(env("CONSOLE_CHANGE_CMD"));
const changeRows = Number(env("CONSOLE_CHANGE_ROWS"));
const fenceCmd = JSON.parse(env("CONSOLE_FENCE_CMD"));
const dryRunCmd = JSON.parse(env("CONSOLE_DRYRUN_CMD"));
const checkpointCmd = JSON.parse(env("CONSOLE_CHECKPOINT_CMD"));
const screenshot = env("CONSOLE_SCREENSHOT");
const shots = [];
const shot = async (page, name) => {
  const path = screenshot.replace(/\.png$/, `-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  shots.push(path);
  step(`screenshot ${path}`);
};

// what a coordinator must be able to read at any moment: every panel filled, no JSON, and every
// figure in red carrying its reason (a tooltip on it or on what holds it)
async function checkPage(page, moment) {
  const report = await page.evaluate(() => {
    const text = (sel) => (document.querySelector(sel) || {}).textContent || "";
    const panels = {};
    for (const id of ["gates", "forecast", "tables", "dlq", "verify", "checkpoints", "lag", "slot", "config"]) {
      panels[id] = text(`#${id}`).trim().length;
    }
    const body = document.querySelector("main").innerText;
    const json = /[{\[]\s*"[A-Za-z_]+"\s*:/.test(body) || document.querySelectorAll("pre").length > 0;
    const red = [];
    const badColour = "rgb(200, 50, 43)";
    for (const e of document.querySelectorAll("main *, header *")) {
      const own = [...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      if (!own || getComputedStyle(e).color !== badColour) continue;
      const holder = e.closest("[title]");
      if (!holder || !holder.title.trim()) red.push(e.textContent.trim().slice(0, 60));
    }
    const charts = document.querySelectorAll("#tables svg polyline").length;
    const newNames = [...document.querySelectorAll("#tables tbody tr .names .new")].map((n) => n.textContent);
    return { panels, json, unexplained: red, charts, newNames };
  });
  const empty = Object.entries(report.panels).filter(([, n]) => n === 0).map(([k]) => k);
  if (empty.length) throw new Error(`${moment}: empty panels ${empty.join(", ")}`);
  if (report.json) throw new Error(`${moment}: raw JSON on the page`);
  if (report.unexplained.length) throw new Error(`${moment}: figures in red without a reason: ${JSON.stringify(report.unexplained)}`);
  step(`${moment}: every panel filled, no JSON, ${report.charts} chart lines, new names ${report.newNames.join(" | ")}`);
  return report;
}

const step = (msg) => console.log(`[console test] ${msg}`);
const browser = await chromium.launch({
  executablePath: env("CHROMIUM", "/usr/bin/chromium"),
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-dev-shm-usage"],
});
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });

  await page.goto(url);
  const row = page.locator(`tr[data-table="${table}"]`);
  await row.waitFor({ timeout: 30_000 });
  const cell = async (col) => (await row.locator(`td[data-col="${col}"]`).textContent()).replace(/[^0-9]/g, "");
  const tables = await page.locator("#tables tbody tr").evaluateAll((rows) => rows.map((r) => r.dataset.table));
  step(`page shows tables ${tables.join(", ")}`);
  if (!tables.includes(table)) throw new Error(`table ${table} not listed`);
  const loaded = await checkPage(page, "loaded");
  await shot(page, "1-loaded");

  // 1. a change in the legacy database reaches the page (legacy count, then the new database)
  const before = Number(await cell("legacy"));
  step(`${table}: ${before} legacy rows; inserting ${changeRows} in the legacy database`);
  execFileSync(changeCmd[0], changeCmd.slice(1), { stdio: "inherit" });
  const want = String(before + changeRows);
  await page.waitForFunction(
    ([t, w]) => {
      const r = document.querySelector(`tr[data-table="${t}"]`);
      const v = (c) => r && r.querySelector(`td[data-col="${c}"]`).textContent.replace(/[^0-9]/g, "");
      return r && v("legacy") === w && v("new") === w;
    },
    [table, want],
    { timeout: 60_000, polling: 250 },
  );
  step(`page shows ${want} rows in both databases`);
  // the charts draw the change: the rows line of the table climbed to the new count
  await page.waitForFunction(
    (t) => document.querySelectorAll(`tr[data-table="${t}"] td[data-col="rows-chart"] polyline`).length >= 2
      && document.querySelectorAll(`tr[data-table="${t}"] td[data-col="rate"] polyline`).length >= 1,
    table, { timeout: 30_000, polling: 250 },
  );
  const rowsTitle = await row.locator('td[data-col="rows-chart"] .chart').getAttribute("title");
  if (!rowsTitle.includes(`max ${Number(want).toLocaleString("en-US")}`)) throw new Error(`rows chart: ${rowsTitle}`);
  step(`rows chart: ${rowsTitle}`);
  await checkPage(page, "change applied");
  await shot(page, "2-change-applied");

  // 2. the fence gate: stale past its freshness limit, green after a fence from the CLI, and
  // after the page's own button
  const gate = page.locator('.gate[data-gate="fence"]');
  await page.locator('.gate[data-gate="fence"]:not([data-state="ok"])').waitFor({ timeout: 60_000 });
  step(`fence gate is ${await gate.getAttribute("data-state")}; running crossfade fence`);
  execFileSync(fenceCmd[0], fenceCmd.slice(1), { stdio: "inherit" });
  const fenceVia = (via) => page.waitForFunction(
    (v) => {
      const g = document.querySelector('.gate[data-gate="fence"]');
      return g && g.dataset.state === "ok" && g.querySelector(".detail").textContent.includes(`(${v},`);
    },
    via,
    { timeout: 90_000, polling: 250 },
  );
  await fenceVia("cli");
  step(`fence gate green after the CLI fence: ${await gate.locator(".detail").textContent()}`);
  await page.locator("#run-fence").click();
  await fenceVia("console");
  const detail = await gate.locator(".detail").textContent();
  step(`fence gate green after Run fence: ${detail}`);

  // a checkpoint appears in its list, with the legacy WAL position as PostgreSQL writes it
  const cpOut = execFileSync(checkpointCmd[0], checkpointCmd.slice(1), { encoding: "utf8" });
  const cpName = checkpointCmd[checkpointCmd.indexOf("--name") + 1];
  await page.locator(`#checkpoints tr[data-checkpoint="${cpName}"]`).waitFor({ timeout: 30_000 });
  const cpLsn = await page.locator(`#checkpoints tr[data-checkpoint="${cpName}"] td.mono`).textContent();
  if (!/^[0-9A-F]+\/[0-9A-F]+$/.test(cpLsn) || !cpOut.includes(`legacy WAL ${cpLsn},`)) throw new Error(`checkpoint LSN ${cpLsn} / ${cpOut}`);
  step(`checkpoint ${cpName} listed at legacy WAL ${cpLsn}`);

  // 3. the same gates and counts as `cutover --dry-run --json`
  let out;
  try {
    out = execFileSync(dryRunCmd[0], dryRunCmd.slice(1), { encoding: "utf8" });
  } catch (e) {
    out = e.stdout; // NO GO exits 1: compared all the same
  }
  const rep = JSON.parse(out);
  const run = rep.model.find((g) => g.gate === "verify").evidence.run;
  step(`dry run: ${rep.go ? "GO" : "NO GO"}, verify #${run}; waiting for the page to show it`);
  await page.waitForFunction(
    (n) => {
      const d = document.querySelector('.gate[data-gate="verify"] .detail');
      return d && d.textContent.includes(`verify #${n} `);
    },
    run,
    { timeout: 30_000, polling: 250 },
  );
  const gatesPage = await page.locator("#gates .gate").evaluateAll(
    (cards) => Object.fromEntries(cards.map((c) => [c.dataset.gate, c.dataset.state])));
  const gatesDryRun = Object.fromEntries(rep.model.map((g) => [g.gate, g.state]));
  const countsPage = await page.locator("#tables tbody tr").evaluateAll((rows) => Object.fromEntries(rows.map((r) => {
    const v = (c) => Number(r.querySelector(`td[data-col="${c}"]`).textContent.replace(/[^0-9]/g, ""));
    const o = { legacy: v("legacy"), new: v("new") };
    if (r.dataset.kind !== "target") o.dead = v("dead");
    return [r.dataset.table, o];
  })));
  const byTable = rep.model.find((g) => g.gate === "dead_letters").evidence.by_table;
  const countsDryRun = Object.fromEntries(rep.model.find((g) => g.gate === "row_counts").evidence.tables.map((t) => {
    const dead = (byTable[t.table] || { dead_letters: 0 }).dead_letters;
    if (t.kind === "target") return [t.table, { legacy: t.expected, new: t.new_rows }];
    return [t.table, { legacy: t.legacy_rows, new: t.kind === "source" ? t.accounted : t.new_rows, dead }];
  }));
  step(`page gates ${JSON.stringify(gatesPage)}; dry run ${JSON.stringify(gatesDryRun)}`);
  step(`page counts ${JSON.stringify(countsPage)}; dry run ${JSON.stringify(countsDryRun)}`);

  // the dry run's verify as a readable table, and the forecast from its fence and verify
  await page.locator(`#verify .verify-head strong:text("verify #${run}")`).waitFor({ timeout: 30_000 });
  const verifyRows = await page.locator("#verify tbody tr").evaluateAll((rows) => rows.map((r) => ({
    table: r.dataset.table, result: r.children[1].textContent, missing: r.querySelector('[data-col="missing"]').textContent,
  })));
  step(`verify #${run} on the page: ${JSON.stringify(verifyRows)}`);
  // the forecast to announce is the dry run's own, part by part (its audit decision row)
  await page.waitForFunction(() => {
    const b = document.querySelector("#forecast-seconds");
    return b && b.dataset.source === "dry_run" && /^[0-9.]+ (ms|s|min)$/.test(b.textContent);
  }, null, { timeout: 30_000, polling: 250 });
  const forecast = await page.locator("#forecast-seconds").textContent();
  const forecastParts = await page.locator("#forecast-parts > div > span:first-child").allTextContents();
  step(`write downtime forecast: ${forecast} in ${forecastParts.join(", ")} (dry run said ${rep.expected_downtime_seconds} s)`);
  const dlqRows = await page.locator("#dlq tbody tr").evaluateAll((rows) => rows.map((r) => ({
    rule: r.dataset.rule, keys: [...r.querySelectorAll(".keys code")].map((c) => c.textContent),
  })));
  step(`dead letters by rule: ${JSON.stringify(dlqRows)}`);
  await checkPage(page, "after the dry run");
  await shot(page, "3-after-dry-run");
  await page.screenshot({ path: screenshot, fullPage: true });
  if (problems.length) throw new Error(problems.join("; "));
  console.log(JSON.stringify({
    ok: true, tables, rows: Number(want), fence: detail, go: rep.go,
    gates_page: gatesPage, gates_dry_run: gatesDryRun, counts_page: countsPage, counts_dry_run: countsDryRun,
    new_names: loaded.newNames, verify_rows: verifyRows, forecast, forecast_parts: forecastParts,
    dry_run_forecast: { seconds: rep.expected_downtime_seconds, parts: Object.keys(rep.expected_downtime_steps || {}) },
    dlq_rows: dlqRows, checkpoint_lsn: cpLsn,
    shots,
  }));
} catch (e) {
  try {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages.length) await pages[0].screenshot({ path: screenshot, fullPage: true });
  } catch {}
  console.error(`[console test] FAILED: ${e.message}${problems.length ? ` (${problems.join("; ")})` : ""}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
