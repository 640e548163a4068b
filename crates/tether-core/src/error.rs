//! The one error type every layer returns, with a stable machine-readable code.
//!
//! Codes are part of the wire contract (PROTOCOL.md lists them); each dialect maps them
//! to its own error form, and the HTTP API maps them to status codes.

use std::fmt;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stable error tags. Adding one is a protocol change: document it in PROTOCOL.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The frame was not valid JSON.
    BadJson,
    /// JSON, but a field is missing or has the wrong type.
    BadRequest,
    /// The message type, verb or handler is not known.
    UnknownType,
    /// A resource name or record id breaks the naming rules.
    InvalidName,
    /// The record does not exist.
    NotFound,
    /// `create` of an id that already exists.
    AlreadyExists,
    /// The expected version did not match the stored one.
    VersionConflict,
    /// A message or record exceeds a size limit.
    TooLarge,
    /// A per-connection limit (subscriptions, rate) was reached.
    LimitExceeded,
    /// No valid credentials: the token is missing (and anonymous access is off),
    /// expired, or not signed by a configured key.
    Unauthorized,
    /// The caller is known but an access rule does not allow this.
    Forbidden,
    /// No subscription with that id on this connection.
    UnknownSubscription,
    /// The store or bus failed; the write was not acknowledged.
    Unavailable,
    /// A bug: reported, logged, and the connection keeps going.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadJson => "bad_json",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::VersionConflict => "version_conflict",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::UnknownSubscription => "unknown_subscription",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status the HTTP API (and HTTP-flavoured dialects) use for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadJson
            | ErrorCode::BadRequest
            | ErrorCode::UnknownType
            | ErrorCode::InvalidName
            | ErrorCode::UnknownSubscription => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::AlreadyExists => 409,
            ErrorCode::VersionConflict => 412,
            ErrorCode::TooLarge => 413,
            ErrorCode::LimitExceeded => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error with a stable code and a message for humans.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    /// For `version_conflict` and `already_exists`: the version currently stored.
    pub current_version: Option<u64>,
}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code,
            message: message.into(),
            current_version: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(resource: &str, id: &str) -> Self {
        Error::new(
            ErrorCode::NotFound,
            format!("{resource}/{id} does not exist"),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Unavailable, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorCode::Internal, message)
    }

    pub fn with_current_version(mut self, version: u64) -> Self {
        self.current_version = Some(version);
        self
    }
}
