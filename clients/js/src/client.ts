// The connection to a Tether server over the canonical `/ws` protocol.
//
// Why it is shaped this way:
// - Applications should not have to think about the socket. Requests made while the
//   connection is down wait for it; subscriptions live on the client, not the socket,
//   and are restored after every reconnect with `resume`, each from its own last
//   change-log position, so no change is missed or applied twice (PROTOCOL.md,
//   "Resume after a reconnect").
// - Every server message carries the connection's message number (seed 004). A jump
//   means something was lost on the way; the only sound repair is to reconnect and
//   resume from the positions we actually applied, so that is what a gap does.
// - Reads are safe to send twice, writes are not: a read in flight when the socket
//   drops is sent again, a write fails with `ConnectionLostError` (it may have been
//   committed; the resumed subscriptions show the truth either way).

import { Emitter, type Unsubscribe } from "./emitter.js";
import { ClosedError, ConnectionLostError, ProtocolError, ServerError, TetherError, TimeoutError } from "./errors.js";
import { mergePatch } from "./json.js";
import type {
  DeleteMessage,
  ErrorMessage,
  Json,
  JsonObject,
  PatchMessage,
  PresenceMessage,
  PutMessage,
  QueryOptions,
  ResultMessage,
  ResumedMessage,
  ServerMessage,
  SnapshotMessage,
  SubscriptionTarget,
  TopicMessage,
  WelcomeMessage,
  WireRecord,
} from "./protocol.js";

/** The part of the WHATWG WebSocket the client uses; `ws` for Node satisfies it. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: any) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
}
export type WebSocketConstructor = new (url: string, protocols?: string[]) => WebSocketLike;

export interface ReconnectOptions {
  /** First delay after a lost connection (default 250 ms). */
  initialDelayMs?: number;
  /** Ceiling of the exponential backoff (default 10 s). */
  maxDelayMs?: number;
  /** Growth per failed attempt (default 2). */
  factor?: number;
  /** Fraction of each delay that is random, so many clients do not return at once (default 0.5). */
  jitter?: number;
}

export interface ClientOptions {
  /** `ws://host:port/ws` (or `wss://`). */
  url: string;
  /** A WebSocket class where there is no global one (Node 20: `import WebSocket from "ws"`). */
  WebSocket?: WebSocketConstructor;
  /** How long a request waits for its reply, including time spent waiting for a connection (default 10 s). */
  requestTimeoutMs?: number;
  /** How long a connection attempt may take to open and be welcomed (default 10 s). */
  connectTimeoutMs?: number;
  /** Backoff for reconnects, or `false` to stay closed when the connection drops. */
  reconnect?: ReconnectOptions | false;
  /**
   * A bearer token for servers with auth on, or a function asked at every (re)connect
   * so a refreshed token is used. Sent as the WebSocket subprotocols `["bearer", token]`,
   * the one way a browser can send it without putting it in the URL.
   */
  token?: string | (() => string | undefined);
  /**
   * How often to ping the server while connected (default 25 s; 0 turns it off). A
   * connection that does not answer within the interval is treated as lost: browsers
   * cannot see WebSocket pings, and a half-open connection (a laptop waking from sleep)
   * would otherwise look healthy for minutes.
   */
  pingIntervalMs?: number;
}

export type ConnectionState = "idle" | "connecting" | "ready" | "reconnecting" | "closed";

export interface CloseInfo {
  code: number;
  reason: string;
  /** Whether the client will try again (it was not `disconnect()`ed). */
  willReconnect: boolean;
}

export interface ClientEvents {
  /** The socket opened (the server's welcome has not arrived yet). */
  open: () => void;
  /** The socket closed. */
  close: (info: CloseInfo) => void;
  /** A socket error, a server error that answers no request, or a malformed message. */
  error: (error: TetherError) => void;
  /** Every server message, before the client handles it. */
  message: (message: ServerMessage) => void;
  /** The session id is known: after the welcome, or after a resume took the old one over. */
  init: (session: string) => void;
  /** Connected, subscriptions restored (or re-requested): requests flow. */
  ready: () => void;
  /** The connection state changed. */
  state: (state: ConnectionState) => void;
  /** A reconnect is scheduled. */
  reconnecting: (info: { attempt: number; delayMs: number }) => void;
  /** A message number was skipped; the client reconnects and resumes. */
  gap: (info: { expected: number; received: number }) => void;
  PUT: (message: PutMessage, sub: Subscription) => void;
  PATCH: (message: PatchMessage, sub: Subscription) => void;
  DELETE: (message: DeleteMessage, sub: Subscription) => void;
  snapshot: (message: SnapshotMessage, sub: Subscription) => void;
  resumed: (message: ResumedMessage, sub: Subscription) => void;
  /** The server could not resume a subscription exactly and sent its whole state again. */
  resync: (sub: Subscription, reason: string) => void;
  /** A topic message (`{"type": "message"}` on the wire). */
  topic: (message: TopicMessage, sub: Subscription) => void;
  /** Someone joined or left a room this client is in. */
  presence: (message: PresenceMessage) => void;
  /** The member list of a room this client is in changed (join reply, presence, rejoin). */
  members: (room: string, members: string[]) => void;
}

/** The answer to a write. */
export interface WriteResult {
  resource: string;
  id: string;
  version: number;
  pos: number;
  /** The record after the write; `null` after a delete. */
  record: WireRecord | null;
}

export interface WriteOptions {
  /** Optimistic concurrency: fail with `version_conflict` unless the stored version is this (0: must not exist). */
  version?: number;
  timeoutMs?: number;
}

export interface RequestOptions {
  timeoutMs?: number;
}

export interface SubscriptionEvents {
  /** The subscription's whole state arrived (first, or as a resync). */
  snapshot: (records: WireRecord[], resync: string | undefined) => void;
  /** A record was put (created, replaced, or entered a query). */
  put: (record: WireRecord) => void;
  /** A record was patched; `record` is the result of applying the patch. */
  patch: (record: WireRecord, patch: JsonObject) => void;
  /** A record was deleted or left the query. */
  delete: (id: string, version: number) => void;
  /** Any of the above happened: a convenient single hook for re-rendering. */
  change: () => void;
  /** A topic message. */
  message: (data: Json, topic: string) => void;
  /** The subscribe request failed; the subscription is closed. */
  error: (error: TetherError) => void;
}

type SubscriptionState = "pending" | "live" | "failed" | "closed";

/** A live view of a record, a query, a resource or a topic. Survives reconnects. */
export class Subscription extends Emitter<SubscriptionEvents> {
  /** The records this subscription holds, by id (empty for a topic). */
  readonly records = new Map<string, WireRecord>();
  /** The change-log position this subscription has applied up to, with its epoch. */
  epoch: string | undefined;
  pos: number | undefined;
  state: SubscriptionState = "pending";
  /** The connection that last restored it, so a failed resume re-requests only the rest. */
  connection = -1;
  private readyPromise: Promise<void>;
  private settle!: { resolve: () => void; reject: (e: TetherError) => void };

  constructor(
    private readonly client: TetherClient,
    readonly name: string,
    readonly target: SubscriptionTarget,
  ) {
    super();
    this.readyPromise = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    // Callers who only listen to events must not see an unhandled rejection.
    this.readyPromise.catch(() => {});
  }

  /** Resolves once the first snapshot is applied; rejects if the subscribe failed. */
  ready(): Promise<void> {
    return this.readyPromise;
  }

  /** The held records, ordered by id. */
  list(): WireRecord[] {
    return [...this.records.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** Stops the subscription. */
  async unsubscribe(): Promise<void> {
    await this.client.unsubscribe(this);
  }

  /** @internal */
  applySnapshot(m: SnapshotMessage): void {
    this.records.clear();
    for (const r of m.records) this.records.set(r.id, r);
    this.epoch = m.epoch;
    this.pos = m.pos;
    this.state = "live";
    this.emit("snapshot", m.records, m.resync);
    this.emit("change");
    this.settle.resolve();
  }

  /** @internal Applies a push unless it was already applied; returns whether it was new. */
  applyPush(m: PutMessage | PatchMessage | DeleteMessage): boolean {
    // Positions only grow on one subscription: anything at or below ours is a replay
    // we already applied (e.g. a resume racing a push), and applying it twice is wrong.
    if (this.pos !== undefined && m.pos <= this.pos) return false;
    this.pos = m.pos;
    if (m.type === "PUT") {
      const r: WireRecord = { resource: m.resource, id: m.id, version: m.version, data: m.data };
      this.records.set(m.id, r);
      this.emit("put", r);
    } else if (m.type === "PATCH") {
      const held = this.records.get(m.id);
      const r: WireRecord = {
        resource: m.resource,
        id: m.id,
        version: m.version,
        data: mergePatch(held?.data ?? {}, m.patch),
      };
      this.records.set(m.id, r);
      this.emit("patch", r, m.patch);
    } else {
      this.records.delete(m.id);
      this.emit("delete", m.id, m.version);
    }
    this.emit("change");
    return true;
  }

  /** @internal */
  applyMessage(m: TopicMessage): void {
    this.emit("message", m.data, m.topic);
  }

  /** @internal */
  fail(error: TetherError): void {
    this.state = "failed";
    this.emit("error", error);
    this.settle.reject(error);
  }
}

interface Pending {
  req: number;
  body: Record<string, unknown>;
  resolve: (m: any) => void;
  reject: (e: TetherError) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Reads: send again after a reconnect. Writes: fail with ConnectionLostError. */
  retry: boolean;
  /** Bookkeeping the client sends itself (subscribe, resume, rejoin): forgotten on close. */
  internal: boolean;
}

interface Room {
  user: string | undefined;
  members: string[];
}

const DEFAULT_RECONNECT: Required<ReconnectOptions> = {
  initialDelayMs: 250,
  maxDelayMs: 10_000,
  factor: 2,
  jitter: 0.5,
};

/** A client of Tether's canonical protocol. */
export class TetherClient extends Emitter<ClientEvents> {
  /** The session id (kept across reconnects through `resume`). */
  session: string | undefined;
  /** The store's change-log identity, from the latest welcome. */
  epoch: string | undefined;
  private _state: ConnectionState = "idle";
  private ws: WebSocketLike | undefined;
  /** Counts sockets, so late events of an old one are recognised and ignored. */
  private connectionNo = 0;
  private wanted = false;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private connectTimer: ReturnType<typeof setTimeout> | undefined;
  private heartbeat: ReturnType<typeof setInterval> | undefined;
  private lastMsg: number | undefined;
  /** Why the connection last closed, for the error of a `ready()` that will never be. */
  private lastClose: CloseInfo | undefined;
  private nextReq = 1;
  private nextSub = 1;
  private readonly sent = new Map<number, Pending>();
  private queue: Pending[] = [];
  private readonly subs = new Map<string, Subscription>();
  private readonly rooms = new Map<string, Room>();
  private readonly WS: WebSocketConstructor | undefined;
  private readonly requestTimeoutMs: number;
  private readonly connectTimeoutMs: number;
  private readonly backoff: Required<ReconnectOptions> | false;
  private readonly pingIntervalMs: number;

  constructor(readonly options: ClientOptions) {
    super();
    this.WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 10_000;
    this.backoff = options.reconnect === false ? false : { ...DEFAULT_RECONNECT, ...options.reconnect };
    this.pingIntervalMs = options.pingIntervalMs ?? 25_000;
  }

  get state(): ConnectionState {
    return this._state;
  }

  // ----- connection lifecycle ---------------------------------------------------------

  /** Opens the connection (and keeps it open); resolves when it is ready. */
  connect(): Promise<void> {
    if (!this.WS) {
      return Promise.reject(new ClosedError("no WebSocket implementation: pass options.WebSocket (e.g. the `ws` package)"));
    }
    if (!this.wanted) {
      this.wanted = true;
      this.attempt = 0;
      this.open();
    }
    return this.ready();
  }

  /** Resolves when the connection is ready (now, or after the next (re)connect). */
  ready(): Promise<void> {
    if (this._state === "ready") return Promise.resolve();
    if (!this.wanted) return Promise.reject(new ClosedError("the client is not connected; call connect()"));
    return new Promise((resolve, reject) => {
      const offReady = this.on("ready", () => {
        offState();
        offReady();
        resolve();
      });
      const offState = this.on("state", (s) => {
        if (s === "closed") {
          offState();
          offReady();
          const why = this.lastClose;
          reject(new ClosedError(why ? `the connection closed (${why.code}${why.reason ? `: ${why.reason}` : ""})` : "the client was disconnected"));
        }
      });
    });
  }

  /** Closes the connection for good: no reconnect; waiting requests fail with `ClosedError`. */
  disconnect(): void {
    this.wanted = false;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.connectTimer);
    clearInterval(this.heartbeat);
    const ws = this.ws;
    this.ws = undefined;
    this.connectionNo++;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
      try {
        ws.close(1000, "client disconnect");
      } catch {
        // Closing a socket that never opened may throw in some implementations.
      }
    }
    const error = () => new ClosedError("the client was disconnected");
    for (const p of [...this.sent.values(), ...this.queue]) this.settle(p, undefined, error());
    this.queue = [];
    this.lastClose = undefined;
    if (ws) this.emit("close", { code: 1000, reason: "client disconnect", willReconnect: false });
    this.setState("closed");
  }

  private setState(state: ConnectionState): void {
    if (state === this._state) return;
    this._state = state;
    this.emit("state", state);
  }

  private open(): void {
    const no = ++this.connectionNo;
    this.lastMsg = undefined;
    this.setState(this.session === undefined && this.attempt === 0 ? "connecting" : "reconnecting");
    let ws: WebSocketLike;
    try {
      const { token } = this.options;
      const bearer = typeof token === "function" ? token() : token;
      ws = bearer ? new this.WS!(this.options.url, ["bearer", bearer]) : new this.WS!(this.options.url);
    } catch (e) {
      this.emit("error", new TetherError(`cannot open ${this.options.url}: ${String(e)}`));
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    // A socket that never opens or is never welcomed (half-open network) would hang
    // forever; give up on it and try again.
    this.connectTimer = setTimeout(() => {
      if (no === this.connectionNo && this._state !== "ready") this.dropSocket(4000, "connect timeout");
    }, this.connectTimeoutMs);
    ws.onopen = () => {
      if (no === this.connectionNo) this.emit("open");
    };
    ws.onerror = () => {
      // Browsers give no detail on WebSocket errors; the close that follows says more.
      if (no === this.connectionNo) this.emit("error", new TetherError(`WebSocket error on ${this.options.url}`));
    };
    ws.onclose = (ev) => {
      if (no === this.connectionNo) this.onClosed(ev.code, ev.reason);
    };
    ws.onmessage = (ev) => {
      if (no !== this.connectionNo) return;
      const text = typeof ev.data === "string" ? ev.data : String(ev.data);
      let message: ServerMessage;
      try {
        message = JSON.parse(text) as ServerMessage;
      } catch {
        this.emit("error", new ProtocolError(`the server sent a frame that is not JSON: ${text.slice(0, 200)}`));
        return;
      }
      this.handle(message);
    };
  }

  /** Closes the current socket and treats it as lost (reconnect and resume). */
  private dropSocket(code: number, reason: string): void {
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    try {
      ws.close(code, reason);
    } catch {
      // Already closing.
    }
    this.onClosed(code, reason);
  }

  private onClosed(code: number, reason: string): void {
    clearTimeout(this.connectTimer);
    clearInterval(this.heartbeat);
    this.ws = undefined;
    this.connectionNo++;
    // Reads go back into the queue in their original order; writes cannot be known to
    // have failed, so they are reported as lost; the client's own bookkeeping is redone
    // by the next resume.
    const requeue: Pending[] = [];
    for (const p of this.sent.values()) {
      if (p.internal) this.settle(p, undefined, new ConnectionLostError(String(p.body.type)));
      else if (p.retry) requeue.push(p);
      else this.settle(p, undefined, new ConnectionLostError(String(p.body.type)));
    }
    this.sent.clear();
    this.queue = [...requeue, ...this.queue];
    const willReconnect = this.wanted && this.backoff !== false;
    this.lastClose = { code, reason, willReconnect };
    this.emit("close", this.lastClose);
    if (willReconnect) this.scheduleReconnect();
    else {
      this.wanted = false;
      for (const p of this.queue) this.settle(p, undefined, new ClosedError(`the connection closed (${code})`));
      this.queue = [];
      this.setState("closed");
    }
  }

  private scheduleReconnect(): void {
    if (!this.wanted || this.backoff === false) return;
    const b = this.backoff;
    const base = Math.min(b.maxDelayMs, b.initialDelayMs * b.factor ** this.attempt);
    const delayMs = Math.round(base * (1 - b.jitter * Math.random()));
    this.attempt++;
    this.setState("reconnecting");
    this.emit("reconnecting", { attempt: this.attempt, delayMs });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      if (this.wanted && !this.ws) this.open();
    }, delayMs);
  }

  // ----- incoming messages -------------------------------------------------------------

  private handle(m: ServerMessage): void {
    if (typeof m.msg === "number") {
      if (this.lastMsg !== undefined && m.msg !== this.lastMsg + 1) {
        const info = { expected: this.lastMsg + 1, received: m.msg };
        this.emit("gap", info);
        this.emit("error", new ProtocolError(`message ${info.expected} never arrived (got ${info.received}); resuming`));
        // Positions are only advanced by what was applied, so a resume repairs this.
        this.dropSocket(4000, "message gap");
        return;
      }
      this.lastMsg = m.msg;
    }
    this.emit("message", m);
    switch (m.type) {
      case "welcome":
        return this.onWelcome(m);
      case "result":
        return this.onReply(m.req, m, undefined);
      case "error":
        return this.onReply(m.req, undefined, m);
      case "snapshot": {
        const sub = this.subs.get(m.sub);
        if (sub) {
          sub.connection = this.connectionNo;
          sub.applySnapshot(m);
          this.emit("snapshot", m, sub);
          if (m.resync) this.emit("resync", sub, m.resync);
        }
        return this.onReply(m.req, m, undefined);
      }
      case "resumed": {
        const sub = this.subs.get(m.sub);
        if (sub) {
          sub.connection = this.connectionNo;
          sub.epoch = m.epoch;
          sub.state = "live";
          this.emit("resumed", m, sub);
        }
        return this.onReply(m.req, m, undefined);
      }
      case "PUT":
      case "PATCH":
      case "DELETE": {
        const sub = this.subs.get(m.sub);
        // A push for a subscription we dropped can still be in flight; ignore it.
        if (sub && sub.applyPush(m)) this.emit(m.type, m as never, sub);
        return;
      }
      case "message": {
        const sub = this.subs.get(m.sub);
        if (sub) {
          sub.applyMessage(m);
          this.emit("topic", m, sub);
        }
        return;
      }
      case "presence": {
        const room = this.rooms.get(m.room);
        if (room) {
          room.members = m.members;
          this.emit("members", m.room, m.members);
        }
        this.emit("presence", m);
        return;
      }
      default:
        this.emit("error", new ProtocolError(`unknown message type ${JSON.stringify((m as { type: unknown }).type)}`));
    }
  }

  private onWelcome(w: WelcomeMessage): void {
    clearTimeout(this.connectTimer);
    this.epoch = w.epoch;
    const previous = this.session;
    const subs = [...this.subs.values()].filter((s) => s.state === "pending" || s.state === "live");
    if (previous === undefined) {
      this.session = w.session;
      this.emit("init", w.session);
      for (const sub of subs) this.sendSubscribe(sub);
      this.rejoinRooms();
      return this.becomeReady();
    }
    // Take the old session over, so presence identity continues, and restore every
    // subscription from its own position (exact even with several subscriptions).
    const no = this.connectionNo;
    const body = {
      type: "resume",
      session: previous,
      subs: subs.map((s) => this.subscribeBody(s)),
    };
    this.request(body, { internal: true })
      .then((r: ResultMessage) => {
        this.session = r.session ?? previous;
        this.emit("init", this.session);
      })
      .catch((e: TetherError) => {
        if (e instanceof ConnectionLostError || no !== this.connectionNo) throw e;
        if (e instanceof TimeoutError) {
          // No answer says nothing about the subscriptions; subscribing them again could
          // collide with ones the server did restore. Start over on a new connection.
          this.dropSocket(4000, "resume timed out");
          throw e;
        }
        // The server refused the resume as a whole: fall back to a fresh session and
        // subscribe again one by one (each still from its own position).
        this.emit("error", e);
        this.session = w.session;
        this.emit("init", w.session);
        for (const sub of subs) if (sub.connection !== this.connectionNo) this.sendSubscribe(sub);
      })
      .then(
        () => {
          this.rejoinRooms();
          this.becomeReady();
        },
        () => {},
      );
  }

  private becomeReady(): void {
    this.attempt = 0;
    this.setState("ready");
    this.startHeartbeat();
    const queue = this.queue;
    this.queue = [];
    for (const p of queue) this.transmit(p);
    this.emit("ready");
  }

  private startHeartbeat(): void {
    clearInterval(this.heartbeat);
    if (this.pingIntervalMs <= 0) return;
    const no = this.connectionNo;
    this.heartbeat = setInterval(() => {
      if (no !== this.connectionNo || this._state !== "ready") return;
      this.request({ type: "ping" }, { internal: true, timeoutMs: this.pingIntervalMs }).catch((e) => {
        if (e instanceof TimeoutError && no === this.connectionNo) this.dropSocket(4000, "no answer to ping");
      });
    }, this.pingIntervalMs);
  }

  private onReply(req: Json | undefined, ok: unknown, err: ErrorMessage | undefined): void {
    const p = typeof req === "number" ? this.sent.get(req) : undefined;
    if (!p) {
      // An error that answers nothing of ours (e.g. a malformed frame) is still news.
      if (err) this.emit("error", new ServerError(err));
      return;
    }
    this.settle(p, ok, err ? new ServerError(err) : undefined);
  }

  // ----- requests --------------------------------------------------------------------

  private settle(p: Pending, value: unknown, error: TetherError | undefined): void {
    clearTimeout(p.timer);
    this.sent.delete(p.req);
    const at = this.queue.indexOf(p);
    if (at >= 0) this.queue.splice(at, 1);
    if (error) p.reject(error);
    else p.resolve(value);
  }

  private transmit(p: Pending): void {
    this.sent.set(p.req, p);
    this.ws!.send(JSON.stringify({ ...p.body, req: p.req }));
  }

  /**
   * Sends any canonical message and resolves with its reply (`result`, or `snapshot` /
   * `resumed` for a subscribe). Prefer the typed helpers; this is the escape hatch.
   */
  request<T = ResultMessage>(
    body: Record<string, unknown>,
    options: RequestOptions & { retry?: boolean; internal?: boolean } = {},
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
      const p: Pending = {
        req: this.nextReq++,
        body,
        resolve,
        reject,
        timer: undefined,
        retry: options.retry ?? false,
        internal: options.internal ?? false,
      };
      p.timer = setTimeout(() => this.settle(p, undefined, new TimeoutError(String(body.type), timeoutMs)), timeoutMs);
      // Internal requests are part of getting ready, so they go out before it.
      if (this._state === "ready" || (options.internal && this.ws)) this.transmit(p);
      else if (!this.wanted) this.settle(p, undefined, new ClosedError("the client is not connected; call connect()"));
      else this.queue.push(p);
    });
  }

  /** The record, or `null` when there is none. */
  async get(resource: string, id: string, options?: RequestOptions): Promise<WireRecord | null> {
    const r = await this.request({ type: "get", resource, id }, { ...options, retry: true });
    return r.record ?? null;
  }

  /** Every record of a resource, ordered by id (at most 10,000). */
  async all(resource: string, options?: RequestOptions): Promise<WireRecord[]> {
    const r = await this.request({ type: "all", resource }, { ...options, retry: true });
    return r.records ?? [];
  }

  /** Records matching `where`, ordered and limited. */
  async query(resource: string, query: QueryOptions = {}, options?: RequestOptions): Promise<WireRecord[]> {
    const r = await this.request({ type: "query", resource, ...query }, { ...options, retry: true });
    return r.records ?? [];
  }

  private async write(type: string, body: Record<string, unknown>, options: WriteOptions = {}): Promise<WriteResult> {
    const { version, timeoutMs } = options;
    const r = await this.request({ type, ...body, ...(version === undefined ? {} : { version }) }, { timeoutMs });
    return { resource: r.resource!, id: r.id!, version: r.version!, pos: r.pos!, record: r.record ?? null };
  }

  /** Creates a record; fails with `already_exists` if the id is taken (so a retried create never duplicates). */
  create(resource: string, data: JsonObject, options: WriteOptions & { id?: string } = {}): Promise<WriteResult> {
    const { id, ...rest } = options;
    return this.write("create", { resource, data, ...(id === undefined ? {} : { id }) }, rest);
  }

  /** Replaces an existing record; `not_found` if it does not exist. */
  update(resource: string, id: string, data: JsonObject, options?: WriteOptions): Promise<WriteResult> {
    return this.write("update", { resource, id, data }, options);
  }

  /** Creates or replaces. */
  upsert(resource: string, id: string, data: JsonObject, options?: WriteOptions): Promise<WriteResult> {
    return this.write("upsert", { resource, id, data }, options);
  }

  /** Applies an RFC 7396 merge patch (`null` removes a field). */
  patch(resource: string, id: string, patch: JsonObject, options?: WriteOptions): Promise<WriteResult> {
    return this.write("patch", { resource, id, data: patch }, options);
  }

  /** Deletes a record; `not_found` if it does not exist. */
  delete(resource: string, id: string, options?: WriteOptions): Promise<WriteResult> {
    return this.write("delete", { resource, id }, options);
  }

  /** Sends an ephemeral message to a topic's subscribers. */
  async publish(topic: string, data: Json, options?: RequestOptions): Promise<void> {
    await this.request({ type: "publish", topic, data }, options);
  }

  /**
   * Tells the server this client dropped a record (or, without `id`, a whole resource)
   * from its store (seed 001): it releases the matching subscriptions and returns their
   * names. The client forgets them too.
   */
  async flush(resource: string, id?: string, options?: RequestOptions): Promise<string[]> {
    const r = await this.request({ type: "flush", resource, ...(id === undefined ? {} : { id }) }, options);
    for (const name of r.subs ?? []) {
      const sub = this.subs.get(name);
      if (!sub) continue;
      this.subs.delete(name);
      sub.state = "closed";
    }
    return r.subs ?? [];
  }

  /** A round trip to the server. */
  async ping(options?: RequestOptions): Promise<void> {
    await this.request({ type: "ping" }, { ...options, retry: true });
  }

  // ----- presence ----------------------------------------------------------------------

  /**
   * Joins a room as `user` (default: the session id) and returns its members. The
   * client rejoins after every reconnect, since presence belongs to a connection.
   */
  async join(room: string, user?: string, options?: RequestOptions): Promise<string[]> {
    const entry: Room = this.rooms.get(room) ?? { user, members: [] };
    entry.user = user;
    this.rooms.set(room, entry);
    const r = await this.request({ type: "join", room, ...(user === undefined ? {} : { user }) }, { ...options, retry: true });
    return this.setMembers(room, r.members ?? []);
  }

  /** Leaves a room. */
  async leave(room: string, options?: RequestOptions): Promise<void> {
    if (!this.rooms.delete(room) || this._state !== "ready") return;
    await this.request({ type: "leave", room }, options).catch((e) => {
      // A lost connection left the room by itself.
      if (!(e instanceof ConnectionLostError)) throw e;
    });
  }

  /** The members of a room this client is in, as last reported. */
  members(room: string): string[] {
    return this.rooms.get(room)?.members ?? [];
  }

  private setMembers(room: string, members: string[]): string[] {
    const entry = this.rooms.get(room);
    if (entry) {
      entry.members = members;
      this.emit("members", room, members);
    }
    return members;
  }

  private rejoinRooms(): void {
    for (const [room, entry] of this.rooms) {
      const body = { type: "join", room, ...(entry.user === undefined ? {} : { user: entry.user }) };
      this.request(body, { internal: true }).then(
        (r: ResultMessage) => this.setMembers(room, r.members ?? []),
        (e: TetherError) => {
          if (!(e instanceof ConnectionLostError)) this.emit("error", e);
        },
      );
    }
  }

  // ----- subscriptions -----------------------------------------------------------------

  /**
   * Watches a record (`{resource, id}`), a query (`{resource, where?, order?, limit?}`;
   * without `where` the whole resource) or a topic (`{topic}`). The subscription lives
   * until `unsubscribe()`, across reconnects; `ready()` resolves after its snapshot.
   */
  subscribe(target: SubscriptionTarget, options: { name?: string } = {}): Subscription {
    const name = options.name ?? `c${this.nextSub++}`;
    if (this.subs.has(name)) throw new TetherError(`a subscription named ${JSON.stringify(name)} already exists`);
    const sub = new Subscription(this, name, target);
    this.subs.set(name, sub);
    // Before ready, the (re)connect sends it along with the others.
    if (this._state === "ready") this.sendSubscribe(sub);
    return sub;
  }

  /** The live subscriptions, by name. */
  subscriptions(): Subscription[] {
    return [...this.subs.values()];
  }

  /** @internal Use `Subscription.unsubscribe()`. */
  async unsubscribe(sub: Subscription): Promise<void> {
    if (this.subs.get(sub.name) !== sub) return;
    this.subs.delete(sub.name);
    sub.state = "closed";
    if (this._state !== "ready") return; // the next resume simply leaves it out
    await this.request({ type: "unsubscribe", sub: sub.name }, { internal: true }).catch((e) => {
      // Unknown to the server (never established on this connection), or the connection
      // went away: either way nothing will be delivered for it any more.
      if (!(e instanceof TetherError)) throw e;
    });
  }

  private subscribeBody(sub: Subscription): Record<string, unknown> {
    const since = sub.epoch !== undefined && sub.pos !== undefined ? { since: { epoch: sub.epoch, pos: sub.pos } } : {};
    return { sub: sub.name, ...sub.target, ...since };
  }

  private sendSubscribe(sub: Subscription): void {
    this.request({ type: "subscribe", ...this.subscribeBody(sub) }, { internal: true }).catch((e: TetherError) => {
      // A lost connection is repaired by the next resume; anything else is final.
      if (e instanceof ConnectionLostError || e instanceof ClosedError) return;
      if (e instanceof TimeoutError && sub.state !== "pending") return;
      if (this.subs.get(sub.name) === sub) this.subs.delete(sub.name);
      sub.fail(e);
    });
  }
}

/**
 * A new record id: time-ordered (so ids sort roughly by creation) and random (so ids
 * made by different clients never collide). Used for optimistic creates, where the
 * client must know the id before the server answers (seeds 000, 001).
 */
export function newId(): string {
  const bytes = new Uint8Array(8);
  const c = (globalThis as { crypto?: { getRandomValues(a: Uint8Array): Uint8Array } }).crypto;
  if (c) c.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  const random = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${Date.now().toString(36).padStart(9, "0")}-${random}`;
}

export type { Unsubscribe };
