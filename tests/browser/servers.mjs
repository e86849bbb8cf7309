// Opens the tether stats page at a URL that carries credentials
// (http://user:pass@host/), adds a server with the backend's add-server
// form, tries a duplicate name, deletes the added server with its Delete
// button, and checks the rebalance line against a backend JSON that has a
// `rebalance` field. Prints one JSON line.
// Usage: node servers.mjs URL_WITH_CREDENTIALS BACKEND NAME ADDRESS WEIGHT TAKEN_NAME
import { chromium } from "playwright-core";

const [url, backend, name, address, weight, taken] = process.argv.slice(2);
const result = { dialogs: [] };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
});
const card = (n) => `.server[data-server="${n}"]`;
const form = `form.add-server[data-backend="${backend}"]`;
try {
  const page = await (await browser.newContext()).newPage();
  page.on("dialog", (d) => { result.dialogs.push(d.message()); d.dismiss(); });
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 15000 });
  // The page's script has polled the API when the status says so and the form (drawn only by it) is there.
  await page.waitForFunction(
    (f) => document.getElementById("status").textContent.startsWith("live: refreshed") && !!document.querySelector(f),
    form, { timeout: 10000 },
  ).catch(() => {});
  result.status = await page.textContent("#status");
  result.cards = await page.$$eval(".server[data-server]", (els) => els.map((e) => e.dataset.server));
  result.sources = await page.$$eval(".server[data-server] dd.source", (els) => els.map((e) => e.textContent));

  await page.fill(`${form} input[name=name]`, name);
  await page.fill(`${form} input[name=address]`, address);
  await page.fill(`${form} input[name=weight]`, weight);
  await page.click(`${form} button[type=submit]`);
  await page.waitForSelector(card(name), { timeout: 10000 });
  result.addedSource = (await page.textContent(`${card(name)} dd.source`)).trim();
  result.deleteButtons = await page.$$eval(".server[data-server]", (els) =>
    els.filter((e) => e.querySelector('button[data-act="delete"]')).map((e) => e.dataset.server));
  result.apiAfterAdd = await page.evaluate(async (n) => {
    const data = await (await fetch(location.origin + "/api/v1/servers")).json();
    return data.servers.find((s) => s.name === n) || null;
  }, name);

  // A name the backend has: the API's 409 reason is shown.
  await page.fill(`${form} input[name=name]`, taken);
  await page.fill(`${form} input[name=address]`, address);
  await page.click(`${form} button[type=submit]`);
  for (let i = 0; i < 50 && result.dialogs.length === 0; i++) await page.waitForTimeout(100);

  await page.click(`${card(name)} button[data-act="delete"]`);
  await page.waitForSelector(card(name), { state: "detached", timeout: 10000 });
  result.deletedGone = true;
  result.apiAfterDelete = await page.evaluate(async (n) => {
    const data = await (await fetch(location.origin + "/api/v1/servers")).json();
    return data.servers.find((s) => s.name === n) || null;
  }, name);

  // The rebalance line follows the backend's `rebalance` field.
  result.rebalanceBefore = await page.$$eval(".rebalance", (els) => els.length);
  let rebalance = { max_skew: 1.2, rate_per_s: 5, settle_ms: 10000, active: true, target_max: 76, shed_total: 12, over: ["s1"] };
  // The browser adds its cached login below the interception: the re-sent request carries it itself.
  const target = new URL(url);
  const login = "Basic " + btoa(decodeURIComponent(target.username) + ":" + decodeURIComponent(target.password));
  await page.route("**/api/v1/backends", async (route) => {
    try {
      const response = await route.fetch({ headers: { ...route.request().headers(), authorization: login } });
      const json = await response.json();
      for (const b of json.backends || []) b.rebalance = rebalance;
      await route.fulfill({ response, json });
    } catch (err) {
      result.routeError = String(err);
      await route.abort().catch(() => {});
    }
  });
  await page.waitForSelector(".rebalance", { timeout: 10000 });
  result.rebalanceActive = (await page.textContent(".rebalance")).trim();
  rebalance = { ...rebalance, active: false };
  await page.waitForSelector(".rebalance", { state: "detached", timeout: 10000 });
  result.rebalanceInactiveHidden = true;
} catch (err) {
  result.error = String(err && err.message ? err.message : err);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
