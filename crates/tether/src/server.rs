//! Wiring: opens the store, starts the engine, builds the router, serves until told to
//! stop. Tests call [`start`] on port 0 exactly as the binary does.

use crate::config::Config;
use crate::reload::{AuthReloader, Reloaded};
use crate::{inspector, transport};
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tether_bus::{Bus, LocalBus, NatsBus};
use tether_core::{Epoch, Error, Result};
use tether_engine::{Engine, Knobs};
use tether_store::{MongoResource, MongoStore, PostgresStore, SqliteStore, Store};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;

/// Transport limits, from the config.
#[derive(Debug, Clone, Copy)]
pub struct TransportLimits {
    /// Past this a text message gets a `too_large` error and the connection stays.
    pub max_message_bytes: usize,
    /// Past this a frame or message breaks the transport: close 1009.
    pub max_frame_bytes: usize,
    /// Sustained messages per second per connection (0: no limit), and how many may
    /// come at once above it. See `session::RateLimit`.
    pub max_messages_per_sec: u32,
    pub message_burst: u32,
    /// How often a WebSocket client is pinged, and how long it may stay silent.
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
}

#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub limits: TransportLimits,
    pub metrics: Option<PrometheusHandle>,
    /// Authentication and browser-origin settings every request is checked against.
    pub security: Arc<crate::security::Security>,
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub engine: Engine,
    /// Where the data lives, for humans (a file path or a redacted URL).
    pub store_location: String,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    gate: Arc<transport::accept::Gate>,
    router: Router,
    options: transport::accept::AcceptOptions,
    /// Stopped when the server is dropped or stopped.
    _sources: crate::sources::Sources,
    /// `None` without an auth file.
    reloader: Option<Arc<AuthReloader>>,
    _watching: Option<crate::reload::Watching>,
}

impl Server {
    /// Connections open now (WebSocket sessions and HTTP connections).
    pub fn open_connections(&self) -> usize {
        self.gate.open()
    }

    /// Serves one already-connected byte stream exactly as an accepted connection
    /// from `peer` (limits, handshake timeout, routes): for in-memory tests and the
    /// fuzz target of the handshake and frame path. Ends with the connection.
    pub fn serve_stream<I>(&self, io: I, peer: SocketAddr) -> tokio::task::JoinHandle<()>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(transport::accept::serve_io(
            io,
            peer,
            self.gate.admit(peer.ip()),
            self.router.clone(),
            self.options,
            self.shutdown.subscribe(),
        ))
    }

    /// Applies the auth file again (SIGHUP). `Err` says why the rules in force stay,
    /// including when the server was started without an auth file.
    pub fn reload_auth(&self) -> std::result::Result<Reloaded, String> {
        match &self.reloader {
            Some(reloader) => reloader.reload(),
            None => Err("no --auth-config file to reload".into()),
        }
    }

    /// Closes every connection with 1001, lets in-flight writes finish, and stops.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.unwrap_or(Ok(()))
    }
}

/// The router: WebSocket dialects, the HTTP API, and the inspector.
pub fn app(state: AppState) -> Router {
    transport::ws::routes(tether_dialects::registry())
        .merge(transport::http::routes())
        .merge(inspector::routes())
        .with_state(state)
        // Request ids in log lines, and HTTP metrics (telemetry.rs).
        .layer(axum::middleware::from_fn(crate::telemetry::trace_http))
}

/// Connections the kernel may hold for us before we accept them. When thousands of
/// clients reconnect at once (a restart, a network blip) a full queue drops their
/// SYNs, and each dropped client waits a second before it retries: tokio's default of
/// 1,024 cost the idle benchmark half its connection rate. The kernel caps this at
/// `net.core.somaxconn` (4,096 on most machines).
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds the listener as `TcpListener::bind` does (with `SO_REUSEADDR`, so a restart
/// can bind while old connections linger in TIME_WAIT), with a deep accept queue.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn open_store(config: &Config) -> Result<(Arc<dyn Store>, String)> {
    match config.store.as_deref() {
        None => {
            let path = config.data.join("tether.db");
            let store = SqliteStore::open(&path).await?;
            Ok((Arc::new(store), path.display().to_string()))
        }
        Some(url) if url.starts_with("sqlite://") => {
            let path = &url["sqlite://".len()..];
            let store = SqliteStore::open(path).await?;
            Ok((Arc::new(store), path.to_owned()))
        }
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            let store = PostgresStore::open(url).await?;
            let location = store.location().to_owned();
            Ok((Arc::new(store), location))
        }
        Some(url) => Err(Error::bad_request(format!(
            "--store {url:?}: expected sqlite://PATH or postgres://..."
        ))),
    }
}

/// The bus for this store: in-process, or NATS shared by the nodes of one store (the
/// epoch names the subjects, so stores sharing one NATS never mix).
async fn open_bus(config: &Config, epoch: &Epoch) -> Result<Arc<dyn Bus>> {
    match config.bus.as_deref() {
        None | Some("local") => Ok(Arc::new(LocalBus::new())),
        Some(url) if url.starts_with("nats://") => {
            Ok(Arc::new(NatsBus::connect(url, epoch).await?))
        }
        Some(url) => Err(Error::bad_request(format!(
            "--bus {url:?}: expected nats://HOST:PORT, or leave --bus out for one node"
        ))),
    }
}

/// Binds, opens the store and starts serving in the background.
pub async fn start(config: Config) -> Result<Server> {
    // Keys, rules and certificates first: a mistake there should stop the server
    // before it binds, not after it has served a request.
    let loaded = crate::security::load(&config.security).map_err(Error::bad_request)?;
    let specs = [
        ("source", &config.sources),
        ("mongo_resource", &config.mongo_resources),
        ("mongo_changes", &config.mongo_changes),
    ];
    for (key, values) in specs {
        for spec in values {
            crate::config::check_spec(key, spec).map_err(Error::bad_request)?;
        }
    }
    let listener = listen(config.listen)
        .map_err(|e| Error::unavailable(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::unavailable(format!("cannot read the bound address: {e}")))?;
    let (store, store_location) = open_store(&config).await?;
    // MongoDB-backed resources wrap the store that keeps the change log.
    let mongo = config
        .mongo_resources
        .iter()
        .map(|spec| MongoResource::parse(spec))
        .collect::<Result<Vec<_>>>()?;
    let store: Arc<dyn Store> = if mongo.is_empty() {
        store
    } else {
        Arc::new(MongoStore::open(store, &mongo).await?)
    };
    let bus = open_bus(&config, store.epoch()).await?;
    let engine = Engine::start_with_access(
        store,
        bus,
        Knobs {
            outbox_max_bytes: config.outbox_max_bytes,
            log_retention: config.log_retention,
            max_subscriptions: config.max_subscriptions,
            ..Knobs::default()
        },
        loaded.access,
    )
    .await?;
    // Relayed streams start once the engine can publish; a bad spec stops the start.
    let mongo_names: Vec<_> = mongo.iter().map(|m| m.resource.clone()).collect();
    let sources = crate::sources::start(
        &config.sources,
        &config.mongo_changes,
        &mongo_names,
        &engine,
    )?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    // Sessions learn of shutdown through their outboxes (one signal they already wait
    // on): when the server stops, or is dropped, every connection is asked to go away.
    let mut stopping = shutdown_rx.clone();
    let going_away = engine.clone();
    tokio::spawn(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
        going_away.go_away();
    });
    let security = Arc::new(loaded.security);
    let reloader = AuthReloader::new(&config.security, security.clone(), engine.clone());
    let watching = reloader.as_ref().and_then(AuthReloader::watch);
    let state = AppState {
        engine: engine.clone(),
        limits: TransportLimits {
            max_message_bytes: config.max_message_bytes,
            max_frame_bytes: config.max_frame_bytes,
            max_messages_per_sec: config.max_messages_per_sec,
            message_burst: config.message_burst,
            ping_interval: config.ping_interval,
            idle_timeout: config.idle_timeout,
        },
        metrics: crate::telemetry::metrics_handle(),
        security,
    };
    let router = if config.echo_endpoint {
        // Opt-in only: the conformance suite's echo endpoints (transport/echo.rs).
        app(state.clone()).merge(transport::echo::routes().with_state(state))
    } else {
        app(state)
    };
    let max_connections = config
        .max_connections
        .unwrap_or_else(transport::accept::default_max_connections);
    if let Some(files) = transport::accept::open_file_limit() {
        if max_connections as u64 >= files {
            tracing::warn!(
                max_connections,
                open_file_limit = files,
                "--max-connections is above the open-file limit: connections past it wait in the kernel's queue instead of being refused"
            );
        }
    }
    let gate = transport::accept::Gate::new(max_connections, config.max_connections_per_ip);
    let options = transport::accept::AcceptOptions {
        handshake_timeout: config.handshake_timeout,
    };
    let task = tokio::spawn(transport::accept::serve(
        listener,
        router.clone(),
        gate.clone(),
        options,
        loaded.tls,
        shutdown_rx,
    ));
    Ok(Server {
        _sources: sources,
        reloader,
        _watching: watching,
        addr,
        engine,
        store_location,
        shutdown,
        task,
        gate,
        router,
        options,
    })
}
