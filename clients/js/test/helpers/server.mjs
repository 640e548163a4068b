// Starts a real `tether serve` for the tests: the client is only worth trusting if it
// is tested against the server it talks to, not a mock of it.
//
// The binary comes from `TETHER_BIN` when set (scripts/test.sh builds it once), else
// from `cargo build -p tether` here, located through `cargo metadata` so a custom
// CARGO_TARGET_DIR (CI keeps one outside the clone) is respected.

import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = join(here, "..", "..", "..", "..");

let binary;

/** The path of the `tether` binary, building it first unless TETHER_BIN names one. */
export function tetherBinary() {
  if (binary) return binary;
  if (process.env.TETHER_BIN) {
    binary = process.env.TETHER_BIN;
  } else {
    execFileSync("cargo", ["build", "-p", "tether", "--quiet"], { cwd: repoRoot, stdio: ["ignore", "inherit", "inherit"] });
    const meta = JSON.parse(
      execFileSync("cargo", ["metadata", "--format-version", "1", "--no-deps"], { cwd: repoRoot, maxBuffer: 64 << 20 }).toString(),
    );
    binary = join(meta.target_directory, "debug", process.platform === "win32" ? "tether.exe" : "tether");
  }
  if (!existsSync(binary)) throw new Error(`no tether binary at ${binary}`);
  return binary;
}

/** A fresh data directory, removed by `cleanup()`. */
export function tempDataDir() {
  return mkdtempSync(join(tmpdir(), "tether-js-"));
}

/**
 * Starts `tether serve` on `listen` (default an ephemeral port) with `dataDir` (default
 * a new temporary one) and extra `args`, and resolves once it printed its address.
 */
export async function startServer({ dataDir = tempDataDir(), listen = "127.0.0.1:0", args = [] } = {}) {
  const child = spawn(tetherBinary(), ["serve", "--listen", listen, "--data", dataDir, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, TETHER_LOG: process.env.TETHER_LOG ?? "warn" },
  });
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
    if (process.env.TETHER_TEST_VERBOSE) process.stderr.write(d);
  });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const addr = await new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error(`tether did not start within 30 s: ${stderr}`)), 30_000);
    lines.once("line", (line) => {
      clearTimeout(timer);
      const m = /listening on http:\/\/(\S+)/.exec(line);
      if (m) resolve(m[1]);
      else reject(new Error(`unexpected first line from tether: ${line}`));
    });
    exited.then(({ code }) => reject(new Error(`tether exited with ${code} before listening: ${stderr}`)));
  });
  return {
    addr,
    dataDir,
    http: `http://${addr}`,
    ws: `ws://${addr}/ws`,
    /** Stops the server gracefully (SIGTERM) and waits for it to exit. */
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
    /** Stops the server and removes its data directory. */
    async cleanup() {
      await this.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
    stderr: () => stderr,
  };
}

/** JSON over the HTTP API. */
export async function api(server, method, path, body) {
  const res = await fetch(server.http + path, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes. */
export async function eventually(check, { timeoutMs = 5_000, intervalMs = 20, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ""}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
