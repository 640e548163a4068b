//! Fan-out: delivers committed changes to matching subscriptions, in change-log order.
//!
//! The hub is one task that reads the bus and keeps `processed`, the last position it
//! has delivered. A change that skips ahead reveals a gap (a lagging receiver, a lost
//! bus message, another node's commit); the hub reads the missing changes from the
//! store before going on, so every subscriber sees every change exactly once and in
//! order. It never waits on a client: delivery is a short lock and a bounded enqueue.

use crate::subscription::Index;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tether_bus::{Bus, BusMessage};
use tether_core::{Change, Position};
use tether_store::{Replay, Store};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;

/// Changes read from the store per catch-up step.
const CATCH_UP_BATCH: usize = 1_000;

pub(crate) struct Hub {
    pub(crate) index: RwLock<Index>,
    processed: watch::Sender<Position>,
}

impl Hub {
    pub(crate) fn new(start: Position) -> Hub {
        Hub {
            index: RwLock::new(Index::default()),
            processed: watch::channel(start).0,
        }
    }

    pub(crate) fn processed(&self) -> Position {
        *self.processed.borrow()
    }

    pub(crate) fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        bus: Arc<dyn Bus>,
        check: Duration,
        mut stopped: tokio::sync::watch::Receiver<()>,
    ) {
        let mut rx = bus.subscribe();
        // Whatever committed between start-up and subscribing is read from the store.
        self.catch_up(&*store, None).await;
        let mut tick = tokio::time::interval(check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                // The engine is gone (its last clone dropped): nobody is left to serve.
                _ = stopped.changed() => break,
                message = rx.recv() => match message {
                    Ok(BusMessage::Change(change)) => self.on_change(&*store, change).await,
                    Ok(BusMessage::Topic { topic, data, to }) => {
                        for entry in self.index().for_topic(&topic) {
                            entry
                                .outbox
                                .offer_message(&entry.name, &topic, &data, to.as_deref());
                        }
                    }
                    // Presence is applied by the presence task (presence.rs), not the hub.
                    Ok(BusMessage::Presence(_)) => {}
                    Err(RecvError::Lagged(missed)) => {
                        metrics::counter!("tether_bus_errors_total", "kind" => "lagged").increment(1);
                        tracing::warn!(missed, "hub lagged behind the bus; reading from the store");
                        self.catch_up(&*store, None).await;
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => self.catch_up(&*store, None).await,
            }
        }
    }

    async fn on_change(&self, store: &dyn Store, change: Arc<Change>) {
        let processed = self.processed();
        if change.position <= processed {
            return;
        }
        if change.position > processed.next() {
            self.catch_up(store, Some(Position(change.position.0 - 1)))
                .await;
            if change.position != self.processed().next() {
                return; // still a gap: the store was unreachable; the tick retries.
            }
        }
        self.deliver(&change);
    }

    /// Reads from the store and delivers everything after `processed`, up to `until`
    /// (or the head).
    async fn catch_up(&self, store: &dyn Store, until: Option<Position>) {
        loop {
            let from = self.processed();
            if until.is_some_and(|u| from >= u) {
                return;
            }
            match store.changes_since(from, CATCH_UP_BATCH).await {
                Ok(Replay::Changes(changes)) => {
                    if changes.is_empty() {
                        return;
                    }
                    for change in changes {
                        if until.is_some_and(|u| change.position > u) {
                            return;
                        }
                        self.deliver(&Arc::new(change));
                    }
                }
                Ok(Replay::Compacted) => {
                    // Only possible if compaction outran the hub; subscribers that
                    // needed those changes will resync when they reconnect.
                    tracing::error!(%from, "change log compacted past the hub; skipping ahead");
                    match store.head().await {
                        Ok(head) => self.processed.send_replace(head),
                        Err(_) => return,
                    };
                }
                Err(e) => {
                    metrics::counter!("tether_store_errors_total").increment(1);
                    tracing::warn!(error = %e, "hub could not read the change log; will retry");
                    return;
                }
            }
        }
    }

    fn deliver(&self, change: &Arc<Change>) {
        let entries = self.index().for_record(&change.resource, &change.id);
        for entry in entries {
            entry.outbox.offer_change(&entry.name, change);
        }
        metrics::counter!("tether_changes_fanned_out_total").increment(1);
        self.processed.send_replace(change.position);
    }
}
