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
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Sends to every node, this one included. Best effort: a lost message is
    /// recovered from the store by the receiving hub (topics are not recovered).
    async fn publish(&self, message: BusMessage) -> Result<()>;

    /// A receiver of everything published from now on. It reports `Lagged` rather than
    /// blocking publishers when it falls behind.
    fn subscribe(&self) -> broadcast::Receiver<BusMessage>;
}
