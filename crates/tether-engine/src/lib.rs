//! The engine: applies commands to the store, orders committed changes, and routes them
//! to subscribers.
//!
//! - [`commit`]: the one write path and group commit.
//! - [`hub`]: fan-out in change-log order, filling bus gaps from the store.
//! - [`subscription`]: the subscriber index and how a change looks to a subscription.
//! - [`outbox`]: each connection's bounded, ordered queue.
//! - [`presence`]: who is in which room.
//! - [`knobs`]: every tunable.
//!
//! The engine imports no dialect and no socket type, and never awaits a client.

pub mod commit;
pub mod hub;
pub mod knobs;
pub mod outbox;
pub mod presence;
pub mod subscription;

use commit::PendingWrite;
use hub::Hub;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use subscription::{Entry, SubState};
use tether_bus::{Bus, BusMessage};
use tether_core::{
    Audience, Change, Epoch, Error, ErrorCode, Outbound, Position, Query, Record, RecordId,
    ResourceName, Result, ResyncReason, Since, SubSpec, SubTarget, Tag, Write,
};
use tether_store::{ConsistentRead, ReadTarget, Replay, ResourceInfo, Store};
use tokio::sync::{mpsc, oneshot};

pub use knobs::Knobs;
pub use outbox::{Closed, Outbox};
pub use presence::Presence;

/// A closed session's subscriptions, and when it closed.
type Retained = (Vec<(Arc<str>, Arc<SubSpec>)>, Instant);

/// A cheap-clone handle to the running engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    bus: Arc<dyn Bus>,
    hub: Arc<Hub>,
    writes: mpsc::Sender<PendingWrite>,
    knobs: Knobs,
    presence: Presence,
    /// Subscriptions of closed sessions, for `resume` without a subscription list.
    retained: Mutex<HashMap<Arc<str>, Retained>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("epoch", self.epoch())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts the committer and the hub on the current tokio runtime.
    pub async fn start(store: Arc<dyn Store>, bus: Arc<dyn Bus>, knobs: Knobs) -> Result<Engine> {
        let head = store.head().await?;
        let hub = Arc::new(Hub::new(head));
        let (writes, queue) = mpsc::channel(knobs.commit_queue);
        tokio::spawn(commit::run_committer(
            store.clone(),
            bus.clone(),
            queue,
            knobs.max_commit_batch,
        ));
        tokio::spawn(
            hub.clone()
                .run(store.clone(), bus.clone(), knobs.hub_check_interval),
        );
        tokio::spawn(compact_periodically(
            store.clone(),
            knobs.log_retention,
            knobs.compaction_interval,
        ));
        Ok(Engine {
            inner: Arc::new(Inner {
                store,
                bus,
                hub,
                writes,
                knobs,
                presence: Presence::default(),
                retained: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn knobs(&self) -> &Knobs {
        &self.inner.knobs
    }

    pub fn epoch(&self) -> &Epoch {
        self.inner.store.epoch()
    }

    /// The last position the hub has delivered to subscribers.
    pub fn position(&self) -> Position {
        self.inner.hub.processed()
    }

    pub fn presence(&self) -> &Presence {
        &self.inner.presence
    }

    pub fn new_outbox(&self) -> Arc<Outbox> {
        Outbox::new(self.inner.knobs.outbox_max_bytes)
    }

    pub fn subscription_count(&self) -> usize {
        self.inner.hub.index().count()
    }

    // ---- reads and writes -------------------------------------------------------

    pub async fn get(&self, resource: &ResourceName, id: &RecordId) -> Result<Option<Record>> {
        self.inner.store.get(resource, id).await
    }

    pub async fn query(&self, resource: &ResourceName, query: &Query) -> Result<Vec<Record>> {
        self.inner.store.query(resource, query).await
    }

    pub async fn resources(&self) -> Result<Vec<ResourceInfo>> {
        self.inner.store.resources().await
    }

    /// Commits one write; returns once it is durable. Its change then fans out.
    pub async fn write(&self, write: Write) -> Result<Arc<Change>> {
        let (done, outcome) = oneshot::channel();
        self.inner
            .writes
            .send(PendingWrite { write, done })
            .await
            .map_err(|_| Error::unavailable("the engine is shutting down"))?;
        outcome
            .await
            .map_err(|_| Error::unavailable("the committer stopped before answering"))?
    }

    /// Sends an ephemeral message to a topic's subscribers on every node.
    pub async fn publish(&self, topic: &str, data: serde_json::Value) -> Result<()> {
        self.publish_to(topic, data, Audience::default()).await
    }

    /// Like [`Engine::publish`], to the subscribers `audience` admits (seed 002's
    /// broadcast to a subset of connections).
    pub async fn publish_to(
        &self,
        topic: &str,
        data: serde_json::Value,
        audience: Audience,
    ) -> Result<()> {
        check_topic(topic)?;
        self.inner
            .bus
            .publish(BusMessage::Topic {
                topic: topic.into(),
                data: Arc::new(data),
                to: (!audience.is_everyone()).then(|| Arc::new(audience)),
            })
            .await
    }

    // ---- subscriptions ----------------------------------------------------------

    /// Subscribes `outbox` under `name`. Queues a snapshot (or, with a usable `since`,
    /// a `Resumed` marker and the missed changes), then live pushes in order.
    pub async fn subscribe(
        &self,
        outbox: &Arc<Outbox>,
        name: &str,
        spec: SubSpec,
        since: Option<Since>,
        tag: Option<Tag>,
    ) -> Result<()> {
        let name: Arc<str> = name.into();
        let spec = Arc::new(spec);
        self.register(outbox, &name, &spec)?;
        if let SubTarget::Topic { .. } = spec.target {
            outbox.push(Outbound::Snapshot {
                tag,
                sub: name,
                spec,
                position: self.position(),
                records: Vec::new(),
                resync: None,
            });
            return Ok(());
        }
        let target = match &spec.target {
            SubTarget::Record { resource, id } => ReadTarget::Record {
                resource: resource.clone(),
                id: id.clone(),
            },
            SubTarget::Query { resource, query } => ReadTarget::Query {
                resource: resource.clone(),
                query: query.clone(),
            },
            SubTarget::Topic { .. } => unreachable!("topics returned above"),
        };
        let (changes_after, mut resync) = match &since {
            Some(s) if s.epoch == *self.epoch() => (Some(s.position), None),
            Some(_) => (None, Some(ResyncReason::EpochChanged)),
            None => (None, None),
        };
        let read = ConsistentRead {
            targets: vec![target],
            changes_after,
        };
        let view = match self.inner.store.read(read).await {
            Ok(view) => view,
            Err(e) => {
                self.unsubscribe(outbox, &name);
                return Err(e);
            }
        };
        let head = view.head;
        let records = view.results.into_iter().next().unwrap_or_default();
        let replay = match view.changes {
            Some(Replay::Changes(changes)) => Some(changes),
            Some(Replay::Compacted) => {
                resync = Some(ResyncReason::Compacted);
                None
            }
            None => None,
        };

        let mut state = outbox.lock();
        let max = outbox.max_bytes();
        let Some(sub) = state.subs.get_mut(&name) else {
            return Ok(()); // closed or unsubscribed meanwhile
        };
        let buffered = sub.pending.take().unwrap_or_default();
        let mut out = Vec::new();
        match replay {
            Some(changes) => {
                out.push(Outbound::Resumed {
                    tag,
                    sub: name.clone(),
                    spec: spec.clone(),
                    from: changes_after.unwrap_or_default(),
                });
                for change in changes.into_iter().filter(|c| concerns(&spec.target, c)) {
                    let change = Arc::new(change);
                    if let Some(kind) = sub.kind_for(&change, false) {
                        out.push(sub.push(kind, &change));
                    }
                }
                sub.members = records.iter().map(|r| r.id.clone()).collect();
            }
            None => {
                sub.members = records.iter().map(|r| r.id.clone()).collect();
                out.push(Outbound::Snapshot {
                    tag,
                    sub: name.clone(),
                    spec: spec.clone(),
                    position: head,
                    records,
                    resync,
                });
            }
        }
        sub.min_pos = head;
        for change in buffered.iter().filter(|c| c.position > head) {
            if let Some(kind) = sub.kind_for(change, true) {
                out.push(sub.push(kind, change));
            }
        }
        for message in out {
            state.enqueue(max, message);
        }
        drop(state);
        outbox.push_nothing();
        Ok(())
    }

    fn register(&self, outbox: &Arc<Outbox>, name: &Arc<str>, spec: &Arc<SubSpec>) -> Result<()> {
        let mut state = outbox.lock();
        if state.subs.contains_key(name) {
            return Err(Error::bad_request(format!(
                "subscription {name:?} already exists on this connection; unsubscribe it or pick another name"
            )));
        }
        if state.subs.len() >= self.inner.knobs.max_subscriptions {
            return Err(Error::new(
                ErrorCode::LimitExceeded,
                format!(
                    "at most {} subscriptions per connection",
                    self.inner.knobs.max_subscriptions
                ),
            ));
        }
        if let SubTarget::Topic { topic } = &spec.target {
            check_topic(topic)?;
        }
        let entry = self.inner.hub.index_mut().insert(
            &spec.target,
            Entry {
                outbox: outbox.clone(),
                name: name.clone(),
            },
        );
        let mut sub = SubState::pending(name.clone(), spec.clone(), entry);
        if let SubTarget::Topic { .. } = spec.target {
            sub.pending = None;
        }
        state.subs.insert(name.clone(), sub);
        Ok(())
    }

    /// Removes a subscription. Returns false if there was none by that name.
    pub fn unsubscribe(&self, outbox: &Arc<Outbox>, name: &str) -> bool {
        let removed = outbox.lock().subs.remove(name);
        match removed {
            Some(sub) => {
                self.inner
                    .hub
                    .index_mut()
                    .remove(&sub.spec.target, sub.entry);
                true
            }
            None => false,
        }
    }

    /// Removes every subscription on `resource` (and, with `id`, only those on that
    /// record). Returns their names.
    pub fn flush(
        &self,
        outbox: &Arc<Outbox>,
        resource: &ResourceName,
        id: Option<&RecordId>,
    ) -> Vec<Arc<str>> {
        let names: Vec<Arc<str>> = outbox
            .lock()
            .subs
            .iter()
            .filter(|(_, s)| match (&s.spec.target, id) {
                (SubTarget::Record { resource: r, id: i }, Some(want)) => {
                    r == resource && i == want
                }
                (
                    SubTarget::Record { resource: r, .. } | SubTarget::Query { resource: r, .. },
                    None,
                ) => r == resource,
                _ => false,
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in &names {
            self.unsubscribe(outbox, name);
        }
        names
    }

    /// The subscriptions this connection holds, by name.
    pub fn subscriptions(&self, outbox: &Arc<Outbox>) -> Vec<(Arc<str>, Arc<SubSpec>)> {
        let mut subs: Vec<_> = outbox
            .lock()
            .subs
            .iter()
            .map(|(n, s)| (n.clone(), s.spec.clone()))
            .collect();
        subs.sort_by(|a, b| a.0.cmp(&b.0));
        subs
    }

    /// Ends a connection: drops its subscriptions (remembering them under `session`
    /// for a later resume) and its presence.
    pub fn close(&self, outbox: &Arc<Outbox>, session: &str) {
        let subs = self.subscriptions(outbox);
        for (name, _) in &subs {
            self.unsubscribe(outbox, name);
        }
        self.inner.presence.leave_all(outbox);
        outbox.close();
        let mut retained = self
            .inner
            .retained
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let keep = self.inner.knobs.session_retention;
        retained.retain(|_, (_, at)| at.elapsed() < keep);
        if !subs.is_empty() {
            retained.insert(session.into(), (subs, Instant::now()));
        }
    }

    /// The subscriptions a closed session held, if it closed recently.
    pub fn recall(&self, session: &str) -> Option<Vec<(Arc<str>, Arc<SubSpec>)>> {
        let mut retained = self
            .inner
            .retained
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let keep = self.inner.knobs.session_retention;
        retained
            .remove(session)
            .filter(|(_, at)| at.elapsed() < keep)
            .map(|(subs, _)| subs)
    }
}

/// Keeps the change log to the last `retention` changes. The hub lags the head by
/// moments, never by a million changes, so it is not cut off.
async fn compact_periodically(store: Arc<dyn Store>, retention: u64, every: std::time::Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let head = match store.head().await {
            Ok(head) => head,
            Err(e) => {
                tracing::warn!(error = %e, "compaction could not read the head");
                continue;
            }
        };
        if head.0 > retention {
            if let Err(e) = store.compact(Position(head.0 - retention)).await {
                tracing::warn!(error = %e, "compaction failed; will retry");
            }
        }
    }
}

/// Whether a change is on the resource or record a subscription covers.
fn concerns(target: &SubTarget, change: &Change) -> bool {
    match target {
        SubTarget::Record { resource, id } => *resource == change.resource && *id == change.id,
        SubTarget::Query { resource, .. } => *resource == change.resource,
        SubTarget::Topic { .. } => false,
    }
}

/// Topics follow the resource naming rules, plus `/` for hierarchy (`logs/node-1`).
pub fn check_topic(topic: &str) -> Result<()> {
    let valid = !topic.is_empty()
        && topic.len() <= 128
        && topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.:/".contains(c));
    if valid {
        Ok(())
    } else {
        Err(Error::new(
            ErrorCode::InvalidName,
            format!("topic {topic:?} must be 1-128 letters, digits or '_-.:/'"),
        ))
    }
}
