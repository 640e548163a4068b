//! Field access on decoded JSON with errors that name the field and what was wrong,
//! shared by every dialect so their bad-input messages read alike.

use crate::MsgNo;
use serde_json::{Map, Value};
use tether_core::{Data, Error, ErrorCode, RecordId, ResourceName};

pub type Object = Map<String, Value>;

/// Parses a frame that must be a JSON object.
pub fn parse_object(text: &str) -> Result<Object, Error> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(other) => Err(Error::bad_request(format!(
            "a message must be a JSON object, not {}",
            kind_of(&other)
        ))),
        Err(e) => Err(Error::new(ErrorCode::BadJson, format!("invalid JSON: {e}"))),
    }
}

pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn wrong(field: &str, want: &str, got: &Value) -> Error {
    Error::bad_request(format!(
        "field {field:?} must be {want}, not {}",
        kind_of(got)
    ))
}

pub fn missing(field: &str) -> Error {
    Error::bad_request(format!("field {field:?} is required"))
}

pub fn opt_str<'a>(o: &'a Object, field: &str) -> Result<Option<&'a str>, Error> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(wrong(field, "a string", other)),
    }
}

pub fn req_str<'a>(o: &'a Object, field: &str) -> Result<&'a str, Error> {
    opt_str(o, field)?.ok_or_else(|| missing(field))
}

pub fn opt_u64(o: &Object, field: &str) -> Result<Option<u64>, Error> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().map(Some).ok_or_else(|| {
            Error::bad_request(format!("field {field:?} must be a non-negative integer"))
        }),
        Some(other) => Err(wrong(field, "a non-negative integer", other)),
    }
}

pub fn opt_object<'a>(o: &'a Object, field: &str) -> Result<Option<&'a Object>, Error> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(wrong(field, "an object", other)),
    }
}

pub fn req_object<'a>(o: &'a Object, field: &str) -> Result<&'a Object, Error> {
    opt_object(o, field)?.ok_or_else(|| missing(field))
}

/// A record body: an object (absent means empty).
pub fn data(o: &Object, field: &str) -> Result<Data, Error> {
    Ok(opt_object(o, field)?.cloned().unwrap_or_default())
}

/// Moves an optional object field out of `o`, for bodies too large to copy.
pub fn take_object(o: &mut Object, field: &str) -> Result<Option<Object>, Error> {
    match o.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(wrong(field, "an object", &other)),
    }
}

pub fn resource(o: &Object, field: &str) -> Result<ResourceName, Error> {
    ResourceName::parse(req_str(o, field)?)
}

pub fn record_id(o: &Object, field: &str) -> Result<RecordId, Error> {
    match o.get(field) {
        None | Some(Value::Null) => Err(missing(field)),
        Some(v) => RecordId::from_json(v),
    }
}

pub fn opt_record_id(o: &Object, field: &str) -> Result<Option<RecordId>, Error> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => RecordId::from_json(v).map(Some),
    }
}

/// Serializes a server message with the connection's next message number first:
/// `{"msg":N, ...}`. A `msg` already in `v` (a relayed or broadcast message that had
/// one) gives way to it.
pub fn frame(msg: &mut MsgNo, mut v: Value) -> String {
    if let Value::Object(o) = &mut v {
        o.remove("msg");
    }
    let body = v.to_string();
    let n = msg.take();
    match body.strip_prefix('{') {
        Some("}") => format!("{{\"msg\":{n}}}"),
        Some(rest) => format!("{{\"msg\":{n},{rest}"),
        // Not an object: nothing to stamp (codecs only send objects).
        None => body,
    }
}
