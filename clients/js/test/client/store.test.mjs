// The local store against a real server: records that exist at once in a `loading`
// state and fill in, optimistic writes that show at once and roll back on failure,
// live queries, and agreement with what the server holds after a burst of writes.

import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { TetherClient, TetherStore, ServerError } from "../../dist/index.js";
import { startServer, eventually } from "../helpers/server.mjs";

describe("store", () => {
  let server, c, other, store;
  before(async () => {
    server = await startServer();
    c = new TetherClient({ url: server.ws, WebSocket });
    other = new TetherClient({ url: server.ws, WebSocket });
    await Promise.all([c.connect(), other.connect()]);
    store = new TetherStore(c);
  });
  after(async () => {
    c.disconnect();
    other.disconnect();
    await server.cleanup();
  });

  test("a record asked for by id exists at once as loading, then is filled in", async () => {
    await other.create("people", { name: "Ann" }, { id: "ann" });
    const ann = store.record("people", "ann");
    assert.equal(ann.current.status, "loading");
    assert.equal(ann.current.data, null);
    const seen = [];
    ann.onChange((r) => seen.push(r.status));
    await eventually(() => ann.current.status === "present", { what: "ann to load" });
    assert.deepEqual(ann.current.data, { name: "Ann" });
    assert.equal(ann.current.version, 1);
    // ... and stays current.
    await other.patch("people", "ann", { age: 40 });
    await eventually(() => ann.current.data.age === 40, { what: "the patch" });
    assert.equal(ann.current.version, 2);
    assert.deepEqual(seen, ["present", "present"]);
    const ghost = store.record("people", "nobody");
    await eventually(() => ghost.current.status === "absent", { what: "absent" });
    ann.close();
    ghost.close();
  });

  test("an optimistic create shows at once and is confirmed", async () => {
    const todos = store.query("todos");
    await eventually(() => todos.status === "ready", { what: "query ready" });
    const done = store.create("todos", { title: "buy milk" }, { id: "milk" });
    store.flush();
    assert.equal(todos.records.length, 1);
    assert.equal(todos.records[0].pending, 1);
    assert.equal(todos.records[0].version, 0);
    const result = await done;
    assert.equal(result.version, 1);
    await eventually(() => todos.records[0]?.pending === 0 && todos.records[0].version === 1, { what: "confirmation" });
    todos.close();
  });

  test("a failed write rolls back and reports why", async () => {
    await other.create("todos", { title: "taken" }, { id: "taken" });
    const todos = store.query("todos");
    await eventually(() => todos.records.some((r) => r.id === "taken"), { what: "taken" });
    const rollbacks = [];
    store.on("rollback", (r, e) => rollbacks.push([r.id, e.code]));
    // A create of an existing id: visible at once with our data, then back to the server's.
    const create = store.create("todos", { title: "mine" }, { id: "taken" });
    store.flush();
    assert.equal(todos.records.find((r) => r.id === "taken").data.title, "mine");
    await assert.rejects(create, (e) => e instanceof ServerError && e.code === "already_exists");
    assert.equal(todos.records.find((r) => r.id === "taken").data.title, "taken");
    // A patch at a stale version.
    const patch = store.patch("todos", "taken", { title: "stale" }, { version: 5 });
    store.flush();
    assert.equal(todos.records.find((r) => r.id === "taken").data.title, "stale");
    await assert.rejects(patch, (e) => e.code === "version_conflict");
    const taken = todos.records.find((r) => r.id === "taken");
    assert.equal(taken.data.title, "taken");
    assert.equal(taken.error.code, "version_conflict");
    assert.equal(taken.pending, 0);
    // A delete of a missing record never showed anything and leaves nothing.
    await assert.rejects(store.delete("todos", "ghost"), (e) => e.code === "not_found");
    assert.equal(todos.records.some((r) => r.id === "ghost"), false);
    assert.deepEqual(rollbacks, [
      ["taken", "already_exists"],
      ["taken", "version_conflict"],
      ["ghost", "not_found"],
    ]);
    todos.close();
  });

  test("a filtered, ordered query follows writes from anywhere, and optimistic ones locally", async () => {
    for (const [id, n, open] of [["a", 3, true], ["b", 1, true], ["c", 2, false]]) {
      await other.create("jobs", { n, open }, { id });
    }
    const open = store.query("jobs", { where: { open: true }, order: "-n" });
    await eventually(() => open.status === "ready", { what: "ready" });
    assert.deepEqual(open.records.map((r) => r.id), ["a", "b"]);
    const changes = [];
    open.onChange((rs) => changes.push(rs.map((r) => r.id).join(",")));
    // Another client opens c: it enters, in order.
    await other.patch("jobs", "c", { open: true });
    await eventually(() => open.records.length === 3, { what: "c to enter" });
    assert.deepEqual(open.records.map((r) => r.id), ["a", "c", "b"]);
    // Our own patch closes a: it leaves at once, before the server answered.
    const closing = store.patch("jobs", "a", { open: false });
    store.flush();
    assert.deepEqual(open.records.map((r) => r.id), ["c", "b"]);
    const mark = changes.length;
    await closing;
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(open.records.map((r) => r.id), ["c", "b"]);
    // A brand-new record that matches enters optimistically.
    const adding = store.create("jobs", { n: 9, open: true }, { id: "z" });
    store.flush();
    assert.deepEqual(open.records.map((r) => r.id), ["z", "c", "b"]);
    await adding;
    // Between our reply and the server's push, a never blinked back in.
    assert.ok(changes.slice(mark).every((s) => !s.split(",").includes("a")), changes.join(" | "));
    open.close();
  });

  test("after a burst of writes from two clients the store equals the server", async () => {
    const all = store.query("burst");
    await eventually(() => all.status === "ready", { what: "ready" });
    const writes = [];
    for (let i = 0; i < 40; i++) {
      const id = `r${i % 10}`;
      writes.push(
        (i % 2 ? other.upsert("burst", id, { i, by: "other" }) : store.upsert("burst", id, { i, by: "store" })).catch(() => {}),
      );
      if (i % 7 === 0) writes.push(other.delete("burst", `r${(i + 3) % 10}`).catch(() => {}));
    }
    await Promise.all(writes);
    const truth = await other.all("burst");
    await eventually(
      () => JSON.stringify(all.records.map((r) => [r.id, r.version, r.data])) === JSON.stringify(truth.map((r) => [r.id, r.version, r.data])),
      { what: "the store to equal the server" },
    );
    all.close();
  });
});
