//! The networked bus: NATS core pub/sub between the nodes that serve one store
//! (`--bus nats://host:4222`).
//!
//! Why it is shaped this way:
//!
//! - **At-most-once is enough.** NATS core pub/sub drops messages when a node is
//!   disconnected or slow; the hub notices the position gap (or its periodic head
//!   check does) and reads the missed changes from the store, which is the only source
//!   of truth. So there is no JetStream, no acknowledgement and no redelivery here.
//!   Topic messages are ephemeral by contract and are simply lost in that case.
//! - **Publishing never waits.** `publish` is called by the committer right after a
//!   commit. It hands the message to this node's own subscribers at once and queues it
//!   for NATS without waiting; a queue full because NATS is away drops the message
//!   (other nodes catch up from the store). A NATS outage therefore slows nothing and
//!   loses nothing committed; it only delays other nodes by one head check.
//! - **Own messages are not echoed back.** The connection is made with `no_echo`: this
//!   node already delivered its messages locally, and an echo would only cost a round
//!   trip and a duplicate the hub would drop.
//! - **One subject space per store.** Subjects are `tether.<epoch>.changes`,
//!   `tether.<epoch>.topics` and `tether.<epoch>.presence`; the epoch is the store's identity, so nodes of different
//!   stores sharing one NATS never see each other's messages.
//!
//! The payload is JSON (`{"v":1,"kind":"change","change":{...}}`), readable with
//! `nats sub 'tether.>'` when debugging. A message over the server's `max_payload`
//! (1 MiB by default) is not sent; other nodes read that change from the store.

use crate::{Bus, BusMessage, PresenceEvent};
use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tether_core::{Audience, Change, Data, Epoch, Error, Result};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

/// Messages a receiver may fall behind before it is told it lagged (and the hub
/// reads from the store).
pub const NATS_BUS_CAPACITY: usize = 65_536;

/// Messages waiting to go out to NATS. Past this (NATS unreachable for a while) new
/// messages are dropped rather than held: other nodes catch up from the store.
const OUTGOING_CAPACITY: usize = 16_384;

/// How long the first connection may take before the node refuses to start.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The wire format's version; a node ignores (and logs) messages of another one, so a
/// rolling upgrade that changes it degrades to store polling instead of misreading.
const WIRE_VERSION: u32 = 1;

/// The NATS bus. Dropping it stops its tasks and closes the connection.
pub struct NatsBus {
    local: broadcast::Sender<BusMessage>,
    outgoing: mpsc::Sender<BusMessage>,
    /// Set while messages are being dropped, so a long outage logs once, not per message.
    dropping: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for NatsBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBus").finish_non_exhaustive()
    }
}

/// The subjects of one store's bus.
#[derive(Debug, Clone)]
struct Subjects {
    changes: String,
    topics: String,
    presence: String,
    all: String,
}

impl Subjects {
    fn new(epoch: &Epoch) -> Subjects {
        // Epochs are hex, but be safe: a subject token may not hold '.', '*', '>' or
        // whitespace.
        let token: String = epoch
            .0
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Subjects {
            changes: format!("tether.{token}.changes"),
            topics: format!("tether.{token}.topics"),
            presence: format!("tether.{token}.presence"),
            all: format!("tether.{token}.*"),
        }
    }
}

/// What goes on the wire, borrowed for sending.
#[derive(Serialize)]
struct WireOut<'a> {
    v: u32,
    #[serde(flatten)]
    body: BodyOut<'a>,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum BodyOut<'a> {
    Change {
        change: &'a Change,
    },
    Topic {
        topic: &'a str,
        data: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<AudienceOut<'a>>,
    },
    Presence {
        presence: &'a PresenceEvent,
    },
}

#[derive(Serialize)]
struct AudienceOut<'a> {
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    sessions: &'a [String],
    #[serde(skip_serializing_if = "Data::is_empty")]
    watching: &'a Data,
}

/// What comes off the wire.
#[derive(Deserialize)]
struct WireIn {
    v: u32,
    #[serde(flatten)]
    body: BodyIn,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum BodyIn {
    Change {
        change: Change,
    },
    Topic {
        topic: String,
        data: Value,
        #[serde(default)]
        to: Option<AudienceIn>,
    },
    Presence {
        presence: PresenceEvent,
    },
}

#[derive(Deserialize)]
struct AudienceIn {
    #[serde(default)]
    sessions: Vec<String>,
    #[serde(default)]
    watching: Data,
}

/// Encodes a message for the wire, with the subject it goes to.
fn encode<'s>(subjects: &'s Subjects, message: &BusMessage) -> Result<(&'s str, Vec<u8>)> {
    let (subject, body) = match message {
        BusMessage::Change(change) => (&subjects.changes, BodyOut::Change { change }),
        BusMessage::Topic { topic, data, to } => (
            &subjects.topics,
            BodyOut::Topic {
                topic,
                data,
                to: to.as_deref().map(|a| AudienceOut {
                    sessions: &a.sessions,
                    watching: &a.watching,
                }),
            },
        ),
        BusMessage::Presence(presence) => (&subjects.presence, BodyOut::Presence { presence }),
    };
    let bytes = serde_json::to_vec(&WireOut {
        v: WIRE_VERSION,
        body,
    })
    .map_err(|e| Error::internal(format!("cannot encode a bus message: {e}")))?;
    Ok((subject.as_str(), bytes))
}

/// Decodes a message from the wire; `Err` says why it was ignored.
fn decode(payload: &[u8]) -> std::result::Result<BusMessage, String> {
    let wire: WireIn = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    if wire.v != WIRE_VERSION {
        return Err(format!(
            "wire version {} (this node speaks {WIRE_VERSION})",
            wire.v
        ));
    }
    Ok(match wire.body {
        BodyIn::Change { change } => BusMessage::Change(Arc::new(change)),
        BodyIn::Presence { presence } => BusMessage::Presence(Arc::new(presence)),
        BodyIn::Topic { topic, data, to } => BusMessage::Topic {
            topic: topic.into(),
            data: Arc::new(data),
            to: to.map(|a| {
                Arc::new(Audience {
                    sessions: a.sessions,
                    watching: a.watching,
                })
            }),
        },
    })
}

/// `nats://user:pass@host:4222` without the password, for logs and errors.
fn redact(url: &str) -> String {
    url.split(',')
        .map(|one| match one.split_once("://") {
            // A bare user part is a token, as secret as a password.
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                    None => format!("{scheme}://***@{host}"),
                },
                None => one.to_owned(),
            },
            None => one.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl NatsBus {
    /// Connects to NATS (`nats://host:port`, several separated by commas) and starts
    /// carrying messages for the store with this epoch. Fails with one line when no
    /// server answers; once connected, outages are reconnected to in the background.
    pub async fn connect(url: &str, epoch: &Epoch) -> Result<NatsBus> {
        let shown = redact(url);
        let servers: Vec<&str> = url.split(',').map(str::trim).collect();
        for server in &servers {
            if let Err(e) = server.parse::<async_nats::ServerAddr>() {
                return Err(Error::bad_request(format!(
                    "--bus {shown}: {server:?} is not a NATS URL ({e})"
                )));
            }
        }
        let logged = shown.clone();
        let client = async_nats::ConnectOptions::new()
            .name("tether")
            .no_echo()
            .connection_timeout(CONNECT_TIMEOUT)
            .event_callback(move |event| {
                let shown = logged.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!(bus = %shown, "connected to NATS")
                        }
                        async_nats::Event::Disconnected => tracing::warn!(
                            bus = %shown,
                            "lost NATS; reconnecting (other nodes' changes arrive by store polling meanwhile)"
                        ),
                        other => tracing::warn!(bus = %shown, event = %other, "NATS"),
                    }
                }
            })
            .connect(servers)
            .await
            .map_err(|e| Error::unavailable(format!("cannot reach NATS at {shown}: {e}")))?;
        let subjects = Subjects::new(epoch);
        let subscriber = client.subscribe(subjects.all.clone()).await.map_err(|e| {
            Error::unavailable(format!(
                "cannot subscribe to {} on NATS at {shown}: {e}",
                subjects.all
            ))
        })?;
        // The subscription reaches the server with the next flush; waiting for it means
        // no message published after `connect` returns is missed by this node.
        client
            .flush()
            .await
            .map_err(|e| Error::unavailable(format!("NATS at {shown} did not answer: {e}")))?;

        let (local, _) = broadcast::channel(NATS_BUS_CAPACITY);
        let (outgoing, queue) = mpsc::channel(OUTGOING_CAPACITY);
        let tasks = vec![
            tokio::spawn(send_loop(client.clone(), subjects.clone(), queue)),
            tokio::spawn(receive_loop(subscriber, local.clone(), shown.clone())),
        ];
        tracing::info!(bus = %shown, subject = %subjects.all, "NATS bus ready");
        Ok(NatsBus {
            local,
            outgoing,
            dropping: Arc::new(AtomicBool::new(false)),
            tasks,
        })
    }
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn send_loop(
    client: async_nats::Client,
    subjects: Subjects,
    mut queue: mpsc::Receiver<BusMessage>,
) {
    let mut failing = false;
    while let Some(message) = queue.recv().await {
        // Encoding here, not in `publish`, keeps JSON work off the commit path.
        let (subject, bytes) = match encode(&subjects, &message) {
            Ok(encoded) => encoded,
            Err(e) => {
                tracing::error!(error = %e, "dropping a bus message");
                continue;
            }
        };
        match client.publish(subject.to_owned(), bytes.into()).await {
            Ok(()) => failing = false,
            Err(e) => {
                // Oversized or disconnected: other nodes read the change from the store.
                if !failing {
                    tracing::warn!(error = %e, "NATS publish failed; other nodes will read from the store");
                }
                failing = true;
            }
        }
    }
}

async fn receive_loop(
    mut subscriber: async_nats::Subscriber,
    local: broadcast::Sender<BusMessage>,
    shown: String,
) {
    while let Some(message) = subscriber.next().await {
        match decode(&message.payload) {
            // No receiver is not an error: the hub may not have started yet.
            Ok(decoded) => {
                let _ = local.send(decoded);
            }
            Err(why) => tracing::warn!(subject = %message.subject, %why, "ignoring a bus message"),
        }
    }
    tracing::error!(bus = %shown, "the NATS subscription ended; other nodes' changes now arrive only by store polling");
}

#[async_trait]
impl Bus for NatsBus {
    async fn publish(&self, message: BusMessage) -> Result<()> {
        let _ = self.local.send(message.clone());
        match self.outgoing.try_send(message) {
            Ok(()) => {
                self.dropping.store(false, Ordering::Relaxed);
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the NATS send queue is full; dropping bus messages until it drains (other nodes read from the store)"
                    );
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(Error::unavailable("the NATS bus has stopped"));
            }
        }
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<BusMessage> {
        self.local.subscribe()
    }

    fn is_shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tether_core::{ChangeKind, Position, RecordId, ResourceName};

    #[test]
    fn changes_and_topics_round_trip() {
        let subjects = Subjects::new(&Epoch("00ff".into()));
        let change = Change::new(
            Position(7),
            ChangeKind::Patch,
            ResourceName::parse("todos").unwrap(),
            RecordId::parse("a").unwrap(),
            3,
            Some(json!({"done": true, "n": 1.5}).as_object().unwrap().clone()),
            Some(
                json!({"done": true, "gone": null})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        );
        let (subject, bytes) =
            encode(&subjects, &BusMessage::Change(Arc::new(change.clone()))).unwrap();
        assert_eq!(subject, "tether.00ff.changes");
        let BusMessage::Change(back) = decode(&bytes).unwrap() else {
            panic!("a change")
        };
        assert_eq!(*back, change);

        let to = Audience {
            sessions: vec!["c-1".into()],
            watching: json!({"workflow": 42}).as_object().unwrap().clone(),
        };
        let topic = BusMessage::Topic {
            topic: "logs/1".into(),
            data: Arc::new(json!({"line": "x"})),
            to: Some(Arc::new(to.clone())),
        };
        let (subject, bytes) = encode(&subjects, &topic).unwrap();
        assert_eq!(subject, "tether.00ff.topics");
        let BusMessage::Topic {
            topic,
            data,
            to: got,
        } = decode(&bytes).unwrap()
        else {
            panic!("a topic message")
        };
        assert_eq!((&*topic, &*data), ("logs/1", &json!({"line": "x"})));
        assert_eq!(got.as_deref(), Some(&to));

        let plain = BusMessage::Topic {
            topic: "t".into(),
            data: Arc::new(json!(1)),
            to: None,
        };
        let (_, bytes) = encode(&subjects, &plain).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("\"to\""));
        assert!(matches!(
            decode(&bytes),
            Ok(BusMessage::Topic { to: None, .. })
        ));
    }

    #[test]
    fn presence_round_trips() {
        let subjects = Subjects::new(&Epoch("e".into()));
        for kind in [
            crate::PresenceKind::Join {
                room: "doc-1".into(),
                user: "ann".into(),
            },
            crate::PresenceKind::Snapshot {
                members: vec![("doc-1".into(), "ann".into())],
            },
            crate::PresenceKind::Hello,
            crate::PresenceKind::Relay {
                room: "doc-1".into(),
                from: "ann".into(),
                data: Arc::new(json!({"x": 1})),
            },
        ] {
            let event = PresenceEvent {
                node: "n1".into(),
                kind,
            };
            let (subject, bytes) =
                encode(&subjects, &BusMessage::Presence(Arc::new(event.clone()))).unwrap();
            assert_eq!(subject, "tether.e.presence");
            let BusMessage::Presence(back) = decode(&bytes).unwrap() else {
                panic!("presence")
            };
            assert_eq!(*back, event);
        }
    }

    #[test]
    fn foreign_versions_and_garbage_are_refused() {
        assert!(decode(br#"{"v":2,"kind":"topic","topic":"t","data":1}"#)
            .unwrap_err()
            .contains("wire version 2"));
        assert!(decode(b"not json").is_err());
        assert!(decode(br#"{"v":1,"kind":"other"}"#).is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("nats://u:pw@h:4222,nats://h2:4222"),
            "nats://u:***@h:4222,nats://h2:4222"
        );
        assert_eq!(redact("nats://s3cret@h"), "nats://***@h");
        assert_eq!(redact("nats://h:4222"), "nats://h:4222");
    }
}
