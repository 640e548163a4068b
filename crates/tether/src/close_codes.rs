//! WebSocket close codes Tether sends, in one place. They are a documented contract
//! (PROTOCOL.md): 1000-1015 are the standard ones, 4000-4999 are Tether's own.

/// The client closed, or the session ended normally.
pub const NORMAL: u16 = 1000;
/// The server is shutting down; reconnect to another node or later, then resume.
pub const GOING_AWAY: u16 = 1001;
/// A frame or message passed the hard transport size limit.
pub const TOO_BIG: u16 = 1009;
/// The server hit an unexpected condition.
pub const INTERNAL: u16 = 1011;
/// The client read too slowly and its outbox passed its bound. Reconnect and resume:
/// nothing committed is lost.
pub const SLOW_CONSUMER: u16 = 4008;
