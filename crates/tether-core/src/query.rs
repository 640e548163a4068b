//! Queries: equality filters on top-level fields, an order and a limit.
//!
//! The same `Query` decides what a `query` read returns and which changes a query
//! subscription sees entering and leaving, so both always agree.
//!
//! A record's id and version live beside its body, not in it, yet clients filter and
//! order by them like any field. [`field`] is the one place that says what a query sees
//! for a field name, so filters and orders (and every store's pre-filter, which must
//! keep at least what [`Query::matches`] keeps) agree on it.

use crate::name::RecordId;
use crate::record::{Data, Record, Version};
use serde_json::Value;
use std::borrow::Cow;
use std::cmp::Ordering;

/// Largest `limit` a client may ask for; also the cap on an unlimited read.
pub const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    /// Every field must equal its value (JSON equality; `null` matches a missing field).
    /// `id` and `version` name the record's own id and version unless the body has a
    /// field of that name, as in [`Order`].
    pub filter: Data,
    pub order: Option<Order>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// A top-level field; `id` and `version` name the record's own id and version
    /// unless the body has a field of that name.
    pub field: String,
    pub descending: bool,
}

impl Order {
    /// Parses `"field"` (ascending) or `"-field"` (descending).
    pub fn parse(s: &str) -> Option<Order> {
        let (field, descending) = match s.strip_prefix('-') {
            Some(rest) => (rest, true),
            None => (s, false),
        };
        (!field.is_empty()).then(|| Order {
            field: field.to_owned(),
            descending,
        })
    }
}

impl Query {
    /// Whether the record with this id, version and body passes the filter.
    pub fn matches(&self, id: &RecordId, version: Version, data: &Data) -> bool {
        self.filter
            .iter()
            .all(|(k, want)| *field(id, version, data, k) == *want)
    }

    /// Filters nothing, orders nothing: the whole resource.
    pub fn is_everything(&self) -> bool {
        self.filter.is_empty() && self.limit.is_none()
    }

    /// Sorts (by the order field, then by id) and truncates to the limit.
    pub fn order_and_limit(&self, records: &mut Vec<Record>) {
        match &self.order {
            Some(order) => records.sort_by(|a, b| {
                let o = compare_json(
                    &field(&a.id, a.version, &a.data, &order.field),
                    &field(&b.id, b.version, &b.data, &order.field),
                );
                let o = if order.descending { o.reverse() } else { o };
                o.then_with(|| a.id.cmp(&b.id))
            }),
            None => records.sort_by(|a, b| a.id.cmp(&b.id)),
        }
        records.truncate(self.limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT));
    }
}

/// What a filter or an order sees as `name` of a record: the body's field (even a
/// `null` one, so a body can always shadow the record's own id and version), else for
/// `id` and `version` the record's own, else `null`.
pub fn field<'a>(id: &RecordId, version: Version, data: &'a Data, name: &str) -> Cow<'a, Value> {
    match data.get(name) {
        Some(v) => Cow::Borrowed(v),
        None if name == "id" => Cow::Owned(Value::String(id.as_str().to_owned())),
        None if name == "version" => Cow::Owned(Value::from(version)),
        None => Cow::Owned(Value::Null),
    }
}

/// Total order over JSON values: null < bool < number < string < array < object.
pub fn compare_json(a: &Value, b: &Value) -> Ordering {
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ if rank(a) != rank(b) => rank(a).cmp(&rank(b)),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::name::{RecordId, ResourceName};
    use serde_json::json;

    fn rec(id: &str, data: Value) -> Record {
        Record {
            resource: ResourceName::parse("t").unwrap(),
            id: RecordId::parse(id).unwrap(),
            version: 1,
            data: data.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn equality_filter() {
        let q = Query {
            filter: json!({"done": false, "gone": null})
                .as_object()
                .unwrap()
                .clone(),
            ..Query::default()
        };
        let matches = |r: Record| q.matches(&r.id, r.version, &r.data);
        assert!(matches(rec("a", json!({"done": false}))));
        assert!(!matches(rec("a", json!({"done": true}))));
        assert!(!matches(rec("a", json!({"done": 0}))));
    }

    #[test]
    fn id_and_version_filter_like_fields_unless_the_body_has_them() {
        let q = |filter: Value| Query {
            filter: filter.as_object().unwrap().clone(),
            ..Query::default()
        };
        let mut r = rec("a", json!({"n": 1}));
        r.version = 3;
        let matches = |q: Query, r: &Record| q.matches(&r.id, r.version, &r.data);
        assert!(matches(q(json!({"id": "a"})), &r));
        assert!(!matches(q(json!({"id": "b"})), &r));
        assert!(matches(q(json!({"version": 3})), &r));
        assert!(!matches(q(json!({"version": 1})), &r));
        assert!(!matches(q(json!({"version": "3"})), &r));
        assert!(matches(q(json!({"id": "a", "version": 3, "n": 1})), &r));
        // A record always has an id and a version, so `null` never matches them.
        assert!(!matches(q(json!({"id": null})), &r));
        // The body's own field wins, as it does for `Order`.
        let shadowed = rec("a", json!({"id": "x", "version": null}));
        assert!(matches(q(json!({"id": "x", "version": null})), &shadowed));
        assert!(!matches(q(json!({"id": "a"})), &shadowed));
        assert!(!matches(q(json!({"version": 1})), &shadowed));
    }

    #[test]
    fn order_then_id_then_limit() {
        let mut rs = vec![
            rec("c", json!({"n": 1})),
            rec("a", json!({"n": 2})),
            rec("b", json!({"n": 1})),
        ];
        let q = Query {
            order: Order::parse("-n"),
            limit: Some(2),
            ..Query::default()
        };
        q.order_and_limit(&mut rs);
        let ids: Vec<_> = rs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
    }
}
