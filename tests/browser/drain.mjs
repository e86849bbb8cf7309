// Logs in to the tether stats page in headless Chromium, checks that three
// servers show an open tunnel each, clicks Drain on one, and waits for the
// page and the API to show the new state. Prints one JSON line; saves a
// screenshot. Usage: node drain.mjs URL USER PASSWORD SERVER SCREENSHOT
import { chromium } from "playwright-core";

const [url, user, password, server, screenshot] = process.argv.slice(2);
const result = { servers: {}, drained: false, apiState: null, screenshot };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
});
try {
  const context = await browser.newContext({
    httpCredentials: { username: user, password },
    viewport: { width: 1280, height: 1000 },
  });
  const page = await context.newPage();
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 15000 });
  await page.waitForSelector(".server[data-server]", { timeout: 15000 });
  for (const card of await page.$$(".server[data-server]")) {
    const name = await card.getAttribute("data-server");
    const tunnels = (await card.$eval("dd.tunnels", (el) => el.textContent)).trim();
    const state = (await card.$eval(".state", (el) => el.textContent)).trim();
    result.servers[name] = { tunnels: Number(tunnels), state };
  }
  await page.click(`.server[data-server="${server}"] button[data-act="drain"]`);
  await page.waitForFunction(
    (name) => document.querySelector(`.server[data-server="${name}"] .state`)?.textContent.trim() === "drain",
    server,
    { timeout: 10000 },
  );
  result.drained = true;
  const api = await page.evaluate(async () => (await fetch("/api/v1/backends")).json());
  for (const backend of api.backends) {
    for (const s of backend.servers) {
      if (s.name === server) result.apiState = s.state;
    }
  }
  await page.screenshot({ path: screenshot, fullPage: true });
} catch (err) {
  result.error = String(err && err.message ? err.message : err);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
