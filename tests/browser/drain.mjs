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
  // The page redraws its cards on every poll: wait until every card has its
  // figures, then read them all in one evaluation, so a redraw cannot detach
  // a card between two reads.
  await page.waitForFunction(
    () => {
      const cards = [...document.querySelectorAll(".server[data-server]")];
      return cards.length > 0 && cards.every((card) => card.querySelector("dd.tunnels") && card.querySelector(".state"));
    },
    null,
    { timeout: 15000 },
  );
  const cards = await page.$$eval(".server[data-server]", (els) =>
    els.map((el) => ({
      name: el.getAttribute("data-server"),
      tunnels: el.querySelector("dd.tunnels").textContent.trim(),
      state: el.querySelector(".state").textContent.trim(),
    })),
  );
  for (const card of cards) {
    result.servers[card.name] = { tunnels: Number(card.tunnels), state: card.state };
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
