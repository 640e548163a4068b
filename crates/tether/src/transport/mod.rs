//! Transport: HTTP and WebSocket in, bytes out. No storage and no protocol logic here:
//! [`ws`] upgrades and hands the socket to a session with its dialect's codec,
//! [`http`] maps the HTTP API onto the same engine calls every dialect uses.

pub mod http;
pub mod ws;
