// The public surface of @tether/client: a connection (`TetherClient`) that speaks
// Tether's canonical `/ws` protocol, and a live local store (`TetherStore`) on top.

export {
  TetherClient,
  Subscription,
  newId,
  type ClientOptions,
  type ClientEvents,
  type CloseInfo,
  type ConnectionState,
  type ReconnectOptions,
  type RequestOptions,
  type SubscriptionEvents,
  type WebSocketConstructor,
  type WebSocketLike,
  type WriteOptions,
  type WriteResult,
} from "./client.js";
export { TetherStore, type LiveQuery, type RecordHandle, type RecordStatus, type StoreRecord } from "./store.js";
export { TetherError, ServerError, TimeoutError, ConnectionLostError, ClosedError, ProtocolError } from "./errors.js";
export { Emitter, type Unsubscribe } from "./emitter.js";
export { mergePatch, matchesWhere, compareJson, sortRecords, jsonEqual } from "./json.js";
export type * from "./protocol.js";
