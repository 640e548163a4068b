// The JSON rules the store evaluates locally must be the server's (RFC 7396 merge,
// tether-core's filter and order), or optimistic results would land in the wrong place.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mergePatch, matchesWhere, compareJson, sortRecords, jsonEqual } from "../../dist/index.js";

test("merge patch follows RFC 7396 and does not mutate its input", () => {
  const target = { a: "b", c: { d: "e", f: "g" }, keep: [1, 2] };
  const out = mergePatch(target, { a: "z", c: { f: null, h: 1 }, keep: [3], n: { x: null } });
  assert.deepEqual(out, { a: "z", c: { d: "e", h: 1 }, keep: [3], n: {} });
  assert.deepEqual(target, { a: "b", c: { d: "e", f: "g" }, keep: [1, 2] });
  assert.deepEqual(mergePatch({ a: [1] }, { a: { b: 1 } }), { a: { b: 1 } });
});

test("where: JSON equality on top-level fields; null matches a missing field", () => {
  assert.ok(matchesWhere({ done: false, gone: null }, { done: false }));
  assert.ok(!matchesWhere({ done: false }, { done: 0 }));
  assert.ok(matchesWhere({ tags: ["a", { b: 1 }] }, { tags: ["a", { b: 1 }] }));
  assert.ok(!matchesWhere({ tags: ["a"] }, { tags: ["a", "b"] }));
  assert.ok(jsonEqual({ a: 1, b: 2 }, { b: 2, a: 1 }));
});

test("where: id and version are the record's own unless the data has them", () => {
  const own = { id: "a", version: 3 };
  assert.ok(matchesWhere({ id: "a", version: 3, n: 1 }, { n: 1 }, own));
  assert.ok(!matchesWhere({ id: "b" }, { n: 1 }, own));
  assert.ok(!matchesWhere({ version: "3" }, { n: 1 }, own));
  assert.ok(!matchesWhere({ id: null }, {}, own));
  assert.ok(matchesWhere({ version: 7 }, { version: 7 }, own));
  assert.ok(!matchesWhere({ version: 3 }, { version: null }, own));
  // Only the data's own fields count, not what every object inherits.
  assert.ok(matchesWhere({ toString: null }, {}, own));
});

test("order: null < bool < number < string < array < object, ties by id", () => {
  const values = [{ x: 1 }, [1], "b", "a", 2, 1.5, true, false, null];
  assert.deepEqual([...values].sort(compareJson), [null, false, true, 1.5, 2, "a", "b", [1], { x: 1 }]);
  const rs = [
    { id: "c", version: 1, data: { n: 1 } },
    { id: "a", version: 3, data: { n: 2 } },
    { id: "b", version: 2, data: { n: 1 } },
  ];
  assert.deepEqual(sortRecords([...rs], "-n").map((r) => r.id), ["a", "b", "c"]);
  assert.deepEqual(sortRecords([...rs], "n").map((r) => r.id), ["b", "c", "a"]);
  assert.deepEqual(sortRecords([...rs], "-version").map((r) => r.id), ["a", "b", "c"]);
  assert.deepEqual(sortRecords([...rs]).map((r) => r.id), ["a", "b", "c"]);
});
