//! The values requests take and return, mirroring PROTOCOL.md's JSON.
//!
//! Record data stays a JSON object (`serde_json::Map`) on the wire side so that a
//! client never loses fields it does not know; [`Record::data_as`] turns it into the
//! caller's own type when wanted.

use crate::error::{ClientError, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// JSON object data of a record.
pub type Data = Map<String, Value>;

/// A stored record: `(resource, id)` to a JSON object, with a version that rises on
/// every write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub resource: String,
    pub id: String,
    pub version: u64,
    pub data: Data,
}

impl Record {
    /// The data as the caller's type.
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(Value::Object(self.data.clone())).map_err(|e| {
            ClientError::Invalid(format!(
                "{}/{} does not fit the requested type: {e}",
                self.resource, self.id
            ))
        })
    }
}

/// The answer to a write: where it landed in the change log and the record after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub resource: String,
    pub id: String,
    pub version: u64,
    /// The change-log position of this write.
    pub pos: u64,
    /// The record after the write; `None` after a delete.
    pub record: Option<Record>,
}

/// Filters, order and limit for `query` and query subscriptions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Top-level field equalities (`null` matches a missing field).
    pub filter: Data,
    /// A field name, `-` in front for descending.
    pub order: Option<String>,
    /// 1 to 10,000.
    pub limit: Option<usize>,
}

impl Query {
    pub fn new() -> Query {
        Query::default()
    }

    /// Adds the condition `field == value`.
    pub fn filter(mut self, field: impl Into<String>, value: impl Into<Value>) -> Query {
        self.filter.insert(field.into(), value.into());
        self
    }

    /// Orders by `field` (`"-field"` for descending).
    pub fn order(mut self, field: impl Into<String>) -> Query {
        self.order = Some(field.into());
        self
    }

    pub fn limit(mut self, limit: usize) -> Query {
        self.limit = Some(limit);
        self
    }

    pub(crate) fn write_into(&self, body: &mut Data) {
        if !self.filter.is_empty() {
            body.insert("where".into(), Value::Object(self.filter.clone()));
        }
        if let Some(order) = &self.order {
            body.insert("order".into(), order.clone().into());
        }
        if let Some(limit) = self.limit {
            body.insert("limit".into(), limit.into());
        }
    }
}

/// What a subscription watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Every change to one record (it need not exist yet).
    Record { resource: String, id: String },
    /// Records of a resource matching a query: entering, changing and leaving. An
    /// empty query is the whole resource.
    Query { resource: String, query: Query },
    /// Ephemeral messages on a topic (not stored, not replayed on resume).
    Topic { topic: String },
}

impl Target {
    pub fn record(resource: impl Into<String>, id: impl Into<String>) -> Target {
        Target::Record {
            resource: resource.into(),
            id: id.into(),
        }
    }

    /// Every record of a resource.
    pub fn resource(resource: impl Into<String>) -> Target {
        Target::Query {
            resource: resource.into(),
            query: Query::default(),
        }
    }

    pub fn query(resource: impl Into<String>, query: Query) -> Target {
        Target::Query {
            resource: resource.into(),
            query,
        }
    }

    pub fn topic(topic: impl Into<String>) -> Target {
        Target::Topic {
            topic: topic.into(),
        }
    }

    /// The resource whose records this target holds (none for a topic).
    pub fn resource_name(&self) -> Option<&str> {
        match self {
            Target::Record { resource, .. } | Target::Query { resource, .. } => Some(resource),
            Target::Topic { .. } => None,
        }
    }

    /// The target's fields of a `subscribe` (or an entry of `resume`'s `subs`).
    pub(crate) fn write_into(&self, body: &mut Data) {
        match self {
            Target::Record { resource, id } => {
                body.insert("resource".into(), resource.clone().into());
                body.insert("id".into(), id.clone().into());
            }
            Target::Query { resource, query } => {
                body.insert("resource".into(), resource.clone().into());
                query.write_into(body);
            }
            Target::Topic { topic } => {
                body.insert("topic".into(), topic.clone().into());
            }
        }
    }
}

/// The kind of a write (PROTOCOL.md, "Writes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Fails with `already_exists` if the id exists, so a retried create never duplicates.
    Create,
    /// Fails with `not_found` if the record does not exist.
    Update,
    Upsert,
    /// An RFC 7396 JSON Merge Patch; `null` removes a field.
    Patch,
    Delete,
}

impl WriteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WriteKind::Create => "create",
            WriteKind::Update => "update",
            WriteKind::Upsert => "upsert",
            WriteKind::Patch => "patch",
            WriteKind::Delete => "delete",
        }
    }
}

/// A write to send with [`crate::Client::write`], for when the shorthand methods are
/// not enough (an expected version, a create with a chosen id).
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub kind: WriteKind,
    pub resource: String,
    /// Required except for `create`, where the server makes one when absent.
    pub id: Option<String>,
    pub data: Data,
    /// Optimistic concurrency: the stored version must be this (`0`: must not exist).
    pub version: Option<u64>,
}

impl Write {
    pub fn new(kind: WriteKind, resource: impl Into<String>) -> Write {
        Write {
            kind,
            resource: resource.into(),
            id: None,
            data: Data::new(),
            version: None,
        }
    }

    pub fn create(resource: impl Into<String>, data: Data) -> Write {
        Write::new(WriteKind::Create, resource).data(data)
    }

    pub fn update(resource: impl Into<String>, id: impl Into<String>, data: Data) -> Write {
        Write::new(WriteKind::Update, resource).id(id).data(data)
    }

    pub fn upsert(resource: impl Into<String>, id: impl Into<String>, data: Data) -> Write {
        Write::new(WriteKind::Upsert, resource).id(id).data(data)
    }

    pub fn patch(resource: impl Into<String>, id: impl Into<String>, patch: Data) -> Write {
        Write::new(WriteKind::Patch, resource).id(id).data(patch)
    }

    pub fn delete(resource: impl Into<String>, id: impl Into<String>) -> Write {
        Write::new(WriteKind::Delete, resource).id(id)
    }

    pub fn id(mut self, id: impl Into<String>) -> Write {
        self.id = Some(id.into());
        self
    }

    pub fn data(mut self, data: Data) -> Write {
        self.data = data;
        self
    }

    /// Fails with `version_conflict` unless the stored version is `version`.
    pub fn if_version(mut self, version: u64) -> Write {
        self.version = Some(version);
        self
    }

    pub(crate) fn body(&self) -> Data {
        let mut body = Data::new();
        body.insert("type".into(), self.kind.as_str().into());
        body.insert("resource".into(), self.resource.clone().into());
        if let Some(id) = &self.id {
            body.insert("id".into(), id.clone().into());
        }
        if self.kind != WriteKind::Delete {
            body.insert("data".into(), Value::Object(self.data.clone()));
        }
        if let Some(version) = self.version {
            body.insert("version".into(), version.into());
        }
        body
    }
}

/// Turns caller data into the JSON object a write carries.
pub(crate) fn to_data(data: impl Serialize) -> Result<Data> {
    match serde_json::to_value(data) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(ClientError::Invalid(format!(
            "record data must be a JSON object, not {}",
            kind_of(&other)
        ))),
        Err(e) => Err(ClientError::Invalid(format!(
            "record data does not serialize: {e}"
        ))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One thing that happened to a subscription, in change-log order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The subscription's whole state at `pos`. Always the first event; it comes again
    /// with `resync` set when a resume could not be exact (the store's epoch changed,
    /// the log was compacted past the client's position, or a reload changed the
    /// access rule that filtered it): replace what you held.
    Snapshot {
        pos: u64,
        records: Vec<Record>,
        resync: Option<String>,
    },
    /// After a reconnect the subscription continues exactly after `from`: the changes
    /// missed while disconnected follow, then live ones.
    Resumed { from: u64 },
    /// A record was created or replaced, or entered a query.
    Put { pos: u64, record: Record },
    /// A record the subscription holds was patched. `record` is the result of applying
    /// the patch when the client keeps records (the local store is on).
    Patch {
        pos: u64,
        resource: String,
        id: String,
        version: u64,
        patch: Data,
        record: Option<Record>,
    },
    /// A record was deleted or left a query.
    Delete {
        pos: u64,
        resource: String,
        id: String,
        version: u64,
    },
    /// An ephemeral topic message.
    Message { topic: String, data: Value },
}

impl Event {
    /// The change-log position of a change event.
    pub fn pos(&self) -> Option<u64> {
        match self {
            Event::Snapshot { pos, .. }
            | Event::Put { pos, .. }
            | Event::Patch { pos, .. }
            | Event::Delete { pos, .. } => Some(*pos),
            Event::Resumed { from } => Some(*from),
            Event::Message { .. } => None,
        }
    }
}

/// RFC 7396 JSON Merge Patch: objects merge recursively, `null` removes, anything else
/// replaces.
pub fn merge_patch(target: &mut Data, patch: &Data) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target
                    .entry(key.clone())
                    .or_insert_with(|| Value::Object(Data::new()));
                if !slot.is_object() {
                    *slot = Value::Object(Data::new());
                }
                if let Value::Object(slot) = slot {
                    merge_patch(slot, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Data {
        match v {
            Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        // The examples of RFC 7396, appendix A, that start from an object.
        let cases = [
            (json!({"a": "b"}), json!({"a": "c"}), json!({"a": "c"})),
            (
                json!({"a": "b"}),
                json!({"b": "c"}),
                json!({"a": "b", "b": "c"}),
            ),
            (json!({"a": "b"}), json!({"a": null}), json!({})),
            (
                json!({"a": "b", "b": "c"}),
                json!({"a": null}),
                json!({"b": "c"}),
            ),
            (json!({"a": ["b"]}), json!({"a": "c"}), json!({"a": "c"})),
            (json!({"a": "c"}), json!({"a": ["b"]}), json!({"a": ["b"]})),
            (
                json!({"a": {"b": "c"}}),
                json!({"a": {"b": "d", "c": null}}),
                json!({"a": {"b": "d"}}),
            ),
            (
                json!({"a": [{"b": "c"}]}),
                json!({"a": [1]}),
                json!({"a": [1]}),
            ),
            (
                json!({"e": null}),
                json!({"a": 1}),
                json!({"e": null, "a": 1}),
            ),
            (
                json!({"a": "foo"}),
                json!({"a": {"bb": {"ccc": null}}}),
                json!({"a": {"bb": {}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let mut t = obj(target);
            merge_patch(&mut t, &obj(patch));
            assert_eq!(Value::Object(t), want);
        }
    }

    #[test]
    fn write_bodies_match_the_protocol() {
        let w = Write::patch("todos", "a", obj(json!({"done": true}))).if_version(2);
        assert_eq!(
            Value::Object(w.body()),
            json!({"type": "patch", "resource": "todos", "id": "a", "data": {"done": true}, "version": 2})
        );
        let d = Write::delete("todos", "a");
        assert_eq!(
            Value::Object(d.body()),
            json!({"type": "delete", "resource": "todos", "id": "a"})
        );
        let mut body = Data::new();
        Target::query(
            "todos",
            Query::new().filter("done", false).order("-at").limit(5),
        )
        .write_into(&mut body);
        assert_eq!(
            Value::Object(body),
            json!({"resource": "todos", "where": {"done": false}, "order": "-at", "limit": 5})
        );
    }

    #[test]
    fn data_must_be_an_object() {
        assert!(to_data(json!({"a": 1})).is_ok());
        let e = to_data(json!([1])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid request: record data must be a JSON object, not an array"
        );
    }
}
