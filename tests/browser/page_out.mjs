// Loads a page over https:// in headless Chromium and waits for its script
// to write its result into `#out` (anything but "pending"); the pages of
// tests/http2.rs and tests/socketio.rs open wss:// WebSockets to their own
// host, which Chromium carries over the page's HTTP/2 connection when the
// server allows extended CONNECT (RFC 8441): no flag is needed for that.
// Prints one JSON line. Usage: node page_out.mjs URL HOST
// (HOST is resolved to 127.0.0.1; the certificate is self-signed).
import { chromium } from "playwright-core";

const [url, host] = process.argv.slice(2);
const result = { out: null, error: null };
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--ignore-certificate-errors",
    `--host-resolver-rules=MAP ${host} 127.0.0.1`,
  ],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(url, { waitUntil: "domcontentloaded", timeout: 15000 });
  await page.waitForFunction(() => document.getElementById("out")?.textContent !== "pending", null, {
    timeout: 40000,
  });
  result.out = await page.$eval("#out", (el) => el.textContent);
} catch (err) {
  result.error = String(err);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
