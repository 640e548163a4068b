//! Dialect codecs: bytes to engine ops, engine events to bytes, one module per dialect.
//!
//! A codec holds no storage and no socket; it is pure and tested on strings. The
//! transport mounts every dialect in [`registry`] at its path, and the session drives
//! its codec: [`Codec::decode`] for each text frame, [`Codec::encode`] for each
//! outbound event. Adding a dialect is one new file plus one line in [`registry`].

pub mod canonical;
pub mod crud;
pub mod json;
pub mod monorail;
pub mod talk;
pub mod txn;

use std::collections::HashMap;
use tether_core::{Error, Op, Outbound, Tag};

/// A WebSocket protocol Tether speaks, mounted at [`Dialect::path`].
pub trait Dialect: Send + Sync + 'static {
    /// Short name for logs and metrics (`canonical`, `crud`, ...).
    fn name(&self) -> &'static str;
    /// The route, in axum syntax (`/ws`, `/monorail/{channel}`).
    fn path(&self) -> &'static str;
    /// A codec for one connection; `params` are the route's path parameters.
    fn codec(&self, params: &HashMap<String, String>) -> Result<Box<dyn Codec>, Error>;
}

/// One decoded client message: an op and the tag its reply must carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub tag: Tag,
    pub op: Op,
}

/// A message the codec could not turn into an op; answered with `error`, tagged when
/// the message carried a correlation id.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub tag: Tag,
    pub error: Error,
}

/// Hands out the connection's message numbers (seed 004): 1, 2, 3, ... one per frame
/// actually sent, so a client seeing a jump knows it missed one.
#[derive(Debug, Default)]
pub struct MsgNo(u64);

impl MsgNo {
    pub fn take(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }

    pub fn last(&self) -> u64 {
        self.0
    }
}

/// A connection's codec. Per-connection state (a channel name, records a client holds)
/// lives here.
pub trait Codec: Send {
    /// Decodes one text frame into zero or more requests.
    fn decode(&mut self, text: &str) -> Vec<Result<Request, Rejected>>;
    /// Encodes one event into zero or more frames, each stamped from `msg`.
    fn encode(&mut self, event: &Outbound, msg: &mut MsgNo, out: &mut Vec<String>);
}

/// Every dialect the server speaks. One line per dialect.
pub fn registry() -> Vec<&'static dyn Dialect> {
    vec![
        // One dialect per line.
        &canonical::Canonical,
        &crud::Crud,
        &txn::Txn,
        &monorail::Monorail,
        &talk::Talk,
    ]
}
