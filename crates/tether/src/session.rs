//! One session per connection: identity, the codec, request handling, and delivery.
//!
//! One task runs a connection. Each turn of its loop moves whatever the outbox holds
//! (replies and pushes alike, in order) into the socket, encoded with the dialect's
//! codec and stamped with message numbers, then waits for whichever comes first: a
//! frame from the client, more in the outbox, a write becoming durable, a timer (ping,
//! idle, token expiry) or shutdown. Reading a frame also writes what the socket will
//! take, so a slow client's backlog drains as it reads. An idle connection is one
//! parked task and no buffers (see [`crate::transport::websocket`]).
//!
//! Writes are pipelined: each is handed to the committer as it arrives and answered
//! when durable, so a client that sends many writes without waiting shares group
//! commits instead of paying one fsync per write; replies still go out in request
//! order, and any other request waits for the writes before it (a `get` after a `put`
//! sees the put).

use crate::close_codes;
use crate::telemetry::Traffic;
use crate::transport::rate::{RateLimit, Verdict};
use crate::transport::upgrade::Stream;
use crate::transport::websocket::WebSocket;
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tether_core::event::Reply;
use tether_core::{
    ConfirmKind, Error, ErrorCode, Op, Outbound, RecordId, ResourceName, SubSpec, SubTarget, Tag,
    Write, WriteKind,
};
use tether_dialects::{Codec, MsgNo, Rejected, Request};
use tether_engine::{Closed, Committing, Engine, Identity, Outbox};
use tungstenite::Message;

/// A client's WebSocket, as the transport hands it over.
pub type Socket = WebSocket<Stream>;

/// Replies kept per connection for `retry` confirmations (seed 001): the last 64, and
/// no more than 1 MiB of them, so a client repeating large queries cannot pin memory.
const KEPT_REPLIES: usize = 64;
const KEPT_REPLY_BYTES: usize = 1 << 20;

/// Writes one connection may have in flight before the next waits for the oldest.
const MAX_WRITES_IN_FLIGHT: usize = 64;

/// How long a connection the server closes waits for the client's close reply...
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// ...and then for the socket to take the last bytes.
const FINAL_FLUSH: Duration = Duration::from_secs(1);

/// Encoded bytes the socket may hold unwritten before the session stops taking from
/// the outbox. Past it, messages wait in the outbox, whose byte bound is what
/// declares a client that does not read a slow consumer.
const SOCKET_HIGH_WATER: usize = 64 * 1024;

/// Per-connection limits the transport enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A text message larger than this gets a `too_large` error; the connection stays.
    pub max_message_bytes: usize,
    /// Messages per second on average (0: no limit) and at once; see
    /// [`crate::transport::rate`].
    pub max_messages_per_sec: u32,
    pub message_burst: u32,
    /// The session pings the client this often...
    pub ping_interval: Duration,
    /// ...and closes the connection (4000) after this long without any frame from the
    /// client, pongs included.
    pub idle_timeout: Duration,
}

pub struct Session {
    id: Arc<str>,
    engine: Engine,
    outbox: Arc<Outbox>,
    socket: Socket,
    codec: Box<dyn Codec>,
    /// The number of the next message to the client, for dialects that count them.
    msg: MsgNo,
    /// The dialect's name and its traffic counters.
    traffic: &'static Traffic,
    /// A text message larger than this gets a `too_large` error.
    max_message_bytes: usize,
    kept: KeptReplies,
    rate: RateLimit,
    /// Who the connection authenticated as; every op is checked against it.
    who: Arc<Identity>,
    /// Writes handed to the committer and not answered yet, oldest first.
    in_flight: InFlightWrites,
}

/// Writes in flight, oldest first; boxed, and only once the connection writes: a
/// connection that only watches never does, and the queue would be part of every idle
/// connection's state.
#[derive(Default)]
#[allow(clippy::box_collection)] // on purpose: 8 bytes inline rather than 32
struct InFlightWrites(Option<Box<VecDeque<InFlight>>>);

impl InFlightWrites {
    fn front_mut(&mut self) -> Option<&mut InFlight> {
        self.0.as_mut()?.front_mut()
    }

    fn pop_front(&mut self) -> Option<InFlight> {
        self.0.as_mut()?.pop_front()
    }

    fn push_back(&mut self, write: InFlight) {
        self.0.get_or_insert_with(Box::default).push_back(write);
    }

    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |writes| writes.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A pipelined write: its request's tag, when it was sent, and its commit.
struct InFlight {
    tag: Tag,
    started: std::time::Instant,
    commit: Committing,
}

/// Who ended the connection, which decides how the close goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The client sent a close frame: answer it and close.
    Client,
    /// The server closes (shutdown, limits, timers): send the close frame and wait,
    /// bounded, for the client's reply.
    Server,
    /// The client broke the protocol: send the close frame and close at once.
    Failed,
}

/// Whether the session goes on after a frame.
enum Flow {
    Continue,
    Close(u16),
}

/// What woke the session.
enum Event {
    Written((InFlight, Result<Reply, Error>)),
    Frame(Option<Result<Message, tungstenite::Error>>),
    /// More in the outbox, or the alarm rang.
    Changed,
}

/// How the session handles a frame.
enum Handling<'a> {
    Done(Flow),
    Await(Pin<Box<dyn Future<Output = Flow> + Send + 'a>>),
    /// The client sent its close frame, or the connection ended.
    ClientClosed,
    /// The client broke the protocol: close with this code at once.
    Broken(u16),
}

/// When the session next has something to do on its own: ping the client, give up on
/// a silent one, or end a connection whose token ran out. One wake-up serves all three,
/// from the engine's shared clock ([`Engine::wake_at`]) rather than a timer in every
/// connection's state.
struct Timers {
    /// The intervals in milliseconds, 0 for never: a `Duration` is four times the size,
    /// in every idle connection's state. (Past 49 days, a setting counts as 49 days.)
    ping_every_ms: u32,
    idle_after_ms: u32,
    next_ping: Instant,
    /// The last frame from the client; the idle timer is only re-armed when it fires,
    /// not per frame, so a busy connection costs nothing here.
    last_seen: Instant,
    expires: Instant,
    /// The wake-up asked for: until then, nothing here is due.
    alarm: Instant,
}

impl Timers {
    fn new(limits: &Limits, token_lifetime: Duration) -> Timers {
        let now = Instant::now();
        let millis = |d: Duration| match d.as_millis() {
            0 if d.is_zero() => 0,
            ms => u32::try_from(ms).unwrap_or(u32::MAX).max(1),
        };
        let mut timers = Timers {
            ping_every_ms: millis(limits.ping_interval),
            idle_after_ms: millis(limits.idle_timeout),
            next_ping: now,
            last_seen: now,
            expires: now + token_lifetime,
            alarm: now,
        };
        timers.next_ping = now + timers.ping_every();
        timers
    }

    fn ping_every(&self) -> Duration {
        forever_if_zero(Duration::from_millis(self.ping_every_ms.into()))
    }

    fn idle_after(&self) -> Duration {
        forever_if_zero(Duration::from_millis(self.idle_after_ms.into()))
    }

    fn next_wake(&self) -> Instant {
        self.next_ping
            .min(self.last_seen + self.idle_after())
            .min(self.expires)
    }
}

/// Runs a connection to its end. [`Engine::go_away`] (shutdown) closes it with 1001.
pub fn run(
    socket: Socket,
    engine: Engine,
    codec: Box<dyn Codec>,
    dialect: &'static str,
    limits: Limits,
) -> impl Future<Output = ()> + Send + 'static {
    let anonymous = Identity::shared_anonymous();
    run_as(socket, engine, codec, dialect, limits, anonymous)
}

/// [`run`] for an authenticated caller: every op is checked against `who`'s access,
/// and the connection closes (4001) when `who`'s token expires.
///
/// The session is set up here, outside the future: the future's size is what every
/// idle connection pays for, and an async fn would keep its arguments beside the
/// session built from them.
pub fn run_as(
    socket: Socket,
    engine: Engine,
    codec: Box<dyn Codec>,
    dialect: &'static str,
    limits: Limits,
    who: Arc<Identity>,
) -> impl Future<Output = ()> + Send + 'static {
    let outbox = engine.new_outbox();
    outbox.set_identity(who.clone());
    let timers = Timers::new(&limits, token_expiry(&who));
    let session = Session {
        id: format!("c-{}", RecordId::generate()).into(),
        engine: engine.clone(),
        outbox: outbox.clone(),
        socket,
        codec,
        msg: MsgNo::default(),
        traffic: crate::telemetry::traffic(dialect),
        max_message_bytes: limits.max_message_bytes,
        kept: KeptReplies::default(),
        rate: RateLimit::new(
            limits.max_messages_per_sec,
            limits.message_burst,
            Instant::now(),
        ),
        who,
        in_flight: InFlightWrites::default(),
    };
    outbox.set_session(&session.id);
    // A fresh random id: no one else can hold it, so this only records the claim.
    let _ = engine.claim_session(&session.who, &session.id);
    session.traffic.connections.increment(1.0);
    tracing::debug!(session = %session.id, dialect, "connected");
    outbox.push(Outbound::Welcome {
        session: session.id.clone(),
        epoch: engine.epoch().clone(),
        position: engine.position(),
    });
    session.serve(timers)
}

impl Session {
    /// The connection's loop, then its close.
    ///
    /// An async block rather than an async fn: an async fn moves its arguments into
    /// the future's locals and keeps both copies, and the session is most of what an
    /// idle connection's future holds.
    #[allow(clippy::manual_async_fn)] // on purpose: see above
    fn serve(mut self, mut timers: Timers) -> impl Future<Output = ()> + Send {
        async move {
            let session = &mut self;
            session.set_alarm(&mut timers);
            let mut ending = Ending::Server;

            let code = loop {
                // What the outbox holds goes to the socket first, unless the socket is backed
                // up: then it waits in the outbox, which counts it against its bound. The
                // outbox also carries shutdown (`GoingAway`), checked here every turn so
                // a flooding client cannot delay it.
                if session.socket.unwritten() < SOCKET_HIGH_WATER {
                    match session.outbox.try_take() {
                        Ok(Some(batch)) => session.send(batch),
                        Ok(None) => {}
                        Err(why) => break closed_code(why),
                    }
                } else if let Some(why) = session.outbox.closing() {
                    break closed_code(why);
                }
                // One wait for all three sources, polled in place rather than through
                // `select!`, whose branch futures and output would all be part of every
                // idle connection's state. The event is handled in a block of its own so
                // that it (a write's reply, a frame, up to 200 bytes) is gone before
                // anything is awaited: only the boxed handling lives past this point,
                // and it too is gone (with its borrow of the session) before the timers.
                let flow = {
                    let handling = {
                        let event = std::future::poll_fn(|cx| session.poll_event(cx)).await;
                        match event {
                            Event::Written(written) => {
                                session.answer_write(written);
                                Handling::Done(Flow::Continue)
                            }
                            Event::Frame(frame) => {
                                timers.last_seen = Instant::now();
                                session.on_frame(frame)
                            }
                            // More in the outbox (taken at the top of the loop), or the
                            // alarm: the timers are checked below, after every event.
                            Event::Changed => Handling::Done(Flow::Continue),
                        }
                    };
                    match handling {
                        Handling::Done(flow) => flow,
                        Handling::Await(handling) => handling.await,
                        Handling::ClientClosed => {
                            ending = Ending::Client;
                            break close_codes::NORMAL;
                        }
                        Handling::Broken(code) => {
                            ending = Ending::Failed;
                            Flow::Close(code)
                        }
                    }
                };
                if let Flow::Close(code) = flow {
                    break code;
                }
                // After the event, so a frame that waited behind a slow request counts
                // as the client being there; after every event, so a busy connection's
                // token still expires.
                if Instant::now() >= timers.alarm {
                    if let Flow::Close(code) = session.on_timer(&mut timers) {
                        break code;
                    }
                }
            };
            if code == close_codes::SLOW_CONSUMER {
                metrics::counter!("tether_slow_consumer_disconnects_total").increment(1);
            }
            // Boxed: the closing steps' timers would otherwise be part of every idle
            // connection's future.
            Box::pin(session.close(code, ending)).await;
        }
    }

    /// Waits for the next thing to do, in order of precedence: a write became durable
    /// (answering is what lets a pipelining client go on), a frame from the client
    /// (before the timers, so one that waited behind a slow request counts), the
    /// outbox changed or the alarm rang.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        if let Some(oldest) = self.in_flight.front_mut() {
            if let Poll::Ready(result) = Pin::new(&mut oldest.commit).poll(cx) {
                let oldest = self
                    .in_flight
                    .pop_front()
                    .expect("the oldest is still queued");
                return Poll::Ready(Event::Written((oldest, result.map(Reply::Written))));
            }
        }
        if let Poll::Ready(frame) = self.socket.poll_next(cx, true) {
            return Poll::Ready(Event::Frame(frame));
        }
        if self.outbox.poll_changed(cx).is_ready() {
            return Poll::Ready(Event::Changed);
        }
        Poll::Pending
    }

    /// What a frame from the client asks for; the handling of a text message is a
    /// future of its own (a subscribe's snapshot read, a write's commit), boxed so it
    /// is allocated per message rather than part of every idle connection's state.
    fn on_frame(&mut self, frame: Option<Result<Message, tungstenite::Error>>) -> Handling<'_> {
        match frame {
            Some(Ok(Message::Text(text))) => {
                self.traffic.messages_in.increment(1);
                self.traffic.bytes_in.increment(text.len() as u64);
                Handling::Await(Box::pin(self.handle_text(text)))
            }
            Some(Ok(Message::Binary(_))) => Handling::Await(Box::pin(async move {
                self.finish_writes().await;
                self.handle_binary()
            })),
            Some(Ok(Message::Ping(_))) => Handling::Done(self.handle_ping()),
            Some(Ok(Message::Pong(_) | Message::Frame(_))) => Handling::Done(Flow::Continue),
            Some(Ok(Message::Close(_))) | None => Handling::ClientClosed,
            Some(Err(e)) => {
                // A broken frame, one past the hard limit, or a failed write: the
                // transport cannot go on, so close with the code that says why.
                tracing::debug!(session = %self.id, error = %e, "websocket error");
                Handling::Broken(close_codes::for_websocket_error(&e))
            }
        }
    }

    /// The alarm is due: end a connection whose token ran out or that went silent, or
    /// ping the client, then ask for the next wake-up (frames since the alarm was set
    /// may have put it off).
    fn on_timer(&mut self, timers: &mut Timers) -> Flow {
        let now = Instant::now();
        if now >= timers.expires {
            return Flow::Close(close_codes::AUTH_EXPIRED);
        }
        if now >= timers.last_seen + timers.idle_after() {
            metrics::counter!("tether_idle_disconnects_total").increment(1);
            return Flow::Close(close_codes::IDLE_TIMEOUT);
        }
        if now >= timers.next_ping {
            // The idle timer expects the pong.
            let _ = self.socket.send(Message::Ping(Default::default()));
            timers.next_ping = now + timers.ping_every();
        }
        self.set_alarm(timers);
        Flow::Continue
    }

    fn set_alarm(&self, timers: &mut Timers) {
        timers.alarm = timers.next_wake();
        self.engine.wake_at(&self.outbox, timers.alarm);
    }

    /// Ends the connection: answers the writes in flight, sends what is queued, then
    /// the close frame (or the reply to the client's), and waits a bounded time for
    /// the client to finish the handshake.
    async fn close(&mut self, code: u16, ending: Ending) {
        // Writes in flight are committed whatever happens; answer them before the close
        // frame, so a client told "going away" knows exactly which of its writes landed.
        self.finish_writes().await;
        self.engine.close(&self.outbox, &self.id);
        while let Ok(Some(batch)) = self.outbox.try_take() {
            self.send(batch);
        }
        match ending {
            Ending::Client => self.socket.flush_protocol(),
            Ending::Server | Ending::Failed => {
                self.socket.close(code, close_codes::reason(code));
            }
        }
        if ending == Ending::Failed {
            // The client broke the protocol (RFC 6455 "fail the connection"): send
            // the close frame and close, without waiting for a reply that may never be
            // framed right. What it already sent is read and dropped last, so the
            // close is a FIN rather than a reset that could destroy the close frame.
            let _ = tokio::time::timeout(FINAL_FLUSH, self.socket.flush()).await;
            self.socket.discard_readable().await;
        } else {
            // Read on, discarding, until the client's close reply or the end of the
            // stream, for a bounded time. A socket dropped with unread data in it is
            // reset, and the reset can destroy the close frame before the client has
            // read it: a client still sending would never learn why (1001, 4008, ...).
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                while let Some(Ok(_)) = self.socket.next().await {}
            })
            .await;
            let _ = tokio::time::timeout(FINAL_FLUSH, self.socket.flush()).await;
        }
        let dialect = self.traffic.dialect;
        self.traffic.connections.decrement(1.0);
        tracing::debug!(session = %self.id, dialect, "disconnected");
    }
}

/// The close code for an outbox that stopped taking messages.
fn closed_code(why: Closed) -> u16 {
    match why {
        Closed::SlowConsumer => close_codes::SLOW_CONSUMER,
        Closed::AccessChanged => close_codes::ACCESS_CHANGED,
        Closed::Gone => close_codes::NORMAL,
        Closed::GoingAway => close_codes::GOING_AWAY,
    }
}

/// Waits for the oldest write in flight. Cancel-safe: it stays queued until done.
async fn next_written(in_flight: &mut InFlightWrites) -> (InFlight, Result<Reply, Error>) {
    let Some(oldest) = in_flight.front_mut() else {
        return std::future::pending().await;
    };
    let result = (&mut oldest.commit).await.map(Reply::Written);
    let oldest = in_flight.pop_front().expect("the oldest is still queued");
    (oldest, result)
}

/// How long `who`'s token stays valid; "forever" for a token without `exp` (only
/// anonymous callers: verified tokens must carry one).
fn token_expiry(who: &Identity) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    match who.expires_at {
        Some(exp) => Duration::from_secs(exp.saturating_sub(now)),
        None => forever_if_zero(Duration::ZERO),
    }
}

/// A zero timeout or interval turns the feature off: ten years stands in for never
/// (`Duration::MAX` would overflow the deadline arithmetic).
fn forever_if_zero(d: Duration) -> Duration {
    if d.is_zero() {
        Duration::from_secs(10 * 365 * 24 * 3600)
    } else {
        d
    }
}

impl Session {
    /// Encodes a batch from the outbox into the socket's outgoing buffer.
    fn send(&mut self, batch: impl Iterator<Item = Outbound>) {
        let mut frames = Vec::new();
        for event in batch {
            self.codec.encode(&event, &mut self.msg, &mut frames);
        }
        self.traffic.messages_out.increment(frames.len() as u64);
        let bytes: usize = frames.iter().map(String::len).sum();
        self.traffic.bytes_out.increment(bytes as u64);
        for frame in &frames {
            // Refused only after a close frame, when nothing more may be sent.
            let _ = self.socket.send_text(frame);
        }
    }

    /// Between the requests of one message: when they have filled half the outbox,
    /// move it into the socket (writing what the socket takes now), so a message of
    /// many requests is not mistaken for a slow consumer. A client that reads nothing
    /// still is one, once the socket holds more than the outbox's bound.
    fn spill(&mut self) -> Flow {
        let limit = self.outbox.max_bytes();
        if self.outbox.queued_bytes() <= limit / 2 {
            return Flow::Continue;
        }
        match self.outbox.try_take() {
            Ok(Some(batch)) => self.send(batch),
            Ok(None) | Err(Closed::Gone | Closed::GoingAway) => {}
            Err(why) => return Flow::Close(closed_code(why)),
        }
        let _ = self.socket.flush().now_or_never();
        if self.socket.unwritten() > limit {
            return Flow::Close(close_codes::SLOW_CONSUMER);
        }
        Flow::Continue
    }

    async fn handle_text(&mut self, text: tungstenite::Utf8Bytes) -> Flow {
        let text = text.as_str();
        let verdict = self.rate.take(Instant::now());
        if verdict == Verdict::Close {
            metrics::counter!("tether_rate_limit_disconnects_total").increment(1);
            return Flow::Close(close_codes::RATE_LIMITED);
        }
        if text.len() > self.max_message_bytes {
            self.finish_writes().await;
            let error = Error::new(
                ErrorCode::TooLarge,
                format!(
                    "message is {} bytes; the limit is {}",
                    text.len(),
                    self.max_message_bytes
                ),
            );
            self.reject(Tag::Null, error);
            return Flow::Continue;
        }
        // Refused messages are still decoded, so each error carries the request's
        // tag in the dialect's own form, exactly as any other rejected request.
        let requests = self.codec.decode(text);
        // Checked writes read before they write, so only unchecked ones pipeline.
        let pipeline = self.engine.access().is_open();
        for request in requests {
            let request = match request {
                Ok(Request {
                    tag,
                    op: Op::Write(write),
                }) if pipeline && verdict != Verdict::Refuse => {
                    self.begin_write(tag, write).await;
                    continue;
                }
                other => other,
            };
            // Everything else is answered after the writes before it.
            self.finish_writes().await;
            match request {
                Ok(Request { tag, .. }) if verdict == Verdict::Refuse => {
                    self.reject(tag, self.rate_error());
                }
                Ok(Request { tag, op }) => self.execute(tag, op).await,
                Err(Rejected { tag, error }) => self.reject(tag, error),
            }
            if let Flow::Close(code) = self.spill() {
                return Flow::Close(code);
            }
        }
        Flow::Continue
    }

    /// Hands a write to the committer without waiting for it to be durable.
    async fn begin_write(&mut self, tag: Tag, write: Write) {
        if self.in_flight.len() >= MAX_WRITES_IN_FLIGHT {
            let oldest = next_written(&mut self.in_flight).await;
            self.answer_write(oldest);
        }
        let started = std::time::Instant::now();
        match self.engine.begin_write(write).await {
            Ok(commit) => self.in_flight.push_back(InFlight {
                tag,
                started,
                commit,
            }),
            Err(e) => {
                self.finish_writes().await;
                self.reply(tag, Err(e));
            }
        }
    }

    fn answer_write(&mut self, (write, result): (InFlight, Result<Reply, Error>)) {
        crate::telemetry::write_seconds().record(write.started.elapsed().as_secs_f64());
        self.reply(write.tag, result);
    }

    /// Answers every write in flight, in order: whatever comes next is answered after
    /// them and sees them.
    async fn finish_writes(&mut self) {
        while !self.in_flight.is_empty() {
            let written = next_written(&mut self.in_flight).await;
            self.answer_write(written);
        }
    }

    fn handle_binary(&mut self) -> Flow {
        match self.rate.take(Instant::now()) {
            Verdict::Close => {
                metrics::counter!("tether_rate_limit_disconnects_total").increment(1);
                Flow::Close(close_codes::RATE_LIMITED)
            }
            Verdict::Refuse => {
                self.reject(Tag::Null, self.rate_error());
                Flow::Continue
            }
            Verdict::Allow => {
                self.reject(
                    Tag::Null,
                    Error::bad_request("binary frames are not supported; send JSON in text frames"),
                );
                Flow::Continue
            }
        }
    }

    /// The WebSocket layer has already queued the pong; a ping only counts towards
    /// the rate, so a ping flood ends like any other.
    fn handle_ping(&mut self) -> Flow {
        if self.rate.take(Instant::now()) == Verdict::Close {
            metrics::counter!("tether_rate_limit_disconnects_total").increment(1);
            return Flow::Close(close_codes::RATE_LIMITED);
        }
        Flow::Continue
    }

    fn rate_error(&self) -> Error {
        metrics::counter!("tether_rate_limited_total").increment(1);
        let (per_sec, burst) = self.rate.describe();
        Error::new(
            ErrorCode::LimitExceeded,
            format!(
                "rate limit: at most {per_sec} messages per second ({burst} at once); this one was not executed. Slow down: sending {burst} more while refused closes the connection (4029)"
            ),
        )
    }

    fn reject(&self, tag: Tag, error: Error) {
        metrics::counter!("tether_errors_total", "code" => error.code.as_str()).increment(1);
        self.outbox.push(Outbound::Reply {
            tag,
            result: Err(error),
        });
    }

    fn reply(&mut self, tag: Tag, result: Result<Reply, Error>) {
        if let Err(e) = &result {
            metrics::counter!("tether_errors_total", "code" => e.code.as_str()).increment(1);
        }
        let message = Outbound::Reply {
            tag: tag.clone(),
            result,
        };
        if !tag.is_null() {
            self.kept.keep(tag, &message);
        }
        self.outbox.push(message);
    }

    async fn execute(&mut self, tag: Tag, op: Op) {
        let engine = self.engine.clone();
        let result = match op {
            Op::Get { resource, id } => engine
                .get_as(&self.who, &resource, &id)
                .await
                .map(Reply::Record),
            Op::Query { resource, query } => engine
                .query_as(&self.who, &resource, &query)
                .await
                .map(Reply::Records),
            Op::Write(write) => {
                let started = std::time::Instant::now();
                let result = engine.write_as(&self.who, write).await.map(Reply::Written);
                crate::telemetry::write_seconds().record(started.elapsed().as_secs_f64());
                result
            }
            Op::Subscribe { sub, spec, since } => {
                // The snapshot (or resume marker) is the reply; only failures answer here.
                match engine
                    .subscribe(&self.outbox, &sub, spec, since, Some(tag.clone()))
                    .await
                {
                    Ok(()) => return,
                    Err(e) => Err(e),
                }
            }
            Op::Unsubscribe { sub } => {
                if engine.unsubscribe(&self.outbox, &sub) {
                    Ok(Reply::Released(vec![sub.into()]))
                } else {
                    Err(Error::new(
                        ErrorCode::UnknownSubscription,
                        format!("no subscription {sub:?} on this connection"),
                    ))
                }
            }
            Op::Flush { resource, id } => Ok(Reply::Released(engine.flush(
                &self.outbox,
                &resource,
                id.as_ref(),
            ))),
            Op::Resume {
                session,
                since,
                subs,
            } => self.resume(session, since, subs).await,
            Op::Publish { topic, data } => engine
                .publish_as(&self.who, &topic, data, tether_core::Audience::default())
                .await
                .map(|()| Reply::Ok),
            Op::Confirm { kind, of } => return self.confirm(kind, of),
            Op::Presence { room, join, user } => {
                if room.is_empty() || room.len() > 256 {
                    Err(Error::bad_request("a room name must be 1-256 bytes"))
                } else if join {
                    self.join(&room, user).await
                } else if engine.presence().leave(&self.outbox, &room) {
                    Ok(Reply::Ok)
                } else {
                    Err(Error::bad_request(format!(
                        "this connection is not in room {room:?}"
                    )))
                }
            }
            Op::Relay { room, data } => self.relay(room, data),
            Op::Open {
                resource,
                id,
                create,
                sub,
                room,
                user,
            } => self.open(&tag, resource, id, create, sub, room, user).await,
            Op::Ping => Ok(Reply::Ok),
        };
        self.reply(tag, result);
    }

    /// Sends `data` to the other connections in `room`, as the user this connection
    /// joined it as, on every node.
    fn relay(&self, room: String, data: serde_json::Value) -> Result<Reply, Error> {
        let presence = self.engine.presence();
        let Some(from) = presence.user_in(&room, &self.outbox) else {
            return Err(Error::bad_request(format!(
                "this connection is not in room {room:?}; join it first"
            )));
        };
        presence.relay(&room, &self.outbox, &from, Arc::new(data));
        Ok(Reply::Ok)
    }

    /// `Op::Open`: create or check the record, then watch it and join its room. The
    /// check comes first so a failed open changes nothing; a subscription of the same
    /// name is replaced, so opening the same record again refreshes it in place.
    #[allow(clippy::too_many_arguments)]
    async fn open(
        &mut self,
        tag: &Tag,
        resource: ResourceName,
        id: RecordId,
        create: Option<tether_core::Data>,
        sub: String,
        room: String,
        user: Option<String>,
    ) -> Result<Reply, Error> {
        if room.is_empty() || room.len() > 256 {
            return Err(Error::bad_request("a room name must be 1-256 bytes"));
        }
        match create {
            Some(data) => {
                let write =
                    Write::new(WriteKind::Create, resource.clone(), id.clone(), data, None)?;
                self.engine.write_as(&self.who, write).await?;
            }
            None => {
                if self
                    .engine
                    .get_as(&self.who, &resource, &id)
                    .await?
                    .is_none()
                {
                    return Err(Error::not_found(resource.as_str(), id.as_str()));
                }
            }
        }
        self.engine.unsubscribe(&self.outbox, &sub);
        let spec = SubSpec {
            target: SubTarget::Record { resource, id },
        };
        self.engine
            .subscribe(&self.outbox, &sub, spec, None, Some(tag.clone()))
            .await?;
        self.join(&room, user).await
    }

    /// Joins a presence room, if the access rules let this caller in (a record's room
    /// needs read access to the record). With auth on, a caller appears under its
    /// token's subject: naming another user is refused, so presence cannot be forged.
    async fn join(&mut self, room: &str, user: Option<String>) -> Result<Reply, Error> {
        self.engine.check_join(&self.who, room).await?;
        let user = match (&self.who.subject, user) {
            (_, user) if self.engine.access().is_open() => user,
            (Some(subject), Some(user)) if *user != **subject => {
                return Err(tether_engine::access::forbidden(format!(
                    "you are {subject:?}; you cannot join as {user:?}"
                )))
            }
            (Some(subject), _) => Some(subject.to_string()),
            // An anonymous caller has no name to prove, so it appears as its session.
            (None, _) => None,
        };
        let user = user.unwrap_or_else(|| self.id.to_string());
        Ok(Reply::Members(self.engine.presence().join(
            &self.outbox,
            room,
            &user,
        )))
    }

    /// Takes over `session`: the connection adopts its id, and each subscription is
    /// restored from its position (or the resume's default position).
    async fn resume(
        &mut self,
        session: String,
        since: Option<tether_core::Since>,
        subs: Option<Vec<tether_core::ResumeSub>>,
    ) -> Result<Reply, Error> {
        if session.is_empty() || session.len() > 128 {
            return Err(Error::bad_request("field \"session\" must be 1-128 bytes"));
        }
        // With auth on, only the session's own subject may take it over.
        self.engine.claim_session(&self.who, &session)?;
        let subs: Vec<(String, SubSpec, Option<tether_core::Since>)> = match subs {
            Some(subs) => subs
                .into_iter()
                .map(|s| (s.sub, s.spec, s.since.or_else(|| since.clone())))
                .collect(),
            None => self
                .engine
                .recall_as(&self.who, &session)
                .unwrap_or_default()
                .into_iter()
                .map(|(name, spec)| (name.to_string(), (*spec).clone(), since.clone()))
                .collect(),
        };
        if *self.id != *session {
            self.engine.release_session(&self.id);
        }
        self.id = session.into();
        self.outbox.set_session(&self.id);
        let mut restored = Vec::new();
        for (name, spec, since) in subs {
            // A name already in use on this connection was restored by an earlier resume.
            self.engine
                .subscribe(&self.outbox, &name, spec, since, None)
                .await?;
            restored.push(name.into());
        }
        Ok(Reply::Session {
            session: self.id.clone(),
            subs: restored,
        })
    }

    fn confirm(&mut self, kind: ConfirmKind, of: Tag) {
        match kind {
            ConfirmKind::Retry => match self.kept.get(&of) {
                Some(message) => {
                    self.outbox.push(message);
                }
                None => self.reject(
                    of.clone(),
                    Error::new(
                        ErrorCode::NotFound,
                        format!("no recent reply to request {of} to send again"),
                    ),
                ),
            },
            // done and abort release the kept reply. An aborted write stays committed:
            // committed data is never silently undone; write again to change it.
            ConfirmKind::Done | ConfirmKind::Abort => self.kept.release(&of),
        }
    }
}

/// Replies kept for `retry` confirmations (seed 001), each with its approximate size,
/// oldest first. Boxed, and only once a reply is kept: most connections never keep
/// one, and the queue would be part of every idle connection's state.
#[derive(Default)]
struct KeptReplies(Option<Box<Kept>>);

#[derive(Default)]
struct Kept {
    replies: VecDeque<(Tag, Outbound, usize)>,
    /// The sum of the sizes.
    bytes: usize,
}

impl KeptReplies {
    /// Keeps `message`, the reply to `tag`, dropping the oldest past the bounds.
    fn keep(&mut self, tag: Tag, message: &Outbound) {
        let size = tether_engine::outbox::approx_size(message);
        if size > KEPT_REPLY_BYTES {
            return;
        }
        let kept = self.0.get_or_insert_with(Box::default);
        while kept.replies.len() == KEPT_REPLIES || kept.bytes + size > KEPT_REPLY_BYTES {
            let Some((_, _, dropped)) = kept.replies.pop_front() else {
                break;
            };
            kept.bytes -= dropped;
        }
        kept.bytes += size;
        kept.replies.push_back((tag, message.clone(), size));
    }

    /// The reply kept for `tag`, to send again.
    fn get(&self, tag: &Tag) -> Option<Outbound> {
        let kept = self.0.as_ref()?;
        kept.replies
            .iter()
            .find(|(t, _, _)| t == tag)
            .map(|(_, message, _)| message.clone())
    }

    /// Forgets the reply kept for `tag`, if any.
    fn release(&mut self, tag: &Tag) {
        let Some(kept) = &mut self.0 else {
            return;
        };
        if let Some(at) = kept.replies.iter().position(|(t, _, _)| t == tag) {
            if let Some((_, _, size)) = kept.replies.remove(at) {
                kept.bytes -= size;
            }
        }
        if kept.replies.is_empty() {
            self.0 = None;
        }
    }
}
