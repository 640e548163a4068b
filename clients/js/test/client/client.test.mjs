// The client against a real `tether serve`: requests and typed errors, subscriptions
// and their pushes, presence and topics, and the hard part: reconnecting and resuming
// with nothing missed and nothing applied twice, across a cut connection, a restarted
// server, a lost message and a replaced store.

import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import {
  TetherClient,
  ServerError,
  TimeoutError,
  ConnectionLostError,
  ClosedError,
} from "../../dist/index.js";
import { startServer, api, eventually, tempDataDir } from "../helpers/server.mjs";
import { controlledSockets } from "../helpers/sockets.mjs";

const fast = { initialDelayMs: 50, maxDelayMs: 400 };

function client(server, options = {}) {
  return new TetherClient({ url: server.ws, WebSocket, reconnect: fast, ...options });
}

describe("requests", () => {
  let server, c;
  before(async () => {
    server = await startServer();
    c = client(server);
    await c.connect();
  });
  after(async () => {
    c.disconnect();
    await server.cleanup();
  });

  test("connect emits init with the session and reaches ready", async () => {
    const other = client(server);
    const events = [];
    other.on("open", () => events.push("open"));
    other.on("init", (s) => events.push(`init:${s.slice(0, 2)}`));
    other.on("ready", () => events.push("ready"));
    await other.connect();
    assert.deepEqual(events, ["open", "init:c-", "ready"]);
    assert.equal(other.state, "ready");
    assert.match(other.session, /^c-/);
    assert.ok(other.epoch);
    other.disconnect();
    assert.equal(other.state, "closed");
  });

  test("writes and reads round trip", async () => {
    const created = await c.create("todos", { title: "milk", done: false }, { id: "milk" });
    assert.equal(created.id, "milk");
    assert.equal(created.version, 1);
    assert.ok(created.pos >= 1);
    assert.deepEqual(created.record.data, { title: "milk", done: false });
    const patched = await c.patch("todos", "milk", { done: true }, { version: 1 });
    assert.equal(patched.version, 2);
    assert.deepEqual((await c.get("todos", "milk")).data, { title: "milk", done: true });
    await c.upsert("todos", "eggs", { title: "eggs", done: false });
    await c.update("todos", "eggs", { title: "eggs", done: false, n: 12 });
    assert.deepEqual((await c.all("todos")).map((r) => r.id), ["eggs", "milk"]);
    assert.deepEqual((await c.query("todos", { where: { done: false } })).map((r) => r.id), ["eggs"]);
    const deleted = await c.delete("todos", "eggs");
    assert.equal(deleted.record, null);
    assert.equal(await c.get("todos", "eggs"), null);
    const generated = await c.create("todos", { title: "no id" });
    assert.ok(generated.id.length > 0);
  });

  test("server errors are typed, with code and stored version", async () => {
    await c.create("things", { a: 1 }, { id: "x" });
    await assert.rejects(c.create("things", { a: 2 }, { id: "x" }), (e) => {
      assert.ok(e instanceof ServerError);
      assert.equal(e.code, "already_exists");
      assert.equal(e.version, 1);
      return true;
    });
    await assert.rejects(c.patch("things", "x", { a: 3 }, { version: 7 }), (e) => e instanceof ServerError && e.code === "version_conflict" && e.version === 1);
    await assert.rejects(c.update("things", "nope", {}), (e) => e instanceof ServerError && e.code === "not_found");
    await assert.rejects(c.get("bad name!", "x"), (e) => e instanceof ServerError && e.code === "invalid_name");
    // The connection stays usable after errors.
    await c.ping();
  });

  test("a request times out with TimeoutError when no reply comes", async () => {
    const net = controlledSockets();
    const lonely = new TetherClient({ url: server.ws, WebSocket: net.WebSocket, reconnect: { initialDelayMs: 20, maxDelayMs: 50 } });
    await lonely.connect();
    net.blocked = true;
    net.cut();
    await assert.rejects(lonely.get("todos", "milk", { timeoutMs: 150 }), (e) => e instanceof TimeoutError && e.timeoutMs === 150);
    lonely.disconnect();
  });

  test("requests before connect() or after disconnect() fail with ClosedError", async () => {
    const idle = client(server);
    await assert.rejects(idle.ping(), ClosedError);
    await assert.rejects(idle.ready(), ClosedError);
  });
});

describe("subscriptions", () => {
  let server, watcher, writer;
  before(async () => {
    server = await startServer();
    watcher = client(server);
    writer = client(server);
    await Promise.all([watcher.connect(), writer.connect()]);
  });
  after(async () => {
    watcher.disconnect();
    writer.disconnect();
    await server.cleanup();
  });

  test("a resource subscription gets a snapshot, then PUT, PATCH and DELETE", async () => {
    await writer.create("notes", { text: "first" }, { id: "n1" });
    const sub = watcher.subscribe({ resource: "notes" });
    await sub.ready();
    assert.deepEqual(sub.list().map((r) => r.id), ["n1"]);
    const seen = [];
    watcher.on("PUT", (m) => seen.push(`PUT ${m.id}`));
    watcher.on("PATCH", (m) => seen.push(`PATCH ${m.id}`));
    watcher.on("DELETE", (m) => seen.push(`DELETE ${m.id}`));
    await writer.create("notes", { text: "second" }, { id: "n2" });
    await writer.patch("notes", "n1", { text: "first!", extra: true });
    await writer.patch("notes", "n1", { extra: null });
    await writer.delete("notes", "n2");
    await eventually(() => seen.length === 4, { what: "four pushes" });
    assert.deepEqual(seen, ["PUT n2", "PATCH n1", "PATCH n1", "DELETE n2"]);
    // The merge patches were applied to the held record.
    assert.deepEqual(sub.records.get("n1").data, { text: "first!" });
    assert.equal(sub.records.get("n1").version, 3);
    assert.equal(sub.records.has("n2"), false);
    await sub.unsubscribe();
    assert.equal(sub.state, "closed");
  });

  test("a query subscription sees records enter and leave", async () => {
    const sub = watcher.subscribe({ resource: "tasks", where: { done: false } });
    await sub.ready();
    const events = [];
    sub.on("put", (r) => events.push(`put ${r.id}`));
    sub.on("delete", (id) => events.push(`delete ${id}`));
    await writer.create("tasks", { done: false }, { id: "t1" });
    await writer.patch("tasks", "t1", { done: true });
    await eventually(() => events.length === 2, { what: "enter and leave" });
    assert.deepEqual(events, ["put t1", "delete t1"]);
    assert.equal(sub.records.size, 0);
    await sub.unsubscribe();
  });

  test("a record subscription before the record exists", async () => {
    const sub = watcher.subscribe({ resource: "profiles", id: "ann" });
    await sub.ready();
    assert.equal(sub.records.size, 0);
    await writer.upsert("profiles", "ann", { name: "Ann" });
    await eventually(() => sub.records.get("ann")?.data.name === "Ann", { what: "ann to appear" });
    await sub.unsubscribe();
  });

  test("a failed subscribe rejects ready() with a ServerError", async () => {
    const sub = watcher.subscribe({ resource: "bad name!" });
    await assert.rejects(sub.ready(), (e) => e instanceof ServerError && e.code === "invalid_name");
    assert.equal(sub.state, "failed");
  });

  test("topics deliver published messages", async () => {
    const sub = watcher.subscribe({ topic: "logs/job-1" });
    await sub.ready();
    const lines = [];
    sub.on("message", (data, topic) => lines.push([topic, data]));
    await writer.publish("logs/job-1", { line: "step 1" });
    await api(server, "POST", "/publish/logs/job-1", { line: "step 2" });
    await eventually(() => lines.length === 2, { what: "two topic messages" });
    assert.deepEqual(lines, [
      ["logs/job-1", { line: "step 1" }],
      ["logs/job-1", { line: "step 2" }],
    ]);
    await sub.unsubscribe();
  });

  test("presence: members are reported on join and on others' join and leave", async () => {
    const seen = [];
    watcher.on("members", (room, members) => seen.push([room, members]));
    assert.deepEqual(await watcher.join("lobby", "ann"), ["ann"]);
    assert.deepEqual(await writer.join("lobby", "bob"), ["ann", "bob"]);
    await eventually(() => watcher.members("lobby").length === 2, { what: "bob to join" });
    await writer.leave("lobby");
    await eventually(() => watcher.members("lobby").length === 1, { what: "bob to leave" });
    assert.deepEqual(watcher.members("lobby"), ["ann"]);
    assert.deepEqual(seen.at(-1), ["lobby", ["ann"]]);
    await watcher.leave("lobby");
  });
});

describe("reconnect and resume", () => {
  let server, writer;
  before(async () => {
    server = await startServer();
    writer = client(server);
    await writer.connect();
  });
  after(async () => {
    writer.disconnect();
    await server.cleanup();
  });

  test("changes made while away arrive exactly once after the reconnect, on every subscription", async () => {
    const net = controlledSockets();
    const c = new TetherClient({ url: server.ws, WebSocket: net.WebSocket, reconnect: { initialDelayMs: 30, maxDelayMs: 100 } });
    await c.connect();
    const session = c.session;
    await writer.create("items", { n: 0 }, { id: "i0" });
    const all = c.subscribe({ resource: "items" });
    const odd = c.subscribe({ resource: "items", where: { odd: true } });
    const one = c.subscribe({ resource: "items", id: "i0" });
    await Promise.all([all.ready(), odd.ready(), one.ready()]);
    const positions = { [all.name]: [], [odd.name]: [], [one.name]: [] };
    for (const t of ["PUT", "PATCH", "DELETE"]) c.on(t, (m, sub) => positions[sub.name].push(m.pos));
    const states = [];
    c.on("state", (s) => states.push(s));

    net.blocked = true;
    net.cut();
    await eventually(() => c.state === "reconnecting", { what: "reconnecting" });
    // While it is away: new records, changes, a delete.
    for (let i = 1; i <= 5; i++) await writer.create("items", { n: i, odd: i % 2 === 1 }, { id: `i${i}` });
    await writer.patch("items", "i0", { n: 100 });
    await writer.delete("items", "i2");
    net.blocked = false;
    await c.ready();
    // And live ones after it is back.
    await writer.patch("items", "i1", { odd: false });
    await writer.create("items", { n: 6 }, { id: "i6" });

    await eventually(() => all.records.has("i6") && !odd.records.has("i1"), { what: "everything to arrive" });
    assert.equal(c.session, session, "the session was taken over");
    assert.deepEqual(all.list().map((r) => r.id), ["i0", "i1", "i3", "i4", "i5", "i6"]);
    assert.deepEqual(odd.list().map((r) => r.id), ["i3", "i5"]);
    assert.deepEqual(one.records.get("i0").data, { n: 100 });
    // Every position once, in order, per subscription.
    for (const [name, list] of Object.entries(positions)) {
      assert.deepEqual(list, [...list].sort((a, b) => a - b), `${name} in order`);
      assert.equal(new Set(list).size, list.length, `${name} without duplicates`);
    }
    assert.equal(positions[all.name].length, 9);
    assert.ok(states.includes("reconnecting") && states.at(-1) === "ready");
    c.disconnect();
  });

  test("a read in flight when the connection drops is sent again; a write fails with ConnectionLostError", async () => {
    const net = controlledSockets();
    const c = new TetherClient({ url: server.ws, WebSocket: net.WebSocket, reconnect: { initialDelayMs: 30, maxDelayMs: 60 } });
    await c.connect();
    // Swallow replies so both requests are still in flight when the socket is cut.
    net.dropIncoming = (text) => text.includes('"result"');
    const read = c.ping();
    const write = c.create("items", { n: 99 }, { id: "lost" });
    await new Promise((r) => setTimeout(r, 50));
    net.dropIncoming = null;
    net.cut();
    await assert.rejects(write, ConnectionLostError);
    await read;
    c.disconnect();
  });

  test("a connection that stops answering pings is dropped and replaced", async () => {
    const net = controlledSockets();
    const c = new TetherClient({ url: server.ws, WebSocket: net.WebSocket, pingIntervalMs: 100, reconnect: { initialDelayMs: 20, maxDelayMs: 50 } });
    await c.connect();
    const sub = c.subscribe({ resource: "pings" });
    await sub.ready();
    // The first connection goes silent (half-open): nothing it receives arrives.
    net.dropIncoming = (_text, connection) => connection === 1;
    await eventually(() => net.opened === 2 && c.state === "ready", { what: "a second connection" });
    await writer.create("pings", { ok: true }, { id: "p1" });
    await eventually(() => sub.records.has("p1"), { what: "live again" });
    c.disconnect();
  });

  test("flush releases the subscriptions of a dropped record", async () => {
    const c = client(server);
    await c.connect();
    const one = c.subscribe({ resource: "flushed", id: "f1" });
    const other = c.subscribe({ resource: "flushed", id: "f2" });
    await Promise.all([one.ready(), other.ready()]);
    assert.deepEqual(await c.flush("flushed", "f1"), [one.name]);
    assert.equal(one.state, "closed");
    await writer.create("flushed", { n: 1 }, { id: "f1" });
    await writer.create("flushed", { n: 2 }, { id: "f2" });
    await eventually(() => other.records.has("f2"), { what: "f2" });
    assert.equal(one.records.size, 0);
    c.disconnect();
  });

  test("a skipped message number makes the client reconnect and resume", async () => {
    const net = controlledSockets();
    const c = new TetherClient({ url: server.ws, WebSocket: net.WebSocket, reconnect: { initialDelayMs: 30, maxDelayMs: 60 } });
    await c.connect();
    const sub = c.subscribe({ resource: "gaps" });
    await sub.ready();
    const gaps = [];
    c.on("gap", (g) => gaps.push(g));
    let dropped = false;
    net.dropIncoming = (text) => {
      if (!dropped && text.includes('"id":"g2"')) return (dropped = true);
      return false;
    };
    for (let i = 1; i <= 3; i++) await writer.create("gaps", { i }, { id: `g${i}` });
    await eventually(() => sub.records.size === 3, { what: "all three records after the gap" });
    assert.equal(gaps.length, 1);
    assert.equal(net.opened, 2, "one reconnect");
    assert.deepEqual(sub.list().map((r) => r.data.i), [1, 2, 3]);
    c.disconnect();
  });
});

describe("server restarts", () => {
  test("the client reconnects to a restarted server and catches up", async () => {
    let server = await startServer();
    const c = client(server);
    await c.connect();
    const sub = c.subscribe({ resource: "docs" });
    await sub.ready();
    await c.create("docs", { v: 1 }, { id: "a" });
    const { addr, dataDir } = server;
    await server.stop();
    await eventually(() => c.state === "reconnecting", { what: "reconnecting" });
    // The server comes back on the same port with the same data, and is written to
    // before the client returns (the client's next attempt is at least 50 ms away).
    server = await startServer({ listen: addr, dataDir });
    try {
      await api(server, "PUT", "/api/docs/b", { v: 2 });
      await api(server, "PATCH", "/api/docs/a", { v: 10 });
      await c.ready();
      await eventually(() => sub.records.get("a")?.data.v === 10 && sub.records.has("b"), { what: "catch up" });
    } finally {
      c.disconnect();
      await server.cleanup();
    }
  });

  test("a server with another store answers with a resync", async () => {
    let server = await startServer();
    const c = client(server);
    await c.connect();
    const sub = c.subscribe({ resource: "docs" });
    await sub.ready();
    await c.create("docs", { old: true }, { id: "old" });
    await eventually(() => sub.records.has("old"), { what: "old" });
    const resyncs = [];
    c.on("resync", (s, reason) => resyncs.push([s.name, reason]));
    const { addr } = server;
    await server.cleanup();
    const fresh = tempDataDir();
    server = await startServer({ listen: addr, dataDir: fresh });
    await api(server, "PUT", "/api/docs/new", { new: true });
    try {
      await eventually(() => resyncs.length === 1, { what: "a resync" });
      assert.deepEqual(resyncs, [[sub.name, "epoch_changed"]]);
      // The old store's record is gone; the new one's arrives (in the resync snapshot or
      // right after it, depending on who was first).
      await eventually(() => sub.records.has("new"), { what: "the new store's record" });
      assert.deepEqual(sub.list().map((r) => r.id), ["new"]);
    } finally {
      c.disconnect();
      await server.cleanup();
    }
  });
});
