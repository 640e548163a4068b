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
/// The client broke the WebSocket protocol (a reserved bit or opcode, a fragmented
/// control frame, a bad close frame).
pub const PROTOCOL_ERROR: u16 = 1002;
/// A text message was not valid UTF-8.
pub const INVALID_DATA: u16 = 1007;
/// The client sent nothing, not even a pong to the server's ping, for the idle
/// timeout (`--idle-timeout`). Reconnect and resume.
pub const IDLE_TIMEOUT: u16 = 4000;
/// The client kept sending past its message rate after being refused with
/// `limit_exceeded` (`--max-messages-per-sec`, `--message-burst`). Slow down, then
/// reconnect and resume.
pub const RATE_LIMITED: u16 = 4029;
/// A reload changed an access rule this connection's subscriptions depend on.
/// Reconnect and resume: subscriptions come back under the new rules (a fresh snapshot
/// with `resync: "access_changed"`, or `forbidden`).
pub const ACCESS_CHANGED: u16 = 1012;
/// The token the connection authenticated with expired. Reconnect with a fresh token
/// and resume.
pub const AUTH_EXPIRED: u16 = 4001;

/// The close code for a WebSocket error: the transport cannot go on, and the code
/// tells the client why (RFC 6455 section 7.4.1).
pub fn for_websocket_error(error: &tungstenite::Error) -> u16 {
    use tungstenite::Error;
    match error {
        Error::Capacity(_) => TOO_BIG,
        Error::Utf8(_) => INVALID_DATA,
        Error::Protocol(_) | Error::AttackAttempt => PROTOCOL_ERROR,
        _ => INTERNAL,
    }
}

/// The reason sent with a close code, for humans.
pub fn reason(code: u16) -> &'static str {
    match code {
        GOING_AWAY => "server shutting down: reconnect and resume",
        PROTOCOL_ERROR => "protocol error",
        INVALID_DATA => "invalid UTF-8 in a text message",
        TOO_BIG => "frame or message too large",
        INTERNAL => "internal error: reconnect and resume",
        SLOW_CONSUMER => "slow consumer: reconnect and resume",
        IDLE_TIMEOUT => "idle timeout: no message or pong",
        RATE_LIMITED => "message rate exceeded: slow down, reconnect and resume",
        ACCESS_CHANGED => "access rules changed: reconnect and resume",
        AUTH_EXPIRED => "token expired: reconnect with a fresh token and resume",
        _ => "",
    }
}
