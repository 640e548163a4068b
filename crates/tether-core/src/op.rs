//! What a client asks for, in the engine's terms.
//!
//! Every dialect codec decodes its own messages into an [`Op`] plus an opaque tag (the
//! dialect's correlation data: a request id, a `trans_id`, a handler name), and the
//! session answers with an [`crate::Outbound`] carrying the same tag back to the codec.

use crate::name::{RecordId, ResourceName};
use crate::position::{Epoch, Position};
use crate::query::Query;
use crate::record::{Data, Version};
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
    /// Send `data` to every *other* connection in presence room `room` (seed 003: a
    /// command reaches everyone else with the document open). Nothing is stored; the
    /// sender must be in the room. Answered with `Reply::Ok`; the others get
    /// `Outbound::Relay`.
    Relay {
        room: String,
        data: Value,
    },
    /// Open a record for collaboration (seed 003's `document:create` / `document:open`):
    /// with `create`, create the record with that body first; otherwise it must exist.
    /// Then (re)subscribe to the record under `sub` (a snapshot follows, tagged) and
    /// join presence room `room` as `user` (the connection's session when `None`);
    /// the reply is `Reply::Members`. If the create fails or the record is missing,
    /// nothing else happens and that is the error. One op rather than three so that a
    /// failed open never leaves the connection in a room for a record it could not open.
    Open {
        resource: ResourceName,
        id: RecordId,
        create: Option<Data>,
        sub: String,
        room: String,
        user: Option<String>,
    },
    Ping,
}

/// Which subscribers of a topic an ephemeral message is for (seed 002's broadcast "to
/// all or a subset of all known connections"). The default admits every subscriber.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Audience {
    /// Only connections whose session is one of these; empty means any session.
    pub sessions: Vec<String>,
    /// Only connections watching the resource named like the topic with a filter that
    /// includes every field here with an equal value (a monorail `watch` with those
    /// `params`, or a `/ws` query subscription with that `where`); `id` matches a watch
    /// of that one record. Empty means any connection.
    pub watching: Data,
}

impl Audience {
    /// Whether the audience has no restriction at all.
    pub fn is_everyone(&self) -> bool {
        self.sessions.is_empty() && self.watching.is_empty()
    }

    /// Whether a connection with this session may receive the message.
    pub fn admits_session(&self, session: Option<&str>) -> bool {
        self.sessions.is_empty()
            || session.is_some_and(|s| self.sessions.iter().any(|want| want == s))
    }

    /// Whether a subscription of the connection counts as "watching" for a message on
    /// `topic`: it is on the resource named `topic` and its filter covers `watching`.
    pub fn admits_watch(&self, topic: &str, target: &SubTarget) -> bool {
        if self.watching.is_empty() {
            return true;
        }
        match target {
            SubTarget::Query { resource, query } if resource.as_str() == topic => self
                .watching
                .iter()
                .all(|(k, v)| query.filter.get(k) == Some(v)),
            SubTarget::Record { resource, id } if resource.as_str() == topic => self
                .watching
                .iter()
                .all(|(k, v)| k == "id" && RecordId::from_json(v).is_ok_and(|want| want == *id)),
            _ => false,
        }
    }
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
    /// Boxed: a query is 120 bytes, and every subscription's spec (most of them to
    /// one record, 32 bytes) would otherwise be as large as one.
    Query {
        resource: ResourceName,
        query: Box<Query>,
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

    /// Whether a record matches, for the record's own resource.
    pub fn matches(&self, id: &RecordId, version: Version, data: &Data) -> bool {
        match self {
            SubTarget::Record { id: want, .. } => want == id,
            SubTarget::Query { query, .. } => query.matches(id, version, data),
            SubTarget::Topic { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> Data {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn audience_selects_by_session_and_watch_filter() {
        let tasks = ResourceName::parse("tasks").unwrap();
        let query = |filter: Value| SubTarget::Query {
            resource: tasks.clone(),
            query: Box::new(Query {
                filter: data(filter),
                ..Query::default()
            }),
        };
        let everyone = Audience::default();
        assert!(everyone.is_everyone());
        assert!(everyone.admits_session(None));
        assert!(everyone.admits_watch("tasks", &query(json!({}))));

        let some = Audience {
            sessions: vec!["c-1".into()],
            watching: data(json!({"workflow": 42})),
        };
        assert!(some.admits_session(Some("c-1")));
        assert!(!some.admits_session(Some("c-2")));
        assert!(!some.admits_session(None));
        assert!(some.admits_watch("tasks", &query(json!({"workflow": 42, "x": 1}))));
        assert!(!some.admits_watch("tasks", &query(json!({"workflow": "42"}))));
        assert!(!some.admits_watch("tasks", &query(json!({}))));
        assert!(!some.admits_watch("other", &query(json!({"workflow": 42}))));

        let one = Audience {
            watching: data(json!({"id": 7})),
            ..Audience::default()
        };
        let record = SubTarget::Record {
            resource: tasks.clone(),
            id: RecordId::parse("7").unwrap(),
        };
        assert!(one.admits_watch("tasks", &record));
        assert!(!some.admits_watch("tasks", &record));
    }
}
