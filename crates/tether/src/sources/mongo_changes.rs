//! Changes an application announces on RabbitMQ for its MongoDB-backed resource
//! (seed 002: a MongoDB resource's "watch and stop ... will most likely use RabbitMQ").
//!
//! The application that owns a collection writes to it directly, so Tether cannot see
//! those writes; it publishes one message per change instead, and
//! `--mongo-changes RESOURCE=amqp://HOST/VHOST#EXCHANGE/ROUTING.KEY` binds Tether to
//! them (the connection, queue and reconnects are [`super::amqp`]'s). Each message
//! becomes a logged change through the engine's one write path: it gets a position in
//! the change log and reaches watchers on every dialect (`item`/`remove`, PUT/DELETE)
//! and resumes, and is never written back to the collection.
//!
//! The message, a JSON object in the body:
//!
//! ```json
//! {"op": "put", "id": "a1", "data": {"title": "milk"}, "version": 3}
//! {"op": "delete", "id": "a1", "version": 4}
//! ```
//!
//! - `op`: `put` (created or replaced; `data` is the whole document) or `delete`.
//! - `id`: the document's `_id`, a string or an integer.
//! - `data`: for `put`, the document; `_id` in it is ignored, and `_v` is its version.
//! - `version` (optional): the document's `_v` after the change. Without it (and
//!   without `_v` in `data`), a `put` takes the version Tether reads from the
//!   collection at that moment (while it cannot be read, the message stays unacknowledged
//!   and comes back after the reconnect), and a `delete` is logged at version 0.
//!
//! A message that is not of this form is logged as a warning and dropped.

use serde_json::Value;
use tether_core::write::Applied;
use tether_core::{ChangeKind, Data, Error, RecordId, ResourceName, Result, Version, Write};
use tether_engine::Engine;

/// One announced change, checked.
#[derive(Debug, PartialEq)]
struct Announcement {
    kind: ChangeKind,
    id: RecordId,
    data: Option<Data>,
    version: Option<Version>,
}

/// Logs the change `body` announces for `resource`.
pub(crate) async fn log(engine: &Engine, resource: &ResourceName, body: &[u8]) -> Result<()> {
    let announced = parse(body)?;
    let version = match (announced.version, announced.kind) {
        (Some(version), _) => version,
        (None, ChangeKind::Delete) => 0,
        (None, _) => match engine.get(resource, &announced.id).await? {
            Some(record) => record.version,
            None => 1,
        },
    };
    let applied = Applied {
        kind: announced.kind,
        version,
        data: announced.data.clone(),
    };
    let write = Write::logged(
        resource.clone(),
        announced.id,
        announced.data.unwrap_or_default(),
        applied,
    );
    engine.write(write).await.map(|_| ())
}

fn parse(body: &[u8]) -> Result<Announcement> {
    let bad = |why: &str| Error::bad_request(format!("an announced change {why}"));
    let Ok(Value::Object(mut message)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad("is not a JSON object"));
    };
    let id = message.get("id").ok_or_else(|| bad("has no id"))?;
    let id = RecordId::from_json(id).map_err(|e| bad(&e.message))?;
    let mut version = match message.get("version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| bad("has a version that is not a whole number"))?,
        ),
    };
    let (kind, data) = match message.get("op").and_then(Value::as_str) {
        Some("put") => {
            let Some(Value::Object(mut data)) = message.remove("data") else {
                return Err(bad("of op put has no data object"));
            };
            data.remove("_id");
            if let Some(v) = data.remove("_v") {
                version = version.or(v.as_u64());
            }
            (ChangeKind::Put, Some(data))
        }
        Some("delete") => (ChangeKind::Delete, None),
        _ => return Err(bad("has an op other than \"put\" or \"delete\"")),
    };
    Ok(Announcement {
        kind,
        id,
        data,
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(v: Value) -> Result<Announcement> {
        parse(v.to_string().as_bytes())
    }

    #[test]
    fn messages() {
        let put =
            parsed(json!({"op": "put", "id": "a", "data": {"_id": "a", "_v": 4, "x": 1}})).unwrap();
        assert_eq!(put.kind, ChangeKind::Put);
        assert_eq!(put.version, Some(4));
        assert_eq!(Value::Object(put.data.unwrap()), json!({"x": 1}));
        let gone = parsed(json!({"op": "delete", "id": 7, "version": 9})).unwrap();
        assert_eq!(
            (gone.kind, gone.id.as_str(), gone.version),
            (ChangeKind::Delete, "7", Some(9))
        );
        for bad in [
            json!({"op": "put", "id": "a"}),
            json!({"op": "patch", "id": "a", "data": {}}),
            json!({"op": "delete"}),
            json!({"op": "delete", "id": "a", "version": -1}),
            json!(["put"]),
        ] {
            assert!(parsed(bad.clone()).is_err(), "{bad}");
        }
        assert!(parse(b"not json").is_err());
    }
}
