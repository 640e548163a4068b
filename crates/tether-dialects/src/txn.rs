//! `/txn`: seed 001's request-response-confirm transactions.
//!
//! A request names its transaction (`trans_id`), a verb (`action`), the collection
//! (`resource`) and its `parameters` (the record, or `{"id": ...}`); the direct
//! response echoes `trans_id` and `resource` and carries `response: {code, message,
//! data}`. The seed's point is that the server tracks what each client holds: a client
//! holds a record once it has retrieved or written it, is told of every later change
//! to it by an *indirect* response, and stops being told when it `flush`es it. So every
//! held id is one record subscription, and the bookkeeping that merges a connection's
//! own answers with the pushes of the same changes is `/crud`'s [`Holdings`].
//!
//! Confirmations: `retry` re-sends the response of a transaction. The codec keeps its
//! own copy of each recent response's bytes, because the session's copy is the event
//! before encoding and a missing one comes back as an error indistinguishable from a
//! kept `not_found` answer; the session is still told (`Op::Confirm`) so it can forget
//! its copy on `done`/`abort`. docs/dialects/txn.md is the reference.

use crate::crud::{body_with_id, id_json, stamp, sub_name, tag_number, Holdings, Key, Seen};
use crate::json::{self, Object};
use crate::{Codec, Dialect, MsgNo, Rejected, Request};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, VecDeque};
use tether_core::event::Reply;
use tether_core::{
    Change, ConfirmKind, Data, Error, ErrorCode, Op, Outbound, PushKind, RecordId, ResourceName,
    SubSpec, SubTarget, Tag, Write, WriteKind,
};

/// Responses kept per connection for `retry`, and the bytes they may take in all.
const KEPT_RESPONSES: usize = 64;
const KEPT_BYTES: usize = 4 << 20;

const TAG_KEY: &str = "txn";

#[derive(Debug)]
pub struct Txn;

impl Dialect for Txn {
    fn name(&self) -> &'static str {
        "txn"
    }

    fn path(&self) -> &'static str {
        "/txn"
    }

    fn codec(&self, _params: &HashMap<String, String>) -> Result<Box<dyn Codec>, Error> {
        Ok(Box::new(TxnCodec::default()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Retrieve,
    Create,
    Update,
    CrtUpdt,
    Delete,
    Patch,
    Flush,
}

impl Verb {
    /// Every spelling the seed uses for a request verb, in any case.
    fn parse(action: &str) -> Option<Verb> {
        Some(match action {
            "retrieve" => Verb::Retrieve,
            "create" => Verb::Create,
            "update" => Verb::Update,
            // The seed spells it crt_updt in its table and example, crt_upd in its
            // prose, and its response CRT_UPTD / CRT_UPDTD.
            "crt_updt" | "crt_upd" | "crt_uptd" | "crt_updtd" => Verb::CrtUpdt,
            "delete" => Verb::Delete,
            "patch" => Verb::Patch,
            "flush" => Verb::Flush,
            _ => return None,
        })
    }

    /// The response verb, as the seed's table spells it.
    fn ok(self) -> &'static str {
        match self {
            Verb::Retrieve => "RETRIEVED",
            Verb::Create => "CREATE",
            Verb::Update => "UPDATE",
            Verb::CrtUpdt => "CRT_UPTD",
            Verb::Delete => "DELETED",
            Verb::Patch => "PATCHED",
            Verb::Flush => "FLUSHED",
        }
    }

    fn fail(self) -> &'static str {
        match self {
            Verb::Retrieve => "RETRIEVE_FAIL",
            Verb::Create => "CREATE_FAIL",
            Verb::Update => "UPDATE_FAIL",
            Verb::CrtUpdt => "CRT_UPDT_FAIL",
            Verb::Delete => "DELETE_FAIL",
            Verb::Patch => "PATCH_FAIL",
            Verb::Flush => "FLUSH_FAIL",
        }
    }
}

/// What an outstanding op is waiting for, by the number in its tag.
#[derive(Debug)]
enum Pending {
    /// A request answered by a direct response.
    Direct {
        verb: Verb,
        trans_id: Value,
        resource: ResourceName,
        /// The record it is about (none for a flush of a whole resource).
        key: Option<Key>,
        numeric: bool,
    },
    /// The subscription that makes the client hold a record.
    Hold { key: Key, trans_id: Value },
    /// A message rejected while decoding.
    Bad {
        action: &'static str,
        trans_id: Option<Value>,
        resource: Option<Value>,
    },
}

/// A recent response, for `retry`.
#[derive(Debug)]
struct Kept {
    n: u64,
    trans_id: Value,
    /// The encoded response without `msg`; `None` until it is encoded.
    frame: Option<String>,
}

#[derive(Debug)]
pub struct TxnCodec {
    holdings: Holdings,
    pending: HashMap<u64, Pending>,
    next: u64,
    kept: VecDeque<Kept>,
    kept_bytes: usize,
    /// Retries sent to the session, by the tag of the response they re-send.
    retrying: Vec<(u64, Value)>,
}

impl Default for TxnCodec {
    fn default() -> Self {
        TxnCodec {
            // Indirect responses are for changes; a record the client never received
            // (a failed create of an existing id) is not announced.
            holdings: Holdings::new(false),
            pending: HashMap::new(),
            next: 0,
            kept: VecDeque::new(),
            kept_bytes: 0,
            retrying: Vec::new(),
        }
    }
}

impl Codec for TxnCodec {
    fn decode(&mut self, text: &str) -> Vec<Result<Request, Rejected>> {
        let mut out = Vec::new();
        self.decode_into(text, &mut out);
        out
    }

    fn encode(&mut self, event: &Outbound, msg: &mut MsgNo, out: &mut Vec<String>) {
        let mut notices = Vec::new();
        match event {
            Outbound::Reply { tag, result } => self.reply(tag, result, msg, out, &mut notices),
            Outbound::Snapshot { tag, records, .. } => {
                let pending = tag
                    .as_ref()
                    .and_then(|t| tag_number(t, TAG_KEY))
                    .and_then(|n| self.pending.remove(&n));
                if let Some(Pending::Hold { key, .. }) = pending {
                    self.holdings
                        .snapshot(&key, records.first().cloned(), &mut notices);
                }
            }
            Outbound::Push { kind, change, .. } => {
                self.holdings.push(*kind, change, &mut notices);
            }
            // The seed has no welcome, topics or presence.
            _ => {}
        }
        for notice in notices {
            let action = match notice.kind {
                // A change does not say which verb made it; what the holder needs to
                // know is whether it replaces a record it has or brings a new one.
                PushKind::Put if notice.had => "UPDATE",
                PushKind::Put => "CRT_UPTD",
                PushKind::Patch => "PATCHED",
                PushKind::Delete => "DELETED",
            };
            let numeric = self.holdings.numeric(&notice.key());
            let tail = indirect_tail(&notice.change, notice.kind, numeric);
            out.push(format!(
                "{{\"msg\":{},\"action\":\"{action}\",{}",
                msg.take(),
                tail.strip_prefix('{').unwrap_or("}")
            ));
        }
    }
}

impl TxnCodec {
    fn tag(&mut self, pending: Pending) -> (u64, Tag) {
        self.next += 1;
        self.pending.insert(self.next, pending);
        (self.next, json!({ TAG_KEY: self.next }))
    }

    /// Remembers that `n` is the response of transaction `trans_id`, for `retry`.
    fn keep(&mut self, n: u64, trans_id: Value) {
        self.kept.push_back(Kept {
            n,
            trans_id,
            frame: None,
        });
        if self.kept.len() > KEPT_RESPONSES {
            self.evict_oldest();
        }
    }

    fn keep_frame(&mut self, n: u64, frame: &str) {
        let Some(kept) = self.kept.iter_mut().find(|k| k.n == n) else {
            return; // confirmed (done/abort) before it was sent, or evicted
        };
        kept.frame = Some(frame.to_owned());
        self.kept_bytes += frame.len();
        while self.kept_bytes > KEPT_BYTES && self.kept.len() > 1 {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(old) = self.kept.pop_front() {
            self.kept_bytes -= old.frame.map_or(0, |f| f.len());
        }
    }

    fn reject(
        &mut self,
        action: &'static str,
        trans_id: Option<Value>,
        resource: Option<Value>,
        error: Error,
    ) -> Result<Request, Rejected> {
        let keep = trans_id
            .clone()
            .filter(|_| action != "ERROR" && action != "RETRY_FAIL");
        let (n, tag) = self.tag(Pending::Bad {
            action,
            trans_id,
            resource,
        });
        if let Some(trans_id) = keep {
            self.keep(n, trans_id);
        }
        Err(Rejected { tag, error })
    }

    fn decode_into(&mut self, text: &str, out: &mut Vec<Result<Request, Rejected>>) {
        let o = match json::parse_object(text) {
            Ok(o) => o,
            Err(e) => return out.push(self.reject("ERROR", None, None, e)),
        };
        let trans_id = match o.get("trans_id") {
            None | Some(Value::Null) => None,
            Some(v @ (Value::String(_) | Value::Number(_))) => Some(v.clone()),
            Some(other) => {
                let e = Error::bad_request(format!(
                    "field \"trans_id\" must be a string or a number, not {}",
                    json::kind_of(other)
                ));
                return out.push(self.reject("ERROR", None, None, e));
            }
        };
        let resource = o.get("resource").cloned();
        let action = match json::req_str(&o, "action") {
            Ok(a) => a.trim().to_ascii_lowercase(),
            Err(e) => return out.push(self.reject("ERROR", trans_id, resource, e)),
        };
        let confirm = match action.as_str() {
            "done" => Some(ConfirmKind::Done),
            "abort" => Some(ConfirmKind::Abort),
            "retry" => Some(ConfirmKind::Retry),
            _ => None,
        };
        if let Some(kind) = confirm {
            return self.confirm(kind, trans_id, out);
        }
        let Some(verb) = Verb::parse(&action) else {
            let e = Error::new(
                ErrorCode::UnknownType,
                format!(
                    "unknown action {action:?}; /txn knows retrieve, create, update, crt_updt, \
                     delete, patch, flush and the confirmations done, abort, retry"
                ),
            );
            return out.push(self.reject("ERROR", trans_id, resource, e));
        };
        let Some(trans_id) = trans_id else {
            let e = json::missing("trans_id");
            return out.push(self.reject(verb.fail(), None, resource, e));
        };
        if let Err(e) = self.request(verb, &o, trans_id.clone(), out) {
            out.push(self.reject(verb.fail(), Some(trans_id), resource, e));
        }
    }

    /// Turns a data request into ops. Everything is checked before any op is added, so
    /// a bad request adds none.
    fn request(
        &mut self,
        verb: Verb,
        o: &Object,
        trans_id: Value,
        out: &mut Vec<Result<Request, Rejected>>,
    ) -> Result<(), Error> {
        let resource = json::resource(o, "resource")?;
        let params = json::opt_object(o, "parameters")?;
        let version = json::opt_u64(o, "version")?;
        let id = match params {
            Some(p) => json::opt_record_id(p, "id")?,
            None => None,
        };
        let numeric = params
            .and_then(|p| p.get("id"))
            .is_some_and(Value::is_number);
        let need_id = || json::missing("parameters.id");
        let (op, key, hold) = match verb {
            Verb::Retrieve => {
                let id = id.ok_or_else(need_id)?;
                let op = Op::Get {
                    resource: resource.clone(),
                    id: id.clone(),
                };
                (op, Some((resource.clone(), id)), true)
            }
            Verb::Create | Verb::Update | Verb::CrtUpdt | Verb::Patch => {
                let mut body = params.ok_or_else(|| json::missing("parameters"))?.clone();
                if verb != Verb::Patch && body.get("id").is_some_and(Value::is_null) {
                    body.remove("id"); // `"id": null` is "no id yet"
                }
                let id = match (id, verb) {
                    (Some(id), _) => id,
                    (None, Verb::Create | Verb::CrtUpdt) => RecordId::generate(),
                    (None, _) => return Err(need_id()),
                };
                let kind = match verb {
                    Verb::Create => WriteKind::Create,
                    Verb::Update => WriteKind::Update,
                    Verb::Patch => WriteKind::Patch,
                    _ => WriteKind::Upsert,
                };
                let write = Write::new(kind, resource.clone(), id.clone(), body, version)?;
                (Op::Write(write), Some((resource.clone(), id)), true)
            }
            Verb::Delete => {
                let id = id.ok_or_else(need_id)?;
                let write = Write::new(
                    WriteKind::Delete,
                    resource.clone(),
                    id.clone(),
                    Data::new(),
                    version,
                )?;
                // A delete keeps a holding the client has but does not start one.
                (Op::Write(write), Some((resource.clone(), id)), false)
            }
            Verb::Flush => {
                // Forgotten now, so pushes already queued for it are not sent.
                self.holdings.release(&resource, id.as_ref());
                let op = Op::Flush {
                    resource: resource.clone(),
                    id: id.clone(),
                };
                (op, id.map(|id| (resource.clone(), id)), false)
            }
        };
        if let Some(key) = &key {
            if self.holdings.expect(key, numeric, hold) {
                let (_, tag) = self.tag(Pending::Hold {
                    key: key.clone(),
                    trans_id: trans_id.clone(),
                });
                out.push(Ok(Request {
                    tag,
                    op: Op::Subscribe {
                        sub: sub_name(key),
                        spec: SubSpec {
                            target: SubTarget::Record {
                                resource: key.0.clone(),
                                id: key.1.clone(),
                            },
                        },
                        since: None,
                    },
                }));
            }
        }
        let (n, tag) = self.tag(Pending::Direct {
            verb,
            trans_id: trans_id.clone(),
            resource,
            key,
            numeric,
        });
        self.keep(n, trans_id);
        out.push(Ok(Request { tag, op }));
        Ok(())
    }

    fn confirm(
        &mut self,
        kind: ConfirmKind,
        trans_id: Option<Value>,
        out: &mut Vec<Result<Request, Rejected>>,
    ) {
        let Some(trans_id) = trans_id else {
            let e = Error::bad_request("field \"trans_id\" is required: it names the response");
            return out.push(self.reject("ERROR", None, None, e));
        };
        let at = self.kept.iter().rposition(|k| k.trans_id == trans_id);
        let confirm = |n: u64| {
            Ok(Request {
                tag: Value::Null,
                op: Op::Confirm {
                    kind,
                    of: json!({ TAG_KEY: n }),
                },
            })
        };
        match (kind, at) {
            (ConfirmKind::Retry, Some(at)) => {
                let n = self.kept[at].n;
                self.retrying.push((n, trans_id));
                out.push(confirm(n));
            }
            (ConfirmKind::Retry, None) => {
                let e = Error::new(
                    ErrorCode::NotFound,
                    format!(
                        "no response to trans_id {trans_id} is kept (the last {KEPT_RESPONSES} \
                         are, until done or abort)"
                    ),
                );
                out.push(self.reject("RETRY_FAIL", Some(trans_id), None, e));
            }
            (ConfirmKind::Done | ConfirmKind::Abort, Some(at)) => {
                if let Some(old) = self.kept.remove(at) {
                    self.kept_bytes -= old.frame.map_or(0, |f| f.len());
                    out.push(confirm(old.n));
                }
            }
            // Nothing kept under that trans_id: already confirmed, or never answered.
            (ConfirmKind::Done | ConfirmKind::Abort, None) => {}
        }
    }

    fn reply(
        &mut self,
        tag: &Tag,
        result: &Result<Reply, Error>,
        msg: &mut MsgNo,
        out: &mut Vec<String>,
        notices: &mut Vec<crate::crud::Notice>,
    ) {
        let n = tag_number(tag, TAG_KEY);
        let pending = n.and_then(|n| self.pending.remove(&n));
        match pending {
            None => {
                // A retry's re-send (or the session's "not kept"): answered from the
                // codec's own copy either way.
                let retry = n.and_then(|n| {
                    let at = self.retrying.iter().position(|(m, _)| *m == n)?;
                    Some((n, self.retrying.remove(at).1))
                });
                if let Some((n, trans_id)) = retry {
                    let frame = self
                        .kept
                        .iter()
                        .find(|k| k.n == n)
                        .and_then(|k| k.frame.clone());
                    let frame = frame.unwrap_or_else(|| {
                        let e = Error::new(
                            ErrorCode::NotFound,
                            format!("the response to trans_id {trans_id} is no longer kept"),
                        );
                        fail_frame("RETRY_FAIL", Some(&trans_id), None, &e)
                    });
                    out.push(stamp(msg.take(), &frame));
                } else if let Err(e) = result {
                    // An error the session raised without a request (too large, binary).
                    out.push(stamp(msg.take(), &fail_frame("ERROR", None, None, e)));
                }
            }
            Some(Pending::Bad {
                action,
                trans_id,
                resource,
            }) => {
                if let Err(e) = result {
                    let frame = fail_frame(action, trans_id.as_ref(), resource.as_ref(), e);
                    if let Some(n) = n {
                        self.keep_frame(n, &frame);
                    }
                    out.push(stamp(msg.take(), &frame));
                }
            }
            Some(Pending::Hold { key, trans_id }) => {
                if let Err(e) = result {
                    // The request itself is answered on its own; this says the record
                    // is not held, so no indirect responses will follow for it.
                    let e = Error {
                        message: format!("{} is not held: {}", sub_name(&key), e.message),
                        ..e.clone()
                    };
                    let resource = Value::from(key.0.as_str());
                    let frame = fail_frame("ERROR", Some(&trans_id), Some(&resource), &e);
                    out.push(stamp(msg.take(), &frame));
                    self.holdings.sub_failed(&key);
                }
            }
            Some(Pending::Direct {
                verb,
                trans_id,
                resource,
                key,
                numeric,
            }) => {
                let (frame, seen) =
                    direct(verb, &trans_id, &resource, key.as_ref(), numeric, result);
                if let Some(n) = n {
                    self.keep_frame(n, &frame);
                }
                out.push(stamp(msg.take(), &frame));
                if let Some(key) = key {
                    self.holdings.answered(&key, seen, notices);
                }
            }
        }
    }
}

/// The direct response to a request, and what it told the client about the record.
fn direct(
    verb: Verb,
    trans_id: &Value,
    resource: &ResourceName,
    key: Option<&Key>,
    numeric: bool,
    result: &Result<Reply, Error>,
) -> (String, Seen) {
    let resource_json = Value::from(resource.as_str());
    let fail = |e: &Error| fail_frame(verb.fail(), Some(trans_id), Some(&resource_json), e);
    let ok = |data: Value, version: Option<u64>| {
        let mut response = json!({"code": 200, "message": "OK", "data": data});
        if let Some(v) = version {
            response["version"] = v.into();
        }
        json!({"trans_id": trans_id, "action": verb.ok(), "resource": resource.as_str(), "response": response})
            .to_string()
    };
    match result {
        Ok(Reply::Record(Some(r))) => (
            ok(body_with_id(&r.id, &r.data, numeric), Some(r.version)),
            Seen::Present(r.version),
        ),
        Ok(Reply::Record(None)) => {
            let id = key.map_or("", |k| k.1.as_str());
            (fail(&Error::not_found(resource.as_str(), id)), Seen::Absent)
        }
        Ok(Reply::Written(c)) => match &c.data {
            Some(data) => (
                ok(body_with_id(&c.id, data, numeric), Some(c.version)),
                Seen::Present(c.version),
            ),
            None => (
                ok(json!({"id": id_json(&c.id, numeric)}), Some(c.version)),
                Seen::Deleted(c.version),
            ),
        },
        Ok(Reply::Released(subs)) => {
            let data = match key {
                Some(k) => json!({"id": id_json(&k.1, numeric)}),
                None => {
                    // Subscription names are "<resource>/<id>".
                    let ids: Vec<&str> = subs
                        .iter()
                        .filter_map(|s| s.split_once('/').map(|(_, id)| id))
                        .collect();
                    json!({ "ids": ids })
                }
            };
            (ok(data, None), Seen::Nothing)
        }
        Ok(_) => (ok(Value::Object(Map::new()), None), Seen::Nothing),
        // Errors say nothing about the record: a delete by someone else that made this
        // update fail is still announced to the holder by its own indirect response.
        Err(e) => (fail(e), Seen::Nothing),
    }
}

fn fail_frame(
    action: &str,
    trans_id: Option<&Value>,
    resource: Option<&Value>,
    e: &Error,
) -> String {
    let mut response = json!({
        "code": e.code.http_status(), "message": e.message, "error": e.code.as_str(),
    });
    if let Some(v) = e.current_version {
        response["version"] = v.into();
    }
    let mut frame = Map::new();
    if let Some(t) = trans_id {
        frame.insert("trans_id".into(), t.clone());
    }
    frame.insert("action".into(), action.into());
    if let Some(r) = resource {
        frame.insert("resource".into(), r.clone());
    }
    frame.insert("response".into(), response);
    Value::Object(frame).to_string()
}

/// `{"resource": ..., "response": {...}}` of an indirect response: the same for every
/// holder of the record, so encoded once per change.
fn indirect_tail(c: &Change, kind: PushKind, numeric: bool) -> String {
    let build = |c: &Change| {
        let data = match (&c.data, kind) {
            (Some(data), PushKind::Put | PushKind::Patch) => body_with_id(&c.id, data, numeric),
            _ => json!({"id": id_json(&c.id, numeric)}),
        };
        json!({"resource": c.resource.as_str(), "response": {
            "code": 200, "message": "OK", "data": data, "version": c.version,
        }})
        .to_string()
    };
    if numeric {
        return build(c);
    }
    let key = match kind {
        PushKind::Delete => "txn/gone",
        _ => "txn/record",
    };
    c.encoded(key, build).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tether_core::{ChangeKind, Position, Record};

    fn requests(codec: &mut TxnCodec, text: &str) -> Vec<Result<Request, Rejected>> {
        codec.decode(text)
    }

    fn ok(codec: &mut TxnCodec, text: &str) -> Vec<Request> {
        requests(codec, text)
            .into_iter()
            .map(|r| r.expect("decodes"))
            .collect()
    }

    fn encode(codec: &mut TxnCodec, msg: &mut MsgNo, event: Outbound) -> Vec<Value> {
        let mut out = Vec::new();
        codec.encode(&event, msg, &mut out);
        out.iter()
            .map(|f| serde_json::from_str(f).expect("frames are JSON"))
            .collect()
    }

    fn reply(tag: &Tag, result: Result<Reply, Error>) -> Outbound {
        Outbound::Reply {
            tag: tag.clone(),
            result,
        }
    }

    fn spec() -> Arc<SubSpec> {
        Arc::new(SubSpec {
            target: SubTarget::Topic { topic: "t".into() },
        })
    }

    fn snapshot(tag: &Tag, records: Vec<Record>) -> Outbound {
        Outbound::Snapshot {
            tag: Some(tag.clone()),
            sub: "s".into(),
            spec: spec(),
            position: Position(1),
            records,
            resync: None,
        }
    }

    fn change(kind: ChangeKind, id: &str, version: u64, data: Option<Value>) -> Arc<Change> {
        Arc::new(Change::new(
            Position(version),
            kind,
            ResourceName::parse("experiment").unwrap(),
            RecordId::parse(id).unwrap(),
            version,
            data.map(|d| d.as_object().cloned().unwrap_or_default()),
            None,
        ))
    }

    fn push(kind: PushKind, change: Arc<Change>) -> Outbound {
        Outbound::Push {
            sub: "s".into(),
            spec: spec(),
            kind,
            change,
        }
    }

    #[test]
    fn the_seed_example_is_an_upsert_answered_crt_uptd() {
        let (mut c, mut msg) = (TxnCodec::default(), MsgNo::default());
        let r = ok(
            &mut c,
            r#"{ "trans_id": "2c592003-1667-491f-8fd2-796acbae198b", "service": null,
                 "action": "crt_updt", "resource": "experiment",
                 "parameters": {"id": "e1", "title": "Canonical PCR", "lid": 95,
                                "burnIn": {"time": 60, "temp": 95}} }"#,
        );
        assert_eq!(r.len(), 2);
        let Op::Subscribe { sub, .. } = &r[0].op else {
            panic!()
        };
        assert_eq!(sub, "experiment/e1");
        let Op::Write(w) = &r[1].op else { panic!() };
        assert_eq!((w.kind, w.id.as_str()), (WriteKind::Upsert, "e1"));
        assert!(encode(&mut c, &mut msg, snapshot(&r[0].tag, vec![])).is_empty());
        let written = change(
            ChangeKind::Put,
            "e1",
            1,
            Some(json!({"title": "Canonical PCR", "lid": 95, "burnIn": {"time": 60, "temp": 95}})),
        );
        let frames = encode(
            &mut c,
            &mut msg,
            reply(&r[1].tag, Ok(Reply::Written(written))),
        );
        assert_eq!(
            frames,
            vec![json!({
                "msg": 1, "trans_id": "2c592003-1667-491f-8fd2-796acbae198b",
                "action": "CRT_UPTD", "resource": "experiment",
                "response": {"code": 200, "message": "OK", "version": 1, "data": {
                    "id": "e1", "title": "Canonical PCR", "lid": 95, "burnIn": {"time": 60, "temp": 95}}}
            })]
        );
        for spelling in ["crt_upd", "CRT_UPDTD", " crt_updt "] {
            let text = format!(
                r#"{{"trans_id":1,"action":"{spelling}","resource":"experiment","parameters":{{}}}}"#
            );
            let r = ok(&mut c, &text);
            let Op::Write(w) = &r[r.len() - 1].op else {
                panic!("{spelling}")
            };
            assert_eq!(w.kind, WriteKind::Upsert, "{spelling}");
        }
    }

    #[test]
    fn indirect_responses_are_named_by_the_change_and_skip_own_writes() {
        let (mut c, mut msg) = (TxnCodec::default(), MsgNo::default());
        let r = ok(
            &mut c,
            r#"{"trans_id":"t1","action":"retrieve","resource":"experiment","parameters":{"id":"e1"}}"#,
        );
        assert!(matches!(r[1].op, Op::Get { .. }));
        assert!(encode(&mut c, &mut msg, snapshot(&r[0].tag, vec![])).is_empty());
        let frames = encode(&mut c, &mut msg, reply(&r[1].tag, Ok(Reply::Record(None))));
        assert_eq!(frames[0]["action"], "RETRIEVE_FAIL");
        assert_eq!(frames[0]["response"]["code"], 404);
        assert_eq!(frames[0]["trans_id"], "t1");

        // It appears: new to the client.
        let put = change(ChangeKind::Put, "e1", 1, Some(json!({"a": 1})));
        let frames = encode(&mut c, &mut msg, push(PushKind::Put, put));
        assert_eq!(frames[0]["action"], "CRT_UPTD");
        assert!(frames[0].get("trans_id").is_none());
        assert_eq!(frames[0]["response"]["data"], json!({"id": "e1", "a": 1}));
        let put = change(ChangeKind::Put, "e1", 2, Some(json!({"a": 2})));
        assert_eq!(
            encode(&mut c, &mut msg, push(PushKind::Put, put))[0]["action"],
            "UPDATE"
        );
        let patch = change(ChangeKind::Patch, "e1", 3, Some(json!({"a": 3})));
        let frames = encode(&mut c, &mut msg, push(PushKind::Patch, patch));
        assert_eq!(frames[0]["action"], "PATCHED");
        assert_eq!(frames[0]["response"]["data"], json!({"id": "e1", "a": 3}));

        // Its own patch: the push (first or last) is not an indirect response.
        let r = ok(
            &mut c,
            r#"{"trans_id":"t2","action":"patch","resource":"experiment","parameters":{"id":"e1","a":4}}"#,
        );
        assert_eq!(r.len(), 1, "already held");
        let mine = change(ChangeKind::Patch, "e1", 4, Some(json!({"a": 4})));
        assert!(encode(&mut c, &mut msg, push(PushKind::Patch, mine.clone())).is_empty());
        let frames = encode(&mut c, &mut msg, reply(&r[0].tag, Ok(Reply::Written(mine))));
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["action"], "PATCHED");
        assert_eq!(frames[0]["trans_id"], "t2");

        let gone = change(ChangeKind::Delete, "e1", 5, None);
        let frames = encode(&mut c, &mut msg, push(PushKind::Delete, gone));
        assert_eq!(frames[0]["action"], "DELETED");
        assert_eq!(frames[0]["response"]["data"], json!({"id": "e1"}));
        assert_eq!(frames[0]["msg"], 6);

        // Flushed: what is still queued for it is dropped.
        let r = ok(
            &mut c,
            r#"{"trans_id":"t3","action":"flush","resource":"experiment","parameters":{"id":"e1"}}"#,
        );
        assert!(matches!(r[0].op, Op::Flush { .. }));
        let late = change(ChangeKind::Put, "e1", 6, Some(json!({})));
        assert!(encode(&mut c, &mut msg, push(PushKind::Put, late)).is_empty());
        let frames = encode(
            &mut c,
            &mut msg,
            reply(&r[0].tag, Ok(Reply::Released(vec!["experiment/e1".into()]))),
        );
        assert_eq!(frames[0]["action"], "FLUSHED");
        assert_eq!(frames[0]["response"]["data"], json!({"id": "e1"}));
    }

    #[test]
    fn retry_resends_a_kept_copy_and_done_forgets_it() {
        let (mut c, mut msg) = (TxnCodec::default(), MsgNo::default());
        let r = ok(
            &mut c,
            r#"{"trans_id":9,"action":"create","resource":"experiment","parameters":{"id":"e1"}}"#,
        );
        let exists = Error::new(ErrorCode::AlreadyExists, "experiment/e1 already exists")
            .with_current_version(1);
        let first = encode(&mut c, &mut msg, reply(&r[1].tag, Err(exists)));
        assert_eq!(first[0]["action"], "CREATE_FAIL");
        assert_eq!(first[0]["response"]["code"], 409);
        assert_eq!(first[0]["response"]["version"], 1);

        let retry = ok(&mut c, r#"{"trans_id":9,"action":"retry"}"#);
        let Op::Confirm { kind, of } = &retry[0].op else {
            panic!()
        };
        assert_eq!(*kind, ConfirmKind::Retry);
        assert_eq!(of, &r[1].tag);
        // Whatever the session answers (its copy, or "not kept"), the codec's copy goes.
        let gone = Error::new(ErrorCode::NotFound, "no recent reply");
        let again = encode(&mut c, &mut msg, reply(of, Err(gone)));
        let mut expected = first[0].clone();
        expected["msg"] = 2.into();
        assert_eq!(again, vec![expected]);

        let done = ok(&mut c, r#"{"trans_id":9,"action":"done"}"#);
        assert!(matches!(
            done[0].op,
            Op::Confirm {
                kind: ConfirmKind::Done,
                ..
            }
        ));
        let out = requests(&mut c, r#"{"trans_id":9,"action":"retry"}"#);
        let rejected = out.into_iter().next().unwrap().unwrap_err();
        let frames = encode(&mut c, &mut msg, reply(&rejected.tag, Err(rejected.error)));
        assert_eq!(frames[0]["action"], "RETRY_FAIL");
        assert_eq!(frames[0]["response"]["code"], 404);
        assert_eq!(frames[0]["trans_id"], 9);
        assert!(requests(&mut c, r#"{"trans_id":9,"action":"abort"}"#).is_empty());
    }

    #[test]
    fn bad_input_gets_fail_or_error() {
        let mut c = TxnCodec::default();
        let mut msg = MsgNo::default();
        let cases = [
            ("{nope", "ERROR", ErrorCode::BadJson),
            ("3", "ERROR", ErrorCode::BadRequest),
            (r#"{"trans_id":"a"}"#, "ERROR", ErrorCode::BadRequest),
            (
                r#"{"trans_id":"a","action":"fly"}"#,
                "ERROR",
                ErrorCode::UnknownType,
            ),
            (
                r#"{"trans_id":[1],"action":"retrieve"}"#,
                "ERROR",
                ErrorCode::BadRequest,
            ),
            (r#"{"action":"done"}"#, "ERROR", ErrorCode::BadRequest),
            (
                r#"{"action":"retrieve","resource":"e","parameters":{"id":"a"}}"#,
                "RETRIEVE_FAIL",
                ErrorCode::BadRequest,
            ),
            (
                r#"{"trans_id":"a","action":"retrieve","resource":"e"}"#,
                "RETRIEVE_FAIL",
                ErrorCode::BadRequest,
            ),
            (
                r#"{"trans_id":"a","action":"retrieve","parameters":{"id":"a"}}"#,
                "RETRIEVE_FAIL",
                ErrorCode::BadRequest,
            ),
            (
                r#"{"trans_id":"a","action":"update","resource":"e","parameters":{"x":1}}"#,
                "UPDATE_FAIL",
                ErrorCode::BadRequest,
            ),
            (
                r#"{"trans_id":"a","action":"create","resource":"e"}"#,
                "CREATE_FAIL",
                ErrorCode::BadRequest,
            ),
            (
                r#"{"trans_id":"a","action":"patch","resource":"e","parameters":[1]}"#,
                "PATCH_FAIL",
                ErrorCode::BadRequest,
            ),
            (
                r#"{"trans_id":"a","action":"delete","resource":"e","parameters":{"id":{}}}"#,
                "DELETE_FAIL",
                ErrorCode::InvalidName,
            ),
            (
                r#"{"trans_id":"a","action":"crt_updt","resource":"e","parameters":{},"version":-1}"#,
                "CRT_UPDT_FAIL",
                ErrorCode::BadRequest,
            ),
            (
                r#"{"trans_id":"a","action":"flush","resource":"e e"}"#,
                "FLUSH_FAIL",
                ErrorCode::InvalidName,
            ),
        ];
        for (text, action, code) in cases {
            let out = requests(&mut c, text);
            assert_eq!(out.len(), 1, "{text}");
            let rejected = out.into_iter().next().unwrap().unwrap_err();
            assert_eq!(rejected.error.code, code, "{text}: {}", rejected.error);
            let frames = encode(&mut c, &mut msg, reply(&rejected.tag, Err(rejected.error)));
            assert_eq!(frames[0]["action"], action, "{text}");
            assert_eq!(frames[0]["response"]["code"], 400, "{text}");
        }
        // A failed request keeps no holding: the next one on the id subscribes.
        let r = ok(
            &mut c,
            r#"{"trans_id":"b","action":"retrieve","resource":"e","parameters":{"id":"x"}}"#,
        );
        assert!(matches!(r[0].op, Op::Subscribe { .. }));
    }

    #[test]
    fn numeric_ids_come_back_as_numbers() {
        let (mut c, mut msg) = (TxnCodec::default(), MsgNo::default());
        let r = ok(
            &mut c,
            r#"{"trans_id":"n","action":"retrieve","resource":"experiment","parameters":{"id":95}}"#,
        );
        let record = Record {
            resource: ResourceName::parse("experiment").unwrap(),
            id: RecordId::parse("95").unwrap(),
            version: 1,
            data: Data::new(),
        };
        let frames = encode(
            &mut c,
            &mut msg,
            reply(&r[1].tag, Ok(Reply::Record(Some(record)))),
        );
        assert_eq!(frames[0]["response"]["data"]["id"], 95);
        let put = change(ChangeKind::Put, "95", 2, Some(json!({})));
        let frames = encode(&mut c, &mut msg, push(PushKind::Put, put));
        assert_eq!(frames[0]["response"]["data"]["id"], 95);
    }
}
