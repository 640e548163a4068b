//! The connection task: owns the socket, reconnects, resumes, and routes every server
//! message to the request or subscription it belongs to.
//!
//! Why one task: the socket, the message counter, the table of requests in flight and
//! each subscription's position must change together (a push and a reconnect must not
//! interleave half-way), and a single owner needs no locks for that. Handles talk to it
//! through an unbounded command channel, so `Drop` of a subscription can unsubscribe
//! without awaiting.
//!
//! The rules it keeps (PROTOCOL.md):
//! - `msg` must rise by exactly one per server message. A jump means something was lost
//!   on the way, and the only sound repair is to drop the connection and resume from
//!   the positions actually applied.
//! - Each subscription remembers the highest `pos` it applied. A reconnect sends
//!   `resume` with one `since` per subscription, so the server replays exactly what
//!   each one missed; a push at or below the remembered position is a replay already
//!   applied and is dropped. Nothing missed, nothing doubled.
//! - Reads are safe to send twice, writes are not: a read in flight when the socket
//!   drops is sent again on the next connection, a write fails with
//!   [`ClientError::ConnectionLost`] and the caller decides.

use crate::client::{Backoff, ConnectionEvent, ConnectionState, Options, Status};
use crate::error::{ClientError, Result};
use crate::store::LocalStore;
use crate::types::{Data, Event, Record, Target};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;
pub(crate) type EventSender = mpsc::UnboundedSender<Result<Event>>;

/// Close code the client uses when it drops a connection on purpose to resume.
const CLOSE_RESUME: u16 = 4000;

/// Whether a request may be sent again after the connection dropped under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Read,
    Write,
}

pub(crate) enum Command {
    Request {
        body: Data,
        kind: Kind,
        reply: oneshot::Sender<Result<Value>>,
    },
    Subscribe {
        name: Arc<str>,
        target: Target,
        events: EventSender,
        ready: oneshot::Sender<Result<()>>,
    },
    Unsubscribe {
        name: Arc<str>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

enum Purpose {
    User {
        kind: Kind,
        reply: oneshot::Sender<Result<Value>>,
    },
    Subscribe(Arc<str>),
    Resume,
    /// Bookkeeping whose answer only matters if it is an error (rejoin, unsubscribe).
    Quiet,
}

struct Pending {
    body: Data,
    purpose: Purpose,
}

impl Pending {
    fn op(&self) -> String {
        self.body
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("request")
            .to_owned()
    }

    /// A caller that gave up (timed out, dropped the future) no longer wants it sent.
    fn abandoned(&self) -> bool {
        matches!(&self.purpose, Purpose::User { reply, .. } if reply.is_closed())
    }
}

struct Sub {
    target: Target,
    epoch: Option<String>,
    /// The highest position applied; where a resume continues from.
    pos: Option<u64>,
    events: EventSender,
    /// Fires on the first snapshot (the subscribe succeeded) or its error.
    ready: Option<oneshot::Sender<Result<()>>>,
    /// The connection number that last restored it, so a failed resume re-requests
    /// only the rest.
    restored_on: u64,
}

impl Sub {
    fn body(&self, name: &str) -> Data {
        let mut body = Data::new();
        body.insert("sub".into(), name.into());
        self.target.write_into(&mut body);
        // A topic has no positions: its messages are not replayed.
        if let (Some(epoch), Some(pos), false) = (
            &self.epoch,
            self.pos,
            matches!(self.target, Target::Topic { .. }),
        ) {
            body.insert(
                "since".into(),
                serde_json::json!({"epoch": epoch, "pos": pos}),
            );
        }
        body
    }
}

/// How a connection ended.
enum End {
    /// The client was closed or every handle dropped: stop for good.
    Stop,
    /// The connection was lost: reconnect (if allowed) and resume.
    Lost { code: Option<u16>, reason: String },
}

pub(crate) struct Shared {
    pub(crate) status: watch::Sender<Status>,
    pub(crate) events: broadcast::Sender<ConnectionEvent>,
    pub(crate) store: Option<LocalStore>,
    /// The bearer token for the next connection attempt; a caller may replace it (a
    /// refreshed token) while the client runs.
    pub(crate) token: std::sync::Mutex<Option<String>>,
}

impl Shared {
    fn token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub(crate) struct Driver {
    url: String,
    options: Options,
    cmds: mpsc::UnboundedReceiver<Command>,
    shared: Arc<Shared>,
    session: Option<String>,
    /// The session id the current connection's welcome gave (the fallback if a resume
    /// is refused).
    welcome_session: Option<String>,
    subs: HashMap<Arc<str>, Sub>,
    /// Rooms joined, with the user name joined as: rejoined after every reconnect,
    /// since presence belongs to a connection.
    rooms: BTreeMap<String, Option<String>>,
    /// Requests waiting for a connection.
    queue: VecDeque<Pending>,
    sent: HashMap<u64, Pending>,
    next_req: u64,
    conn: u64,
    out: Vec<String>,
}

impl Driver {
    pub(crate) fn new(
        url: String,
        options: Options,
        cmds: mpsc::UnboundedReceiver<Command>,
        shared: Arc<Shared>,
    ) -> Driver {
        Driver {
            url,
            options,
            cmds,
            shared,
            session: None,
            welcome_session: None,
            subs: HashMap::new(),
            rooms: BTreeMap::new(),
            queue: VecDeque::new(),
            sent: HashMap::new(),
            next_req: 1,
            conn: 0,
            out: Vec::new(),
        }
    }

    fn emit(&self, event: ConnectionEvent) {
        // No receiver is fine: events are for those who asked.
        let _ = self.shared.events.send(event);
    }

    fn set_state(&self, state: ConnectionState) {
        self.shared.status.send_modify(|s| s.state = state);
    }

    /// Runs until the client is closed. `first` learns whether the first connection
    /// worked; a first failure ends the task (a caller with a wrong URL should hear so
    /// at once rather than wait through backoff).
    pub(crate) async fn run(mut self, first: oneshot::Sender<Result<()>>) {
        let mut first = Some(first);
        let mut attempt: u32 = 0;
        loop {
            match self.open().await {
                Opened::Ws(ws, welcome) => {
                    if let Some(first) = first.take() {
                        let _ = first.send(Ok(()));
                    }
                    attempt = 0;
                    match self.serve(ws, welcome).await {
                        End::Stop => return self.shutdown(ClientError::Closed),
                        End::Lost { code, reason } => {
                            tracing::debug!(url = %self.url, ?code, %reason, "connection lost");
                            self.emit(ConnectionEvent::Disconnected { code, reason });
                            self.after_disconnect();
                        }
                    }
                }
                Opened::Failed(reason) => {
                    if let Some(first) = first.take() {
                        let _ = first.send(Err(ClientError::Connect {
                            url: self.url.clone(),
                            reason,
                        }));
                        return self.shutdown(ClientError::Closed);
                    }
                    tracing::debug!(url = %self.url, %reason, "reconnect failed");
                }
                Opened::Stop => return self.shutdown(ClientError::Closed),
            }
            let Some(backoff) = self.options.reconnect.clone() else {
                return self.shutdown(ClientError::ConnectionLost {
                    op: "the subscription".into(),
                });
            };
            attempt = attempt.saturating_add(1);
            let delay = backoff_delay(&backoff, attempt - 1);
            self.set_state(ConnectionState::Reconnecting);
            self.emit(ConnectionEvent::Reconnecting { attempt, delay });
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    cmd = self.cmds.recv() => if self.offline(cmd) {
                        return self.shutdown(ClientError::Closed);
                    },
                }
            }
        }
    }

    /// Connects and waits for the welcome, handling commands meanwhile.
    async fn open(&mut self) -> Opened {
        let url = self.url.clone();
        let timeout = self.options.connect_timeout;
        let token = self.shared.token();
        let connect = async move {
            let config = WebSocketConfig::default()
                .max_message_size(Some(256 << 20))
                .max_frame_size(Some(64 << 20));
            let request = handshake_request(&url, token.as_deref())?;
            let (mut ws, _) =
                tokio_tungstenite::connect_async_with_config(request, Some(config), true)
                    .await
                    .map_err(|e| match e {
                        tungstenite::Error::Http(response) => http_refusal(&response),
                        other => other.to_string(),
                    })?;
            loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        let welcome: Value = serde_json::from_str(text.as_str())
                            .map_err(|e| format!("the server's first message is not JSON: {e}"))?;
                        if welcome["type"] != "welcome" {
                            return Err(format!(
                                "expected a welcome from a Tether /ws endpoint, got {}",
                                truncate(text.as_str())
                            ));
                        }
                        return Ok((ws, welcome));
                    }
                    Some(Ok(Message::Close(frame))) => {
                        return Err(match frame {
                            Some(f) => format!("closed by the server ({}) {}", f.code, f.reason),
                            None => "closed by the server".into(),
                        })
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(e.to_string()),
                    None => return Err("closed before the welcome".into()),
                }
            }
        };
        let connect = tokio::time::timeout(timeout, connect);
        tokio::pin!(connect);
        loop {
            tokio::select! {
                result = &mut connect => return match result {
                    Ok(Ok((ws, welcome))) => Opened::Ws(Box::new(ws), welcome),
                    Ok(Err(reason)) => Opened::Failed(reason),
                    Err(_) => Opened::Failed(format!("no welcome within {timeout:?}")),
                },
                cmd = self.cmds.recv() => if self.offline(cmd) {
                    return Opened::Stop;
                },
            }
        }
    }

    /// Handles a command while there is no connection. Returns true to stop.
    fn offline(&mut self, cmd: Option<Command>) -> bool {
        match cmd {
            None => true,
            Some(Command::Close { done }) => {
                let _ = done.send(());
                true
            }
            Some(Command::Request { body, kind, reply }) => {
                self.note_presence(&body);
                self.queue.push_back(Pending {
                    body,
                    purpose: Purpose::User { kind, reply },
                });
                false
            }
            Some(Command::Subscribe {
                name,
                target,
                events,
                ready,
            }) => {
                // Sent with the others when the next connection is welcomed.
                self.subs.insert(name, new_sub(target, events, ready));
                false
            }
            Some(Command::Unsubscribe { name }) => {
                // The next resume simply leaves it out.
                self.forget(&name);
                false
            }
        }
    }

    /// Handles a command on a live connection. Returns true to stop.
    fn online(&mut self, cmd: Option<Command>) -> bool {
        match cmd {
            None => true,
            Some(Command::Close { done }) => {
                let _ = done.send(());
                true
            }
            Some(Command::Request { body, kind, reply }) => {
                self.note_presence(&body);
                self.transmit(Pending {
                    body,
                    purpose: Purpose::User { kind, reply },
                });
                false
            }
            Some(Command::Subscribe {
                name,
                target,
                events,
                ready,
            }) => {
                let sub = new_sub(target, events, ready);
                let mut body = sub.body(&name);
                body.insert("type".into(), "subscribe".into());
                self.subs.insert(name.clone(), sub);
                self.transmit(Pending {
                    body,
                    purpose: Purpose::Subscribe(name),
                });
                false
            }
            Some(Command::Unsubscribe { name }) => {
                if self.forget(&name) {
                    let mut body = Data::new();
                    body.insert("type".into(), "unsubscribe".into());
                    body.insert("sub".into(), (*name).into());
                    self.transmit(Pending {
                        body,
                        purpose: Purpose::Quiet,
                    });
                }
                false
            }
        }
    }

    /// Drops a subscription locally; later pushes for it are ignored.
    fn forget(&mut self, name: &Arc<str>) -> bool {
        if let Some(store) = &self.shared.store {
            store.drop_sub(name);
        }
        self.subs.remove(name).is_some()
    }

    /// Joins and leaves are remembered so the client rejoins after a reconnect.
    fn note_presence(&mut self, body: &Data) {
        let room = body.get("room").and_then(Value::as_str).map(str::to_owned);
        match (body.get("type").and_then(Value::as_str), room) {
            (Some("join"), Some(room)) => {
                let user = body.get("user").and_then(Value::as_str).map(str::to_owned);
                self.rooms.insert(room, user);
            }
            (Some("leave"), Some(room)) => {
                self.rooms.remove(&room);
            }
            _ => {}
        }
    }

    /// Queues a request for sending on the current connection.
    fn transmit(&mut self, mut pending: Pending) {
        if pending.abandoned() {
            return;
        }
        let req = self.next_req;
        self.next_req += 1;
        pending.body.insert("req".into(), req.into());
        match serde_json::to_string(&pending.body) {
            Ok(text) => {
                self.out.push(text);
                self.sent.insert(req, pending);
            }
            Err(e) => {
                // Unreachable with JSON values, but a caller must hear of it anyway.
                if let Purpose::User { reply, .. } = pending.purpose {
                    let _ = reply.send(Err(ClientError::Invalid(e.to_string())));
                }
            }
        }
    }

    async fn flush(&mut self, ws: &mut Ws) -> std::result::Result<(), String> {
        if self.out.is_empty() {
            return Ok(());
        }
        for text in self.out.drain(..) {
            ws.feed(Message::Text(text.into()))
                .await
                .map_err(|e| e.to_string())?;
        }
        ws.flush().await.map_err(|e| e.to_string())
    }

    /// One connection, from its welcome to its end.
    async fn serve(&mut self, ws: Box<Ws>, welcome: Value) -> End {
        let mut ws = *ws;
        self.conn += 1;
        let mut last_msg = welcome["msg"].as_u64().unwrap_or(1);
        self.on_welcome(&welcome);
        let period = self.options.keepalive.unwrap_or(Duration::from_secs(3600));
        let mut keepalive = tokio::time::interval_at(Instant::now() + period, period);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            if let Err(reason) = self.flush(&mut ws).await {
                return End::Lost { code: None, reason };
            }
            tokio::select! {
                cmd = self.cmds.recv() => if self.online(cmd) {
                    let _ = self.flush(&mut ws).await;
                    close(&mut ws, CloseCode::Normal, "client closed").await;
                    return End::Stop;
                },
                frame = ws.next() => {
                    last_heard = Instant::now();
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            if let Err(reason) = self.on_text(text.as_str(), &mut last_msg) {
                                close(&mut ws, CloseCode::from(CLOSE_RESUME), &reason).await;
                                return End::Lost { code: None, reason };
                            }
                        }
                        Some(Ok(Message::Close(frame))) => {
                            let (code, reason) = match frame {
                                Some(f) => (Some(u16::from(f.code)), f.reason.to_string()),
                                None => (None, "closed by the server".into()),
                            };
                            return End::Lost { code, reason };
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return End::Lost { code: None, reason: e.to_string() },
                        None => return End::Lost { code: None, reason: "connection closed".into() },
                    }
                },
                _ = keepalive.tick(), if self.options.keepalive.is_some() => {
                    // A half-open connection (a vanished peer, a dead NAT entry) never
                    // errors by itself; silence for three periods is taken as loss.
                    if last_heard.elapsed() > period * 3 {
                        return End::Lost { code: None, reason: format!("nothing heard for {:?}", period * 3) };
                    }
                    if ws.send(Message::Ping(Vec::new().into())).await.is_err() {
                        return End::Lost { code: None, reason: "ping failed".into() };
                    }
                }
            }
        }
    }

    fn on_welcome(&mut self, welcome: &Value) {
        let session = welcome["session"].as_str().unwrap_or_default().to_owned();
        let epoch = welcome["epoch"].as_str().map(str::to_owned);
        self.welcome_session = Some(session.clone());
        let resuming = self.session.clone();
        match &resuming {
            None => {
                self.session = Some(session.clone());
                let names: Vec<Arc<str>> = self.subs.keys().cloned().collect();
                for name in names {
                    self.send_subscribe(&name);
                }
            }
            Some(previous) => {
                // Take the old session over (presence identity continues) and restore
                // every subscription from its own position.
                let mut names: Vec<&Arc<str>> = self.subs.keys().collect();
                names.sort();
                let subs: Vec<Value> = names
                    .into_iter()
                    .map(|n| Value::Object(self.subs[n].body(n)))
                    .collect();
                let mut body = Data::new();
                body.insert("type".into(), "resume".into());
                body.insert("session".into(), previous.clone().into());
                // Always a list, even empty: without one the server restores whatever
                // it remembers for the session, which this client may have dropped.
                body.insert("subs".into(), Value::Array(subs));
                self.transmit(Pending {
                    body,
                    purpose: Purpose::Resume,
                });
            }
        }
        let rooms: Vec<(String, Option<String>)> = self
            .rooms
            .iter()
            .map(|(r, u)| (r.clone(), u.clone()))
            .collect();
        for (room, user) in rooms {
            let mut body = Data::new();
            body.insert("type".into(), "join".into());
            body.insert("room".into(), room.into());
            if let Some(user) = user {
                body.insert("user".into(), user.into());
            }
            self.transmit(Pending {
                body,
                purpose: Purpose::Quiet,
            });
        }
        // The server handles messages in order, so queued requests can follow the
        // resume at once: they are answered after it.
        while let Some(pending) = self.queue.pop_front() {
            self.transmit(pending);
        }
        self.shared.status.send_modify(|s| {
            s.state = ConnectionState::Ready;
            s.epoch = epoch;
            if resuming.is_none() {
                s.session = Some(session.clone());
            }
        });
        if resuming.is_none() {
            self.emit(ConnectionEvent::Connected {
                session,
                resumed: false,
            });
        }
    }

    fn send_subscribe(&mut self, name: &Arc<str>) {
        let Some(sub) = self.subs.get(name) else {
            return;
        };
        let mut body = sub.body(name);
        body.insert("type".into(), "subscribe".into());
        self.transmit(Pending {
            body,
            purpose: Purpose::Subscribe(name.clone()),
        });
    }

    /// Handles one server message. `Err` drops the connection to resume.
    fn on_text(&mut self, text: &str, last_msg: &mut u64) -> std::result::Result<(), String> {
        let m: Value = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                self.emit(ConnectionEvent::Error(ClientError::Protocol(format!(
                    "a server message is not JSON ({e}): {}",
                    truncate(text)
                ))));
                return Ok(());
            }
        };
        if let Some(n) = m["msg"].as_u64() {
            if n != *last_msg + 1 {
                let expected = *last_msg + 1;
                tracing::warn!(
                    expected,
                    received = n,
                    "message gap; reconnecting to resume"
                );
                self.emit(ConnectionEvent::Gap {
                    expected,
                    received: n,
                });
                return Err(format!(
                    "message {expected} never arrived (got {n}); resuming"
                ));
            }
            *last_msg = n;
        }
        match m["type"].as_str().unwrap_or_default() {
            "result" => self.on_reply(&m, Ok(())),
            "error" => self.on_reply(&m, Err(ClientError::from_server(&m))),
            "snapshot" => self.on_snapshot(&m),
            "resumed" => self.on_resumed(&m),
            "PUT" | "PATCH" | "DELETE" => self.on_push(&m),
            "message" => {
                if let Some(sub) = m["sub"].as_str().and_then(|s| self.subs.get(s)) {
                    let _ = sub.events.send(Ok(Event::Message {
                        topic: m["topic"].as_str().unwrap_or_default().to_owned(),
                        data: m["data"].clone(),
                    }));
                }
            }
            "presence" => self.emit(ConnectionEvent::Presence {
                room: m["room"].as_str().unwrap_or_default().to_owned(),
                user: m["user"].as_str().unwrap_or_default().to_owned(),
                joined: m["event"] == "join",
                members: strings(&m["members"]),
            }),
            // Newer servers may send more; this client ignores what it does not know.
            _ => {}
        }
        Ok(())
    }

    fn on_reply(&mut self, m: &Value, outcome: Result<()>) {
        let pending = m["req"].as_u64().and_then(|req| self.sent.remove(&req));
        let Some(pending) = pending else {
            if let Err(e) = outcome {
                // An error that answers nothing of ours (a malformed frame) is news.
                self.emit(ConnectionEvent::Error(e));
            }
            return;
        };
        match pending.purpose {
            Purpose::User { reply, .. } => {
                let _ = reply.send(outcome.map(|()| m.clone()));
            }
            Purpose::Subscribe(name) => {
                if let Err(e) = outcome {
                    self.fail_sub(&name, e);
                }
            }
            Purpose::Resume => match outcome {
                Ok(()) => {
                    let session = m["session"]
                        .as_str()
                        .map(str::to_owned)
                        .or_else(|| self.session.clone())
                        .unwrap_or_default();
                    self.session = Some(session.clone());
                    self.shared
                        .status
                        .send_modify(|s| s.session = Some(session.clone()));
                    self.emit(ConnectionEvent::Connected {
                        session,
                        resumed: true,
                    });
                }
                Err(e) => {
                    // The server refused the resume as a whole: carry on as the new
                    // session and subscribe again one by one, each from its position.
                    tracing::warn!(error = %e, "resume refused; subscribing again");
                    self.emit(ConnectionEvent::Error(e));
                    let session = self.welcome_session.clone().unwrap_or_default();
                    self.session = Some(session.clone());
                    self.shared
                        .status
                        .send_modify(|s| s.session = Some(session.clone()));
                    let conn = self.conn;
                    let names: Vec<Arc<str>> = self
                        .subs
                        .iter()
                        .filter(|(_, s)| s.restored_on != conn)
                        .map(|(n, _)| n.clone())
                        .collect();
                    for name in names {
                        self.send_subscribe(&name);
                    }
                    self.emit(ConnectionEvent::Connected {
                        session,
                        resumed: false,
                    });
                }
            },
            Purpose::Quiet => {
                if let Err(e) = outcome {
                    let unimportant = pending.op() == "unsubscribe";
                    if !unimportant {
                        self.emit(ConnectionEvent::Error(e));
                    }
                }
            }
        }
    }

    fn fail_sub(&mut self, name: &Arc<str>, error: ClientError) {
        if let Some(store) = &self.shared.store {
            store.drop_sub(name);
        }
        if let Some(mut sub) = self.subs.remove(name) {
            match sub.ready.take() {
                Some(ready) => {
                    let _ = ready.send(Err(error));
                }
                None => {
                    let _ = sub.events.send(Err(error));
                }
            }
        }
    }

    fn on_snapshot(&mut self, m: &Value) {
        if let Some(req) = m["req"].as_u64() {
            self.sent.remove(&req);
        }
        let Some(name) = m["sub"].as_str().map(Arc::<str>::from) else {
            return;
        };
        let records: Vec<Record> = match serde_json::from_value(m["records"].clone()) {
            Ok(records) => records,
            Err(e) => {
                let error = ClientError::Protocol(format!("a snapshot's records: {e}"));
                return self.fail_sub(&name, error);
            }
        };
        let conn = self.conn;
        let Some(sub) = self.subs.get_mut(&name) else {
            return;
        };
        sub.restored_on = conn;
        sub.epoch = m["epoch"].as_str().map(str::to_owned);
        sub.pos = m["pos"].as_u64();
        let first = sub.ready.is_some();
        let is_topic = matches!(sub.target, Target::Topic { .. });
        if let Some(ready) = sub.ready.take() {
            let _ = ready.send(Ok(()));
        }
        // A topic is re-subscribed after every reconnect; its empty snapshot is news
        // only the first time.
        if is_topic && !first {
            return;
        }
        let resync = m["resync"].as_str().map(str::to_owned);
        let event = Event::Snapshot {
            pos: sub.pos.unwrap_or_default(),
            records,
            resync: resync.clone(),
        };
        if let Some(store) = &self.shared.store {
            if let Event::Snapshot { records, .. } = &event {
                store.replace(&name, records);
            }
        }
        let _ = sub.events.send(Ok(event));
        if let Some(reason) = resync {
            self.emit(ConnectionEvent::Resynced {
                sub: name.to_string(),
                reason,
            });
        }
    }

    fn on_resumed(&mut self, m: &Value) {
        if let Some(req) = m["req"].as_u64() {
            self.sent.remove(&req);
        }
        let conn = self.conn;
        let Some(sub) = m["sub"].as_str().and_then(|n| self.subs.get_mut(n)) else {
            return;
        };
        sub.restored_on = conn;
        if let Some(epoch) = m["epoch"].as_str() {
            sub.epoch = Some(epoch.to_owned());
        }
        let from = m["from"].as_u64().unwrap_or_default();
        let _ = sub.events.send(Ok(Event::Resumed { from }));
    }

    fn on_push(&mut self, m: &Value) {
        let Some(name) = m["sub"].as_str().map(Arc::<str>::from) else {
            return;
        };
        // A push for a subscription dropped meanwhile can still be in flight.
        let Some(sub) = self.subs.get_mut(&name) else {
            return;
        };
        let Some(pos) = m["pos"].as_u64() else {
            return;
        };
        // Positions only grow on one subscription: anything at or below the one
        // applied is a replay already seen, and applying it twice would be wrong.
        if sub.pos.is_some_and(|p| pos <= p) {
            return;
        }
        sub.pos = Some(pos);
        let resource = m["resource"].as_str().unwrap_or_default().to_owned();
        let id = m["id"].as_str().unwrap_or_default().to_owned();
        let version = m["version"].as_u64().unwrap_or_default();
        let store = self.shared.store.as_ref();
        let event = match m["type"].as_str() {
            Some("PUT") => {
                let record = Record {
                    resource,
                    id,
                    version,
                    data: m["data"].as_object().cloned().unwrap_or_default(),
                };
                if let Some(store) = store {
                    store.put(&name, &record);
                }
                Event::Put { pos, record }
            }
            Some("PATCH") => {
                let patch = m["patch"].as_object().cloned().unwrap_or_default();
                let record = store.and_then(|s| s.patch(&name, &id, version, &patch));
                Event::Patch {
                    pos,
                    resource,
                    id,
                    version,
                    patch,
                    record,
                }
            }
            _ => {
                if let Some(store) = store {
                    store.remove(&name, &resource, &id);
                }
                Event::Delete {
                    pos,
                    resource,
                    id,
                    version,
                }
            }
        };
        let _ = sub.events.send(Ok(event));
    }

    /// The connection is gone: reads go again on the next one, writes in flight fail.
    fn after_disconnect(&mut self) {
        self.out.clear();
        let mut in_flight: Vec<(u64, Pending)> = self.sent.drain().collect();
        in_flight.sort_by_key(|(req, _)| *req);
        let mut again = Vec::new();
        for (_, pending) in in_flight {
            let op = pending.op();
            match pending.purpose {
                Purpose::User {
                    kind: Kind::Write,
                    reply,
                } => {
                    let _ = reply.send(Err(ClientError::ConnectionLost { op }));
                }
                Purpose::User {
                    kind: Kind::Read, ..
                } => {
                    let mut pending = pending;
                    pending.body.remove("req");
                    again.push(pending);
                }
                // Subscriptions, resumes and rejoins are made again from the state.
                Purpose::Subscribe(_) | Purpose::Resume | Purpose::Quiet => {}
            }
        }
        for pending in again.into_iter().rev() {
            self.queue.push_front(pending);
        }
        self.set_state(ConnectionState::Reconnecting);
    }

    /// Ends the task: every waiting caller and subscription hears `reason`.
    fn shutdown(mut self, reason: ClientError) {
        for pending in self
            .sent
            .drain()
            .map(|(_, p)| p)
            .chain(self.queue.drain(..))
        {
            if let Purpose::User { reply, .. } = pending.purpose {
                let _ = reply.send(Err(reason.clone()));
            }
        }
        for (_, mut sub) in self.subs.drain() {
            if let Some(ready) = sub.ready.take() {
                let _ = ready.send(Err(reason.clone()));
            } else if !matches!(reason, ClientError::Closed) {
                let _ = sub.events.send(Err(reason.clone()));
            }
        }
        self.set_state(ConnectionState::Closed);
    }
}

enum Opened {
    Ws(Box<Ws>, Value),
    Failed(String),
    Stop,
}

fn new_sub(target: Target, events: EventSender, ready: oneshot::Sender<Result<()>>) -> Sub {
    Sub {
        target,
        epoch: None,
        pos: None,
        events,
        ready: Some(ready),
        restored_on: 0,
    }
}

async fn close(ws: &mut Ws, code: CloseCode, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.to_owned().into(),
    };
    // A peer that does not read may never take the close frame; don't wait long.
    let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(Some(frame))).await;
}

/// Exponential backoff with jitter: `attempt` 0 waits about `initial`. The random part
/// keeps many clients cut off together from returning together.
pub(crate) fn backoff_delay(backoff: &Backoff, attempt: u32) -> Duration {
    let base = backoff.initial.as_secs_f64() * backoff.factor.max(1.0).powi(attempt.min(64) as i32);
    let base = base.min(backoff.max.as_secs_f64());
    let jitter = backoff.jitter.clamp(0.0, 1.0);
    let factor = 1.0 - jitter * rand::random::<f64>();
    Duration::from_secs_f64((base * factor).max(0.0))
}

/// The upgrade request, with `Authorization: Bearer` when there is a token.
fn handshake_request(
    url: &str,
    token: Option<&str>,
) -> std::result::Result<tungstenite::handshake::client::Request, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token has characters a header cannot carry".to_owned())?;
        request
            .headers_mut()
            .insert(tungstenite::http::header::AUTHORIZATION, value);
    }
    Ok(request)
}

/// An HTTP answer instead of an upgrade (401 without a valid token, 403 for a
/// refused origin, 503 at the connection limit), with the server's own message.
fn http_refusal(response: &tungstenite::http::Response<Option<Vec<u8>>>) -> String {
    let status = response.status();
    let body: Value = response
        .body()
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
    match (
        body["error"]["code"].as_str(),
        body["error"]["message"].as_str(),
    ) {
        (Some(code), Some(message)) => format!("{code}: {message} (HTTP {})", status.as_u16()),
        _ => format!("HTTP {status}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn truncate(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters_downwards() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            factor: 2.0,
            jitter: 0.5,
        };
        for attempt in 0..20 {
            let d = backoff_delay(&b, attempt);
            let base = (100.0 * 2f64.powi(attempt as i32)).min(1000.0);
            let ms = d.as_secs_f64() * 1000.0;
            assert!(
                ms <= base + 0.001 && ms >= base * 0.5 - 0.001,
                "{attempt}: {ms}"
            );
        }
        let none = Backoff {
            jitter: 0.0,
            ..b.clone()
        };
        assert_eq!(backoff_delay(&none, 0), Duration::from_millis(100));
        assert_eq!(backoff_delay(&none, 30), Duration::from_secs(1));
    }
}
