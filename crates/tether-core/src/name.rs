//! Validated resource names and record ids.
//!
//! Names travel in URLs (`/api/<resource>/<id>`, `/monorail/<channel>`), in SQL
//! parameters and in log lines, so they are checked once at the edge and carried as
//! newtypes afterwards: code holding a `ResourceName` never re-validates.

use crate::error::{Error, ErrorCode};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Longest resource name accepted.
pub const MAX_RESOURCE_LEN: usize = 64;
/// Longest record id accepted.
pub const MAX_ID_LEN: usize = 128;

/// A collection of records, e.g. `todos`. Letters, digits, `_`, `-`, `.`; starts with
/// a letter, digit or `_`; at most 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ResourceName(Arc<str>);

/// A record id, unique within its resource. Letters, digits and `_-.:@~`; at most 128
/// bytes. Clients may choose it (seeds 000, 001); the server makes one otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RecordId(Arc<str>);

fn check(kind: &str, s: &str, max: usize, extra: &[char]) -> Result<(), Error> {
    if s.is_empty() {
        return Err(Error::new(
            ErrorCode::InvalidName,
            format!("{kind} is empty"),
        ));
    }
    if s.len() > max {
        return Err(Error::new(
            ErrorCode::InvalidName,
            format!("{kind} is {} bytes long; the limit is {max}", s.len()),
        ));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-' || extra.contains(c)))
    {
        return Err(Error::new(
            ErrorCode::InvalidName,
            format!("{kind} {s:?} contains {bad:?}; allowed are letters, digits, '_', '-' and {extra:?}"),
        ));
    }
    Ok(())
}

impl ResourceName {
    pub fn parse(s: &str) -> Result<Self, Error> {
        check("resource name", s, MAX_RESOURCE_LEN, &['.'])?;
        if s.starts_with(['-', '.']) {
            return Err(Error::new(
                ErrorCode::InvalidName,
                format!("resource name {s:?} must start with a letter, digit or '_'"),
            ));
        }
        Ok(ResourceName(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl RecordId {
    pub fn parse(s: &str) -> Result<Self, Error> {
        check("record id", s, MAX_ID_LEN, &['.', ':', '@', '~'])?;
        Ok(RecordId(s.into()))
    }

    /// A new unique id for a record the client did not name: time-ordered (so ids
    /// sort roughly by creation) with 64 random bits, e.g. `mbx3k2f0-9f8e7d6c5b4a3921`.
    pub fn generate() -> Self {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // RandomState is seeded from the OS once per process; mixing in a counter
        // makes every id in the process distinct.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u64(millis);
        RecordId(format!("{}-{:016x}", base36(millis), h.finish()).into())
    }

    /// Accepts a JSON string or integer id (seed 001's examples use both kinds).
    pub fn from_json(v: &serde_json::Value) -> Result<Self, Error> {
        match v {
            serde_json::Value::String(s) => RecordId::parse(s),
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => {
                RecordId::parse(&n.to_string())
            }
            other => Err(Error::new(
                ErrorCode::InvalidName,
                format!("record id must be a string or an integer, not {other}"),
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

macro_rules! name_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                <$t>::parse(&s).map_err(serde::de::Error::custom)
            }
        }
        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}
name_impls!(ResourceName);
name_impls!(RecordId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_names() {
        assert!(ResourceName::parse("todos").is_ok());
        assert!(ResourceName::parse("workflow.logs_2").is_ok());
        assert!(ResourceName::parse("").is_err());
        assert!(ResourceName::parse("a/b").is_err());
        assert!(ResourceName::parse(".hidden").is_err());
        assert!(ResourceName::parse(&"x".repeat(65)).is_err());
    }

    #[test]
    fn record_ids() {
        assert!(RecordId::parse("2c592003-1667-491f-8fd2-796acbae198b").is_ok());
        assert!(RecordId::parse("user@example.com").is_ok());
        assert!(RecordId::parse("a b").is_err());
        assert!(RecordId::parse(&"x".repeat(129)).is_err());
        assert_eq!(
            RecordId::from_json(&serde_json::json!(95))
                .unwrap()
                .as_str(),
            "95"
        );
        assert!(RecordId::from_json(&serde_json::json!(1.5)).is_err());
        let (a, b) = (RecordId::generate(), RecordId::generate());
        assert_ne!(a, b);
        assert!(RecordId::parse(a.as_str()).is_ok());
    }
}
