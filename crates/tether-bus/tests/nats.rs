//! The NATS bus against a real NATS server: two buses on one epoch are two nodes.
//!
//! Needs `TETHER_TEST_NATS` (e.g. `nats://127.0.0.1:4222`); without it every test prints
//! a notice and passes without running. Each test uses a random epoch, so its subjects
//! are its own and runs never collide.

use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tether_bus::{Bus, BusMessage, NatsBus};
use tether_core::{Change, ChangeKind, Epoch, ErrorCode, Position, RecordId, ResourceName};
use tokio::sync::broadcast;

const ENV: &str = "TETHER_TEST_NATS";
const WAIT: Duration = Duration::from_secs(10);

fn server() -> Option<String> {
    match std::env::var(ENV) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("{ENV} is not set: skipping the NATS bus tests");
            None
        }
    }
}

fn epoch() -> Epoch {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Epoch(format!("{:x}{:x}", nanos, std::process::id()))
}

fn change(pos: u64) -> BusMessage {
    BusMessage::Change(Arc::new(Change::new(
        Position(pos),
        ChangeKind::Put,
        ResourceName::parse("todos").unwrap(),
        RecordId::parse(&format!("r{pos}")).unwrap(),
        1,
        Some(json!({"pos": pos}).as_object().unwrap().clone()),
        None,
    )))
}

fn topic(n: u64) -> BusMessage {
    BusMessage::Topic {
        topic: "logs/1".into(),
        data: Arc::new(json!({"line": n})),
        to: None,
    }
}

/// What a message is, for comparing sequences.
fn label(m: &BusMessage) -> String {
    match m {
        BusMessage::Change(c) => format!("change {}", c.position),
        BusMessage::Topic { data, .. } => format!("topic {}", data["line"]),
        BusMessage::Presence(p) => format!("presence {:?}", p.kind),
    }
}

async fn next(rx: &mut broadcast::Receiver<BusMessage>) -> BusMessage {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a message within the wait")
        .expect("the bus is open and not lagging")
}

async fn silent(rx: &mut broadcast::Receiver<BusMessage>) {
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        panic!("expected nothing more, got {:?}", m.map(|m| label(&m)));
    }
}

#[tokio::test]
async fn two_nodes_see_every_message_once_and_in_order() {
    let Some(url) = server() else {
        return;
    };
    let epoch = epoch();
    let a = NatsBus::connect(&url, &epoch)
        .await
        .expect("node a connects");
    let b = NatsBus::connect(&url, &epoch)
        .await
        .expect("node b connects");
    let (mut at_a, mut at_b) = (a.subscribe(), b.subscribe());

    let sent: Vec<BusMessage> = (1..=200u64)
        .map(|n| {
            if n.is_multiple_of(5) {
                topic(n)
            } else {
                change(n)
            }
        })
        .collect();
    for m in &sent {
        a.publish(m.clone()).await.unwrap();
    }
    let want: Vec<String> = sent.iter().map(label).collect();
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in &sent {
        got_a.push(label(&next(&mut at_a).await));
        got_b.push(label(&next(&mut at_b).await));
    }
    assert_eq!(got_a, want, "the publishing node hears itself, once each");
    assert_eq!(got_b, want, "the other node hears everything, in order");
    silent(&mut at_a).await;
    silent(&mut at_b).await;

    // The wire keeps every field of a change.
    b.publish(change(201)).await.unwrap();
    let BusMessage::Change(c) = next(&mut at_a).await else {
        panic!("a change")
    };
    let BusMessage::Change(original) = change(201) else {
        unreachable!()
    };
    assert_eq!(*c, *original);
}

#[tokio::test]
async fn another_store_on_the_same_nats_hears_nothing() {
    let Some(url) = server() else {
        return;
    };
    let a = NatsBus::connect(&url, &epoch()).await.unwrap();
    let other = NatsBus::connect(&url, &Epoch(format!("{}x", epoch().0)))
        .await
        .unwrap();
    let mut at_other = other.subscribe();
    a.publish(change(1)).await.unwrap();
    silent(&mut at_other).await;
}

#[tokio::test]
async fn unreachable_nats_is_one_clear_line() {
    let Err(e) = NatsBus::connect("nats://127.0.0.1:1", &epoch()).await else {
        panic!("nothing listens on port 1")
    };
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(
        e.message
            .starts_with("cannot reach NATS at nats://127.0.0.1:1"),
        "{}",
        e.message
    );
    assert!(!e.message.contains('\n'), "{}", e.message);

    let Err(e) = NatsBus::connect("nats://h:notaport", &epoch()).await else {
        panic!("not a URL")
    };
    assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message);
}
