//! WebSocket endpoints: one route per registered dialect.

use crate::server::{AppState, TransportLimits};
use crate::session;
use crate::transport::accept::ConnSlot;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use std::collections::HashMap;
use tether_dialects::Dialect;
use tracing::Instrument;

/// Mounts every dialect of the registry at its path.
pub fn routes(dialects: Vec<&'static dyn Dialect>) -> Router<AppState> {
    let mut router = Router::new();
    for dialect in dialects {
        router = router.route(
            dialect.path(),
            get(
                move |ws: WebSocketUpgrade,
                      Path(params): Path<HashMap<String, String>>,
                      slot: Option<Extension<ConnSlot>>,
                      State(state): State<AppState>| {
                    upgrade(dialect, ws, params, slot, state)
                },
            ),
        );
    }
    router
}

async fn upgrade(
    dialect: &'static dyn Dialect,
    ws: WebSocketUpgrade,
    params: HashMap<String, String>,
    slot: Option<Extension<ConnSlot>>,
    state: AppState,
) -> Response {
    let codec = match dialect.codec(&params) {
        Ok(codec) => codec,
        Err(e) => return crate::transport::http::ApiError(e).into_response(),
    };
    let limits = state.limits;
    // The connection's log lines keep the upgrade request's span (its request id).
    let span = tracing::Span::current();
    configure(ws, &limits).on_upgrade(move |socket| {
        async move {
            // The connection keeps its place under the connection limits while it runs.
            let _slot = slot;
            session::run(
                socket,
                state.engine.clone(),
                codec,
                dialect.name(),
                session_limits(&limits),
                state.shutdown.clone(),
            )
            .await
        }
        .instrument(span)
    })
}

/// The hard frame and message limits every WebSocket endpoint applies (1009 past them).
pub fn configure(ws: WebSocketUpgrade, limits: &TransportLimits) -> WebSocketUpgrade {
    ws.max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
}

/// The per-connection limits a session enforces.
pub fn session_limits(limits: &TransportLimits) -> session::Limits {
    session::Limits {
        max_message_bytes: limits.max_message_bytes,
        max_messages_per_sec: limits.max_messages_per_sec,
        message_burst: limits.message_burst,
        ping_interval: limits.ping_interval,
        idle_timeout: limits.idle_timeout,
    }
}
