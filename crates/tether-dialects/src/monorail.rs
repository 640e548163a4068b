//! Seed 002's MonoRail protocol on `/monorail/<channel>`.
//!
//! The channel in the URL is the resource, so one connection serves one channel and no
//! message names a resource. Every message is routed by its `handler`: `init` answers
//! `session`, `query` and `all` answer `list`, `get` answers `item` or `remove`, `watch`
//! answers `list` and then pushes `item` / `remove` until the matching `stop`. The seed
//! has no continuations (a client cannot tell which request a message answers), so
//! `list` echoes the `params` it was for, and clients must not rely on order between
//! different watches.
//!
//! Seed 002's "broadcast to all or a subset of all known connections" is a topic named
//! like the channel: a connection's first `watch` subscribes it, `POST /publish/<channel>`
//! (optionally narrowed by `session=` or `watching.<field>=`) reaches it, and `/ws`
//! clients can subscribe to the same topic. docs/dialects/monorail.md is the reference.

use crate::json::{self, frame, Object};
use crate::{Codec, Dialect, MsgNo, Rejected, Request};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use tether_core::event::Reply;
use tether_core::{
    Change, Data, Error, ErrorCode, Op, Outbound, PushKind, Query, Record, RecordId, ResourceName,
    SubSpec, SubTarget,
};

/// The topic subscription that carries broadcasts; not a name a watch can produce.
const BROADCAST_SUB: &str = "monorail:broadcast";
/// Watches are subscribed as `watch:<normalized params>`, so a repeated `watch` or a
/// `stop` finds its subscription by its params alone.
const WATCH_PREFIX: &str = "watch:";

#[derive(Debug)]
pub struct Monorail;

impl Dialect for Monorail {
    fn name(&self) -> &'static str {
        "monorail"
    }

    fn path(&self) -> &'static str {
        "/monorail/{channel}"
    }

    fn codec(&self, params: &HashMap<String, String>) -> Result<Box<dyn Codec>, Error> {
        let channel = params.get("channel").ok_or_else(|| {
            Error::bad_request("the URL must name a channel: /monorail/<channel>")
        })?;
        Ok(Box::new(MonorailCodec::new(ResourceName::parse(channel)?)))
    }
}

/// What `params` select: one record (they name an `id`), or every record whose fields
/// equal the params (`{}` is the whole channel).
#[derive(Debug, Clone, PartialEq)]
enum Selector {
    /// `rest` holds the other params, checked against the record by this codec: the
    /// engine watches the record by id.
    One {
        id: RecordId,
        rest: Data,
    },
    Many {
        filter: Data,
    },
}

impl Selector {
    fn parse(mut params: Data) -> Result<Selector, Error> {
        match params.remove("id") {
            None => Ok(Selector::Many { filter: params }),
            Some(id) => Ok(Selector::One {
                id: RecordId::from_json(&id)?,
                rest: params,
            }),
        }
    }

    /// The params with `id` as a string and keys sorted: the same watch written as
    /// `{"id": 5}` or `{"id": "5"}`, in any field order, is one watch, and `stop` finds it.
    fn sorted(&self) -> BTreeMap<String, Value> {
        let (id, rest) = match self {
            Selector::One { id, rest } => (Some(id), rest),
            Selector::Many { filter } => (None, filter),
        };
        let mut out: BTreeMap<String, Value> =
            rest.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Some(id) = id {
            out.insert("id".into(), id.as_str().into());
        }
        out
    }

    fn normalized(&self) -> Object {
        self.sorted().into_iter().collect()
    }

    /// The name of the subscription watching these params.
    fn sub(&self) -> String {
        // A BTreeMap serializes in key order whatever serde_json's map order is.
        let key = serde_json::to_string(&self.sorted()).unwrap_or_default();
        format!("{WATCH_PREFIX}{key}")
    }

    fn op(&self, channel: &ResourceName) -> Op {
        match self {
            Selector::One { id, .. } => Op::Get {
                resource: channel.clone(),
                id: id.clone(),
            },
            Selector::Many { filter } => Op::Query {
                resource: channel.clone(),
                query: Query {
                    filter: filter.clone(),
                    ..Query::default()
                },
            },
        }
    }

    fn target(&self, channel: &ResourceName) -> SubTarget {
        match self {
            Selector::One { id, .. } => SubTarget::Record {
                resource: channel.clone(),
                id: id.clone(),
            },
            Selector::Many { filter } => SubTarget::Query {
                resource: channel.clone(),
                query: Box::new(Query {
                    filter: filter.clone(),
                    ..Query::default()
                }),
            },
        }
    }

    /// Whether a record body passes the params the engine does not check itself.
    fn admits(&self, data: &Data) -> bool {
        match self {
            Selector::One { rest, .. } => rest
                .iter()
                .all(|(k, v)| data.get(k).unwrap_or(&Value::Null) == v),
            Selector::Many { .. } => true,
        }
    }

    fn has_rest(&self) -> bool {
        matches!(self, Selector::One { rest, .. } if !rest.is_empty())
    }
}

/// One `watch` the client holds.
#[derive(Debug)]
struct Watch {
    selector: Selector,
    params: Object,
}

#[derive(Debug)]
pub struct MonorailCodec {
    channel: ResourceName,
    /// The connection's session, learned from the welcome; `init` hands it out.
    session: Option<Arc<str>>,
    /// Watches by subscription name.
    watches: HashMap<Arc<str>, Watch>,
    /// Whether the broadcast topic is subscribed: from the first watch to the last stop.
    broadcast: bool,
}

impl MonorailCodec {
    pub fn new(channel: ResourceName) -> MonorailCodec {
        MonorailCodec {
            channel,
            session: None,
            watches: HashMap::new(),
            broadcast: false,
        }
    }

    fn decode_ops(&mut self, handler: &str, o: &Object) -> Result<Vec<Request>, Error> {
        let tag = |params: &Object| json!({"h": handler, "params": params});
        let selector = || -> Result<Selector, Error> {
            Selector::parse(json::opt_object(o, "params")?.cloned().unwrap_or_default())
        };
        Ok(match handler {
            "init" => {
                // An `id` takes over an earlier session (after a reconnect), so a
                // service addressing broadcasts to it keeps reaching the client.
                let op = match json::opt_str(o, "id")? {
                    Some(old) => Op::Resume {
                        session: old.to_owned(),
                        since: None,
                        subs: Some(Vec::new()),
                    },
                    None => Op::Ping,
                };
                vec![Request {
                    tag: json!({"h": "init"}),
                    op,
                }]
            }
            "query" | "get" => {
                let selector = selector()?;
                vec![Request {
                    tag: tag(&selector.normalized()),
                    op: selector.op(&self.channel),
                }]
            }
            "all" => vec![Request {
                tag: tag(&Object::new()),
                op: Selector::Many {
                    filter: Data::new(),
                }
                .op(&self.channel),
            }],
            "watch" => self.watch(selector()?),
            "stop" => self.stop(&selector()?),
            other => {
                return Err(Error::new(
                    ErrorCode::UnknownType,
                    format!(
                        "unknown handler {other:?}; the handlers are init, query, all, get, watch and stop"
                    ),
                ))
            }
        })
    }

    fn watch(&mut self, selector: Selector) -> Vec<Request> {
        let params = selector.normalized();
        let sub: Arc<str> = selector.sub().into();
        if self.watches.contains_key(&sub) {
            // Already watching: the client gets a fresh list, not a second stream.
            return vec![Request {
                tag: json!({"h": "query", "params": params}),
                op: selector.op(&self.channel),
            }];
        }
        let mut requests = vec![Request {
            tag: json!({"h": "watch", "params": params, "sub": &*sub}),
            op: Op::Subscribe {
                sub: sub.to_string(),
                spec: SubSpec {
                    target: selector.target(&self.channel),
                },
                since: None,
            },
        }];
        self.watches.insert(sub, Watch { selector, params });
        if !self.broadcast {
            self.broadcast = true;
            requests.push(Request {
                tag: json!({"h": "watch", "sub": BROADCAST_SUB}),
                op: Op::Subscribe {
                    sub: BROADCAST_SUB.into(),
                    spec: SubSpec {
                        target: SubTarget::Topic {
                            topic: self.channel.as_str().into(),
                        },
                    },
                    since: None,
                },
            });
        }
        requests
    }

    /// Stops a watch. Stopping what is not watched is not an error: the seed says the
    /// client "may or may not already be watching", and there is no answer either way.
    fn stop(&mut self, selector: &Selector) -> Vec<Request> {
        let sub = selector.sub();
        if self.watches.remove(sub.as_str()).is_none() {
            return Vec::new();
        }
        let mut requests = vec![Request {
            tag: json!({"h": "stop"}),
            op: Op::Unsubscribe { sub },
        }];
        if self.watches.is_empty() && self.broadcast {
            self.broadcast = false;
            requests.push(Request {
                tag: json!({"h": "stop"}),
                op: Op::Unsubscribe {
                    sub: BROADCAST_SUB.into(),
                },
            });
        }
        requests
    }

    fn reply(&mut self, tag: &Value, reply: &Reply, msg: &mut MsgNo, out: &mut Vec<String>) {
        let handler = tag["h"].as_str().unwrap_or_default();
        let params = tag["params"].as_object().cloned().unwrap_or_default();
        // The tag carries normalized params, so they parse back without error.
        let selector = Selector::parse(params.clone()).ok();
        match (handler, reply) {
            ("init", Reply::Session { session, .. }) => {
                self.session = Some(session.clone());
                out.push(frame(msg, json!({"handler": "session", "id": &**session})));
            }
            ("init", _) => {
                let id = self.session.as_deref().unwrap_or_default();
                out.push(frame(msg, json!({"handler": "session", "id": id})));
            }
            ("query" | "all", Reply::Record(r)) => {
                let items = r
                    .iter()
                    .filter(|r| selector.as_ref().is_none_or(|s| s.admits(&r.data)))
                    .map(record_item);
                out.push(list(msg, items, &params));
            }
            ("query" | "all", Reply::Records(rs)) => {
                out.push(list(msg, rs.iter().map(record_item), &params));
            }
            ("get", Reply::Record(Some(r)))
                if selector.as_ref().is_none_or(|s| s.admits(&r.data)) =>
            {
                out.push(frame(
                    msg,
                    json!({"handler": "item", "data": record_item(r)}),
                ));
            }
            ("get", Reply::Record(_)) => out.push(remove(msg, &params)),
            ("get", Reply::Records(rs)) if rs.is_empty() => out.push(remove(msg, &params)),
            ("get", Reply::Records(rs)) => {
                for r in rs {
                    out.push(frame(
                        msg,
                        json!({"handler": "item", "data": record_item(r)}),
                    ));
                }
            }
            // Subscribing answers with a snapshot, stopping answers nothing.
            _ => {}
        }
    }

    fn push(
        &self,
        sub: &str,
        kind: PushKind,
        change: &Change,
        msg: &mut MsgNo,
        out: &mut Vec<String>,
    ) {
        let Some(watch) = self.watches.get(sub) else {
            return; // stopped while the push was on its way
        };
        let admitted = change
            .data
            .as_ref()
            .is_some_and(|d| watch.selector.admits(d));
        let body = match (kind, admitted) {
            (PushKind::Put | PushKind::Patch, true) if !watch.selector.has_rest() => {
                // Hot path: the frame body is encoded once per change for every
                // MonoRail watcher; only `msg` is per connection.
                change.encoded("monorail/item", item_body)
            }
            (PushKind::Put | PushKind::Patch, true) => item_body(change).into(),
            _ => change.encoded("monorail/remove", remove_body),
        };
        let mut frame = String::with_capacity(body.len() + 16);
        let _ = write!(frame, "{{\"msg\":{},", msg.take());
        frame.push_str(&body);
        out.push(frame);
    }
}

impl Codec for MonorailCodec {
    fn decode(&mut self, text: &str) -> Vec<Result<Request, Rejected>> {
        let o = match json::parse_object(text) {
            Ok(o) => o,
            Err(error) => {
                return vec![Err(Rejected {
                    tag: json!({"h": null}),
                    error,
                })]
            }
        };
        let handler = match o.get("handler") {
            Some(Value::String(h)) => h.clone(),
            None | Some(Value::Null) => {
                return vec![Err(Rejected {
                    tag: json!({"h": null}),
                    error: Error::bad_request(
                        "field \"handler\" is required: every MonoRail message names its handler",
                    ),
                })]
            }
            Some(other) => {
                return vec![Err(Rejected {
                    tag: json!({"h": null}),
                    error: Error::bad_request(format!(
                        "field \"handler\" must be a string, not {}",
                        json::kind_of(other)
                    )),
                })]
            }
        };
        match self.decode_ops(&handler, &o) {
            Ok(requests) => requests.into_iter().map(Ok).collect(),
            Err(error) => vec![Err(Rejected {
                tag: json!({"h": handler}),
                error,
            })],
        }
    }

    fn encode(&mut self, event: &Outbound, msg: &mut MsgNo, out: &mut Vec<String>) {
        match event {
            Outbound::Welcome { session, .. } => {
                // The seed has no greeting: the client asks with `init`.
                self.session = Some(session.clone());
            }
            Outbound::Reply {
                tag,
                result: Ok(reply),
            } => self.reply(tag, reply, msg, out),
            Outbound::Reply {
                tag,
                result: Err(e),
            } => {
                if tag["h"] == "watch" {
                    // The watch did not start: forget it, so `watch` can be retried.
                    match tag["sub"].as_str() {
                        Some(BROADCAST_SUB) => self.broadcast = false,
                        Some(sub) => {
                            self.watches.remove(sub);
                        }
                        None => {}
                    }
                }
                out.push(failure(msg, &tag["h"], e));
            }
            Outbound::Snapshot { sub, records, .. } => {
                if let Some(watch) = self.watches.get(&**sub) {
                    let items = records
                        .iter()
                        .filter(|r| watch.selector.admits(&r.data))
                        .map(record_item);
                    out.push(list(msg, items, &watch.params));
                }
            }
            Outbound::Push {
                sub, kind, change, ..
            } => self.push(sub, *kind, change, msg, out),
            Outbound::Message { data, .. } => {
                // A service that sends a whole MonoRail message (it names a handler)
                // gets it delivered as is; anything else is an item of the channel.
                let v = match &**data {
                    Value::Object(o) if o.get("handler").is_some_and(Value::is_string) => {
                        Value::Object(o.clone())
                    }
                    other => json!({"handler": "item", "data": other}),
                };
                out.push(frame(msg, v));
            }
            Outbound::Resumed { .. } | Outbound::Presence { .. } | Outbound::Relay { .. } => {}
        }
    }
}

/// A record as MonoRail items look: its fields with its `id` beside them.
fn record_item(r: &Record) -> Value {
    item_value(&r.id, &r.data)
}

fn item_value(id: &RecordId, data: &Data) -> Value {
    let mut item = Map::new();
    item.insert("id".into(), id.as_str().into());
    item.extend(data.iter().map(|(k, v)| (k.clone(), v.clone())));
    Value::Object(item)
}

/// The tail of an `item` push frame, without the leading `{`.
fn item_body(c: &Change) -> String {
    let data = c.data.clone().unwrap_or_default();
    let v = json!({"handler": "item", "data": item_value(&c.id, &data)});
    v.to_string()[1..].to_owned()
}

fn remove_body(c: &Change) -> String {
    let v = json!({"handler": "remove", "params": {"id": c.id}});
    v.to_string()[1..].to_owned()
}

fn list(msg: &mut MsgNo, items: impl Iterator<Item = Value>, params: &Object) -> String {
    frame(
        msg,
        json!({"handler": "list", "items": items.collect::<Vec<_>>(), "params": params}),
    )
}

fn remove(msg: &mut MsgNo, params: &Object) -> String {
    frame(msg, json!({"handler": "remove", "params": params}))
}

fn failure(msg: &mut MsgNo, request: &Value, e: &Error) -> String {
    frame(
        msg,
        json!({"handler": "failure", "request": request, "code": e.code.as_str(), "message": e.message}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_core::{ChangeKind, Position};

    fn codec() -> MonorailCodec {
        MonorailCodec::new(ResourceName::parse("nodes").unwrap())
    }

    fn decode(c: &mut MonorailCodec, text: &str) -> Vec<Result<Request, Rejected>> {
        c.decode(text)
    }

    fn encode(c: &mut MonorailCodec, event: &Outbound, msg: &mut MsgNo) -> Vec<Value> {
        let mut out = Vec::new();
        c.encode(event, msg, &mut out);
        out.iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect()
    }

    fn record(id: &str, data: Value) -> Record {
        Record {
            resource: ResourceName::parse("nodes").unwrap(),
            id: RecordId::parse(id).unwrap(),
            version: 1,
            data: data.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn handlers_route_to_ops() {
        let mut c = codec();
        let r = decode(&mut c, r#"{"handler":"query","params":{"state":"up"}}"#);
        let Ok(Request {
            op: Op::Query { query, .. },
            ..
        }) = &r[0]
        else {
            panic!("{r:?}")
        };
        assert_eq!(Value::Object(query.filter.clone()), json!({"state": "up"}));
        let r = decode(&mut c, r#"{"handler":"get","params":{"id":7}}"#);
        assert!(matches!(&r[0], Ok(Request { op: Op::Get { id, .. }, .. }) if id.as_str() == "7"));
        let r = decode(&mut c, r#"{"handler":"all"}"#);
        assert!(matches!(
            &r[0],
            Ok(Request {
                op: Op::Query { .. },
                ..
            })
        ));
        let r = decode(&mut c, r#"{"handler":"init"}"#);
        assert!(matches!(&r[0], Ok(Request { op: Op::Ping, .. })));
    }

    #[test]
    fn watch_subscribes_once_and_stop_releases() {
        let mut c = codec();
        let r = decode(&mut c, r#"{"handler":"watch","params":{"id":"a","x":1}}"#);
        assert_eq!(r.len(), 2, "the watch and the broadcast topic: {r:?}");
        // The same watch again, fields in another order, is answered with a list.
        let r = decode(&mut c, r#"{"handler":"watch","params":{"x":1,"id":"a"}}"#);
        assert!(matches!(
            &r[..],
            [Ok(Request {
                op: Op::Get { .. },
                ..
            })]
        ));
        let r = decode(&mut c, r#"{"handler":"watch","params":{}}"#);
        assert_eq!(r.len(), 1, "the topic is subscribed already");
        let r = decode(&mut c, r#"{"handler":"stop","params":{"id":"a","x":1}}"#);
        assert_eq!(r.len(), 1);
        let r = decode(&mut c, r#"{"handler":"stop","params":{"id":"a","x":1}}"#);
        assert!(r.is_empty(), "stopping what is not watched says nothing");
        let r = decode(&mut c, r#"{"handler":"stop"}"#);
        assert_eq!(r.len(), 2, "the last stop releases the topic too");
    }

    #[test]
    fn answers_carry_msg_and_the_seed_shapes() {
        let mut c = codec();
        let mut msg = MsgNo::default();
        let welcome = Outbound::Welcome {
            session: "c-1".into(),
            epoch: tether_core::Epoch("e".into()),
            position: Position(0),
        };
        assert!(encode(&mut c, &welcome, &mut msg).is_empty());
        let reply = |tag: Value, result| Outbound::Reply { tag, result };
        let v = encode(
            &mut c,
            &reply(json!({"h": "init"}), Ok(Reply::Ok)),
            &mut msg,
        );
        assert_eq!(v, [json!({"msg": 1, "handler": "session", "id": "c-1"})]);
        let v = encode(
            &mut c,
            &reply(
                json!({"h": "get", "params": {"id": "a"}}),
                Ok(Reply::Record(Some(record("a", json!({"n": 1}))))),
            ),
            &mut msg,
        );
        assert_eq!(
            v,
            [json!({"msg": 2, "handler": "item", "data": {"id": "a", "n": 1}})]
        );
        let v = encode(
            &mut c,
            &reply(
                json!({"h": "get", "params": {"id": "b"}}),
                Ok(Reply::Record(None)),
            ),
            &mut msg,
        );
        assert_eq!(
            v,
            [json!({"msg": 3, "handler": "remove", "params": {"id": "b"}})]
        );
        let v = encode(
            &mut c,
            &reply(
                json!({"h": "fly"}),
                Err(Error::new(ErrorCode::UnknownType, "no")),
            ),
            &mut msg,
        );
        assert_eq!(v[0]["handler"], "failure");
        assert_eq!(v[0]["request"], "fly");
        assert_eq!(v[0]["code"], "unknown_type");
    }

    #[test]
    fn pushes_become_item_or_remove() {
        let mut c = codec();
        let mut msg = MsgNo::default();
        decode(
            &mut c,
            r#"{"handler":"watch","params":{"id":"a","state":"up"}}"#,
        );
        let sub: Arc<str> = Selector::parse(
            json!({"id": "a", "state": "up"})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap()
        .sub()
        .into();
        let change = |data: Option<Value>| {
            Arc::new(Change::new(
                Position(3),
                if data.is_some() {
                    ChangeKind::Put
                } else {
                    ChangeKind::Delete
                },
                ResourceName::parse("nodes").unwrap(),
                RecordId::parse("a").unwrap(),
                2,
                data.map(|d| d.as_object().unwrap().clone()),
                None,
            ))
        };
        let spec = Arc::new(SubSpec {
            target: SubTarget::Topic { topic: "x".into() },
        });
        let push = |kind, change| Outbound::Push {
            sub: sub.clone(),
            spec: spec.clone(),
            kind,
            change,
        };
        let v = encode(
            &mut c,
            &push(PushKind::Put, change(Some(json!({"state": "up"})))),
            &mut msg,
        );
        assert_eq!(
            v,
            [json!({"msg": 1, "handler": "item", "data": {"id": "a", "state": "up"}})]
        );
        // It no longer matches the rest of the params: it leaves the watch.
        let v = encode(
            &mut c,
            &push(PushKind::Put, change(Some(json!({"state": "down"})))),
            &mut msg,
        );
        assert_eq!(
            v,
            [json!({"msg": 2, "handler": "remove", "params": {"id": "a"}})]
        );
        let v = encode(&mut c, &push(PushKind::Delete, change(None)), &mut msg);
        assert_eq!(v[0]["handler"], "remove");
    }

    #[test]
    fn bad_input_is_rejected_with_the_handler() {
        let mut c = codec();
        for (text, code) in [
            ("{oops", ErrorCode::BadJson),
            ("[1]", ErrorCode::BadRequest),
            (r#"{"params":{}}"#, ErrorCode::BadRequest),
            (r#"{"handler":5}"#, ErrorCode::BadRequest),
            (r#"{"handler":"query","params":[1]}"#, ErrorCode::BadRequest),
            (
                r#"{"handler":"get","params":{"id":{}}}"#,
                ErrorCode::InvalidName,
            ),
            (r#"{"handler":"fly"}"#, ErrorCode::UnknownType),
        ] {
            let r = decode(&mut c, text);
            let Err(rejected) = &r[0] else {
                panic!("{text} was accepted")
            };
            assert_eq!(rejected.error.code, code, "{text}");
        }
        assert!(Monorail
            .codec(&HashMap::from([(
                "channel".to_owned(),
                "bad name".to_owned()
            )]))
            .is_err());
    }
}
