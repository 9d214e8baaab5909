// Opens the crossfade console in Debian's headless Chromium and uses it as a person would:
// the page loads and lists the tables, a change made in the legacy database shows up on both
// sides, and clicking "Run fence" turns the fence gate green. Exits non-zero on any failure.
//
// Environment (set by tests/console/test_console.py):
//   CONSOLE_URL         page address (may carry ?token=...)
//   CONSOLE_TABLE       a table listed in the config, e.g. public.orders
//   CONSOLE_CHANGE_CMD  JSON array: command that inserts CONSOLE_CHANGE_ROWS rows into that table
//   CONSOLE_CHANGE_ROWS how many rows the command adds
//   CONSOLE_SCREENSHOT  where to write the PNG
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
const screenshot = env("CONSOLE_SCREENSHOT");

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

  // 2. the fence gate turns green after clicking it
  const gate = page.locator('.gate[data-gate="fence"]');
  const initial = await gate.getAttribute("data-state");
  if (initial === "ok") throw new Error("fence gate green before any fence ran");
  step(`fence gate is ${initial}; clicking Run fence`);
  await page.locator("#run-fence").click();
  await page.locator('.gate[data-gate="fence"][data-state="ok"]').waitFor({ timeout: 90_000 });
  const detail = await gate.locator(".detail").textContent();
  step(`fence gate green: ${detail}`);

  await page.screenshot({ path: screenshot, fullPage: true });
  step(`screenshot ${screenshot}`);
  if (problems.length) throw new Error(problems.join("; "));
  console.log(JSON.stringify({ ok: true, tables, rows: Number(want), fence: detail }));
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
