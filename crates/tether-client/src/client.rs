//! The public handle: typed requests, subscriptions, connection status.
//!
//! A [`Client`] is a cheap-clone handle to one connection task (see `driver.rs`).
//! Requests made while the connection is down wait for it (up to the request timeout);
//! subscriptions live on the client, not the socket, and survive reconnects.

use crate::driver::{Command, Driver, EventSender, Kind, Shared};
use crate::error::{ClientError, Result};
use crate::store::LocalStore;
use crate::types::{to_data, Data, Event, Query, Record, Target, Write, Written};
use futures_util::Stream;
use serde::Serialize;
use serde_json::Value;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

/// Reconnect backoff: the first retry waits about `initial`, each next one `factor`
/// times longer up to `max`; `jitter` is the random fraction taken off each delay.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub factor: f64,
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(10),
            factor: 2.0,
            jitter: 0.5,
        }
    }
}

/// Client settings; see [`ClientBuilder`] for what each does.
#[derive(Debug, Clone)]
pub struct Options {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// `None`: stay closed when the connection drops.
    pub reconnect: Option<Backoff>,
    /// WebSocket ping period; `None` turns keep-alive off.
    pub keepalive: Option<Duration>,
    pub local_store: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            reconnect: Some(Backoff::default()),
            keepalive: Some(Duration::from_secs(20)),
            local_store: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    Connecting,
    /// Connected and welcomed: requests flow.
    Ready,
    /// The connection dropped; requests wait for the next one.
    Reconnecting,
    /// Closed for good.
    Closed,
}

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: ConnectionState,
    /// The session id, kept across reconnects through `resume`.
    pub session: Option<String>,
    /// The store's change-log identity, from the latest welcome.
    pub epoch: Option<String>,
}

/// Things that happen to the connection, for logging and tests.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// Connected and welcomed; `resumed` when an earlier session was taken over.
    Connected { session: String, resumed: bool },
    /// The connection dropped (`code` is the close code, if the server sent one).
    Disconnected { code: Option<u16>, reason: String },
    /// The next attempt waits `delay`.
    Reconnecting { attempt: u32, delay: Duration },
    /// A message number was skipped; the client reconnects and resumes.
    Gap { expected: u64, received: u64 },
    /// The server could not resume a subscription exactly and sent its whole state.
    Resynced { sub: String, reason: String },
    /// Someone joined or left a room this client is in.
    Presence {
        room: String,
        user: String,
        joined: bool,
        members: Vec<String>,
    },
    /// A server error that answers no request, or a malformed server message.
    Error(ClientError),
}

/// Configures and opens a [`Client`].
#[derive(Clone)]
pub struct ClientBuilder {
    url: String,
    options: Options,
    token: Option<String>,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself: builders end up in logs.
        f.debug_struct("ClientBuilder")
            .field("url", &self.url)
            .field("options", &self.options)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl ClientBuilder {
    /// How long a request waits for its answer, including time spent waiting for a
    /// connection (default 10 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.options.request_timeout = timeout;
        self
    }

    /// How long one connection attempt may take to be welcomed (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    /// Reconnect with this backoff (the default: 250 ms doubling to 10 s, 50% jitter).
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.options.reconnect = Some(backoff);
        self
    }

    /// Stay closed when the connection drops: requests and subscriptions fail.
    pub fn no_reconnect(mut self) -> Self {
        self.options.reconnect = None;
        self
    }

    /// Ping period for detecting a dead connection (default 20 s; `None`: off).
    pub fn keepalive(mut self, period: Option<Duration>) -> Self {
        self.options.keepalive = period;
        self
    }

    /// Sends `Authorization: Bearer <token>` with every connection attempt (for a
    /// server with auth on; an open server ignores it). Replace it later with
    /// [`Client::set_token`].
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Keep the records subscriptions hold: [`Client::store`], [`Subscription::records`]
    /// and full records in [`Event::Patch`] (default off: a client that only streams
    /// changes should not hold a copy of every record).
    pub fn local_store(mut self, on: bool) -> Self {
        self.options.local_store = on;
        self
    }

    /// Connects and waits for the server's welcome. Fails if this first attempt fails;
    /// after that the client reconnects by itself.
    pub async fn connect(self) -> Result<Client> {
        let url = normalize_url(&self.url)?;
        let (cmds, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            status: watch::channel(Status {
                state: ConnectionState::Connecting,
                session: None,
                epoch: None,
            })
            .0,
            events: broadcast::channel(256).0,
            store: self.options.local_store.then(LocalStore::new),
            token: std::sync::Mutex::new(self.token.clone()),
        });
        let (first, first_rx) = oneshot::channel();
        let driver = Driver::new(url, self.options.clone(), rx, shared.clone());
        tokio::spawn(driver.run(first));
        first_rx.await.map_err(|_| ClientError::Closed)??;
        Ok(Client {
            inner: Arc::new(Inner {
                cmds,
                shared,
                options: self.options,
                next_sub: AtomicU64::new(1),
            }),
        })
    }
}

/// A client of Tether's canonical protocol. Clones share one connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cmds: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    options: Options,
    next_sub: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects with the default options. `url` is `ws://host:port/ws`; an `http://`
    /// URL or one without a path is taken to mean the server's `/ws`.
    pub async fn connect(url: &str) -> Result<Client> {
        Client::builder(url).connect().await
    }

    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.to_owned(),
            options: Options::default(),
            token: None,
        }
    }

    pub fn status(&self) -> Status {
        self.inner.shared.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch_status(&self) -> watch::Receiver<Status> {
        self.inner.shared.status.subscribe()
    }

    /// Connection events from now on (a lagging receiver skips the oldest).
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.inner.shared.events.subscribe()
    }

    /// Replaces the bearer token for the next connection attempts: a refreshed token
    /// before the old one expires (the server closes a connection whose token expired
    /// with 4001, and the client reconnects with whatever token it has then).
    pub fn set_token(&self, token: Option<String>) {
        *self
            .inner
            .shared
            .token
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// The local store, when turned on with [`ClientBuilder::local_store`].
    pub fn store(&self) -> Option<LocalStore> {
        self.inner.shared.store.clone()
    }

    /// Closes the connection for good; waiting requests fail with `Closed` and
    /// subscription streams end.
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.inner.cmds.send(Command::Close { done }).is_ok() {
            let _ = wait.await;
        }
    }

    /// Sends any canonical request and returns the `result` message: the escape hatch
    /// for what the typed methods do not cover. `retry_safe` requests are sent again
    /// after a reconnect; others fail with `ConnectionLost` if the connection drops
    /// under them.
    pub async fn request(&self, body: Data, retry_safe: bool) -> Result<Value> {
        let op = body
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("request")
            .to_owned();
        let kind = if retry_safe { Kind::Read } else { Kind::Write };
        let (reply, answer) = oneshot::channel();
        self.inner
            .cmds
            .send(Command::Request { body, kind, reply })
            .map_err(|_| ClientError::Closed)?;
        let after = self.inner.options.request_timeout;
        match tokio::time::timeout(after, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout { op, after }),
        }
    }

    // ---- reads --------------------------------------------------------------------

    /// The record, or `None` when there is none.
    pub async fn get(&self, resource: &str, id: &str) -> Result<Option<Record>> {
        let body = body(&[
            ("type", "get".into()),
            ("resource", resource.into()),
            ("id", id.into()),
        ]);
        let m = self.request(body, true).await?;
        if m["record"].is_null() {
            return Ok(None);
        }
        parse(&m["record"], "record").map(Some)
    }

    /// Every record of a resource, ordered by id (at most 10,000).
    pub async fn all(&self, resource: &str) -> Result<Vec<Record>> {
        let body = body(&[("type", "all".into()), ("resource", resource.into())]);
        let m = self.request(body, true).await?;
        parse(&m["records"], "records")
    }

    /// Records matching the query.
    pub async fn query(&self, resource: &str, query: &Query) -> Result<Vec<Record>> {
        let mut body = body(&[("type", "query".into()), ("resource", resource.into())]);
        query.write_into(&mut body);
        let m = self.request(body, true).await?;
        parse(&m["records"], "records")
    }

    /// A round trip to the server.
    pub async fn ping(&self) -> Result<()> {
        self.request(body(&[("type", "ping".into())]), true).await?;
        Ok(())
    }

    // ---- writes -------------------------------------------------------------------

    /// Sends a write; answers once it is durable.
    pub async fn write(&self, write: Write) -> Result<Written> {
        if write.kind != crate::WriteKind::Create && write.id.is_none() {
            return Err(ClientError::Invalid(format!(
                "a {} needs an id",
                write.kind.as_str()
            )));
        }
        let m = self.request(write.body(), false).await?;
        let record = if m["record"].is_null() {
            None
        } else {
            Some(parse(&m["record"], "record")?)
        };
        Ok(Written {
            resource: m["resource"].as_str().unwrap_or_default().to_owned(),
            id: m["id"].as_str().unwrap_or_default().to_owned(),
            version: m["version"].as_u64().unwrap_or_default(),
            pos: m["pos"].as_u64().unwrap_or_default(),
            record,
        })
    }

    /// Creates a record (the server makes an id when `id` is `None`). Fails with
    /// `already_exists` if the id is taken, so a retried create never duplicates.
    pub async fn create(
        &self,
        resource: &str,
        id: Option<&str>,
        data: impl Serialize,
    ) -> Result<Written> {
        let mut write = Write::create(resource, to_data(data)?);
        write.id = id.map(str::to_owned);
        self.write(write).await
    }

    /// Replaces an existing record; `not_found` if there is none.
    pub async fn update(&self, resource: &str, id: &str, data: impl Serialize) -> Result<Written> {
        self.write(Write::update(resource, id, to_data(data)?))
            .await
    }

    /// Creates or replaces.
    pub async fn upsert(&self, resource: &str, id: &str, data: impl Serialize) -> Result<Written> {
        self.write(Write::upsert(resource, id, to_data(data)?))
            .await
    }

    /// Applies an RFC 7396 merge patch (`null` removes a field); `not_found` if there
    /// is no record.
    pub async fn patch(&self, resource: &str, id: &str, patch: impl Serialize) -> Result<Written> {
        self.write(Write::patch(resource, id, to_data(patch)?))
            .await
    }

    /// Deletes a record; `not_found` if there is none.
    pub async fn delete(&self, resource: &str, id: &str) -> Result<Written> {
        self.write(Write::delete(resource, id)).await
    }

    /// Sends an ephemeral message to a topic's subscribers.
    pub async fn publish(&self, topic: &str, data: impl Serialize) -> Result<()> {
        let data = serde_json::to_value(data)
            .map_err(|e| ClientError::Invalid(format!("message data does not serialize: {e}")))?;
        let body = body(&[
            ("type", "publish".into()),
            ("topic", topic.into()),
            ("data", data),
        ]);
        self.request(body, false).await?;
        Ok(())
    }

    // ---- presence -----------------------------------------------------------------

    /// Joins a room as `user` (default: the session id) and returns its members. The
    /// client rejoins after every reconnect; changes arrive as
    /// [`ConnectionEvent::Presence`].
    pub async fn join(&self, room: &str, user: Option<&str>) -> Result<Vec<String>> {
        let mut b = body(&[("type", "join".into()), ("room", room.into())]);
        if let Some(user) = user {
            b.insert("user".into(), user.into());
        }
        let m = self.request(b, true).await?;
        parse(&m["members"], "members")
    }

    pub async fn leave(&self, room: &str) -> Result<()> {
        let b = body(&[("type", "leave".into()), ("room", room.into())]);
        self.request(b, true).await?;
        Ok(())
    }

    // ---- subscriptions ------------------------------------------------------------

    /// Watches a record, a query, a resource or a topic. Resolves once the server sent
    /// the initial snapshot, which is also the stream's first event. The subscription
    /// lives until it is dropped, across reconnects.
    pub async fn subscribe(&self, target: Target) -> Result<Subscription> {
        let n = self.inner.next_sub.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = format!("c{n}").into();
        let (events, rx): (EventSender, _) = mpsc::unbounded_channel();
        let (ready, ready_rx) = oneshot::channel();
        self.inner
            .cmds
            .send(Command::Subscribe {
                name: name.clone(),
                target: target.clone(),
                events,
                ready,
            })
            .map_err(|_| ClientError::Closed)?;
        // Made before waiting, so a timeout drops it and so unsubscribes.
        let subscription = Subscription {
            name,
            target,
            events: rx,
            cmds: self.inner.cmds.clone(),
            store: self.inner.shared.store.clone(),
        };
        let after = self.inner.options.request_timeout;
        match tokio::time::timeout(after, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(subscription),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => Err(ClientError::Timeout {
                op: "subscribe".into(),
                after,
            }),
        }
    }
}

/// A live subscription: a [`Stream`] of [`Event`]s in change-log order, starting with
/// the snapshot. Dropping it unsubscribes.
///
/// Events queue without bound until read, so read the stream (or drop it); the server
/// side stays protected either way, since the client always drains the socket.
pub struct Subscription {
    name: Arc<str>,
    target: Target,
    events: mpsc::UnboundedReceiver<Result<Event>>,
    cmds: mpsc::UnboundedSender<Command>,
    store: Option<LocalStore>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The subscription's name on the wire (`c1`, `c2`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The records this subscription holds now, ordered by id; `None` unless the
    /// local store is on.
    pub fn records(&self) -> Option<Vec<Record>> {
        self.store.as_ref().map(|s| s.sub_records(&self.name))
    }

    /// Stops the subscription (the same as dropping it).
    pub fn unsubscribe(self) {}
}

impl Stream for Subscription {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.events.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // The connection task may be gone already; then there is nothing to undo.
        let _ = self.cmds.send(Command::Unsubscribe {
            name: self.name.clone(),
        });
    }
}

fn body(fields: &[(&str, Value)]) -> Data {
    fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn parse<T: serde::de::DeserializeOwned>(v: &Value, what: &str) -> Result<T> {
    T::deserialize(v).map_err(|e| ClientError::Protocol(format!("the server's {what}: {e}")))
}

/// `ws://host:port/ws`; `http(s)://` becomes `ws(s)://`, a bare `host:port` gets
/// `ws://`, and an empty path means `/ws`.
pub fn normalize_url(url: &str) -> Result<String> {
    let url = url.trim();
    let (scheme, rest) = match url.split_once("://") {
        Some(("ws" | "http", rest)) => ("ws", rest),
        Some(("wss" | "https", rest)) => ("wss", rest),
        Some((other, _)) => {
            return Err(ClientError::Invalid(format!(
                "{url:?}: expected a ws:// or http:// URL, not {other}://"
            )))
        }
        None => ("ws", url),
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(ClientError::Invalid(format!(
            "{url:?}: the URL has no host"
        )));
    }
    let (host, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, ""),
    };
    let path = if path.is_empty() || path == "/" {
        "/ws"
    } else {
        path
    };
    Ok(format!("{scheme}://{host}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalized_to_the_canonical_endpoint() {
        let n = |u: &str| normalize_url(u).unwrap();
        assert_eq!(n("ws://127.0.0.1:7070/ws"), "ws://127.0.0.1:7070/ws");
        assert_eq!(n("http://localhost:7070"), "ws://localhost:7070/ws");
        assert_eq!(n("https://db.example/"), "wss://db.example/ws");
        assert_eq!(n("127.0.0.1:7070"), "ws://127.0.0.1:7070/ws");
        assert_eq!(n("ws://h:1/other?x=1"), "ws://h:1/other?x=1");
        assert!(normalize_url("ftp://h").is_err());
        assert!(normalize_url("http://").is_err());
    }
}
