// With auth on (docs/security.md), the client sends its bearer token as the WebSocket
// subprotocols ["bearer", token] (browsers cannot set headers), and the inspector takes
// one from its URL fragment (`/#token=...`), which never reaches server logs.
//
// Runs when the server binary has `--auth-config`; an older one skips it with a reason.

import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import WebSocket from "ws";
import { chromium } from "playwright-core";
import { TetherClient, ClosedError } from "../../dist/index.js";
import { startServer, tempDataDir, tetherBinary } from "../helpers/server.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SECRET = "a-test-secret-of-at-least-thirty-two-bytes";
const supported = execFileSync(tetherBinary(), ["serve", "--help"]).toString().includes("--auth-config");

/** An HS256 JWT, as an identity provider would issue it. */
function jwt(claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const unsigned = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ exp: Math.floor(Date.now() / 1000) + 600, ...claims })}`;
  return `${unsigned}.${createHmac("sha256", SECRET).update(unsigned).digest("base64url")}`;
}

describe("auth", { skip: !supported && "this tether binary has no --auth-config" }, () => {
  let server;
  before(async () => {
    const dir = tempDataDir();
    const config = join(dir, "auth.toml");
    writeFileSync(
      config,
      [
        "[jwt]",
        `secret = "${SECRET}"`,
        '[resources."*"]',
        'read = "token.sub != null"',
        'write = "token.sub != null"',
        "[rooms]",
        'join = "token.sub != null"',
      ].join("\n"),
    );
    server = await startServer({ dataDir: dir, args: ["--auth-config", config] });
  });
  after(async () => {
    await server?.cleanup();
  });

  test("the client is refused without a token and works with one", async () => {
    const anonymous = new TetherClient({ url: server.ws, WebSocket, reconnect: false });
    await assert.rejects(anonymous.connect(), ClosedError);
    const ann = new TetherClient({ url: server.ws, WebSocket, token: () => jwt({ sub: "ann" }) });
    await ann.connect();
    assert.equal((await ann.create("todos", { title: "milk" }, { id: "milk" })).version, 1);
    assert.deepEqual(await ann.join("inspector", "ann"), ["ann"]);
    ann.disconnect();
  });

  test("the inspector uses the token in its URL fragment", async () => {
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"] });
    try {
      const page = await browser.newPage();
      await page.goto(`${server.http}/?resource=todos#token=${jwt({ sub: "bob" })}`);
      await page.waitForSelector('#conn[data-state="ready"]', { timeout: 15_000 });
      await page.waitForSelector('tr[data-id="milk"]', { timeout: 15_000 });
      await page.waitForSelector('nav a[data-resource="todos"]', { timeout: 15_000 });
      // With auth the server names members by their token's subject.
      await page.waitForSelector('#presence .user.me[data-user="bob"]', { timeout: 15_000 });
      assert.ok((await page.getAttribute('nav a[data-resource="todos"]', "href")).includes("#token="));
    } finally {
      await browser.close();
    }
  });
});
