//! A committed write as it appears in the change log and on the bus.
//!
//! Changes are shared (`Arc<Change>`) by every subscriber they reach. Their encoded
//! form is cached per dialect and variant, so a change fanned out to ten thousand
//! watchers is serialized once per wire format, not once per watcher.

use crate::name::{RecordId, ResourceName};
use crate::position::Position;
use crate::record::{Data, Record, Version};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// What happened to the record (seed 004's push names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    /// The whole body was set (create, update, upsert).
    #[serde(rename = "PUT")]
    Put,
    /// Part of the body changed (merge patch).
    #[serde(rename = "PATCH")]
    Patch,
    /// The record was removed.
    #[serde(rename = "DELETE")]
    Delete,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Change {
    pub position: Position,
    pub kind: ChangeKind,
    pub resource: ResourceName,
    pub id: RecordId,
    pub version: Version,
    /// Body after the change; `None` for a delete.
    pub data: Option<Data>,
    /// For a patch: the merge patch that was applied.
    pub patch: Option<Data>,
    #[serde(skip)]
    encoded: Mutex<Vec<(&'static str, Arc<str>)>>,
}

impl Change {
    pub fn new(
        position: Position,
        kind: ChangeKind,
        resource: ResourceName,
        id: RecordId,
        version: Version,
        data: Option<Data>,
        patch: Option<Data>,
    ) -> Change {
        Change {
            position,
            kind,
            resource,
            id,
            version,
            data,
            patch,
            encoded: Mutex::new(Vec::new()),
        }
    }

    /// The record after this change, if it still exists.
    pub fn record(&self) -> Option<Record> {
        self.data.as_ref().map(|data| Record {
            resource: self.resource.clone(),
            id: self.id.clone(),
            version: self.version,
            data: data.clone(),
        })
    }

    /// A rough size in bytes, for outbox accounting.
    pub fn approx_size(&self) -> usize {
        let body = |d: &Option<Data>| d.as_ref().map(crate::record::data_size).unwrap_or(0);
        96 + self.resource.as_str().len()
            + self.id.as_str().len()
            + body(&self.data)
            + body(&self.patch)
    }

    /// Returns the encoding cached under `key`, computing it once. Keys are
    /// `"<dialect>/<variant>"` constants owned by the codecs.
    pub fn encoded(&self, key: &'static str, encode: impl FnOnce(&Change) -> String) -> Arc<str> {
        if let Some((_, s)) = self.lock().iter().find(|(k, _)| *k == key) {
            return s.clone();
        }
        let s: Arc<str> = encode(self).into();
        let mut cache = self.lock();
        if let Some((_, existing)) = cache.iter().find(|(k, _)| *k == key) {
            return existing.clone();
        }
        cache.push((key, s.clone()));
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, Arc<str>)>> {
        // A panic while holding this lock cannot leave the cache inconsistent.
        self.encoded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Clone for Change {
    fn clone(&self) -> Self {
        Change::new(
            self.position,
            self.kind,
            self.resource.clone(),
            self.id.clone(),
            self.version,
            self.data.clone(),
            self.patch.clone(),
        )
    }
}

impl PartialEq for Change {
    fn eq(&self, o: &Self) -> bool {
        self.position == o.position
            && self.kind == o.kind
            && self.resource == o.resource
            && self.id == o.id
            && self.version == o.version
            && self.data == o.data
            && self.patch == o.patch
    }
}
