//! The WebSocket transport over raw bytes, where a client library would hide what
//! matters: bytes that arrive together with the upgrade request, and several frames in
//! one TCP write. Tether's own reading (transport/websocket.rs) keeps no buffer between
//! messages, so both paths are where a frame could be lost. (Autobahn, in CI, covers
//! the protocol itself.)

mod common;

use common::TestServer;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

fn upgrade_request(addr: std::net::SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

/// A client frame: final, masked (as RFC 6455 requires of clients).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

fn text(json: &str) -> Vec<u8> {
    client_frame(0x1, json.as_bytes())
}

/// Reads the HTTP response head; the bytes after it are the first frames.
async fn read_head(tcp: &mut TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("an answer within the wait")
            .unwrap();
        assert!(n > 0, "the server closed before answering the upgrade");
        bytes.extend_from_slice(&chunk[..n]);
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_string();
            assert!(head.starts_with("HTTP/1.1 101"), "{head}");
            return bytes[end + 4..].to_vec();
        }
    }
}

/// A server frame: opcode and payload.
type Frame = (u8, Vec<u8>);

/// Reads server frames (unmasked) until `done` says so or the connection ends.
async fn read_frames(
    tcp: &mut TcpStream,
    mut bytes: Vec<u8>,
    done: impl Fn(&[Frame]) -> bool,
) -> (Vec<Frame>, bool) {
    let mut frames = Vec::new();
    loop {
        while bytes.len() >= 2 {
            let (len, at) = match bytes[1] & 0x7f {
                126 if bytes.len() >= 4 => {
                    (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4)
                }
                127 if bytes.len() >= 10 => {
                    let mut n = [0u8; 8];
                    n.copy_from_slice(&bytes[2..10]);
                    (usize::try_from(u64::from_be_bytes(n)).unwrap(), 10)
                }
                126 | 127 => break,
                n => (usize::from(n), 2),
            };
            if bytes.len() < at + len {
                break;
            }
            frames.push((bytes[0] & 0x0f, bytes[at..at + len].to_vec()));
            bytes.drain(..at + len);
        }
        if done(&frames) {
            return (frames, false);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .expect("a frame within the wait")
            .unwrap_or(0);
        if n == 0 {
            return (frames, true);
        }
        bytes.extend_from_slice(&chunk[..n]);
    }
}

fn texts(frames: &[Frame]) -> Vec<serde_json::Value> {
    frames
        .iter()
        .filter(|(op, _)| *op == 0x1)
        .map(|(_, p)| serde_json::from_slice(p).expect("JSON"))
        .collect()
}

fn answered(frames: &[Frame], req: &str) -> bool {
    texts(frames).iter().any(|m| m["req"] == req)
}

#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_answered() {
    let t = TestServer::start().await;
    let addr = t.server.addr;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let mut bytes = upgrade_request(addr, "/ws").into_bytes();
    bytes.extend(text(
        r#"{"type":"get","resource":"todos","id":"nothing-here","req":"early"}"#,
    ));
    tcp.write_all(&bytes).await.unwrap();
    let rest = read_head(&mut tcp).await;
    let (frames, ended) = read_frames(&mut tcp, rest, |f| answered(f, "early")).await;
    assert!(!ended, "the connection stays open: {frames:?}");
    let messages = texts(&frames);
    assert_eq!(messages[0]["type"], "welcome", "{messages:?}");
    let reply = messages.iter().find(|m| m["req"] == "early").unwrap();
    assert_ne!(reply["type"], "error", "{reply}");
}

#[tokio::test]
async fn frames_in_one_write_are_all_answered_in_order_then_the_close() {
    let t = TestServer::start().await;
    let addr = t.server.addr;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(upgrade_request(addr, "/ws").as_bytes())
        .await
        .unwrap();
    let rest = read_head(&mut tcp).await;
    let (_, _) = read_frames(&mut tcp, rest, |f| !texts(f).is_empty()).await;

    // A ping, a write, a read of what it wrote, and a close, in one TCP write: the
    // protocol reads ahead, so every frame after the first is already inside it when
    // the first is handled.
    let mut burst = client_frame(0x9, b"are you there");
    burst.extend(text(
        r#"{"type":"upsert","resource":"todos","id":"w1","data":{"n":1},"req":"put"}"#,
    ));
    burst.extend(text(
        r#"{"type":"get","resource":"todos","id":"w1","req":"get"}"#,
    ));
    burst.extend(client_frame(0x8, &1000u16.to_be_bytes()));
    tcp.write_all(&burst).await.unwrap();

    let (frames, ended) = read_frames(&mut tcp, Vec::new(), |_| false).await;
    assert!(
        ended,
        "the server closes the connection after the handshake"
    );
    let pong = frames.iter().position(|(op, _)| *op == 0xA);
    assert_eq!(
        pong.map(|i| frames[i].1.as_slice()),
        Some(&b"are you there"[..]),
        "the ping is answered: {frames:?}"
    );
    let messages = texts(&frames);
    let put = messages.iter().position(|m| m["req"] == "put");
    let get = messages.iter().position(|m| m["req"] == "get");
    assert!(
        put.is_some() && get.is_some(),
        "both answered: {messages:?}"
    );
    assert!(put < get, "in request order: {messages:?}");
    let wrote = &messages[put.unwrap()];
    assert_ne!(wrote["type"], "error", "{wrote}");
    let got = &messages[get.unwrap()];
    assert_eq!(got["record"]["data"]["n"], 1, "the get sees the put: {got}");
    let (last_op, last_payload) = frames.last().expect("frames");
    assert_eq!(*last_op, 0x8, "the close reply comes last: {frames:?}");
    assert_eq!(last_payload[..2], 1000u16.to_be_bytes());
}
