//! The in-process bus: one node, one broadcast channel.

use crate::{Bus, BusMessage};
use async_trait::async_trait;
use tether_core::Result;
use tokio::sync::broadcast;

/// How many messages a receiver may fall behind before it is told it lagged.
pub const LOCAL_BUS_CAPACITY: usize = 65_536;

#[derive(Debug)]
pub struct LocalBus {
    sender: broadcast::Sender<BusMessage>,
}

impl LocalBus {
    pub fn new() -> LocalBus {
        LocalBus::with_capacity(LOCAL_BUS_CAPACITY)
    }

    pub fn with_capacity(capacity: usize) -> LocalBus {
        LocalBus {
            sender: broadcast::channel(capacity).0,
        }
    }
}

impl Default for LocalBus {
    fn default() -> Self {
        LocalBus::new()
    }
}

#[async_trait]
impl Bus for LocalBus {
    async fn publish(&self, message: BusMessage) -> Result<()> {
        // No receiver is not an error: the hub may not have started yet, and whatever
        // it missed it reads back from the store.
        let _ = self.sender.send(message);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<BusMessage> {
        self.sender.subscribe()
    }
}
