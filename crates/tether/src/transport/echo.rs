//! Echo endpoints for WebSocket conformance testing (the Autobahn test suite), mounted
//! only with `tether serve --echo-endpoint`. The suite drives an echo server, and
//! Tether's protocols are not echoes, so these are the closest a conformance test can
//! get to the real thing:
//!
//! - `/echo`: the transport alone. The same accept loop, upgrade, frame limits and
//!   close codes as every dialect; echoes text and binary messages.
//! - `/echo/session`: the whole connection path of a dialect. A real session (its one
//!   task, outbox, rate and idle limits, shutdown) with a codec that answers each
//!   text message with itself. Binary frames get the same error every dialect sends,
//!   so the suite's binary echo cases do not apply here.
//!
//! Neither touches the store.

use crate::close_codes;
use crate::server::AppState;
use crate::session::{self, Socket};
use crate::transport::accept::ConnSlot;
use crate::transport::upgrade::WsUpgrade;
use crate::transport::ws::{hard_limit, session_limits};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::{Extension, Router};
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::time::Duration;
use tether_core::{Op, Outbound, Reply, Tag};
use tether_dialects::{Codec, MsgNo, Rejected, Request};
use tungstenite::Message;

/// How long the last bytes to a closing connection may take.
const DRAIN: Duration = Duration::from_secs(2);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/echo", get(raw))
        .route("/echo/session", get(through_session))
}

async fn raw(
    ws: WsUpgrade,
    slot: Option<Extension<ConnSlot>>,
    State(state): State<AppState>,
) -> Response {
    ws.accept(None, hard_limit(&state.limits), move |socket| async move {
        let _slot = slot;
        echo(socket).await;
    })
}

async fn echo(mut socket: Socket) {
    let code = loop {
        match socket.next().await {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                if socket.send(message).is_err() {
                    return;
                }
            }
            // The WebSocket layer answers pings itself.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_))) | None => {
                // Send the protocol's reply to the client's close.
                socket.flush_protocol();
                let _ = tokio::time::timeout(DRAIN, socket.flush()).await;
                return;
            }
            Some(Err(e)) => break close_codes::for_websocket_error(&e),
        }
    };
    // A broken frame fails the connection: the close frame, then close (as the
    // session does; see `Session::close`).
    socket.close(code, close_codes::reason(code));
    let _ = tokio::time::timeout(DRAIN, socket.flush()).await;
    socket.discard_readable().await;
}

async fn through_session(
    ws: WsUpgrade,
    slot: Option<Extension<ConnSlot>>,
    State(state): State<AppState>,
) -> Response {
    let limits = state.limits;
    ws.accept(None, hard_limit(&limits), move |socket| {
        session::run(
            socket,
            state.engine.clone(),
            Box::new(EchoCodec::default()),
            "echo",
            session_limits(&limits),
        )
        .map(move |()| drop(slot))
    })
}

/// Answers each text message with itself. Each message becomes an `Op::Ping` whose
/// reply is encoded as the message: the session answers requests in order, so the
/// queue of texts lines up with the replies. No welcome, no message numbers: the
/// suite expects exactly its own messages back.
#[derive(Debug, Default)]
pub struct EchoCodec {
    texts: VecDeque<String>,
}

impl Codec for EchoCodec {
    fn decode(&mut self, text: &str) -> Vec<Result<Request, Rejected>> {
        self.texts.push_back(text.to_owned());
        vec![Ok(Request {
            tag: Tag::Null,
            op: Op::Ping,
        })]
    }

    fn encode(&mut self, event: &Outbound, _msg: &mut MsgNo, out: &mut Vec<String>) {
        match event {
            Outbound::Reply {
                result: Ok(Reply::Ok),
                ..
            } => {
                if let Some(text) = self.texts.pop_front() {
                    out.push(text);
                }
            }
            // A limit refused a message; say so (the suite would then fail the case,
            // which is right: the limits are set high for it).
            Outbound::Reply { result: Err(e), .. } => {
                // Only the rate limit refuses a text after decode queued it; too large
                // and binary messages are refused before decode.
                if e.code == tether_core::ErrorCode::LimitExceeded {
                    self.texts.pop_front();
                }
                out.push(
                    serde_json::json!({"type": "error", "code": e.code.as_str(), "message": e.message})
                        .to_string(),
                );
            }
            _ => {}
        }
    }
}
