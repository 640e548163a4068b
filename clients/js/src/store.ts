// A local, live copy of the records an application uses (seed 000's store).
//
// Why it is shaped this way:
// - Asking for a record never blocks: `record()` instantiates it at once in a
//   `loading` state and a record subscription fills it in, then keeps it current
//   ("act aggressively on the promise" of seed 000).
// - Each record keeps the server's confirmed state (`base`) apart from the writes of
//   this client that are not acknowledged yet (`ops`). What the application sees is
//   the base with the ops applied on top, so an optimistic write shows at once, a
//   failed one rolls back by simply dropping its op, and a push from the server that
//   arrives meanwhile is never overwritten by a stale guess.
// - Several subscriptions (a record, several queries) can report the same record. Every
//   report carries the change-log position it reflects, and the store keeps the
//   newest, so the order in which subscriptions happen to deliver does not matter.
// - Query results are evaluated locally with the server's own filter and order rules,
//   so an optimistic write enters or leaves a query where the server will put it.

import { newId, type Subscription, type TetherClient, type WriteResult } from "./client.js";
import { Emitter, type Unsubscribe } from "./emitter.js";
import { TetherError } from "./errors.js";
import { clone, matchesWhere, mergePatch, sortRecords } from "./json.js";
import type { JsonObject, QueryOptions, WireRecord } from "./protocol.js";

export type RecordStatus = "loading" | "present" | "absent";

/** What the application sees of a record: an immutable snapshot, replaced on every change. */
export interface StoreRecord {
  readonly resource: string;
  readonly id: string;
  /** `loading` until the server answered; then `present` or `absent` (optimistic writes included). */
  readonly status: RecordStatus;
  /** The server's confirmed version (0 when unknown or never existed). */
  readonly version: number;
  /** The data with this client's unacknowledged writes applied; `null` when absent or loading. */
  readonly data: JsonObject | null;
  /** How many of this client's writes to it await acknowledgement. */
  readonly pending: number;
  /** Why the latest optimistic write was rolled back, until the next successful one. */
  readonly error: TetherError | undefined;
}

type WriteKind = "create" | "update" | "upsert" | "patch" | "delete";

interface Op {
  seq: number;
  kind: WriteKind;
  data: JsonObject;
}

class Entry {
  /** The server state at `basePos`; undefined until the server said anything. */
  base: { version: number; data: JsonObject | null } | undefined;
  basePos = -1;
  ops: Op[] = [];
  handles = 0;
  error: TetherError | undefined;
  view!: StoreRecord;
  readonly listeners = new Set<(r: StoreRecord) => void>();

  constructor(
    readonly resource: string,
    readonly id: string,
  ) {
    this.refresh();
  }

  /** The data the application should see: the base with pending writes applied. */
  visible(): JsonObject | null {
    let data = this.base?.data ?? null;
    for (const op of this.ops) {
      if (op.kind === "delete") data = null;
      else if (op.kind === "patch") data = data === null ? null : mergePatch(data, op.data);
      else data = op.data;
    }
    return data;
  }

  refresh(): void {
    const data = this.visible();
    const known = this.base !== undefined || this.ops.length > 0;
    this.view = Object.freeze({
      resource: this.resource,
      id: this.id,
      status: !known ? "loading" : data === null ? "absent" : "present",
      version: this.base?.version ?? 0,
      data: data === null ? null : clone(data),
      pending: this.ops.length,
      error: this.error,
    });
  }
}

/** A live record: `current` is always the newest snapshot. */
export interface RecordHandle {
  readonly current: StoreRecord;
  /** Calls `fn` with the new snapshot after every change. */
  onChange(fn: (record: StoreRecord) => void): Unsubscribe;
  /** Stops watching; the store may forget the record. */
  close(): void;
}

/** A live query result. */
export interface LiveQuery {
  /** `loading` until the first snapshot. */
  readonly status: "loading" | "ready";
  /** The matching records, ordered like the server orders them. */
  readonly records: StoreRecord[];
  /** The underlying subscription (for its events, name and position). */
  readonly subscription: Subscription;
  onChange(fn: (records: StoreRecord[]) => void): Unsubscribe;
  close(): void;
}

interface StoreEvents {
  /** Records changed (batched per microtask). */
  change: (records: StoreRecord[]) => void;
  /** An optimistic write failed and was rolled back. */
  rollback: (record: StoreRecord, error: TetherError) => void;
}

class Query implements LiveQuery {
  status: "loading" | "ready" = "loading";
  readonly members = new Set<string>();
  records: StoreRecord[] = [];
  readonly listeners = new Set<(records: StoreRecord[]) => void>();

  constructor(
    private readonly store: TetherStore,
    readonly resource: string,
    readonly options: QueryOptions,
    readonly subscription: Subscription,
  ) {}

  onChange(fn: (records: StoreRecord[]) => void): Unsubscribe {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  close(): void {
    this.store.closeQuery(this);
  }

  /** Members from the server, plus records with pending writes, that match locally. */
  recompute(entries: Map<string, Entry> | undefined): void {
    const out: StoreRecord[] = [];
    for (const e of entries?.values() ?? []) {
      if (!this.members.has(e.id) && e.ops.length === 0) continue;
      const data = e.view.data;
      if (data !== null && matchesWhere(this.options.where, data, e.view)) out.push(e.view);
    }
    this.records = sortRecords(out as { id: string; version: number; data: JsonObject }[], this.options.order) as StoreRecord[];
  }
}

export class TetherStore extends Emitter<StoreEvents> {
  private readonly entries = new Map<string, Map<string, Entry>>();
  private readonly queries = new Set<Query>();
  private readonly recordSubs = new Map<string, { sub: Subscription; handles: number }>();
  private seq = 0;
  private epoch: string | undefined;
  private readonly dirty = new Set<Entry>();
  private readonly dirtyQueries = new Set<Query>();
  private flushScheduled = false;

  constructor(readonly client: TetherClient) {
    super();
  }

  // ----- reading ------------------------------------------------------------------------

  /** The current snapshot of a record the store holds (status `loading` if it holds nothing). */
  peek(resource: string, id: string): StoreRecord {
    return this.entries.get(resource)?.get(id)?.view ?? new Entry(resource, id).view;
  }

  /**
   * A live record. It exists at once, `loading` until the server answers, then kept
   * current by a record subscription shared by every handle on the same record.
   */
  record(resource: string, id: string): RecordHandle {
    const entry = this.entry(resource, id);
    entry.handles++;
    const key = `${resource}\u0000${id}`;
    let shared = this.recordSubs.get(key);
    if (!shared) {
      const sub = this.client.subscribe({ resource, id });
      shared = { sub, handles: 0 };
      this.recordSubs.set(key, shared);
      this.feed(sub, resource, { deletes: true });
    }
    shared.handles++;
    let closed = false;
    return {
      get current() {
        return entry.view;
      },
      onChange: (fn) => {
        entry.listeners.add(fn);
        return () => entry.listeners.delete(fn);
      },
      close: () => {
        if (closed) return;
        closed = true;
        entry.handles--;
        if (--shared!.handles === 0) {
          this.recordSubs.delete(key);
          shared!.sub.unsubscribe().catch(() => {});
        }
        this.maybeEvict(entry);
      },
    };
  }

  /** A live query (without `where`: the whole resource), kept current by a subscription. */
  query(resource: string, options: QueryOptions = {}): LiveQuery {
    const sub = this.client.subscribe({ resource, ...options });
    const q = new Query(this, resource, options, sub);
    this.queries.add(q);
    // Without a filter a DELETE can only mean the record is gone; with one it may
    // just have left the query, and the record lives on.
    this.feed(sub, resource, { deletes: !options.where || Object.keys(options.where).length === 0, query: q });
    return q;
  }

  /** @internal */
  closeQuery(q: Query): void {
    if (!this.queries.delete(q)) return;
    q.subscription.unsubscribe().catch(() => {});
    for (const id of q.members) {
      const e = this.entries.get(q.resource)?.get(id);
      q.members.delete(id);
      if (e) this.maybeEvict(e);
    }
  }

  /** Routes one subscription's events into the store. */
  private feed(sub: Subscription, resource: string, how: { deletes: boolean; query?: Query }): void {
    const q = how.query;
    sub.on("snapshot", (records) => {
      const pos = sub.pos ?? 0;
      if (sub.epoch !== this.epoch) {
        // Another change log (the server's store was replaced): positions from the old
        // one say nothing about the new one, so every report is fresh again.
        if (this.epoch !== undefined) for (const byId of this.entries.values()) for (const e of byId.values()) e.basePos = -1;
        this.epoch = sub.epoch;
      }
      const fresh = new Set(records.map((r) => r.id));
      if (q) {
        // A resync replaces membership: records no longer in it left while we were away.
        for (const id of q.members) {
          if (fresh.has(id)) continue;
          q.members.delete(id);
          const e = this.entries.get(resource)?.get(id);
          if (e && how.deletes) this.setBase(e, pos, null, e.base?.version ?? 0);
          else if (e) this.maybeEvict(e);
        }
        for (const id of fresh) q.members.add(id);
        q.status = "ready";
        this.dirtyQueries.add(q);
      } else if ("id" in sub.target && sub.target.id !== undefined && !fresh.has(sub.target.id)) {
        const e = this.entry(resource, sub.target.id);
        this.setBase(e, pos, null, e.base?.version ?? 0);
      }
      for (const r of records) this.setBase(this.entry(resource, r.id), pos, r.data, r.version);
      this.schedule();
    });
    const put = (r: WireRecord) => {
      q?.members.add(r.id);
      this.setBase(this.entry(resource, r.id), sub.pos ?? 0, r.data, r.version);
    };
    sub.on("put", put);
    sub.on("patch", put);
    sub.on("delete", (id, version) => {
      const e = this.entries.get(resource)?.get(id) ?? (how.deletes ? this.entry(resource, id) : undefined);
      if (q) {
        q.members.delete(id);
        this.dirtyQueries.add(q);
      }
      if (!e) return;
      if (how.deletes) this.setBase(e, sub.pos ?? 0, null, version);
      else this.maybeEvict(e);
      this.schedule();
    });
  }

  // ----- writing ------------------------------------------------------------------------

  /**
   * Creates a record, visible at once; rolled back if the server refuses. Without an
   * id one is made here, so the optimistic record has its final id.
   */
  create(resource: string, data: JsonObject, options: { id?: string } = {}): Promise<WriteResult> {
    const id = options.id ?? newId();
    return this.optimistic(resource, id, "create", data, () => this.client.create(resource, data, { id, version: undefined }));
  }

  /** Replaces a record; `version` makes it fail on a concurrent change. */
  update(resource: string, id: string, data: JsonObject, options: { version?: number } = {}): Promise<WriteResult> {
    return this.optimistic(resource, id, "update", data, () => this.client.update(resource, id, data, options));
  }

  upsert(resource: string, id: string, data: JsonObject, options: { version?: number } = {}): Promise<WriteResult> {
    return this.optimistic(resource, id, "upsert", data, () => this.client.upsert(resource, id, data, options));
  }

  patch(resource: string, id: string, patch: JsonObject, options: { version?: number } = {}): Promise<WriteResult> {
    return this.optimistic(resource, id, "patch", patch, () => this.client.patch(resource, id, patch, options));
  }

  delete(resource: string, id: string, options: { version?: number } = {}): Promise<WriteResult> {
    return this.optimistic(resource, id, "delete", {}, () => this.client.delete(resource, id, options));
  }

  private async optimistic(
    resource: string,
    id: string,
    kind: WriteKind,
    data: JsonObject,
    send: () => Promise<WriteResult>,
  ): Promise<WriteResult> {
    const entry = this.entry(resource, id);
    const op: Op = { seq: ++this.seq, kind, data: clone(data) };
    entry.ops.push(op);
    this.touch(entry);
    try {
      const result = await send();
      entry.error = undefined;
      this.dropOp(entry, op);
      this.setBase(entry, result.pos, result.record?.data ?? null, result.version);
      // The server applies the same filter, so the record's push will say the same;
      // deciding now keeps it from blinking out of a query between reply and push.
      const data = entry.visible();
      for (const q of this.queries) {
        if (q.resource !== resource) continue;
        if (data !== null && matchesWhere(q.options.where, data, { id, version: result.version })) q.members.add(id);
        else q.members.delete(id);
        this.dirtyQueries.add(q);
      }
      this.schedule();
      return result;
    } catch (e) {
      const error = e instanceof TetherError ? e : new TetherError(String(e));
      entry.error = error;
      this.dropOp(entry, op);
      this.touch(entry);
      this.flush();
      this.emit("rollback", entry.view, error);
      throw error;
    } finally {
      this.maybeEvict(entry);
    }
  }

  private dropOp(entry: Entry, op: Op): void {
    const at = entry.ops.indexOf(op);
    if (at >= 0) entry.ops.splice(at, 1);
  }

  // ----- bookkeeping --------------------------------------------------------------------

  private entry(resource: string, id: string): Entry {
    let byId = this.entries.get(resource);
    if (!byId) this.entries.set(resource, (byId = new Map()));
    let e = byId.get(id);
    if (!e) byId.set(id, (e = new Entry(resource, id)));
    return e;
  }

  /** Keeps the newest server state: a report from an older position changes nothing. */
  private setBase(e: Entry, pos: number, data: JsonObject | null, version: number): void {
    if (pos < e.basePos) return;
    e.basePos = pos;
    e.base = { version, data };
    this.touch(e);
  }

  private touch(e: Entry): void {
    this.dirty.add(e);
    this.schedule();
  }

  private maybeEvict(e: Entry): void {
    if (e.ops.length > 0 || e.handles > 0) return;
    for (const q of this.queries) if (q.resource === e.resource && q.members.has(e.id)) return;
    const byId = this.entries.get(e.resource);
    if (byId?.get(e.id) === e) byId.delete(e.id);
    for (const q of this.queries) if (q.resource === e.resource) this.dirtyQueries.add(q);
    this.schedule();
  }

  private schedule(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // One notification per burst (a snapshot of thousands of records, a resync).
    queueMicrotask(() => this.flush());
  }

  /** Delivers pending change notifications now. */
  flush(): void {
    this.flushScheduled = false;
    if (this.dirty.size === 0 && this.dirtyQueries.size === 0) return;
    const changed = [...this.dirty];
    this.dirty.clear();
    for (const e of changed) {
      e.refresh();
      for (const q of this.queries) if (q.resource === e.resource) this.dirtyQueries.add(q);
    }
    const queries = [...this.dirtyQueries];
    this.dirtyQueries.clear();
    for (const q of queries) q.recompute(this.entries.get(q.resource));
    for (const e of changed) for (const fn of [...e.listeners]) fn(e.view);
    for (const q of queries) for (const fn of [...q.listeners]) fn(q.records);
    if (changed.length > 0) this.emit("change", changed.map((e) => e.view));
  }
}
