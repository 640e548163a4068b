//! The canonical protocol on `/ws`: Tether's own, uniting the seeds' best ideas.
//!
//! Request ids (`req`) correlate replies (seed 001's `trans_id`); reads, writes and
//! subscriptions to a record, a query, a resource or a topic; pushes named `PUT`,
//! `PATCH` and `DELETE` (seed 004); `msg` on every server message (seed 004); a session
//! and per-subscription positions with the store epoch for exact resume; confirmations
//! and flush (seed 001); presence (seed 003). PROTOCOL.md is the reference.

use crate::json::{self, Object};
use crate::{Codec, Dialect, MsgNo, Rejected, Request};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::fmt::Write as _;
use tether_core::event::Reply;
use tether_core::{
    Change, ConfirmKind, Data, Epoch, Error, ErrorCode, Op, Order, Outbound, Position, PushKind,
    Query, Record, RecordId, ResourceName, ResumeSub, Since, SubSpec, SubTarget, Version, Write,
    WriteKind,
};

/// The canonical protocol, version 1.
pub const PROTOCOL_VERSION: u64 = 1;

#[derive(Debug)]
pub struct Canonical;

impl Dialect for Canonical {
    fn name(&self) -> &'static str {
        "canonical"
    }

    fn path(&self) -> &'static str {
        "/ws"
    }

    fn codec(&self, _params: &HashMap<String, String>) -> Result<Box<dyn Codec>, Error> {
        Ok(Box::new(CanonicalCodec::default()))
    }
}

#[derive(Debug, Default)]
pub struct CanonicalCodec {
    /// Learned from the welcome, repeated on snapshots so a client always holds a
    /// position together with its epoch.
    epoch: Option<Epoch>,
    /// Subscription names the codec made up for subscribes without `sub`.
    auto_sub: u64,
}

impl Codec for CanonicalCodec {
    fn decode(&mut self, text: &str) -> Vec<Result<Request, Rejected>> {
        let parsed = json::parse_object(text).map_err(|error| Rejected {
            tag: Value::Null,
            error,
        });
        let result = parsed.and_then(|mut o| {
            let tag = o.get("req").cloned().unwrap_or(Value::Null);
            self.decode_op(&mut o)
                .map(|op| Request {
                    tag: tag.clone(),
                    op,
                })
                .map_err(|error| Rejected { tag, error })
        });
        vec![result]
    }

    fn encode(&mut self, event: &Outbound, msg: &mut MsgNo, out: &mut Vec<String>) {
        if let Outbound::Push {
            sub, kind, change, ..
        } = event
        {
            // Hot path: the change's body is encoded once per push kind and shared by
            // every connection; only `msg` and `sub` are per connection.
            let body = change.encoded(push_key(*kind), |c| push_body(*kind, c));
            let mut frame = String::with_capacity(body.len() + 48);
            let _ = write!(frame, "{{\"msg\":{},\"sub\":", msg.take());
            frame.push_str(&Value::from(&**sub).to_string());
            frame.push(',');
            frame.push_str(&body);
            out.push(frame);
            return;
        }
        if let Outbound::Reply {
            tag,
            result: Ok(reply),
        } = event
        {
            // Hot path: every get and every write is answered here.
            if let Some(frame) = read_or_write_reply(reply, tag, msg) {
                out.push(frame);
                return;
            }
        }
        let mut v = self.event_json(event);
        if let Value::Object(o) = &mut v {
            o.insert("msg".into(), msg.take().into());
        }
        out.push(v.to_string());
    }
}

impl CanonicalCodec {
    fn decode_op(&mut self, o: &mut Object) -> Result<Op, Error> {
        let kind = json::req_str(o, "type")?;
        let write_kind = match kind {
            "create" => Some(WriteKind::Create),
            "update" => Some(WriteKind::Update),
            "upsert" => Some(WriteKind::Upsert),
            "patch" => Some(WriteKind::Patch),
            "delete" => Some(WriteKind::Delete),
            _ => None,
        };
        if let Some(kind) = write_kind {
            return decode_write(kind, o);
        }
        let o = &*o;
        Ok(match kind {
            "get" => Op::Get {
                resource: json::resource(o, "resource")?,
                id: json::record_id(o, "id")?,
            },
            "query" | "all" => Op::Query {
                resource: json::resource(o, "resource")?,
                query: query(o)?,
            },
            "subscribe" => {
                let sub = match json::opt_str(o, "sub")? {
                    Some(s) => s.to_owned(),
                    None => {
                        self.auto_sub += 1;
                        format!("s{}", self.auto_sub)
                    }
                };
                Op::Subscribe {
                    sub,
                    spec: sub_spec(o)?,
                    since: since(o)?,
                }
            }
            "unsubscribe" => Op::Unsubscribe {
                sub: json::req_str(o, "sub")?.to_owned(),
            },
            "flush" => Op::Flush {
                resource: json::resource(o, "resource")?,
                id: json::opt_record_id(o, "id")?,
            },
            "resume" => {
                let subs = match o.get("subs") {
                    None | Some(Value::Null) => None,
                    Some(Value::Array(items)) => Some(
                        items
                            .iter()
                            .map(|item| {
                                let Value::Object(s) = item else {
                                    return Err(Error::bad_request(
                                        "each entry of \"subs\" must be an object",
                                    ));
                                };
                                Ok(ResumeSub {
                                    sub: json::req_str(s, "sub")?.to_owned(),
                                    spec: sub_spec(s)?,
                                    since: since(s)?,
                                })
                            })
                            .collect::<Result<Vec<_>, Error>>()?,
                    ),
                    Some(_) => return Err(Error::bad_request("field \"subs\" must be an array")),
                };
                Op::Resume {
                    session: json::req_str(o, "session")?.to_owned(),
                    since: since(o)?,
                    subs,
                }
            }
            "publish" => Op::Publish {
                topic: json::req_str(o, "topic")?.to_owned(),
                data: o.get("data").cloned().unwrap_or(Value::Null),
            },
            "done" | "abort" | "retry" => Op::Confirm {
                kind: match kind {
                    "done" => ConfirmKind::Done,
                    "abort" => ConfirmKind::Abort,
                    _ => ConfirmKind::Retry,
                },
                of: o.get("req").cloned().ok_or_else(|| json::missing("req"))?,
            },
            "join" | "leave" => Op::Presence {
                room: json::req_str(o, "room")?.to_owned(),
                join: kind == "join",
                user: json::opt_str(o, "user")?.map(str::to_owned),
            },
            "relay" => Op::Relay {
                room: json::req_str(o, "room")?.to_owned(),
                data: o.get("data").cloned().unwrap_or(Value::Null),
            },
            "ping" => Op::Ping,
            other => {
                return Err(Error::new(
                    ErrorCode::UnknownType,
                    format!("unknown message type {other:?}; see PROTOCOL.md for the list"),
                ))
            }
        })
    }

    fn event_json(&mut self, event: &Outbound) -> Value {
        match event {
            Outbound::Welcome {
                session,
                epoch,
                position,
            } => {
                self.epoch = Some(epoch.clone());
                json!({"type": "welcome", "session": &**session, "epoch": epoch, "pos": position, "protocol": PROTOCOL_VERSION})
            }
            Outbound::Reply {
                tag,
                result: Ok(reply),
            } => {
                let mut v = match reply {
                    Reply::Record(r) => json!({"record": r.as_ref().map(record_json)}),
                    Reply::Records(rs) => {
                        json!({"records": rs.iter().map(record_json).collect::<Vec<_>>()})
                    }
                    Reply::Written(c) => json!({
                        "resource": c.resource, "id": c.id, "version": c.version, "pos": c.position,
                        "record": c.record().as_ref().map(record_json),
                    }),
                    Reply::Released(subs) => {
                        json!({"subs": subs.iter().map(|s| &**s).collect::<Vec<_>>()})
                    }
                    Reply::Ok => json!({}),
                    Reply::Members(m) => {
                        json!({"members": m.iter().map(|s| &**s).collect::<Vec<_>>()})
                    }
                    Reply::Session { session, subs } => json!({
                        "session": &**session, "subs": subs.iter().map(|s| &**s).collect::<Vec<_>>(),
                    }),
                };
                v["type"] = "result".into();
                v["req"] = tag.clone();
                v
            }
            Outbound::Reply {
                tag,
                result: Err(e),
            } => error_json(tag, e),
            Outbound::Snapshot {
                tag,
                sub,
                position,
                records,
                resync,
                ..
            } => {
                let mut v = json!({
                    "type": "snapshot", "sub": &**sub, "epoch": self.epoch, "pos": position,
                    "records": records.iter().map(record_json).collect::<Vec<_>>(),
                });
                if let Some(tag) = tag {
                    v["req"] = tag.clone();
                }
                if let Some(reason) = resync {
                    v["resync"] = reason.as_str().into();
                }
                v
            }
            Outbound::Resumed { tag, sub, from, .. } => {
                let mut v =
                    json!({"type": "resumed", "sub": &**sub, "epoch": self.epoch, "from": from});
                if let Some(tag) = tag {
                    v["req"] = tag.clone();
                }
                v
            }
            Outbound::Push {
                kind, change, sub, ..
            } => {
                let mut v: Value =
                    serde_json::from_str(&push_body_object(*kind, change)).unwrap_or_default();
                v["sub"] = (&**sub).into();
                v
            }
            Outbound::Message { sub, topic, data } => {
                json!({"type": "message", "sub": &**sub, "topic": &**topic, "data": &**data})
            }
            Outbound::Presence {
                room,
                user,
                joined,
                members,
            } => json!({
                "type": "presence", "room": &**room, "user": &**user,
                "event": if *joined { "join" } else { "leave" },
                "members": members.iter().map(|s| &**s).collect::<Vec<_>>(),
            }),
            Outbound::Relay { room, from, data } => json!({
                "type": "relay", "room": &**room, "from": &**from, "data": &**data,
            }),
        }
    }
}

/// A write's fields. The body is moved out of the parsed message rather than copied.
fn decode_write(kind: WriteKind, o: &mut Object) -> Result<Op, Error> {
    let resource = json::resource(o, "resource")?;
    let id = match (kind, json::opt_record_id(o, "id")?) {
        (_, Some(id)) => id,
        (WriteKind::Create, None) => RecordId::generate(),
        (_, None) => return Err(json::missing("id")),
    };
    let expected_version = json::opt_u64(o, "version")?;
    let data = match kind {
        WriteKind::Delete => Default::default(),
        WriteKind::Patch => json::take_object(o, "data")?.ok_or_else(|| json::missing("data"))?,
        _ => json::take_object(o, "data")?.unwrap_or_default(),
    };
    Ok(Op::Write(Write::new(
        kind,
        resource,
        id,
        data,
        expected_version,
    )?))
}

fn error_json(tag: &Value, e: &Error) -> Value {
    let mut v = json!({"type": "error", "code": e.code.as_str(), "message": e.message});
    if !tag.is_null() {
        v["req"] = tag.clone();
    }
    if let Some(version) = e.current_version {
        v["version"] = version.into();
    }
    v
}

/// The reply to a get or a write, serialized straight from the reply's parts. Building
/// it as a `Value` first, as `event_json` would, copied the record's body into a new
/// map and then wrote that out: 15% of the server's CPU in the durable-writes
/// benchmark. `None` for the other replies.
fn read_or_write_reply(reply: &Reply, tag: &Value, msg: &mut MsgNo) -> Option<String> {
    #[derive(Serialize)]
    struct RecordReply<'a> {
        record: Option<&'a Record>,
        #[serde(rename = "type")]
        kind: &'static str,
        req: &'a Value,
        msg: u64,
    }
    #[derive(Serialize)]
    struct RecordOut<'a> {
        resource: &'a ResourceName,
        id: &'a RecordId,
        version: Version,
        data: &'a Data,
    }
    #[derive(Serialize)]
    struct WrittenReply<'a> {
        resource: &'a ResourceName,
        id: &'a RecordId,
        version: Version,
        pos: Position,
        record: Option<RecordOut<'a>>,
        #[serde(rename = "type")]
        kind: &'static str,
        req: &'a Value,
        msg: u64,
    }
    let text = match reply {
        Reply::Record(record) => serde_json::to_string(&RecordReply {
            record: record.as_ref(),
            kind: "result",
            req: tag,
            msg: msg.take(),
        }),
        Reply::Written(c) => serde_json::to_string(&WrittenReply {
            resource: &c.resource,
            id: &c.id,
            version: c.version,
            pos: c.position,
            record: c.data.as_ref().map(|data| RecordOut {
                resource: &c.resource,
                id: &c.id,
                version: c.version,
                data,
            }),
            kind: "result",
            req: tag,
            msg: msg.take(),
        }),
        _ => return None,
    };
    // Maps with string keys, strings and numbers: serializing these cannot fail.
    text.ok()
}

pub fn record_json(r: &Record) -> Value {
    json!({"resource": r.resource, "id": r.id, "version": r.version, "data": r.data})
}

fn push_key(kind: PushKind) -> &'static str {
    match kind {
        PushKind::Put => "canonical/PUT",
        PushKind::Patch => "canonical/PATCH",
        PushKind::Delete => "canonical/DELETE",
    }
}

/// The shared tail of a push frame: `"type":...}` without the leading `{`.
fn push_body(kind: PushKind, c: &Change) -> String {
    let object = push_body_object(kind, c);
    object[1..].to_owned()
}

fn push_body_object(kind: PushKind, c: &Change) -> String {
    let v = match kind {
        PushKind::Put => {
            json!({"type": "PUT", "pos": c.position, "resource": c.resource, "id": c.id, "version": c.version, "data": c.data})
        }
        PushKind::Patch => {
            json!({"type": "PATCH", "pos": c.position, "resource": c.resource, "id": c.id, "version": c.version, "patch": c.patch})
        }
        PushKind::Delete => {
            json!({"type": "DELETE", "pos": c.position, "resource": c.resource, "id": c.id, "version": c.version})
        }
    };
    v.to_string()
}

fn query(o: &Object) -> Result<Query, Error> {
    let filter = json::opt_object(o, "where")?.cloned().unwrap_or_default();
    let order = match json::opt_str(o, "order")? {
        Some(s) => Some(Order::parse(s).ok_or_else(|| {
            Error::bad_request("field \"order\" must name a field, e.g. \"title\" or \"-title\"")
        })?),
        None => None,
    };
    let limit = json::opt_u64(o, "limit")?.map(|l| l as usize);
    if limit == Some(0) || limit.is_some_and(|l| l > tether_core::query::MAX_LIMIT) {
        return Err(Error::bad_request(format!(
            "field \"limit\" must be between 1 and {}",
            tether_core::query::MAX_LIMIT
        )));
    }
    Ok(Query {
        filter,
        order,
        limit,
    })
}

fn sub_spec(o: &Object) -> Result<SubSpec, Error> {
    if let Some(topic) = json::opt_str(o, "topic")? {
        return Ok(SubSpec {
            target: SubTarget::Topic {
                topic: topic.to_owned(),
            },
        });
    }
    let resource = json::resource(o, "resource")?;
    let target = match json::opt_record_id(o, "id")? {
        Some(id) => SubTarget::Record { resource, id },
        None => SubTarget::Query {
            resource,
            query: Box::new(query(o)?),
        },
    };
    Ok(SubSpec { target })
}

fn since(o: &Object) -> Result<Option<Since>, Error> {
    let Some(s) = json::opt_object(o, "since")? else {
        return Ok(None);
    };
    Ok(Some(Since {
        epoch: Epoch(json::req_str(s, "epoch")?.to_owned()),
        position: Position(json::opt_u64(s, "pos")?.ok_or_else(|| json::missing("since.pos"))?),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tether_core::{ChangeKind, ResourceName};

    fn decode(text: &str) -> Result<Request, Rejected> {
        CanonicalCodec::default().decode(text).remove(0)
    }

    #[test]
    fn decodes_writes_with_ids_and_versions() {
        let r = decode(
            r#"{"req":7,"type":"update","resource":"todos","id":"a","data":{"t":1},"version":3}"#,
        )
        .unwrap();
        assert_eq!(r.tag, json!(7));
        let Op::Write(w) = r.op else { panic!() };
        assert_eq!((w.kind, w.expected_version), (WriteKind::Update, Some(3)));
        let r = decode(r#"{"type":"create","resource":"todos","data":{}}"#).unwrap();
        let Op::Write(w) = r.op else { panic!() };
        assert!(!w.id.as_str().is_empty());
    }

    #[test]
    fn bad_input_is_a_value_with_the_request_id() {
        let e = decode("{not json").unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BadJson);
        let e = decode(r#"{"req":"x","type":"fly"}"#).unwrap_err();
        assert_eq!((e.tag, e.error.code), (json!("x"), ErrorCode::UnknownType));
        let e = decode(r#"{"req":1,"type":"get","resource":"todos","id":{}}"#).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidName);
        let e = decode(r#"{"req":1,"type":"get","resource":5,"id":"a"}"#).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BadRequest);
        let e = decode(r#"[1,2]"#).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::BadRequest);
    }

    #[test]
    fn subscribe_targets() {
        let r = decode(r#"{"type":"subscribe","sub":"q","resource":"todos","where":{"done":false},"order":"-n","limit":5,"since":{"epoch":"e","pos":9}}"#).unwrap();
        let Op::Subscribe { sub, spec, since } = r.op else {
            panic!()
        };
        assert_eq!(sub, "q");
        assert_eq!(since.unwrap().position, Position(9));
        let SubTarget::Query { query, .. } = spec.target else {
            panic!()
        };
        assert_eq!(query.limit, Some(5));
        let r = decode(r#"{"type":"subscribe","topic":"logs/a"}"#).unwrap();
        assert!(matches!(
            r.op,
            Op::Subscribe {
                spec: SubSpec {
                    target: SubTarget::Topic { .. }
                },
                ..
            }
        ));
    }

    #[test]
    fn read_and_write_replies_are_the_frames_the_general_encoder_builds() {
        let todos = ResourceName::parse("todos").unwrap();
        let body = json!({"t": "a \"quoted\" ü", "n": [1, 2.5, null], "o": {"z": 1, "a": 2}});
        let body = body.as_object().unwrap().clone();
        let written = |kind, data: Option<Data>| {
            Reply::Written(Arc::new(Change::new(
                Position(9),
                kind,
                todos.clone(),
                RecordId::parse("x:1").unwrap(),
                3,
                data,
                None,
            )))
        };
        let record = Record {
            resource: todos.clone(),
            id: RecordId::parse("a").unwrap(),
            version: 2,
            data: body.clone(),
        };
        let replies = [
            written(ChangeKind::Put, Some(body.clone())),
            written(ChangeKind::Delete, None),
            Reply::Record(Some(record)),
            Reply::Record(None),
        ];
        for tag in [json!(7), json!("req-1"), Value::Null] {
            for reply in &replies {
                let event = Outbound::Reply {
                    tag: tag.clone(),
                    result: Ok(reply.clone()),
                };
                let (mut codec, mut msg, mut out) =
                    (CanonicalCodec::default(), MsgNo(41), Vec::new());
                codec.encode(&event, &mut msg, &mut out);
                let mut general = codec.event_json(&event);
                general["msg"] = 42.into();
                // Key order follows serde_json's features, so compare values.
                let fast: Value = serde_json::from_str(&out[0]).unwrap();
                assert_eq!((out.len(), fast), (1, general), "{reply:?}");
                assert_eq!(msg.last(), 42);
            }
        }
    }

    #[test]
    fn push_frames_share_the_body_and_carry_msg_and_sub() {
        let change = Arc::new(Change::new(
            Position(4),
            ChangeKind::Put,
            ResourceName::parse("todos").unwrap(),
            RecordId::parse("a").unwrap(),
            2,
            Some(json!({"t": 1}).as_object().unwrap().clone()),
            None,
        ));
        let spec = Arc::new(SubSpec {
            target: SubTarget::Query {
                resource: ResourceName::parse("todos").unwrap(),
                query: Box::default(),
            },
        });
        let push = Outbound::Push {
            sub: "s\"1".into(),
            spec,
            kind: PushKind::Put,
            change,
        };
        let (mut codec, mut msg, mut out) =
            (CanonicalCodec::default(), MsgNo::default(), Vec::new());
        codec.encode(&push, &mut msg, &mut out);
        codec.encode(&push, &mut msg, &mut out);
        let v: Value = serde_json::from_str(&out[1]).unwrap();
        assert_eq!(
            v,
            json!({"msg": 2, "sub": "s\"1", "type": "PUT", "pos": 4, "resource": "todos", "id": "a", "version": 2, "data": {"t": 1}})
        );
    }
}
