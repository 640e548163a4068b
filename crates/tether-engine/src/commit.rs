//! The single commit path: every write from every dialect, the HTTP API and every
//! source goes through here, gets its position from the store, and is published.
//!
//! Writes queue to one committer task, which takes whatever has queued (up to the batch
//! knob) and commits it as one store transaction: under load, many acknowledged writes
//! share one fsync (group commit); when idle, a write commits alone at once. A write is
//! acknowledged only after the store says it is durable, then published to the bus, so
//! no subscriber ever sees a change that could still be lost.

use std::sync::Arc;
use std::time::Instant;
use tether_bus::{Bus, BusMessage};
use tether_core::{Change, Error, Result, Write};
use tether_store::Store;
use tokio::sync::{mpsc, oneshot};

pub(crate) struct PendingWrite {
    pub(crate) write: Write,
    pub(crate) done: oneshot::Sender<Result<Arc<Change>>>,
}

pub(crate) async fn run_committer(
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    mut queue: mpsc::Receiver<PendingWrite>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        let started = Instant::now();
        let (writes, waiters): (Vec<_>, Vec<_>) =
            batch.drain(..).map(|p| (p.write, p.done)).unzip();
        metrics::histogram!("tether_commit_batch_size").record(writes.len() as f64);
        match store.commit(writes).await {
            Ok(outcomes) => {
                metrics::histogram!("tether_commit_seconds")
                    .record(started.elapsed().as_secs_f64());
                let mut last = None;
                for (outcome, waiter) in outcomes.into_iter().zip(waiters) {
                    let outcome = outcome.map(Arc::new);
                    if let Ok(change) = &outcome {
                        last = Some(change.position);
                        // A failed publish is recovered by the hub from the store.
                        if let Err(e) = bus.publish(BusMessage::Change(change.clone())).await {
                            metrics::counter!("tether_bus_errors_total", "kind" => "publish")
                                .increment(1);
                            tracing::warn!(error = %e, "bus publish failed; the hub will read the change from the store");
                        }
                    }
                    // The writer may have gone away; the write is committed regardless.
                    let _ = waiter.send(outcome);
                }
                // Once per group: a metric's lookup by name costs about what the rest
                // of a write's bookkeeping here does.
                if let Some(position) = last {
                    metrics::gauge!("tether_changelog_position").set(position.0 as f64);
                }
            }
            Err(e) => {
                metrics::counter!("tether_store_errors_total").increment(1);
                tracing::error!(error = %e, "commit failed; no write in the group was acknowledged");
                for waiter in waiters {
                    let _ = waiter.send(Err(Error::unavailable(format!(
                        "the store refused the commit: {}",
                        e.message
                    ))));
                }
            }
        }
    }
}
