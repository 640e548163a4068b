//! WebSocket endpoints: one route per registered dialect.
//!
//! An upgrade is checked before any session starts: the browser Origin against the
//! allow-list (403), then the caller's token (401). A refused client gets an HTTP
//! answer rather than a socket, and nothing it could read.

use crate::server::{AppState, TransportLimits};
use crate::session;
use crate::transport::accept::ConnSlot;
use crate::transport::upgrade::WsUpgrade;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use futures_util::FutureExt;
use std::collections::HashMap;
use tether_dialects::Dialect;

/// Mounts every dialect of the registry at its path.
pub fn routes(dialects: Vec<&'static dyn Dialect>) -> Router<AppState> {
    let mut router = Router::new();
    for dialect in dialects {
        router = router.route(
            dialect.path(),
            get(
                move |ws: WsUpgrade,
                      Path(params): Path<HashMap<String, String>>,
                      slot: Option<Extension<ConnSlot>>,
                      headers: HeaderMap,
                      RawQuery(query): RawQuery,
                      State(state): State<AppState>| {
                    upgrade(dialect, ws, params, slot, state, headers, query)
                },
            ),
        );
    }
    router
}

async fn upgrade(
    dialect: &'static dyn Dialect,
    ws: WsUpgrade,
    params: HashMap<String, String>,
    slot: Option<Extension<ConnSlot>>,
    state: AppState,
    headers: HeaderMap,
    query: Option<String>,
) -> Response {
    if let Err(reason) = state.security.origins.check(&headers) {
        metrics::counter!("tether_upgrades_refused_total", "reason" => "origin").increment(1);
        tracing::debug!(reason, "WebSocket upgrade refused");
        let error = tether_engine::access::forbidden(reason);
        return crate::transport::http::ApiError(error).into_response();
    }
    let caller = match state
        .security
        .auth()
        .authenticate(&headers, query.as_deref())
    {
        Ok(caller) => caller,
        Err(e) => {
            metrics::counter!("tether_upgrades_refused_total", "reason" => "auth").increment(1);
            return crate::transport::http::ApiError(e).into_response();
        }
    };
    let codec = match dialect.codec(&params) {
        Ok(codec) => codec,
        Err(e) => return crate::transport::http::ApiError(e).into_response(),
    };
    let limits = state.limits;
    // A browser that offered subprotocols fails the connection unless the server picks
    // one: answer with the entry that carried the token.
    let protocol = caller
        .protocol
        .and_then(|p| axum::http::HeaderValue::from_str(&p).ok());
    // The session is set up in the upgrade request's span, so its `connected` line
    // joins the request id to the session id that its later lines carry. The span is
    // not kept for the connection's life: the log registry would hold its fields for
    // every idle connection.
    let span = tracing::Span::current();
    ws.accept(protocol, hard_limit(&limits), move |socket| {
        span.in_scope(|| {
            session::run_as(
                socket,
                state.engine.clone(),
                codec,
                dialect.name(),
                session_limits(&limits),
                caller.identity,
            )
        })
        // The connection keeps its place under the connection limits while it runs.
        .map(move |()| drop(slot))
    })
}

/// The hard frame and message limit every WebSocket endpoint applies (1009 past it).
pub fn hard_limit(limits: &TransportLimits) -> usize {
    limits.max_frame_bytes
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
