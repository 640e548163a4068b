//! Transport: HTTP and WebSocket in, bytes out. No storage and no protocol logic here:
//! [`ws`] upgrades (the HTTP side in [`upgrade`]) and hands the socket
//! ([`websocket`]: the protocol over the raw connection, no buffers while idle) to a
//! session with its dialect's codec,
//! [`http`] maps the HTTP API onto the same engine calls every dialect uses.
//! [`accept`] is the accept loop with the connection limits and handshake timeout,
//! [`rate`] the per-connection message rate limit, [`echo`] the opt-in conformance
//! endpoints. [`origin`] checks browser origins on upgrades, [`tls`] loads the
//! certificate for https:// and wss://.

pub mod accept;
pub mod echo;
pub mod http;
pub mod origin;
pub mod rate;
pub mod tls;
pub mod upgrade;
pub mod websocket;
pub mod ws;
