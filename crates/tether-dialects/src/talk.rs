//! Seed 003's Talk protocol on `/talk`: documents as rooms, messages relayed to everyone
//! else who has the same document open.
//!
//! A message is a `command` (`"document:create"`), or a `route` in the REST-like form
//! (`"document/get"`, read as `document:get`). `document:*` commands act on records of
//! the `documents` resource; every other `<namespace>:<verb>` command (`node:create`,
//! ...) is application protocol the server does not interpret: it is relayed, exactly
//! as sent, to the other clients with the sender's document open, and confirmed with
//! `{"status": "success"}`. Relayed commands are not stored; a client that wants
//! state to outlive the session writes it with `document:update`.
//!
//! Per-client state (seed 003) is the document the client has open: `document:create`
//! and `document:open`/`document:get` assign it, which joins the document's presence
//! room (others hear `user:join`) and watches the record, so a change to it from any
//! client, dialect or the HTTP API arrives as `document:update` / `document:delete`.
//! The client's own writes are not echoed back: pushes for the open document wait while
//! its own write is unanswered, and the push of that write is dropped.
//! docs/dialects/talk.md is the reference.

use crate::json::{self, frame, Object};
use crate::{Codec, Dialect, MsgNo, Rejected, Request};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use tether_core::event::Reply;
use tether_core::{
    Change, Error, ErrorCode, Op, Outbound, Position, PushKind, Record, RecordId, ResourceName,
    Write, WriteKind,
};

/// The resource that holds Talk documents.
pub const DOCUMENTS: &str = "documents";
/// The subscription that watches the open document.
const DOCUMENT_SUB: &str = "talk:document";
/// Positions of the client's own writes whose pushes have not arrived yet. Each is
/// consumed by its push; the bound only matters if a push never comes (the client
/// switched documents meanwhile).
const OWN_POSITIONS: usize = 64;
/// Pushes held back while the client's own write is unanswered, at most.
const MAX_HELD: usize = 1_000;

/// The presence room of a document: shared with `/ws` clients that `join` it.
pub fn room_of(id: &RecordId) -> String {
    format!("{DOCUMENTS}/{id}")
}

#[derive(Debug)]
pub struct Talk;

impl Dialect for Talk {
    fn name(&self) -> &'static str {
        "talk"
    }

    fn path(&self) -> &'static str {
        "/talk"
    }

    fn codec(&self, _params: &HashMap<String, String>) -> Result<Box<dyn Codec>, Error> {
        Ok(Box::new(TalkCodec::new()))
    }
}

#[derive(Debug)]
pub struct TalkCodec {
    documents: ResourceName,
    /// The document this client has open. Set as soon as the open is decoded, so relays
    /// and presence for it are not dropped while its answer is on the way; cleared if
    /// the open fails.
    open: Option<RecordId>,
    /// The opened document from its snapshot, waiting for the presence reply that
    /// completes the answer.
    opened: Option<Option<Record>>,
    /// The client's own unanswered writes, per document.
    in_flight: HashMap<RecordId, usize>,
    /// Pushes for the open document held while the client's own write to it is
    /// unanswered: the push of that write must not come back to it.
    held: Vec<(PushKind, Arc<Change>)>,
    own_positions: VecDeque<Position>,
}

impl Default for TalkCodec {
    fn default() -> Self {
        TalkCodec::new()
    }
}

impl TalkCodec {
    pub fn new() -> TalkCodec {
        TalkCodec {
            documents: ResourceName::parse(DOCUMENTS).unwrap_or_else(|_| unreachable!()),
            open: None,
            opened: None,
            in_flight: HashMap::new(),
            held: Vec::new(),
            own_positions: VecDeque::new(),
        }
    }

    fn decode_ops(&mut self, command: &str, o: &Object) -> Result<Vec<Request>, Error> {
        let tag = json!({"c": command});
        let Some((namespace, verb)) = command.split_once(':') else {
            return Err(Error::new(
                ErrorCode::UnknownType,
                format!("unknown command {command:?}; commands look like \"document:open\" or \"node:create\""),
            ));
        };
        match (namespace, verb) {
            ("document", "create") => {
                let (id, made) = match json::opt_record_id(o, "id")? {
                    Some(id) => (id, false),
                    None => (RecordId::generate(), true),
                };
                let data = json::data(o, "data")?;
                let mut tag = tag;
                if made {
                    tag["made"] = id.as_str().into();
                }
                Ok(self.open_ops(tag, id, Some(data), user(o)?))
            }
            ("document", "get" | "open") => {
                let id = json::record_id(o, "id")?;
                Ok(self.open_ops(tag, id, None, user(o)?))
            }
            ("document", "update" | "delete") => {
                let id = match json::opt_record_id(o, "id")? {
                    Some(id) => id,
                    None => self.open.clone().ok_or_else(|| json::missing("id"))?,
                };
                let (kind, data) = if verb == "update" {
                    (WriteKind::Update, json::req_object(o, "data")?.clone())
                } else {
                    (WriteKind::Delete, Default::default())
                };
                let write = Write::new(kind, self.documents.clone(), id.clone(), data, None)?;
                *self.in_flight.entry(id.clone()).or_default() += 1;
                let mut tag = tag;
                tag["own"] = id.as_str().into();
                Ok(vec![Request {
                    tag,
                    op: Op::Write(write),
                }])
            }
            ("document", "close") => Ok(match self.open.take() {
                Some(id) => {
                    let mut ops = self.leave_ops(&id);
                    // The last op's reply answers the command; the others are internal.
                    if let Some(last) = ops.last_mut() {
                        last.tag = tag;
                    }
                    ops
                }
                // Closing with nothing open is already done.
                None => vec![Request { tag, op: Op::Ping }],
            }),
            ("document", _) => Err(Error::new(
                ErrorCode::UnknownType,
                format!("unknown command {command:?}; the document commands are create, get, open, update, delete and close"),
            )),
            ("user", _) => Err(Error::bad_request(format!(
                "{command:?}: user:* commands are sent by the server, not relayed"
            ))),
            _ => {
                let Some(id) = &self.open else {
                    return Err(Error::bad_request(format!(
                        "{command:?} is relayed to the others with your document open, but no document is open; send document:open first"
                    )));
                };
                Ok(vec![Request {
                    tag,
                    op: Op::Relay {
                        room: room_of(id),
                        data: Value::Object(o.clone()),
                    },
                }])
            }
        }
    }

    /// Ops that open `id`, leaving the document open before (if another one): the
    /// client has one document open at a time (seed 003: the command "assigns" it).
    fn open_ops(
        &mut self,
        mut tag: Value,
        id: RecordId,
        create: Option<tether_core::Data>,
        user: Option<String>,
    ) -> Vec<Request> {
        let mut requests = Vec::new();
        match self.open.take() {
            Some(current) if current == id => tag["reopen"] = true.into(),
            Some(current) => requests.extend(self.leave_ops(&current)),
            None => {}
        }
        self.opened = None;
        tag["open"] = id.as_str().into();
        requests.push(Request {
            tag,
            op: Op::Open {
                resource: self.documents.clone(),
                room: room_of(&id),
                id: id.clone(),
                create,
                sub: DOCUMENT_SUB.into(),
                user,
            },
        });
        self.open = Some(id);
        requests
    }

    /// Leaves a document's room and stops watching it; their replies are not shown.
    fn leave_ops(&mut self, id: &RecordId) -> Vec<Request> {
        self.held.clear();
        vec![
            Request {
                tag: json!({"internal": true}),
                op: Op::Presence {
                    room: room_of(id),
                    join: false,
                    user: None,
                },
            },
            Request {
                tag: json!({"internal": true}),
                op: Op::Unsubscribe {
                    sub: DOCUMENT_SUB.into(),
                },
            },
        ]
    }

    fn reply(
        &mut self,
        tag: &Value,
        result: &Result<Reply, Error>,
        msg: &mut MsgNo,
        out: &mut Vec<String>,
    ) {
        if tag["internal"] == true {
            return;
        }
        let command = tag["c"].as_str().unwrap_or_default();
        let own = tag["own"].as_str().and_then(|id| RecordId::parse(id).ok());
        match result {
            Ok(Reply::Members(members)) => {
                let mut answer = json!({"status": "success"});
                if command != "document:create" {
                    let document = self.opened.take().flatten();
                    answer["document"] = document.as_ref().map(document_json).into();
                    answer["active-users"] = users(members);
                }
                if let Some(made) = tag.get("made") {
                    answer["id"] = made.clone();
                }
                self.opened = None;
                out.push(frame(msg, answer));
            }
            Ok(reply) => {
                if let (Some(id), Reply::Written(change)) = (&own, reply) {
                    if self.own_positions.len() == OWN_POSITIONS {
                        self.own_positions.pop_front();
                    }
                    self.own_positions.push_back(change.position);
                    out.push(frame(msg, json!({"status": "success"})));
                    return self.write_answered(id, msg, out);
                }
                out.push(frame(msg, json!({"status": "success"})));
            }
            Err(e) => {
                let opened = tag["open"].as_str();
                if opened.is_some()
                    && tag.get("reopen").is_none()
                    && self.open.as_ref().map(RecordId::as_str) == opened
                {
                    // The open failed, and the document open before it was already left.
                    self.open = None;
                    self.opened = None;
                }
                let mut answer =
                    json!({"status": "error", "code": e.code.as_str(), "message": e.message});
                if !command.is_empty() {
                    answer["command"] = command.into();
                }
                out.push(frame(msg, answer));
                if let Some(id) = &own {
                    self.write_answered(id, msg, out);
                }
            }
        }
    }

    /// One of the client's own writes to `id` was answered: once none is left, the
    /// held pushes go out, except the ones that are the client's own writes.
    fn write_answered(&mut self, id: &RecordId, msg: &mut MsgNo, out: &mut Vec<String>) {
        if let Some(n) = self.in_flight.get_mut(id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.in_flight.remove(id);
            }
        }
        if self
            .open
            .as_ref()
            .is_some_and(|open| self.in_flight.contains_key(open))
        {
            return;
        }
        for (kind, change) in std::mem::take(&mut self.held) {
            self.push(kind, &change, msg, out);
        }
    }

    fn push(
        &mut self,
        kind: PushKind,
        change: &Arc<Change>,
        msg: &mut MsgNo,
        out: &mut Vec<String>,
    ) {
        if self.open.as_ref() != Some(&change.id) {
            return; // a push for a document the client has since left
        }
        if self.in_flight.contains_key(&change.id) {
            if self.held.len() < MAX_HELD {
                self.held.push((kind, change.clone()));
                return;
            }
            // A client that writes without pause keeps a write in flight: rather than
            // hold the others' changes without bound, let them out; only pushes
            // already known to be its own are then left out.
            for (kind, change) in std::mem::take(&mut self.held) {
                self.emit(kind, &change, msg, out);
            }
        }
        self.emit(kind, change, msg, out);
    }

    /// Sends a push for the open document, unless it is the client's own write.
    fn emit(
        &mut self,
        kind: PushKind,
        change: &Arc<Change>,
        msg: &mut MsgNo,
        out: &mut Vec<String>,
    ) {
        if let Some(at) = self
            .own_positions
            .iter()
            .position(|p| *p == change.position)
        {
            self.own_positions.remove(at);
            return;
        }
        // Every Talk client with the document open gets the same bytes; only `msg`
        // differs, so the body is encoded once per change.
        let body = match kind {
            PushKind::Put | PushKind::Patch => change.encoded("talk/update", update_body),
            PushKind::Delete => change.encoded("talk/delete", delete_body),
        };
        let mut frame = String::with_capacity(body.len() + 16);
        let _ = write!(frame, "{{\"msg\":{},", msg.take());
        frame.push_str(&body);
        out.push(frame);
    }

    fn open_room(&self) -> Option<String> {
        self.open.as_ref().map(room_of)
    }
}

impl Codec for TalkCodec {
    fn decode(&mut self, text: &str) -> Vec<Result<Request, Rejected>> {
        let o = match json::parse_object(text) {
            Ok(o) => o,
            Err(error) => {
                return vec![Err(Rejected {
                    tag: json!({}),
                    error,
                })]
            }
        };
        let command = match command_of(&o) {
            Ok(c) => c,
            Err(error) => {
                return vec![Err(Rejected {
                    tag: json!({}),
                    error,
                })]
            }
        };
        match self.decode_ops(&command, &o) {
            Ok(requests) => requests.into_iter().map(Ok).collect(),
            Err(error) => vec![Err(Rejected {
                tag: json!({"c": command}),
                error,
            })],
        }
    }

    fn encode(&mut self, event: &Outbound, msg: &mut MsgNo, out: &mut Vec<String>) {
        match event {
            Outbound::Reply { tag, result } => self.reply(tag, result, msg, out),
            Outbound::Snapshot { sub, records, .. } if &**sub == DOCUMENT_SUB => {
                self.opened = Some(records.first().cloned());
            }
            Outbound::Push {
                sub, kind, change, ..
            } if &**sub == DOCUMENT_SUB => self.push(*kind, change, msg, out),
            Outbound::Presence {
                room,
                user,
                joined,
                members,
            } if self.open_room().as_deref() == Some(&**room) => {
                let document = self.open.as_ref().map(|id| id.as_str()).unwrap_or_default();
                out.push(frame(
                    msg,
                    json!({
                        "command": if *joined { "user:join" } else { "user:leave" },
                        "document": document, "user": &**user, "active-users": users(members),
                    }),
                ));
            }
            Outbound::Relay { room, data, .. } if self.open_room().as_deref() == Some(&**room) => {
                let v = match &**data {
                    Value::Object(o) => Value::Object(o.clone()),
                    // Talk messages are objects; a `/ws` client may relay anything.
                    other => json!({"data": other}),
                };
                out.push(frame(msg, v));
            }
            // The seed has no greeting, and Talk never subscribes to topics.
            _ => {}
        }
    }
}

/// The command a message names: `command`, else `route` with `/` read as `:`.
fn command_of(o: &Object) -> Result<String, Error> {
    match (o.get("command"), o.get("route")) {
        (Some(Value::String(c)), _) => Ok(c.clone()),
        (Some(other), _) if !other.is_null() => Err(Error::bad_request(format!(
            "field \"command\" must be a string, not {}",
            json::kind_of(other)
        ))),
        (_, Some(Value::String(r))) => Ok(r.replacen('/', ":", 1)),
        (_, Some(other)) if !other.is_null() => Err(Error::bad_request(format!(
            "field \"route\" must be a string, not {}",
            json::kind_of(other)
        ))),
        _ => Err(Error::bad_request(
            "field \"command\" (or \"route\") is required, e.g. {\"command\": \"document:get\", \"id\": \"...\"}",
        )),
    }
}

/// The optional `user` a client names itself by in `active-users`.
fn user(o: &Object) -> Result<Option<String>, Error> {
    match json::opt_str(o, "user")? {
        Some(u) if u.is_empty() || u.len() > 128 => {
            Err(Error::bad_request("field \"user\" must be 1-128 bytes"))
        }
        other => Ok(other.map(str::to_owned)),
    }
}

fn users(members: &[Arc<str>]) -> Value {
    members.iter().map(|m| Value::from(&**m)).collect()
}

/// A document as Talk shows it: its fields with its `id` beside them.
fn document_json(r: &Record) -> Value {
    let mut doc = Map::new();
    doc.insert("id".into(), r.id.as_str().into());
    doc.extend(r.data.iter().map(|(k, v)| (k.clone(), v.clone())));
    Value::Object(doc)
}

/// The tail of a `document:update` push, without the leading `{`: the whole document
/// as it now is, in the shape of the client's own `document:update`.
fn update_body(c: &Change) -> String {
    let v = json!({"command": "document:update", "id": c.id, "data": c.data.clone().unwrap_or_default()});
    v.to_string()[1..].to_owned()
}

fn delete_body(c: &Change) -> String {
    let v = json!({"command": "document:delete", "id": c.id});
    v.to_string()[1..].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_core::{ChangeKind, SubSpec, SubTarget};

    fn encode(c: &mut TalkCodec, event: &Outbound, msg: &mut MsgNo) -> Vec<Value> {
        let mut out = Vec::new();
        c.encode(event, msg, &mut out);
        out.iter()
            .map(|f| serde_json::from_str(f).unwrap())
            .collect()
    }

    fn ok(tag: &Value, reply: Reply) -> Outbound {
        Outbound::Reply {
            tag: tag.clone(),
            result: Ok(reply),
        }
    }

    fn change(position: u64, title: &str) -> Arc<Change> {
        Arc::new(Change::new(
            Position(position),
            ChangeKind::Put,
            ResourceName::parse(DOCUMENTS).unwrap(),
            RecordId::parse("doc").unwrap(),
            position,
            Some(json!({"title": title}).as_object().unwrap().clone()),
            None,
        ))
    }

    fn push(change: Arc<Change>) -> Outbound {
        Outbound::Push {
            sub: DOCUMENT_SUB.into(),
            spec: Arc::new(SubSpec {
                target: SubTarget::Topic { topic: "x".into() },
            }),
            kind: PushKind::Put,
            change,
        }
    }

    #[test]
    fn commands_and_routes() {
        let mut c = TalkCodec::new();
        let r = c.decode(r#"{"route":"document/get","id":"doc"}"#);
        assert!(matches!(
            &r[..],
            [Ok(Request {
                op: Op::Open { create: None, .. },
                ..
            })]
        ));
        // Switching documents leaves the first one.
        let r = c.decode(r#"{"command":"document:create","id":"other"}"#);
        assert_eq!(r.len(), 3, "{r:?}");
        let r = c.decode(r#"{"command":"node:create","type":"/type/task","data":{"name":"A"}}"#);
        let [Ok(Request {
            op: Op::Relay { room, data },
            ..
        })] = &r[..]
        else {
            panic!("{r:?}")
        };
        assert_eq!(room, "documents/other");
        assert_eq!(data["type"], "/type/task");
    }

    #[test]
    fn bad_input() {
        let mut c = TalkCodec::new();
        for (text, code) in [
            ("nope", ErrorCode::BadJson),
            ("7", ErrorCode::BadRequest),
            (r#"{"id":"x"}"#, ErrorCode::BadRequest),
            (r#"{"command":1}"#, ErrorCode::BadRequest),
            (r#"{"command":"dance"}"#, ErrorCode::UnknownType),
            (
                r#"{"command":"document:fly","id":"x"}"#,
                ErrorCode::UnknownType,
            ),
            (r#"{"command":"document:get"}"#, ErrorCode::BadRequest),
            (
                r#"{"command":"document:get","id":"a b"}"#,
                ErrorCode::InvalidName,
            ),
            (r#"{"command":"node:create"}"#, ErrorCode::BadRequest),
            (r#"{"command":"user:join"}"#, ErrorCode::BadRequest),
            (
                r#"{"command":"document:update","id":"x","data":5}"#,
                ErrorCode::BadRequest,
            ),
        ] {
            let r = c.decode(text);
            let [Err(rejected)] = &r[..] else {
                panic!("{text} was accepted: {r:?}")
            };
            assert_eq!(rejected.error.code, code, "{text}");
        }
    }

    #[test]
    fn the_writer_does_not_get_its_own_update_back() {
        let mut c = TalkCodec::new();
        let mut msg = MsgNo::default();
        let open = c.decode(r#"{"command":"document:open","id":"doc"}"#);
        let Ok(open) = &open[0] else { panic!() };
        let snapshot = Outbound::Snapshot {
            tag: Some(open.tag.clone()),
            sub: DOCUMENT_SUB.into(),
            spec: Arc::new(SubSpec {
                target: SubTarget::Topic { topic: "x".into() },
            }),
            position: Position(1),
            records: vec![],
            resync: None,
        };
        assert!(encode(&mut c, &snapshot, &mut msg).is_empty());
        let v = encode(
            &mut c,
            &ok(&open.tag, Reply::Members(vec!["me".into()])),
            &mut msg,
        );
        assert_eq!(
            v,
            [json!({"msg": 1, "status": "success", "document": null, "active-users": ["me"]})]
        );

        // Own write in flight: someone else's push (2) waits, the own push (3) is
        // dropped whether it comes before or after the answer.
        let w = c.decode(r#"{"command":"document:update","id":"doc","data":{"title":"mine"}}"#);
        let Ok(w) = &w[0] else { panic!() };
        assert!(encode(&mut c, &push(change(2, "theirs")), &mut msg).is_empty());
        assert!(encode(&mut c, &push(change(3, "mine")), &mut msg).is_empty());
        let v = encode(
            &mut c,
            &ok(&w.tag, Reply::Written(change(3, "mine"))),
            &mut msg,
        );
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0], json!({"msg": 2, "status": "success"}));
        assert_eq!(
            v[1],
            json!({"msg": 3, "command": "document:update", "id": "doc", "data": {"title": "theirs"}})
        );
        let w = c.decode(r#"{"command":"document:update","id":"doc","data":{"title":"again"}}"#);
        let Ok(w) = &w[0] else { panic!() };
        let v = encode(
            &mut c,
            &ok(&w.tag, Reply::Written(change(4, "again"))),
            &mut msg,
        );
        assert_eq!(v, [json!({"msg": 4, "status": "success"})]);
        assert!(encode(&mut c, &push(change(4, "again")), &mut msg).is_empty());
        let v = encode(&mut c, &push(change(5, "later")), &mut msg);
        assert_eq!(v[0]["data"]["title"], "later");
    }

    #[test]
    fn held_pushes_are_bounded() {
        let mut c = TalkCodec::new();
        let mut msg = MsgNo::default();
        c.decode(r#"{"command":"document:open","id":"doc"}"#);
        c.decode(r#"{"command":"document:update","id":"doc","data":{}}"#);
        for p in 0..MAX_HELD as u64 {
            assert!(encode(&mut c, &push(change(p + 10, "x")), &mut msg).is_empty());
        }
        let v = encode(&mut c, &push(change(5_000, "y")), &mut msg);
        assert_eq!(v.len(), MAX_HELD + 1, "in order, none lost");
        assert_eq!(v[MAX_HELD]["data"]["title"], "y");
    }

    #[test]
    fn presence_and_relays_for_the_open_document_only() {
        let mut c = TalkCodec::new();
        let mut msg = MsgNo::default();
        c.decode(r#"{"command":"document:open","id":"doc"}"#);
        let relay = |room: &str| Outbound::Relay {
            room: room.into(),
            from: "u".into(),
            data: Arc::new(json!({"command": "node:create", "msg": 99})),
        };
        assert!(encode(&mut c, &relay("documents/else"), &mut msg).is_empty());
        let v = encode(&mut c, &relay("documents/doc"), &mut msg);
        assert_eq!(v, [json!({"msg": 1, "command": "node:create"})]);
        let joined = Outbound::Presence {
            room: "documents/doc".into(),
            user: "bob".into(),
            joined: true,
            members: vec!["bob".into(), "me".into()],
        };
        let v = encode(&mut c, &joined, &mut msg);
        assert_eq!(
            v,
            [
                json!({"msg": 2, "command": "user:join", "document": "doc", "user": "bob", "active-users": ["bob", "me"]})
            ]
        );
    }
}
