//! The bus carries committed changes (and ephemeral topic messages) to every node that
//! serves the same store, this one included.
//!
//! A bus never assigns order and is never the source of truth: positions come from the
//! store's change log. Delivery is assumed at-most-once (a receiver may lag or a network
//! may drop messages), so the engine's hub notices a position gap and reads what it
//! missed back from the store.
//!
//! Implementations: [`local::LocalBus`] (in-process, the default) and
//! [`nats::NatsBus`] (several nodes). The networked bus implements the same trait and
//! forwards what it receives into a local broadcast, so the hub code does not change.

pub mod local;
pub mod nats;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use tether_core::{Audience, Change, Result};
use tokio::sync::broadcast;

pub use local::LocalBus;
pub use nats::NatsBus;

#[derive(Debug, Clone)]
pub enum BusMessage {
    /// A change committed by some node.
    Change(Arc<Change>),
    /// An ephemeral message to a topic's subscribers; nothing is stored. `to`, when
    /// set, narrows it to some of them (by session or by what they watch); each node
    /// applies it to its own connections.
    Topic {
        topic: Arc<str>,
        data: Arc<Value>,
        to: Option<Arc<Audience>>,
    },
    /// Presence between nodes: who is in which room elsewhere, and relays to rooms.
    /// Only networked buses carry it ([`Bus::is_shared`]).
    Presence(Arc<PresenceEvent>),
}

/// A presence event from one node to the others (seed 003's active users across
/// nodes). Each node tells the others which users it has in which rooms; it never
/// forwards what it heard, so a node's members vanish with its heartbeats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceEvent {
    /// The sending node (random per process), so a node ignores its own events.
    pub node: Arc<str>,
    #[serde(flatten)]
    pub kind: PresenceKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PresenceKind {
    /// `user` now has `room` open on the sending node (its first connection there).
    Join { room: Arc<str>, user: Arc<str> },
    /// `user` closed `room` on the sending node (its last connection there).
    Leave { room: Arc<str>, user: Arc<str> },
    /// Every (room, user) the sending node has, sent periodically: the heartbeat that
    /// keeps its members alive on other nodes, and how a new node learns them.
    Snapshot { members: Vec<(Arc<str>, Arc<str>)> },
    /// A node that just started asks the others for their snapshots now.
    Hello,
    /// `data` relayed by `from` to everyone else in `room`.
    Relay {
        room: Arc<str>,
        from: Arc<str>,
        data: Arc<Value>,
    },
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends to every node, this one included. Best effort: a lost message is
    /// recovered from the store by the receiving hub (topics are not recovered).
    async fn publish(&self, message: BusMessage) -> Result<()>;

    /// A receiver of everything published from now on. It reports `Lagged` rather than
    /// blocking publishers when it falls behind.
    fn subscribe(&self) -> broadcast::Receiver<BusMessage>;

    /// Whether other nodes share this bus; only then is presence exchanged on it.
    fn is_shared(&self) -> bool {
        false
    }
}
