// A WebSocket for the client under test whose network the test controls: it can refuse
// new connections (the client is "away"), cut live ones, and drop incoming frames
// (to provoke a message-number gap). Built on `ws`, since Node 20 has no global one.

import WebSocket from "ws";

export function controlledSockets() {
  const ctl = {
    /** While true, new connections fail at once, as if the server were unreachable. */
    blocked: false,
    /** `(text, connectionNumber)`: return true to swallow an incoming frame before the client sees it. */
    dropIncoming: null,
    sockets: [],
    opened: 0,
    /** Cuts every live connection abruptly (close code 1006 on the client's side). */
    cut() {
      for (const s of ctl.sockets) s.ws.terminate();
      ctl.sockets = [];
    },
  };
  ctl.WebSocket = class ControlledSocket {
    constructor(url) {
      this.readyState = 0;
      this.onopen = this.onclose = this.onerror = this.onmessage = null;
      if (ctl.blocked) {
        setTimeout(() => {
          this.readyState = 3;
          this.onerror?.({});
          this.onclose?.({ code: 1006, reason: "blocked by the test" });
        }, 5);
        return;
      }
      const number = ++ctl.opened;
      const ws = (this.ws = new WebSocket(url));
      ctl.sockets.push(this);
      ws.onopen = (e) => {
        this.readyState = 1;
        this.onopen?.(e);
      };
      ws.onclose = (e) => {
        this.readyState = 3;
        ctl.sockets = ctl.sockets.filter((s) => s !== this);
        this.onclose?.({ code: e.code, reason: e.reason });
      };
      ws.onerror = (e) => this.onerror?.(e);
      ws.onmessage = (e) => {
        if (ctl.dropIncoming?.(String(e.data), number)) return;
        this.onmessage?.({ data: String(e.data) });
      };
    }
    send(data) {
      this.ws.send(data);
    }
    close(code, reason) {
      this.ws?.close(code, reason);
    }
  };
  return ctl;
}
