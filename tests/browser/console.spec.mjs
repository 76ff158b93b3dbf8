// Drives the web console in Debian's headless Chromium (playwright-core,
// no downloaded browser). Run by tests/test_console.py, which starts the
// broker and creates the topic (Kafka client) and queue (AMQP client):
//   WEIR_CONSOLE_URL=http://127.0.0.1:PORT WEIR_TOPIC=t WEIR_QUEUE=q \
//   WEIR_SCREENSHOT=tests/artifacts/console.png node console.spec.mjs
// Prints one JSON line with what it saw; exits 1 on any failed check.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const url = process.env.WEIR_CONSOLE_URL;
const topic = process.env.WEIR_TOPIC;
const queue = process.env.WEIR_QUEUE;
const screenshot = process.env.WEIR_SCREENSHOT;
const timeout = 20_000;

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function run(page, consoleErrors) {
  await page.goto(url, { waitUntil: "load" });
  const topicRow = page.locator(`#topics-body tr[data-topic="${topic}"]`);
  const queueRow = page.locator(`#queues-body tr[data-queue="${queue}"]`);
  await topicRow.waitFor({ timeout });
  await queueRow.waitFor({ timeout });
  const ready = queueRow.locator("td.ready");
  await page.waitForFunction(
    (name) => document.querySelector(`#queues-body tr[data-queue="${name}"] td.ready`)?.textContent === "3",
    queue, { timeout });
  const topicText = await topicRow.textContent();
  // Let two refreshes draw the chart before the picture is taken.
  await page.waitForTimeout(4500);

  page.once("dialog", (dialog) => dialog.accept());
  await queueRow.locator("button.purge").click();
  await page.waitForFunction(
    (name) => document.querySelector(`#queues-body tr[data-queue="${name}"] td.ready`)?.textContent === "0",
    queue, { timeout });
  const readyAfter = await ready.textContent();
  await page.screenshot({ path: screenshot, fullPage: true });
  check(consoleErrors.length === 0, `console errors: ${JSON.stringify(consoleErrors)}`);
  check(await page.locator("#error").isHidden(), "the error banner is showing");

  // A refused action shows the server's message instead of breaking the page.
  await page.fill("#create-topic input[name=name]", "bad name!");
  await page.click("#create-topic button");
  await page.locator("#error").waitFor({ state: "visible", timeout });
  const banner = await page.locator("#error").textContent();
  check(banner.includes("bad name!"), `unexpected error banner: ${banner}`);
  await topicRow.waitFor({ timeout });
  return { topicText, readyAfter, banner };
}

const userDataDir = mkdtempSync(join(tmpdir(), "weir-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
  viewport: { width: 1280, height: 900 },
});
let code = 0;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  const consoleErrors = [];
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(`page error: ${error.message}`));
  const seen = await run(page, consoleErrors);
  console.log(JSON.stringify({ ok: true, ...seen }));
} catch (error) {
  console.log(JSON.stringify({ ok: false, error: String(error && error.stack || error) }));
  code = 1;
} finally {
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(code);
