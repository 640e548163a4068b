// JSON helpers that must agree with the server: the store applies PATCH pushes and
// optimistic patches with the same RFC 7396 merge the server uses, and evaluates
// query filters and orders locally the way `tether-core`'s `Query` does, so an
// optimistic write lands where the server will put it.

import type { Json, JsonObject, QueryOptions } from "./protocol.js";

function isObject(v: unknown): v is JsonObject {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** RFC 7396 JSON Merge Patch; returns a new object and leaves `target` untouched. */
export function mergePatch(target: JsonObject, patch: JsonObject): JsonObject {
  const out: JsonObject = { ...target };
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else if (isObject(value)) out[key] = mergePatch(isObject(out[key]) ? (out[key] as JsonObject) : {}, value);
    else out[key] = value;
  }
  return out;
}

/** Deep JSON equality (object key order does not matter). */
export function jsonEqual(a: Json | undefined, b: Json | undefined): boolean {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) {
    const bb = b as Json[];
    return a.length === bb.length && a.every((v, i) => jsonEqual(v, bb[i]));
  }
  const ak = Object.keys(a);
  const bo = b as JsonObject;
  return ak.length === Object.keys(bo).length && ak.every((k) => k in bo && jsonEqual((a as JsonObject)[k], bo[k]));
}

/**
 * Whether `data` passes a query's `where` (a `null` value matches a missing field). With
 * `record`, `id` and `version` name its own id and version unless `data` has such a
 * field, as on the server (and in `sortRecords`); without it they are body fields only.
 */
export function matchesWhere(
  where: JsonObject | undefined,
  data: JsonObject,
  record?: { id: string; version: number },
): boolean {
  if (!where) return true;
  return Object.entries(where).every(([k, want]) => jsonEqual(fieldOf(data, k, record), want));
}

function fieldOf(data: JsonObject, field: string, record?: { id: string; version: number }): Json {
  if (Object.prototype.hasOwnProperty.call(data, field)) return data[field] ?? null;
  if (record && field === "id") return record.id;
  if (record && field === "version") return record.version;
  return null;
}

function rank(v: Json): number {
  if (v === null) return 0;
  if (typeof v === "boolean") return 1;
  if (typeof v === "number") return 2;
  if (typeof v === "string") return 3;
  return Array.isArray(v) ? 4 : 5;
}

/** The server's total order over JSON: null < bool < number < string < array < object. */
export function compareJson(a: Json, b: Json): number {
  const ra = rank(a);
  const rb = rank(b);
  if (ra !== rb) return ra - rb;
  if (typeof a === "boolean" || typeof a === "number") return Number(a) - Number(b);
  const [x, y] = typeof a === "string" ? [a, b as string] : [JSON.stringify(a), JSON.stringify(b)];
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Sorts records by a query's `order` (then by id), as the server does. */
export function sortRecords<R extends { id: string; version: number; data: JsonObject }>(
  records: R[],
  order: QueryOptions["order"],
): R[] {
  const byId = (a: R, b: R) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  if (!order) return records.sort(byId);
  const descending = order.startsWith("-");
  const field = descending ? order.slice(1) : order;
  const value = (r: R): Json => {
    if (field in r.data) return r.data[field] as Json;
    if (field === "id") return r.id;
    if (field === "version") return r.version;
    return null;
  };
  return records.sort((a, b) => {
    const o = compareJson(value(a), value(b));
    return (descending ? -o : o) || byId(a, b);
  });
}

/** A deep copy, so callers never mutate what the store holds. */
export function clone<T extends Json>(v: T): T {
  return v === null || typeof v !== "object" ? v : (JSON.parse(JSON.stringify(v)) as T);
}
