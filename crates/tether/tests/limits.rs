//! One test per connection limit: each is enforced with its documented close code,
//! HTTP status or error, and a client that keeps to the limits on the same server is
//! not affected. (The outbox bound for slow consumers is in `backpressure.rs` and
//! `slow_consumers.rs`; the open-file limit in `fd_limit.rs`.)

mod common;

use common::{Client, TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::MaybeTlsStream;

/// A client watching resource `watched`, to show others are unaffected.
async fn watcher(s: &TestServer) -> Client {
    let mut w = s.client().await;
    w.recv().await;
    let snap = w
        .request(json!({"type": "subscribe", "sub": "w", "resource": "watched"}))
        .await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    w
}

/// Writes through `writer` and checks `watcher` receives the change.
async fn still_served(writer: &mut Client, watcher: &mut Client, id: &str) {
    let r = writer
        .request(json!({"type": "upsert", "resource": "watched", "id": id, "data": {"ok": true}}))
        .await;
    assert_eq!(r["type"], "result", "{r}");
    let push = watcher.recv_type("PUT").await;
    assert_eq!(push["id"], id, "{push}");
}

/// Reads until the server's close frame and returns its code (None: cut without one).
async fn close_code(
    ws: &mut tokio_tungstenite::WebSocketStream<
        impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    >,
) -> Option<u16> {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("the server ends the connection within the wait")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// The status and body of a refused WebSocket upgrade.
fn refusal(result: Result<impl std::fmt::Debug, tungstenite::Error>) -> (u16, String) {
    match result {
        Err(tungstenite::Error::Http(response)) => (
            response.status().as_u16(),
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

/// Connects from the given local address (the whole 127/8 routes on loopback).
async fn connect_from(
    source: &str,
    url: &str,
) -> Result<tokio_tungstenite::WebSocketStream<MaybeTlsStream<TcpStream>>, tungstenite::Error> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let host = url.trim_start_matches("ws://").split('/').next().unwrap();
    let stream = socket.connect(host.parse().unwrap()).await.unwrap();
    tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .map(|(ws, _)| ws)
}

/// Retries until a connection is admitted: a closed connection frees its place once
/// the server has seen it go, which is not instantaneous.
async fn connect_eventually(url: &str) -> Client {
    let give_up = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio_tungstenite::connect_async(url).await {
            Ok((ws, _)) => return Client { ws, last_msg: 0 },
            Err(e) => {
                assert!(tokio::time::Instant::now() < give_up, "never admitted: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test]
async fn a_frame_past_the_hard_limit_closes_1009_and_others_keep_working() {
    let s = TestServer::start_with(|c| {
        c.max_message_bytes = 4096;
        c.max_frame_bytes = 16 * 1024;
    })
    .await;
    let mut w = watcher(&s).await;
    let mut writer = s.client().await;
    writer.recv().await;

    // Between the soft and the hard limit: an error, and the connection stays.
    let mut big = s.client().await;
    big.recv().await;
    big.send_text(&json!({"req": 1, "type": "ping", "pad": "x".repeat(8000)}).to_string())
        .await;
    let e = big.recv().await;
    assert_eq!(e["code"], "too_large", "{e}");
    assert_eq!(big.request(json!({"type": "ping"})).await["type"], "result");

    // Past the hard limit: the transport cannot go on.
    big.send_text(&"x".repeat(20 * 1024)).await;
    assert_eq!(close_code(&mut big.ws).await, Some(1009));

    still_served(&mut writer, &mut w, "after-1009").await;
}

#[tokio::test]
async fn the_subscription_limit_answers_limit_exceeded() {
    let s = TestServer::start_with(|c| c.max_subscriptions = 3).await;
    let mut c = s.client().await;
    c.recv().await;
    for i in 0..3 {
        let snap = c
            .request(json!({"type": "subscribe", "sub": format!("s{i}"), "resource": "a"}))
            .await;
        assert_eq!(snap["type"], "snapshot", "{snap}");
    }
    let e = c
        .request(json!({"type": "subscribe", "sub": "s3", "resource": "a"}))
        .await;
    assert_eq!(e["type"], "error");
    assert_eq!(e["code"], "limit_exceeded", "{e}");
    // The connection stays, and releasing one makes room again.
    c.request(json!({"type": "unsubscribe", "sub": "s0"})).await;
    let snap = c
        .request(json!({"type": "subscribe", "sub": "s3", "resource": "a"}))
        .await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    // The limit is per connection: another one has its own.
    let mut w = watcher(&s).await;
    still_served(&mut c, &mut w, "x").await;
}

#[tokio::test]
async fn past_the_connection_limit_the_upgrade_is_refused_with_503() {
    let s = TestServer::start_with(|c| c.max_connections = Some(3)).await;
    let mut w = watcher(&s).await;
    let mut writer = s.client().await;
    writer.recv().await;
    let third = s.client().await;

    let (status, body) = refusal(tokio_tungstenite::connect_async(s.url("/ws")).await);
    assert_eq!(status, 503);
    assert!(body.contains("connection limit"), "{body}");
    // Plain HTTP counts too: every connection holds a descriptor.
    let (status, _) = refusal(tokio_tungstenite::connect_async(s.url("/health")).await);
    assert_eq!(status, 503);

    still_served(&mut writer, &mut w, "while-full").await;
    drop(third);
    let mut again = connect_eventually(&s.url("/ws")).await;
    assert_eq!(again.recv().await["type"], "welcome");
    assert_eq!(s.server.open_connections(), 3);
}

#[tokio::test]
async fn past_the_per_address_limit_the_upgrade_is_refused_with_429() {
    let s = TestServer::start_with(|c| c.max_connections_per_ip = 2).await;
    let url = s.url("/ws");
    let mut w = watcher(&s).await; // from 127.0.0.1
    let mut writer = Client {
        ws: connect_from("127.0.0.1", &url).await.unwrap(),
        last_msg: 0,
    };
    writer.recv().await;

    let (status, body) = refusal(connect_from("127.0.0.1", &url).await);
    assert_eq!(status, 429);
    assert!(body.contains("from your address"), "{body}");

    // Another address is not affected.
    let mut other = Client {
        ws: connect_from("127.0.0.2", &url)
            .await
            .expect("another address is admitted"),
        last_msg: 0,
    };
    assert_eq!(other.recv().await["type"], "welcome");
    let second = connect_from("127.0.0.2", &url).await.unwrap();
    assert_eq!(refusal(connect_from("127.0.0.2", &url).await).0, 429);
    drop(second);

    still_served(&mut writer, &mut w, "per-ip").await;
}

#[tokio::test]
async fn the_message_rate_is_limited_and_a_client_ignoring_it_is_closed_4029() {
    // One message a second, three at once: the test sends far faster than that.
    let s = TestServer::start_with(|c| {
        c.max_messages_per_sec = 1;
        c.message_burst = 3;
    })
    .await;
    let mut w = watcher(&s).await;
    let mut writer = s.client().await;
    writer.recv().await;

    let mut flood = s.client().await;
    flood.recv().await;
    let sent = 6;
    for i in 0..sent {
        flood
            .send(json!({"req": i, "type": "get", "resource": "watched", "id": "a"}))
            .await;
    }
    let (mut results, mut refused) = (0, Vec::new());
    for _ in 0..sent {
        let m = flood.recv().await;
        match m["type"].as_str() {
            Some("result") => results += 1,
            Some("error") => {
                assert_eq!(m["code"], "limit_exceeded", "{m}");
                assert!(m["message"].as_str().unwrap().contains("rate"), "{m}");
                refused.push(m["req"].as_u64().expect("the error names its request"));
            }
            _ => panic!("unexpected {m}"),
        }
    }
    assert!(results >= 3, "the burst is served");
    assert!(!refused.is_empty(), "messages past the burst are refused");
    assert_eq!(results + refused.len(), sent as usize);

    // Others are not slowed down by the flood.
    still_served(&mut writer, &mut w, "during-flood").await;

    // A client that keeps sending while refused is closed.
    for i in 0..200 {
        let m = json!({"req": 100 + i, "type": "ping"}).to_string();
        if flood.ws.send(Message::Text(m.into())).await.is_err() {
            break;
        }
    }
    assert_eq!(close_code(&mut flood.ws).await, Some(4029));
    still_served(&mut writer, &mut w, "after-4029").await;
}

#[tokio::test]
async fn a_ping_flood_counts_against_the_rate_and_is_closed_4029() {
    let s = TestServer::start_with(|c| {
        c.max_messages_per_sec = 1;
        c.message_burst = 3;
    })
    .await;
    let mut w = watcher(&s).await;
    let mut writer = s.client().await;
    writer.recv().await;
    let mut flood = s.client().await;
    flood.recv().await;
    for _ in 0..200 {
        if flood
            .ws
            .send(Message::Ping(Vec::new().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(close_code(&mut flood.ws).await, Some(4029));
    still_served(&mut writer, &mut w, "after-ping-flood").await;
}

#[tokio::test]
async fn a_client_answering_no_ping_is_closed_4000_and_one_answering_stays() {
    let s = TestServer::start_with(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.idle_timeout = Duration::from_millis(1500);
    })
    .await;
    let mut w = watcher(&s).await;
    let mut writer = s.client().await;
    writer.recv().await;
    // Reads everything the server sends but never answers a ping (a raw socket,
    // not a WebSocket library that would pong on its own).
    let mut silent = raw_upgrade(s.server.addr, "/ws").await;

    // The others read, and so answer pings, until the silent one has been closed.
    let keep_reading = async {
        loop {
            let _ = tokio::time::timeout(Duration::from_millis(50), w.ws.next()).await;
            let _ = tokio::time::timeout(Duration::from_millis(50), writer.ws.next()).await;
        }
    };
    let code = tokio::select! {
        code = server_close_code(&mut silent) => code,
        _ = keep_reading => unreachable!(),
    };
    assert_eq!(code, Some(4000));
    still_served(&mut writer, &mut w, "after-idle").await;
}

/// Opens a WebSocket by hand and returns the socket after the 101 response.
async fn raw_upgrade(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    tcp
}

/// Reads server frames until the connection ends; the close frame's code, if any.
async fn server_close_code(tcp: &mut TcpStream) -> Option<u16> {
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut bytes))
        .await
        .expect("the server ends the connection within the wait")
        .ok()?;
    let mut rest = &bytes[..];
    while let [b0, b1, tail @ ..] = rest {
        let (len, tail) = match b1 & 0x7f {
            126 => (
                usize::from(u16::from_be_bytes([tail[0], tail[1]])),
                &tail[2..],
            ),
            127 => (
                usize::try_from(u64::from_be_bytes(tail[..8].try_into().unwrap())).unwrap(),
                &tail[8..],
            ),
            n => (usize::from(n), tail),
        };
        let (payload, next) = tail.split_at(len);
        if b0 & 0x0f == 0x8 {
            return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
        rest = next;
    }
    None
}

#[tokio::test]
async fn the_handshake_must_arrive_within_the_timeout() {
    let s = TestServer::start_with(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let addr = s.server.addr;

    // Connects and sends nothing.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    // Starts a request head and never finishes it.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();

    // A normal client meanwhile connects and works.
    let mut w = watcher(&s).await;
    let mut writer = s.client().await;
    writer.recv().await;

    for stream in [&mut idle, &mut slow] {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut buf))
            .await
            .expect("the server closes a connection with no request head");
        assert!(read.is_ok_and(|n| n == buf.len()));
    }
    still_served(&mut writer, &mut w, "after-handshake-timeout").await;
    // Both places were released: the watcher and the writer are all that is left.
    let give_up = tokio::time::Instant::now() + WAIT;
    while s.server.open_connections() != 2 {
        assert!(
            tokio::time::Instant::now() < give_up,
            "{}",
            s.server.open_connections()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_closing_normally_releases_its_place() {
    let s = TestServer::start_with(|c| c.max_connections = Some(1)).await;
    for _ in 0..5 {
        let mut c = connect_eventually(&s.url("/ws")).await;
        assert_eq!(c.recv().await["type"], "welcome");
        c.ws.close(None).await.unwrap();
        // Read the server's close reply, as a well-behaved client does.
        while let Some(Ok(m)) = c.ws.next().await {
            if let Message::Close(_) = m {
                break;
            }
        }
    }
    let v: Value = reqwest_eventually(&s.http("/health")).await;
    assert_eq!(v["status"], "ok", "{v}");
}

async fn reqwest_eventually(url: &str) -> Value {
    let give_up = tokio::time::Instant::now() + WAIT;
    loop {
        match reqwest::get(url).await {
            Ok(r) if r.status().is_success() => return r.json().await.unwrap(),
            other => {
                assert!(tokio::time::Instant::now() < give_up, "{other:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
