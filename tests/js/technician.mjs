// Headless Chromium on an agent's technician page (served by the agent's local API at "/"), driven by
// tests/integration/api/test_technician_page.py through playwright-core; the provider console (served
// by the development stack at "/") is driven the same way by tests/integration/console.
//
// Configuration comes from the environment (never argv, which any local user can read with ps):
//   PAGE_URL             the agent's API address (http://127.0.0.1:PORT)
//   BROWSER_EXECUTABLE   optional: the Chromium to run (default /usr/bin/chromium)
//   FAKE_MEDIA           optional: "1" gives the page a fake camera and microphone, granted unasked
// The API token arrives in a "fill" command over stdin, as a technician types it.
//
// Commands arrive on stdin, one JSON object per line; "id" is echoed back on the answer:
//   {"op":"open"}                                   loads PAGE_URL + "/"  -> {}
//   {"op":"reload"}                                 reloads the page, as a browser refresh does -> {}
//   {"op":"fill","selector","value"}                types into a field     -> {}
//   {"op":"click","selector"}                       -> {}
//   {"op":"select","selector","value"}              picks an option of a <select> -> {}
//   {"op":"waitFor","selector","text"?,"state"?,"timeout"}   until an element matching (containing text)
//                                                   is in "state" (default "visible") -> {}
// (No waits on evaluated expressions: the page's Content-Security-Policy forbids eval, as it should.)
//   {"op":"text","selector"}                        -> {value: its textContent}
//   {"op":"screenshot","selector"}                  -> {png: base64 of the element's screenshot}
//   {"op":"quit"}
// Events go to stdout, one JSON object per line:
//   {"event":"ready","browserVersion"}   {"event":"fatal","stage","message"}
//   {"event":"pageError","name","message"}   {"event":"console","type","text"} (errors only)
//   {"event":"result","id","op",...}   {"event":"error","id","op","message"}
// stdin closing ends the browser and the process.

import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

function fatal(stage, error) {
  emit({ event: "fatal", stage, message: String(error?.message ?? error) });
  process.exit(1);
}

const pageUrl = process.env.PAGE_URL;
if (!pageUrl) fatal("config", "PAGE_URL: not set");

let browser;
try {
  browser = await chromium.launch({
    executablePath: process.env.BROWSER_EXECUTABLE || "/usr/bin/chromium",
    args: [
      "--no-sandbox", // headless as root
      ...(process.env.FAKE_MEDIA === "1"
        ? ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
        : []),
    ],
  });
} catch (error) {
  fatal("launch", error);
}
const context = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
const page = await context.newPage();
page.on("pageerror", (error) => emit({ event: "pageError", name: error?.name ?? "Error", message: error?.message }));
page.on("console", (message) => {
  if (message.type() === "error") emit({ event: "console", type: message.type(), text: message.text() });
});

const commands = {
  open: async () => {
    await page.goto(`${pageUrl}/`);
    return {};
  },
  reload: async () => {
    await page.reload();
    return {};
  },
  fill: async ({ selector, value }) => {
    await page.locator(selector).fill(value);
    return {};
  },
  click: async ({ selector }) => {
    await page.locator(selector).click();
    return {};
  },
  select: async ({ selector, value }) => {
    await page.locator(selector).selectOption(value);
    return {};
  },
  waitFor: async ({ selector, text, state, timeout }) => {
    let locator = page.locator(selector);
    if (text !== undefined) locator = locator.filter({ hasText: text });
    await locator.first().waitFor({ state: state ?? "visible", timeout });
    return {};
  },
  text: async ({ selector }) => ({ value: await page.locator(selector).first().textContent() }),
  screenshot: async ({ selector }) => {
    const png = await page.locator(selector).first().screenshot();
    return { png: png.toString("base64") };
  },
  quit: async () => {
    await shutdown();
    return {};
  },
};

async function shutdown() {
  await browser.close().catch(() => {});
  process.exit(0);
}

async function run(line) {
  let request;
  try {
    request = JSON.parse(line);
  } catch {
    emit({ event: "error", id: null, op: null, message: "command is not JSON" });
    return;
  }
  const { id = null, op } = request;
  const command = Object.hasOwn(commands, op) ? commands[op] : null;
  if (!command) {
    emit({ event: "error", id, op, message: "op: is not a known command" });
    return;
  }
  try {
    emit({ event: "result", id, op, ...(await command(request)) });
  } catch (error) {
    emit({ event: "error", id, op, message: String(error?.message ?? error).split("\n")[0] });
  }
}

emit({ event: "ready", browserVersion: browser.version() });
const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => void run(line));
lines.on("close", () => void shutdown());
