//! A record: (resource, id) to a JSON object, plus a version that rises with every write.

use crate::name::{RecordId, ResourceName};
use serde::Serialize;

/// A record's body: always a JSON object.
pub type Data = serde_json::Map<String, serde_json::Value>;

/// Version of a record: 1 after create, +1 on every write. A deleted record's last
/// version is kept in the change log so a recreate continues from it.
pub type Version = u64;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub resource: ResourceName,
    pub id: RecordId,
    pub version: Version,
    pub data: Data,
}

/// Roughly how many bytes `v` takes as JSON, without serializing it. Used to bound
/// queues in bytes, where proportionality matters and exactness does not.
pub fn json_size(v: &serde_json::Value) -> usize {
    use serde_json::Value;
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 12,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(|x| json_size(x) + 1).sum::<usize>(),
        Value::Object(o) => data_size(o),
    }
}

/// [`json_size`] of a record body.
pub fn data_size(d: &Data) -> usize {
    2 + d
        .iter()
        .map(|(k, v)| k.len() + 4 + json_size(v))
        .sum::<usize>()
}

impl Record {
    /// Rough size as JSON, see [`json_size`].
    pub fn approx_size(&self) -> usize {
        64 + self.resource.as_str().len() + self.id.as_str().len() + data_size(&self.data)
    }
}
