//! What can go wrong, split by what the caller should do about it.
//!
//! A server refusal keeps the server's stable error code (PROTOCOL.md's table), so a
//! caller can match on `ErrorCode::VersionConflict` instead of parsing a message. The
//! connection-level variants tell apart "never sent" ([`ClientError::Closed`]) from
//! "sent, outcome unknown" ([`ClientError::ConnectionLost`]), because only the caller
//! knows whether a write is safe to repeat.

use std::time::Duration;

/// The server's error codes (PROTOCOL.md, "error"). New codes may appear in later
/// servers; they arrive as [`ErrorCode::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    BadJson,
    BadRequest,
    UnknownType,
    InvalidName,
    UnknownSubscription,
    NotFound,
    AlreadyExists,
    VersionConflict,
    TooLarge,
    LimitExceeded,
    Unavailable,
    Internal,
    /// A code this client version does not know.
    Other(String),
}

impl ErrorCode {
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "bad_json" => ErrorCode::BadJson,
            "bad_request" => ErrorCode::BadRequest,
            "unknown_type" => ErrorCode::UnknownType,
            "invalid_name" => ErrorCode::InvalidName,
            "unknown_subscription" => ErrorCode::UnknownSubscription,
            "not_found" => ErrorCode::NotFound,
            "already_exists" => ErrorCode::AlreadyExists,
            "version_conflict" => ErrorCode::VersionConflict,
            "too_large" => ErrorCode::TooLarge,
            "limit_exceeded" => ErrorCode::LimitExceeded,
            "unavailable" => ErrorCode::Unavailable,
            "internal" => ErrorCode::Internal,
            other => ErrorCode::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::UnknownSubscription => "unknown_subscription",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::VersionConflict => "version_conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::Other(code) => code,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered the request with an error.
    #[error("{code}: {message}")]
    Server {
        code: ErrorCode,
        message: String,
        /// The version stored now, for `version_conflict` and `already_exists`.
        version: Option<u64>,
    },
    /// The connection dropped after the request was sent and before its answer came.
    /// A write may or may not have been committed: the client's subscriptions show
    /// the truth once resumed; a `create` with a chosen id or a versioned write is
    /// safe to repeat.
    #[error("the connection was lost before the answer to {op} arrived; it may have been applied")]
    ConnectionLost { op: String },
    /// The client was closed, or the connection dropped with reconnect turned off;
    /// the request was not sent.
    #[error("the client is closed")]
    Closed,
    /// The first connection attempt failed.
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    /// No answer within the request timeout.
    #[error("no answer to {op} within {after:?}")]
    Timeout { op: String, after: Duration },
    /// The server sent something this client cannot understand.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The caller passed something the protocol cannot carry (checked before sending).
    #[error("invalid request: {0}")]
    Invalid(String),
}

impl ClientError {
    /// The server's error code, if the server refused the request.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(crate) fn from_server(message: &serde_json::Value) -> ClientError {
        ClientError::Server {
            code: ErrorCode::parse(message["code"].as_str().unwrap_or("internal")),
            message: message["message"].as_str().unwrap_or_default().to_owned(),
            version: message["version"].as_u64(),
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_survive() {
        for code in ["not_found", "version_conflict", "bad_json", "unavailable"] {
            assert_eq!(ErrorCode::parse(code).as_str(), code);
        }
        assert_eq!(
            ErrorCode::parse("teapot"),
            ErrorCode::Other("teapot".into())
        );
        let e = ClientError::from_server(
            &serde_json::json!({"code": "version_conflict", "message": "m", "version": 3}),
        );
        assert_eq!(e.code(), Some(&ErrorCode::VersionConflict));
        assert_eq!(e.to_string(), "version_conflict: m");
    }
}
