// A headless Chromium for the Python tests, driven by playwright-core over a line protocol.
//
//   node tests/browser/driver.cjs            (NODE_PATH must reach playwright-core;
//                                             OO_CHROMIUM is the browser, default /usr/bin/chromium)
//
// stdin: one JSON command per line; stdout: one JSON answer per line, in order,
// `{"ok": true, "value": ...}` or `{"ok": false, "error": "..."}`. Commands:
//   {"op": "open", "url": "..."}                         goto, waits for the load event
//   {"op": "wait", "expression": "...", "timeout_ms": n} until the JS expression is truthy; its value
//   {"op": "evaluate", "expression": "..."}              the expression's JSON value
//   {"op": "screenshot", "path": "..."}                  full page PNG
//   {"op": "viewport", "width": n, "height": n}          resizes the page (a phone, a desktop)
//   {"op": "problems"}                                   console errors, page errors, failed requests so far
//   {"op": "close"}                                      closes the browser and exits
// The first line written is `{"ok": true, "value": {"browser": "<version>"}}` once Chromium is up.
"use strict";

const readline = require("node:readline");
const { chromium } = require("playwright-core");

const EXECUTABLE = process.env.OO_CHROMIUM || "/usr/bin/chromium";
// Quiet, self-contained: no sandbox (root in CI), no GPU, nothing phoning home.
const ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

function answer(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

async function main() {
  const browser = await chromium.launch({ executablePath: EXECUTABLE, headless: true, args: ARGS });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const problems = [];
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push("console: " + msg.text());
  });
  page.on("pageerror", (error) => problems.push("page error: " + error.message));
  page.on("requestfailed", (request) =>
    problems.push("request failed: " + request.url() + " (" + (request.failure() || {}).errorText + ")")
  );

  const commands = {
    open: async (cmd) => {
      const response = await page.goto(cmd.url, { waitUntil: "load", timeout: cmd.timeout_ms || 30000 });
      return { status: response ? response.status() : null };
    },
    // Polls with evaluate rather than waitForFunction: the latter evals a string inside
    // the page, which the dashboard's Content-Security-Policy (rightly) forbids.
    wait: async (cmd) => {
      const deadline = Date.now() + (cmd.timeout_ms || 30000);
      let last;
      for (;;) {
        try {
          last = await page.evaluate(cmd.expression);
          if (last) return last;
        } catch (error) {
          last = "threw: " + error.message;
        }
        if (Date.now() > deadline) {
          throw new Error("timed out after " + (cmd.timeout_ms || 30000) + " ms waiting for " + cmd.expression + " (last: " + JSON.stringify(last) + ")");
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    evaluate: async (cmd) => page.evaluate(cmd.expression),
    screenshot: async (cmd) => {
      await page.screenshot({ path: cmd.path, fullPage: true });
      return cmd.path;
    },
    viewport: async (cmd) => {
      await page.setViewportSize({ width: cmd.width, height: cmd.height });
      return { width: cmd.width, height: cmd.height };
    },
    problems: async () => problems.slice(),
    close: async () => {
      await browser.close();
      return true;
    },
  };

  answer({ ok: true, value: { browser: browser.version() } });
  const lines = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let cmd;
    try {
      cmd = JSON.parse(line);
    } catch (error) {
      answer({ ok: false, error: "not a JSON command: " + line.slice(0, 200) });
      continue;
    }
    const run = commands[cmd.op];
    if (!run) {
      answer({ ok: false, error: "unknown op " + JSON.stringify(cmd.op) });
      continue;
    }
    try {
      const value = await run(cmd);
      answer({ ok: true, value: value === undefined ? null : value });
    } catch (error) {
      answer({ ok: false, error: String((error && error.message) || error) });
    }
    if (cmd.op === "close") break;
  }
  // stdin closed (the test ended) or close: never leave a browser behind.
  await browser.close().catch(() => {});
  process.exit(0);
}

main().catch((error) => {
  answer({ ok: false, error: "could not start Chromium at " + EXECUTABLE + ": " + String((error && error.message) || error) });
  process.exit(1);
});
