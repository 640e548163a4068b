// Wire types of Tether's canonical `/ws` protocol, version 1 (PROTOCOL.md is the
// reference). They live apart from the client so applications can type their own
// message handling against the same shapes the client uses.

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** A record's body: always a JSON object. */
export type JsonObject = { [key: string]: Json };

/** A record as the server sends it. */
export interface WireRecord {
  resource: string;
  id: string;
  version: number;
  data: JsonObject;
}

/** A position in the store's change log, meaningful only with its epoch. */
export interface Since {
  epoch: string;
  pos: number;
}

/** Top-level field equalities, an order (`"field"` or `"-field"`) and a limit. */
export interface QueryOptions {
  where?: JsonObject;
  order?: string;
  limit?: number;
}

/** What a subscription watches: one record, a query (or a whole resource), or a topic. */
export type SubscriptionTarget =
  | { resource: string; id: string }
  | ({ resource: string; id?: undefined } & QueryOptions)
  | { topic: string };

export interface WelcomeMessage {
  msg: number;
  type: "welcome";
  session: string;
  epoch: string;
  pos: number;
  protocol: number;
}

export interface ResultMessage {
  msg: number;
  type: "result";
  req?: Json;
  // Present depending on the request; see PROTOCOL.md.
  record?: WireRecord | null;
  records?: WireRecord[];
  resource?: string;
  id?: string;
  version?: number;
  pos?: number;
  subs?: string[];
  members?: string[];
  session?: string;
}

export interface ErrorMessage {
  msg: number;
  type: "error";
  req?: Json;
  code: string;
  message: string;
  version?: number;
}

export interface SnapshotMessage {
  msg: number;
  type: "snapshot";
  req?: Json;
  sub: string;
  epoch: string;
  pos: number;
  records: WireRecord[];
  resync?: "epoch_changed" | "compacted" | "access_changed";
}

export interface ResumedMessage {
  msg: number;
  type: "resumed";
  req?: Json;
  sub: string;
  epoch: string;
  from: number;
}

export interface PutMessage {
  msg: number;
  type: "PUT";
  sub: string;
  pos: number;
  resource: string;
  id: string;
  version: number;
  data: JsonObject;
}

export interface PatchMessage {
  msg: number;
  type: "PATCH";
  sub: string;
  pos: number;
  resource: string;
  id: string;
  version: number;
  patch: JsonObject;
}

export interface DeleteMessage {
  msg: number;
  type: "DELETE";
  sub: string;
  pos: number;
  resource: string;
  id: string;
  version: number;
}

export interface TopicMessage {
  msg: number;
  type: "message";
  sub: string;
  topic: string;
  data: Json;
}

export interface PresenceMessage {
  msg: number;
  type: "presence";
  room: string;
  user: string;
  event: "join" | "leave";
  members: string[];
}

export type PushMessage = PutMessage | PatchMessage | DeleteMessage;

export type ServerMessage =
  | WelcomeMessage
  | ResultMessage
  | ErrorMessage
  | SnapshotMessage
  | ResumedMessage
  | PushMessage
  | TopicMessage
  | PresenceMessage;

/** The error codes PROTOCOL.md lists; the server may add more, so any string is kept. */
export type ErrorCode =
  | "bad_json"
  | "bad_request"
  | "unknown_type"
  | "invalid_name"
  | "unknown_subscription"
  | "not_found"
  | "already_exists"
  | "version_conflict"
  | "too_large"
  | "limit_exceeded"
  | "unavailable"
  | "internal"
  | (string & {});
