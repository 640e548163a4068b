//! The HTTP side of a WebSocket: the upgrade request checked and answered (RFC 6455
//! section 4.2), and the connection taken back from HTTP as the plain stream it was.
//!
//! Tether answers the upgrade itself, rather than through axum's `WebSocketUpgrade`,
//! for what comes after it: axum hands over a boxed stream wrapped in a buffering
//! WebSocket whose read buffer every idle connection would keep. Here a plain TCP
//! connection comes back as its `TcpStream` (a TLS one stays behind hyper's box), and
//! [`crate::transport::websocket`] drives it with no buffer while idle.

use crate::transport::websocket::WebSocket;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A valid WebSocket upgrade request, not answered yet.
pub struct WsUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request to a WebSocket endpoint was not an upgrade.
#[derive(Debug)]
pub struct NotUpgrade(StatusCode, &'static str);

impl IntoResponse for NotUpgrade {
    fn into_response(self) -> Response {
        let mut response = (self.0, self.1).into_response();
        if self.0 == StatusCode::UPGRADE_REQUIRED {
            response
                .headers_mut()
                .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        }
        response
    }
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = NotUpgrade;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, NotUpgrade> {
        if parts.method != Method::GET {
            return Err(NotUpgrade(
                StatusCode::METHOD_NOT_ALLOWED,
                "a WebSocket upgrade must be a GET request",
            ));
        }
        let headers = &parts.headers;
        if !has_token(headers, header::CONNECTION, "upgrade")
            || !has_token(headers, header::UPGRADE, "websocket")
        {
            return Err(NotUpgrade(
                StatusCode::UPGRADE_REQUIRED,
                "this is a WebSocket endpoint: send `Connection: Upgrade` and `Upgrade: websocket`",
            ));
        }
        if headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_none_or(|v| v.as_bytes() != b"13")
        {
            return Err(NotUpgrade(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` must be 13",
            ));
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Err(NotUpgrade(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` is missing",
            ));
        };
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(NotUpgrade(
                StatusCode::UPGRADE_REQUIRED,
                "this connection cannot be upgraded",
            ));
        };
        Ok(WsUpgrade { key, on_upgrade })
    }
}

/// Whether the comma-separated header `name` lists `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

impl WsUpgrade {
    /// Answers 101 (with `protocol` as the chosen subprotocol, if any) and, once the
    /// client has it, runs `session` on the connection in a task of its own.
    pub fn accept<F, Fut>(
        self,
        protocol: Option<HeaderValue>,
        max_message_bytes: usize,
        session: F,
    ) -> Response
    where
        F: FnOnce(WebSocket<Stream>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        // The session gets a task of its own rather than running inside this one: a
        // future awaiting another keeps both their captures, and the session's task is
        // what every idle connection pays for.
        tokio::spawn(async move {
            // The client hung up between the request and our answer: nothing to run.
            if let Ok(upgraded) = on_upgrade.await {
                let (stream, read_ahead) = Stream::take(upgraded);
                tokio::spawn(session(WebSocket::new(
                    stream,
                    read_ahead,
                    max_message_bytes,
                )));
            }
        });
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = protocol {
            headers.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
        }
        response
    }
}

/// The connection under a WebSocket: the plain TCP stream when that is what the HTTP
/// layer was serving, otherwise (TLS) hyper's upgraded stream.
pub enum Stream {
    Tcp(TcpStream),
    /// Boxed: hyper's wrapper is half again the size of a socket, and the stream is
    /// part of every idle connection's state.
    Upgraded(Box<TokioIo<Upgraded>>),
}

impl Stream {
    /// Takes the connection back from HTTP, with any bytes it had read past the request.
    fn take(upgraded: Upgraded) -> (Stream, bytes::Bytes) {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (Stream::Tcp(parts.io.into_inner()), parts.read_buf),
            Err(upgraded) => (
                Stream::Upgraded(Box::new(TokioIo::new(upgraded))),
                bytes::Bytes::new(),
            ),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Upgraded(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Upgraded(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Upgraded(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Upgraded(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
