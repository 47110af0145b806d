// Headless Chromium with the provider's call page (call-page/ with the provider console's call module,
// devstack/telehealth_devstack/console/static/call.js), driven by tests/integration/interop.
//
// It serves the page, its script and the PubNub JavaScript SDK's browser build from a small HTTP
// server on 127.0.0.1 (a page on its own origin, as a provider's app is: the relay and the clinic
// answer it through CORS), launches Debian's chromium once through playwright-core with a fake
// camera and microphone, and opens one page per "open" command (each in a fresh browser context).
//
// Configuration comes from the environment (never argv, which any local user can read with ps):
//   BROWSER_EXECUTABLE   optional: the Chromium to run (default /usr/bin/chromium)
// What a page needs (keys, credential) arrives in the "run" command's args over stdin, never in a URL.
//
// Commands arrive on stdin, one JSON object per line; "id" is echoed back on the answer:
//   {"op":"open"}                              a new page -> {page}
//   {"op":"run","page","method","args"?}       window.providerCall[method](args) in that page -> {value}
//   {"op":"close","page"}                      closes the page and its context
//   {"op":"quit"}
// Events go to stdout, one JSON object per line:
//   {"event":"ready","browserVersion","pageOrigin"}   the browser is up and the page is served
//   {"event":"fatal","stage","message"}                the browser or the server could not start; exit 1
//   {"event":<the page's event>,"page",...}            whatever the page reported (see call.js)
//   {"event":"pageError","page","name"}                an uncaught error in a page
//   {"event":"result","id","op",...}   {"event":"error","id","op","message"}
// stdin closing ends the browser and the process.

import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = (path) => fileURLToPath(new URL(path, import.meta.url));
const emit = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

// Path -> [file, content type]: nothing else is served.
const FILES = new Map([
  ["/provider-call.html", [here("./call-page/provider-call.html"), "text/html; charset=utf-8"]],
  // The one call module, shared with the provider console (which the development stack serves).
  ["/provider-call.js", [here("../../devstack/telehealth_devstack/console/static/call.js"), "text/javascript; charset=utf-8"]],
  ["/pubnub.js", [here("./node_modules/pubnub/dist/web/pubnub.min.js"), "text/javascript; charset=utf-8"]],
]);

async function serve(request, response) {
  const file = request.method === "GET" ? FILES.get(new URL(request.url, "http://page").pathname) : undefined;
  if (!file) {
    response.writeHead(404).end();
    return;
  }
  try {
    const body = await readFile(file[0]);
    response.writeHead(200, { "Content-Type": file[1], "Cache-Control": "no-store" }).end(body);
  } catch {
    response.writeHead(500).end();
  }
}

function fatal(stage, error) {
  emit({ event: "fatal", stage, message: String(error?.message ?? error) });
  process.exit(1);
}

const server = createServer((request, response) => void serve(request, response));
await new Promise((resolve, reject) => {
  server.once("error", reject);
  server.listen(0, "127.0.0.1", resolve);
}).catch((error) => fatal("server", error));
const pageOrigin = `http://127.0.0.1:${server.address().port}`; // 127.0.0.1 is a secure context

let browser;
try {
  browser = await chromium.launch({
    executablePath: process.env.BROWSER_EXECUTABLE || "/usr/bin/chromium",
    args: [
      "--use-fake-device-for-media-stream", // a generated camera picture and a beeping microphone
      "--use-fake-ui-for-media-stream", // getUserMedia is granted without a prompt
      "--autoplay-policy=no-user-gesture-required",
      "--no-sandbox", // headless as root
    ],
  });
} catch (error) {
  server.close();
  fatal("launch", error);
}

const pages = new Map(); // page number -> {context, page}
let nextPage = 0;

const commands = {
  open: async () => {
    const number = ++nextPage;
    const context = await browser.newContext();
    const page = await context.newPage();
    pages.set(number, { context, page });
    await page.exposeFunction("reportEvent", (event) => emit({ ...event, page: number }));
    page.on("pageerror", (error) => emit({ event: "pageError", page: number, name: error?.name ?? "Error" }));
    await page.goto(`${pageOrigin}/provider-call.html`);
    await page.waitForFunction(() => typeof window.providerCall === "object");
    return { page: number };
  },
  run: async ({ page, method, args }) => {
    const opened = pages.get(page);
    if (!opened) throw new Error(`page: no page ${page} is open`);
    const value = await opened.page.evaluate(
      ([name, input]) => {
        const target = window.providerCall[name];
        if (typeof target !== "function") throw new Error(`method: ${name} is not a page method`);
        return target.call(window.providerCall, input ?? {});
      },
      [method, args],
    );
    return { value };
  },
  close: async ({ page }) => {
    const opened = pages.get(page);
    pages.delete(page);
    if (opened) await opened.context.close();
    return {};
  },
  quit: async () => {
    await shutdown();
    return {};
  },
};

async function shutdown() {
  await browser.close().catch(() => {});
  server.close();
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
    // Playwright prefixes the page's own message ("page.evaluate: Error: field: reason").
    emit({ event: "error", id, op, message: String(error?.message ?? error).split("\n")[0] });
  }
}

emit({ event: "ready", browserVersion: browser.version(), pageOrigin });
const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => void run(line));
lines.on("close", () => void shutdown());
