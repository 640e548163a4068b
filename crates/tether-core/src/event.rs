//! What the server tells a client, in the engine's terms.
//!
//! The session puts these into the connection's one ordered outbox; the connection's
//! dialect codec turns each into zero or more frames, stamping the message number.

use crate::change::Change;
use crate::error::Error;
use crate::op::{SubSpec, Tag};
use crate::position::{Epoch, Position};
use crate::record::Record;
use serde_json::Value;
use std::sync::Arc;

/// How a change looks to one subscription (a query subscription sees records enter and
/// leave; a record or resource subscription sees the change as it was).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushKind {
    /// Full body: a put, or a record entering a query.
    Put,
    /// Merge patch of a record the subscriber already has.
    Patch,
    /// The record was deleted, or left the query.
    Delete,
}

#[derive(Debug, Clone)]
pub enum Outbound {
    /// First message on every connection.
    Welcome {
        session: Arc<str>,
        epoch: Epoch,
        position: Position,
    },
    /// The answer to a request.
    Reply {
        tag: Tag,
        result: Result<Reply, Error>,
    },
    /// Initial state of a subscription, consistent at `position`. When the client
    /// asked to resume from a position that cannot be served, `resync` says why and
    /// this full snapshot replaces what it had.
    Snapshot {
        tag: Option<Tag>,
        sub: Arc<str>,
        spec: Arc<SubSpec>,
        position: Position,
        records: Vec<Record>,
        resync: Option<ResyncReason>,
    },
    /// A subscription resumed from `from`: the changes after it follow as pushes.
    Resumed {
        tag: Option<Tag>,
        sub: Arc<str>,
        spec: Arc<SubSpec>,
        from: Position,
    },
    /// A committed change as one subscription sees it.
    Push {
        sub: Arc<str>,
        spec: Arc<SubSpec>,
        kind: PushKind,
        change: Arc<Change>,
    },
    /// An ephemeral topic message.
    Message {
        sub: Arc<str>,
        topic: Arc<str>,
        data: Arc<Value>,
    },
    /// A presence room changed: `user` joined or left; `members` is who is there now.
    Presence {
        room: Arc<str>,
        user: Arc<str>,
        joined: bool,
        members: Vec<Arc<str>>,
    },
    /// Data another member of `room` relayed (`Op::Relay`); `from` is the user it joined
    /// the room as. Shared by every recipient, so it is encoded per connection from
    /// the same `Arc`.
    Relay {
        room: Arc<str>,
        from: Arc<str>,
        data: Arc<Value>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    /// The position belongs to another store (wiped, replaced, restored from backup).
    EpochChanged,
    /// The change log no longer reaches back to the position.
    Compacted,
    /// A reload changed the access rule that filtered what the client was sent, so
    /// what it holds may include records it may no longer read.
    AccessChanged,
}

impl ResyncReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ResyncReason::EpochChanged => "epoch_changed",
            ResyncReason::Compacted => "compacted",
            ResyncReason::AccessChanged => "access_changed",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A get: the record, or `None` if it does not exist.
    Record(Option<Record>),
    Records(Vec<Record>),
    /// A committed write: its change (position, version, body after).
    Written(Arc<Change>),
    /// Subscriptions released by unsubscribe or flush.
    Released(Vec<Arc<str>>),
    /// Accepted, nothing to return (publish, confirm, presence, ping).
    Ok,
    /// A presence join: who is in the room now.
    Members(Vec<Arc<str>>),
    /// A resume took over `session` and restored these subscriptions.
    Session {
        session: Arc<str>,
        subs: Vec<Arc<str>>,
    },
}
