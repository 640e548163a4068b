// The inspector page in headless Chromium against a real `tether serve`: what a person
// sees when they open http://127.0.0.1:7070/. Two tabs see each other's edits and each
// other (presence), HTTP API writes appear live, and a server restart is survived: the
// page reconnects and shows what changed while it was away, without a reload.
//
// Chromium is Debian's (/usr/bin/chromium, or CHROMIUM_PATH); `.ci/run` installs it.
// Without it these tests fail rather than skip: a green run must mean the page works.

import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startServer, api } from "../helpers/server.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const OUTPUT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "test-output");
const WAIT = { timeout: 15_000 };

/** The text of a row's data cell, parsed. */
async function rowData(page, id) {
  const text = await page.textContent(`tr[data-id="${id}"] td.data pre`, WAIT);
  return JSON.parse(text);
}

async function waitForRowData(page, id, predicate) {
  await page.waitForFunction(
    ([id, src]) => {
      const pre = document.querySelector(`tr[data-id="${id}"] td.data pre`);
      if (!pre) return false;
      return new Function("d", `return (${src})(d)`)(JSON.parse(pre.textContent));
    },
    [id, predicate.toString()],
    WAIT,
  );
}

const connected = (page) => page.waitForSelector('#conn[data-state="ready"]', WAIT);

describe("inspector in a real browser", () => {
  let server, browser, context;

  before(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`Chromium not found at ${CHROMIUM}: install it (apt-get install -y chromium) or set CHROMIUM_PATH`);
    }
    mkdirSync(OUTPUT, { recursive: true });
    server = await startServer();
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        // Two tabs are driven at once; the one in the background must not have its
        // timers and animation frames throttled (Playwright waits on those).
        "--disable-background-timer-throttling",
        "--disable-renderer-backgrounding",
        "--disable-backgrounding-occluded-windows",
      ],
    });
    context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
  });

  after(async () => {
    await browser?.close();
    await server?.cleanup();
  });

  test("lists resources and shows the selected one's records", async () => {
    await api(server, "PUT", "/api/todos/milk", { title: "Buy milk", done: false });
    await api(server, "PUT", "/api/todos/eggs", { title: "Eggs", done: true });
    await api(server, "PUT", "/api/people/ann", { name: "Ann" });
    const page = await context.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(e));
    await page.goto(`${server.http}/?resource=todos`);
    await connected(page);
    await page.waitForSelector('tr[data-id="milk"]', WAIT);
    assert.deepEqual(await page.$$eval("#rows tr", (trs) => trs.map((tr) => tr.dataset.id)), ["eggs", "milk"]);
    assert.deepEqual(await rowData(page, "milk"), { title: "Buy milk", done: false });
    await page.waitForSelector('nav a[data-resource="people"]', WAIT);
    assert.equal(await page.textContent('nav a.on[data-resource="todos"] .count'), "2");
    assert.equal(await page.textContent("#conn"), "connected");
    // The other resource is one click away.
    await page.click('nav a[data-resource="people"]');
    await page.waitForSelector('tr[data-id="ann"]', WAIT);
    assert.equal(new URL(page.url()).searchParams.get("resource"), "people");
    assert.deepEqual(errors, []);
    await page.close();
  });

  test("two pages: edits, creates and deletes in one appear in the other, and each sees the other", async () => {
    const a = await context.newPage();
    const b = await context.newPage();
    await a.goto(`${server.http}/?resource=todos`);
    await b.goto(`${server.http}/?resource=todos`);
    await Promise.all([connected(a), connected(b)]);
    // Presence: each tab lists both users.
    await a.waitForSelector('#presence[data-count="2"]', WAIT);
    await b.waitForSelector('#presence[data-count="2"]', WAIT);
    const nameA = await a.evaluate(() => window.tether.me);
    const nameB = await b.evaluate(() => window.tether.me);
    assert.notEqual(nameA, nameB);
    await a.waitForSelector(`#presence .user[data-user="${nameB}"]`, WAIT);
    await b.waitForSelector(`#presence .user.me[data-user="${nameB}"]`, WAIT);

    // Edit in A ... (a hidden tab gets no animation frames, which Playwright's clicks
    // wait for, so the tab being driven is brought to the front)
    await a.bringToFront();
    await a.click('tr[data-id="milk"] button.edit');
    await a.fill('tr[data-id="milk"] textarea', JSON.stringify({ title: "Buy oat milk", done: true }));
    await a.click('tr[data-id="milk"] button.save');
    // ... appears in B.
    await waitForRowData(b, "milk", (d) => d.title === "Buy oat milk" && d.done === true);
    assert.equal(await b.getAttribute('tr[data-id="milk"]', "data-version"), "2");

    // Create in B appears in A.
    await b.bringToFront();
    await b.fill("#new-id", "bread");
    await b.fill("#new-data", '{"title": "Bread", "done": false}');
    await b.click("#create");
    await waitForRowData(a, "bread", (d) => d.title === "Bread");

    // Delete in A (it asks once more) disappears from B.
    await a.bringToFront();
    await a.click('tr[data-id="eggs"] button.delete');
    await a.click('tr[data-id="eggs"] button.delete');
    await b.waitForSelector('tr[data-id="eggs"]', { state: "detached", ...WAIT });
    assert.deepEqual(await b.$$eval("#rows tr", (trs) => trs.map((tr) => tr.dataset.id)), ["bread", "milk"]);

    // An edit from a stale version is refused and the page says so.
    await a.click('tr[data-id="bread"] button.edit');
    await api(server, "PATCH", "/api/todos/bread", { done: true });
    await a.waitForSelector('tr[data-id="bread"] .stale', WAIT);
    await a.click('tr[data-id="bread"] button.save');
    await a.waitForFunction(() => document.querySelector("#notice.error")?.textContent.includes("version_conflict"), null, WAIT);
    await waitForRowData(a, "bread", (d) => d.done === true);

    await a.screenshot({ path: join(OUTPUT, "inspector-two-pages.png") });
    await b.close();
    await a.waitForSelector('#presence[data-count="1"]', WAIT);
    await a.close();
  });

  test("a write through the HTTP API appears live", async () => {
    const page = await context.newPage();
    await page.goto(`${server.http}/?resource=todos`);
    await connected(page);
    await api(server, "POST", "/api/todos", { id: "jam", title: "Jam", done: false });
    await waitForRowData(page, "jam", (d) => d.title === "Jam");
    await api(server, "PATCH", "/api/todos/jam", { done: true });
    await waitForRowData(page, "jam", (d) => d.done === true);
    await api(server, "DELETE", "/api/todos/jam");
    await page.waitForSelector('tr[data-id="jam"]', { state: "detached", ...WAIT });
    // A new resource shows up in the list without a reload.
    await api(server, "PUT", "/api/orders/o1", { total: 3 });
    await page.waitForSelector('nav a[data-resource="orders"]', { timeout: 20_000 });
    await page.close();
  });

  test("the page survives a server restart and catches up with what changed meanwhile", async () => {
    const page = await context.newPage();
    await page.goto(`${server.http}/?resource=todos`);
    await connected(page);
    await page.waitForSelector('tr[data-id="milk"]', WAIT);
    await page.evaluate(() => (window.__notReloaded = true));
    const session = await page.evaluate(() => window.tether.client.session);

    const { addr, dataDir } = server;
    await server.stop();
    await page.waitForSelector('#conn[data-state="reconnecting"]', WAIT);
    assert.equal(await page.textContent("#conn"), "reconnecting…");

    // While the page is away, another server process on another port writes to the
    // same data: the page cannot have seen these changes live.
    const side = await startServer({ dataDir });
    await api(side, "PUT", "/api/todos/tea", { title: "Tea", done: false });
    await api(side, "PATCH", "/api/todos/milk", { title: "Milk (changed while away)" });
    await api(side, "DELETE", "/api/todos/bread");
    await side.stop();

    server = await startServer({ listen: addr, dataDir });
    await connected(page);
    await waitForRowData(page, "tea", (d) => d.title === "Tea");
    await waitForRowData(page, "milk", (d) => d.title === "Milk (changed while away)");
    await page.waitForSelector('tr[data-id="bread"]', { state: "detached", ...WAIT });
    assert.equal(await page.evaluate(() => window.__notReloaded), true, "caught up without a reload");
    assert.equal(await page.evaluate(() => window.tether.client.session), session, "resumed its session");
    // And it is live again.
    await api(server, "PUT", "/api/todos/honey", { title: "Honey", done: false });
    await waitForRowData(page, "honey", (d) => d.title === "Honey");
    await page.waitForSelector('#presence[data-count="1"]', WAIT);

    await page.screenshot({ path: join(OUTPUT, "inspector.png"), fullPage: true });
    assert.ok(existsSync(join(OUTPUT, "inspector.png")));
    await page.close();
  });
});
