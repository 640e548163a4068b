// Typed errors, so callers can tell "the server said no" (retrying will not help,
// except `unavailable`) from "no answer came" (the request may or may not have taken
// effect) with `instanceof` instead of parsing messages.

import type { ErrorCode, ErrorMessage } from "./protocol.js";

/** Base class of every error the client raises. */
export class TetherError extends Error {
  override name = "TetherError";
}

/** The server answered a request with an `error` message. */
export class ServerError extends TetherError {
  override name = "ServerError";
  /** The stable code, e.g. `version_conflict`. */
  readonly code: ErrorCode;
  /** The stored version, for `version_conflict` and `already_exists`. */
  readonly version: number | undefined;
  constructor(reply: Pick<ErrorMessage, "code" | "message" | "version">) {
    super(`${reply.code}: ${reply.message}`);
    this.code = reply.code;
    this.version = reply.version;
  }
}

/** No reply arrived in time. A write may still have been applied. */
export class TimeoutError extends TetherError {
  override name = "TimeoutError";
  constructor(readonly type: string, readonly timeoutMs: number) {
    super(`no reply to ${type} within ${timeoutMs} ms`);
  }
}

/**
 * The connection closed while a write was in flight: it may or may not have been
 * committed. Subscriptions resume after the reconnect and show the truth either way.
 * (Reads in flight are sent again after the reconnect instead of failing.)
 */
export class ConnectionLostError extends TetherError {
  override name = "ConnectionLostError";
  constructor(readonly type: string) {
    super(`the connection closed before the reply to ${type}; the write may or may not have taken effect`);
  }
}

/** The client was disconnected on purpose, or never given a WebSocket implementation. */
export class ClosedError extends TetherError {
  override name = "ClosedError";
}

/** The server sent something the protocol does not allow (bad JSON, an unknown reply). */
export class ProtocolError extends TetherError {
  override name = "ProtocolError";
}
