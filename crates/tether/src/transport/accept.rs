//! The accept loop: Tether's own, rather than `axum::serve`, because the transport must
//! enforce limits `axum::serve` has no hook for.
//!
//! - Connection limits, total and per client IP. A connection past a limit is still
//!   accepted and read, so the client gets a real HTTP answer (503 when the server is
//!   full, 429 when its address holds too many) instead of a reset it cannot tell from a
//!   network fault. Every connection counts, HTTP keep-alive ones too: they hold a file
//!   descriptor like any WebSocket.
//! - A handshake timeout: the request head (the WebSocket upgrade, or any HTTP request,
//!   including the next one on an idle keep-alive connection) must arrive within it.
//!   Without it a client that connects and sends nothing holds a descriptor forever.
//! - Accept errors. Running out of descriptors (`EMFILE`/`ENFILE`) or kernel memory
//!   fails `accept` while the pending connection stays queued, so retrying at once
//!   would spin a core. The loop backs off (doubling up to a second) and resumes as
//!   soon as an accept succeeds again; nothing else stops.
//! - Draining on shutdown: stop accepting, let HTTP exchanges in flight finish, and
//!   wait (bounded) until every connection, WebSocket sessions included, has gone.
//!
//! [`serve_io`] serves one already-accepted stream of any type, so a TLS layer or a
//! fuzz target can feed it something other than a plain TCP stream.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

/// How long shutdown waits for connections to finish before giving up on them.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// Shortest and longest pause after an accept error other than a per-connection one.
const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Counts open connections, in total and per client address, against their limits.
#[derive(Debug)]
pub struct Gate {
    max_total: usize,
    /// 0: no per-address limit.
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Woken whenever a connection ends, for [`Gate::drained`].
    released: Notify,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `max_total` connections.
    Full,
    /// This client address holds `max_per_ip` connections.
    PerIp,
}

/// One admitted connection. Dropping the last clone releases its place: the accept
/// task holds one, and a WebSocket session holds one for as long as it runs.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<Gate>,
    ip: IpAddr,
}

/// The slot of the connection a request came in on, in the request's extensions.
#[derive(Debug, Clone)]
pub struct ConnSlot(pub Arc<Slot>);

impl Gate {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Gate> {
        Arc::new(Gate {
            max_total: max_total.max(1),
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            released: Notify::new(),
        })
    }

    pub fn max_total(&self) -> usize {
        self.max_total
    }

    pub fn max_per_ip(&self) -> usize {
        self.max_per_ip
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    fn per_ip(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // The map is consistent after every critical section; a panic elsewhere
        // cannot leave it half-updated.
        self.per_ip.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip`, or says which limit it would break.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut per_ip = self.per_ip();
        let here = per_ip.get(&ip).copied().unwrap_or(0);
        if self.max_per_ip > 0 && here >= self.max_per_ip {
            return Err(Refusal::PerIp);
        }
        // Checked and counted under the map's lock, so two connections cannot both
        // take the last place.
        if self.total.load(Ordering::Acquire) >= self.max_total {
            return Err(Refusal::Full);
        }
        self.total.fetch_add(1, Ordering::AcqRel);
        per_ip.insert(ip, here + 1);
        Ok(Slot {
            gate: self.clone(),
            ip,
        })
    }

    /// Resolves once no connection is open.
    pub async fn drained(&self) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before the check so a release in between is not missed.
            released.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            released.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_ip = self.gate.per_ip();
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
        self.gate.total.fetch_sub(1, Ordering::AcqRel);
        drop(per_ip);
        self.gate.released.notify_waiters();
    }
}

/// The transport settings the accept loop applies to every connection.
#[derive(Debug, Clone, Copy)]
pub struct AcceptOptions {
    /// The request head must arrive within this (see the module docs).
    pub handshake_timeout: Duration,
}

/// Accepts connections until `shutdown` turns true, then drains them.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    gate: Arc<Gate>,
    options: AcceptOptions,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut backoff = BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                backoff = BACKOFF_MIN;
                // Pushes are small and latency matters more than packet count; the
                // writer already batches frames per wake-up.
                let _ = tcp.set_nodelay(true);
                let admitted = gate.admit(peer.ip());
                let (router, stop) = (router.clone(), shutdown.clone());
                match &tls {
                    None => tokio::spawn(serve_io(tcp, peer, admitted, router, options, stop)),
                    Some(tls) => tokio::spawn(super::tls::serve_tls(
                        tls.clone(),
                        tcp,
                        peer,
                        admitted,
                        router,
                        options,
                        stop,
                    )),
                };
            }
            // The client gave up before we took its connection: nothing to wait for.
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                metrics::counter!("tether_accept_errors_total").increment(1);
                if backoff == BACKOFF_MIN {
                    tracing::warn!(
                        error = %e,
                        open = gate.open(),
                        "accept failed (out of file descriptors?); backing off, existing connections are unaffected"
                    );
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|stop| *stop) => break,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    drop(listener);
    // Sessions see the same shutdown signal and close with 1001; HTTP exchanges in
    // flight finish. Wait for both, but not forever: a client that never reads must
    // not hold the process up.
    let _ = tokio::time::timeout(DRAIN_LIMIT, gate.drained()).await;
    Ok(())
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves one connection: HTTP/1.1 with upgrades when admitted, otherwise an HTTP
/// refusal. Returns when the connection ends (or, for a WebSocket, is handed over).
pub async fn serve_io<I>(
    io: I,
    peer: SocketAddr,
    admitted: Result<Slot, Refusal>,
    router: Router,
    options: AcceptOptions,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    // Zero turns the timeout off.
    let timeout = Some(options.handshake_timeout).filter(|t| !t.is_zero());
    http.timer(TokioTimer::new()).header_read_timeout(timeout);
    let io = TokioIo::new(io);
    match admitted {
        Ok(slot) => {
            let slot = ConnSlot(Arc::new(slot));
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(slot.clone());
                router.clone().oneshot(request)
            });
            let conn = http.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = shutdown.wait_for(|stop| *stop) => {}
            }
            // Finish the exchange in flight, then close; an upgraded connection has
            // already left this future and closes through its session.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        Err(refusal) => {
            let (status, reason, metric) = match refusal {
                Refusal::Full => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the server is at its connection limit (--max-connections); retry later",
                    "full",
                ),
                Refusal::PerIp => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many connections from your address (--max-connections-per-ip); close some first",
                    "per_ip",
                ),
            };
            metrics::counter!("tether_connections_refused_total", "reason" => metric).increment(1);
            tracing::debug!(%peer, reason, "connection refused");
            http.keep_alive(false);
            let service = hyper::service::service_fn(move |_request: Request<Incoming>| {
                std::future::ready(Ok::<_, Infallible>(refusal_response(status, reason)))
            });
            let _ = http.serve_connection(io, service).await;
        }
    }
}

fn refusal_response(status: StatusCode, reason: &'static str) -> Response<Body> {
    let mut response = Response::new(Body::from(format!(
        "{{\"code\":\"limit_exceeded\",\"message\":\"{reason}\"}}\n"
    )));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

/// The open-file limit of this process (the soft one, which is what `accept` runs
/// into), read from `/proc/self/limits` so no unsafe call is needed. `None` where
/// that file does not exist or says "unlimited".
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The default for `--max-connections`: the open-file limit less a reserve for the
/// store (SQLite alone holds about 20 descriptors), the bus, logs and connections
/// being refused (a quarter of the limit, between 64 and 1,024), so the server says
/// 503 before `accept` runs out of descriptors. 10,000 where the limit is unknown.
pub fn default_max_connections() -> usize {
    match open_file_limit() {
        Some(limit) => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            limit.saturating_sub((limit / 4).clamp(64, 1024)).max(1)
        }
        None => 10_000,
    }
}
