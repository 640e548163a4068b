//! Gap detection and de-duplication, against a scripted server that misbehaves on
//! purpose (the real one never skips a message number or repeats a push).

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tether_client::{Client, ConnectionEvent, Event, Target};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(_)) => continue,
            other => panic!("scripted server expected a message, got {other:?}"),
        }
    }
}

fn put(msg: u64, pos: u64, id: &str) -> Value {
    json!({"msg": msg, "sub": "c1", "type": "PUT", "pos": pos, "resource": "todos", "id": id, "version": 1, "data": {"n": pos}})
}

#[tokio::test]
async fn a_message_gap_reconnects_and_resumes_without_doubles() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let script = tokio::spawn(async move {
        // Connection 1: a snapshot, one push, then message 5 where 4 is due.
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        send(&mut ws, json!({"msg": 1, "type": "welcome", "session": "S1", "epoch": "E", "pos": 5, "protocol": 1})).await;
        let subscribe = recv(&mut ws).await;
        assert_eq!(subscribe["type"], "subscribe");
        assert_eq!(subscribe["sub"], "c1");
        send(&mut ws, json!({"msg": 2, "type": "snapshot", "req": subscribe["req"], "sub": "c1", "epoch": "E", "pos": 5, "records": []})).await;
        send(&mut ws, put(3, 6, "a")).await;
        send(&mut ws, put(5, 7, "b")).await; // message 4 never arrives

        // Connection 2: the client must resume session S1 from position 6 exactly.
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        send(&mut ws, json!({"msg": 1, "type": "welcome", "session": "S2", "epoch": "E", "pos": 7, "protocol": 1})).await;
        let resume = recv(&mut ws).await;
        assert_eq!(resume["type"], "resume", "{resume}");
        assert_eq!(resume["session"], "S1");
        assert_eq!(
            resume["subs"],
            json!([{"sub": "c1", "resource": "todos", "since": {"epoch": "E", "pos": 6}}])
        );
        send(
            &mut ws,
            json!({"msg": 2, "type": "resumed", "sub": "c1", "epoch": "E", "from": 6}),
        )
        .await;
        send(&mut ws, put(3, 6, "a")).await; // a replay the client already applied
        send(&mut ws, put(4, 7, "b")).await;
        send(&mut ws, json!({"msg": 5, "type": "result", "req": resume["req"], "session": "S1", "subs": ["c1"]})).await;
        // Keep the connection open until the client is done.
        let _ = ws.next().await;
    });

    let client = Client::builder(&format!("ws://{addr}/ws"))
        .reconnect(tether_client::Backoff {
            initial: Duration::from_millis(10),
            ..Default::default()
        })
        .connect()
        .await
        .unwrap();
    let mut events = client.events();
    let mut sub = client.subscribe(Target::resource("todos")).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let e = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(e);
    }
    let positions: Vec<_> = seen
        .iter()
        .map(|e| (e.pos(), matches!(e, Event::Resumed { .. })))
        .collect();
    assert_eq!(
        positions,
        [
            (Some(5), false),
            (Some(6), false),
            (Some(6), true),
            (Some(7), false)
        ],
        "{seen:?}"
    );

    let mut saw_gap = false;
    let mut resumed = false;
    while !(saw_gap && resumed) {
        match tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .unwrap()
        {
            ConnectionEvent::Gap { expected, received } => {
                assert_eq!((expected, received), (4, 5));
                saw_gap = true;
            }
            ConnectionEvent::Connected {
                session,
                resumed: true,
            } => {
                assert_eq!(session, "S1");
                resumed = true;
            }
            _ => {}
        }
    }
    assert_eq!(client.status().session.as_deref(), Some("S1"));
    client.close().await;
    script.await.unwrap();
}
