//! WebSocket endpoints: one route per registered dialect.

use crate::server::AppState;
use crate::session;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use tether_dialects::Dialect;

/// Mounts every dialect of the registry at its path.
pub fn routes(dialects: Vec<&'static dyn Dialect>) -> Router<AppState> {
    let mut router = Router::new();
    for dialect in dialects {
        router = router.route(
            dialect.path(),
            get(
                move |ws: WebSocketUpgrade,
                      Path(params): Path<HashMap<String, String>>,
                      State(state): State<AppState>| {
                    upgrade(dialect, ws, params, state)
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
    state: AppState,
) -> Response {
    let codec = match dialect.codec(&params) {
        Ok(codec) => codec,
        Err(e) => return crate::transport::http::ApiError(e).into_response(),
    };
    let limits = state.limits;
    ws.max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| {
            session::run(
                socket,
                state.engine.clone(),
                codec,
                dialect.name(),
                session::Limits {
                    max_message_bytes: limits.max_message_bytes,
                },
                state.shutdown.clone(),
            )
        })
}
