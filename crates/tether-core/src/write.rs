//! The five writes and their semantics, decided here once for every store.
//!
//! A store runs [`Write::apply`] inside its transaction against the row it read, so
//! SQLite and PostgreSQL cannot disagree about what `create` on an existing id or a
//! stale expected version means.
//!
//! A write may also arrive already decided ([`Write::logged`]): a resource whose records
//! live in another system (a MongoDB collection) applies the write there, and the store
//! only gives the outcome its position in the change log.

use crate::change::ChangeKind;
use crate::error::{Error, ErrorCode, Result};
use crate::name::{RecordId, ResourceName};
use crate::record::{Data, Version};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// Fails with `already_exists` if the id exists, so a retried create never duplicates.
    Create,
    /// Replaces the whole body; fails with `not_found` if missing.
    Update,
    /// Replaces the whole body, creating the record if missing.
    Upsert,
    /// JSON Merge Patch (RFC 7396); fails with `not_found` if missing.
    Patch,
    /// Removes the record; fails with `not_found` if missing.
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

#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub kind: WriteKind,
    pub resource: ResourceName,
    pub id: RecordId,
    /// The new body (create, update, upsert) or the merge patch (patch). Empty for delete.
    pub data: Data,
    /// Optimistic concurrency: the write fails with `version_conflict` unless the stored
    /// version equals this. `Some(0)` means "must not exist" for upsert.
    pub expected_version: Option<Version>,
    /// Set when the records live elsewhere and this outcome already happened there: the
    /// store logs it as is and leaves its own records alone. Only the store wrapper of
    /// such a resource sets it (dialects never do, as [`Write::new`] leaves it empty).
    pub logged: Option<Applied>,
}

/// What a write does to a record, computed from the row as it stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub kind: ChangeKind,
    pub version: Version,
    /// The body after the write; `None` after a delete.
    pub data: Option<Data>,
}

/// A stored row: live, or a tombstone that remembers the last version.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub version: Version,
    pub data: Option<Data>,
}

impl Write {
    /// Builds a write, normalizing the body: a top-level `id` in `data` must match the
    /// record id and is removed, because the id lives beside the body, not in it.
    pub fn new(
        kind: WriteKind,
        resource: ResourceName,
        id: RecordId,
        mut data: Data,
        expected_version: Option<Version>,
    ) -> Result<Write> {
        if let Some(inner) = data.remove("id") {
            let matches = RecordId::from_json(&inner)
                .map(|i| i == id)
                .unwrap_or(false);
            let removes_nothing = kind == WriteKind::Patch && inner.is_null();
            if !(matches || removes_nothing) {
                return Err(Error::bad_request(format!(
                    "the body's id {inner} does not match the record id {id:?}"
                )));
            }
        }
        Ok(Write {
            kind,
            resource,
            id,
            data,
            expected_version,
            logged: None,
        })
    }

    /// A change that already happened in the system that holds `resource`'s records:
    /// the store gives it a position and leaves its own records alone. `data` is the
    /// merge patch for a patch, the new body otherwise.
    pub fn logged(resource: ResourceName, id: RecordId, data: Data, applied: Applied) -> Write {
        let kind = match applied.kind {
            ChangeKind::Put => WriteKind::Upsert,
            ChangeKind::Patch => WriteKind::Patch,
            ChangeKind::Delete => WriteKind::Delete,
        };
        Write {
            kind,
            resource,
            id,
            data,
            expected_version: None,
            logged: Some(applied),
        }
    }

    /// Whether the store should keep this write's record (false for a logged write).
    pub fn keeps_record(&self) -> bool {
        self.logged.is_none()
    }

    /// Decides the outcome of this write against the stored row (`None`: never existed).
    pub fn apply(&self, stored: Option<&Stored>) -> Result<Applied> {
        if let Some(applied) = &self.logged {
            return Ok(applied.clone());
        }
        let live = stored.and_then(|s| s.data.as_ref().map(|d| (s.version, d)));
        let last_version = stored.map(|s| s.version).unwrap_or(0);
        if let Some(expected) = self.expected_version {
            let current = live.map(|(v, _)| v).unwrap_or(0);
            if expected != current {
                return Err(Error::new(
                    ErrorCode::VersionConflict,
                    format!(
                        "{}/{} is at version {current}, not {expected}",
                        self.resource, self.id
                    ),
                )
                .with_current_version(current));
            }
        }
        let next = last_version + 1;
        match (self.kind, live) {
            (WriteKind::Create, Some((v, _))) => Err(Error::new(
                ErrorCode::AlreadyExists,
                format!("{}/{} already exists", self.resource, self.id),
            )
            .with_current_version(v)),
            (WriteKind::Create | WriteKind::Upsert, None) => Ok(Applied {
                kind: ChangeKind::Put,
                version: next,
                data: Some(self.data.clone()),
            }),
            (WriteKind::Update | WriteKind::Upsert, Some(_)) => Ok(Applied {
                kind: ChangeKind::Put,
                version: next,
                data: Some(self.data.clone()),
            }),
            (WriteKind::Patch, Some((_, current))) => {
                let mut doc = serde_json::Value::Object(current.clone());
                json_patch::merge(&mut doc, &serde_json::Value::Object(self.data.clone()));
                let serde_json::Value::Object(data) = doc else {
                    return Err(Error::internal(
                        "merge patch of an object gave a non-object",
                    ));
                };
                Ok(Applied {
                    kind: ChangeKind::Patch,
                    version: next,
                    data: Some(data),
                })
            }
            (WriteKind::Delete, Some(_)) => Ok(Applied {
                kind: ChangeKind::Delete,
                version: next,
                data: None,
            }),
            (WriteKind::Update | WriteKind::Patch | WriteKind::Delete, None) => {
                Err(Error::not_found(self.resource.as_str(), self.id.as_str()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn w(kind: WriteKind, data: serde_json::Value, expected: Option<u64>) -> Write {
        let serde_json::Value::Object(data) = data else {
            panic!()
        };
        Write::new(
            kind,
            ResourceName::parse("t").unwrap(),
            RecordId::parse("a").unwrap(),
            data,
            expected,
        )
        .unwrap()
    }

    fn live(version: u64, data: serde_json::Value) -> Stored {
        let serde_json::Value::Object(data) = data else {
            panic!()
        };
        Stored {
            version,
            data: Some(data),
        }
    }

    #[test]
    fn create_refuses_existing_and_continues_after_tombstone() {
        let create = w(WriteKind::Create, json!({"x": 1}), None);
        assert_eq!(create.apply(None).unwrap().version, 1);
        let err = create.apply(Some(&live(3, json!({})))).unwrap_err();
        assert_eq!(err.code, ErrorCode::AlreadyExists);
        let tomb = Stored {
            version: 4,
            data: None,
        };
        assert_eq!(create.apply(Some(&tomb)).unwrap().version, 5);
    }

    #[test]
    fn merge_patch_is_rfc7396() {
        let patch = w(
            WriteKind::Patch,
            json!({"a": {"b": null, "c": 2}, "d": null}),
            None,
        );
        let out = patch
            .apply(Some(&live(1, json!({"a": {"b": 1}, "d": 1, "e": 1}))))
            .unwrap();
        assert_eq!(
            serde_json::Value::Object(out.data.unwrap()),
            json!({"a": {"c": 2}, "e": 1})
        );
        assert_eq!(out.version, 2);
    }

    #[test]
    fn expected_version() {
        let upd = w(WriteKind::Update, json!({}), Some(2));
        assert_eq!(
            upd.apply(Some(&live(3, json!({})))).unwrap_err().code,
            ErrorCode::VersionConflict
        );
        assert!(upd.apply(Some(&live(2, json!({})))).is_ok());
        let must_not_exist = w(WriteKind::Upsert, json!({}), Some(0));
        assert!(must_not_exist.apply(None).is_ok());
        assert!(must_not_exist.apply(Some(&live(1, json!({})))).is_err());
    }

    #[test]
    fn missing_records() {
        for kind in [WriteKind::Update, WriteKind::Patch, WriteKind::Delete] {
            assert_eq!(
                w(kind, json!({}), None).apply(None).unwrap_err().code,
                ErrorCode::NotFound
            );
        }
    }

    #[test]
    fn body_id_must_match() {
        let data = json!({"id": "b"}).as_object().unwrap().clone();
        let r = Write::new(
            WriteKind::Create,
            ResourceName::parse("t").unwrap(),
            RecordId::parse("a").unwrap(),
            data,
            None,
        );
        assert_eq!(r.unwrap_err().code, ErrorCode::BadRequest);
    }
}
