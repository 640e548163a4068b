//! `/crud`: seed 000's `{"action": "GET"|"POST"|"DELETE", "data": {"<kind>": {...}}}`.
//!
//! The seed's clients act optimistically: they make a "loading" record for an id they
//! asked for and expect the server's `POST` to fill it in, whenever it comes. So here
//! asking for or writing an id makes the connection *hold* it (one record subscription
//! per id), and every later change of that id, by anyone, arrives as a `POST` (full
//! record) or `DELETE`. A `GET` of an id that does not exist yet is answered when the
//! record appears. The answer to a request and the pushes for the same id are merged
//! so the client sees each state once: its own `POST` is confirmed once, not also
//! echoed as a push.
//!
//! The bookkeeping that makes that true ([`Holdings`]) is shared with `/txn`, whose
//! clients hold records in the same way. docs/dialects/crud.md is the reference.

use crate::json::{self, Object};
use crate::{Codec, Dialect, MsgNo, Rejected, Request};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tether_core::event::Reply;
use tether_core::{
    Change, ChangeKind, Data, Error, ErrorCode, Op, Outbound, Position, PushKind, Record, RecordId,
    ResourceName, SubSpec, SubTarget, Tag, Version, Write, WriteKind,
};

#[derive(Debug)]
pub struct Crud;

impl Dialect for Crud {
    fn name(&self) -> &'static str {
        "crud"
    }

    fn path(&self) -> &'static str {
        "/crud"
    }

    fn codec(&self, _params: &HashMap<String, String>) -> Result<Box<dyn Codec>, Error> {
        Ok(Box::new(CrudCodec::default()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Get,
    Post,
    Delete,
}

/// What an outstanding request is waiting for, by the number in its tag.
#[derive(Debug)]
enum Pending {
    /// The first GET of an id: the subscription's snapshot is the answer.
    GetSnapshot(Key),
    /// A GET of an id already held: a plain read answers it.
    Get(Key),
    /// The subscription that makes a POST or DELETE hold its id; its snapshot answers
    /// nothing, but tells about changes made between the write and the subscription.
    Hold(Key),
    Post(Key),
    Delete {
        key: Key,
        lookup: u64,
    },
    /// The read after a DELETE. It answers only when the delete failed (`failed`), with
    /// the record as it stands, as the seed asks.
    Lookup {
        key: Key,
        failed: Option<Error>,
    },
    /// A message rejected while decoding; the error names the kind and id if known.
    Bad(Option<(String, Value)>),
}

#[derive(Debug)]
pub struct CrudCodec {
    holdings: Holdings,
    pending: HashMap<u64, Pending>,
    next: u64,
}

impl Default for CrudCodec {
    fn default() -> Self {
        CrudCodec {
            // A client that asked for an id wants the record as it stands even when its
            // own write failed: that is the seed's failed-DELETE answer.
            holdings: Holdings::new(true),
            pending: HashMap::new(),
            next: 0,
        }
    }
}

const TAG_KEY: &str = "crud";

impl Codec for CrudCodec {
    fn decode(&mut self, text: &str) -> Vec<Result<Request, Rejected>> {
        let mut out = Vec::new();
        if let Err(error) = self.decode_into(text, &mut out) {
            let rejected = self.reject(None, error);
            out.push(Err(rejected));
        }
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
                match pending {
                    Some(Pending::GetSnapshot(key)) => {
                        let seen = match records.first() {
                            Some(r) => {
                                let numeric = self.holdings.numeric(&key);
                                out.push(stamp(msg.take(), &record_frame(r, numeric)));
                                Seen::Present(r.version)
                            }
                            // Nothing yet: the PUT that creates it answers the GET.
                            None => Seen::Absent,
                        };
                        self.holdings.answered(&key, seen, &mut notices);
                    }
                    Some(Pending::Hold(key)) => {
                        self.holdings
                            .snapshot(&key, records.first().cloned(), &mut notices)
                    }
                    _ => {}
                }
            }
            Outbound::Push { kind, change, .. } => {
                self.holdings.push(*kind, change, &mut notices);
            }
            // No welcome, topics or presence in this dialect: the seed has none.
            _ => {}
        }
        for notice in notices {
            let numeric = self.holdings.numeric(&notice.key());
            let frame = match notice.kind {
                PushKind::Put | PushKind::Patch => post_change_frame(&notice.change, numeric),
                PushKind::Delete => delete_change_frame(&notice.change, numeric),
            };
            out.push(stamp(msg.take(), &frame));
        }
    }
}

impl CrudCodec {
    fn tag(&mut self, pending: Pending) -> Tag {
        self.next += 1;
        self.pending.insert(self.next, pending);
        json!({ TAG_KEY: self.next })
    }

    fn reject(&mut self, context: Option<(String, Value)>, error: Error) -> Rejected {
        Rejected {
            tag: self.tag(Pending::Bad(context)),
            error,
        }
    }

    fn decode_into(
        &mut self,
        text: &str,
        out: &mut Vec<Result<Request, Rejected>>,
    ) -> Result<(), Error> {
        let o = json::parse_object(text)?;
        let action = match json::req_str(&o, "action")?.to_ascii_uppercase().as_str() {
            "GET" => Action::Get,
            "POST" => Action::Post,
            "DELETE" => Action::Delete,
            other => {
                return Err(Error::new(
                    ErrorCode::UnknownType,
                    format!("unknown action {other:?}; /crud knows GET, POST and DELETE"),
                ))
            }
        };
        let data = json::req_object(&o, "data")?;
        if data.is_empty() {
            return Err(Error::bad_request(
                "field \"data\" must name a kind, e.g. {\"event\": {\"id\": \"a1\"}}",
            ));
        }
        for (kind, value) in data {
            // One record per kind is the seed's form; a list of them is accepted too.
            let items: Vec<&Value> = match value {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for item in items {
                let context = (kind.clone(), item.get("id").cloned().unwrap_or(Value::Null));
                let decoded = match item {
                    Value::Object(record) => self.decode_record(action, kind, record, out),
                    other => Err(Error::bad_request(format!(
                        "data.{kind} must be an object (a record), not {}",
                        json::kind_of(other)
                    ))),
                };
                if let Err(error) = decoded {
                    let rejected = self.reject(Some(context), error);
                    out.push(Err(rejected));
                }
            }
        }
        Ok(())
    }

    fn decode_record(
        &mut self,
        action: Action,
        kind: &str,
        record: &Object,
        out: &mut Vec<Result<Request, Rejected>>,
    ) -> Result<(), Error> {
        let resource = ResourceName::parse(kind)?;
        let numeric = record.get("id").is_some_and(Value::is_number);
        let (id, write_kind) = match (json::opt_record_id(record, "id")?, action) {
            (Some(id), _) => (id, WriteKind::Upsert),
            // A POST without an id creates a record with a server-made id.
            (None, Action::Post) => (RecordId::generate(), WriteKind::Create),
            (None, _) => {
                return Err(Error::bad_request(format!(
                    "field \"data.{kind}.id\" is required"
                )))
            }
        };
        // Build the write first: a body that cannot be written must leave no holding.
        let write = match action {
            Action::Get => None,
            Action::Post => {
                let mut body = record.clone();
                if body.get("id").is_some_and(Value::is_null) {
                    body.remove("id");
                }
                Some(Write::new(
                    write_kind,
                    resource.clone(),
                    id.clone(),
                    body,
                    None,
                )?)
            }
            Action::Delete => Some(Write::new(
                WriteKind::Delete,
                resource.clone(),
                id.clone(),
                Data::new(),
                None,
            )?),
        };
        let key: Key = (resource, id);
        let subscribe = self.holdings.expect(&key, numeric, true);
        if subscribe && action != Action::Get {
            let tag = self.tag(Pending::Hold(key.clone()));
            out.push(Ok(subscribe_request(tag, &key)));
        }
        match (action, write) {
            (Action::Get, _) if subscribe => {
                let tag = self.tag(Pending::GetSnapshot(key.clone()));
                out.push(Ok(subscribe_request(tag, &key)));
            }
            (Action::Get, _) => {
                let tag = self.tag(Pending::Get(key.clone()));
                out.push(Ok(get_request(tag, &key)));
            }
            (Action::Post, Some(write)) => {
                let tag = self.tag(Pending::Post(key));
                out.push(Ok(Request {
                    tag,
                    op: Op::Write(write),
                }));
            }
            (Action::Delete, Some(write)) => {
                // The lookup is a second answer on the same id.
                self.holdings.expect(&key, numeric, true);
                let lookup = self.tag(Pending::Lookup {
                    key: key.clone(),
                    failed: None,
                });
                let lookup_n = tag_number(&lookup, TAG_KEY).unwrap_or_default();
                let tag = self.tag(Pending::Delete {
                    key: key.clone(),
                    lookup: lookup_n,
                });
                out.push(Ok(Request {
                    tag,
                    op: Op::Write(write),
                }));
                out.push(Ok(get_request(lookup, &key)));
            }
            (_, None) => {}
        }
        Ok(())
    }

    fn reply(
        &mut self,
        tag: &Tag,
        result: &Result<Reply, Error>,
        msg: &mut MsgNo,
        out: &mut Vec<String>,
        notices: &mut Vec<Notice>,
    ) {
        let pending = tag_number(tag, TAG_KEY).and_then(|n| self.pending.remove(&n));
        let Some(pending) = pending else {
            if let Err(e) = result {
                out.push(stamp(msg.take(), &error_frame(None, e)));
            }
            return;
        };
        let mut emit = |frame: String| out.push(stamp(msg.take(), &frame));
        match (pending, result) {
            (Pending::Get(key), Ok(Reply::Record(record))) => {
                let seen = match record {
                    Some(r) => {
                        emit(record_frame(r, self.holdings.numeric(&key)));
                        Seen::Present(r.version)
                    }
                    None => Seen::Absent,
                };
                self.holdings.answered(&key, seen, notices);
            }
            (Pending::Post(key), Ok(Reply::Written(change))) => {
                emit(post_change_frame(change, self.holdings.numeric(&key)));
                self.holdings
                    .answered(&key, Seen::Present(change.version), notices);
            }
            (Pending::Delete { key, .. }, Ok(Reply::Written(change))) => {
                emit(delete_frame(&key, self.holdings.numeric(&key)));
                self.holdings
                    .answered(&key, Seen::Deleted(change.version), notices);
            }
            // The record is not there, which is what the client asked for.
            (Pending::Delete { key, .. }, Err(e)) if e.code == ErrorCode::NotFound => {
                emit(delete_frame(&key, self.holdings.numeric(&key)));
                self.holdings.answered(&key, Seen::Absent, notices);
            }
            (Pending::Delete { key, lookup }, Err(e)) => {
                if let Some(Pending::Lookup { failed, .. }) = self.pending.get_mut(&lookup) {
                    *failed = Some(e.clone());
                }
                self.holdings.answered(&key, Seen::Nothing, notices);
            }
            (
                Pending::Lookup {
                    key,
                    failed: Some(_),
                },
                Ok(Reply::Record(record)),
            ) => {
                let numeric = self.holdings.numeric(&key);
                let seen = match record {
                    Some(r) => {
                        emit(record_frame(r, numeric));
                        Seen::Present(r.version)
                    }
                    None => {
                        emit(delete_frame(&key, numeric));
                        Seen::Absent
                    }
                };
                self.holdings.answered(&key, seen, notices);
            }
            (
                Pending::Lookup {
                    key,
                    failed: Some(e),
                },
                Err(_),
            ) => {
                emit(error_frame(Some(self.context(&key)), &e));
                self.holdings.answered(&key, Seen::Nothing, notices);
            }
            // After a delete that worked, the lookup says nothing new: pushes will.
            (Pending::Lookup { key, failed: None }, _) => {
                self.holdings.answered(&key, Seen::Nothing, notices);
            }
            (Pending::GetSnapshot(key), Err(e)) => {
                emit(error_frame(Some(self.context(&key)), e));
                self.holdings.sub_failed(&key);
                self.holdings.answered(&key, Seen::Nothing, notices);
            }
            (Pending::Hold(key), Err(e)) => {
                emit(error_frame(Some(self.context(&key)), e));
                self.holdings.sub_failed(&key);
            }
            (Pending::Get(key) | Pending::Post(key), Err(e)) => {
                emit(error_frame(Some(self.context(&key)), e));
                self.holdings.answered(&key, Seen::Nothing, notices);
            }
            (Pending::Bad(context), Err(e)) => emit(error_frame(context, e)),
            // Shapes the session does not produce for these ops.
            (_, _) => {}
        }
    }

    fn context(&self, key: &Key) -> (String, Value) {
        (
            key.0.as_str().to_owned(),
            id_json(&key.1, self.holdings.numeric(key)),
        )
    }
}

fn subscribe_request(tag: Tag, key: &Key) -> Request {
    Request {
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
    }
}

fn get_request(tag: Tag, key: &Key) -> Request {
    Request {
        tag,
        op: Op::Get {
            resource: key.0.clone(),
            id: key.1.clone(),
        },
    }
}

/// The subscription name of a held record: unique on the connection because a
/// resource name cannot contain `/`.
pub(crate) fn sub_name(key: &Key) -> String {
    format!("{}/{}", key.0, key.1)
}

/// The number a codec put in a tag under `key` (`{"crud": 7}`).
pub(crate) fn tag_number(tag: &Tag, key: &str) -> Option<u64> {
    tag.get(key).and_then(Value::as_u64)
}

/// Adds the connection's message number to a serialized JSON object.
pub(crate) fn stamp(msg: u64, object: &str) -> String {
    match object.strip_prefix('{') {
        Some("}") | None => format!("{{\"msg\":{msg}}}"),
        Some(rest) => format!("{{\"msg\":{msg},{rest}"),
    }
}

/// An id as the client wrote it: a client that sent the integer `42` gets `42` back,
/// not `"42"`.
pub(crate) fn id_json(id: &RecordId, numeric: bool) -> Value {
    if numeric {
        if let Ok(n) = id.as_str().parse::<u64>() {
            return n.into();
        }
        if let Ok(n) = id.as_str().parse::<i64>() {
            return n.into();
        }
    }
    Value::from(id.as_str())
}

/// A record body with its id inside, the way both seeds carry records.
pub(crate) fn body_with_id(id: &RecordId, data: &Data, numeric: bool) -> Value {
    let mut body = data.clone();
    body.insert("id".into(), id_json(id, numeric));
    Value::Object(body)
}

fn post_object(kind: &str, body: Value) -> String {
    json!({"action": "POST", "data": {kind: body}}).to_string()
}

fn record_frame(r: &Record, numeric: bool) -> String {
    post_object(r.resource.as_str(), body_with_id(&r.id, &r.data, numeric))
}

fn post_change_frame(c: &Arc<Change>, numeric: bool) -> String {
    let build = |c: &Change| {
        let data = c.data.clone().unwrap_or_default();
        post_object(c.resource.as_str(), body_with_id(&c.id, &data, numeric))
    };
    if numeric {
        return build(c);
    }
    // Every holder of the id gets the same bytes: encode once per change.
    c.encoded("crud/POST", build).to_string()
}

fn delete_change_frame(c: &Arc<Change>, numeric: bool) -> String {
    if numeric {
        return delete_frame(&(c.resource.clone(), c.id.clone()), true);
    }
    c.encoded("crud/DELETE", |c| {
        delete_frame(&(c.resource.clone(), c.id.clone()), false)
    })
    .to_string()
}

fn delete_frame(key: &Key, numeric: bool) -> String {
    json!({"action": "DELETE", "data": {key.0.as_str(): {"id": id_json(&key.1, numeric)}}})
        .to_string()
}

fn error_frame(context: Option<(String, Value)>, e: &Error) -> String {
    let mut data = json!({"error": {
        "code": e.code.as_str(), "status": e.code.http_status(), "message": e.message,
    }});
    if let Some((kind, id)) = context {
        // Names the record the error is about, so the client can settle its loading one.
        if kind != "error" {
            data[kind] = json!({ "id": id });
        }
    }
    json!({"action": "ERROR", "data": data}).to_string()
}

// ---- holdings: shared with /txn ---------------------------------------------------

/// A held record: (resource, id).
pub(crate) type Key = (ResourceName, RecordId);

/// What a direct answer told the client about a held record.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Seen {
    /// The record at this version.
    Present(Version),
    /// The client's own delete, at this version.
    Deleted(Version),
    /// The record does not exist.
    Absent,
    /// Nothing about the record (a failed write).
    Nothing,
}

/// A change to tell a holder about without it having asked.
#[derive(Debug)]
pub(crate) struct Notice {
    pub kind: PushKind,
    pub change: Arc<Change>,
    /// Whether the client had a live copy before this change.
    pub had: bool,
}

impl Notice {
    pub(crate) fn key(&self) -> Key {
        (self.change.resource.clone(), self.change.id.clone())
    }
}

#[derive(Debug)]
struct Held {
    /// False after the subscription failed (limit reached): the next request retries.
    subscribed: bool,
    /// The highest version whose state the client has (been told or accounted for).
    known: Version,
    /// Whether the client was last told the record exists.
    has: bool,
    /// Requests on this id whose answers are not encoded yet.
    inflight: u32,
    /// Pushes that arrived while answers were outstanding.
    held_back: Vec<(PushKind, Arc<Change>)>,
    /// A subscription snapshot that arrived while answers were outstanding.
    stashed: Option<Option<Record>>,
    /// Whether an answer since the last settling said what the record is.
    informed: bool,
    /// The client wrote this id as a JSON integer.
    numeric: bool,
}

/// Which records a connection holds, and what it knows of each.
///
/// A connection's own request on a held id races with the push of the same change:
/// the committer acknowledges the write and the hub fans the change out concurrently,
/// so the push may reach the outbox before or after the answer. While an answer is
/// outstanding, pushes for that id wait here; once it is answered, only changes newer
/// than what the answer showed go out. Versions rise with every write of a record, so
/// "newer" is a version comparison. The client sees each state once, in order.
#[derive(Debug)]
pub(crate) struct Holdings {
    held: HashMap<Key, Held>,
    /// Whether a subscription snapshot showing a record the client was never given is
    /// sent to it (/crud: yes, the client asked for the id; /txn: no, only changes are).
    tell_unheld: bool,
}

impl Holdings {
    pub(crate) fn new(tell_unheld: bool) -> Holdings {
        Holdings {
            held: HashMap::new(),
            tell_unheld,
        }
    }

    pub(crate) fn numeric(&self, key: &Key) -> bool {
        self.held.get(key).is_some_and(|h| h.numeric)
    }

    /// Notes a request on `key` whose answer will come back through [`answered`]. With
    /// `hold`, the request makes the connection hold the id; the return value says
    /// whether it must subscribe first (it did not hold it, or its subscription failed).
    ///
    /// [`answered`]: Holdings::answered
    pub(crate) fn expect(&mut self, key: &Key, numeric: bool, hold: bool) -> bool {
        let fresh = || Held {
            subscribed: true,
            known: 0,
            has: false,
            inflight: 0,
            held_back: Vec::new(),
            stashed: None,
            informed: false,
            numeric,
        };
        let (held, subscribe) = match self.held.get_mut(key) {
            Some(h) => {
                let resubscribe = hold && !h.subscribed;
                if resubscribe {
                    h.subscribed = true;
                }
                (h, resubscribe)
            }
            None if hold => (self.held.entry(key.clone()).or_insert_with(fresh), true),
            None => return false,
        };
        held.inflight += 1;
        held.numeric |= numeric;
        subscribe
    }

    /// Records what an answer told the client; then releases what waited for it.
    pub(crate) fn answered(&mut self, key: &Key, seen: Seen, out: &mut Vec<Notice>) {
        let Some(h) = self.held.get_mut(key) else {
            return;
        };
        h.informed |= !matches!(seen, Seen::Nothing);
        match seen {
            Seen::Present(v) => {
                h.known = h.known.max(v);
                h.has = true;
            }
            Seen::Deleted(v) => {
                h.known = h.known.max(v);
                h.has = false;
            }
            Seen::Absent => h.has = false,
            Seen::Nothing => {}
        }
        h.inflight = h.inflight.saturating_sub(1);
        if h.inflight > 0 {
            return;
        }
        // A stashed snapshot is older than the answers that were outstanding when it
        // came (its subscribe ran first), so it only counts if none of them told.
        if let Some(record) = h.stashed.take().filter(|_| !h.informed) {
            evaluate(h, key, record, self.tell_unheld, out);
        }
        h.informed = false;
        for (kind, change) in std::mem::take(&mut h.held_back) {
            deliver(h, kind, change, out);
        }
        if !h.subscribed {
            self.held.remove(key);
        }
    }

    /// The snapshot of a subscription that answers no request.
    pub(crate) fn snapshot(&mut self, key: &Key, record: Option<Record>, out: &mut Vec<Notice>) {
        let Some(h) = self.held.get_mut(key) else {
            return;
        };
        if h.inflight > 0 {
            // Judged once the outstanding answers are in; see `answered`.
            h.stashed = Some(record);
        } else {
            evaluate(h, key, record, self.tell_unheld, out);
        }
    }

    pub(crate) fn push(&mut self, kind: PushKind, change: &Arc<Change>, out: &mut Vec<Notice>) {
        let key = (change.resource.clone(), change.id.clone());
        let Some(h) = self.held.get_mut(&key) else {
            return; // released (flushed) while the push was queued
        };
        if h.inflight > 0 {
            h.held_back.push((kind, change.clone()));
        } else {
            deliver(h, kind, change.clone(), out);
        }
    }

    pub(crate) fn sub_failed(&mut self, key: &Key) {
        if let Some(h) = self.held.get_mut(key) {
            h.subscribed = false;
            if h.inflight == 0 {
                self.held.remove(key);
            }
        }
    }

    /// Forgets the records of `resource` (only `id`, if given) the client released.
    pub(crate) fn release(&mut self, resource: &ResourceName, id: Option<&RecordId>) {
        self.held
            .retain(|(r, i), _| !(r == resource && id.is_none_or(|want| want == i)));
    }
}

/// Compares a subscription snapshot with what the client has and tells it the
/// difference: a change made between its request and the subscription.
fn evaluate(
    h: &mut Held,
    key: &Key,
    record: Option<Record>,
    tell_unheld: bool,
    out: &mut Vec<Notice>,
) {
    match record {
        Some(r) if r.version > h.known => {
            h.known = r.version;
            if h.has || tell_unheld {
                let change = Change::new(
                    Position::ZERO,
                    ChangeKind::Put,
                    r.resource,
                    r.id,
                    r.version,
                    Some(r.data),
                    None,
                );
                out.push(Notice {
                    kind: PushKind::Put,
                    change: Arc::new(change),
                    had: h.has,
                });
                h.has = true;
            }
        }
        None if h.has => {
            h.has = false;
            let change = Change::new(
                Position::ZERO,
                ChangeKind::Delete,
                key.0.clone(),
                key.1.clone(),
                h.known,
                None,
                None,
            );
            out.push(Notice {
                kind: PushKind::Delete,
                change: Arc::new(change),
                had: true,
            });
        }
        _ => {}
    }
}

fn deliver(h: &mut Held, kind: PushKind, change: Arc<Change>, out: &mut Vec<Notice>) {
    if change.version <= h.known {
        return; // the client already has this state (often: its own write's answer)
    }
    h.known = change.version;
    match kind {
        PushKind::Delete => {
            if h.has {
                h.has = false;
                out.push(Notice {
                    kind,
                    change,
                    had: true,
                });
            }
        }
        PushKind::Put | PushKind::Patch => {
            out.push(Notice {
                kind,
                change,
                had: h.has,
            });
            h.has = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kind: &str, id: &str) -> Key {
        (
            ResourceName::parse(kind).unwrap(),
            RecordId::parse(id).unwrap(),
        )
    }

    fn record(id: &str, version: u64, data: Value) -> Record {
        let (resource, id) = key("event", id);
        Record {
            resource,
            id,
            version,
            data: data.as_object().cloned().unwrap_or_default(),
        }
    }

    fn change(kind: ChangeKind, id: &str, version: u64, data: Option<Value>) -> Arc<Change> {
        let (resource, id) = key("event", id);
        Arc::new(Change::new(
            Position(version),
            kind,
            resource,
            id,
            version,
            data.map(|d| d.as_object().cloned().unwrap_or_default()),
            None,
        ))
    }

    fn requests(codec: &mut CrudCodec, text: &str) -> Vec<Request> {
        codec
            .decode(text)
            .into_iter()
            .map(|r| r.expect("decodes"))
            .collect()
    }

    fn encode(codec: &mut CrudCodec, msg: &mut MsgNo, event: Outbound) -> Vec<Value> {
        let mut out = Vec::new();
        codec.encode(&event, msg, &mut out);
        out.iter()
            .map(|f| serde_json::from_str(f).expect("frames are JSON"))
            .collect()
    }

    fn snapshot(tag: &Tag, records: Vec<Record>) -> Outbound {
        Outbound::Snapshot {
            tag: Some(tag.clone()),
            sub: "s".into(),
            spec: Arc::new(SubSpec {
                target: SubTarget::Topic { topic: "t".into() },
            }),
            position: Position(1),
            records,
            resync: None,
        }
    }

    fn push(kind: PushKind, change: Arc<Change>) -> Outbound {
        Outbound::Push {
            sub: "event/a".into(),
            spec: Arc::new(SubSpec {
                target: SubTarget::Topic { topic: "t".into() },
            }),
            kind,
            change,
        }
    }

    fn reply(tag: &Tag, result: Result<Reply, Error>) -> Outbound {
        Outbound::Reply {
            tag: tag.clone(),
            result,
        }
    }

    #[test]
    fn get_subscribes_once_then_reads_and_answers_with_the_asked_id() {
        let (mut c, mut msg) = (CrudCodec::default(), MsgNo::default());
        let r = requests(
            &mut c,
            r#"{"action":"GET","data":{"event":{"id":"alksdj1"}}}"#,
        );
        assert_eq!(r.len(), 1);
        let Op::Subscribe { sub, spec, .. } = &r[0].op else {
            panic!("{r:?}")
        };
        assert_eq!(sub, "event/alksdj1");
        assert!(matches!(spec.target, SubTarget::Record { .. }));
        let frames = encode(
            &mut c,
            &mut msg,
            snapshot(&r[0].tag, vec![record("alksdj1", 1, json!({"name": "x"}))]),
        );
        assert_eq!(
            frames,
            vec![
                json!({"msg": 1, "action": "POST", "data": {"event": {"id": "alksdj1", "name": "x"}}})
            ]
        );
        let again = requests(
            &mut c,
            r#"{"action":"get","data":{"event":{"id":"alksdj1"}}}"#,
        );
        assert!(matches!(again[0].op, Op::Get { .. }), "{again:?}");
        let frames = encode(
            &mut c,
            &mut msg,
            reply(
                &again[0].tag,
                Ok(Reply::Record(Some(record("alksdj1", 1, json!({}))))),
            ),
        );
        assert_eq!(frames[0]["msg"], 2);
        assert_eq!(frames[0]["data"]["event"]["id"], "alksdj1");
    }

    #[test]
    fn a_get_of_a_missing_id_is_answered_when_it_appears() {
        let (mut c, mut msg) = (CrudCodec::default(), MsgNo::default());
        let r = requests(&mut c, r#"{"action":"GET","data":{"event":{"id":"a"}}}"#);
        assert!(encode(&mut c, &mut msg, snapshot(&r[0].tag, vec![])).is_empty());
        let put = change(ChangeKind::Put, "a", 1, Some(json!({"n": 1})));
        let frames = encode(&mut c, &mut msg, push(PushKind::Put, put));
        assert_eq!(
            frames,
            vec![json!({"msg": 1, "action": "POST", "data": {"event": {"id": "a", "n": 1}}})]
        );
        let gone = change(ChangeKind::Delete, "a", 2, None);
        let frames = encode(&mut c, &mut msg, push(PushKind::Delete, gone));
        assert_eq!(
            frames,
            vec![json!({"msg": 2, "action": "DELETE", "data": {"event": {"id": "a"}}})]
        );
    }

    #[test]
    fn a_post_is_confirmed_once_even_when_its_push_comes_first() {
        let (mut c, mut msg) = (CrudCodec::default(), MsgNo::default());
        let r = requests(
            &mut c,
            r#"{"action":"POST","data":{"event":{"id":"a","name":"n"}}}"#,
        );
        assert!(matches!(r[0].op, Op::Subscribe { .. }));
        let Op::Write(w) = &r[1].op else { panic!() };
        assert_eq!(w.kind, WriteKind::Upsert);
        assert!(!w.data.contains_key("id"), "the id lives beside the body");
        assert!(encode(&mut c, &mut msg, snapshot(&r[0].tag, vec![])).is_empty());
        let mine = change(ChangeKind::Put, "a", 1, Some(json!({"name": "n"})));
        let frames = encode(&mut c, &mut msg, reply(&r[1].tag, Ok(Reply::Written(mine))));
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["data"]["event"], json!({"id": "a", "name": "n"}));

        // Held now: a second POST is only the write, and its push may come first.
        let r = requests(
            &mut c,
            r#"{"action":"POST","data":{"event":{"id":"a","name":"m"}}}"#,
        );
        assert_eq!(r.len(), 1);
        let mine = change(ChangeKind::Put, "a", 2, Some(json!({"name": "m"})));
        assert!(encode(&mut c, &mut msg, push(PushKind::Put, mine.clone())).is_empty());
        let frames = encode(&mut c, &mut msg, reply(&r[0].tag, Ok(Reply::Written(mine))));
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0]["msg"], 2);
        // Someone else's later change is told.
        let theirs = change(ChangeKind::Patch, "a", 3, Some(json!({"name": "o"})));
        let frames = encode(&mut c, &mut msg, push(PushKind::Patch, theirs));
        assert_eq!(frames[0]["data"]["event"], json!({"id": "a", "name": "o"}));
        assert_eq!(frames[0]["action"], "POST");
    }

    #[test]
    fn delete_answers_delete_or_the_record_as_it_stands() {
        let (mut c, mut msg) = (CrudCodec::default(), MsgNo::default());
        let r = requests(&mut c, r#"{"action":"DELETE","data":{"event":{"id":"a"}}}"#);
        assert_eq!(r.len(), 3, "hold, delete, lookup: {r:?}");
        assert!(encode(&mut c, &mut msg, snapshot(&r[0].tag, vec![])).is_empty());
        let failure = Error::unavailable("disk on fire");
        assert!(encode(&mut c, &mut msg, reply(&r[1].tag, Err(failure))).is_empty());
        let frames = encode(
            &mut c,
            &mut msg,
            reply(
                &r[2].tag,
                Ok(Reply::Record(Some(record(
                    "a",
                    4,
                    json!({"name": "still here"}),
                )))),
            ),
        );
        assert_eq!(
            frames,
            vec![
                json!({"msg": 1, "action": "POST", "data": {"event": {"id": "a", "name": "still here"}}})
            ]
        );

        let r = requests(&mut c, r#"{"action":"DELETE","data":{"event":{"id":"a"}}}"#);
        assert_eq!(r.len(), 2, "held: delete and lookup");
        let gone = change(ChangeKind::Delete, "a", 5, None);
        let frames = encode(
            &mut c,
            &mut msg,
            reply(&r[0].tag, Ok(Reply::Written(gone.clone()))),
        );
        assert_eq!(
            frames,
            vec![json!({"msg": 2, "action": "DELETE", "data": {"event": {"id": "a"}}})]
        );
        assert!(encode(&mut c, &mut msg, reply(&r[1].tag, Ok(Reply::Record(None)))).is_empty());
        assert!(encode(&mut c, &mut msg, push(PushKind::Delete, gone)).is_empty());

        let r = requests(&mut c, r#"{"action":"DELETE","data":{"event":{"id":"a"}}}"#);
        let missing = Error::not_found("event", "a");
        let frames = encode(&mut c, &mut msg, reply(&r[0].tag, Err(missing)));
        assert_eq!(frames[0]["action"], "DELETE");
        assert!(encode(&mut c, &mut msg, reply(&r[1].tag, Ok(Reply::Record(None)))).is_empty());
    }

    #[test]
    fn bad_input_is_an_error_message_naming_the_record() {
        let mut c = CrudCodec::default();
        let cases = [
            ("{nope", ErrorCode::BadJson),
            ("[1]", ErrorCode::BadRequest),
            (r#"{"data":{"event":{"id":"a"}}}"#, ErrorCode::BadRequest),
            (
                r#"{"action":"PUT","data":{"event":{"id":"a"}}}"#,
                ErrorCode::UnknownType,
            ),
            (r#"{"action":"GET"}"#, ErrorCode::BadRequest),
            (r#"{"action":"GET","data":{}}"#, ErrorCode::BadRequest),
            (
                r#"{"action":"GET","data":{"event":{}}}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"action":"GET","data":{"event":"a"}}"#,
                ErrorCode::BadRequest,
            ),
            (
                r#"{"action":"GET","data":{"event":{"id":true}}}"#,
                ErrorCode::InvalidName,
            ),
            (
                r#"{"action":"GET","data":{"bad kind":{"id":"a"}}}"#,
                ErrorCode::InvalidName,
            ),
            (r#"{"action":7,"data":{}}"#, ErrorCode::BadRequest),
        ];
        for (text, code) in cases {
            let out = c.decode(text);
            assert_eq!(out.len(), 1, "{text}");
            let rejected = out.into_iter().next().unwrap().unwrap_err();
            assert_eq!(rejected.error.code, code, "{text}: {}", rejected.error);
        }
        let out = c.decode(r#"{"action":"GET","data":{"event":{"id":"a b"}}}"#);
        let rejected = out.into_iter().next().unwrap().unwrap_err();
        let mut msg = MsgNo::default();
        let frames = encode(&mut c, &mut msg, reply(&rejected.tag, Err(rejected.error)));
        assert_eq!(frames[0]["action"], "ERROR");
        assert_eq!(frames[0]["data"]["event"]["id"], "a b");
        assert_eq!(frames[0]["data"]["error"]["code"], "invalid_name");
        assert_eq!(frames[0]["data"]["error"]["status"], 400);
        // An error the session raised on its own (no tag) still gets the form.
        let frames = encode(
            &mut c,
            &mut msg,
            reply(&Value::Null, Err(Error::new(ErrorCode::TooLarge, "big"))),
        );
        assert_eq!(frames[0]["data"]["error"]["status"], 413);
        assert_eq!(frames[0]["msg"], 2);
    }

    #[test]
    fn lists_and_numeric_ids() {
        let (mut c, mut msg) = (CrudCodec::default(), MsgNo::default());
        let r = requests(
            &mut c,
            r#"{"action":"GET","data":{"event":[{"id":1},{"id":"b"}]}}"#,
        );
        assert_eq!(r.len(), 2);
        let frames = encode(
            &mut c,
            &mut msg,
            snapshot(&r[0].tag, vec![record("1", 1, json!({}))]),
        );
        assert_eq!(
            frames[0]["data"]["event"]["id"], 1,
            "answered as it was asked"
        );
    }

    #[test]
    fn stamp_adds_msg() {
        assert_eq!(stamp(3, "{}"), r#"{"msg":3}"#);
        assert_eq!(stamp(4, r#"{"a":1}"#), r#"{"msg":4,"a":1}"#);
    }
}
