// Drives the demo page (`tether demo`) in headless Chromium: waits for the
// simulated users to show spread over the servers, then clicks Add server,
// Kill, Drain and Bring back, and after each waits until the page's bars
// show the effect, reading tether's admin API (from Node) at each step.
// Prints one JSON line. Usage: node demo.mjs PAGE_URL ADMIN_URL USERS
import { chromium } from "playwright-core";

const [pageUrl, adminUrl, users] = process.argv.slice(2);
const result = { steps: {} };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
});
// The servers as the page's bars show them: { name: { tunnels, state, source } }.
const bars = (page) => page.$$eval(".row[data-server]", (els) => Object.fromEntries(els.map((e) =>
  [e.dataset.server, { tunnels: Number(e.dataset.tunnels), state: e.dataset.state, source: e.dataset.source,
    width: e.querySelector(".bar").style.width }])));
// The servers as tether's admin API reports them.
async function api() {
  const data = await (await fetch(adminUrl + "api/v1/backends")).json();
  return Object.fromEntries(data.backends[0].servers.map((s) => [s.name, { tunnels: s.tunnels, state: s.state, source: s.source }]));
}
async function step(name, page, predicate, arg) {
  const started = Date.now();
  await page.waitForFunction(predicate, arg, { timeout: 15000 });
  result.steps[name] = { ms: Date.now() - started, page: await bars(page), api: await api() };
}
const row = (n) => `.row[data-server="${n}"]`;
let page;
try {
  page = await (await browser.newContext()).newPage();
  await page.goto(pageUrl, { waitUntil: "domcontentloaded", timeout: 15000 });
  const total = Number(users);
  await step("spread", page, (total) => {
    const rows = [...document.querySelectorAll(".row[data-server]")];
    const sum = rows.reduce((n, r) => n + Number(r.dataset.tunnels), 0);
    // A user who just left is replaced at once, so at most a few are between two handshakes.
    return rows.length === 3 && sum >= total - 3 && rows.every((r) => Number(r.dataset.tunnels) > 0);
  }, total);

  await page.click("#add");
  await step("added", page, () => {
    const r = document.querySelector('.row[data-server="echo-4"]');
    return r && r.dataset.source === "api" && Number(r.dataset.tunnels) >= 3;
  });

  await page.click(`${row("echo-1")} button[data-act="kill"]`);
  await step("killed", page, (total) => {
    const rows = [...document.querySelectorAll(".row[data-server]")];
    const dead = rows.find((r) => r.dataset.server === "echo-1");
    const others = rows.filter((r) => r !== dead).reduce((n, r) => n + Number(r.dataset.tunnels), 0);
    return dead.dataset.state === "down" && dead.dataset.tunnels === "0" && others >= total - 2;
  }, total);

  await page.click(`${row("echo-2")} button[data-act="drain"]`);
  await step("drained", page, () => {
    const r = document.querySelector('.row[data-server="echo-2"]');
    return r.dataset.state === "drain" && r.dataset.tunnels === "0";
  });

  await page.click(`${row("echo-2")} button[data-act="back"]`);
  await page.click(`${row("echo-1")} button[data-act="back"]`);
  await step("back", page, () => ["echo-1", "echo-2"].every((n) => {
    const r = document.querySelector(`.row[data-server="${n}"]`);
    return r.dataset.state === "up" && Number(r.dataset.tunnels) >= 2;
  }));
  // The rebalance line follows the backend's `rebalance` field (added to tether's answer here).
  result.rebalanceBefore = await page.textContent("#rebalance");
  let rebalance = { max_skew: 1.2, rate_per_s: 5, settle_ms: 10000, active: true, target_max: 17, shed_total: 9, over: ["echo-3"] };
  await page.route("**/api/v1/backends", async (route) => {
    const response = await route.fetch();
    const json = await response.json();
    for (const b of json.backends || []) b.rebalance = rebalance;
    await route.fulfill({ response, json });
  });
  await page.waitForFunction(() => document.getElementById("rebalance").textContent !== "", null, { timeout: 5000 });
  result.rebalanceActive = await page.textContent("#rebalance");
  rebalance = null;
  await page.waitForFunction(() => document.getElementById("rebalance").textContent === "", null, { timeout: 5000 });
  result.rebalanceNullHidden = true;
  result.summary = await page.textContent("#summary");
  result.log = await page.textContent("#log");
  result.statsLink = await page.getAttribute("#stats", "href");
} catch (err) {
  result.error = String(err && err.message ? err.message : err);
  result.lastPage = page ? await bars(page).catch(() => null) : null;
  result.lastApi = await api().catch(() => null);
}
await browser.close();
console.log(JSON.stringify(result));
