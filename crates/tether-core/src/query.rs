//! Queries: equality filters on top-level fields, an order and a limit.
//!
//! The same `Query` decides what a `query` read returns and which changes a query
//! subscription sees entering and leaving, so both always agree.

use crate::record::{Data, Record};
use serde_json::Value;
use std::cmp::Ordering;

/// Largest `limit` a client may ask for; also the cap on an unlimited read.
pub const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Query {
    /// Every field must equal its value (JSON equality; `null` matches a missing field).
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
    pub fn matches(&self, data: &Data) -> bool {
        self.filter
            .iter()
            .all(|(k, want)| data.get(k).unwrap_or(&Value::Null) == want)
    }

    /// Filters nothing, orders nothing: the whole resource.
    pub fn is_everything(&self) -> bool {
        self.filter.is_empty() && self.limit.is_none()
    }

    /// Sorts (by the order field, then by id) and truncates to the limit.
    pub fn order_and_limit(&self, records: &mut Vec<Record>) {
        match &self.order {
            Some(order) => records.sort_by(|a, b| {
                let o = compare_json(&sort_value(a, &order.field), &sort_value(b, &order.field));
                let o = if order.descending { o.reverse() } else { o };
                o.then_with(|| a.id.cmp(&b.id))
            }),
            None => records.sort_by(|a, b| a.id.cmp(&b.id)),
        }
        records.truncate(self.limit.unwrap_or(MAX_LIMIT).min(MAX_LIMIT));
    }
}

fn sort_value(r: &Record, field: &str) -> Value {
    match r.data.get(field) {
        Some(v) => v.clone(),
        None if field == "id" => Value::String(r.id.as_str().to_owned()),
        None if field == "version" => Value::from(r.version),
        None => Value::Null,
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
        assert!(q.matches(json!({"done": false}).as_object().unwrap()));
        assert!(!q.matches(json!({"done": true}).as_object().unwrap()));
        assert!(!q.matches(json!({"done": 0}).as_object().unwrap()));
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
