//! What a client asks for, in the engine's terms.
//!
//! Every dialect codec decodes its own messages into an [`Op`] plus an opaque tag (the
//! dialect's correlation data: a request id, a `trans_id`, a handler name), and the
//! session answers with an [`crate::Outbound`] carrying the same tag back to the codec.

use crate::name::{RecordId, ResourceName};
use crate::position::{Epoch, Position};
use crate::query::Query;
use crate::record::Data;
use crate::write::Write;
use serde_json::Value;

/// Dialect-owned correlation data, echoed back verbatim on the reply.
pub type Tag = Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Get {
        resource: ResourceName,
        id: RecordId,
    },
    /// `all` is a query with an empty filter.
    Query {
        resource: ResourceName,
        query: Query,
    },
    Write(Write),
    /// Subscribe under a client-chosen name, unique on the connection. The reply is a
    /// snapshot; pushes follow in change-log order.
    Subscribe {
        sub: String,
        spec: SubSpec,
        /// Resume from here instead of sending a snapshot.
        since: Option<Since>,
    },
    Unsubscribe {
        sub: String,
    },
    /// Release every subscription that covers this record or resource (seed 001 flush).
    Flush {
        resource: ResourceName,
        id: Option<RecordId>,
    },
    /// Take over a session after a reconnect: subscriptions (given, or remembered by the
    /// server) are restored and the changes after `since` are replayed.
    Resume {
        session: String,
        /// Default position for subscriptions that do not carry their own.
        since: Option<Since>,
        /// Subscriptions to restore; `None` restores the ones the server remembers.
        subs: Option<Vec<ResumeSub>>,
    },
    /// Send an ephemeral message (not stored) to a topic's subscribers.
    Publish {
        topic: String,
        data: Value,
    },
    /// Seed 001 confirmations for an earlier reply, named by its tag.
    Confirm {
        kind: ConfirmKind,
        of: Tag,
    },
    /// Join (or with `None`, leave) a presence room.
    Presence {
        room: String,
        join: bool,
        user: Option<String>,
    },
    Ping,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmKind {
    /// The client processed the reply; the server forgets it.
    Done,
    /// The client rejected the reply. A committed write stays committed.
    Abort,
    /// The client wants the reply again.
    Retry,
}

/// One subscription in a resume.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumeSub {
    pub sub: String,
    pub spec: SubSpec,
    pub since: Option<Since>,
}

/// Where a resuming client left off.
#[derive(Debug, Clone, PartialEq)]
pub struct Since {
    pub epoch: Epoch,
    pub position: Position,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubSpec {
    pub target: SubTarget,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SubTarget {
    /// One record, whether or not it exists yet.
    Record {
        resource: ResourceName,
        id: RecordId,
    },
    /// Records of a resource matching a query; `Query::default()` is the whole resource.
    Query {
        resource: ResourceName,
        query: Query,
    },
    /// An ephemeral stream (log lines, broadcasts); nothing is stored.
    Topic { topic: String },
}

impl SubTarget {
    pub fn resource(&self) -> Option<&ResourceName> {
        match self {
            SubTarget::Record { resource, .. } | SubTarget::Query { resource, .. } => {
                Some(resource)
            }
            SubTarget::Topic { .. } => None,
        }
    }

    /// Whether a record body matches, for the record's own resource and id.
    pub fn matches(&self, id: &RecordId, data: &Data) -> bool {
        match self {
            SubTarget::Record { id: want, .. } => want == id,
            SubTarget::Query { query, .. } => query.matches(data),
            SubTarget::Topic { .. } => false,
        }
    }
}
