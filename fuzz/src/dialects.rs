//! Fuzz harness for every dialect codec in `tether_dialects::registry()`: decoding
//! arbitrary text must never panic, and every frame a codec encodes must be JSON.
//!
//! Input layout: the first byte picks the dialect, the rest (as UTF-8, lossily; a
//! WebSocket text frame is always valid UTF-8) is split at NUL into the connection's
//! frames, all fed to one codec, since codecs keep per-connection state. For a dialect
//! whose route has a path parameter (`/monorail/{channel}`) the first piece is its
//! value. Every decoded request is answered with plausible events built from it (a
//! reply of every kind, pushes, snapshots, and an error, each request the next code),
//! so the encoders see data the fuzzer chose.
//!
//! Shared with the normal test suite (`crates/tether-dialects/tests/fuzz_regressions.rs`
//! includes this file), which replays the corpus seeds and every crash ever found.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tether_core::{
    Change, ChangeKind, Data, Epoch, Error, ErrorCode, Op, Outbound, Position, PushKind, Record,
    RecordId, Reply, ResourceName, ResyncReason, SubSpec, SubTarget, Tag,
};
use tether_dialects::{Codec, MsgNo, Rejected, Request};

/// Every error code, so each dialect's error form is exercised for each.
const CODES: &[ErrorCode] = &[
    ErrorCode::BadJson,
    ErrorCode::BadRequest,
    ErrorCode::UnknownType,
    ErrorCode::InvalidName,
    ErrorCode::NotFound,
    ErrorCode::AlreadyExists,
    ErrorCode::VersionConflict,
    ErrorCode::TooLarge,
    ErrorCode::LimitExceeded,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::UnknownSubscription,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
];

pub fn run(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let dialects = tether_dialects::registry();
    let dialect = dialects[usize::from(pick) % dialects.len()];
    let text = String::from_utf8_lossy(rest);
    let mut frames = text.split('\0');
    let mut params = HashMap::new();
    for name in path_params(dialect.path()) {
        params.insert(
            name.to_owned(),
            frames.next().unwrap_or_default().to_owned(),
        );
    }
    let Ok(mut codec) = dialect.codec(&params) else {
        return;
    };
    let mut connection = Connection {
        msg: MsgNo::default(),
        out: Vec::new(),
        position: 0,
        requests: 0,
    };
    connection.send(
        &mut *codec,
        Outbound::Welcome {
            session: "c-fuzz".into(),
            epoch: Epoch("fuzz-epoch".into()),
            position: Position(0),
        },
    );
    for frame in frames {
        for request in codec.decode(frame) {
            match request {
                Ok(Request { tag, op }) => {
                    for event in connection.answers(&tag, &op) {
                        connection.send(&mut *codec, event);
                    }
                }
                Err(Rejected { tag, error }) => connection.send(
                    &mut *codec,
                    Outbound::Reply {
                        tag,
                        result: Err(error),
                    },
                ),
            }
        }
    }
}

/// The `{name}` segments of an axum route.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .map(|s| s.trim_start_matches('*'))
        .collect()
}

struct Connection {
    msg: MsgNo,
    out: Vec<String>,
    position: u64,
    requests: usize,
}

impl Connection {
    fn send(&mut self, codec: &mut dyn Codec, event: Outbound) {
        codec.encode(&event, &mut self.msg, &mut self.out);
        for frame in self.out.drain(..) {
            if let Err(e) = serde_json::from_str::<Value>(&frame) {
                panic!("a codec encoded a frame that is not JSON ({e}): {frame}");
            }
        }
    }

    fn change(
        &mut self,
        kind: ChangeKind,
        resource: &ResourceName,
        id: &RecordId,
        data: Option<Data>,
        patch: Option<Data>,
    ) -> Arc<Change> {
        self.position += 1;
        Arc::new(Change::new(
            Position(self.position),
            kind,
            resource.clone(),
            id.clone(),
            self.position,
            data,
            patch,
        ))
    }

    /// What the server could send in answer to `op`: its success reply and the
    /// events that go with it, then an error of every code with the same tag.
    fn answers(&mut self, tag: &Tag, op: &Op) -> Vec<Outbound> {
        let reply = |result: Reply| Outbound::Reply {
            tag: tag.clone(),
            result: Ok(result),
        };
        let fallback_resource = ResourceName::parse("fuzz").ok();
        let fallback_id = RecordId::parse("x").ok();
        let mut events = Vec::new();
        match op {
            Op::Write(write) => {
                let kind = match write.kind {
                    tether_core::WriteKind::Delete => ChangeKind::Delete,
                    tether_core::WriteKind::Patch => ChangeKind::Patch,
                    _ => ChangeKind::Put,
                };
                let (data, patch) = match kind {
                    ChangeKind::Delete => (None, None),
                    ChangeKind::Patch => (Some(write.data.clone()), Some(write.data.clone())),
                    ChangeKind::Put => (Some(write.data.clone()), None),
                };
                let change = self.change(kind, &write.resource, &write.id, data, patch);
                events.push(reply(Reply::Written(change.clone())));
                let spec = Arc::new(SubSpec {
                    target: SubTarget::Record {
                        resource: write.resource.clone(),
                        id: write.id.clone(),
                    },
                });
                for kind in [PushKind::Put, PushKind::Patch, PushKind::Delete] {
                    events.push(Outbound::Push {
                        sub: "s1".into(),
                        spec: spec.clone(),
                        kind,
                        change: change.clone(),
                    });
                }
            }
            Op::Get { resource, id } => {
                events.push(reply(Reply::Record(None)));
                events.push(reply(Reply::Record(Some(record(resource, id, 1)))));
            }
            Op::Query { resource, .. } => {
                if let Some(id) = &fallback_id {
                    events.push(reply(Reply::Records(vec![record(resource, id, 2)])));
                }
                events.push(reply(Reply::Records(Vec::new())));
            }
            Op::Subscribe { sub, spec, since } => {
                let spec = Arc::new(spec.clone());
                let records = match (&spec.target, &fallback_id) {
                    (SubTarget::Record { resource, id }, _) => vec![record(resource, id, 3)],
                    (SubTarget::Query { resource, .. }, Some(id)) => vec![record(resource, id, 3)],
                    _ => Vec::new(),
                };
                events.push(Outbound::Snapshot {
                    tag: Some(tag.clone()),
                    sub: sub.as_str().into(),
                    spec: spec.clone(),
                    position: Position(self.position),
                    records: records.clone(),
                    resync: since.as_ref().map(|_| ResyncReason::Compacted),
                });
                events.push(Outbound::Resumed {
                    tag: Some(tag.clone()),
                    sub: sub.as_str().into(),
                    spec: spec.clone(),
                    from: since.as_ref().map(|s| s.position).unwrap_or_default(),
                });
                for r in &records {
                    let change = self.change(
                        ChangeKind::Patch,
                        &r.resource,
                        &r.id,
                        Some(r.data.clone()),
                        Some(r.data.clone()),
                    );
                    for kind in [PushKind::Put, PushKind::Patch, PushKind::Delete] {
                        events.push(Outbound::Push {
                            sub: sub.as_str().into(),
                            spec: spec.clone(),
                            kind,
                            change: change.clone(),
                        });
                    }
                }
                if let SubTarget::Topic { topic } = &spec.target {
                    events.push(Outbound::Message {
                        sub: sub.as_str().into(),
                        topic: topic.as_str().into(),
                        data: Arc::new(json!({"line": "fuzz"})),
                    });
                }
            }
            Op::Unsubscribe { sub } => {
                events.push(reply(Reply::Released(vec![sub.as_str().into()])))
            }
            Op::Flush { .. } => events.push(reply(Reply::Released(Vec::new()))),
            Op::Resume { session, .. } => events.push(reply(Reply::Session {
                session: session.as_str().into(),
                subs: vec!["s1".into()],
            })),
            Op::Publish { topic, data } => {
                events.push(reply(Reply::Ok));
                events.push(Outbound::Message {
                    sub: "s1".into(),
                    topic: topic.as_str().into(),
                    data: Arc::new(data.clone()),
                });
            }
            Op::Presence { room, user, join } => {
                let user: Arc<str> = user.as_deref().unwrap_or("c-fuzz").into();
                events.push(reply(Reply::Members(vec![user.clone()])));
                events.push(Outbound::Presence {
                    room: room.as_str().into(),
                    user: user.clone(),
                    joined: *join,
                    members: vec![user],
                });
            }
            Op::Relay { room, data } => {
                events.push(reply(Reply::Ok));
                events.push(Outbound::Relay {
                    room: room.as_str().into(),
                    from: "someone".into(),
                    data: Arc::new(data.clone()),
                });
            }
            Op::Open {
                resource,
                id,
                sub,
                room,
                user,
                create,
            } => {
                events.push(Outbound::Snapshot {
                    tag: Some(tag.clone()),
                    sub: sub.as_str().into(),
                    spec: Arc::new(SubSpec {
                        target: SubTarget::Record {
                            resource: resource.clone(),
                            id: id.clone(),
                        },
                    }),
                    position: Position(self.position),
                    records: vec![Record {
                        resource: resource.clone(),
                        id: id.clone(),
                        version: 1,
                        data: create.clone().unwrap_or_default(),
                    }],
                    resync: None,
                });
                let user: Arc<str> = user.as_deref().unwrap_or("c-fuzz").into();
                events.push(reply(Reply::Members(vec![user.clone()])));
                events.push(Outbound::Presence {
                    room: room.as_str().into(),
                    user: user.clone(),
                    joined: true,
                    members: vec![user],
                });
            }
            Op::Confirm { .. } => {}
            Op::Ping => events.push(reply(Reply::Ok)),
            // Ops added later still get every error form below.
            #[allow(unreachable_patterns)]
            _ => {}
        }
        if let (Some(resource), Some(id)) = (&fallback_resource, &fallback_id) {
            events.push(reply(Reply::Record(Some(record(resource, id, 9)))));
        }
        // One error code per request, in turn, keeps each input cheap; over a run
        // every code meets every kind of tag.
        self.requests += 1;
        let code = CODES[self.requests % CODES.len()];
        events.push(Outbound::Reply {
            tag: tag.clone(),
            result: Err(Error::new(code, "fuzz").with_current_version(7)),
        });
        events
    }
}

fn record(resource: &ResourceName, id: &RecordId, version: u64) -> Record {
    let mut data = Data::new();
    data.insert("title".into(), json!("fuzz"));
    data.insert("n".into(), json!(version));
    Record {
        resource: resource.clone(),
        id: id.clone(),
        version,
        data,
    }
}
